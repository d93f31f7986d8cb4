//! The incident record and its versioned on-disk encoding.
//!
//! An encoded value is one format byte followed by the record. Format 3 (written since
//! 2026-12-07, session 17, issue 14) is binary ([`super::codec::encode_bin`]): integers as varints, the
//! fingerprint and timestamps as numbers, the three enums as one byte each, strings length-
//! prefixed, the sample capped at [`SAMPLE_MAX_BYTES`], and the normalised text as the edits
//! that make it from the sample ([`Normalized`]): it is the sample with its numbers, hex runs
//! and UUIDs replaced, so storing it whole (as format 2 did) doubled the record. The record
//! is the largest row a new incident writes, and its size is what the first scan of a large
//! corpus pays for in B-tree page splits and page writes. Format 2 (binary, the normalised
//! text whole unless equal to the sample) and format 1 (the JSON record versions before
//! 2026-12-07 wrote) are still read: stores are never rewritten just to change the encoding
//! (a record is re-encoded when it changes). The format byte lets this version refuse a
//! value written by a newer Sentinel instead of misreading it.

use super::codec::{self, DecodeError};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::attribute::{AttributionStatus, Severity};
use crate::scan::Fingerprint;

/// The format byte of values written by this version: the binary record, the normalised
/// text as edits of the sample.
pub const INCIDENT_FORMAT: u8 = 3;

/// The format byte of the binary record with the normalised text whole (2026-12-07; still
/// read).
pub const INCIDENT_FORMAT_V2: u8 = 2;

/// The format byte of the JSON record versions before 2026-12-07 wrote (still read).
pub const INCIDENT_FORMAT_JSON: u8 = 1;

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

    /// Every status, in lifecycle order. The order is part of a file format (a status is
    /// stored as its place here in `incident_state`): append only.
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

/// The binary record. Field order is the format: append new fields at the end only with a
/// new format byte. `S` is `&str` when encoding, `String` when decoding; `N`, the normalised
/// text, is [`Normalized`] in format 3 and `Option<S>` (`None`: the sample) in format 2.
#[derive(Serialize, Deserialize)]
struct Wire<S, N> {
    id: S,
    fingerprint: u64,
    count: u64,
    first_seen_ns: i128,
    last_seen_ns: i128,
    /// [`attribution_code`].
    attribution: u8,
    /// The index in [`Severity::ALL`].
    severity: u8,
    /// The index in [`IncidentStatus::ALL`].
    status: u8,
    component_id: S,
    method: S,
    pact_key: S,
    normalized: N,
    sample: S,
    source: S,
    resolution: S,
    overflow: Option<Overflow>,
}

/// The normalised text in format 3.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Normalized<S> {
    /// The sample itself (nothing was normalised).
    Same,
    /// The sample with runs replaced: for each `(copy, skip, token)`, the next `copy` bytes
    /// of the sample, then [`TOKENS`]`[token]` in place of its next `skip` bytes; then the
    /// next `tail` bytes of the sample (the normalised text is kept to 512 bytes, so it may
    /// stop before the sample does).
    Edits { ops: Vec<(u32, u32, u8)>, tail: u32 },
    /// Stored whole: not an edit of the sample (a keyed webhook event's `<key> <line>`, or
    /// a sample cut at [`SAMPLE_MAX_BYTES`] before its normalised text ends).
    Text(S),
}

/// What normalisation writes in place of a run (see `scan::fingerprint`): the three tokens,
/// then what the 512-byte cut of the normalised text leaves of one at its end.
const TOKENS: [&str; 12] = [
    "<n>", "<hex>", "<uuid>", "<", "<n", "<h", "<he", "<hex", "<u", "<uu", "<uui", "<uuid",
];

/// The whole tokens: the first three of [`TOKENS`].
const WHOLE_TOKENS: usize = 3;

/// `normalized` as [`Normalized::Edits`] of `sample`, when it is one: found greedily (copy
/// the common prefix, then a token replacing the longest run of its class). Exact by
/// construction, whatever the greedy reading gets wrong: every byte the edits write is a
/// copied byte that equals the text's or one of its tokens, and a skip only moves where the
/// next comparison starts; a text they cannot reach is stored whole. (The round-trip test
/// checks it over generated lines.)
fn edits<'a>(sample: &str, normalized: &'a str) -> Normalized<&'a str> {
    if normalized == sample {
        return Normalized::Same;
    }
    let (s, n) = (sample.as_bytes(), normalized.as_bytes());
    let (mut i, mut j) = (0, 0);
    let mut ops = Vec::new();
    loop {
        let c = common_prefix(&s[i..], &n[j..]);
        let rest = &n[j + c..];
        if rest.is_empty() {
            return Normalized::Edits {
                ops,
                tail: c as u32,
            };
        }
        let whole = TOKENS[..WHOLE_TOKENS]
            .iter()
            .position(|t| rest.starts_with(t.as_bytes()));
        // A token cut at the end of the text: nothing follows it.
        let cut = || {
            TOKENS[WHOLE_TOKENS..]
                .iter()
                .position(|t| rest == t.as_bytes())
        };
        let (t, skip) = match (whole, cut()) {
            (Some(t), _) => {
                let run = &s[i + c..];
                let skip = match t {
                    0 => run.iter().take_while(|b| b.is_ascii_digit()).count(),
                    1 => {
                        // A hex run cut where a UUID starts in it (its last 8 digits).
                        let r = run.iter().take_while(|b| b.is_ascii_hexdigit()).count();
                        let uuid = rest[TOKENS[1].len()..].starts_with(TOKENS[2].as_bytes());
                        if uuid && r > 8 { r - 8 } else { r }
                    }
                    _ => 36.min(run.len()),
                };
                if skip == 0 {
                    return Normalized::Text(normalized);
                }
                (t, skip)
            }
            (None, Some(t)) => (WHOLE_TOKENS + t, 0),
            (None, None) => return Normalized::Text(normalized),
        };
        ops.push((c as u32, skip as u32, t as u8));
        i += c + skip;
        j += c + TOKENS[t].len();
    }
}

/// The length of the common prefix of `a` and `b` (16 bytes at a time while they agree).
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 16 <= n && a[i..i + 16] == b[i..i + 16] {
        i += 16;
    }
    i + a[i..n]
        .iter()
        .zip(&b[i..n])
        .take_while(|(x, y)| x == y)
        .count()
}

/// The text [`Normalized::Edits`] make of `sample`; `None` when they reach past its end or
/// name no token.
fn apply<S>(sample: &[u8], e: &Normalized<S>) -> Option<Vec<u8>> {
    let Normalized::Edits { ops, tail } = e else {
        return None;
    };
    let mut out = Vec::with_capacity(sample.len());
    let mut i = 0usize;
    for &(copy, skip, token) in ops {
        let end = i.checked_add(copy as usize)?;
        out.extend_from_slice(sample.get(i..end)?);
        out.extend_from_slice(TOKENS.get(usize::from(token))?.as_bytes());
        i = end.checked_add(skip as usize)?;
    }
    out.extend_from_slice(sample.get(i..i.checked_add(*tail as usize)?)?);
    Some(out)
}

pub(crate) fn attribution_code(a: AttributionStatus) -> u8 {
    match a {
        AttributionStatus::Registered => 0,
        AttributionStatus::Unregistered => 1,
        AttributionStatus::Unattributed => 2,
    }
}

pub(crate) fn attribution_of(code: u8) -> Option<AttributionStatus> {
    Some(match code {
        0 => AttributionStatus::Registered,
        1 => AttributionStatus::Unregistered,
        2 => AttributionStatus::Unattributed,
        _ => return None,
    })
}

/// The one-byte code of a severity (its index in [`Severity::ALL`]).
pub(crate) fn severity_code(s: Severity) -> u8 {
    Severity::ALL.iter().position(|x| *x == s).unwrap_or(1) as u8
}

/// The one-byte code of a status (its index in [`IncidentStatus::ALL`]).
pub(crate) fn status_code(s: IncidentStatus) -> u8 {
    IncidentStatus::ALL
        .iter()
        .position(|x| *x == s)
        .unwrap_or(0) as u8
}

/// `s` cut to at most `max` bytes at a character boundary.
fn capped(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Incident {
    /// Encodes for the store (format [`INCIDENT_FORMAT`]: binary; the sample capped at
    /// [`SAMPLE_MAX_BYTES`]).
    pub fn encode(&self) -> Vec<u8> {
        let sample = capped(&self.sample, SAMPLE_MAX_BYTES);
        let wire = Wire::<&str, Normalized<&str>> {
            id: &self.id,
            fingerprint: self.fingerprint.0,
            count: self.count,
            first_seen_ns: self.first_seen.as_nanosecond(),
            last_seen_ns: self.last_seen.as_nanosecond(),
            attribution: attribution_code(self.attribution),
            severity: severity_code(self.severity),
            status: status_code(self.status),
            component_id: &self.component_id,
            method: &self.method,
            pact_key: &self.pact_key,
            normalized: edits(sample, &self.normalized),
            sample,
            source: &self.source,
            resolution: &self.resolution,
            overflow: self.overflow.clone(),
        };
        codec::encode_bin(INCIDENT_FORMAT, &wire)
    }

    /// The JSON record (format 1) earlier versions wrote: for tests of the old format.
    #[cfg(test)]
    pub(crate) fn encode_json(&self) -> Vec<u8> {
        codec::encode(INCIDENT_FORMAT_JSON, self)
    }

    /// Decodes a stored value of either format.
    ///
    /// # Errors
    ///
    /// [`DecodeError`] when the value is from a newer format or is not a valid record.
    pub fn decode(bytes: &[u8]) -> Result<Incident, DecodeError> {
        match bytes.split_first() {
            Some((&INCIDENT_FORMAT_JSON, _)) => codec::decode(INCIDENT_FORMAT_JSON, bytes),
            Some((&INCIDENT_FORMAT, body)) => {
                let mut w: Wire<String, Normalized<String>> = codec::decode_bin(body)?;
                let normalized = match std::mem::replace(&mut w.normalized, Normalized::Same) {
                    Normalized::Same => w.sample.clone(),
                    Normalized::Text(t) => t,
                    e @ Normalized::Edits { .. } => apply(w.sample.as_bytes(), &e)
                        .and_then(|v| String::from_utf8(v).ok())
                        .ok_or_else(|| DecodeError::Invalid("bad normalised edits".into()))?,
                };
                Incident::from_wire(w, normalized)
            }
            Some((&INCIDENT_FORMAT_V2, body)) => {
                let mut w: Wire<String, Option<String>> = codec::decode_bin(body)?;
                let normalized = w.normalized.take().unwrap_or_else(|| w.sample.clone());
                Incident::from_wire(w, normalized)
            }
            // Empty, newer, or unknown.
            _ => codec::decode(INCIDENT_FORMAT, bytes),
        }
    }

    fn from_wire<N>(w: Wire<String, N>, normalized: String) -> Result<Incident, DecodeError> {
        let bad = |what: &str| DecodeError::Invalid(format!("bad {what}"));
        let ts = |ns: i128| Timestamp::from_nanosecond(ns).map_err(|_| bad("timestamp"));
        Ok(Incident {
            id: w.id,
            fingerprint: Fingerprint(w.fingerprint),
            normalized,
            count: w.count,
            first_seen: ts(w.first_seen_ns)?,
            last_seen: ts(w.last_seen_ns)?,
            attribution: attribution_of(w.attribution).ok_or_else(|| bad("attribution"))?,
            component_id: w.component_id,
            method: w.method,
            pact_key: w.pact_key,
            severity: *Severity::ALL
                .get(usize::from(w.severity))
                .ok_or_else(|| bad("severity"))?,
            status: *IncidentStatus::ALL
                .get(usize::from(w.status))
                .ok_or_else(|| bad("status"))?,
            sample: w.sample,
            source: w.source,
            resolution: w.resolution,
            overflow: w.overflow,
        })
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
pub(crate) mod tests {
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
        let mut newer = bytes.clone();
        newer[0] = INCIDENT_FORMAT + 1;
        assert_eq!(
            Incident::decode(&newer),
            Err(DecodeError::Newer(INCIDENT_FORMAT + 1, INCIDENT_FORMAT))
        );
        for cut in [1, 10, bytes.len() - 1] {
            assert!(
                matches!(
                    Incident::decode(&bytes[..cut]),
                    Err(DecodeError::Invalid(_))
                ),
                "cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            Incident::decode(&longer),
            Err(DecodeError::Invalid(_))
        ));
        assert_eq!(Incident::decode(&[]), Err(DecodeError::Empty));
        assert!(matches!(
            Incident::decode(&[0, 1, 2]),
            Err(DecodeError::Invalid(_))
        ));
    }

    /// Format 1, the JSON record earlier versions wrote, still decodes to the same incident.
    #[test]
    fn the_json_format_is_still_read() {
        let inc = sample();
        let json = inc.encode_json();
        assert_eq!(json[0], INCIDENT_FORMAT_JSON);
        let v: serde_json::Value = serde_json::from_slice(&json[1..]).unwrap();
        assert_eq!(v["fingerprint"], "0123456789abcdef");
        assert_eq!(Incident::decode(&json).unwrap(), inc);
        // Written by a version before format 2 (no `resolution`, no `overflow`).
        let old = br#"{"id":"0123456789ab","fingerprint":"0123456789abcdef","normalized":"ERROR x <n>","count":3,"first_seen":"2026-11-23T13:17:47Z","last_seen":"2026-11-23T13:18:47Z","attribution":"registered","component_id":"auth","method":"login","pact_key":"PACT:auth:login","severity":"high","status":"detected","sample":"ERROR x 1","source":"/var/log/a.log"}"#;
        let mut v1 = vec![INCIDENT_FORMAT_JSON];
        v1.extend_from_slice(old);
        assert_eq!(Incident::decode(&v1).unwrap(), inc);
    }

    /// The bytes of format 2 are the format: a change to them (field order, enum codes) must
    /// be a new format byte, not a silent misreading of stored records.
    #[test]
    fn golden_binary_record() {
        let mut inc = sample();
        inc.first_seen = "2026-11-23T13:17:47.123456789Z".parse().unwrap();
        inc.status = IncidentStatus::Escalated;
        inc.resolution = "auto_remediate_disabled".into();
        let hex: String = inc.encode().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, GOLDEN_V3_HEX, "the binary incident record changed");
        assert_eq!(Incident::decode(&unhex(GOLDEN_V3_HEX)).unwrap(), inc);
        // Format 2, the normalised text whole, is still read.
        assert_eq!(Incident::decode(&unhex(GOLDEN_V2_HEX)).unwrap(), inc);
        // Nothing normalised: the normalised text is not stored twice.
        let mut same = sample();
        same.normalized = same.sample.clone();
        let short = same.encode();
        // One byte (`Same`) instead of six: the tag, one edit (copy 8, skip 1, `<n>`) and
        // the tail (format 2 stored a tag, a length and "ERROR x <n>": 13).
        assert_eq!(short.len() + 5, sample().encode().len());
        assert_eq!(Incident::decode(&short).unwrap(), same);
        // Not an edit of the sample: stored whole.
        let mut keyed = sample();
        keyed.normalized = "PACT:auth:login ERROR x <n>".into();
        assert_eq!(Incident::decode(&keyed.encode()).unwrap(), keyed);
        // An overflow incident.
        let mut over = sample();
        over.overflow = Some(Overflow {
            key: "PACT:auth:login".into(),
            high_cardinality: true,
            folded_fingerprints: 12,
            samples: vec!["a".into(), "b".into()],
            hint: "h".into(),
        });
        assert_eq!(Incident::decode(&over.encode()).unwrap(), over);
    }

    /// The sample is capped at [`SAMPLE_MAX_BYTES`] on a character boundary.
    #[test]
    fn the_sample_is_capped() {
        let mut inc = sample();
        inc.sample = format!("{}é", "x".repeat(SAMPLE_MAX_BYTES - 1));
        let back = Incident::decode(&inc.encode()).unwrap();
        assert_eq!(back.sample, "x".repeat(SAMPLE_MAX_BYTES - 1));
        assert_eq!(back.normalized, inc.normalized);
    }

    fn unhex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The normalised text of lines like the ones users log (numbers, hex runs, UUIDs, PACT
    /// keys, `<` and `>` of their own, multi-byte characters, lines longer than the 512
    /// bytes of normalised text kept and than the sample) comes back exactly, and is
    /// stored as edits unless the greedy reading cannot make it from the sample.
    #[test]
    fn the_normalised_text_is_stored_as_edits_of_the_sample_and_read_back_exactly() {
        use crate::scan::fingerprint::{NORMALIZED_KEEP_BYTES, normalize_into};
        use proptest::prelude::*;
        let piece = prop_oneof![
            Just("ERROR ".to_string()),
            Just("<".to_string()),
            Just(">".to_string()),
            Just("<n>".to_string()),
            Just("<he".to_string()),
            Just("é".to_string()),
            Just("-".to_string()),
            Just("PACT:svc_v2:get ".to_string()),
            "[a-z ]{1,12}",
            "[0-9]{1,12}",
            "[0-9a-fA-F]{1,20}",
            "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            "[0-9a-f]{300}",
        ];
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let (edited, whole) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
        runner
            .run(&proptest::collection::vec(piece, 0..60), |pieces| {
                let line = pieces.concat();
                let mut buf = Vec::new();
                normalize_into(line.as_bytes(), &mut buf);
                let mut inc = sample();
                inc.sample = line.clone();
                inc.normalized = lossy_prefix(&buf, NORMALIZED_KEEP_BYTES);
                let back = Incident::decode(&inc.encode()).unwrap();
                prop_assert_eq!(&back.normalized, &inc.normalized);
                prop_assert_eq!(back.sample, capped(&line, SAMPLE_MAX_BYTES));
                match edits(capped(&line, SAMPLE_MAX_BYTES), &inc.normalized) {
                    Normalized::Text(_) => whole.set(whole.get() + 1),
                    _ => edited.set(edited.get() + 1),
                }
                Ok(())
            })
            .unwrap();
        // Whole only where the sample is cut before the normalised text ends (a line of
        // more than 4,096 bytes whose long hex runs shrank to `<hex>`).
        let (edited, whole) = (edited.get(), whole.get());
        assert!(edited > 20 * whole, "{edited} as edits, {whole} whole");
        // Edits that reach past the sample are an invalid record, not a panic.
        let mut bad = sample().encode();
        let at = bad.windows(3).position(|w| w == [1, 1, 8]).unwrap();
        bad[at + 2] = 100;
        assert!(matches!(
            Incident::decode(&bad),
            Err(DecodeError::Invalid(_))
        ));
    }

    const GOLDEN_V3_HEX: &str = concat!(
        "030c303132333435363738396162ef9bafcdf8acd1910103aaecbef7fcc2d7ea3180989b86bbc6d7ea3100",
        "02060461757468056c6f67696e0f504143543a617574683a6c6f67696e010108010000094552524f522078",
        "20310e2f7661722f6c6f672f612e6c6f67176175746f5f72656d6564696174655f64697361626c656400",
    );

    const GOLDEN_V2_HEX: &str = concat!(
        "020c303132333435363738396162ef9bafcdf8acd1910103aaecbef7fcc2d7ea3180989b86bbc6d7ea3100",
        "02060461757468056c6f67696e0f504143543a617574683a6c6f67696e010b4552524f522078203c6e3e09",
        "4552524f52207820310e2f7661722f6c6f672f612e6c6f67176175746f5f72656d6564696174655f646973",
        "61626c656400"
    );

    #[test]
    fn lossy_prefix_does_not_split_characters() {
        assert_eq!(lossy_prefix("héllo".as_bytes(), 2), "h");
        assert_eq!(lossy_prefix(b"abc", 10), "abc");
        assert_eq!(lossy_prefix(b"ab\xffcd", 4), "ab\u{fffd}c");
    }
}
