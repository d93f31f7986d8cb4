//! Attribution: which Pact component an error line belongs to, and how severe it is.
//!
//! An error line is attributed by its first PACT key (reference/SPEC.md §5.2):
//!
//! 1. no key: [`AttributionStatus::Unattributed`];
//! 2. `PACT:<component>:<method>` with `<component>` in the manifest: registered;
//! 3. else, the second segment in the manifest (Pact's generated preamble
//!    `PACT:<hash>:<component_id>`): registered to that component, with no method;
//! 4. else: [`AttributionStatus::Unregistered`], component and method from the key.
//!
//! Nothing is dropped: unattributed and unregistered lines become incidents too.

pub mod manifest;
pub mod severity;

use serde::{Deserialize, Serialize};

pub use manifest::{Manifest, ManifestEntry, ManifestError};
pub use severity::Severity;

use crate::scan::PactKey;

/// How an error line was attributed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttributionStatus {
    /// The key names a component in the manifest.
    Registered,
    /// The line has a key, but its component is not in the manifest.
    Unregistered,
    /// The line has no PACT key.
    Unattributed,
}

impl AttributionStatus {
    /// The lowercase name used in output and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            AttributionStatus::Registered => "registered",
            AttributionStatus::Unregistered => "unregistered",
            AttributionStatus::Unattributed => "unattributed",
        }
    }
}

/// The attribution of one error line, borrowing from the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribution<'a> {
    /// Registered, unregistered or unattributed.
    pub status: AttributionStatus,
    /// The component (empty when unattributed).
    pub component: &'a [u8],
    /// The method (empty when unattributed or attributed through the preamble form).
    pub method: &'a [u8],
    /// The whole key (empty when unattributed).
    pub pact_key: &'a [u8],
}

/// Attributes a line by its first key against `manifest`.
pub fn attribute<'a>(first_key: Option<PactKey<'a>>, manifest: &Manifest) -> Attribution<'a> {
    let Some(key) = first_key else {
        return Attribution {
            status: AttributionStatus::Unattributed,
            component: b"",
            method: b"",
            pact_key: b"",
        };
    };
    if manifest.contains(key.component()) {
        Attribution {
            status: AttributionStatus::Registered,
            component: key.component(),
            method: key.method(),
            pact_key: key.as_bytes(),
        }
    } else if manifest.contains(key.method()) {
        Attribution {
            status: AttributionStatus::Registered,
            component: key.method(),
            method: b"",
            pact_key: key.as_bytes(),
        }
    } else {
        Attribution {
            status: AttributionStatus::Unregistered,
            component: key.component(),
            method: key.method(),
            pact_key: key.as_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::PactKeys;

    fn manifest(ids: &[&str]) -> Manifest {
        let mut m = Manifest::default();
        for id in ids {
            m.insert(ManifestEntry::new(id));
        }
        m
    }

    #[test]
    fn attribution_follows_the_reference_order() {
        let m = manifest(&["auth", "billing"]);
        let line = b"ERROR [PACT:auth:login] bad";
        let a = attribute(PactKeys::new(line).next(), &m);
        assert_eq!(a.status, AttributionStatus::Registered);
        assert_eq!((a.component, a.method), (&b"auth"[..], &b"login"[..]));

        let line = b"ERROR [PACT:3f2a1c:billing] preamble form";
        let a = attribute(PactKeys::new(line).next(), &m);
        assert_eq!(a.status, AttributionStatus::Registered);
        assert_eq!((a.component, a.method), (&b"billing"[..], &b""[..]));

        let line = b"ERROR [PACT:ghost:run] unknown";
        let a = attribute(PactKeys::new(line).next(), &m);
        assert_eq!(a.status, AttributionStatus::Unregistered);
        assert_eq!((a.component, a.method), (&b"ghost"[..], &b"run"[..]));

        let a = attribute(PactKeys::new(b"ERROR no key").next(), &m);
        assert_eq!(a.status, AttributionStatus::Unattributed);
        assert!(a.component.is_empty() && a.pact_key.is_empty());
    }
}
