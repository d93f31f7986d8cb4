//! The Pact-family peers and notifications: `arbiter`, `stigmergy`, `chronicler`,
//! `notify`, `ledger`.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{ConfigError, resolve_path};
use crate::attribute::Severity;
use crate::attribute::severity::LEDGER_ANNOTATION_SEVERITIES;

/// `arbiter`.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ArbiterConfig {
    /// `api_endpoint`.
    pub api_endpoint: Option<String>,
    /// `trust_event_on_fix`.
    pub trust_event_on_fix: bool,
    /// `event_map`: which Arbiter trust event (and weight) each Sentinel event becomes.
    pub event_map: ArbiterEventMap,
}

/// Arbiter's `TrustEventType` values (jmcentire/arbiter; reference/SPEC.md §9.1): the only
/// event names its `POST /trust/event` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrustEventType {
    /// `AUDIT_PASS`.
    AuditPass,
    /// `AUDIT_FAIL`.
    AuditFail,
    /// `CONSISTENCY_CHECK`.
    ConsistencyCheck,
    /// `ACCESS_VIOLATION`.
    AccessViolation,
    /// `TAINT_DETECTED`.
    TaintDetected,
    /// `CANARY_TRIGGERED`.
    CanaryTriggered,
    /// `MANUAL_OVERRIDE`.
    ManualOverride,
    /// `DECAY`.
    Decay,
    /// `INITIAL`.
    Initial,
}

impl TrustEventType {
    /// Every type, as Arbiter lists them.
    pub const ALL: [TrustEventType; 9] = [
        TrustEventType::AuditPass,
        TrustEventType::AuditFail,
        TrustEventType::ConsistencyCheck,
        TrustEventType::AccessViolation,
        TrustEventType::TaintDetected,
        TrustEventType::CanaryTriggered,
        TrustEventType::ManualOverride,
        TrustEventType::Decay,
        TrustEventType::Initial,
    ];

    /// The wire name (`AUDIT_FAIL`).
    pub fn as_str(self) -> &'static str {
        match self {
            TrustEventType::AuditPass => "AUDIT_PASS",
            TrustEventType::AuditFail => "AUDIT_FAIL",
            TrustEventType::ConsistencyCheck => "CONSISTENCY_CHECK",
            TrustEventType::AccessViolation => "ACCESS_VIOLATION",
            TrustEventType::TaintDetected => "TAINT_DETECTED",
            TrustEventType::CanaryTriggered => "CANARY_TRIGGERED",
            TrustEventType::ManualOverride => "MANUAL_OVERRIDE",
            TrustEventType::Decay => "DECAY",
            TrustEventType::Initial => "INITIAL",
        }
    }

    /// The type whose wire name is `name` (exact, upper case).
    pub fn from_name(name: &str) -> Option<TrustEventType> {
        TrustEventType::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// One Arbiter trust event: its type and weight (in [-1, 1]).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct TrustMapping {
    /// The trust event type.
    pub event: TrustEventType,
    /// The weight, in [-1.0, 1.0].
    pub weight: f64,
}

/// `arbiter.event_map`: the trust event sent for each kind of Sentinel event. The keys are
/// the reference's event names; the defaults are the nearest Arbiter types, with the
/// reference's weights clamped to Arbiter's range.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct ArbiterEventMap {
    /// `production_error`: a new incident with a component. Default `AUDIT_FAIL` −0.3.
    pub production_error: TrustMapping,
    /// `sentinel_fix`: a fix proven by the tests. Default `AUDIT_PASS` +1.0.
    pub sentinel_fix: TrustMapping,
    /// `sentinel_fix_failure`: a fix attempt that failed. Default `AUDIT_FAIL` −0.5.
    pub sentinel_fix_failure: TrustMapping,
}

impl Default for ArbiterEventMap {
    fn default() -> Self {
        ArbiterEventMap {
            production_error: TrustMapping {
                event: TrustEventType::AuditFail,
                weight: -0.3,
            },
            sentinel_fix: TrustMapping {
                event: TrustEventType::AuditPass,
                weight: 1.0,
            },
            sentinel_fix_failure: TrustMapping {
                event: TrustEventType::AuditFail,
                weight: -0.5,
            },
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawArbiter {
    api_endpoint: Option<String>,
    trust_event_on_fix: bool,
    event_map: RawEventMap,
}

impl Default for RawArbiter {
    fn default() -> Self {
        RawArbiter {
            api_endpoint: None,
            trust_event_on_fix: true,
            event_map: RawEventMap::default(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawEventMap {
    production_error: Option<RawTrust>,
    sentinel_fix: Option<RawTrust>,
    sentinel_fix_failure: Option<RawTrust>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawTrust {
    event: Option<Spanned<String>>,
    weight: Option<Spanned<f64>>,
}

/// Validates `arbiter` (the event map's types and weights).
pub(super) fn resolve_arbiter(
    raw: &RawArbiter,
    invalid: &dyn Fn(String, Option<&serde_saphyr::Location>, String) -> ConfigError,
) -> Result<ArbiterConfig, ConfigError> {
    let d = ArbiterEventMap::default();
    let one = |name: &str, raw: &Option<RawTrust>, default: TrustMapping| {
        let Some(raw) = raw else {
            return Ok(default);
        };
        let key = |k: &str| format!("arbiter.event_map.{name}.{k}");
        let event = match &raw.event {
            None => default.event,
            Some(e) => TrustEventType::from_name(e.value.trim()).ok_or_else(|| {
                let names: Vec<&str> = TrustEventType::ALL.iter().map(|t| t.as_str()).collect();
                invalid(
                    key("event"),
                    Some(&e.referenced),
                    format!(
                        "{:?} is not an Arbiter trust event type: expected one of {}",
                        e.value,
                        names.join(", ")
                    ),
                )
            })?,
        };
        let weight = match &raw.weight {
            None => default.weight,
            Some(w) if w.value.is_finite() && (-1.0..=1.0).contains(&w.value) => w.value,
            Some(w) => {
                return Err(invalid(
                    key("weight"),
                    Some(&w.referenced),
                    format!("{} is out of range: expected -1.0..=1.0", w.value),
                ));
            }
        };
        Ok(TrustMapping { event, weight })
    };
    let m = &raw.event_map;
    Ok(ArbiterConfig {
        api_endpoint: raw.api_endpoint.clone(),
        trust_event_on_fix: raw.trust_event_on_fix,
        event_map: ArbiterEventMap {
            production_error: one("production_error", &m.production_error, d.production_error)?,
            sentinel_fix: one("sentinel_fix", &m.sentinel_fix, d.sentinel_fix)?,
            sentinel_fix_failure: one(
                "sentinel_fix_failure",
                &m.sentinel_fix_failure,
                d.sentinel_fix_failure,
            )?,
        },
    })
}

/// `stigmergy`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct StigmergyConfig {
    /// `endpoint`.
    pub endpoint: Option<String>,
}

/// `chronicler`: the reference's keys (`chronicler_enabled`, `chronicler_endpoint`) and the
/// ones Chronicler's own documentation gives (`enabled`, `endpoint`), either set.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ChroniclerConfig {
    /// `chronicler_enabled` or `enabled`.
    pub chronicler_enabled: bool,
    /// `chronicler_endpoint` or `endpoint`: Chronicler's webhook receiver, with or without
    /// its `/events` path.
    pub chronicler_endpoint: String,
}

impl ChroniclerConfig {
    /// Where events are POSTed: the endpoint with `/events` appended unless it already ends
    /// so (never `/events/events`).
    pub fn events_url(&self) -> String {
        events_url(&self.chronicler_endpoint)
    }
}

pub(super) fn events_url(endpoint: &str) -> String {
    let base = endpoint.trim().trim_end_matches('/');
    if base.ends_with("/events") {
        base.to_string()
    } else {
        format!("{base}/events")
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawChronicler {
    chronicler_enabled: Option<Spanned<bool>>,
    chronicler_endpoint: Option<Spanned<String>>,
    enabled: Option<Spanned<bool>>,
    endpoint: Option<Spanned<String>>,
}

/// Resolves `chronicler`: the two spellings of a setting may both be given only if they agree.
pub(super) fn resolve_chronicler(
    raw: &RawChronicler,
    invalid: &dyn Fn(String, Option<&serde_saphyr::Location>, String) -> ConfigError,
) -> Result<ChroniclerConfig, ConfigError> {
    let d = ChroniclerConfig::default();
    let enabled = match (&raw.chronicler_enabled, &raw.enabled) {
        (Some(a), Some(b)) if a.value != b.value => {
            return Err(invalid(
                "chronicler.enabled".into(),
                Some(&b.referenced),
                format!(
                    "{} disagrees with chronicler.chronicler_enabled: {}; give one of them",
                    b.value, a.value
                ),
            ));
        }
        (Some(a), _) => a.value,
        (None, Some(b)) => b.value,
        (None, None) => d.chronicler_enabled,
    };
    let endpoint = match (&raw.chronicler_endpoint, &raw.endpoint) {
        (Some(a), Some(b)) if events_url(&a.value) != events_url(&b.value) => {
            return Err(invalid(
                "chronicler.endpoint".into(),
                Some(&b.referenced),
                format!(
                    "{:?} disagrees with chronicler.chronicler_endpoint: {:?}; give one of them",
                    b.value, a.value
                ),
            ));
        }
        (Some(e), _) | (None, Some(e)) => {
            let url = e.value.trim();
            if !(url.starts_with("http://") || url.starts_with("https://"))
                || url.len() <= "https://".len()
                || url.chars().any(char::is_whitespace)
            {
                let key = if raw.chronicler_endpoint.is_some() {
                    "chronicler.chronicler_endpoint"
                } else {
                    "chronicler.endpoint"
                };
                return Err(invalid(
                    key.into(),
                    Some(&e.referenced),
                    format!(
                        "{:?} is not a URL: expected http(s)://host:port[/events], e.g. http://localhost:8080/events",
                        e.value
                    ),
                ));
            }
            url.to_string()
        }
        (None, None) => d.chronicler_endpoint,
    };
    Ok(ChroniclerConfig {
        chronicler_enabled: enabled,
        chronicler_endpoint: endpoint,
    })
}

impl Default for ChroniclerConfig {
    fn default() -> Self {
        ChroniclerConfig {
            chronicler_enabled: false,
            chronicler_endpoint: "http://localhost:8485".into(),
        }
    }
}

/// `notify`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct NotifyConfig {
    /// `webhook_url`.
    pub webhook_url: Option<String>,
    /// `on_error`.
    pub on_error: bool,
    /// `on_fix`.
    pub on_fix: bool,
    /// `on_contract_push`.
    pub on_contract_push: bool,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            webhook_url: None,
            on_error: true,
            on_fix: true,
            on_contract_push: true,
        }
    }
}

/// The default of `ledger.refresh_seconds`: Ledger is read again every 5 minutes.
pub const DEFAULT_LEDGER_REFRESH_SECONDS: u64 = 300;

/// `ledger`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LedgerConfig {
    /// `ledger_api`: Ledger's base URL; its annotations are read from
    /// `<ledger_api>/annotations` (or, when the URL names an `/export/` document, that
    /// document is read as a mappings file).
    pub ledger_api: Option<String>,
    /// `mappings_file`: a severity-mappings JSON document on disk (either shape); works
    /// offline. Relative paths are relative to the config file.
    pub mappings_file: Option<PathBuf>,
    /// `annotation_severity`: Ledger annotation name (lowercase) -> severity. Ledger's own
    /// built-in severities, with the entries of the file added or replacing them.
    pub annotation_severity: std::collections::BTreeMap<String, Severity>,
    /// `refresh_seconds`: how often the daemon reads Ledger and the mappings file again.
    pub refresh_seconds: u64,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            ledger_api: None,
            mappings_file: None,
            annotation_severity: LEDGER_ANNOTATION_SEVERITIES
                .iter()
                .map(|(name, sev)| (name.to_string(), *sev))
                .collect(),
            refresh_seconds: DEFAULT_LEDGER_REFRESH_SECONDS,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLedger {
    ledger_api: Option<String>,
    mappings_file: Option<PathBuf>,
    annotation_severity: std::collections::BTreeMap<String, Spanned<String>>,
    refresh_seconds: Option<Spanned<u64>>,
}

/// Resolves `ledger` (the annotation table's severities, the refresh interval).
pub(super) fn resolve_ledger(
    raw: RawLedger,
    base: &Path,
    home: Option<&Path>,
    invalid: &dyn Fn(String, Option<&serde_saphyr::Location>, String) -> ConfigError,
) -> Result<LedgerConfig, ConfigError> {
    let mut ledger = LedgerConfig {
        ledger_api: raw.ledger_api,
        mappings_file: raw
            .mappings_file
            .map(|p| resolve_path(&p.to_string_lossy(), base, home)),
        ..LedgerConfig::default()
    };
    for (name, sev) in &raw.annotation_severity {
        let key = format!("ledger.annotation_severity.{name}");
        let annotation = name.trim().to_ascii_lowercase();
        if annotation.is_empty() {
            return Err(invalid(
                key,
                Some(&sev.referenced),
                "the annotation name must not be empty".into(),
            ));
        }
        let level = sev
            .value
            .parse::<Severity>()
            .map_err(|e| invalid(key, Some(&sev.referenced), e.to_string()))?;
        ledger.annotation_severity.insert(annotation, level);
    }
    if let Some(r) = &raw.refresh_seconds {
        if !(1..=86_400).contains(&r.value) {
            return Err(invalid(
                "ledger.refresh_seconds".into(),
                Some(&r.referenced),
                format!("{} is out of range: expected 1..=86400", r.value),
            ));
        }
        ledger.refresh_seconds = r.value;
    }
    Ok(ledger)
}
