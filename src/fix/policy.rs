//! When incidents become actionable and what happens then (`error_threshold`,
//! `auto_remediate`). The store applies it in the ingest transaction that crosses the
//! threshold, so an incident is queued or escalated exactly once.

use crate::config::ErrorThreshold;

/// When incidents become actionable and what happens then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixPolicy {
    /// Occurrences needed within the window (≥ 1).
    pub threshold: u64,
    /// The window, in microseconds.
    pub window_us: u64,
    /// Queue fix jobs (else escalate).
    pub auto_remediate: bool,
    /// An incident whose lines carry no PACT key waits for the daemon's LLM triage
    /// (status `triaging`) instead of being escalated as unregistered: `triage.enabled`
    /// with an LLM configured. The triage answer then decides (see
    /// [`crate::store::StoreTxn::settle_triage`]).
    pub triage: bool,
}

impl Default for FixPolicy {
    fn default() -> FixPolicy {
        FixPolicy {
            threshold: 1,
            window_us: 300_000_000,
            auto_remediate: false,
            triage: false,
        }
    }
}

impl FixPolicy {
    /// The policy of `error_threshold` and `auto_remediate`.
    pub fn new(threshold: &ErrorThreshold, auto_remediate: bool) -> FixPolicy {
        FixPolicy {
            threshold: threshold.count.max(1),
            window_us: threshold.window_seconds.saturating_mul(1_000_000),
            auto_remediate,
            triage: false,
        }
    }

    /// With the daemon's triage of unkeyed incidents on (see [`FixPolicy::triage`]).
    pub fn with_triage(mut self, triage: bool) -> FixPolicy {
        self.triage = triage;
        self
    }
}
