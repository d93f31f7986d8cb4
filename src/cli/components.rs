//! `sentinel init`, `sentinel register DIR`, `sentinel manifest show|add` (SPEC §3, §10).
//!
//! Output follows the reference; `--json` prints one JSON document for scripts. Unlike the
//! reference, `init` never wipes an existing manifest, `register` stores absolute canonical
//! paths and checks each contract, and every manifest write is atomic and locked.

use crate::attribute::register::LANGUAGES;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::CliError;
use crate::attribute::manifest::valid_component_id;
use crate::attribute::register::{RegisterError, register_project};
use crate::attribute::{Manifest, ManifestEntry};
use crate::config::{CONFIG_FILE_NAME, Config, ConfigSearch};

/// `sentinel init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Rewrite `sentinel.yaml` with the commented defaults even if it exists (the manifest
    /// and the store are never touched).
    #[arg(long)]
    force: bool,
}

/// `sentinel register`.
#[derive(Debug, clap::Args)]
pub struct RegisterArgs {
    /// The Pact project directory (holding `contracts/<component_id>/interface.json`).
    directory: PathBuf,
    /// Remove components registered from this project that it no longer has.
    #[arg(long)]
    prune: bool,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
}

/// `sentinel manifest`.
#[derive(Debug, clap::Args)]
pub struct ManifestArgs {
    #[command(subcommand)]
    command: ManifestCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ManifestCommand {
    /// List the registered components.
    Show {
        /// Print the manifest as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Register one component by hand.
    Add(AddArgs),
    /// Unregister a component (its incidents stay; new lines with its key count as
    /// unregistered). A running daemon follows the manifest and reloads it.
    Remove {
        /// The component id.
        component_id: String,
    },
}

#[derive(Debug, clap::Args)]
struct AddArgs {
    /// The component id (letters, digits and _).
    component_id: String,
    /// Its contract (`interface.json`).
    #[arg(long, default_value = "")]
    contract: String,
    /// Its tests directory.
    #[arg(long, default_value = "")]
    tests: String,
    /// Its source directory.
    #[arg(long, default_value = "")]
    source: String,
    /// Its language (python, typescript, javascript, rust, go).
    #[arg(long, default_value = "python")]
    language: String,
    /// The Pact project it belongs to.
    #[arg(long, default_value = "")]
    project: String,
    /// Accept paths that do not exist (yet).
    #[arg(long)]
    allow_missing: bool,
}

pub(crate) fn run_init(search: &ConfigSearch, args: InitArgs) -> Result<u8, CliError> {
    let yaml = search
        .explicit
        .clone()
        .unwrap_or_else(|| search.cwd.join(CONFIG_FILE_NAME));
    let mut out = std::io::stdout().lock();
    let existed = yaml.exists();
    if !existed || args.force {
        write_atomically(&yaml, CONFIG_TEMPLATE.as_bytes())
            .with_context(|| format!("cannot write {}", yaml.display()))?;
        let verb = if existed { "Rewrote" } else { "Created" };
        writeln!(out, "{verb} {}", display_rel(&yaml, &search.cwd)).context("stdout")?;
    }
    let config = Config::load(&ConfigSearch {
        explicit: Some(yaml),
        ..search.clone()
    })?;
    config.state().create()?;
    let manifest = config.manifest_path();
    if !manifest.exists() {
        Manifest::default()
            .save(&manifest)
            .context("writing the manifest")?;
    } else {
        // Never wiped; but say so if it is broken, rather than leave it to the next command.
        Manifest::load(&manifest)?;
    }
    let proposed = config.state().proposed_contracts();
    std::fs::create_dir_all(&proposed)
        .with_context(|| format!("cannot create {}", proposed.display()))?;
    writeln!(
        out,
        "Initialized {}/",
        display_rel(&config.state_dir, &search.cwd)
    )
    .context("stdout")?;
    Ok(0)
}

pub(crate) fn run_register(config: &Config, args: RegisterArgs) -> Result<u8, CliError> {
    if !args.directory.is_dir() {
        return Err(CliError::Usage(format!(
            "register: directory {} does not exist",
            args.directory.display()
        )));
    }
    config.state().create()?;
    let now = jiff::Timestamp::now().to_string();
    let outcome = match register_project(&config.manifest_path(), &args.directory, args.prune, &now)
    {
        Ok(o) => o,
        Err(RegisterError::NoDir(d)) => {
            return Err(CliError::Usage(format!(
                "register: directory {} does not exist",
                d.display()
            )));
        }
        Err(e) => return Err(CliError::Other(e.into())),
    };
    if !outcome.registered.is_empty() {
        reattribute(config);
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &outcome).context("writing JSON")?;
        writeln!(out).context("stdout")?;
        return Ok(0);
    }
    let mut err = std::io::stderr().lock();
    for s in &outcome.skipped {
        writeln!(err, "  Skipped: {}: {}", s.component_id, s.reason).context("stderr")?;
    }
    if outcome.registered.is_empty() && outcome.pruned.is_empty() {
        writeln!(out, "No components found in {}", args.directory.display()).context("stdout")?;
    } else {
        for id in &outcome.registered {
            writeln!(out, "  Registered: {id}").context("stdout")?;
        }
        for id in &outcome.pruned {
            writeln!(out, "  Pruned: {id}").context("stdout")?;
        }
        writeln!(out).context("stdout")?;
        writeln!(
            out,
            "Registered {} components from {}",
            outcome.registered.len(),
            outcome.project.display()
        )
        .context("stdout")?;
    }
    if !outcome.missing.is_empty() && outcome.pruned.is_empty() {
        writeln!(
            err,
            "Note: {} registered from this project no longer exist in it: {} (--prune removes them)",
            plural(outcome.missing.len(), "component"),
            outcome.missing.join(", ")
        )
        .context("stderr")?;
    }
    Ok(0)
}

pub(crate) fn run_manifest(config: &Config, args: ManifestArgs) -> Result<u8, CliError> {
    match args.command {
        ManifestCommand::Show { json } => show(config, json),
        ManifestCommand::Add(a) => add(config, a),
        ManifestCommand::Remove { component_id } => remove(config, &component_id),
    }
}

fn remove(config: &Config, component_id: &str) -> Result<u8, CliError> {
    let path = config.manifest_path();
    if !path.exists() {
        return Err(CliError::Other(anyhow::anyhow!(
            "{component_id} is not registered (no manifest at {})",
            path.display()
        )));
    }
    // Not registered: the closure's Err leaves the file untouched.
    let removed = Manifest::update(&path, |m| m.remove(component_id).map(|_| ()).ok_or(()))?;
    if removed.is_err() {
        return Err(CliError::Other(anyhow::anyhow!(
            "{component_id} is not registered"
        )));
    }
    writeln!(std::io::stdout().lock(), "Removed {component_id}").context("stdout")?;
    Ok(0)
}

fn show(config: &Config, json: bool) -> Result<u8, CliError> {
    let manifest = Manifest::load(&config.manifest_path())?;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &manifest).context("writing JSON")?;
        writeln!(out).context("stdout")?;
        return Ok(0);
    }
    if manifest.is_empty() {
        writeln!(
            out,
            "No components registered. Use 'sentinel register <dir>' to add components."
        )
        .context("stdout")?;
        return Ok(0);
    }
    for (id, e) in &manifest.components {
        writeln!(out, "  {id}").context("stdout")?;
        writeln!(out, "    contract: {}", e.contract_path).context("stdout")?;
        writeln!(out, "    tests:    {}", e.test_path).context("stdout")?;
        writeln!(out, "    source:   {}", e.source_path).context("stdout")?;
        writeln!(out, "    language: {}", e.language).context("stdout")?;
        writeln!(out, "    project:  {}", e.pact_project).context("stdout")?;
        writeln!(out).context("stdout")?;
    }
    Ok(0)
}

fn add(config: &Config, a: AddArgs) -> Result<u8, CliError> {
    if !valid_component_id(&a.component_id) {
        return Err(CliError::Usage(format!(
            "manifest add: {:?} is not a valid component id (letters, digits and _ only)",
            a.component_id
        )));
    }
    let language = a.language.to_ascii_lowercase();
    if !LANGUAGES.contains(&language.as_str()) {
        return Err(CliError::Usage(format!(
            "manifest add: unknown --language {:?} (expected one of {})",
            a.language,
            LANGUAGES.join(", ")
        )));
    }
    let path = |flag: &str, raw: &str| -> Result<String, CliError> {
        if raw.is_empty() {
            return Ok(String::new());
        }
        match std::fs::canonicalize(raw) {
            Ok(p) => Ok(p.to_string_lossy().into_owned()),
            Err(_) if a.allow_missing => Ok(std::path::absolute(raw)
                .unwrap_or_else(|_| PathBuf::from(raw))
                .to_string_lossy()
                .into_owned()),
            Err(e) => Err(CliError::Usage(format!(
                "manifest add: --{flag} {raw}: {e} (--allow-missing accepts it anyway)"
            ))),
        }
    };
    let mut entry = ManifestEntry::new(&a.component_id);
    entry.contract_path = path("contract", &a.contract)?;
    entry.test_path = path("tests", &a.tests)?;
    entry.source_path = path("source", &a.source)?;
    entry.pact_project = path("project", &a.project)?;
    entry.language = language;
    entry.last_registered = jiff::Timestamp::now().to_string();
    config.state().create()?;
    Manifest::update(&config.manifest_path(), |m| {
        m.insert(entry);
        Ok::<_, std::convert::Infallible>(())
    })?
    .unwrap_or_else(|never| match never {});
    writeln!(std::io::stdout().lock(), "Registered {}", a.component_id).context("stdout")?;
    Ok(0)
}

/// Stored incidents of newly registered components become registered. A running daemon
/// owns the store and does this itself when it reloads the manifest.
fn reattribute(config: &Config) {
    use crate::store::{Store, StoreError};
    let db = config.db_path();
    if !db.exists() {
        return;
    }
    let result = (|| {
        let manifest = Manifest::load(&config.manifest_path()).map_err(anyhow::Error::from)?;
        let store = Store::open(&db)?;
        let mut txn = store.begin_write()?;
        let n = txn.reattribute(&manifest)?;
        txn.commit()?;
        Ok::<_, anyhow::Error>(n)
    })();
    match result {
        Ok(0) => {}
        Ok(n) => tracing::info!(incidents = n, "re-attributed to the registered components"),
        Err(e)
            if matches!(
                e.downcast_ref::<StoreError>(),
                Some(StoreError::InUse { .. })
            ) => {}
        Err(e) => tracing::warn!("could not re-attribute stored incidents: {e:#}"),
    }
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// `path` relative to `cwd` when it is under it (for messages).
fn display_rel(path: &Path, cwd: &Path) -> String {
    let cwd = std::fs::canonicalize(cwd).unwrap_or_else(|_| cwd.to_path_buf());
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    match abs.strip_prefix(&cwd) {
        Ok(rel) if !rel.as_os_str().is_empty() => rel.display().to_string(),
        _ => path.display().to_string(),
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(".sentinel.yaml.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The `sentinel.yaml` that `init` writes: every key with its default and what it does.
pub const CONFIG_TEMPLATE: &str = r#"# sentinel.yaml: Sentinel's configuration. Every key is shown with its default; delete
# what you do not change. Relative paths are relative to this file's directory.
version: "1.0"

# Where the store (sentinel.redb), manifest.json and proposed contracts live (mode 0700).
state_dir: .sentinel

# Log sources. Nothing is watched until you add one. Examples:
#   - type: file                 # files matched by a glob (** allowed), tailed across rotation
#     path: /var/log/app/**/*.log
#     format: text               # text | jsonl | auto (JSON lines: the pact_key field is the key)
#     start_at: beginning        # beginning | end, for files present at the very first start
#     follow_symlinks: false     # symlinked files are skipped unless true
#     name: app-logs             # label in metrics and incidents (default: the path)
#   - type: webhook              # POSTed events: JSON, JSON arrays, NDJSON, text; gzip ok
#     port: 9000
#     host: 127.0.0.1
#     token_env: SENTINEL_WEBHOOK_TOKEN      # optional bearer token, read from this variable
#     hmac_secret_env: SENTINEL_HMAC_SECRET  # optional HMAC-SHA256 signature secret
#     error_patterns: [ERROR]    # omit: every posted event is an error
#   - type: github               # failed CI jobs (workflow_job, workflow_run, check_run); or
#     port: 9100                 # type: gitlab (Job and Pipeline Hooks)
#     secret_env: GITHUB_WEBHOOK_SECRET      # X-Hub-Signature-256 (GitLab: X-Gitlab-Token)
#     token_env: GITHUB_TOKEN    # reads the failed jobs' logs
#     # api_url: https://api.github.com      # gitlab: https://gitlab.com/api/v4
sources: []

# A line is an error line when one of these regexes matches anywhere in it (case-sensitive
# unless the pattern starts with (?i)). The default list is shown.
error_patterns:
  - ERROR
  - CRITICAL
  - FATAL
  - Traceback
  - panicked at
  - '(?i)"level":"error"'
  - '(?i)"level":"fatal"'
  - '(?i)"level":"critical"'
  - '(?i)"level": "error"'
  - '(?i)"level": "fatal"'
  - '(?i)"level": "critical"'

# The PACT key format Pact emits: PACT:<component_id>:<method_name>.
pact_key_pattern: PACT:[a-zA-Z0-9_]+:[a-zA-Z0-9_]+

# Lines longer than this many bytes are counted and skipped.
max_line_bytes: 1048576

# Threads tailing files (default: the number of CPUs).
# shards: 4

# How error lines become incidents. Past `max_new_incidents_per_key` new incidents of one
# key within `window_seconds`, its new fingerprints fold into one overflow incident (exact
# counts, flagged high-cardinality). `rules` rewrite lines before the built-in
# normalisation, in order (a regex and its replacement, `$1` for groups):
#   rules:
#     - pattern: 'user [a-z]+'
#       replace: 'user <user>'
grouping:
  max_new_incidents_per_key: 10000
  window_seconds: 3600
  rules: []

# An incident becomes actionable after `count` occurrences within `window_seconds`.
error_threshold:
  count: 1
  window_seconds: 300

# Fix actionable incidents of registered components automatically.
auto_remediate: false

# The LLM the fixer and triage use.
llm:
  provider: anthropic               # anthropic | openai (also OpenAI-compatible servers:
                                    # Ollama, vLLM, llama.cpp's llama-server, ...)
  model: claude-sonnet-4-20250514
  max_tokens: 8192                  # output tokens per call
  budget_per_fix: 2.0               # USD; checked before every call
  # base_url: https://api.anthropic.com   # default by provider (openai: https://api.openai.com;
                                          # Ollama: http://localhost:11434)
  # api_key_env: ANTHROPIC_API_KEY        # the variable holding the key (openai: OPENAI_API_KEY;
                                          # optional for local OpenAI-compatible servers)
  timeout_seconds: 120              # per HTTP request
  max_retries: 3                    # on 429, 529, 5xx, timeouts, connection errors
  price_input_per_mtok: 3.0         # USD per million tokens (0 for local models)
  price_output_per_mtok: 15.0
  max_concurrent_fixes: 2

# The daemon asks the LLM which component an error without a PACT key belongs to (once per
# distinct incident, within the budget; only when the LLM's key is set).
triage:
  enabled: true
  max_per_hour: 30

# What the store forgets, and when it is compacted (`sentinel gc` applies it by hand).
retention:
  incidents_days: 90                # resolved/escalated incidents not seen for this long (0: keep)
  fixes_days: 90                    # ended fixes and their reports
  events_days: 30                   # the event log by age (also capped at 100,000 events)
  interval_seconds: 3600            # how often the daemon applies it
  rows_per_transaction: 500         # small transactions: ingest never waits long
  compact_free_percent: 25          # compact when this share of the file is free
  # compact_window: "02:00-05:00"   # UTC; the daemon compacts only inside it, when idle
  compact_idle_seconds: 60

# Spending caps in USD over the durable spend log.
budget:
  per_incident_cap: 5.0
  hourly_cap: 10.0
  daily_cap: 25.0
  weekly_cap: 100.0
  monthly_cap: 300.0

# The HTTP API of `sentinel watch` / `sentinel serve`.
api:
  listen: 127.0.0.1:8484            # host:port; port 0 picks a free port
  register_roots: []                # directories POST /register may read besides pact.project_dir
  read_token_env: null              # variable holding the bearer token for GETs
  write_token_env: null             # variable holding the bearer token for POSTs
  allowed_hosts: []                 # Host names accepted besides loopback (DNS rebinding)

# The Pact project: where contracts are pushed back to.
pact:
  project_dir: null
  api_endpoint: null
  test_command: null                # default by language, e.g. python3 -m unittest discover

# What the fixer does with a fix the project's tests proved.
fix:
  merge: false                      # fast-forward your branch when its working tree is clean
  require_approval: false           # wait for POST /fixes/{id}/approve first
  max_attempts: 2
  test_timeout_seconds: 300
  # pull_request:                   # push a proven fix's branch, open a pull request
  #   provider: github              # github | gitlab
  #   repo: acme/app
  #   base: main
  #   token_env: GITHUB_TOKEN
  #   labels: [sentinel]
  #   max_open: 5

# Escalated incidents filed as issues (one per incident, closed when it is resolved).
# issues:
#   provider: github
#   repo: acme/app
#   token_env: GITHUB_TOKEN
#   labels: [sentinel]
#   max_per_hour: 10

# Trust events after fixes (Arbiter).
arbiter:
  api_endpoint: null
  trust_event_on_fix: true

# Signals (Stigmergy).
stigmergy:
  endpoint: null

# Incident lifecycle events (Chronicler's webhook receiver, POST .../events). Chronicler's
# own keys `enabled` / `endpoint` are accepted too; its receiver listens on :8080 by default.
chronicler:
  chronicler_enabled: false
  chronicler_endpoint: http://localhost:8485

# A webhook told about new errors, fixes and contract pushes.
notify:
  webhook_url: null
  on_error: true
  on_fix: true
  on_contract_push: true

# Severity overrides from Ledger: its annotations (GET <ledger_api>/annotations) mapped to
# severities, and/or a file (the reference's shape or `ledger export --format sentinel`);
# read again every refresh_seconds, the last good mapping kept while Ledger is down.
ledger:
  ledger_api: null
  mappings_file: null
  refresh_seconds: 300
  annotation_severity: {}           # added to / replacing Ledger's own table:
  #   immutable: critical, encrypted_at_rest: critical, gdpr_erasable: high,
  #   audit_field: high, pii_field: high, soft_delete_marker: medium, not_null: low,
  #   primary_key: low (Ledger's info)
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_parses_to_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sentinel.yaml");
        let c = Config::from_yaml(CONFIG_TEMPLATE, &path, None).unwrap();
        let d = Config::defaults(dir.path(), None);
        assert_eq!(c.error_patterns, d.error_patterns);
        assert_eq!(format!("{:?}", c.llm), format!("{:?}", d.llm));
        assert_eq!(format!("{:?}", c.budget), format!("{:?}", d.budget));
        assert_eq!(format!("{:?}", c.notify), format!("{:?}", d.notify));
        assert_eq!(format!("{:?}", c.chronicler), format!("{:?}", d.chronicler));
        assert_eq!(format!("{:?}", c.ledger), format!("{:?}", d.ledger));
        assert_eq!(c.api.listen, d.api.listen);
        assert_eq!(c.max_line_bytes, d.max_line_bytes);
        assert_eq!(c.pact_key_pattern, d.pact_key_pattern);
        assert!(c.sources.is_empty() && !c.auto_remediate);
        assert_eq!(c.state_dir, d.state_dir);
        assert_eq!(format!("{:?}", c.retention), format!("{:?}", d.retention));
        assert_eq!(c.triage, d.triage);
    }
}
