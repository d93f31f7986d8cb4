//! `sources`: one typed entry per source, each checked by its own type.

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::ConfigError;

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

/// The settings every source has, whatever its type.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SourceCommon {
    /// `name`: the source's label in metrics, logs and the API (default: the `path` of a
    /// file source, `webhook:<port>` for a webhook, else the type). Unique.
    pub name: String,
    /// `format`.
    pub format: LogFormat,
    /// `error_patterns` of this source; `None` means "use the top-level list" for files, and
    /// "every event is an error" for webhooks (the reference's behaviour).
    pub error_patterns: Option<Vec<String>>,
}

/// One entry of `sources`: one variant per `type`, each with its own settings and checks.
///
/// Adding a source type is a variant here (with its struct and its arm in `resolve_sources`)
/// and its module under `crate::source`, registered in one line there.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SourceConfig {
    /// `type: file`.
    File(FileSourceConfig),
    /// `type: webhook`.
    Webhook(WebhookSourceConfig),
    /// `type: cloudwatch` (accepted; not started yet).
    Cloudwatch(CloudwatchSourceConfig),
    /// `type: stdout` (the reference's; accepted, not started yet).
    Stdout(SourceCommon),
}

impl SourceConfig {
    /// What every source has.
    pub fn common(&self) -> &SourceCommon {
        match self {
            SourceConfig::File(s) => &s.common,
            SourceConfig::Webhook(s) => &s.common,
            SourceConfig::Cloudwatch(s) => &s.common,
            SourceConfig::Stdout(c) => c,
        }
    }

    /// The source's unique name.
    pub fn name(&self) -> &str {
        &self.common().name
    }

    /// Its `type`.
    pub fn kind(&self) -> SourceKind {
        match self {
            SourceConfig::File(_) => SourceKind::File,
            SourceConfig::Webhook(_) => SourceKind::Webhook,
            SourceConfig::Cloudwatch(_) => SourceKind::Cloudwatch,
            SourceConfig::Stdout(_) => SourceKind::Stdout,
        }
    }
}

/// `type: file`: log files matched by a glob, tailed across rotation and restarts.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FileSourceConfig {
    /// Name, format, error patterns.
    pub common: SourceCommon,
    /// `path`: a file or a glob, relative to the config file's directory.
    pub path: String,
    /// `start_at`: where to start in files present at the very first start.
    pub start_at: StartAt,
    /// `follow_symlinks`: tail files matched through symlinks (default false).
    pub follow_symlinks: bool,
}

impl FileSourceConfig {
    /// A file source on `path` with the defaults (tests and examples).
    pub fn new(path: impl Into<String>) -> FileSourceConfig {
        let path = path.into();
        FileSourceConfig {
            common: SourceCommon {
                name: path.clone(),
                format: LogFormat::Text,
                error_patterns: None,
            },
            path,
            start_at: StartAt::Beginning,
            follow_symlinks: false,
        }
    }

    fn from_raw(
        raw: &RawSource,
        common: SourceCommon,
        i: usize,
        invalid: Invalid,
    ) -> Result<Self, ConfigError> {
        if raw.path.trim().is_empty() {
            return Err(invalid(
                format!("sources[{i}].path"),
                None,
                "a file source needs a `path` (a file or a glob)".into(),
            ));
        }
        Ok(FileSourceConfig {
            common,
            path: raw.path.clone(),
            start_at: raw.start_at,
            follow_symlinks: raw.follow_symlinks,
        })
    }
}

/// `type: webhook`: an HTTP listener for log shippers' posts.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WebhookSourceConfig {
    /// Name, format, error patterns.
    pub common: SourceCommon,
    /// `host`, default `127.0.0.1`.
    pub host: String,
    /// `port` (0 picks a free one).
    pub port: u16,
    /// `token_env`: the environment variable holding the bearer token requests must carry
    /// (`Authorization: Bearer <token>`).
    pub token_env: Option<String>,
    /// `hmac_secret_env`: the environment variable holding the HMAC-SHA256 secret requests
    /// must be signed with (`X-Sentinel-Timestamp`, `X-Sentinel-Signature`).
    pub hmac_secret_env: Option<String>,
}

impl WebhookSourceConfig {
    /// A webhook on `host:port` with the defaults (tests and examples).
    pub fn new(host: impl Into<String>, port: u16) -> WebhookSourceConfig {
        WebhookSourceConfig {
            common: SourceCommon {
                name: format!("webhook:{port}"),
                format: LogFormat::Text,
                error_patterns: None,
            },
            host: host.into(),
            port,
            token_env: None,
            hmac_secret_env: None,
        }
    }

    /// Whether it listens on a loopback address only.
    pub fn is_loopback(&self) -> bool {
        self.host
            .parse::<std::net::IpAddr>()
            .map_or(self.host == "localhost", |ip| ip.is_loopback())
    }

    fn from_raw(raw: &RawSource, common: SourceCommon) -> Self {
        WebhookSourceConfig {
            common,
            host: raw.host.clone(),
            port: raw.port,
            token_env: raw.token_env.clone(),
            hmac_secret_env: raw.hmac_secret_env.clone(),
        }
    }
}

/// `type: cloudwatch`: AWS CloudWatch Logs (the reference's keys).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CloudwatchSourceConfig {
    /// Name, format, error patterns.
    pub common: SourceCommon,
    /// `log_group`.
    pub log_group: String,
    /// `filter_pattern`.
    pub filter_pattern: String,
    /// `region`.
    pub region: String,
    /// `poll_interval` in seconds.
    pub poll_interval: u64,
}

impl CloudwatchSourceConfig {
    fn from_raw(raw: &RawSource, common: SourceCommon) -> Self {
        CloudwatchSourceConfig {
            common,
            log_group: raw.log_group.clone(),
            filter_pattern: raw.filter_pattern.clone(),
            region: raw.region.clone(),
            poll_interval: raw.poll_interval,
        }
    }
}

/// How a check names a bad key: `(key, location, message)`.
type Invalid<'a> = &'a dyn Fn(String, Option<&serde_saphyr::Location>, String) -> ConfigError;

/// Checks a list of error patterns under a key: `(key, patterns)`.
type CheckPatterns<'a> = &'a dyn Fn(&str, &[Spanned<String>]) -> Result<Vec<String>, ConfigError>;

/// Checks `sources` and builds each entry's typed settings.
pub(super) fn resolve_sources(
    raw: Vec<RawSource>,
    invalid: Invalid,
    check_patterns: CheckPatterns,
) -> Result<Vec<SourceConfig>, ConfigError> {
    let mut sources: Vec<SourceConfig> = Vec::with_capacity(raw.len());
    for (i, s) in raw.into_iter().enumerate() {
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
        if sources.iter().any(|o| o.name() == name) {
            return Err(invalid(
                format!("sources[{i}].name"),
                s.name.as_ref().map(|n| &n.referenced),
                format!("another source is already named {name:?}; give each a unique `name`"),
            ));
        }
        let error_patterns = match &s.error_patterns {
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
        let common = SourceCommon {
            name,
            format: s.format,
            error_patterns,
        };
        sources.push(match s.kind {
            SourceKind::File => {
                SourceConfig::File(FileSourceConfig::from_raw(&s, common, i, invalid)?)
            }
            SourceKind::Webhook => SourceConfig::Webhook(WebhookSourceConfig::from_raw(&s, common)),
            SourceKind::Cloudwatch => {
                SourceConfig::Cloudwatch(CloudwatchSourceConfig::from_raw(&s, common))
            }
            SourceKind::Stdout => SourceConfig::Stdout(common),
        });
    }
    Ok(sources)
}

/// A `sources` entry as written: every type's keys are accepted on every entry (the
/// reference's files do so); each type reads its own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawSource {
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
