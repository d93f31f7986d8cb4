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

use super::IncidentStatus;
use crate::attribute::{AttributionStatus, Severity};
use crate::scan::Fingerprint;

/// The format byte of events written by this version: a binary envelope
/// ([`super::codec::encode_bin`]: sequence, time and kind as numbers, the ids as strings),
/// the JSON text of `data` (empty when there is none) and, for an incident event, the
/// [`IncidentState`] it was logged with (see [`NewEvent::incident`]).
pub const EVENT_FORMAT: u8 = 3;

/// The format byte of the binary events written on 2026-12-07 (a binary envelope around the
/// JSON text of the whole `data`, the incident summary included; still read).
pub const EVENT_FORMAT_V2: u8 = 2;

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
    /// Details. For an incident event, fields added to (or replacing) its summary.
    pub data: serde_json::Value,
    /// For an incident event, the incident's state when it happened (see
    /// [`NewEvent::incident`]); `None` for any other event.
    pub incident: Option<IncidentState>,
}

/// What an incident event records of its incident: the fields that change over the
/// incident's life, as they were when it happened.
///
/// The rest of the summary its readers get (method, PACT key, first seen, sample, normalised
/// text, source) never changes once the incident exists, so it is not copied into every
/// event: [`super::Store::events_after`] and [`super::Store::incident_events`] read it from
/// the incident's record. An incident event costs tens of bytes instead of a copy of the
/// incident, and a scan that moves the counts of 30,000 incidents writes that much less.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentState {
    /// The incident's fingerprint (the key of its record).
    pub fingerprint: Fingerprint,
    /// Its count.
    pub count: u64,
    /// When it was last seen.
    pub last_seen: Timestamp,
    /// Its status, severity, attribution and resolution as they were; `None` for a count
    /// that moved (the ingest writer's `incident_updated`, logged without reading the
    /// record): the summary then shows them as the record holds them when read.
    pub detail: Option<StateDetail>,
}

/// The part of an [`IncidentState`] a count that moved does not record.
#[derive(Debug, Clone, PartialEq)]
pub struct StateDetail {
    /// Its attribution.
    pub attribution: AttributionStatus,
    /// Its severity.
    pub severity: Severity,
    /// Its status.
    pub status: IncidentStatus,
    /// How it was closed, if it was.
    pub resolution: String,
    /// Whether it is a key's overflow incident (see [`super::guard`]).
    pub high_cardinality: bool,
}

impl StateDetail {
    fn of(inc: &super::Incident) -> StateDetail {
        StateDetail {
            attribution: inc.attribution,
            severity: inc.severity,
            status: inc.status,
            resolution: inc.resolution.clone(),
            high_cardinality: inc.overflow.as_ref().is_some_and(|o| o.high_cardinality),
        }
    }
}

impl IncidentState {
    /// The state of `inc` now.
    pub fn of(inc: &super::Incident) -> IncidentState {
        IncidentState {
            fingerprint: inc.fingerprint,
            count: inc.count,
            last_seen: inc.last_seen,
            detail: Some(StateDetail::of(inc)),
        }
    }
}

impl NewEvent {
    /// An event about an incident. Its readers get the incident's summary — its ids,
    /// attribution, severity, status, count and times, and its sample and normalised text cut
    /// to [`EVENT_SAMPLE_CHARS`] — built when the event is read from the [`IncidentState`]
    /// logged here and the incident's record (see [`IncidentState`]); `data` holds only what
    /// a caller adds to it.
    pub fn incident(kind: EventKind, inc: &super::Incident) -> NewEvent {
        NewEvent {
            kind,
            incident_id: inc.id.clone(),
            fix_id: String::new(),
            component_id: inc.component_id.clone(),
            data: serde_json::Value::Object(serde_json::Map::new()),
            incident: Some(IncidentState::of(inc)),
        }
    }

    /// `incident_updated` for incident `fp` (id `incident_id`, of `component_id`) whose count
    /// moved to `count`, last seen at `last_seen`: the ingest writer's event, logged without
    /// reading the incident's record (see [`IncidentState::detail`]).
    pub fn count_moved(
        incident_id: String,
        component_id: String,
        fp: Fingerprint,
        count: u64,
        last_seen: Timestamp,
    ) -> NewEvent {
        NewEvent {
            kind: EventKind::IncidentUpdated,
            incident_id,
            fix_id: String::new(),
            component_id,
            data: serde_json::Value::Object(serde_json::Map::new()),
            incident: Some(IncidentState {
                fingerprint: fp,
                count,
                last_seen,
                detail: None,
            }),
        }
    }
}

/// The summary of an incident that an incident event's `data` holds: `state` as the event
/// logged it, the unchanging fields from `record` (the incident's record, when it is still
/// stored), then `extra` (what the event's writer added) on top.
fn summary(
    ev: &Event,
    state: &IncidentState,
    record: Option<&super::Incident>,
    extra: serde_json::Value,
) -> serde_json::Value {
    use serde_json::Value;
    let cut = |s: &str| match s.char_indices().nth(EVENT_SAMPLE_CHARS) {
        Some((i, _)) => s[..i].to_string(),
        None => s.to_string(),
    };
    let mut m = serde_json::Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    put("id", ev.incident_id.clone().into());
    put("fingerprint", state.fingerprint.to_string().into());
    put("component_id", ev.component_id.clone().into());
    put("count", state.count.into());
    put(
        "last_seen",
        serde_json::to_value(state.last_seen).unwrap_or_default(),
    );
    let detail = match (&state.detail, record) {
        (Some(d), _) => Some(d.clone()),
        (None, Some(r)) => Some(StateDetail::of(r)),
        (None, None) => None,
    };
    if let Some(d) = detail {
        put("attribution", d.attribution.as_str().into());
        put("severity", d.severity.as_str().into());
        put("status", d.status.as_str().into());
        put("resolution", d.resolution.into());
        if d.high_cardinality {
            put("high_cardinality", true.into());
        }
    }
    if let Some(r) = record {
        put("method", r.method.clone().into());
        put("pact_key", r.pact_key.clone().into());
        put(
            "first_seen",
            serde_json::to_value(r.first_seen).unwrap_or_default(),
        );
        put("sample", cut(&r.sample).into());
        put("normalized", cut(&r.normalized).into());
        put("source", r.source.clone().into());
    }
    if let Value::Object(extra) = extra {
        m.extend(extra);
    }
    Value::Object(m)
}

/// The binary envelope of an event of format 2. Field order is the format. `S` is `&str`
/// when encoding, `String` when decoding.
#[derive(Serialize, Deserialize)]
struct WireV2<S> {
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

/// An event of format 3 ([`EVENT_FORMAT`]). Field order is the format.
#[derive(Serialize, Deserialize)]
struct Wire<S> {
    seq: u64,
    at_ns: i128,
    /// The index in [`EventKind::ALL`].
    kind: u8,
    incident_id: S,
    fix_id: S,
    component_id: S,
    /// The JSON text of `data`; empty for none (`null`, or an incident event's empty object).
    data: S,
    incident: Option<StateWire<S>>,
}

/// [`IncidentState`] on disk: the time in nanoseconds.
#[derive(Serialize, Deserialize)]
struct StateWire<S> {
    fingerprint: u64,
    count: u64,
    last_seen_ns: i128,
    detail: Option<DetailWire<S>>,
}

/// [`StateDetail`] on disk: the enums as one byte each (the codes of [`super::incident`]).
#[derive(Serialize, Deserialize)]
struct DetailWire<S> {
    attribution: u8,
    severity: u8,
    status: u8,
    resolution: S,
    high_cardinality: bool,
}

impl StateWire<String> {
    fn state(self) -> Result<IncidentState, String> {
        use super::incident::attribution_of;
        let bad = |what: &str| format!("invalid value: bad {what} in an incident event");
        let detail = match self.detail {
            None => None,
            Some(d) => Some(StateDetail {
                attribution: attribution_of(d.attribution).ok_or_else(|| bad("attribution"))?,
                severity: *Severity::ALL
                    .get(usize::from(d.severity))
                    .ok_or_else(|| bad("severity"))?,
                status: *IncidentStatus::ALL
                    .get(usize::from(d.status))
                    .ok_or_else(|| bad("status"))?,
                resolution: d.resolution,
                high_cardinality: d.high_cardinality,
            }),
        };
        Ok(IncidentState {
            fingerprint: Fingerprint(self.fingerprint),
            count: self.count,
            last_seen: Timestamp::from_nanosecond(self.last_seen_ns)
                .map_err(|_| bad("timestamp"))?,
            detail,
        })
    }
}

/// An event as stored: for an incident event of format 3, `data` holds only what its writer
/// added, and `incident` the state to build the summary from ([`Stored::complete`]).
pub(crate) struct Stored {
    pub(crate) event: Event,
    pub(crate) incident: Option<IncidentState>,
}

impl Stored {
    /// The event, its summary built from `record` (the incident's record, if still stored).
    pub(crate) fn complete(self, record: Option<&super::Incident>) -> Event {
        let Stored {
            mut event,
            incident,
        } = self;
        if let Some(state) = incident {
            let extra = std::mem::take(&mut event.data);
            event.data = summary(&event, &state, record, extra);
        }
        event
    }
}

fn kind_code(kind: EventKind) -> u8 {
    EventKind::ALL.iter().position(|k| *k == kind).unwrap_or(0) as u8
}

fn kind_of(code: u8) -> Result<EventKind, String> {
    EventKind::ALL
        .get(usize::from(code))
        .copied()
        .ok_or_else(|| format!("invalid value: unknown event kind {code}"))
}

/// The JSON text of an event's `data`: empty for none.
fn data_text(data: &serde_json::Value) -> String {
    match data {
        serde_json::Value::Null => String::new(),
        serde_json::Value::Object(m) if m.is_empty() => String::new(),
        v => serde_json::to_string(v).unwrap_or_default(),
    }
}

/// Encodes a logged event (format [`EVENT_FORMAT`]).
pub(crate) fn encode(seq: u64, at: Timestamp, ev: &NewEvent) -> Vec<u8> {
    use super::incident::{attribution_code, severity_code, status_code};
    let data = data_text(&ev.data);
    let wire = Wire::<&str> {
        seq,
        at_ns: at.as_nanosecond(),
        kind: kind_code(ev.kind),
        incident_id: &ev.incident_id,
        fix_id: &ev.fix_id,
        component_id: &ev.component_id,
        data: &data,
        incident: ev.incident.as_ref().map(|s| StateWire {
            fingerprint: s.fingerprint.0,
            count: s.count,
            last_seen_ns: s.last_seen.as_nanosecond(),
            detail: s.detail.as_ref().map(|d| DetailWire {
                attribution: attribution_code(d.attribution),
                severity: severity_code(d.severity),
                status: status_code(d.status),
                resolution: d.resolution.as_str(),
                high_cardinality: d.high_cardinality,
            }),
        }),
    };
    super::codec::encode_bin(EVENT_FORMAT, &wire)
}

impl Event {
    /// The binary event of format 2 written on 2026-12-07: for tests of the old format.
    #[cfg(test)]
    pub(crate) fn encode_v2(&self) -> Vec<u8> {
        let data = serde_json::to_string(&self.data).unwrap_or_else(|_| "null".into());
        let wire = WireV2::<&str> {
            seq: self.seq,
            at_ns: self.at.as_nanosecond(),
            kind: kind_code(self.kind),
            incident_id: &self.incident_id,
            fix_id: &self.fix_id,
            component_id: &self.component_id,
            data: &data,
        };
        super::codec::encode_bin(EVENT_FORMAT_V2, &wire)
    }

    /// The JSON event (format 1) earlier versions wrote: for tests of the old format.
    #[cfg(test)]
    pub(crate) fn encode_json(&self) -> Vec<u8> {
        super::codec::encode(EVENT_FORMAT_JSON, self)
    }

    /// Decodes stored bytes of any format. An incident event of format 3 gets the part of
    /// its summary the event itself holds; the store's readers
    /// ([`super::Store::events_after`]) add the rest from the incident's record.
    ///
    /// # Errors
    ///
    /// A message when the value is from a newer format or is not valid.
    pub fn decode(b: &[u8]) -> Result<Event, String> {
        Ok(Event::decode_stored(b)?.complete(None))
    }

    /// Decodes stored bytes of any format, an incident event's summary left to build.
    pub(crate) fn decode_stored(b: &[u8]) -> Result<Stored, String> {
        let json = |t: &str| -> Result<serde_json::Value, String> {
            if t.is_empty() {
                return Ok(serde_json::Value::Null);
            }
            serde_json::from_str(t).map_err(|e| format!("invalid value: {e}"))
        };
        let at = |ns: i128| Timestamp::from_nanosecond(ns).map_err(|e| e.to_string());
        let w: Wire<String> = match b.split_first() {
            Some((&EVENT_FORMAT_JSON, _)) => {
                return Ok(Stored {
                    event: super::codec::decode(EVENT_FORMAT_JSON, b).map_err(|e| e.to_string())?,
                    incident: None,
                });
            }
            Some((&EVENT_FORMAT_V2, body)) => {
                let w: WireV2<String> =
                    super::codec::decode_bin(body).map_err(|e| e.to_string())?;
                // Format 2 is format 3 without an incident state (its data is whole).
                Wire {
                    seq: w.seq,
                    at_ns: w.at_ns,
                    kind: w.kind,
                    incident_id: w.incident_id,
                    fix_id: w.fix_id,
                    component_id: w.component_id,
                    data: w.data,
                    incident: None,
                }
            }
            Some((&EVENT_FORMAT, body)) => {
                super::codec::decode_bin(body).map_err(|e| e.to_string())?
            }
            // Empty, newer, or unknown: the codec says which.
            _ => {
                return super::codec::decode(EVENT_FORMAT, b)
                    .map(|event| Stored {
                        event,
                        incident: None,
                    })
                    .map_err(|e| e.to_string());
            }
        };
        Ok(Stored {
            event: Event {
                seq: w.seq,
                at: at(w.at_ns)?,
                kind: kind_of(w.kind)?,
                incident_id: w.incident_id,
                fix_id: w.fix_id,
                component_id: w.component_id,
                data: json(&w.data)?,
            },
            incident: w.incident.map(StateWire::state).transpose()?,
        })
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

    /// `event()` as the writer hands it over.
    fn new_event() -> NewEvent {
        let e = event();
        NewEvent {
            kind: e.kind,
            incident_id: e.incident_id,
            fix_id: e.fix_id,
            component_id: e.component_id,
            data: e.data,
            incident: None,
        }
    }

    fn incident_event() -> (NewEvent, crate::store::Incident) {
        let mut inc = crate::store::incident::tests::sample();
        inc.sample = "é".repeat(5000);
        inc.status = IncidentStatus::Escalated;
        inc.resolution = "no fixer".into();
        let mut ev = NewEvent::incident(EventKind::IncidentEscalated, &inc);
        if let serde_json::Value::Object(m) = &mut ev.data {
            m.insert("forge".into(), serde_json::json!({"note": "opened"}));
        }
        (ev, inc)
    }

    #[test]
    fn every_format_round_trips_and_newer_ones_are_refused() {
        let ev = event();
        let bin = encode(ev.seq, ev.at, &new_event());
        assert_eq!(bin[0], EVENT_FORMAT);
        assert_eq!(Event::decode(&bin).unwrap(), ev);
        let v2 = ev.encode_v2();
        assert_eq!(v2[0], EVENT_FORMAT_V2);
        assert_eq!(Event::decode(&v2).unwrap(), ev);
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
            let e = NewEvent {
                kind,
                ..new_event()
            };
            assert_eq!(Event::decode(&encode(1, ev.at, &e)).unwrap().kind, kind);
        }
    }

    /// An incident event stores its state, not the incident: its summary is rebuilt from the
    /// record when read, with what its writer added on top.
    #[test]
    fn incident_events_are_small_and_read_back_whole() {
        let (ev, inc) = incident_event();
        let at: Timestamp = "2026-12-07T01:02:03Z".parse().unwrap();
        let bytes = encode(9, at, &ev);
        assert!(bytes.len() < 120, "{} bytes", bytes.len());
        let read = Event::decode_stored(&bytes).unwrap().complete(Some(&inc));
        assert_eq!(
            (read.seq, read.at, read.kind),
            (9, at, EventKind::IncidentEscalated)
        );
        assert_eq!(read.incident_id, "0123456789ab");
        let d = &read.data;
        assert_eq!(
            d["sample"].as_str().unwrap().chars().count(),
            EVENT_SAMPLE_CHARS
        );
        assert_eq!(d["pact_key"], "PACT:auth:login");
        assert_eq!(d["severity"], "high");
        assert_eq!(d["status"], "escalated");
        assert_eq!(d["resolution"], "no fixer");
        assert_eq!(d["attribution"], "registered");
        assert_eq!(d["count"], 3);
        assert_eq!(d["id"], "0123456789ab");
        assert_eq!(d["fingerprint"], "0123456789abcdef");
        assert_eq!(d["first_seen"], "2026-11-23T13:17:47Z");
        assert_eq!(d["last_seen"], "2026-11-23T13:18:47Z");
        assert_eq!(d["forge"]["note"], "opened");
        assert!(d.get("high_cardinality").is_none());
        // The record gone (retention): what the event holds is still there.
        let bare = Event::decode(&bytes).unwrap();
        assert_eq!(bare.data["count"], 3);
        assert_eq!(bare.data["status"], "escalated");
        assert!(bare.data.get("sample").is_none());
    }

    /// A count that moved records no detail: the summary takes it from the record as read.
    #[test]
    fn a_count_that_moved_reads_the_rest_from_the_record() {
        let mut inc = crate::store::incident::tests::sample();
        inc.status = IncidentStatus::Escalated;
        let at: Timestamp = "2026-12-07T01:02:03Z".parse().unwrap();
        let ev = NewEvent::count_moved(inc.id.clone(), "auth".into(), inc.fingerprint, 41, at);
        let bytes = encode(3, at, &ev);
        assert!(bytes.len() < 64, "{} bytes", bytes.len());
        let read = Event::decode_stored(&bytes).unwrap().complete(Some(&inc));
        assert_eq!(read.kind, EventKind::IncidentUpdated);
        assert_eq!(read.data["count"], 41);
        assert_eq!(read.data["last_seen"], "2026-12-07T01:02:03Z");
        assert_eq!(read.data["status"], "escalated");
        assert_eq!(read.data["severity"], "high");
        assert_eq!(read.data["sample"], "ERROR x 1");
        let bare = Event::decode(&bytes).unwrap();
        assert_eq!(bare.data["count"], 41);
        assert!(bare.data.get("status").is_none());
    }

    /// Pins the bytes of formats 2 and 3 (a change must be a new format byte).
    #[test]
    fn golden_binary_events() {
        let hex = |b: Vec<u8>| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(hex(event().encode_v2()), GOLDEN_V2_HEX, "format 2 changed");
        let (ev, _) = incident_event();
        let at: Timestamp = "2026-12-07T01:02:03Z".parse().unwrap();
        assert_eq!(hex(encode(9, at, &ev)), GOLDEN_V3_HEX, "format 3 changed");
    }

    const GOLDEN_V2_HEX: &str = concat!(
        "020790e8bda3bbc1e9ee31020c303132333435363738396162000461757468167b22737461747573223a",
        "22657363616c61746564227d"
    );

    const GOLDEN_V3_HEX: &str = concat!(
        "030980b8edefb7c1e9ee31020c3031323334353637383961620004617574681b7b22666f726765223a7b",
        "226e6f7465223a226f70656e6564227d7d01ef9bafcdf8acd191010380989b86bbc6d7ea3101000206086e6f20666978657200"
    );
}
