//! The durable fix-job queue and the policy that fills it.
//!
//! An incident becomes *actionable* when it occurred `error_threshold.count` times within
//! `window_seconds` (a window that starts at the first occurrence it counts and restarts
//! after it expires). In the same transaction that made it actionable, exactly once per
//! incident:
//!
//! - `auto_remediate` on and the incident attributed to a registered component: one
//!   [`FixJob`] is queued, and the incident waits in `detected` for a fixer to take it;
//! - `auto_remediate` on, no registered component: escalated, resolution
//!   `component_not_registered` (the reference left such incidents `detected` forever);
//! - `auto_remediate` off: escalated, resolution `auto_remediate_disabled` (the reference's
//!   semantics); a fix can still be asked for by hand.
//!
//! Repeats of an incident after that never queue another job: 10 000 repeats of one error
//! line make one job.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The format byte of encoded jobs.
pub const JOB_FORMAT: u8 = 1;

/// A fix job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum JobState {
    /// Waiting for a fixer.
    Queued,
    /// A fixer works on it.
    Running,
    /// Fixed.
    Succeeded,
    /// Not fixed (escalated).
    Failed,
}

/// One queued fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixJob {
    /// Queue order.
    pub seq: u64,
    /// The incident.
    pub incident_id: String,
    /// Its fingerprint.
    pub fingerprint: u64,
    /// The component to fix.
    pub component_id: String,
    /// State.
    pub state: JobState,
    /// When queued.
    pub created_at: Timestamp,
    /// Last state change.
    pub updated_at: Timestamp,
    /// Fix attempts started.
    pub attempts: u32,
    /// The fix id, when it was chosen at queue time (a fix asked for by hand); otherwise the
    /// fixer chooses one when it starts the job.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fix_id: String,
}

impl FixJob {
    /// A new queued job `seq` for `inc` (`fix_id` empty: chosen when it starts).
    pub fn queued(seq: u64, inc: &super::Incident, fix_id: &str, now: Timestamp) -> FixJob {
        FixJob {
            seq,
            incident_id: inc.id.clone(),
            fingerprint: inc.fingerprint.0,
            component_id: inc.component_id.clone(),
            state: JobState::Queued,
            created_at: now,
            updated_at: now,
            attempts: 0,
            fix_id: fix_id.to_string(),
        }
    }

    /// The stored bytes.
    pub fn encode(&self) -> Vec<u8> {
        super::codec::encode(JOB_FORMAT, self)
    }

    /// Decodes stored bytes.
    ///
    /// # Errors
    ///
    /// A message when the value is from a newer format or is not valid.
    pub fn decode(b: &[u8]) -> Result<FixJob, String> {
        super::codec::decode(JOB_FORMAT, b).map_err(|e| e.to_string())
    }
}

/// What became of an incident that turned actionable in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// A fix job was queued (its sequence number).
    Queued(u64),
    /// Escalated, with this resolution.
    Escalated(&'static str),
    /// Its lines carry no PACT key: it waits (status `triaging`) for the daemon's LLM
    /// triage, whose answer attributes it (and then acts) or escalates it.
    Triage,
}
