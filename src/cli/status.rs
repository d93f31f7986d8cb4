//! `sentinel status [--json]`: what is configured, and whether each part really answers.
//!
//! First the configuration (as the product promises: "show configuration and integration
//! connectivity"): the sources with their detail, auto-remediation, the model and its
//! budget per fix, the registered components, and the budget used and left per cap (from
//! the store, read-only, so it works beside a daemon). Then the checks:
//!
//! Every check runs at once, each with a [`CHECK_TIMEOUT`]:
//!
//! | check | configured when | how |
//! |---|---|---|
//! | `api` | always | `GET /health` of the running daemon (its `daemon.json`, else `api.listen`); no daemon is `not running`, not a failure |
//! | `llm` | the key variable is set (OpenAI-compatible: always) | Anthropic `GET {base_url}/v1/models` with `x-api-key` and `anthropic-version`; OpenAI-compatible `GET {base_url}/v1/models` with a bearer token; any 2xx is ok, another answer is `failed` |
//! | `arbiter`, `stigmergy`, `chronicler`, `notify` | their URL is set (Chronicler: `chronicler_enabled`; its `/events` URL) | `GET` the URL: any HTTP answer is ok (reachable) |
//! | `ledger` | `ledger.ledger_api` is set | `GET` what Sentinel reads (`<ledger_api>/annotations`, or the `/export/` document named): only a 2xx is ok |
//! | `pact` | `pact.api_endpoint` or `pact.project_dir` | `GET` the endpoint, else `pact --version` on `PATH` |
//! | `cloudwatch` (one per source) | a `type: cloudwatch` source | a signed one-event `FilterLogEvents` on each of its log groups, with the credentials the daemon would use: ok, `unreachable` (network, 5xx), `failed` (access denied, missing group, bad or missing credentials, no region; throttled) |
//!
//! Exit code 1 when a configured integration is unreachable or failed, else 0.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::cli::CliError;
use crate::config::{Config, LlmProvider};

/// The limit of one check.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// `sentinel status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
    /// Read this state directory instead of the configured one (e.g. a `sentinel backup`).
    #[arg(long, value_name = "DIR")]
    state: Option<std::path::PathBuf>,
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckState {
    /// It answered as expected.
    Ok,
    /// No answer (connection refused, timeout, DNS ...).
    Unreachable,
    /// It answered, but not as expected (e.g. the LLM refused the key).
    Failed,
    /// Not configured: not checked.
    NotConfigured,
    /// No daemon runs (the API only).
    NotRunning,
}

impl CheckState {
    fn as_str(self) -> &'static str {
        match self {
            CheckState::Ok => "ok",
            CheckState::Unreachable => "unreachable",
            CheckState::Failed => "failed",
            CheckState::NotConfigured => "not configured",
            CheckState::NotRunning => "not running",
        }
    }

    fn is_failure(self) -> bool {
        matches!(self, CheckState::Unreachable | CheckState::Failed)
    }
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// `api`, `llm`, `arbiter`, ...
    pub name: &'static str,
    /// The outcome.
    pub state: CheckState,
    /// What was checked (a URL or a command), if anything.
    pub target: Option<String>,
    /// How long it took.
    pub latency_ms: Option<u64>,
    /// Why it is not ok.
    pub error: Option<String>,
}

impl Check {
    fn not_configured(name: &'static str, why: &str) -> Check {
        Check {
            name,
            state: CheckState::NotConfigured,
            target: None,
            latency_ms: None,
            error: (!why.is_empty()).then(|| why.to_string()),
        }
    }
}

/// What to ask for an HTTP check.
struct Probe {
    name: &'static str,
    url: String,
    headers: Vec<(&'static str, String)>,
    /// Only a 2xx answer is ok (else any answer is).
    need_success: bool,
}

/// Runs `sentinel status`.
///
/// # Errors
///
/// Writing to stdout failed.
pub fn run(config: &Config, args: StatusArgs) -> Result<u8, CliError> {
    let config = &super::with_state(config, args.state.as_deref());
    let storage = super::backup::storage_facts(config);
    let checks = run_checks(config, |v| std::env::var(v).ok());
    let failed = checks.iter().any(|c| c.state.is_failure());
    let daemon = crate::daemon::read_daemon_file(&config.state_dir);
    let settings = Settings::of(config);
    let mut out = std::io::stdout().lock();
    if args.json {
        let doc = serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "config": config.path.as_ref().map(|p| p.display().to_string()),
            "state_dir": config.state_dir.display().to_string(),
            "daemon_pid": daemon.as_ref().map(|d| d.pid),
            "settings": settings,
            "ok": !failed,
            "checks": checks,
            "storage": storage,
        });
        writeln!(out, "{doc:#}").context("stdout")?;
    } else {
        writeln!(out, "sentinel {}", env!("CARGO_PKG_VERSION")).context("stdout")?;
        if let Some(p) = &config.path {
            writeln!(out, "config     {}", p.display()).context("stdout")?;
        }
        writeln!(out, "state_dir  {}", config.state_dir.display()).context("stdout")?;
        match &daemon {
            Some(d) => writeln!(out, "daemon     pid {}", d.pid),
            None => writeln!(out, "daemon     not running"),
        }
        .context("stdout")?;
        super::backup::write_storage(&mut out, &storage).context("stdout")?;
        writeln!(out).context("stdout")?;
        settings.write(&mut out).context("stdout")?;
        writeln!(out).context("stdout")?;
        for c in &checks {
            let latency = c.latency_ms.map_or(String::new(), |ms| format!("{ms} ms"));
            let detail = match (&c.error, &c.target) {
                (Some(e), Some(t)) => format!("{t}: {e}"),
                (Some(e), None) => e.clone(),
                (None, Some(t)) => t.clone(),
                (None, None) => String::new(),
            };
            let line = format!(
                "{:<11}{:<15}{:>8}  {}",
                c.name,
                c.state.as_str(),
                latency,
                detail
            );
            writeln!(out, "{}", line.trim_end()).context("stdout")?;
        }
    }
    Ok(u8::from(failed))
}

/// The configuration as `status` shows it.
#[derive(Debug, Serialize)]
struct Settings {
    sources: Vec<SourceLine>,
    auto_remediate: bool,
    require_approval: bool,
    /// The daemon's triage of unkeyed incidents: on, and its hourly limit.
    triage: bool,
    triage_max_per_hour: u64,
    provider: &'static str,
    model: String,
    budget_per_fix_usd: f64,
    per_incident_cap_usd: f64,
    /// Spend per window cap (None when the store cannot be read).
    budget: Option<Vec<crate::fix::budget::WindowSpend>>,
    /// Registered component ids (None when the manifest cannot be read).
    components: Option<Vec<String>>,
}

#[derive(Debug, Serialize)]
struct SourceLine {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    detail: String,
}

impl Settings {
    fn of(config: &Config) -> Settings {
        let sources = config
            .sources
            .iter()
            .map(|s| SourceLine {
                name: s.name().to_string(),
                kind: kind_name(s).to_string(),
                detail: describe(s),
            })
            .collect();
        let budget = crate::store::Store::open_read_only(&config.db_path())
            .ok()
            .map(|store| match store {
                Some(store) => {
                    crate::fix::budget::window_spend(&store, &config.budget, jiff::Timestamp::now())
                        .ok()
                }
                None => crate::fix::budget::window_spend_of_nothing(&config.budget),
            })
            .unwrap_or(None);
        let components = crate::attribute::Manifest::load(&config.manifest_path())
            .ok()
            .map(|m| m.components.keys().cloned().collect());
        Settings {
            sources,
            auto_remediate: config.auto_remediate,
            require_approval: config.fix.require_approval,
            triage: config.triage.enabled,
            triage_max_per_hour: config.triage.max_per_hour,
            provider: config.llm.provider.as_str(),
            model: config.llm.model.clone(),
            budget_per_fix_usd: config.llm.budget_per_fix,
            per_incident_cap_usd: config.budget.per_incident_cap,
            budget,
            components,
        }
    }

    fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(out, "sources")?;
        if self.sources.is_empty() {
            writeln!(out, "  (none)")?;
        }
        for s in &self.sources {
            writeln!(out, "  {:<16} {:<10} {}", s.name, s.kind, s.detail)?;
        }
        let on = |b: bool| if b { "on" } else { "off" };
        writeln!(
            out,
            "auto-fix   {}{}",
            on(self.auto_remediate),
            if self.require_approval {
                " (fixes wait for approval)"
            } else {
                ""
            }
        )?;
        writeln!(
            out,
            "triage     {}",
            if self.triage {
                format!(
                    "on for errors without a PACT key (at most {} an hour, with the LLM's key set)",
                    self.triage_max_per_hour
                )
            } else {
                "off".to_string()
            }
        )?;
        writeln!(
            out,
            "model      {} {} (${:.2} per fix, ${:.2} per incident)",
            self.provider, self.model, self.budget_per_fix_usd, self.per_incident_cap_usd
        )?;
        match &self.components {
            Some(c) if c.is_empty() => writeln!(out, "components none registered")?,
            Some(c) => writeln!(out, "components {} registered: {}", c.len(), c.join(", "))?,
            None => writeln!(out, "components the manifest cannot be read")?,
        }
        match &self.budget {
            Some(windows) => {
                writeln!(out, "budget     used / cap (left)")?;
                for w in windows {
                    writeln!(
                        out,
                        "  {:<9} ${:.2} / ${:.2} (${:.2})",
                        w.name,
                        w.spent_usd,
                        w.cap_usd,
                        (w.cap_usd - w.spent_usd).max(0.0)
                    )?;
                }
            }
            None => writeln!(out, "budget     the store cannot be read")?,
        }
        Ok(())
    }
}

fn kind_name(s: &crate::config::SourceConfig) -> &'static str {
    use crate::config::SourceConfig as S;
    match s {
        S::File(_) => "file",
        S::Webhook(_) => "webhook",
        S::Cloudwatch(_) => "cloudwatch",
        S::Process(_) => "process",
        S::Stdin(_) => "stdin",
        S::Nats(_) => "nats",
        S::Ci(c) => c.provider.as_str(),
    }
}

/// A source's detail: what it reads or where it listens.
fn describe(s: &crate::config::SourceConfig) -> String {
    use crate::config::SourceConfig as S;
    match s {
        S::File(f) => f.path.clone(),
        S::Webhook(w) => {
            let auth = match (&w.token_env, &w.hmac_secret_env) {
                (Some(_), Some(_)) => ", token + HMAC",
                (Some(_), None) => ", token",
                (None, Some(_)) => ", HMAC",
                (None, None) => "",
            };
            format!("http://{}:{}{auth}", w.host, w.port)
        }
        S::Cloudwatch(c) => format!("{} in {}", c.log_groups.join(", "), c.region),
        S::Process(p) => p.command.join(" "),
        S::Stdin(_) => "standard input".into(),
        S::Ci(c) => format!(
            "http://{}:{}{} (logs from {})",
            c.host,
            c.port,
            if c.secret_env.is_some() {
                ", signed"
            } else {
                ""
            },
            c.api_url
        ),
        S::Nats(n) => format!(
            "{} stream {} ({}.*, partitions {})",
            n.url,
            n.stream,
            n.subject_prefix,
            n.partitions.join(",")
        ),
    }
}

/// Runs every check at once; the order of the answer is fixed.
pub fn run_checks(config: &Config, env: impl Fn(&str) -> Option<String>) -> Vec<Check> {
    let mut slots: Vec<Slot> = Vec::new();
    // The API of a running daemon.
    let daemon = crate::daemon::read_daemon_file(&config.state_dir);
    let api_addr = daemon
        .as_ref()
        .and_then(|d| d.api.clone())
        .unwrap_or_else(|| config.api.listen.to_string());
    slots.push(Slot::Http {
        probe: Probe {
            name: "api",
            url: format!("http://{api_addr}/health"),
            headers: Vec::new(),
            need_success: true,
        },
        when_down: if daemon.is_some() {
            CheckState::Unreachable
        } else {
            CheckState::NotRunning
        },
    });
    // The LLM.
    let llm = &config.llm;
    let key = env(&llm.api_key_env).filter(|k| !k.trim().is_empty());
    let base = llm.base_url.trim_end_matches('/');
    match (llm.provider, key) {
        (LlmProvider::OpenAi, key) => slots.push(Slot::http(Probe {
            name: "llm",
            url: format!("{base}/v1/models"),
            headers: key
                .map(|k| vec![("authorization", format!("Bearer {}", k.trim()))])
                .unwrap_or_default(),
            need_success: true,
        })),
        (_, Some(key)) => slots.push(Slot::http(Probe {
            name: "llm",
            url: format!("{base}/v1/models"),
            headers: vec![
                ("x-api-key", key.trim().to_string()),
                ("anthropic-version", "2023-06-01".into()),
            ],
            need_success: true,
        })),
        (_, None) => slots.push(Slot::Done(Check::not_configured(
            "llm",
            &format!("no API key in ${} (llm.api_key_env)", llm.api_key_env),
        ))),
    }
    // The integrations: reachable = any HTTP answer.
    let reach = |name: &'static str, url: Option<&str>| match url.filter(|u| !u.trim().is_empty()) {
        Some(u) => Slot::http(Probe {
            name,
            url: u.trim().to_string(),
            headers: Vec::new(),
            need_success: false,
        }),
        None => Slot::Done(Check::not_configured(name, "")),
    };
    slots.push(reach("arbiter", config.arbiter.api_endpoint.as_deref()));
    slots.push(reach("stigmergy", config.stigmergy.endpoint.as_deref()));
    slots.push(
        match config
            .ledger
            .ledger_api
            .as_deref()
            .filter(|u| !u.trim().is_empty())
        {
            Some(api) => Slot::http(Probe {
                name: "ledger",
                url: crate::attribute::ledger::LedgerUrl::of(api)
                    .as_str()
                    .to_string(),
                headers: Vec::new(),
                need_success: true,
            }),
            None => Slot::Done(Check::not_configured("ledger", "")),
        },
    );
    let chronicler = config.chronicler.events_url();
    slots.push(reach(
        "chronicler",
        (config.chronicler.chronicler_enabled
            && !config.chronicler.chronicler_endpoint.trim().is_empty())
        .then_some(chronicler.as_str()),
    ));
    slots.push(reach("notify", config.notify.webhook_url.as_deref()));
    slots.push(
        match (&config.pact.api_endpoint, &config.pact.project_dir) {
            (Some(u), _) => reach("pact", Some(u)),
            (None, Some(_)) => Slot::PactCli,
            (None, None) => Slot::Done(Check::not_configured("pact", "")),
        },
    );

    for src in &config.sources {
        if let crate::config::SourceConfig::Cloudwatch(cw) = src {
            slots.push(Slot::Cloudwatch(Box::new(cw.clone())));
        }
    }

    let client = reqwest::blocking::Client::builder()
        .timeout(CHECK_TIMEOUT)
        .connect_timeout(CHECK_TIMEOUT)
        .user_agent(concat!("sentinel/", env!("CARGO_PKG_VERSION")))
        .build();
    std::thread::scope(|scope| {
        let handles: Vec<_> = slots
            .into_iter()
            .map(|slot| {
                let client = client.as_ref().ok();
                scope.spawn(move || slot.run(client))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| Check {
                    name: "?",
                    state: CheckState::Failed,
                    target: None,
                    latency_ms: None,
                    error: Some("the check panicked".into()),
                })
            })
            .collect()
    })
}

enum Slot {
    Http { probe: Probe, when_down: CheckState },
    PactCli,
    Cloudwatch(Box<crate::config::CloudwatchSourceConfig>),
    Done(Check),
}

impl Slot {
    fn http(probe: Probe) -> Slot {
        Slot::Http {
            probe,
            when_down: CheckState::Unreachable,
        }
    }

    fn run(self, client: Option<&reqwest::blocking::Client>) -> Check {
        match self {
            Slot::Done(c) => c,
            Slot::PactCli => pact_cli(),
            Slot::Cloudwatch(src) => cloudwatch(&src),
            Slot::Http { probe, when_down } => {
                let Some(client) = client else {
                    return Check {
                        name: probe.name,
                        state: CheckState::Failed,
                        target: Some(probe.url),
                        latency_ms: None,
                        error: Some("cannot build an HTTP client".into()),
                    };
                };
                http_check(client, probe, when_down)
            }
        }
    }
}

fn http_check(client: &reqwest::blocking::Client, p: Probe, when_down: CheckState) -> Check {
    let start = Instant::now();
    let mut req = client.get(&p.url);
    for (k, v) in &p.headers {
        req = req.header(*k, v);
    }
    let result = req.send();
    let ms = start.elapsed().as_millis() as u64;
    let (state, error) = match result {
        Ok(r) if !p.need_success || r.status().is_success() => (CheckState::Ok, None),
        Ok(r) => {
            let code = r.status().as_u16();
            // A degraded daemon's /health names the reason (`{"status": "degraded", ...}`).
            let why = r
                .json::<serde_json::Value>()
                .ok()
                .filter(|v| v["status"] == "degraded")
                .map(|v| {
                    format!(
                        "degraded since {}: {}",
                        v["since"].as_str().unwrap_or("?"),
                        v["reason"].as_str().unwrap_or("?")
                    )
                });
            (
                CheckState::Failed,
                Some(why.unwrap_or_else(|| format!("answered HTTP {code}"))),
            )
        }
        Err(e) => (when_down, Some(reqwest_error(&e))),
    };
    Check {
        name: p.name,
        state,
        target: Some(p.url),
        latency_ms: Some(ms),
        error,
    }
}

/// A short reason without the URL (it is printed next to it) or secrets.
fn reqwest_error(e: &reqwest::Error) -> String {
    let mut msg = if e.is_timeout() {
        format!("timed out after {} s", CHECK_TIMEOUT.as_secs())
    } else if e.is_connect() {
        "connection failed".to_string()
    } else if e.is_builder() {
        "not a valid URL".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    let mut last = None;
    while let Some(s) = source {
        last = Some(s.to_string());
        source = s.source();
    }
    if let Some(l) = last {
        msg.push_str(": ");
        msg.push_str(&l);
    }
    msg
}

/// A signed one-event `FilterLogEvents` on each log group of the source.
fn cloudwatch(src: &crate::config::CloudwatchSourceConfig) -> Check {
    use crate::source::cloudwatch::{ApiError, probe};
    let start = Instant::now();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ApiError::Denied(format!("cannot start a runtime: {e}")))
        .and_then(|rt| rt.block_on(probe(src, CHECK_TIMEOUT)));
    let ms = start.elapsed().as_millis() as u64;
    let name = &src.common.name;
    let (state, target, error) = match result {
        Ok(endpoint) => (CheckState::Ok, format!("{name}: {endpoint}"), None),
        Err(ApiError::Transient(m)) => (CheckState::Unreachable, name.clone(), Some(m)),
        Err(e) => (
            CheckState::Failed,
            name.clone(),
            Some(e.message().to_string()),
        ),
    };
    Check {
        name: "cloudwatch",
        state,
        target: Some(target),
        latency_ms: Some(ms),
        error,
    }
}

fn pact_cli() -> Check {
    let start = Instant::now();
    let out = std::process::Command::new("pact")
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output();
    let ms = start.elapsed().as_millis() as u64;
    let (state, error) = match out {
        Ok(o) if o.status.success() => (CheckState::Ok, None),
        Ok(o) => (
            CheckState::Failed,
            Some(format!("`pact --version` exited with {}", o.status)),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (
            CheckState::Unreachable,
            Some("`pact` is not on PATH".into()),
        ),
        Err(e) => (
            CheckState::Unreachable,
            Some(format!("cannot run pact: {e}")),
        ),
    };
    Check {
        name: "pact",
        state,
        target: Some("pact --version".into()),
        latency_ms: Some(ms),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_server_is_ok_and_a_closed_port_is_named() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let up = listener.local_addr().unwrap();
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        // A minimal HTTP server: answers 404 to whatever comes.
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            for s in listener.incoming().flatten() {
                let mut s = s;
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf);
                let _ = s.write_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::defaults(dir.path(), None);
        config.arbiter.api_endpoint = Some(format!("http://{up}/"));
        config.stigmergy.endpoint = Some(format!("http://{closed}/"));
        config.llm.provider = LlmProvider::OpenAi;
        config.llm.base_url = format!("http://{up}");
        let checks = run_checks(&config, |_| None);
        let by = |n: &str| checks.iter().find(|c| c.name == n).unwrap().clone();
        assert_eq!(by("arbiter").state, CheckState::Ok, "{checks:?}");
        assert_eq!(by("stigmergy").state, CheckState::Unreachable);
        assert!(by("stigmergy").error.unwrap().contains("connection failed"));
        assert_eq!(
            by("llm").state,
            CheckState::Failed,
            "a 404 is not a model list"
        );
        assert_eq!(by("ledger").state, CheckState::NotConfigured);
        assert_eq!(by("api").state, CheckState::NotRunning);
    }
}
