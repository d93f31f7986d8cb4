//! `pact`, `fix`, `budget` and `error_threshold`: what the fixer may do and spend.

use serde::Deserialize;
use serde_saphyr::Spanned;

/// `error_threshold`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct ErrorThreshold {
    /// Occurrences within the window that make an incident actionable.
    pub count: u64,
    /// The window, in seconds.
    pub window_seconds: u64,
}

impl Default for ErrorThreshold {
    fn default() -> Self {
        ErrorThreshold {
            count: 1,
            window_seconds: 300,
        }
    }
}

/// `pact`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct PactConfig {
    /// `project_dir`.
    pub project_dir: Option<String>,
    /// `api_endpoint`.
    pub api_endpoint: Option<String>,
    /// `test_command`: the command (run with `sh -c` in the project directory) that runs the
    /// project's tests; default by the component's language.
    pub test_command: Option<String>,
}

/// `fix`: what the fixer does with a fix its tests proved.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct FixConfig {
    /// `merge`: fast-forward the user's branch to the fix commit when their working tree is
    /// clean (else the fix waits on its `sentinel/fix-<id>` branch for review).
    pub merge: bool,
    /// `require_approval`: a proven fix waits for `POST /fixes/{id}/approve` before it is
    /// merged.
    pub require_approval: bool,
    /// `max_attempts`: LLM attempts per fix (1..=5).
    pub max_attempts: u32,
    /// `test_timeout_seconds`: the limit of one test run; the whole process group is killed.
    pub test_timeout_seconds: u64,
    /// `min_confidence` (0..=1, 0 = off): a proposal the model rates below this is refused
    /// before its tests run — on top of the test proof, never instead of it.
    pub min_confidence: f64,
    /// `cooldown_seconds` (0 = off): after a fix of a component ends, the next fix of that
    /// component waits this long (its job stays queued).
    pub cooldown_seconds: u64,
    /// `max_changed_lines` (0 = no limit): a proposal changing more lines (reproducer and fix,
    /// added plus removed) is refused before any test runs.
    pub max_changed_lines: u64,
    /// `max_files` (0 = no limit): a proposal touching more files is refused likewise.
    pub max_files: u64,
    /// `mode`: `live` (default) or `shadow` — everything runs and is recorded, but no branch
    /// is kept and nothing is merged or pushed.
    pub mode: FixMode,
    /// `freeze`: windows during which no fix starts (queued fixes wait).
    pub freeze: Vec<Spanned<FreezeWindow>>,
    /// `pull_request`: push a proven fix's branch and open a pull (merge) request.
    pub pull_request: Option<super::forge::PullRequestConfig>,
}

/// `fix.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FixMode {
    /// Fixes are kept on their branch (and merged or opened as pull requests when asked).
    #[default]
    Live,
    /// Fixes run and are recorded; nothing is kept.
    Shadow,
}

/// One `fix.freeze` entry: either a one-off window `{start, end}` (RFC 3339 instants) or a
/// weekly one `{days, from, to, tz}` (`days`: `mon`..`sun`; `from`/`to`: `HH:MM` local time
/// in `tz`, default UTC; `to` at or before `from` runs past midnight into the next day).
/// Checked and compiled by [`crate::fix::guard::Freeze::compile`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct FreezeWindow {
    /// `start` (one-off).
    pub start: Option<String>,
    /// `end` (one-off).
    pub end: Option<String>,
    /// `days` (weekly).
    pub days: Vec<String>,
    /// `from` (weekly).
    pub from: Option<String>,
    /// `to` (weekly).
    pub to: Option<String>,
    /// `tz` (weekly): an IANA time zone name.
    pub tz: Option<String>,
}

impl Default for FixConfig {
    fn default() -> Self {
        FixConfig {
            merge: false,
            require_approval: false,
            max_attempts: 2,
            test_timeout_seconds: 300,
            min_confidence: 0.0,
            cooldown_seconds: 0,
            max_changed_lines: 0,
            max_files: 0,
            mode: FixMode::Live,
            freeze: Vec::new(),
            pull_request: None,
        }
    }
}

/// `budget`: caps in USD.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct BudgetConfig {
    /// `per_incident_cap`.
    pub per_incident_cap: f64,
    /// `hourly_cap`.
    pub hourly_cap: f64,
    /// `daily_cap`.
    pub daily_cap: f64,
    /// `weekly_cap`.
    pub weekly_cap: f64,
    /// `monthly_cap`.
    pub monthly_cap: f64,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            per_incident_cap: 5.0,
            hourly_cap: 10.0,
            daily_cap: 25.0,
            weekly_cap: 100.0,
            monthly_cap: 300.0,
        }
    }
}
