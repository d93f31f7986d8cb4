//! `sentinel.yaml`: the schema, its defaults, where it is found, and validation.
//!
//! The schema keeps every key of the reference implementation (`reference/SPEC.md` §1) so
//! existing files keep working, and adds a few of our own (`error_patterns` at the top level,
//! `max_line_bytes`). Two deliberate differences from the reference:
//!
//! - **An invalid file is an error, never a silent fall-back to defaults.** Parse and type
//!   errors name the file, line and column and say what was expected; an unknown key is an
//!   error that names the key (a typo such as `chronicler: {enable: true}` used to be
//!   ignored silently).
//! - **`state_dir` is relative to the config file's directory** (not to the process's working
//!   directory), and a leading `~` is expanded, so `sentinel -c /etc/sentinel/sentinel.yaml`
//!   finds the same state wherever it is started from.
//!
//! Environment variables are read here and nowhere below: the rest of the crate receives a
//! resolved [`Config`].

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::attribute::Severity;
use crate::attribute::severity::LEDGER_ANNOTATION_SEVERITIES;
use crate::scan::matcher::{DEFAULT_ERROR_PATTERNS, DEFAULT_MAX_LINE_BYTES};

/// The file name looked for in the working directory and in `~/.sentinel/`.
pub const CONFIG_FILE_NAME: &str = "sentinel.yaml";

/// The environment variable that names a config file (same as `--config`).
pub const CONFIG_ENV: &str = "SENTINEL_CONFIG";

/// The smallest accepted `max_line_bytes`.
pub const MIN_MAX_LINE_BYTES: u64 = 1024;

/// The largest accepted `max_line_bytes` (bounded memory per file: see the framing module).
pub const MAX_MAX_LINE_BYTES: u64 = 64 << 20;

/// The resolved configuration.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// The file this was loaded from; `None` when no file was found and defaults apply.
    pub path: Option<PathBuf>,
    /// `version` (not interpreted).
    pub version: String,
    /// `sources`: the log sources `watch` starts.
    pub sources: Vec<SourceConfig>,
    /// `pact_key_pattern` (kept for compatibility; keys are always found by the built-in grammar).
    pub pact_key_pattern: String,
    /// `error_patterns`: the default error patterns of every source without its own list, and
    /// the patterns `sentinel scan` uses.
    pub error_patterns: Vec<String>,
    /// `error_threshold`.
    pub error_threshold: ErrorThreshold,
    /// `llm`.
    pub llm: LlmConfig,
    /// `pact`.
    pub pact: PactConfig,
    /// `arbiter`.
    pub arbiter: ArbiterConfig,
    /// `stigmergy`.
    pub stigmergy: StigmergyConfig,
    /// `chronicler` (the reference's `chronicler_`-prefixed key names, or Chronicler's).
    pub chronicler: ChroniclerConfig,
    /// `notify`.
    pub notify: NotifyConfig,
    /// `ledger`.
    pub ledger: LedgerConfig,
    /// `budget`: spend caps in USD.
    pub budget: BudgetConfig,
    /// `fix`: what the fixer does with a proven fix.
    pub fix: FixConfig,
    /// `auto_remediate`.
    pub auto_remediate: bool,
    /// `state_dir`, resolved: absolute when a config file was loaded, `~` expanded.
    pub state_dir: PathBuf,
    /// `max_line_bytes`: lines longer than this are counted and skipped.
    pub max_line_bytes: usize,
    /// `api`: the daemon's HTTP API.
    pub api: ApiConfig,
    /// `shards`: threads tailing files (default: the number of CPUs).
    pub shards: usize,
    /// `max_open_files`: descriptors the file sources hold at most (default: half the
    /// soft limit, at most 1024; see `source::file::default_max_open_files`).
    pub max_open_files: Option<usize>,
    /// The directory relative paths in the file are resolved against (the config file's
    /// directory, or the working directory for the defaults).
    pub base_dir: PathBuf,
}

/// `api`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ApiConfig {
    /// `api.listen`: the address the API binds (default `127.0.0.1:8484`; port 0 picks a
    /// free port, reported in the start-up summary and in `state_dir/daemon.json`).
    pub listen: std::net::SocketAddr,
    /// `api.register_roots`: the directories `POST /register` may register from (besides
    /// `pact.project_dir`); resolved against the config file's directory.
    pub register_roots: Vec<PathBuf>,
    /// `api.read_token_env`: the variable holding the bearer token for GETs (the write
    /// token works too). Unset: GETs are open.
    pub read_token_env: Option<String>,
    /// `api.write_token_env`: the variable holding the bearer token for POSTs. Unset: POSTs
    /// are open (the API then only binds a loopback address).
    pub write_token_env: Option<String>,
    /// `api.allowed_hosts`: `Host` header names accepted besides loopback names and the
    /// listen address (DNS-rebinding protection).
    pub allowed_hosts: Vec<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], DEFAULT_API_PORT)),
            register_roots: Vec::new(),
            read_token_env: None,
            write_token_env: None,
            allowed_hosts: Vec::new(),
        }
    }
}

/// The API's default port (the reference's).
pub const DEFAULT_API_PORT: u16 = 8484;

/// Where a file source starts reading the files present at its very first start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// Read them whole (the default: nothing already logged is missed).
    #[default]
    Beginning,
    /// Start after their last complete line (only what is appended from now on).
    End,
}

/// The kind of a log source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// Log files matched by a glob.
    #[default]
    File,
    /// AWS CloudWatch Logs.
    Cloudwatch,
    /// HTTP webhook posts.
    Webhook,
    /// A process's standard output.
    Stdout,
}

/// How the lines of a source are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Plain text lines.
    #[default]
    Text,
    /// One JSON object per line.
    Jsonl,
    /// Decide per line: JSON when it starts with `{`.
    Auto,
}

/// One entry of `sources`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SourceConfig {
    /// `type`.
    pub kind: SourceKind,
    /// `path`: a glob for file sources.
    pub path: String,
    /// `format`.
    pub format: LogFormat,
    /// `log_group` (cloudwatch).
    pub log_group: String,
    /// `filter_pattern` (cloudwatch).
    pub filter_pattern: String,
    /// `region` (cloudwatch).
    pub region: String,
    /// `poll_interval` in seconds (cloudwatch).
    pub poll_interval: u64,
    /// `port` (webhook).
    pub port: u16,
    /// `host` (webhook), default `127.0.0.1`.
    pub host: String,
    /// `error_patterns` of this source; `None` means "use the top-level list" for files, and
    /// "every event is an error" for webhooks (the reference's behaviour).
    pub error_patterns: Option<Vec<String>>,
    /// `name`: the source's label in metrics, logs and the API (default: the `path` of a
    /// file source, `webhook:<port>` for a webhook, else the type). Unique.
    pub name: String,
    /// `start_at` (file): where to start in files present at the very first start.
    pub start_at: StartAt,
    /// `follow_symlinks` (file): tail files matched through symlinks (default false).
    pub follow_symlinks: bool,
    /// `token_env` (webhook): the environment variable holding the bearer token requests
    /// must carry (`Authorization: Bearer <token>`).
    pub token_env: Option<String>,
    /// `hmac_secret_env` (webhook): the environment variable holding the HMAC-SHA256 secret
    /// requests must be signed with (`X-Sentinel-Timestamp`, `X-Sentinel-Signature`).
    pub hmac_secret_env: Option<String>,
}

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

/// The wire format the LLM client speaks (`llm.provider`, case-insensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LlmProvider {
    /// Anthropic's Messages API (`POST {base_url}/v1/messages`).
    #[default]
    Anthropic,
    /// OpenAI Chat Completions (`POST {base_url}/v1/chat/completions`), also spoken by local
    /// servers such as Ollama, vLLM and llama.cpp's `llama-server`.
    OpenAi,
}

impl LlmProvider {
    /// Parses a provider name, ignoring ASCII case.
    pub fn parse(name: &str) -> Option<LlmProvider> {
        match name.trim().to_ascii_lowercase().as_str() {
            "anthropic" => Some(LlmProvider::Anthropic),
            "openai" => Some(LlmProvider::OpenAi),
            _ => None,
        }
    }

    /// The name used in `sentinel.yaml`.
    pub fn as_str(self) -> &'static str {
        match self {
            LlmProvider::Anthropic => "anthropic",
            LlmProvider::OpenAi => "openai",
        }
    }

    /// The default `llm.base_url`.
    pub fn default_base_url(self) -> &'static str {
        match self {
            LlmProvider::Anthropic => "https://api.anthropic.com",
            LlmProvider::OpenAi => "https://api.openai.com",
        }
    }

    /// The default `llm.api_key_env`.
    pub fn default_api_key_env(self) -> &'static str {
        match self {
            LlmProvider::Anthropic => "ANTHROPIC_API_KEY",
            LlmProvider::OpenAi => "OPENAI_API_KEY",
        }
    }
}

impl fmt::Display for LlmProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `llm`: the model the fixer (and triage) use, how it is reached and what it costs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LlmConfig {
    /// `provider`: `anthropic` or `openai` (any case).
    pub provider: LlmProvider,
    /// `model`.
    pub model: String,
    /// `max_tokens`: the output-token limit of one call (at least 1).
    pub max_tokens: u64,
    /// `budget_per_fix` in USD.
    pub budget_per_fix: f64,
    /// `base_url`, without a trailing `/` or `/v1` (default by provider: see
    /// [`LlmProvider::default_base_url`]).
    pub base_url: String,
    /// `api_key_env`: the environment variable holding the API key (default by provider: see
    /// [`LlmProvider::default_api_key_env`]). The key itself never appears in the file.
    pub api_key_env: String,
    /// `timeout_seconds`: the limit of one HTTP request, body included (default 120).
    pub timeout_seconds: u64,
    /// `max_retries`: retries after the first attempt of a call that failed transiently
    /// (default 3, so at most 4 requests per call).
    pub max_retries: u32,
    /// `price_input_per_mtok`: USD per million input tokens (default 3.0; 0 for local models).
    pub price_input_per_mtok: f64,
    /// `price_output_per_mtok`: USD per million output tokens (default 15.0).
    pub price_output_per_mtok: f64,
    /// `max_concurrent_fixes`: fix jobs running at once (default 2).
    pub max_concurrent_fixes: usize,
}

impl Default for LlmConfig {
    fn default() -> Self {
        let provider = LlmProvider::Anthropic;
        LlmConfig {
            provider,
            model: "claude-sonnet-4-20250514".into(),
            max_tokens: 8192,
            budget_per_fix: 2.0,
            base_url: provider.default_base_url().into(),
            api_key_env: provider.default_api_key_env().into(),
            timeout_seconds: 120,
            max_retries: 3,
            price_input_per_mtok: 3.0,
            price_output_per_mtok: 15.0,
            max_concurrent_fixes: 2,
        }
    }
}

/// The largest accepted `llm.max_tokens`.
pub const MAX_LLM_MAX_TOKENS: u64 = 1_000_000;

/// The largest accepted `llm.timeout_seconds` (one hour).
pub const MAX_LLM_TIMEOUT_SECONDS: u64 = 3600;

/// The largest accepted `llm.max_retries`.
pub const MAX_LLM_RETRIES: u64 = 10;

/// The largest accepted `llm.max_concurrent_fixes`.
pub const MAX_CONCURRENT_FIXES: u64 = 64;

/// The largest accepted price per million tokens, in USD (a guard against typos).
pub const MAX_LLM_PRICE_PER_MTOK: f64 = 10_000.0;

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
struct RawArbiter {
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
struct RawEventMap {
    production_error: Option<RawTrust>,
    sentinel_fix: Option<RawTrust>,
    sentinel_fix_failure: Option<RawTrust>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTrust {
    event: Option<Spanned<String>>,
    weight: Option<Spanned<f64>>,
}

/// Validates `arbiter` (the event map's types and weights).
fn resolve_arbiter(
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

fn events_url(endpoint: &str) -> String {
    let base = endpoint.trim().trim_end_matches('/');
    if base.ends_with("/events") {
        base.to_string()
    } else {
        format!("{base}/events")
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawChronicler {
    chronicler_enabled: Option<Spanned<bool>>,
    chronicler_endpoint: Option<Spanned<String>>,
    enabled: Option<Spanned<bool>>,
    endpoint: Option<Spanned<String>>,
}

/// Resolves `chronicler`: the two spellings of a setting may both be given only if they agree.
fn resolve_chronicler(
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
struct RawLedger {
    ledger_api: Option<String>,
    mappings_file: Option<PathBuf>,
    annotation_severity: std::collections::BTreeMap<String, Spanned<String>>,
    refresh_seconds: Option<Spanned<u64>>,
}

/// Resolves `ledger` (the annotation table's severities, the refresh interval).
fn resolve_ledger(
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

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file named by `--config` or `SENTINEL_CONFIG` does not exist.
    #[error("config file {path} does not exist")]
    NotFound {
        /// The file.
        path: PathBuf,
    },
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid YAML or does not fit the schema.
    #[error("{}", Located { path, line: *line, column: *column, message })]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line, 0 when unknown.
        line: u64,
        /// 1-based column, 0 when unknown.
        column: u64,
        /// What was wrong and what was expected.
        message: String,
    },
    /// A value has the right type but cannot be used.
    #[error("{}", Located { path, line: *line, column: *column, message: &format!("{key}: {message}") })]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line, 0 when unknown.
        line: u64,
        /// 1-based column, 0 when unknown.
        column: u64,
        /// The key, as a path such as `sources[0].error_patterns[1]`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

struct Located<'a> {
    path: &'a Path,
    line: u64,
    column: u64,
    message: &'a str,
}

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{}:{}:{}: {}",
                self.path.display(),
                self.line,
                self.column,
                self.message
            )
        } else {
            write!(f, "{}: {}", self.path.display(), self.message)
        }
    }
}

/// Where a configuration is looked for; see [`Config::load`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ConfigSearch {
    /// `--config PATH` or `SENTINEL_CONFIG`: must exist when given.
    pub explicit: Option<PathBuf>,
    /// The directory `./sentinel.yaml` is looked for in (the working directory).
    pub cwd: PathBuf,
    /// The home directory, for `~/.sentinel/sentinel.yaml` and `~` expansion.
    pub home: Option<PathBuf>,
}

impl ConfigSearch {
    /// The search of a normal run: `explicit` (from `--config`, which clap also fills from
    /// `SENTINEL_CONFIG`), the working directory and `$HOME`.
    pub fn from_env(explicit: Option<PathBuf>) -> ConfigSearch {
        ConfigSearch {
            explicit,
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            home: std::env::var_os("HOME").map(PathBuf::from),
        }
    }
}

impl Config {
    /// Finds and loads the configuration: the explicit path if one was given (an error if it
    /// does not exist), else `./sentinel.yaml`, else `~/.sentinel/sentinel.yaml`, else the
    /// defaults. The first file that exists is the one used: a broken file is an error, never
    /// skipped.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the file (and line, column and key where they apply).
    pub fn load(search: &ConfigSearch) -> Result<Config, ConfigError> {
        let candidates: Vec<PathBuf> = match &search.explicit {
            Some(p) => {
                if !p.exists() {
                    return Err(ConfigError::NotFound { path: p.clone() });
                }
                vec![p.clone()]
            }
            None => {
                let mut v = vec![search.cwd.join(CONFIG_FILE_NAME)];
                if let Some(home) = &search.home {
                    v.push(home.join(".sentinel").join(CONFIG_FILE_NAME));
                }
                v
            }
        };
        for path in candidates {
            if path.is_file() {
                let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Io {
                    path: path.clone(),
                    source,
                })?;
                return Config::from_yaml(&text, &path, search.home.as_deref());
            }
        }
        Ok(Config::defaults(&search.cwd, search.home.as_deref()))
    }

    /// The all-defaults configuration, with `state_dir` under `base`.
    pub fn defaults(base: &Path, home: Option<&Path>) -> Config {
        Config::resolve(RawConfig::default(), None, base, home).expect("the defaults are valid")
    }

    /// Parses and validates `text`, which was read from `path`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Parse`] or [`ConfigError::Invalid`] naming `path`, line and column.
    pub fn from_yaml(text: &str, path: &Path, home: Option<&Path>) -> Result<Config, ConfigError> {
        let raw: RawConfig = if text.trim().is_empty() {
            RawConfig::default()
        } else {
            let opts =
                serde_saphyr::options! { duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error };
            serde_saphyr::from_str_with_options(text, opts).map_err(|e| {
                let (line, column) = e
                    .location()
                    .map(|l| (l.line(), l.column()))
                    .unwrap_or((0, 0));
                ConfigError::Parse {
                    path: path.to_path_buf(),
                    line,
                    column,
                    message: first_line(&e),
                }
            })?
        };
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };
        let base = std::fs::canonicalize(&base).unwrap_or(base);
        Config::resolve(raw, Some(path), &base, home)
    }

    fn resolve(
        raw: RawConfig,
        path: Option<&Path>,
        base: &Path,
        home: Option<&Path>,
    ) -> Result<Config, ConfigError> {
        let file = path
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("<defaults>"));
        let invalid = |key: String, loc: Option<&serde_saphyr::Location>, message: String| {
            let (line, column) = loc.map(|l| (l.line(), l.column())).unwrap_or((0, 0));
            ConfigError::Invalid {
                path: file.clone(),
                line,
                column,
                key,
                message,
            }
        };

        let check_patterns =
            |key: &str, list: &[Spanned<String>]| -> Result<Vec<String>, ConfigError> {
                for (i, p) in list.iter().enumerate() {
                    if let Err(e) = crate::scan::Scanner::new([p.value.as_str()]) {
                        let msg = e
                            .to_string()
                            .split_whitespace()
                            .collect::<Vec<_>>()
                            .join(" ");
                        return Err(invalid(format!("{key}[{i}]"), Some(&p.referenced), msg));
                    }
                }
                Ok(list.iter().map(|p| p.value.clone()).collect())
            };

        let error_patterns = match &raw.error_patterns {
            Some(list) if list.is_empty() => {
                return Err(invalid(
                    "error_patterns".into(),
                    None,
                    "must list at least one pattern".into(),
                ));
            }
            Some(list) => check_patterns("error_patterns", list)?,
            None => DEFAULT_ERROR_PATTERNS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };

        let mut sources: Vec<SourceConfig> = Vec::with_capacity(raw.sources.len());
        for (i, s) in raw.sources.into_iter().enumerate() {
            let name = match &s.name {
                Some(n) if n.value.trim().is_empty() => {
                    return Err(invalid(
                        format!("sources[{i}].name"),
                        Some(&n.referenced),
                        "must not be empty".into(),
                    ));
                }
                Some(n) => n.value.clone(),
                None => match s.kind {
                    SourceKind::File => s.path.clone(),
                    SourceKind::Webhook => format!("webhook:{}", s.port),
                    SourceKind::Cloudwatch => format!("cloudwatch:{}", s.log_group),
                    SourceKind::Stdout => "stdout".into(),
                },
            };
            if sources.iter().any(|o| o.name == name) {
                return Err(invalid(
                    format!("sources[{i}].name"),
                    s.name.as_ref().map(|n| &n.referenced),
                    format!("another source is already named {name:?}; give each a unique `name`"),
                ));
            }
            if s.kind == SourceKind::File && s.path.trim().is_empty() {
                return Err(invalid(
                    format!("sources[{i}].path"),
                    None,
                    "a file source needs a `path` (a file or a glob)".into(),
                ));
            }
            let patterns = match &s.error_patterns {
                Some(list) if list.is_empty() => {
                    return Err(invalid(
                        format!("sources[{i}].error_patterns"),
                        None,
                        "must list at least one pattern (omit the key to use the defaults)".into(),
                    ));
                }
                Some(list) => Some(check_patterns(
                    &format!("sources[{i}].error_patterns"),
                    list,
                )?),
                None => None,
            };
            sources.push(SourceConfig {
                kind: s.kind,
                path: s.path,
                format: s.format,
                log_group: s.log_group,
                filter_pattern: s.filter_pattern,
                region: s.region,
                poll_interval: s.poll_interval,
                port: s.port,
                host: s.host,
                error_patterns: patterns,
                name,
                start_at: s.start_at,
                follow_symlinks: s.follow_symlinks,
                token_env: s.token_env,
                hmac_secret_env: s.hmac_secret_env,
            });
        }

        let max_line_bytes = match &raw.max_line_bytes {
            None => DEFAULT_MAX_LINE_BYTES as u64,
            Some(v) if (MIN_MAX_LINE_BYTES..=MAX_MAX_LINE_BYTES).contains(&v.value) => v.value,
            Some(v) => {
                return Err(invalid(
                    "max_line_bytes".into(),
                    Some(&v.referenced),
                    format!(
                        "{} is out of range: expected {MIN_MAX_LINE_BYTES}..={MAX_MAX_LINE_BYTES}",
                        v.value
                    ),
                ));
            }
        };

        let state_dir_raw = raw
            .state_dir
            .as_ref()
            .map(|s| s.value.as_str())
            .unwrap_or(".sentinel");
        if state_dir_raw.trim().is_empty() {
            return Err(invalid(
                "state_dir".into(),
                raw.state_dir.as_ref().map(|s| &s.referenced),
                "must not be empty".into(),
            ));
        }
        let state_dir = resolve_path(state_dir_raw, base, home);

        let register_roots = raw
            .api
            .register_roots
            .iter()
            .map(|r| resolve_path(r, base, home))
            .collect();
        let ledger = resolve_ledger(raw.ledger, base, home, &invalid)?;
        let chronicler = resolve_chronicler(&raw.chronicler, &invalid)?;
        let listen = match &raw.api.listen {
            None => ApiConfig::default().listen,
            Some(l) => match l.value.parse::<std::net::SocketAddr>() {
                Ok(listen) => listen,
                Err(_) => {
                    return Err(invalid(
                        "api.listen".into(),
                        Some(&l.referenced),
                        format!(
                            "{:?} is not an address: expected host:port, e.g. 127.0.0.1:8484",
                            l.value
                        ),
                    ));
                }
            },
        };
        let api = ApiConfig {
            listen,
            register_roots,
            read_token_env: raw.api.read_token_env.clone(),
            write_token_env: raw.api.write_token_env.clone(),
            allowed_hosts: raw.api.allowed_hosts.clone(),
        };
        let llm = resolve_llm(&raw.llm, &invalid)?;
        if !(1..=5).contains(&raw.fix.max_attempts) {
            return Err(invalid(
                "fix.max_attempts".into(),
                None,
                format!("{} is out of range: expected 1..=5", raw.fix.max_attempts),
            ));
        }
        if !(1..=86_400).contains(&raw.fix.test_timeout_seconds) {
            return Err(invalid(
                "fix.test_timeout_seconds".into(),
                None,
                format!(
                    "{} is out of range: expected 1..=86400",
                    raw.fix.test_timeout_seconds
                ),
            ));
        }
        let arbiter = resolve_arbiter(&raw.arbiter, &invalid)?;
        let shards = match &raw.shards {
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
            Some(v) if (1..=256).contains(&v.value) => v.value as usize,
            Some(v) => {
                return Err(invalid(
                    "shards".into(),
                    Some(&v.referenced),
                    format!("{} is out of range: expected 1..=256", v.value),
                ));
            }
        };
        let max_open_files = match &raw.max_open_files {
            None => None,
            Some(v) if (2..=1 << 20).contains(&v.value) => Some(v.value as usize),
            Some(v) => {
                return Err(invalid(
                    "max_open_files".into(),
                    Some(&v.referenced),
                    format!("{} is out of range: expected 2..=1048576", v.value),
                ));
            }
        };

        Ok(Config {
            path: path.map(Path::to_path_buf),
            version: raw.version,
            sources,
            pact_key_pattern: raw.pact_key_pattern,
            error_patterns,
            error_threshold: raw.error_threshold,
            llm,
            pact: raw.pact,
            arbiter,
            stigmergy: raw.stigmergy,
            chronicler,
            notify: raw.notify,
            ledger,
            budget: raw.budget,
            fix: raw.fix,
            auto_remediate: raw.auto_remediate,
            state_dir,
            max_line_bytes: max_line_bytes as usize,
            api,
            shards,
            max_open_files,
            base_dir: base.to_path_buf(),
        })
    }

    /// `pact.project_dir`, resolved against the config file's directory (`~` expanded).
    pub fn pact_project_dir(&self) -> Option<PathBuf> {
        let raw = self.pact.project_dir.as_deref()?.trim();
        (!raw.is_empty()).then(|| {
            resolve_path(
                raw,
                &self.base_dir,
                std::env::var_os("HOME").map(PathBuf::from).as_deref(),
            )
        })
    }

    /// The state directory and every path in it.
    pub fn state(&self) -> crate::state_dir::StateDir {
        crate::state_dir::StateDir::new(&self.state_dir)
    }

    /// `state_dir/sentinel.redb`.
    pub fn db_path(&self) -> PathBuf {
        self.state().store()
    }

    /// `state_dir/manifest.json`.
    pub fn manifest_path(&self) -> PathBuf {
        self.state().manifest()
    }
}

/// Validates the `llm` section and fills in the per-provider defaults.
fn resolve_llm(
    raw: &RawLlm,
    invalid: &dyn Fn(String, Option<&serde_saphyr::Location>, String) -> ConfigError,
) -> Result<LlmConfig, ConfigError> {
    let d = LlmConfig::default();
    let err = |key: &str, loc: &serde_saphyr::Location, msg: String| {
        invalid(format!("llm.{key}"), Some(loc), msg)
    };
    let provider = match &raw.provider {
        None => d.provider,
        Some(p) => LlmProvider::parse(&p.value).ok_or_else(|| {
            err(
                "provider",
                &p.referenced,
                format!(
                    "{:?} is not a provider: expected anthropic or openai",
                    p.value
                ),
            )
        })?,
    };
    let model = match &raw.model {
        None => d.model,
        Some(m) if m.value.trim().is_empty() => {
            return Err(err("model", &m.referenced, "must not be empty".into()));
        }
        Some(m) => m.value.trim().to_string(),
    };
    let int = |key: &str,
               v: &Option<Spanned<u64>>,
               default: u64,
               range: std::ops::RangeInclusive<u64>| {
        match v {
            None => Ok(default),
            Some(v) if range.contains(&v.value) => Ok(v.value),
            Some(v) => Err(err(
                key,
                &v.referenced,
                format!(
                    "{} is out of range: expected {}..={}",
                    v.value,
                    range.start(),
                    range.end()
                ),
            )),
        }
    };
    let usd = |key: &str, v: &Option<Spanned<f64>>, default: f64, max: f64| match v {
        None => Ok(default),
        Some(v) if v.value.is_finite() && (0.0..=max).contains(&v.value) => Ok(v.value),
        Some(v) => Err(err(
            key,
            &v.referenced,
            format!(
                "{} is out of range: expected a number of USD in 0..={max}",
                v.value
            ),
        )),
    };
    let base_url = match &raw.base_url {
        None => provider.default_base_url().to_string(),
        Some(u) => normalise_base_url(&u.value).ok_or_else(|| {
            err(
                "base_url",
                &u.referenced,
                format!(
                    "{:?} is not a base URL: expected http(s)://host[:port][/path], e.g. {}",
                    u.value,
                    provider.default_base_url()
                ),
            )
        })?,
    };
    let api_key_env = match &raw.api_key_env {
        None => provider.default_api_key_env().to_string(),
        Some(v) if is_env_var_name(&v.value) => v.value.clone(),
        Some(v) => {
            return Err(err(
                "api_key_env",
                &v.referenced,
                format!(
                    "{:?} is not an environment variable name (name the variable, not the key)",
                    v.value
                ),
            ));
        }
    };
    Ok(LlmConfig {
        provider,
        model,
        max_tokens: int(
            "max_tokens",
            &raw.max_tokens,
            d.max_tokens,
            1..=MAX_LLM_MAX_TOKENS,
        )?,
        budget_per_fix: usd("budget_per_fix", &raw.budget_per_fix, d.budget_per_fix, 1e6)?,
        base_url,
        api_key_env,
        timeout_seconds: int(
            "timeout_seconds",
            &raw.timeout_seconds,
            d.timeout_seconds,
            1..=MAX_LLM_TIMEOUT_SECONDS,
        )?,
        max_retries: int(
            "max_retries",
            &raw.max_retries,
            u64::from(d.max_retries),
            0..=MAX_LLM_RETRIES,
        )? as u32,
        price_input_per_mtok: usd(
            "price_input_per_mtok",
            &raw.price_input_per_mtok,
            d.price_input_per_mtok,
            MAX_LLM_PRICE_PER_MTOK,
        )?,
        price_output_per_mtok: usd(
            "price_output_per_mtok",
            &raw.price_output_per_mtok,
            d.price_output_per_mtok,
            MAX_LLM_PRICE_PER_MTOK,
        )?,
        max_concurrent_fixes: int(
            "max_concurrent_fixes",
            &raw.max_concurrent_fixes,
            d.max_concurrent_fixes as u64,
            1..=MAX_CONCURRENT_FIXES,
        )? as usize,
    })
}

/// `http(s)://host[:port][/path]` without a trailing `/` or `/v1` (both wire formats append
/// `/v1/...`; OpenAI-style SDK settings such as `http://localhost:11434/v1` are accepted).
fn normalise_base_url(raw: &str) -> Option<String> {
    let url = raw.trim();
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("https://") {
        ("https://", rest)
    } else {
        ("http://", url.strip_prefix("http://")?)
    };
    let host = rest.split('/').next().unwrap_or("");
    // Credentials do not belong in the file (use `api_key_env`), nor do queries.
    if host.is_empty()
        || host.contains('@')
        || rest.contains(['?', '#'])
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return None;
    }
    let path = rest[host.len()..].trim_end_matches('/');
    let path = path
        .strip_suffix("/v1")
        .unwrap_or(path)
        .trim_end_matches('/');
    Some(format!("{scheme}{host}{path}"))
}

fn is_env_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Expands a leading `~` and makes a relative path relative to `base`.
pub fn resolve_path(raw: &str, base: &Path, home: Option<&Path>) -> PathBuf {
    let expanded = match (raw.strip_prefix('~'), home) {
        (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
            home.join(rest.trim_start_matches('/'))
        }
        _ => PathBuf::from(raw),
    };
    if expanded.is_absolute() {
        expanded
    } else {
        base.join(expanded)
    }
}

/// serde-saphyr's messages carry a snippet after the first line; the location is reported
/// separately, so keep the first line.
fn first_line(e: &serde_saphyr::Error) -> String {
    let s = e.to_string();
    let line = s.lines().next().unwrap_or("").trim();
    // Strip a redundant "line X column Y: " / " at line X column Y" the library may add.
    let line = strip_location(line);
    if line.is_empty() { s } else { line.to_string() }
}

fn strip_location(s: &str) -> &str {
    let s = s.strip_prefix("error: ").unwrap_or(s);
    if let Some(rest) = s.strip_prefix("line ")
        && let Some(idx) = rest.find(": ")
    {
        return &rest[idx + 2..];
    }
    match s.find(" at line ") {
        Some(idx) => &s[..idx],
        None => s,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    version: String,
    sources: Vec<RawSource>,
    pact_key_pattern: String,
    error_patterns: Option<Vec<Spanned<String>>>,
    error_threshold: ErrorThreshold,
    llm: RawLlm,
    pact: PactConfig,
    arbiter: RawArbiter,
    stigmergy: StigmergyConfig,
    chronicler: RawChronicler,
    notify: NotifyConfig,
    ledger: RawLedger,
    budget: BudgetConfig,
    fix: FixConfig,
    auto_remediate: bool,
    state_dir: Option<Spanned<String>>,
    max_line_bytes: Option<Spanned<u64>>,
    api: RawApi,
    shards: Option<Spanned<u64>>,
    max_open_files: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawLlm {
    provider: Option<Spanned<String>>,
    model: Option<Spanned<String>>,
    max_tokens: Option<Spanned<u64>>,
    budget_per_fix: Option<Spanned<f64>>,
    base_url: Option<Spanned<String>>,
    api_key_env: Option<Spanned<String>>,
    timeout_seconds: Option<Spanned<u64>>,
    max_retries: Option<Spanned<u64>>,
    price_input_per_mtok: Option<Spanned<f64>>,
    price_output_per_mtok: Option<Spanned<f64>>,
    max_concurrent_fixes: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawApi {
    listen: Option<Spanned<String>>,
    register_roots: Vec<String>,
    read_token_env: Option<String>,
    write_token_env: Option<String>,
    allowed_hosts: Vec<String>,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            version: "1.0".into(),
            sources: Vec::new(),
            pact_key_pattern: "PACT:[a-zA-Z0-9_]+:[a-zA-Z0-9_]+".into(),
            error_patterns: None,
            error_threshold: ErrorThreshold::default(),
            llm: RawLlm::default(),
            pact: PactConfig::default(),
            arbiter: RawArbiter::default(),
            stigmergy: StigmergyConfig::default(),
            chronicler: RawChronicler::default(),
            notify: NotifyConfig::default(),
            ledger: RawLedger::default(),
            budget: BudgetConfig::default(),
            fix: FixConfig::default(),
            auto_remediate: false,
            state_dir: None,
            max_line_bytes: None,
            api: RawApi::default(),
            shards: None,
            max_open_files: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSource {
    #[serde(rename = "type")]
    kind: SourceKind,
    path: String,
    format: LogFormat,
    log_group: String,
    filter_pattern: String,
    region: String,
    poll_interval: u64,
    port: u16,
    host: String,
    error_patterns: Option<Vec<Spanned<String>>>,
    name: Option<Spanned<String>>,
    start_at: StartAt,
    follow_symlinks: bool,
    token_env: Option<String>,
    hmac_secret_env: Option<String>,
}

impl Default for RawSource {
    fn default() -> Self {
        RawSource {
            kind: SourceKind::File,
            path: String::new(),
            format: LogFormat::Text,
            log_group: String::new(),
            filter_pattern: String::new(),
            region: String::new(),
            poll_interval: 30,
            port: 0,
            host: "127.0.0.1".into(),
            error_patterns: None,
            name: None,
            start_at: StartAt::Beginning,
            follow_symlinks: false,
            token_env: None,
            hmac_secret_env: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml(
            text,
            Path::new("/etc/sentinel/sentinel.yaml"),
            Some(Path::new("/home/u")),
        )
    }

    #[test]
    fn empty_file_is_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.error_threshold.count, 1);
        assert_eq!(c.error_threshold.window_seconds, 300);
        assert_eq!(c.llm.model, "claude-sonnet-4-20250514");
        assert_eq!(c.budget.monthly_cap, 300.0);
        assert_eq!(c.max_line_bytes, DEFAULT_MAX_LINE_BYTES);
        assert_eq!(c.error_patterns.len(), DEFAULT_ERROR_PATTERNS.len());
        assert!(!c.auto_remediate);
    }

    #[test]
    fn full_reference_schema_parses() {
        let text = r#"
version: '1.0'
sources:
  - type: file
    path: "/var/log/app/*.log"
    format: jsonl
    error_patterns: ["ERROR", "(?i)fatal"]
  - type: webhook
    port: 9000
pact_key_pattern: PACT:[a-zA-Z0-9_]+:[a-zA-Z0-9_]+
error_threshold: {count: 3, window_seconds: 60}
llm: {provider: Anthropic, model: m, max_tokens: 100, budget_per_fix: 1.5}
pact: {project_dir: ~/Code/p, api_endpoint: null}
arbiter: {api_endpoint: http://localhost:7700, trust_event_on_fix: false}
stigmergy: {endpoint: null}
chronicler: {chronicler_enabled: true, chronicler_endpoint: http://localhost:8485}
notify: {webhook_url: null, on_error: true, on_fix: false, on_contract_push: true}
ledger: {ledger_api: null}
budget: {per_incident_cap: 1.0, hourly_cap: 2.0, daily_cap: 3.0, weekly_cap: 4.0, monthly_cap: 5.0}
auto_remediate: true
state_dir: state
"#;
        let c = parse(text).unwrap();
        assert_eq!(c.sources.len(), 2);
        assert_eq!(c.sources[0].format, LogFormat::Jsonl);
        assert_eq!(
            c.sources[0].error_patterns.as_deref().unwrap(),
            ["ERROR", "(?i)fatal"]
        );
        assert_eq!(c.sources[1].kind, SourceKind::Webhook);
        assert_eq!(c.sources[1].host, "127.0.0.1");
        assert_eq!(c.error_threshold.count, 3);
        assert!(c.chronicler.chronicler_enabled);
        assert_eq!(c.budget.daily_cap, 3.0);
        assert!(c.auto_remediate);
        // state_dir is relative to the config file's directory.
        assert!(c.state_dir.ends_with("sentinel/state"), "{:?}", c.state_dir);
    }

    #[test]
    fn tilde_is_expanded() {
        let c = parse("state_dir: ~/.sentinel-state\n").unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/home/u/.sentinel-state"));
    }

    #[test]
    fn unknown_key_is_named_with_line_and_column() {
        let err = parse("version: '1.0'\nchronicler:\n  enable: true\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/etc/sentinel/sentinel.yaml:3:"), "{msg}");
        assert!(msg.contains("enable"), "{msg}");
        match err {
            ConfigError::Parse { line, .. } => assert_eq!(line, 3),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn wrong_type_says_what_was_expected() {
        let err = parse("sources:\n  - type: process\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(":2:"), "{msg}");
        assert!(msg.contains("process"), "{msg}");
        let err = parse("auto_remediate: maybe\n").unwrap_err();
        assert!(err.to_string().contains(":1:"), "{err}");
    }

    #[test]
    fn invalid_pattern_names_key_and_line() {
        let err = parse(
            "sources:\n  - path: a.log\n    error_patterns:\n      - OK\n      - \"(unclosed\"\n",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("sources[0].error_patterns[1]"), "{msg}");
        assert!(msg.contains(":5:"), "{msg}");
    }

    #[test]
    fn arbiter_event_map_is_validated() {
        let c = parse("arbiter: {api_endpoint: http://a:7700}\n").unwrap();
        assert_eq!(c.arbiter.event_map, ArbiterEventMap::default());
        assert!(c.arbiter.trust_event_on_fix);
        let c = parse(
            "arbiter:\n  event_map:\n    production_error: {event: TAINT_DETECTED}\n    sentinel_fix: {weight: 0.5}\n",
        )
        .unwrap();
        let m = c.arbiter.event_map;
        assert_eq!(m.production_error.event, TrustEventType::TaintDetected);
        assert_eq!(m.production_error.weight, -0.3);
        assert_eq!(m.sentinel_fix.event, TrustEventType::AuditPass);
        assert_eq!(m.sentinel_fix.weight, 0.5);

        let err =
            parse("arbiter:\n  event_map:\n    sentinel_fix: {event: sentinel_fix}\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/etc/sentinel/sentinel.yaml:3:"), "{msg}");
        assert!(
            msg.contains("arbiter.event_map.sentinel_fix.event"),
            "{msg}"
        );
        assert!(msg.contains("AUDIT_PASS"), "{msg}");
        let err = parse(
            "arbiter:\n  event_map:\n    sentinel_fix_failure:\n      event: AUDIT_FAIL\n      weight: -1.5\n",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(":5:"), "{msg}");
        assert!(
            msg.contains("arbiter.event_map.sentinel_fix_failure.weight"),
            "{msg}"
        );
        // An unknown Sentinel event name is an unknown key.
        assert!(parse("arbiter:\n  event_map:\n    fix: {weight: 1}\n").is_err());
    }

    #[test]
    fn chronicler_takes_its_own_keys_and_the_references() {
        let c = parse("").unwrap().chronicler;
        assert!(!c.chronicler_enabled);
        assert_eq!(c.events_url(), "http://localhost:8485/events");
        // Chronicler's documentation: the endpoint already ends in /events.
        let c = parse("chronicler: {enabled: true, endpoint: 'http://localhost:8080/events'}\n")
            .unwrap()
            .chronicler;
        assert!(c.chronicler_enabled);
        assert_eq!(c.events_url(), "http://localhost:8080/events");
        let c = parse(
            "chronicler:\n  chronicler_enabled: true\n  chronicler_endpoint: http://c:8485/\n",
        )
        .unwrap()
        .chronicler;
        assert_eq!(c.events_url(), "http://c:8485/events");
        // Both spellings: fine when they agree, an error naming the key when not.
        let c = parse(
            "chronicler:\n  enabled: true\n  chronicler_enabled: true\n  endpoint: http://c/events\n  chronicler_endpoint: http://c/\n",
        )
        .unwrap()
        .chronicler;
        assert_eq!(c.events_url(), "http://c/events");
        let err = parse("chronicler:\n  chronicler_enabled: true\n  enabled: false\n").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(":3:") && msg.contains("chronicler.enabled"),
            "{msg}"
        );
        let err = parse("chronicler:\n  enabled: true\n  endpoint: localhost:8080\n").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(":3:") && msg.contains("chronicler.endpoint"),
            "{msg}"
        );
    }

    #[test]
    fn ledger_annotation_severities_default_to_ledgers_and_are_validated() {
        let l = parse("").unwrap().ledger;
        assert_eq!(l.refresh_seconds, 300);
        assert_eq!(l.annotation_severity.len(), 8);
        assert_eq!(
            l.annotation_severity["encrypted_at_rest"],
            Severity::Critical
        );
        assert_eq!(l.annotation_severity["gdpr_erasable"], Severity::High);
        assert_eq!(l.annotation_severity["primary_key"], Severity::Low);
        let l = parse(
            "ledger:\n  ledger_api: http://l:7701\n  refresh_seconds: 60\n  annotation_severity:\n    Tokenized: CRITICAL\n    not_null: medium\n",
        )
        .unwrap()
        .ledger;
        assert_eq!(l.refresh_seconds, 60);
        assert_eq!(l.annotation_severity["tokenized"], Severity::Critical);
        assert_eq!(l.annotation_severity["not_null"], Severity::Medium);
        assert_eq!(l.annotation_severity["pii_field"], Severity::High);
        let err = parse("ledger:\n  annotation_severity:\n    pii_field: urgent\n").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("/etc/sentinel/sentinel.yaml:3:")
                && msg.contains("ledger.annotation_severity.pii_field")
                && msg.contains("urgent"),
            "{msg}"
        );
        let err = parse("ledger:\n  refresh_seconds: 0\n").unwrap_err();
        assert!(err.to_string().contains("ledger.refresh_seconds"), "{err}");
        let l = parse("ledger: {mappings_file: m.json}\n").unwrap().ledger;
        assert_eq!(
            l.mappings_file.unwrap(),
            PathBuf::from("/etc/sentinel/m.json")
        );
    }

    #[test]
    fn max_line_bytes_range_is_checked() {
        let err = parse("max_line_bytes: 10\n").unwrap_err();
        assert!(err.to_string().contains("max_line_bytes"), "{err}");
        assert_eq!(
            parse("max_line_bytes: 65536\n").unwrap().max_line_bytes,
            65536
        );
    }

    #[test]
    fn llm_defaults_follow_the_provider() {
        let c = parse("").unwrap();
        assert_eq!(c.llm.provider, LlmProvider::Anthropic);
        assert_eq!(c.llm.base_url, "https://api.anthropic.com");
        assert_eq!(c.llm.api_key_env, "ANTHROPIC_API_KEY");
        assert_eq!(c.llm.timeout_seconds, 120);
        assert_eq!(c.llm.max_retries, 3);
        assert_eq!(c.llm.price_input_per_mtok, 3.0);
        assert_eq!(c.llm.price_output_per_mtok, 15.0);
        assert_eq!(c.llm.max_concurrent_fixes, 2);
        assert_eq!(c.llm.max_tokens, 8192);
        let c = parse("llm: {provider: OpenAI, model: gpt-4.1}\n").unwrap();
        assert_eq!(c.llm.provider, LlmProvider::OpenAi);
        assert_eq!(c.llm.base_url, "https://api.openai.com");
        assert_eq!(c.llm.api_key_env, "OPENAI_API_KEY");
        assert_eq!(c.llm.model, "gpt-4.1");
    }

    #[test]
    fn llm_keys_parse() {
        let text = "llm:
  provider: openai
  model: qwen2.5-coder
  max_tokens: 4096
  budget_per_fix: 0
  base_url: http://localhost:11434/v1/
  api_key_env: OLLAMA_KEY
  timeout_seconds: 30
  max_retries: 0
  price_input_per_mtok: 0
  price_output_per_mtok: 0.5
  max_concurrent_fixes: 1
";
        let l = parse(text).unwrap().llm;
        assert_eq!(l.base_url, "http://localhost:11434");
        assert_eq!(l.api_key_env, "OLLAMA_KEY");
        assert_eq!((l.timeout_seconds, l.max_retries), (30, 0));
        assert_eq!(
            (l.price_input_per_mtok, l.price_output_per_mtok),
            (0.0, 0.5)
        );
        assert_eq!((l.max_tokens, l.max_concurrent_fixes), (4096, 1));
        assert_eq!(l.budget_per_fix, 0.0);
    }

    #[test]
    fn llm_unknown_provider_names_file_line_and_key() {
        let err = parse("version: '1.0'\nllm:\n  model: m\n  provider: gemini\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("/etc/sentinel/sentinel.yaml:4:"), "{msg}");
        assert!(msg.contains("llm.provider"), "{msg}");
        assert!(
            msg.contains("gemini") && msg.contains("anthropic or openai"),
            "{msg}"
        );
    }

    #[test]
    fn llm_values_are_validated() {
        for (text, key) in [
            ("llm: {max_tokens: 0}", "llm.max_tokens"),
            ("llm: {timeout_seconds: 0}", "llm.timeout_seconds"),
            ("llm: {max_retries: 11}", "llm.max_retries"),
            ("llm: {max_concurrent_fixes: 0}", "llm.max_concurrent_fixes"),
            (
                "llm: {price_input_per_mtok: -1}",
                "llm.price_input_per_mtok",
            ),
            (
                "llm: {price_output_per_mtok: .nan}",
                "llm.price_output_per_mtok",
            ),
            ("llm: {budget_per_fix: -0.5}", "llm.budget_per_fix"),
            ("llm: {base_url: api.anthropic.com}", "llm.base_url"),
            ("llm: {base_url: 'https://user:pw@host'}", "llm.base_url"),
            ("llm: {api_key_env: sk-ant-123}", "llm.api_key_env"),
            ("llm: {model: ''}", "llm.model"),
        ] {
            let err = parse(&format!("{text}\n")).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(key) && msg.contains(":1:"), "{text}: {msg}");
        }
        // Unknown keys stay errors.
        assert!(parse("llm: {api_key: sk-ant-123}\n").is_err());
    }

    #[test]
    fn base_urls_are_normalised() {
        for (raw, want) in [
            (
                "https://api.anthropic.com",
                Some("https://api.anthropic.com"),
            ),
            (
                "https://api.anthropic.com/",
                Some("https://api.anthropic.com"),
            ),
            ("http://localhost:8000/v1", Some("http://localhost:8000")),
            ("http://gw.internal/llm/v1/", Some("http://gw.internal/llm")),
            ("http://v1", Some("http://v1")),
            ("ftp://x", None),
            ("https://", None),
            ("https://h?x=1", None),
        ] {
            assert_eq!(normalise_base_url(raw).as_deref(), want, "{raw}");
        }
    }

    #[test]
    fn duplicate_key_is_an_error() {
        assert!(parse("auto_remediate: true\nauto_remediate: false\n").is_err());
    }

    #[test]
    fn explicit_missing_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let search = ConfigSearch {
            explicit: Some(dir.path().join("nope.yaml")),
            cwd: dir.path().to_path_buf(),
            home: None,
        };
        assert!(matches!(
            Config::load(&search),
            Err(ConfigError::NotFound { .. })
        ));
    }

    #[test]
    fn search_order_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        let search = ConfigSearch {
            explicit: None,
            cwd: dir.path().to_path_buf(),
            home: Some(home.path().to_path_buf()),
        };
        let c = Config::load(&search).unwrap();
        assert!(c.path.is_none());
        std::fs::create_dir_all(home.path().join(".sentinel")).unwrap();
        std::fs::write(
            home.path().join(".sentinel/sentinel.yaml"),
            "auto_remediate: true\n",
        )
        .unwrap();
        let c = Config::load(&search).unwrap();
        assert!(c.auto_remediate);
        std::fs::write(dir.path().join("sentinel.yaml"), "auto_remediate: false\n").unwrap();
        let c = Config::load(&search).unwrap();
        assert!(!c.auto_remediate);
        assert_eq!(c.path.unwrap(), dir.path().join("sentinel.yaml"));
        // A broken first candidate is an error, not a fall-through to the next one.
        std::fs::write(dir.path().join("sentinel.yaml"), "auto_remediate: [\n").unwrap();
        assert!(Config::load(&search).is_err());
    }
}
