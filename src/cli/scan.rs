//! `sentinel scan FILE|DIR|GLOB...`: one-shot ingest of existing logs.
//!
//! The inputs are expanded to a list of files (directories recursively, hidden entries
//! skipped; globs with `**`). Plain files larger than [`SEGMENT_BYTES`] are cut into
//! newline-aligned segments read with positional reads, so one big file keeps every core
//! busy; `.gz` files are one stream each. rayon runs the segments; each worker scans with the
//! shared [`Scanner`] into its own [`LineAggregator`] and hands full batches over a bounded
//! channel to ONE store thread, which merges them and commits in large transactions
//! (never one per line). Memory is bounded by the batch cap, the channel depth and the
//! per-worker read buffers, whatever the input size.
//!
//! A file that cannot be read (missing, unreadable, corrupt gzip) is reported and the rest
//! are still scanned; the exit code is non-zero only when nothing could be scanned.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use super::{CliError, thousands};
use crate::aggregate::{DEFAULT_BATCH_BYTES, LineAggregator, LineCounts, SharedFingerprints};
use crate::attribute::LiveRules;
use crate::config::Config;
use crate::scan::framing::{ReadAt, split_segments};
use crate::scan::{Fingerprint, LineReader, ScanStats, Scanner, ScannerBuilder};
use crate::store::{IngestBatch, Store};

/// Plain files above this size are split into segments of at least this size (more when the
/// file is large: about four segments per thread keeps the cores evenly busy while each
/// segment's aggregator sees many repeats before it hands its batch on).
pub const SEGMENT_BYTES: u64 = 32 << 20;

/// The read buffer of each worker.
pub const READ_BUFFER_BYTES: usize = 512 << 10;

/// Batches waiting for the store thread; workers block when it is full.
const CHANNEL_DEPTH: usize = 2;

/// The store thread commits when what it holds passes this many bytes: descriptions of new
/// incidents plus [`PENDING_ENTRY_BYTES`] per distinct fingerprint or key. Repeats of a
/// fingerprint merge into one entry, so a long run of known errors does not force commits.
/// Together with [`DEFAULT_BATCH_BYTES`] per worker and [`CHANNEL_DEPTH`] this bounds the
/// scan's memory whatever the input size.
const COMMIT_BYTES: usize = 32 << 20;

/// Bytes counted per pending entry (map slot, delta, key string).
const PENDING_ENTRY_BYTES: usize = 96;

/// `sentinel scan`.
#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    /// Files, directories or glob patterns (`logs/**/*.log`).
    #[arg(required = true, value_name = "FILE|DIR|GLOB")]
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
    distinct_fingerprints: u64,
    elapsed_seconds: f64,
    gb_per_s: f64,
    dry_run: bool,
    store: Option<PathBuf>,
    error_key_counts: BTreeMap<String, u64>,
    errors: Vec<FileError>,
}

#[derive(Debug, Serialize)]
struct FileError {
    path: String,
    error: String,
}

/// One unit of work.
#[derive(Debug)]
///
/// Work holds no open file: each unit opens its file when a worker starts it and closes it
/// when done, so a scan holds at most one descriptor per thread however many inputs it has.
enum Work {
    Segment {
        input: Arc<Input>,
        range: std::ops::Range<u64>,
    },
    Gzip {
        input: Arc<Input>,
    },
}

/// A planned input: its path and the identity it had when planned.
#[derive(Debug)]
struct Input {
    path: Arc<str>,
    os_path: PathBuf,
    /// (device, inode) at planning time: a different file at the path is not read.
    id: (u64, u64),
    len: u64,
}

impl Input {
    /// Opens the file planned, or says why not.
    fn open(&self) -> Result<File, String> {
        use std::os::unix::fs::MetadataExt;
        let file = File::open(&self.os_path).map_err(|e| describe_io(&e))?;
        let meta = file.metadata().map_err(|e| describe_io(&e))?;
        if (meta.dev(), meta.ino()) != self.id {
            return Err("file replaced while the scan ran (not read)".into());
        }
        Ok(file)
    }
}

/// What one unit of work counted.
#[derive(Debug, Default)]
struct Counted {
    stats: ScanStats,
    counts: LineCounts,
    bytes: u64,
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

    let mut report = ScanReport {
        dry_run: args.dry_run,
        ..ScanReport::default()
    };
    let mut stderr = std::io::stderr().lock();
    let (mut files, errors) = expand_inputs(&args.inputs);
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
        None
    } else {
        config.state().create()?;
        Some({
            let s = Store::open(&config.db_path()).context("opening the store")?;
            s.set_fix_policy(crate::fix::policy::FixPolicy::new(
                &config.error_threshold,
                config.auto_remediate,
            ));
            s
        })
    };
    let (work, open_errors) = plan(&files, threads);
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

    report.store = store.as_ref().map(|s| s.path().to_path_buf());

    let total_bytes: u64 = work
        .iter()
        .map(|w| match w {
            Work::Segment { range, .. } => range.end - range.start,
            Work::Gzip { input } => input.len,
        })
        .sum();
    let progress = progress_bar(total_bytes, args.json || args.no_progress);

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("sentinel-scan-{i}"))
        .build()
        .context("starting worker threads")?;

    let (tx, rx) = crossbeam_channel::bounded::<IngestBatch>(CHANNEL_DEPTH);
    let writer = std::thread::Builder::new()
        .name("sentinel-store".into())
        .spawn({
            let store_ref = store;
            move || store_thread(store_ref, rx)
        })
        .context("starting the store thread")?;

    let ctx = Ctx {
        scanner: &scanner,
        rules: &rules,
        shared: Arc::new(SharedFingerprints::new()),
        tx: &tx,
        progress: progress.as_ref(),
    };
    let results: Vec<(Arc<str>, Result<Counted, String>)> = pool.install(|| {
        use rayon::prelude::*;
        work.into_par_iter()
            .map(|w| {
                let path = match &w {
                    Work::Segment { input, .. } | Work::Gzip { input } => input.path.clone(),
                };
                let r = scan_work(w, &ctx);
                (path, r)
            })
            .collect()
    });
    drop(tx);
    let outcome = writer
        .join()
        .map_err(|_| anyhow::anyhow!("the store thread panicked"))?
        .context("writing incidents")?;
    if let Some(p) = &progress {
        p.finish_and_clear();
    }

    let mut failed: HashSet<Arc<str>> = HashSet::new();
    let mut scanned: HashSet<Arc<str>> = HashSet::new();
    for (path, r) in results {
        match r {
            Ok(c) => {
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
    report.distinct_fingerprints = outcome.fingerprints.len() as u64;
    if args.dry_run {
        // Nothing was written: compare with the store as it is, if there is one.
        let existing = match Store::open_read_only(&config.db_path()) {
            Ok(Some(s)) => s
                .count_existing(&outcome.fingerprints)
                .context("reading the store")?,
            Ok(None) => 0,
            Err(e) => return Err(anyhow::Error::from(e).into()),
        };
        report.incidents_updated = existing;
        report.incidents_new = report.distinct_fingerprints - existing;
    } else {
        report.incidents_new = outcome.created;
        report.incidents_updated = outcome.updated;
    }
    report.elapsed_seconds = started.elapsed().as_secs_f64();
    report.gb_per_s = report.bytes as f64 / report.elapsed_seconds.max(1e-9) / 1e9;
    print_report(&report, args.json)?;
    Ok(if scanned.is_empty() { 1 } else { 0 })
}

/// What every worker shares.
struct Ctx<'a> {
    scanner: &'a Scanner,
    rules: &'a Arc<LiveRules>,
    shared: Arc<SharedFingerprints>,
    tx: &'a crossbeam_channel::Sender<IngestBatch>,
    progress: Option<&'a indicatif::ProgressBar>,
}

/// Scans one unit of work, sending full batches to the store thread.
fn scan_work(work: Work, ctx: &Ctx<'_>) -> Result<Counted, String> {
    match work {
        Work::Segment { input, range } => {
            let len = range.end - range.start;
            let file = input.open()?;
            let rdr = ReadAt::new(&file, range.clone());
            let counted =
                scan_reader(rdr, range.start, &input.path, ctx, true).map_err(|e| e.to_string())?;
            if counted.bytes != len {
                return Err(format!(
                    "file changed while being scanned (read {} of {len} bytes at offset {})",
                    counted.bytes, range.start
                ));
            }
            Ok(counted)
        }
        Work::Gzip { input } => {
            let file = input.open()?;
            let compressed = input.len;
            let dec = flate2::read::MultiGzDecoder::new(std::io::BufReader::with_capacity(
                READ_BUFFER_BYTES,
                file,
            ));
            let r = scan_reader(dec, 0, &input.path, ctx, false)
                .map_err(|e| format!("corrupt or unreadable gzip: {e}"));
            if let Some(p) = ctx.progress {
                p.inc(compressed);
            }
            r
        }
    }
}

fn scan_reader<R: Read>(
    rdr: R,
    start: u64,
    path: &Arc<str>,
    ctx: &Ctx<'_>,
    show_progress: bool,
) -> std::io::Result<Counted> {
    let (scanner, tx) = (ctx.scanner, ctx.tx);
    let progress = ctx.progress.filter(|_| show_progress);
    let mut lines = LineReader::with_capacity(rdr, READ_BUFFER_BYTES, scanner.max_line_bytes())
        .with_offset(start);
    let mut agg = LineAggregator::new(ctx.rules, path.clone()).with_shared(ctx.shared.clone());
    let mut stats = ScanStats::default();
    let send = |agg: &mut LineAggregator| {
        // The store thread only stops early when it failed; its error is reported there.
        let _ = tx.send(agg.take_batch());
    };
    loop {
        let region = match lines.next_region() {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e) => {
                // Keep what was counted before the failure: it is committed like the rest.
                send(&mut agg);
                return Err(e);
            }
        };
        let n = region.bytes.len() as u64;
        let Ok(s) = scanner.scan(region.bytes, &mut agg);
        stats.add(&s);
        if let Some(p) = progress {
            p.inc(n);
        }
        if agg.held_bytes() >= DEFAULT_BATCH_BYTES {
            send(&mut agg);
        }
    }
    let tail = lines.take_partial();
    if !tail.is_empty() {
        let n = tail.len() as u64;
        let Ok(s) = scanner.scan(tail, &mut agg);
        stats.add(&s);
        if let Some(p) = progress {
            p.inc(n);
        }
    }
    let skipped = lines.skipped_long_lines();
    stats.long_lines += skipped;
    stats.lines += skipped;
    let counts = agg.counts();
    send(&mut agg);
    Ok(Counted {
        stats,
        counts,
        bytes: lines.offset() - start,
    })
}

/// What the store thread did.
#[derive(Debug, Default)]
struct StoreOutcome {
    created: u64,
    updated: u64,
    fingerprints: HashSet<Fingerprint>,
    key_counts: BTreeMap<String, u64>,
}

/// Merges worker batches and commits them in large transactions.
fn store_thread(
    store: Option<Store>,
    rx: crossbeam_channel::Receiver<IngestBatch>,
) -> Result<StoreOutcome, crate::store::StoreError> {
    let mut out = StoreOutcome::default();
    let mut created: HashSet<Fingerprint> = HashSet::new();
    let mut preexisting: HashSet<Fingerprint> = HashSet::new();
    let mut pending = IngestBatch::new();
    let mut described_bytes = 0usize;
    let mut commit = |pending: &mut IngestBatch| {
        let batch = std::mem::take(pending);
        if batch.is_empty() {
            return Ok(());
        }
        if let Some(store) = &store {
            let o = store.apply(&batch, jiff::Timestamp::now())?;
            // Counts of incidents whose description is still on its way wait for it.
            for d in o.deferred {
                pending.incidents.insert(d.fingerprint, d);
            }
            for fp in o.created {
                created.insert(fp);
            }
            for fp in o.updated {
                // Created by an earlier commit of this run: still "new".
                if !created.contains(&fp) {
                    preexisting.insert(fp);
                }
            }
        }
        Ok(())
    };
    for batch in rx {
        for fp in batch.incidents.keys() {
            out.fingerprints.insert(*fp);
        }
        for (k, n) in &batch.key_counts {
            *out.key_counts.entry(k.clone()).or_default() += n;
        }
        described_bytes += batch
            .incidents
            .values()
            .filter_map(|d| d.new.as_ref())
            .map(|n| n.heap_bytes())
            .sum::<usize>();
        pending.merge(batch);
        let held = described_bytes
            + (pending.incidents.len() + pending.key_counts.len()) * PENDING_ENTRY_BYTES;
        if held >= COMMIT_BYTES {
            commit(&mut pending)?;
            described_bytes = 0;
        }
    }
    commit(&mut pending)?;
    // Every worker has handed over everything, so every description has arrived.
    debug_assert!(
        pending.incidents.is_empty(),
        "counts left without a description"
    );
    out.created = created.len() as u64;
    out.updated = preexisting.len() as u64;
    Ok(out)
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
            Err(e) => errors.push((input.clone(), describe_io(&e))),
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
            errors.push((dir.display().to_string(), describe_io(&e)));
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

fn describe_io(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// Opens the files and cuts them into work units.
fn plan(files: &[PathBuf], threads: usize) -> (Vec<Work>, Vec<(String, String)>) {
    use std::os::unix::fs::MetadataExt;
    let mut work = Vec::new();
    let mut errors = Vec::new();
    for p in files {
        let name: Arc<str> = Arc::from(p.display().to_string());
        // Opened to plan it, closed before the next: planning holds one descriptor.
        let file = match File::open(p) {
            Ok(f) => f,
            Err(e) => {
                errors.push((name.to_string(), describe_io(&e)));
                continue;
            }
        };
        let meta = match file.metadata() {
            Ok(m) => m,
            Err(e) => {
                errors.push((name.to_string(), describe_io(&e)));
                continue;
            }
        };
        let len = meta.len();
        let input = Arc::new(Input {
            path: name.clone(),
            os_path: p.clone(),
            id: (meta.dev(), meta.ino()),
            len,
        });
        let mut magic = [0u8; 2];
        let is_gz = p.extension().is_some_and(|e| e == "gz")
            || (std::os::unix::fs::FileExt::read_at(&file, &mut magic, 0).ok() == Some(2)
                && magic == [0x1f, 0x8b]);
        if is_gz {
            work.push(Work::Gzip { input });
            continue;
        }
        let target = SEGMENT_BYTES.max(len / (4 * threads as u64));
        let ranges = if len > target {
            match split_segments(&file, len, target) {
                Ok(r) => r,
                Err(e) => {
                    errors.push((name.to_string(), describe_io(&e)));
                    continue;
                }
            }
        } else {
            std::iter::once(0..len).collect()
        };
        for range in ranges {
            work.push(Work::Segment {
                input: input.clone(),
                range,
            });
        }
    }
    (work, errors)
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
    if r.files_failed > 0 {
        writeln!(
            out,
            "  failed inputs:  {} (see messages above)",
            r.files_failed
        )?;
    }
    Ok(())
}
