//! `triage`: the daemon's LLM triage of incidents whose lines carry no PACT key
//! (reference/SPEC.md §5.3, §7.3 step 7).

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::ConfigError;

/// The most triage calls an hour may be configured to allow.
pub const MAX_TRIAGE_PER_HOUR: u64 = 100_000;

/// `triage`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TriageConfig {
    /// `triage.enabled` (default true): when an incident without a PACT key becomes
    /// actionable, ask the LLM which registered component produced it. Only where an LLM
    /// is configured (its API key set); otherwise such incidents are escalated as before.
    pub enabled: bool,
    /// `triage.max_per_hour` (default 30): LLM triage calls the daemon makes in any hour;
    /// incidents beyond it wait (status `triaging`) for the next free slot.
    pub max_per_hour: u64,
}

impl Default for TriageConfig {
    fn default() -> Self {
        TriageConfig {
            enabled: true,
            max_per_hour: 30,
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawTriage {
    enabled: Option<bool>,
    max_per_hour: Option<Spanned<u64>>,
}

/// Checks the `triage` section.
pub(super) fn resolve_triage(
    raw: &RawTriage,
    invalid: &dyn Fn(String, Option<&serde_saphyr::Location>, String) -> ConfigError,
) -> Result<TriageConfig, ConfigError> {
    let d = TriageConfig::default();
    let max_per_hour = match &raw.max_per_hour {
        None => d.max_per_hour,
        Some(v) if (1..=MAX_TRIAGE_PER_HOUR).contains(&v.value) => v.value,
        Some(v) => {
            return Err(invalid(
                "triage.max_per_hour".into(),
                Some(&v.referenced),
                format!(
                    "{} is out of range: expected 1..={MAX_TRIAGE_PER_HOUR} (disable triage with `enabled: false`)",
                    v.value
                ),
            ));
        }
    };
    Ok(TriageConfig {
        enabled: raw.enabled.unwrap_or(d.enabled),
        max_per_hour,
    })
}
