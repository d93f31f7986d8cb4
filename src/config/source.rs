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
    /// A command's standard output and error.
    Process,
    /// The daemon's standard input.
    Stdin,
    /// The reference's name for `stdin` (accepted, deprecated).
    Stdout,
    /// NATS JetStream partitions (an aggregator of a scale-out cluster).
    Nats,
    /// GitHub webhooks: failed Actions jobs (their logs read through the API).
    Github,
    /// GitLab webhooks: failed pipeline jobs (their traces read through the API).
    Gitlab,
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

/// `format` as written: the line formats of every source, plus the payload formats of a
/// `type: nats` source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
enum RawFormat {
    #[default]
    Text,
    Jsonl,
    Auto,
    Sentinel,
    Raw,
}

/// What the messages of a `type: nats` source hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NatsFormat {
    /// Error lines forwarded by Sentinel edges (`forward.nats`), with their source
    /// identity and position: see `crate::source::nats::wire`.
    #[default]
    Sentinel,
    /// Raw log lines as log shippers (Vector, Fluent Bit) publish them: one line or NDJSON
    /// per message, `{"message": ...}` (or `{"log": ...}`) unwrapped, scanned like a file's
    /// lines.
    Raw,
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
    /// `type: cloudwatch`.
    Cloudwatch(CloudwatchSourceConfig),
    /// `type: process`.
    Process(ProcessSourceConfig),
    /// `type: stdin` (and the reference's `type: stdout`, its deprecated alias).
    Stdin(StdinSourceConfig),
    /// `type: nats`.
    Nats(NatsSourceConfig),
    /// `type: github` and `type: gitlab`.
    Ci(CiSourceConfig),
}

impl SourceConfig {
    /// What every source has.
    pub fn common(&self) -> &SourceCommon {
        match self {
            SourceConfig::File(s) => &s.common,
            SourceConfig::Webhook(s) => &s.common,
            SourceConfig::Cloudwatch(s) => &s.common,
            SourceConfig::Process(s) => &s.common,
            SourceConfig::Stdin(s) => &s.common,
            SourceConfig::Nats(s) => &s.common,
            SourceConfig::Ci(s) => &s.common,
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
            SourceConfig::Process(_) => SourceKind::Process,
            SourceConfig::Stdin(_) => SourceKind::Stdin,
            SourceConfig::Nats(_) => SourceKind::Nats,
            SourceConfig::Ci(s) => match s.provider {
                crate::config::ForgeProvider::Gitlab => SourceKind::Gitlab,
                _ => SourceKind::Github,
            },
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
            start_at: raw.start_at.unwrap_or(StartAt::Beginning),
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

/// `type: github` / `type: gitlab`: a listener for the forge's webhooks; a failed job's log
/// is fetched through the API and its failing step's error lines become incidents.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CiSourceConfig {
    /// Name, format, error patterns (`error_patterns` pick the failing step's error lines).
    pub common: SourceCommon,
    /// Which forge.
    pub provider: crate::config::ForgeProvider,
    /// `host`, default `127.0.0.1`.
    pub host: String,
    /// `port` (0 picks a free one).
    pub port: u16,
    /// `secret_env`: the variable holding the webhook secret (GitHub: the HMAC key of
    /// `X-Hub-Signature-256`; GitLab: the `X-Gitlab-Token`, or the `whsec_` signing token).
    pub secret_env: Option<String>,
    /// `token_env`: the variable holding the API token the logs are read with.
    pub token_env: Option<String>,
    /// `api_url` (default: the public API).
    pub api_url: String,
}

impl CiSourceConfig {
    /// Whether it listens on a loopback address only.
    pub fn is_loopback(&self) -> bool {
        self.host
            .parse::<std::net::IpAddr>()
            .map_or(self.host == "localhost", |ip| ip.is_loopback())
    }
}

/// `type: cloudwatch`: AWS CloudWatch Logs (the reference's keys, plus `log_groups`,
/// `log_stream_prefix`, `endpoint`, `start_at`, `lookback_seconds`,
/// `max_requests_per_second` and `profile`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CloudwatchSourceConfig {
    /// Name, format, error patterns.
    pub common: SourceCommon,
    /// `log_group` and `log_groups`, in that order, without repeats: at least one.
    pub log_groups: Vec<String>,
    /// `log_stream_prefix`: only streams whose name starts with it.
    pub log_stream_prefix: Option<String>,
    /// `filter_pattern`: CloudWatch's syntax, passed through. When set, every event it
    /// returns counts as an error line; when empty, the `error_patterns` decide.
    pub filter_pattern: String,
    /// `region` (empty: `AWS_REGION`, then `AWS_DEFAULT_REGION`, at start).
    pub region: String,
    /// `poll_interval` in seconds (default 30).
    pub poll_interval: u64,
    /// `endpoint`: a URL replacing `https://logs.<region>.amazonaws.com` (an emulator, a
    /// VPC endpoint).
    pub endpoint: Option<String>,
    /// `start_at`: where a log group without a saved position starts: `end` (the default:
    /// `lookback_seconds` before now) or `beginning` (its oldest event).
    pub start_at: StartAt,
    /// `lookback_seconds` (default 300, the reference's).
    pub lookback_seconds: u64,
    /// `max_requests_per_second` (default 4): shared by every cloudwatch source of one
    /// account and region (the smallest configured value applies).
    pub max_requests_per_second: f64,
    /// `profile`: the `~/.aws/credentials` section to use (default: `AWS_PROFILE`, else
    /// `default`; when set it wins over the `AWS_*` key variables).
    pub profile: Option<String>,
}

/// The default `max_requests_per_second` of a cloudwatch source: below the 5 per second
/// FilterLogEvents quota of an account and region.
pub const DEFAULT_CLOUDWATCH_RPS: f64 = 4.0;

/// The default `lookback_seconds` (the reference starts at now − 300 s).
pub const DEFAULT_LOOKBACK_SECONDS: u64 = 300;

impl CloudwatchSourceConfig {
    /// A source on `log_group` in `region` with the defaults (tests and examples).
    pub fn new(log_group: impl Into<String>, region: impl Into<String>) -> Self {
        let log_group = log_group.into();
        CloudwatchSourceConfig {
            common: SourceCommon {
                name: format!("cloudwatch:{log_group}"),
                format: LogFormat::Text,
                error_patterns: None,
            },
            log_groups: vec![log_group],
            log_stream_prefix: None,
            filter_pattern: String::new(),
            region: region.into(),
            poll_interval: 30,
            endpoint: None,
            start_at: StartAt::End,
            lookback_seconds: DEFAULT_LOOKBACK_SECONDS,
            max_requests_per_second: DEFAULT_CLOUDWATCH_RPS,
            profile: None,
        }
    }

    fn from_raw(
        raw: &RawSource,
        common: SourceCommon,
        i: usize,
        invalid: Invalid,
    ) -> Result<Self, ConfigError> {
        let mut log_groups: Vec<String> = Vec::new();
        for g in std::iter::once(&raw.log_group).chain(raw.log_groups.iter()) {
            let g = g.trim();
            if !g.is_empty() && !log_groups.iter().any(|o| o == g) {
                log_groups.push(g.to_string());
            }
        }
        if log_groups.is_empty() {
            return Err(invalid(
                format!("sources[{i}].log_group"),
                None,
                "a cloudwatch source needs a `log_group` (or `log_groups: [..]`)".into(),
            ));
        }
        if raw.poll_interval == 0 {
            return Err(invalid(
                format!("sources[{i}].poll_interval"),
                None,
                "must be at least 1 (seconds)".into(),
            ));
        }
        let rps = raw
            .max_requests_per_second
            .unwrap_or(DEFAULT_CLOUDWATCH_RPS);
        if !(rps.is_finite() && rps > 0.0 && rps <= 1000.0) {
            return Err(invalid(
                format!("sources[{i}].max_requests_per_second"),
                None,
                format!("{rps} is out of range: expected more than 0 and at most 1000"),
            ));
        }
        let endpoint = raw
            .endpoint
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty());
        if let Some(e) = endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(invalid(
                format!("sources[{i}].endpoint"),
                None,
                format!("{e:?} is not an http:// or https:// URL"),
            ));
        }
        Ok(CloudwatchSourceConfig {
            common,
            log_groups,
            log_stream_prefix: raw.log_stream_prefix.clone().filter(|p| !p.is_empty()),
            filter_pattern: raw.filter_pattern.trim().to_string(),
            region: raw.region.trim().to_string(),
            poll_interval: raw.poll_interval,
            endpoint: endpoint.map(|e| e.trim_end_matches('/').to_string()),
            start_at: raw.start_at.unwrap_or(StartAt::End),
            lookback_seconds: raw.lookback_seconds.unwrap_or(DEFAULT_LOOKBACK_SECONDS),
            max_requests_per_second: rps,
            profile: raw.profile.clone().filter(|p| !p.trim().is_empty()),
        })
    }
}

/// When a `type: process` source starts its command again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Whenever it exits (the default: a log follower that ends is started again).
    #[default]
    Always,
    /// When it exits with a non-zero status or is killed by a signal.
    OnFailure,
    /// Never: once it exits, the source is done.
    Never,
}

/// `type: process`: a command whose standard output and error lines are scanned.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProcessSourceConfig {
    /// Name, format, error patterns.
    pub common: SourceCommon,
    /// `command`: the argv (no shell: write `["sh", "-c", "..."]` for one).
    pub command: Vec<String>,
    /// `env`: variables added to the daemon's environment.
    pub env: Vec<(String, String)>,
    /// `cwd`, relative to the config file's directory (default: that directory).
    pub cwd: Option<String>,
    /// `restart`: `always` (default), `on-failure`, `never`.
    pub restart: RestartPolicy,
}

impl ProcessSourceConfig {
    /// A source running `command` with the defaults (tests and examples).
    pub fn new(command: Vec<String>) -> Self {
        ProcessSourceConfig {
            common: SourceCommon {
                name: format!("process:{}", command.first().map_or("", String::as_str)),
                format: LogFormat::Text,
                error_patterns: None,
            },
            command,
            env: Vec::new(),
            cwd: None,
            restart: RestartPolicy::Always,
        }
    }

    fn from_raw(
        raw: &RawSource,
        common: SourceCommon,
        i: usize,
        invalid: Invalid,
    ) -> Result<Self, ConfigError> {
        if raw.command.first().is_none_or(|c| c.trim().is_empty()) {
            return Err(invalid(
                format!("sources[{i}].command"),
                None,
                "a process source needs a `command`: an argv list such as \
                 [\"kubectl\", \"logs\", \"-f\", \"deploy/api\"]"
                    .into(),
            ));
        }
        Ok(ProcessSourceConfig {
            common,
            command: raw.command.clone(),
            env: raw
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            cwd: raw.cwd.clone().filter(|c| !c.trim().is_empty()),
            restart: raw.restart,
        })
    }
}

/// `type: nats`: partitions of a NATS JetStream stream, applied in stream order, each
/// partition's last applied stream sequence committed with its counts.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NatsSourceConfig {
    /// Name, error patterns (`format` is [`NatsSourceConfig::payload`]; lines are read as
    /// `auto`).
    pub common: SourceCommon,
    /// `url`: the NATS server(s), comma-separated (`nats://host:4222`).
    pub url: String,
    /// `stream`: the JetStream stream (default `SENTINEL`); created if missing, capturing
    /// `<subject_prefix>.>` (file storage).
    pub stream: String,
    /// `subject_prefix` (default `sentinel.errors`): partition `p` is subject
    /// `<subject_prefix>.<p>`.
    pub subject_prefix: String,
    /// `partitions`: the subject tokens this aggregator owns (`[0, 1, 2]`; for `format:
    /// raw`, host names or `">"`, the default of raw sources: every subject).
    pub partitions: Vec<String>,
    /// `format`: `sentinel` (the default) or `raw`.
    pub payload: NatsFormat,
    /// `max_age_hours`: how long the stream keeps messages when this source creates it
    /// (default 168, a week).
    pub max_age_hours: u64,
}

/// The default `stream` of `type: nats` sources and `forward.nats`.
pub const DEFAULT_NATS_STREAM: &str = "SENTINEL";
/// The default `subject_prefix` of `type: nats` sources and `forward.nats`.
pub const DEFAULT_NATS_SUBJECT_PREFIX: &str = "sentinel.errors";
/// The default `max_age_hours` of a stream a source creates.
pub const DEFAULT_NATS_MAX_AGE_HOURS: u64 = 168;

impl NatsSourceConfig {
    fn from_raw(
        raw: &RawSource,
        common: SourceCommon,
        i: usize,
        invalid: Invalid,
    ) -> Result<Self, ConfigError> {
        let url = raw.url.trim();
        if url.is_empty() {
            return Err(invalid(
                format!("sources[{i}].url"),
                None,
                "a nats source needs a `url` (nats://host:4222)".into(),
            ));
        }
        let payload = match raw.format {
            RawFormat::Raw => NatsFormat::Raw,
            _ => NatsFormat::Sentinel,
        };
        let stream = raw.stream.trim();
        let stream = if stream.is_empty() {
            DEFAULT_NATS_STREAM
        } else {
            stream
        };
        if stream.contains(['.', ' ', '*', '>', '\t', '/']) {
            return Err(invalid(
                format!("sources[{i}].stream"),
                None,
                format!("{stream:?}: a stream name has no '.', '*', '>', '/' or spaces"),
            ));
        }
        let prefix = raw.subject_prefix.trim().trim_end_matches('.');
        let prefix = if prefix.is_empty() {
            DEFAULT_NATS_SUBJECT_PREFIX
        } else {
            prefix
        };
        let mut partitions: Vec<String> = Vec::new();
        for p in &raw.partitions {
            let p = match p {
                RawToken::Number(n) => n.to_string(),
                RawToken::Text(t) => t.trim().to_string(),
            };
            if p.is_empty()
                || p.contains([' ', '.'])
                || (p.contains(['*', '>']) && p != ">" && p != "*")
            {
                return Err(invalid(
                    format!("sources[{i}].partitions"),
                    None,
                    format!("{p:?} is not a subject token (a number, a name, '*' or '>')"),
                ));
            }
            if !partitions.contains(&p) {
                partitions.push(p);
            }
        }
        if partitions.is_empty() {
            if payload == NatsFormat::Raw {
                partitions.push(">".into());
            } else {
                return Err(invalid(
                    format!("sources[{i}].partitions"),
                    None,
                    "list the partitions this aggregator owns, e.g. [0, 1, 2, 3]".into(),
                ));
            }
        }
        Ok(NatsSourceConfig {
            common,
            url: url.to_string(),
            stream: stream.to_string(),
            subject_prefix: prefix.to_string(),
            partitions,
            payload,
            max_age_hours: raw.max_age_hours.unwrap_or(DEFAULT_NATS_MAX_AGE_HOURS),
        })
    }
}

/// A subject token as written: a number or a name.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum RawToken {
    Number(u64),
    Text(String),
}

/// `type: stdin`: the daemon's standard input (`app | sentinel watch`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StdinSourceConfig {
    /// Name, format, error patterns.
    pub common: SourceCommon,
    /// Written as the reference's `type: stdout` (deprecated: a note at start).
    pub deprecated_alias: bool,
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
                SourceKind::Cloudwatch => format!(
                    "cloudwatch:{}",
                    if s.log_group.trim().is_empty() {
                        s.log_groups.first().map_or("", |g| g.trim())
                    } else {
                        s.log_group.trim()
                    }
                ),
                SourceKind::Process => {
                    format!("process:{}", s.command.first().map_or("", String::as_str))
                }
                SourceKind::Stdin | SourceKind::Stdout => "stdin".into(),
                SourceKind::Github => format!("github:{}", s.port),
                SourceKind::Gitlab => format!("gitlab:{}", s.port),
                SourceKind::Nats => format!(
                    "nats:{}",
                    Some(s.stream.trim())
                        .filter(|t| !t.is_empty())
                        .unwrap_or(DEFAULT_NATS_STREAM)
                ),
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
        let format = match (s.format, s.kind) {
            (RawFormat::Text, SourceKind::Nats) => RawFormat::Sentinel,
            (f, _) => f,
        };
        let format = match (format, s.kind) {
            (RawFormat::Text, _) => LogFormat::Text,
            (RawFormat::Jsonl, _) => LogFormat::Jsonl,
            (RawFormat::Auto, _) | (RawFormat::Sentinel | RawFormat::Raw, SourceKind::Nats) => {
                LogFormat::Auto
            }
            (RawFormat::Sentinel | RawFormat::Raw, _) => {
                return Err(invalid(
                    format!("sources[{i}].format"),
                    None,
                    "`sentinel` and `raw` are formats of nats sources; lines are text, jsonl \
                     or auto"
                        .into(),
                ));
            }
        };
        let common = SourceCommon {
            name,
            format,
            error_patterns,
        };
        sources.push(match s.kind {
            SourceKind::File => {
                SourceConfig::File(FileSourceConfig::from_raw(&s, common, i, invalid)?)
            }
            SourceKind::Webhook => SourceConfig::Webhook(WebhookSourceConfig::from_raw(&s, common)),
            SourceKind::Cloudwatch => {
                SourceConfig::Cloudwatch(CloudwatchSourceConfig::from_raw(&s, common, i, invalid)?)
            }
            SourceKind::Process => {
                SourceConfig::Process(ProcessSourceConfig::from_raw(&s, common, i, invalid)?)
            }
            SourceKind::Nats => {
                SourceConfig::Nats(NatsSourceConfig::from_raw(&s, common, i, invalid)?)
            }
            SourceKind::Github | SourceKind::Gitlab => {
                let provider = if s.kind == SourceKind::Gitlab {
                    crate::config::ForgeProvider::Gitlab
                } else {
                    crate::config::ForgeProvider::Github
                };
                let api_url = match &s.api_url {
                    Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) => {
                        return Err(invalid(
                            format!("sources[{i}].api_url"),
                            None,
                            format!("{u:?} is not an http(s) URL"),
                        ));
                    }
                    Some(u) => u.trim_end_matches('/').to_string(),
                    None => provider.default_api_url().to_string(),
                };
                SourceConfig::Ci(CiSourceConfig {
                    common,
                    provider,
                    host: s.host.clone(),
                    port: s.port,
                    secret_env: s.secret_env.clone(),
                    token_env: s.token_env.clone(),
                    api_url,
                })
            }
            SourceKind::Stdin | SourceKind::Stdout => {
                if sources.iter().any(|o| matches!(o, SourceConfig::Stdin(_))) {
                    return Err(invalid(
                        format!("sources[{i}].type"),
                        None,
                        "there is one standard input: only one stdin source".into(),
                    ));
                }
                SourceConfig::Stdin(StdinSourceConfig {
                    common,
                    deprecated_alias: s.kind == SourceKind::Stdout,
                })
            }
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
    format: RawFormat,
    log_group: String,
    log_groups: Vec<String>,
    log_stream_prefix: Option<String>,
    filter_pattern: String,
    region: String,
    poll_interval: u64,
    endpoint: Option<String>,
    lookback_seconds: Option<u64>,
    max_requests_per_second: Option<f64>,
    profile: Option<String>,
    command: Vec<String>,
    env: std::collections::BTreeMap<String, String>,
    cwd: Option<String>,
    restart: RestartPolicy,
    port: u16,
    host: String,
    error_patterns: Option<Vec<Spanned<String>>>,
    name: Option<Spanned<String>>,
    start_at: Option<StartAt>,
    follow_symlinks: bool,
    token_env: Option<String>,
    hmac_secret_env: Option<String>,
    secret_env: Option<String>,
    api_url: Option<String>,
    url: String,
    stream: String,
    subject_prefix: String,
    partitions: Vec<RawToken>,
    max_age_hours: Option<u64>,
}

impl Default for RawSource {
    fn default() -> Self {
        RawSource {
            kind: SourceKind::File,
            path: String::new(),
            format: RawFormat::Text,
            log_group: String::new(),
            log_groups: Vec::new(),
            log_stream_prefix: None,
            filter_pattern: String::new(),
            region: String::new(),
            poll_interval: 30,
            endpoint: None,
            lookback_seconds: None,
            max_requests_per_second: None,
            profile: None,
            command: Vec::new(),
            env: std::collections::BTreeMap::new(),
            cwd: None,
            restart: RestartPolicy::Always,
            port: 0,
            host: "127.0.0.1".into(),
            error_patterns: None,
            name: None,
            start_at: None,
            follow_symlinks: false,
            token_env: None,
            hmac_secret_env: None,
            secret_env: None,
            api_url: None,
            url: String::new(),
            stream: String::new(),
            subject_prefix: String::new(),
            partitions: Vec::new(),
            max_age_hours: None,
        }
    }
}
