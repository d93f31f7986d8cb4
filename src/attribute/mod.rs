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

pub mod ledger;
pub mod manifest;
pub mod register;
pub mod severity;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

pub use manifest::{Manifest, ManifestEntry, ManifestError};
pub use severity::{Severity, SeverityRules};

use crate::scan::PactKey;

/// How an error line was attributed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "daemon", derive(utoipa::ToSchema))]
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

/// What attribution and severity go by: the manifest and the severity rules.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// The registered components.
    pub manifest: Manifest,
    /// Ledger's overrides and the built-in rules.
    pub severity: SeverityRules,
}

/// The current [`Rules`], replaceable while readers run (a manifest reloaded because a
/// component was registered applies to the next line). Readers keep a [`RulesCache`], which
/// costs one atomic load per line and no shared reference-count traffic.
#[derive(Debug)]
pub struct LiveRules {
    version: AtomicU64,
    current: RwLock<Arc<Rules>>,
    /// `grouping.rules` (set once at start-up, before the readers' caches are made).
    grouping: RwLock<Arc<crate::scan::rules::Rules>>,
}

impl LiveRules {
    /// Live rules starting at `rules`.
    pub fn new(rules: Rules) -> Arc<LiveRules> {
        Arc::new(LiveRules {
            version: AtomicU64::new(0),
            current: RwLock::new(Arc::new(rules)),
            grouping: RwLock::new(Arc::new(crate::scan::rules::Rules::default())),
        })
    }

    /// Sets the `grouping.rules` every line is rewritten by before it is fingerprinted.
    pub fn set_grouping_rules(&self, rules: crate::scan::rules::Rules) {
        *self
            .grouping
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(rules);
        self.version.fetch_add(1, Ordering::Release);
    }

    /// The `grouping.rules` now.
    pub fn grouping_rules(&self) -> Arc<crate::scan::rules::Rules> {
        self.grouping
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// A shortcut for tests and one-shot tools: these components, built-in severity rules.
    pub fn with_manifest(manifest: Manifest) -> Arc<LiveRules> {
        LiveRules::new(Rules {
            manifest,
            severity: SeverityRules::builtin(),
        })
    }

    /// Bumped by every replacement.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The rules now.
    pub fn snapshot(&self) -> Arc<Rules> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the manifest (the severity rules stay).
    pub fn replace_manifest(&self, manifest: Manifest) {
        let mut cur = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *cur = Arc::new(Rules {
            manifest,
            severity: cur.severity.clone(),
        });
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Replaces the severity rules (the manifest stays); they apply to the next new
    /// incident (an incident's severity is decided once, by its first line).
    pub fn replace_severity(&self, severity: SeverityRules) {
        let mut cur = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *cur = Arc::new(Rules {
            manifest: cur.manifest.clone(),
            severity,
        });
        self.version.fetch_add(1, Ordering::Release);
    }

    /// A reader's cache of the rules.
    pub fn cache(self: &Arc<Self>) -> RulesCache {
        let version = self.version.load(Ordering::Acquire);
        RulesCache {
            rules: self.snapshot(),
            grouping: self.grouping_rules(),
            version,
            live: self.clone(),
        }
    }
}

/// One reader's view of [`LiveRules`]: [`RulesCache::refresh`] picks up a replacement.
#[derive(Debug)]
pub struct RulesCache {
    live: Arc<LiveRules>,
    version: u64,
    /// The rules as of the last refresh.
    pub rules: Arc<Rules>,
    /// The `grouping.rules` as of the last refresh.
    pub grouping: Arc<crate::scan::rules::Rules>,
}

impl RulesCache {
    /// Picks up replaced rules, if any (one atomic load when nothing changed).
    #[inline]
    pub fn refresh(&mut self) {
        let v = self.live.version.load(Ordering::Acquire);
        if v != self.version {
            self.rules = self.live.snapshot();
            self.grouping = self.live.grouping_rules();
            self.version = v;
        }
    }
}

/// Follows `manifest.json` while the daemon runs: a component registered by the CLI (or
/// anything else that rewrites the file) applies to the next line, without a restart. The
/// file's identity, size and mtime are polled every [`ManifestFollower::POLL`]; a manifest
/// that does not parse is reported and the last good one stays in force (never emptied).
#[derive(Debug)]
pub struct ManifestFollower {
    stop: crossbeam_channel::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ManifestFollower {
    /// How often the file is checked.
    pub const POLL: std::time::Duration = std::time::Duration::from_millis(250);

    /// Starts following `path` into `live`.
    ///
    /// # Errors
    ///
    /// The thread cannot be spawned.
    pub fn start(
        path: std::path::PathBuf,
        live: Arc<LiveRules>,
    ) -> std::io::Result<ManifestFollower> {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name("sentinel-manifest".into())
            .spawn(move || {
                let mut seen = stamp(&path);
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(Self::POLL)
                {
                    let now = stamp(&path);
                    if now == seen {
                        continue;
                    }
                    seen = now;
                    match Manifest::load(&path) {
                        Ok(m) => {
                            tracing::info!(components = m.len(), "manifest reloaded");
                            live.replace_manifest(m);
                        }
                        Err(e) => tracing::warn!("{e}; keeping the last good manifest"),
                    }
                }
            })?;
        Ok(ManifestFollower {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops following.
    pub fn stop(mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What tells a rewritten file apart: identity (an atomic rename makes a new inode), size,
/// modification time.
fn stamp(path: &std::path::Path) -> Option<(u64, u64, u64, std::time::SystemTime)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.len(), m.modified().ok()?))
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

    #[test]
    fn a_replaced_manifest_reaches_every_cache() {
        let live = LiveRules::with_manifest(manifest(&["auth"]));
        let mut a = live.cache();
        let mut b = live.cache();
        assert!(!a.rules.manifest.contains(b"billing"));
        live.replace_manifest(manifest(&["auth", "billing"]));
        a.refresh();
        assert!(a.rules.manifest.contains(b"billing"));
        b.refresh();
        assert!(b.rules.manifest.contains(b"billing") && b.rules.manifest.contains(b"auth"));
    }
}
