//! `sentinel.yaml`: the schema, its defaults, where it is found, and validation.
//!
//! This module loads and searches; each section's schema and checks live in their own module
//! (`source`, `llm`, `peers`, `api`, `fix`, `triage`), and each subsystem is built from its section.
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

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::scan::matcher::{DEFAULT_ERROR_PATTERNS, DEFAULT_MAX_LINE_BYTES};

mod api;
mod cluster;
mod error;
mod fix;
mod forge;
mod forward;
mod grouping;
mod llm;
mod peers;
mod retention;
mod source;
#[cfg(test)]
mod tests;
mod triage;

pub use api::{ApiConfig, DEFAULT_API_PORT};
pub use cluster::{ClusterConfig, DEFAULT_CLUSTER_SUBJECT_PREFIX, DEFAULT_CLUSTER_TIMEOUT_MS};
pub use error::ConfigError;
pub use fix::{BudgetConfig, ErrorThreshold, FixConfig, FixMode, FreezeWindow, PactConfig};
pub use forge::{
    DEFAULT_ISSUES_PER_HOUR, DEFAULT_MAX_OPEN, ForgeProvider, IssuesConfig, PullRequestConfig,
};
pub use forward::ForwardNatsConfig;
pub use grouping::{
    DEFAULT_GROUPING_WINDOW_SECONDS, DEFAULT_MAX_NEW_INCIDENTS_PER_KEY, GroupingConfig,
    GroupingRule, MAX_GROUPING_RULES,
};
pub use llm::{
    LlmConfig, LlmProvider, MAX_CONCURRENT_FIXES, MAX_LLM_MAX_TOKENS, MAX_LLM_PRICE_PER_MTOK,
    MAX_LLM_RETRIES, MAX_LLM_TIMEOUT_SECONDS,
};
pub use peers::{
    ArbiterConfig, ArbiterEventMap, ChroniclerConfig, DEFAULT_LEDGER_REFRESH_SECONDS, LedgerConfig,
    NotifyConfig, StigmergyConfig, TrustEventType, TrustMapping,
};
pub use retention::RetentionConfig;
pub use source::{
    CiSourceConfig, CloudwatchSourceConfig, DEFAULT_CLOUDWATCH_RPS, DEFAULT_LOOKBACK_SECONDS,
    DEFAULT_NATS_MAX_AGE_HOURS, DEFAULT_NATS_STREAM, DEFAULT_NATS_SUBJECT_PREFIX, FileSourceConfig,
    LogFormat, NatsFormat, NatsSourceConfig, ProcessSourceConfig, RestartPolicy, SourceCommon,
    SourceConfig, SourceKind, StartAt, StdinSourceConfig, WebhookSourceConfig,
};
pub use triage::{MAX_TRIAGE_PER_HOUR, TriageConfig};

use api::{RawApi, resolve_api};
use cluster::{RawCluster, resolve_cluster};
use forward::{RawForward, resolve_forward};
use grouping::{RawGrouping, resolve_grouping};
use llm::{RawLlm, resolve_llm};
use peers::{
    RawArbiter, RawChronicler, RawLedger, resolve_arbiter, resolve_chronicler, resolve_ledger,
};
use retention::{RawRetention, resolve_retention};
use source::{RawSource, resolve_sources};
use triage::{RawTriage, resolve_triage};

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
    /// `forward.nats`: an edge's error lines go to NATS JetStream instead of its store.
    pub forward: Option<ForwardNatsConfig>,
    /// `grouping`: rules and the per-key cardinality guard.
    pub grouping: GroupingConfig,
    /// `retention`: what the store forgets, and when it is compacted.
    pub retention: RetentionConfig,
    /// `triage`: the daemon's LLM triage of incidents without a PACT key.
    pub triage: TriageConfig,
    /// `cluster`: the API answers for every node of a scale-out cluster (see
    /// `crate::cluster`); `None`: this daemon answers for itself only.
    pub cluster: Option<ClusterConfig>,
    /// `issues`: escalated incidents filed as issues (GitHub or GitLab).
    pub issues: Option<IssuesConfig>,
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

        let sources = resolve_sources(raw.sources, &invalid, &check_patterns)?;
        let hostname = || {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        };
        let forward = resolve_forward(&raw.forward, hostname, &invalid)?;
        let cluster = resolve_cluster(
            raw.cluster.as_ref(),
            || match &forward {
                Some(f) => f.edge.clone(),
                None => hostname().unwrap_or_else(|| "sentinel".into()),
            },
            &invalid,
        )?;

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

        let ledger = resolve_ledger(raw.ledger, base, home, &invalid)?;
        let chronicler = resolve_chronicler(&raw.chronicler, &invalid)?;
        let api = resolve_api(&raw.api, base, home, &invalid)?;
        let grouping = resolve_grouping(&raw.grouping, &invalid)?;
        let retention = resolve_retention(&raw.retention, &invalid)?;
        let llm = resolve_llm(&raw.llm, &invalid)?;
        let triage = resolve_triage(&raw.triage, &invalid)?;
        let issues = forge::resolve_issues(raw.issues.clone(), &invalid)?;
        let pull_request = forge::resolve_pull_request(raw.fix.pull_request.clone(), &invalid)?;
        if !(1..=5).contains(&raw.fix.max_attempts) {
            return Err(invalid(
                "fix.max_attempts".into(),
                None,
                format!("{} is out of range: expected 1..=5", raw.fix.max_attempts),
            ));
        }
        if !(0.0..=1.0).contains(&raw.fix.min_confidence) {
            return Err(invalid(
                "fix.min_confidence".into(),
                None,
                format!("{} is out of range: expected 0..=1", raw.fix.min_confidence),
            ));
        }
        if let Err((i, key, message)) = crate::fix::guard::Freeze::compile(&raw.fix.freeze) {
            return Err(invalid(
                format!("fix.freeze[{i}].{key}"),
                raw.fix.freeze.get(i).map(|w| &w.referenced),
                message,
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
            fix: crate::config::FixConfig {
                pull_request,
                ..raw.fix
            },
            auto_remediate: raw.auto_remediate,
            state_dir,
            max_line_bytes: max_line_bytes as usize,
            api,
            shards,
            max_open_files,
            base_dir: base.to_path_buf(),
            forward,
            grouping,
            retention,
            triage,
            cluster,
            issues,
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
    forward: RawForward,
    grouping: RawGrouping,
    retention: RawRetention,
    triage: RawTriage,
    cluster: Option<RawCluster>,
    issues: Option<IssuesConfig>,
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
            forward: RawForward::default(),
            grouping: RawGrouping::default(),
            retention: RawRetention::default(),
            triage: RawTriage::default(),
            cluster: None,
            issues: None,
        }
    }
}
