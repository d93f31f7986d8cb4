//! The durable event log: what happened to incidents and fixes, in commit order.
//!
//! Every state change that someone outside may care about — an incident detected,
//! escalated, resolved or regressed, its count moving, a fix started, completed or failed —
//! is appended to the `events` table **in the same write transaction as the change itself**
//! (see [`super::StoreTxn::emit`]). So an event exists exactly when its change committed:
//! never an event for a rolled-back change, never a change without its event.
//!
//! Two readers follow the log by sequence number:
//!
//! - the API's `GET /events` stream (Server-Sent Events, resumable with `Last-Event-ID`);
//! - the integrations outbox, which delivers to Arbiter, Stigmergy, Chronicler and the
//!   notify webhook with retries, keeping one durable cursor per sink.
//!
//! `incident_updated` (a count moved) is coalesced to at most one event per incident per
//! [`UPDATE_EVERY_US`], so a flood of one error line costs a handful of events, not one per
//! line. The log keeps the newest [`EVENTS_KEEP`] events (see `StoreTxn::prune_events`).

use std::collections::HashMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The format byte of events written by this version: a binary envelope
/// ([`super::codec::encode_bin`]: sequence, time and kind as numbers, the ids as strings)
/// around the JSON text of `data`.
pub const EVENT_FORMAT: u8 = 2;

/// The format byte of the JSON events versions before 2026-12-07 wrote (still read).
pub const EVENT_FORMAT_JSON: u8 = 1;

/// The longest sample (and normalised text), in characters, an incident event carries: the
/// summaries the integrations send ([`crate::integrations::map::SUMMARY_CHARS`]) and the
/// dashboard's feed need no more; the whole record is one `GET /incidents/{id}` away.
pub const EVENT_SAMPLE_CHARS: usize = 200;

/// `incident_updated` is emitted at most this often per incident (µs).
pub const UPDATE_EVERY_US: u64 = 1_000_000;

/// How many events the log keeps.
pub const EVENTS_KEEP: u64 = 100_000;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "daemon", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A new incident.
    IncidentDetected,
    /// An incident's count or state moved.
    IncidentUpdated,
    /// Handed to a human (resolution says why).
    IncidentEscalated,
    /// Fixed.
    IncidentResolved,
    /// Seen again after its fix was merged: reopened.
    IncidentRegressed,
    /// A fixer took the incident.
    FixStarted,
    /// A fix was proven by the tests.
    FixCompleted,
    /// A fix attempt ended without a proven fix.
    FixFailed,
    /// A guardrail refused or held back a fix (data: `guardrail`, `reason`).
    FixRefused,
}

impl EventKind {
    /// The snake_case name (the SSE `event:` field).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::IncidentDetected => "incident_detected",
            EventKind::IncidentUpdated => "incident_updated",
            EventKind::IncidentEscalated => "incident_escalated",
            EventKind::IncidentResolved => "incident_resolved",
            EventKind::IncidentRegressed => "incident_regressed",
            EventKind::FixStarted => "fix_started",
            EventKind::FixCompleted => "fix_completed",
            EventKind::FixFailed => "fix_failed",
            EventKind::FixRefused => "fix_refused",
        }
    }

    /// Every kind.
    pub const ALL: [EventKind; 9] = [
        EventKind::IncidentDetected,
        EventKind::IncidentUpdated,
        EventKind::IncidentEscalated,
        EventKind::IncidentResolved,
        EventKind::IncidentRegressed,
        EventKind::FixStarted,
        EventKind::FixCompleted,
        EventKind::FixFailed,
        EventKind::FixRefused,
    ];
}

/// One logged event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "daemon", derive(utoipa::ToSchema))]
pub struct Event {
    /// Position in the log (1, 2, …; never reused).
    pub seq: u64,
    /// When it was committed.
    pub at: Timestamp,
    /// What happened.
    pub kind: EventKind,
    /// The incident concerned.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub incident_id: String,
    /// The fix concerned.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fix_id: String,
    /// The component concerned.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub component_id: String,
    /// Details: the incident (for incident events) or the fix result.
    #[serde(default)]
    pub data: serde_json::Value,
}

/// An event before it is logged (the log assigns `seq` and `at`).
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// What happened.
    pub kind: EventKind,
    /// The incident concerned (may be empty).
    pub incident_id: String,
    /// The fix concerned (may be empty).
    pub fix_id: String,
    /// The component concerned (may be empty).
    pub component_id: String,
    /// Details.
    pub data: serde_json::Value,
}

impl NewEvent {
    /// An event about an incident, carrying what its consumers read of it (the SSE stream,
    /// the dashboard's feed and live list, the integrations): its ids, attribution, severity,
    /// status, count and times, and its sample and normalised text cut to
    /// [`EVENT_SAMPLE_CHARS`]. Not the whole record: an incident's first events would
    /// otherwise store its sample twice more.
    pub fn incident(kind: EventKind, inc: &super::Incident) -> NewEvent {
        let cut = |s: &str| match s.char_indices().nth(EVENT_SAMPLE_CHARS) {
            Some((i, _)) => s[..i].to_string(),
            None => s.to_string(),
        };
        let mut data = serde_json::json!({
            "id": inc.id,
            "fingerprint": inc.fingerprint.to_string(),
            "component_id": inc.component_id,
            "method": inc.method,
            "pact_key": inc.pact_key,
            "attribution": inc.attribution,
            "severity": inc.severity,
            "status": inc.status,
            "resolution": inc.resolution,
            "count": inc.count,
            "first_seen": inc.first_seen,
            "last_seen": inc.last_seen,
            "sample": cut(&inc.sample),
            "normalized": cut(&inc.normalized),
            "source": inc.source,
        });
        if let (Some(o), serde_json::Value::Object(m)) = (&inc.overflow, &mut data) {
            m.insert("high_cardinality".into(), o.high_cardinality.into());
        }
        NewEvent {
            kind,
            incident_id: inc.id.clone(),
            fix_id: String::new(),
            component_id: inc.component_id.clone(),
            data,
        }
    }
}

/// The binary envelope of an event (format 2). Field order is the format. `S` is `&str`
/// when encoding, `String` when decoding.
#[derive(Serialize, Deserialize)]
struct Wire<S> {
    seq: u64,
    at_ns: i128,
    /// The index in [`EventKind::ALL`].
    kind: u8,
    incident_id: S,
    fix_id: S,
    component_id: S,
    /// The JSON text of `data`.
    data: S,
}

impl Event {
    /// The stored bytes (format [`EVENT_FORMAT`]).
    pub fn encode(&self) -> Vec<u8> {
        let data = serde_json::to_string(&self.data).unwrap_or_else(|_| "null".into());
        let wire = Wire::<&str> {
            seq: self.seq,
            at_ns: self.at.as_nanosecond(),
            kind: EventKind::ALL
                .iter()
                .position(|k| *k == self.kind)
                .unwrap_or(0) as u8,
            incident_id: &self.incident_id,
            fix_id: &self.fix_id,
            component_id: &self.component_id,
            data: &data,
        };
        super::codec::encode_bin(EVENT_FORMAT, &wire)
    }

    /// The JSON event (format 1) earlier versions wrote: for tests of the old format.
    #[cfg(test)]
    pub(crate) fn encode_json(&self) -> Vec<u8> {
        super::codec::encode(EVENT_FORMAT_JSON, self)
    }

    /// Decodes stored bytes of either format.
    ///
    /// # Errors
    ///
    /// A message when the value is from a newer format or is not valid.
    pub fn decode(b: &[u8]) -> Result<Event, String> {
        match b.split_first() {
            Some((&EVENT_FORMAT_JSON, _)) => {
                super::codec::decode(EVENT_FORMAT_JSON, b).map_err(|e| e.to_string())
            }
            Some((&EVENT_FORMAT, body)) => {
                let w: Wire<String> = super::codec::decode_bin(body).map_err(|e| e.to_string())?;
                Ok(Event {
                    seq: w.seq,
                    at: Timestamp::from_nanosecond(w.at_ns).map_err(|e| e.to_string())?,
                    kind: *EventKind::ALL
                        .get(usize::from(w.kind))
                        .ok_or_else(|| format!("invalid value: unknown event kind {}", w.kind))?,
                    incident_id: w.incident_id,
                    fix_id: w.fix_id,
                    component_id: w.component_id,
                    data: serde_json::from_str(&w.data)
                        .map_err(|e| format!("invalid value: {e}"))?,
                })
            }
            _ => super::codec::decode(EVENT_FORMAT, b).map_err(|e| e.to_string()),
        }
    }
}

/// Called after a commit that logged events, with the newest sequence number.
pub type EventHook = std::sync::Arc<dyn Fn(u64) + Send + Sync>;

/// When each incident last had an `incident_updated` (µs), to coalesce them.
#[derive(Debug, Default)]
pub(crate) struct UpdateThrottle {
    last: HashMap<u64, u64>,
}

impl UpdateThrottle {
    /// Whether an update of `fp` at `now_us` is due (and if so, records it).
    pub(crate) fn due(&mut self, fp: u64, now_us: u64) -> bool {
        if self.last.len() > 100_000 {
            self.last
                .retain(|_, t| now_us.saturating_sub(*t) < UPDATE_EVERY_US);
        }
        match self.last.get(&fp) {
            Some(&t) if now_us.saturating_sub(t) < UPDATE_EVERY_US => false,
            _ => {
                self.last.insert(fp, now_us);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        Event {
            seq: 7,
            at: "2026-12-07T01:02:03.456789Z".parse().unwrap(),
            kind: EventKind::IncidentEscalated,
            incident_id: "0123456789ab".into(),
            fix_id: String::new(),
            component_id: "auth".into(),
            data: serde_json::json!({"status": "escalated"}),
        }
    }

    #[test]
    fn both_formats_round_trip_and_newer_ones_are_refused() {
        let ev = event();
        let bin = ev.encode();
        assert_eq!(bin[0], EVENT_FORMAT);
        assert_eq!(Event::decode(&bin).unwrap(), ev);
        let json = ev.encode_json();
        assert_eq!(json[0], EVENT_FORMAT_JSON);
        assert_eq!(Event::decode(&json).unwrap(), ev);
        assert!(bin.len() < json.len(), "{} vs {}", bin.len(), json.len());
        let mut newer = bin.clone();
        newer[0] = EVENT_FORMAT + 1;
        assert!(Event::decode(&newer).unwrap_err().contains("newer"));
        assert!(Event::decode(&bin[..bin.len() - 1]).is_err());
        assert!(Event::decode(&[]).is_err());
        for kind in EventKind::ALL {
            let e = Event { kind, ..event() };
            assert_eq!(Event::decode(&e.encode()).unwrap().kind, kind);
        }
    }

    /// Pins the bytes of format 2 (a change must be a new format byte).
    #[test]
    fn golden_binary_event() {
        let hex: String = event()
            .encode()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, GOLDEN_V2_HEX, "the binary event changed");
    }

    const GOLDEN_V2_HEX: &str = concat!(
        "020790e8bda3bbc1e9ee31020c303132333435363738396162000461757468167b22737461747573223a",
        "22657363616c61746564227d"
    );

    #[test]
    fn incident_events_are_small() {
        let mut inc = crate::store::incident::tests::sample();
        inc.sample = "é".repeat(5000);
        let ev = NewEvent::incident(EventKind::IncidentDetected, &inc);
        assert_eq!(
            ev.data["sample"].as_str().unwrap().chars().count(),
            EVENT_SAMPLE_CHARS
        );
        assert_eq!(ev.data["pact_key"], "PACT:auth:login");
        assert_eq!(ev.data["severity"], "high");
        assert_eq!(ev.data["count"], 3);
        assert_eq!(ev.data["id"], "0123456789ab");
        assert_eq!(ev.data["first_seen"], "2026-11-23T13:17:47Z");
        assert!(ev.data.get("high_cardinality").is_none());
    }
}
