//! The incident record and its versioned on-disk encoding.
//!
//! An encoded value is one format byte followed by a JSON document. JSON keeps the file
//! inspectable and tolerant of added optional fields; the format byte lets a later version
//! change the encoding and lets this one refuse a value written by a newer Sentinel instead
//! of misreading it.

use super::codec::{self, DecodeError};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::attribute::{AttributionStatus, Severity};
use crate::scan::Fingerprint;

/// The format byte of values written by this version.
pub const INCIDENT_FORMAT: u8 = 1;

/// The longest sample line kept, in bytes.
pub const SAMPLE_MAX_BYTES: usize = 4096;

/// An incident's lifecycle state (reference/SPEC.md §7.4).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[cfg_attr(feature = "daemon", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum IncidentStatus {
    /// Seen, nothing done yet.
    #[default]
    Detected,
    /// Being triaged.
    Triaging,
    /// Being diagnosed.
    Diagnosing,
    /// A fix is being written.
    Remediating,
    /// A fix is being verified.
    Verifying,
    /// Fixed.
    Resolved,
    /// Handed to a human.
    Escalated,
}

impl IncidentStatus {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentStatus::Detected => "detected",
            IncidentStatus::Triaging => "triaging",
            IncidentStatus::Diagnosing => "diagnosing",
            IncidentStatus::Remediating => "remediating",
            IncidentStatus::Verifying => "verifying",
            IncidentStatus::Resolved => "resolved",
            IncidentStatus::Escalated => "escalated",
        }
    }

    /// Every status, in lifecycle order.
    pub const ALL: [IncidentStatus; 7] = [
        IncidentStatus::Detected,
        IncidentStatus::Triaging,
        IncidentStatus::Diagnosing,
        IncidentStatus::Remediating,
        IncidentStatus::Verifying,
        IncidentStatus::Resolved,
        IncidentStatus::Escalated,
    ];

    /// The status named `name` (lowercase, as [`IncidentStatus::as_str`] spells it).
    pub fn from_name(name: &str) -> Option<IncidentStatus> {
        IncidentStatus::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether the incident still needs attention (not resolved or escalated).
    pub fn is_active(self) -> bool {
        !matches!(self, IncidentStatus::Resolved | IncidentStatus::Escalated)
    }
}

/// One incident: every error line with the same normalised text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "daemon", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct Incident {
    /// 12 lowercase hex characters, stable for the fingerprint.
    pub id: String,
    /// The fingerprint, as 16 hex characters in JSON.
    #[serde(with = "fingerprint_hex")]
    #[cfg_attr(feature = "daemon", schema(value_type = String, example = "9160b499465c9c39"))]
    pub fingerprint: Fingerprint,
    /// The first 512 bytes of the normalised line (lossy UTF-8).
    pub normalized: String,
    /// How many error lines fell into this incident.
    pub count: u64,
    /// When the first line was counted.
    pub first_seen: Timestamp,
    /// When the latest line was counted.
    pub last_seen: Timestamp,
    /// Registered, unregistered or unattributed (of the first line).
    pub attribution: AttributionStatus,
    /// The component (empty when unattributed).
    pub component_id: String,
    /// The method (may be empty).
    pub method: String,
    /// The PACT key of the first line (empty when unattributed).
    pub pact_key: String,
    /// The severity.
    pub severity: Severity,
    /// The lifecycle state.
    pub status: IncidentStatus,
    /// The first line, at most [`SAMPLE_MAX_BYTES`] (lossy UTF-8).
    pub sample: String,
    /// Where the first line came from (a file path, or a webhook source).
    pub source: String,
    /// How it was closed, once it was.
    #[serde(default)]
    pub resolution: String,
    /// Set on a key's overflow incident: the new fingerprints of the key that the
    /// cardinality guard folded into it (see [`crate::store::guard`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overflow: Option<Overflow>,
}

/// What a key's overflow incident holds besides its exact line count.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
#[cfg_attr(feature = "daemon", derive(utoipa::ToSchema))]
pub struct Overflow {
    /// The key (`""`: the unattributed lines).
    pub key: String,
    /// Always true: the flag clients look for.
    pub high_cardinality: bool,
    /// New fingerprints folded in (one that recurs in a later commit counts again).
    pub folded_fingerprints: u64,
    /// The first few folded lines, at most [`super::guard::OVERFLOW_SAMPLES`] of at most
    /// [`super::guard::OVERFLOW_SAMPLE_BYTES`] each.
    pub samples: Vec<String>,
    /// What to do about it.
    pub hint: String,
}

impl Incident {
    /// Encodes for the store.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(INCIDENT_FORMAT, self)
    }

    /// Decodes a stored value.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] when the value is from a newer format or is not a valid record.
    pub fn decode(bytes: &[u8]) -> Result<Incident, DecodeError> {
        codec::decode(INCIDENT_FORMAT, bytes)
    }
}

/// Cuts `bytes` to at most `max` bytes and decodes it as lossy UTF-8, without splitting a
/// multi-byte character in the middle where it can be avoided.
pub fn lossy_prefix(bytes: &[u8], max: usize) -> String {
    if bytes.len() <= max {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let mut end = max;
    // Back off over UTF-8 continuation bytes (at most 3) so a character is not cut in half.
    while end > 0 && max - end < 3 && (bytes[end] & 0xC0) == 0x80 {
        end -= 1;
    }
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

mod fingerprint_hex {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::scan::Fingerprint;

    pub(super) fn serialize<S: Serializer>(fp: &Fingerprint, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(fp)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Fingerprint, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        u64::from_str_radix(&s, 16)
            .map(Fingerprint)
            .map_err(|_| serde::de::Error::custom(format!("bad fingerprint {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Incident {
        Incident {
            id: "0123456789ab".into(),
            fingerprint: Fingerprint(0x0123_4567_89ab_cdef),
            normalized: "ERROR x <n>".into(),
            count: 3,
            first_seen: "2026-11-23T13:17:47Z".parse().unwrap(),
            last_seen: "2026-11-23T13:18:47Z".parse().unwrap(),
            attribution: AttributionStatus::Registered,
            component_id: "auth".into(),
            method: "login".into(),
            pact_key: "PACT:auth:login".into(),
            severity: Severity::High,
            status: IncidentStatus::Detected,
            sample: "ERROR x 1".into(),
            source: "/var/log/a.log".into(),
            resolution: String::new(),
            overflow: None,
        }
    }

    #[test]
    fn round_trip_and_version_checks() {
        let inc = sample();
        let bytes = inc.encode();
        assert_eq!(bytes[0], INCIDENT_FORMAT);
        assert_eq!(Incident::decode(&bytes).unwrap(), inc);
        let json: serde_json::Value = serde_json::from_slice(&bytes[1..]).unwrap();
        assert_eq!(json["fingerprint"], "0123456789abcdef");
        let mut newer = bytes.clone();
        newer[0] = INCIDENT_FORMAT + 1;
        assert_eq!(
            Incident::decode(&newer),
            Err(DecodeError::Newer(INCIDENT_FORMAT + 1, INCIDENT_FORMAT))
        );
        assert!(matches!(
            Incident::decode(&bytes[..10]),
            Err(DecodeError::Invalid(_))
        ));
        assert_eq!(Incident::decode(&[]), Err(DecodeError::Empty));
    }

    #[test]
    fn lossy_prefix_does_not_split_characters() {
        assert_eq!(lossy_prefix("héllo".as_bytes(), 2), "h");
        assert_eq!(lossy_prefix(b"abc", 10), "abc");
        assert_eq!(lossy_prefix(b"ab\xffcd", 4), "ab\u{fffd}c");
    }
}
