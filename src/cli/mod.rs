//! The command line: clap definitions and the glue from commands to library calls.
//!
//! Human output goes to stdout, diagnostics to stderr; `--json` prints exactly one JSON
//! document on stdout. Exit codes: 0 success, 1 runtime failure, 2 usage or configuration
//! error (clap's own errors exit 2 as well).

#[cfg(feature = "daemon")]
pub mod client;
pub mod components;
#[cfg(all(unix, feature = "daemon"))]
pub mod fix;
#[cfg(all(unix, feature = "daemon"))]
pub mod fixes;
#[cfg(feature = "daemon")]
pub mod import;
pub mod incident;
pub mod report;
pub mod scan;
#[cfg(feature = "daemon")]
pub mod status;
pub mod triage;
#[cfg(feature = "daemon")]
pub mod watch;

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError, ConfigSearch};

/// `sentinel --version`: the crate's version and the commit it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("SENTINEL_GIT_COMMIT"),
    ")"
);

/// Sentinel: production log ingestion and attribution for Pact projects.
#[derive(Debug, Parser)]
#[command(name = "sentinel", version = VERSION, about, propagate_version = true)]
pub struct Cli {
    /// The config file (default: ./sentinel.yaml, then ~/.sentinel/sentinel.yaml).
    #[arg(short, long, global = true, env = crate::config::CONFIG_ENV, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// How diagnostics are written to stderr (`RUST_LOG` sets the level).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The format of diagnostics on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum Command {
    /// Create the state directory, an empty manifest and a commented sentinel.yaml (an
    /// existing manifest is never touched).
    Init(components::InitArgs),
    /// Register the components of a Pact project directory.
    Register(components::RegisterArgs),
    /// Show or edit the registered components.
    Manifest(components::ManifestArgs),
    /// Say which registered component an error text belongs to.
    Triage(triage::TriageArgs),
    /// Fix an error now: reproducer + fix proven by the project's tests, on a
    /// `sentinel/fix-<id>` branch; prints the FixResult JSON (exit 0 on success, 1 on failure).
    #[cfg(all(unix, feature = "daemon"))]
    Fix(fix::FixArgs),
    /// List the newest fixes, or show one whole (diff, test output, why it ended).
    #[cfg(all(unix, feature = "daemon"))]
    Fixes(fixes::FixesArgs),
    /// Approve a fix awaiting approval (merged with `fix.merge`; the incident resolved).
    #[cfg(all(unix, feature = "daemon"))]
    Approve(fixes::ApproveArgs),
    /// Reject a fix awaiting approval (its branch deleted; the incident escalated).
    #[cfg(all(unix, feature = "daemon"))]
    Reject(fixes::RejectArgs),
    /// Scan existing log files (plain or .gz) once and fold their error lines into incidents.
    Scan(scan::ScanArgs),
    /// Show recent incidents, newest first, with their spend and fix attempts, then the fix
    /// history.
    Report(report::ReportArgs),
    /// Show one incident whole: counts, timeline, fix attempts, spend.
    Incident(incident::IncidentArgs),
    /// Check the running daemon's API, the LLM endpoint and every configured integration
    /// (exit 1 when a configured one does not answer).
    #[cfg(feature = "daemon")]
    Status(status::StatusArgs),
    /// Tail the configured sources (files, webhooks) and serve the HTTP API until
    /// SIGINT/SIGTERM.
    #[cfg(feature = "daemon")]
    Watch(watch::WatchArgs),
    /// Serve the HTTP API (and watch the configured sources, if any).
    #[cfg(feature = "daemon")]
    Serve(watch::ServeArgs),
    /// Import the Python reference's state directory (its manifest, incidents and spend):
    /// idempotent; a malformed file is named and nothing is imported.
    #[cfg(feature = "daemon")]
    ImportReference(import::ImportArgs),
    /// Print a shell completion script: `sentinel completions bash > /etc/bash_completion.d/sentinel`.
    Completions(CompletionsArgs),
    /// Print the man page (roff), or write one page per command into a directory.
    Man(ManArgs),
    /// Write a deterministic test corpus with its ground truth (for benchmarks and tests).
    #[command(hide = true)]
    GenCorpus(GenCorpusArgs),
}

/// `sentinel completions`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// `sentinel man`.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write `sentinel.1` and a page per subcommand (`sentinel-watch.1` ...) into DIR
    /// instead of printing `sentinel.1`.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// `sentinel gen-corpus`.
#[derive(Debug, clap::Args)]
pub struct GenCorpusArgs {
    /// The seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Approximate size in bytes (suffixes K, M, G allowed: 1G = 1 GiB).
    #[arg(long, value_parser = parse_size, required_unless_present = "distinct_errors")]
    size: Option<u64>,
    /// Instead of the realistic corpus: this many error lines of one key
    /// (`PACT:noisy:emit`), all different (six words and a random tag, nothing the
    /// normaliser folds). The ground truth printed is `{bytes, lines, distinct}`.
    #[arg(long, value_name = "LINES", conflicts_with = "size")]
    distinct_errors: Option<u64>,
    /// With `--distinct-errors`: repeat this many messages instead (the reference run).
    #[arg(long, value_name = "N", requires = "distinct_errors")]
    messages: Option<u64>,
    /// The corpus file to write.
    #[arg(long)]
    out: PathBuf,
    /// Where to write the ground truth JSON.
    #[arg(long)]
    truth: Option<PathBuf>,
    /// Where to write a manifest.json registering the corpus's registered components.
    #[arg(long)]
    manifest: Option<PathBuf>,
}

/// A failure of a command, mapped to an exit code by `main`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The configuration cannot be used (exit 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Bad arguments (exit 2).
    #[error("{0}")]
    Usage(String),
    /// Anything else (exit 1).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<crate::attribute::ManifestError> for CliError {
    fn from(e: crate::attribute::ManifestError) -> CliError {
        CliError::Other(e.into())
    }
}

impl From<crate::store::StoreError> for CliError {
    fn from(e: crate::store::StoreError) -> CliError {
        CliError::Other(e.into())
    }
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(_) | CliError::Usage(_) => 2,
            CliError::Other(_) => 1,
        }
    }
}

/// Runs a parsed command line; returns the exit code on success paths that still want a
/// non-zero code.
///
/// # Errors
///
/// [`CliError`]; its [`CliError::exit_code`] is the process's exit code.
pub fn run(cli: Cli) -> Result<u8, CliError> {
    // Thousands of log files under an ordinary soft limit: use what the hard limit allows.
    crate::limits::raise_open_files_limit();
    match cli.command {
        Command::Init(args) => components::run_init(&ConfigSearch::from_env(cli.config), args),
        Command::Register(args) => components::run_register(&load_config(cli.config)?, args),
        Command::Manifest(args) => components::run_manifest(&load_config(cli.config)?, args),
        Command::Triage(args) => triage::run(&load_config(cli.config)?, args),
        #[cfg(all(unix, feature = "daemon"))]
        Command::Fix(args) => fix::run(&load_config(cli.config)?, args),
        #[cfg(all(unix, feature = "daemon"))]
        Command::Fixes(args) => fixes::run_fixes(&load_config(cli.config)?, args),
        #[cfg(all(unix, feature = "daemon"))]
        Command::Approve(args) => fixes::run_approve(&load_config(cli.config)?, args),
        #[cfg(all(unix, feature = "daemon"))]
        Command::Reject(args) => fixes::run_reject(&load_config(cli.config)?, args),
        Command::Incident(args) => incident::run(&load_config(cli.config)?, args),
        Command::Scan(args) => scan::run(&load_config(cli.config)?, args),
        Command::Report(args) => report::run(&load_config(cli.config)?, args),
        #[cfg(feature = "daemon")]
        Command::Status(args) => status::run(&load_config(cli.config)?, args),
        #[cfg(feature = "daemon")]
        Command::Watch(args) => watch::run_watch(load_config(cli.config)?, args),
        #[cfg(feature = "daemon")]
        Command::Serve(args) => watch::run_serve(load_config(cli.config)?, args),
        #[cfg(feature = "daemon")]
        Command::ImportReference(args) => import::run(&load_config(cli.config)?, args),
        Command::Completions(args) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(args.shell, &mut cmd, "sentinel", &mut std::io::stdout());
            Ok(0)
        }
        Command::Man(args) => man(args),
        Command::GenCorpus(args) => gen_corpus(args),
    }
}

fn man(args: ManArgs) -> Result<u8, CliError> {
    use anyhow::Context;
    let cmd = <Cli as clap::CommandFactory>::command();
    match args.dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(cmd, &dir)
                .with_context(|| format!("cannot write the man pages into {}", dir.display()))?;
        }
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut out)
                .context("rendering the man page")?;
            std::io::stdout().lock().write_all(&out).context("stdout")?;
        }
    }
    Ok(0)
}

fn load_config(explicit: Option<PathBuf>) -> Result<Config, CliError> {
    Ok(Config::load(&ConfigSearch::from_env(explicit))?)
}

fn gen_corpus(args: GenCorpusArgs) -> Result<u8, CliError> {
    use anyhow::Context;
    let file = std::fs::File::create(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    if let Some(lines) = args.distinct_errors {
        let w = sentinel_corpus::cardinality::write(
            args.seed,
            lines,
            args.messages,
            "PACT:noisy:emit",
            std::io::BufWriter::with_capacity(1 << 20, file),
        )
        .with_context(|| format!("cannot write {}", args.out.display()))?;
        let json = serde_json::json!({"bytes": w.bytes, "lines": w.lines, "distinct": w.distinct});
        writeln!(std::io::stdout().lock(), "{json}").context("stdout")?;
        return Ok(0);
    }
    let spec = sentinel_corpus::CorpusSpec::new(args.seed, args.size.unwrap_or(0));
    let truth = sentinel_corpus::generate(&spec, std::io::BufWriter::with_capacity(1 << 20, file))
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    let json = serde_json::to_string_pretty(&truth).context("serialising the truth")?;
    match &args.truth {
        Some(p) => std::fs::write(p, json + "\n")
            .with_context(|| format!("cannot write {}", p.display()))?,
        None => writeln!(std::io::stdout().lock(), "{json}").context("stdout")?,
    }
    if let Some(p) = &args.manifest {
        std::fs::write(p, sentinel_corpus::manifest_json(&spec, "."))
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(0)
}

/// Parses `123`, `64K`, `10M`, `1G` (binary multiples).
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = s[i..].to_ascii_lowercase();
            let mult = match unit.trim_end_matches("ib").trim_end_matches('b') {
                "" => 1,
                "k" => 1 << 10,
                "m" => 1 << 20,
                "g" => 1 << 30,
                _ => return Err(format!("unknown size unit in {s:?}")),
            };
            (&s[..i], mult)
        }
        None => (s, 1),
    };
    num.trim()
        .parse::<u64>()
        .map(|n| n * mult)
        .map_err(|_| format!("not a size: {s:?} (expected e.g. 512M)"))
}

/// Formats an integer with thousands separators.
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes_and_thousands() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("64K").unwrap(), 65536);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert!(parse_size("1Q").is_err());
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(12), "12");
    }
}
