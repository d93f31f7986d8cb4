//! `pact`, `fix`, `budget` and `error_threshold`: what the fixer may do and spend.

use serde::Deserialize;

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
}

impl Default for FixConfig {
    fn default() -> Self {
        FixConfig {
            merge: false,
            require_approval: false,
            max_attempts: 2,
            test_timeout_seconds: 300,
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
