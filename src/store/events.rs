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

/// The format byte of encoded events.
pub const EVENT_FORMAT: u8 = 1;

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
    /// An event about an incident, carrying the incident itself.
    pub fn incident(kind: EventKind, inc: &super::Incident) -> NewEvent {
        NewEvent {
            kind,
            incident_id: inc.id.clone(),
            fix_id: String::new(),
            component_id: inc.component_id.clone(),
            data: serde_json::to_value(inc).unwrap_or_default(),
        }
    }
}

impl Event {
    /// The stored bytes.
    pub fn encode(&self) -> Vec<u8> {
        super::codec::encode(EVENT_FORMAT, self)
    }

    /// Decodes stored bytes.
    ///
    /// # Errors
    ///
    /// A message when the value is from a newer format or is not valid.
    pub fn decode(b: &[u8]) -> Result<Event, String> {
        super::codec::decode(EVENT_FORMAT, b).map_err(|e| e.to_string())
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
