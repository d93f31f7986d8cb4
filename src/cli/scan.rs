//! `sentinel scan FILE|DIR|GLOB...`: one-shot ingest of existing logs.
//!
//! The inputs are expanded to a list of files (directories recursively, hidden entries
//! skipped; globs with `**`), then the batch pipeline ([`crate::ingest::batch`]) scans them
//! on every core and commits the counts in large transactions.
//!
//! A file that cannot be read (missing, unreadable, corrupt gzip) is reported and the rest
//! are still scanned; the exit code is non-zero only when nothing could be scanned.

use std::collections::{BTreeMap, HashSet};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use super::{CliError, thousands};
use crate::aggregate::LineCounts;
use crate::attribute::LiveRules;
use crate::config::Config;
use crate::ingest::batch::{self, Work};
use crate::scan::ScannerBuilder;
use crate::store::Store;

/// `sentinel scan`.
#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    /// Files, directories or glob patterns (`logs/**/*.log`); `-` reads standard input
    /// (`kubectl logs deploy/api | sentinel scan -`).
    #[arg(required = true, value_name = "FILE|DIR|GLOB|-")]
    inputs: Vec<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Scan and report, but write nothing to the store.
    #[arg(long)]
    dry_run: bool,
    /// An error pattern (regex; repeatable). Replaces the config's `error_patterns`.
    #[arg(long = "error-pattern", value_name = "REGEX")]
    error_patterns: Vec<String>,
    /// Worker threads (default: the number of cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Never show a progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Read regular files into buffers instead of mapping them (mapping is the default:
    /// no copy; a file truncated while mapped is handled, see `sentinel scan --help`).
    #[arg(long)]
    no_mmap: bool,
}

/// The summary `scan` prints.
#[derive(Debug, Default, Serialize)]
struct ScanReport {
    files: u64,
    files_failed: u64,
    bytes: u64,
    lines: u64,
    error_lines: u64,
    long_lines: u64,
    #[serde(flatten)]
    counts: LineCounts,
    distinct_keys: u64,
    incidents_new: u64,
    incidents_updated: u64,
    /// Distinct fingerprints seen, folded or not: exact up to
    /// [`crate::aggregate::distinct::EXACT_DISTINCT`], a HyperLogLog estimate beyond (then
    /// `distinct_fingerprints_estimated` is true, and so are `incidents_updated` and, in a
    /// dry run, `incidents_new`).
    distinct_fingerprints: u64,
    distinct_fingerprints_estimated: bool,
    /// New fingerprints the cardinality guard folded into overflow incidents.
    incidents_folded: u64,
    /// Keys with an overflow incident, with the fingerprints each folded (over the store's
    /// life).
    overflow_keys: BTreeMap<String, u64>,
    elapsed_seconds: f64,
    gb_per_s: f64,
    dry_run: bool,
    store: Option<PathBuf>,
    error_key_counts: BTreeMap<String, u64>,
    errors: Vec<FileError>,
    /// Inputs scanned with a caveat (truncated while being read: counted what was read).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<FileError>,
}

#[derive(Debug, Serialize)]
struct FileError {
    path: String,
    error: String,
}

pub(crate) fn run(config: &Config, args: ScanArgs) -> Result<u8, CliError> {
    let started = Instant::now();
    let patterns: Vec<String> = if args.error_patterns.is_empty() {
        config.error_patterns.clone()
    } else {
        args.error_patterns.clone()
    };
    let scanner = ScannerBuilder::new()
        .max_line_bytes(config.max_line_bytes)
        .build(&patterns)
        .map_err(|e| CliError::Usage(format!("invalid --error-pattern: {e}")))?;
    let (rules, warnings) =
        crate::attribute::ledger::load_rules(config).context("loading the manifest")?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let rules = LiveRules::new(rules);
    rules.set_grouping_rules(
        crate::scan::rules::Rules::new(&config.grouping.rules).map_err(anyhow::Error::msg)?,
    );

    let mut report = ScanReport {
        dry_run: args.dry_run,
        ..ScanReport::default()
    };
    let mut stderr = std::io::stderr().lock();
    let stdin = args.inputs.iter().any(|i| i == "-");
    let named: Vec<String> = args.inputs.iter().filter(|i| *i != "-").cloned().collect();
    let (mut files, errors) = expand_inputs(&named);
    // Never scan Sentinel's own state (the store is being written while we read).
    if let Ok(state) = std::fs::canonicalize(&config.state_dir) {
        files.retain(|f| !std::fs::canonicalize(f).is_ok_and(|f| f.starts_with(&state)));
    }
    for (path, error) in errors {
        let _ = writeln!(stderr, "sentinel: {path}: {error}");
        report.errors.push(FileError { path, error });
    }
    let threads = args
        .threads
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
        .max(1);
    // The store first: its file must not wait for descriptors the inputs hold.
    let store = if args.dry_run {
        // Nothing is written: new and updated are judged against the store as it is.
        match Store::open_read_only(&config.db_path()) {
            Ok(s) => s,
            Err(e) => return Err(anyhow::Error::from(e).into()),
        }
    } else {
        config.state().create()?;
        Some({
            let s = Store::open(&config.db_path()).context("opening the store")?;
            s.set_fix_policy(crate::fix::policy::FixPolicy::new(
                &config.error_threshold,
                config.auto_remediate,
            ));
            s.set_cardinality_guard(crate::store::CardinalityGuard::from_config(
                &config.grouping,
            ));
            s.set_templates(config.grouping.templates);
            s
        })
    };
    let (mut work, open_errors) = batch::plan(&files, threads);
    if stdin {
        work.push(Work::Stdin);
    }
    for (path, error) in open_errors {
        let _ = writeln!(stderr, "sentinel: {path}: {error}");
        report.errors.push(FileError { path, error });
    }
    drop(stderr);
    if work.is_empty() {
        report.files_failed = report.errors.len() as u64;
        if args.json {
            print_report(&report, true)?;
        }
        let _ = writeln!(std::io::stderr(), "sentinel: nothing could be scanned");
        return Ok(1);
    }

    report.store = (!args.dry_run)
        .then(|| store.as_ref().map(|s| s.path().to_path_buf()))
        .flatten();
    let target = if args.dry_run {
        batch::Target::DryRun(store)
    } else {
        match store {
            Some(s) => batch::Target::Write(s),
            None => batch::Target::DryRun(None),
        }
    };

    let total_bytes: u64 = work
        .iter()
        .map(|w| match w {
            Work::Segment { range, .. } => range.end - range.start,
            Work::Gzip { input } => input.planned_bytes(),
            Work::Stdin => 0,
        })
        .sum();
    let progress = progress_bar(total_bytes, args.json || args.no_progress);

    let (results, outcome) = batch::run(
        work,
        target,
        &batch::Shared {
            scanner: &scanner,
            rules: &rules,
            threads,
            progress: progress.as_ref(),
            mmap: !args.no_mmap,
        },
    )?;
    if let Some(p) = &progress {
        p.finish_and_clear();
    }

    let mut failed: HashSet<Arc<str>> = HashSet::new();
    let mut scanned: HashSet<Arc<str>> = HashSet::new();
    let mut warned: HashSet<Arc<str>> = HashSet::new();
    for (path, r) in results {
        match r {
            Ok(c) => {
                if let Some(w) = c.warning
                    && warned.insert(path.clone())
                {
                    let _ = writeln!(std::io::stderr(), "sentinel: {path}: {w}");
                    report.warnings.push(FileError {
                        path: path.to_string(),
                        error: w,
                    });
                }
                report.bytes += c.bytes;
                report.lines += c.stats.lines;
                report.error_lines += c.stats.error_lines;
                report.long_lines += c.stats.long_lines;
                report.counts.add(&c.counts);
                scanned.insert(path);
            }
            Err(error) => {
                if failed.insert(path.clone()) {
                    let _ = writeln!(std::io::stderr(), "sentinel: {path}: {error}");
                    report.errors.push(FileError {
                        path: path.to_string(),
                        error,
                    });
                }
            }
        }
    }
    report.files = scanned.len() as u64;
    report.files_failed = (report.errors.len()) as u64;
    report.distinct_keys = outcome.key_counts.len() as u64;
    report.error_key_counts = outcome.key_counts;
    report.distinct_fingerprints = outcome.fingerprints.count();
    report.distinct_fingerprints_estimated = !outcome.fingerprints.is_exact();
    report.incidents_folded = outcome.folded;
    if let Some(existing) = &outcome.existing {
        // A dry run: nothing was written.
        report.incidents_updated = existing.count().min(report.distinct_fingerprints);
        report.incidents_new = report.distinct_fingerprints - report.incidents_updated;
    } else {
        report.incidents_new = outcome.created;
        report.incidents_updated = outcome.updated;
        if let Ok(Some(s)) = Store::open_read_only(&config.db_path())
            && let Ok(o) = s.overflows()
        {
            report.overflow_keys = o.into_iter().collect();
        }
    }
    report.elapsed_seconds = started.elapsed().as_secs_f64();
    report.gb_per_s = report.bytes as f64 / report.elapsed_seconds.max(1e-9) / 1e9;
    print_report(&report, args.json)?;
    Ok(if scanned.is_empty() { 1 } else { 0 })
}

/// Expands the command-line inputs to files. Returns the files and, per input that yielded
/// nothing, why.
fn expand_inputs(inputs: &[String]) -> (Vec<PathBuf>, Vec<(String, String)>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for input in inputs {
        let path = Path::new(input);
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => {
                let before = files.len();
                walk_dir(path, &mut files, &mut errors);
                if files.len() == before {
                    errors.push((input.clone(), "directory contains no log files".into()));
                }
            }
            Ok(_) => files.push(path.to_path_buf()),
            Err(e) if is_glob(input) && e.kind() == std::io::ErrorKind::NotFound => {
                match glob::glob(input) {
                    Ok(paths) => {
                        let before = files.len();
                        for entry in paths {
                            match entry {
                                Ok(p) if p.is_file() => files.push(p),
                                Ok(_) => {}
                                Err(e) => errors
                                    .push((e.path().display().to_string(), e.error().to_string())),
                            }
                        }
                        if files.len() == before {
                            errors.push((input.clone(), "no files match this pattern".into()));
                        }
                    }
                    Err(e) => errors.push((input.clone(), format!("invalid glob: {e}"))),
                }
            }
            Err(e) => errors.push((input.clone(), batch::describe_io(&e))),
        }
    }
    let mut seen = HashSet::new();
    files.retain(|p| seen.insert(std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())));
    (files, errors)
}

fn walk_dir(dir: &Path, files: &mut Vec<PathBuf>, errors: &mut Vec<(String, String)>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            errors.push((dir.display().to_string(), batch::describe_io(&e)));
            return;
        }
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => walk_dir(&path, files, errors),
            Ok(t) if t.is_file() => files.push(path),
            _ => {}
        }
    }
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

fn progress_bar(total: u64, hidden: bool) -> Option<indicatif::ProgressBar> {
    if hidden || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(bar)
}

fn print_report(report: &ScanReport, json: bool) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    let r = if json {
        serde_json::to_writer(&mut out, report)
            .map_err(std::io::Error::other)
            .and_then(|_| writeln!(out))
    } else {
        write_text(&mut out, report)
    };
    r.context("writing to stdout")?;
    Ok(())
}

fn write_text(out: &mut impl Write, r: &ScanReport) -> std::io::Result<()> {
    let gib = r.bytes as f64 / (1u64 << 30) as f64;
    writeln!(
        out,
        "Scanned {} file{} ({:.2} GiB) in {:.2} s: {:.2} GB/s{}",
        r.files,
        if r.files == 1 { "" } else { "s" },
        gib,
        r.elapsed_seconds,
        r.gb_per_s,
        if r.dry_run {
            " (dry run: nothing written)"
        } else {
            ""
        }
    )?;
    writeln!(out, "  lines:          {}", thousands(r.lines))?;
    writeln!(out, "  error lines:    {}", thousands(r.error_lines))?;
    writeln!(
        out,
        "    keyed:        {} (registered {}, unregistered {})",
        thousands(r.counts.keyed_lines),
        thousands(r.counts.registered_lines),
        thousands(r.counts.unregistered_lines)
    )?;
    writeln!(
        out,
        "    unattributed: {}",
        thousands(r.counts.unattributed_lines)
    )?;
    writeln!(
        out,
        "  long lines:     {} (skipped)",
        thousands(r.long_lines)
    )?;
    writeln!(out, "  distinct keys:  {}", thousands(r.distinct_keys))?;
    writeln!(
        out,
        "  incidents:      {} new, {} updated ({} distinct fingerprints)",
        thousands(r.incidents_new),
        thousands(r.incidents_updated),
        thousands(r.distinct_fingerprints)
    )?;
    if r.distinct_fingerprints_estimated {
        writeln!(
            out,
            "    (more than {} distinct fingerprints: counts estimated within about 1 %)",
            thousands(crate::aggregate::distinct::EXACT_DISTINCT as u64)
        )?;
    }
    if r.incidents_folded > 0 {
        writeln!(
            out,
            "  overflow:       {} new fingerprints folded (over `grouping.max_new_incidents_per_key`): {}",
            thousands(r.incidents_folded),
            r.overflow_keys
                .keys()
                .map(|k| if k.is_empty() {
                    "(unattributed)"
                } else {
                    k.as_str()
                })
                .collect::<Vec<_>>()
                .join(", ")
        )?;
    }
    if r.files_failed > 0 {
        writeln!(
            out,
            "  failed inputs:  {} (see messages above)",
            r.files_failed
        )?;
    }
    Ok(())
}
