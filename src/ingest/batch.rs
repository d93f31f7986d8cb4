//! The batch pipeline `sentinel scan` runs: existing files scanned on every core, their
//! counts committed in large transactions.
//!
//! Plain files larger than [`SEGMENT_BYTES`] are cut into newline-aligned segments, so one
//! big file keeps every core busy; `.gz` files are one stream each. A segment of a regular
//! file is mapped ([`crate::ingest::mmap`]) and scanned in place, chunk by chunk: no read
//! copy, and every byte is touched by the scanner's one fused pass (lines, long lines, error
//! markers) and nothing else. Special files, and every file with `--no-mmap`, are read with
//! positional reads into a per-worker buffer instead; standard input and `.gz` files are
//! streams. rayon runs the segments; each worker scans with the shared [`Scanner`] into its
//! own [`LineAggregator`] and hands full batches over a bounded channel to ONE store thread,
//! which merges them and commits in large transactions (never one per line). The workers
//! keep pace with the committer ([`crate::ingest::pace`]): they hand on new incidents at
//! once while it waits for work, and leave it a core while it is behind. Memory is
//! bounded by the batch cap, the channel depth and the per-worker read buffers, whatever the
//! input size (mapped pages are page cache, not the process's own memory).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use crate::aggregate::distinct::DistinctCounter;
use crate::aggregate::{DEFAULT_BATCH_BYTES, LineAggregator, LineCounts, SharedFingerprints};
use crate::attribute::LiveRules;
use crate::ingest::mmap::MappedRange;
use crate::ingest::pace::Pace;
use crate::scan::framing::{ReadAt, split_segments};
use crate::scan::{ErrorLine, Fingerprint, LineReader, ScanStats, Scanner, Sink};
use crate::store::{IncidentDelta, IngestBatch, Store};

/// Plain files above this size are split into segments of at least this size (more when the
/// file is large: about four segments per thread keeps the cores evenly busy while each
/// segment's aggregator sees many repeats before it hands its batch on).
pub const SEGMENT_BYTES: u64 = 32 << 20;

/// How standard input is named in messages and the report.
pub const STDIN_NAME: &str = "<stdin>";

/// The read buffer of each worker.
pub const READ_BUFFER_BYTES: usize = 512 << 10;

/// A mapped segment is scanned in newline-aligned chunks of about this size: between two
/// chunks the worker hands full batches on, advances the progress bar and checks the
/// truncation guard; a chunk is still in cache when its error lines are aggregated.
pub const MAPPED_CHUNK_BYTES: usize = 1 << 20;

/// While the committer waits for work, a worker hands its batch on as soon as it describes
/// this many new incidents (else when it holds [`DEFAULT_BATCH_BYTES`]): on a first scan the
/// committer is the bound, and it sat idle between the workers' full batches (each of
/// thousands of new incidents).
const HUNGRY_DESCRIBED: usize = 64;

/// Batches waiting for the store thread; workers block when it is full.
const CHANNEL_DEPTH: usize = 2;

/// The store thread commits when what it holds passes this many bytes: descriptions of new
/// incidents plus [`PENDING_ENTRY_BYTES`] per distinct fingerprint or key. Repeats of a
/// fingerprint merge into one entry, so a long run of known errors does not force commits.
/// What a worker's first batch of a unit of work holds at most ([`DEFAULT_BATCH_BYTES`]
/// after it): the committer is the bound of a first scan, and it waited for the workers'
/// first full batches (4 MiB of descriptions, thousands of new incidents) before it had
/// anything to do.
const FIRST_BATCH_BYTES: usize = 256 << 10;

/// Together with [`DEFAULT_BATCH_BYTES`] per worker and [`CHANNEL_DEPTH`] this bounds the
/// scan's memory whatever the input size.
const COMMIT_BYTES: usize = 16 << 20;

/// Bytes counted per pending entry (map slot, delta, key string).
const PENDING_ENTRY_BYTES: usize = 96;

/// Pending counts the merger holds at most before it flushes them all: counts of
/// fingerprints described earlier wait for the end of the run (each incident is then
/// rewritten once, not at every flush), but a run of mostly new fingerprints past the
/// cardinality guard would otherwise hold [`COMMIT_BYTES`] of them (~170,000 map entries
/// and a table twice that while it grows).
const PENDING_COUNTS: usize = 65_536;

/// One unit of work.
#[derive(Debug)]
///
/// Work holds no open file: each unit opens its file when a worker starts it and closes it
/// when done, so a scan holds at most one descriptor per thread however many inputs it has.
pub enum Work {
    /// A byte range of a plain file.
    Segment {
        /// The file.
        input: Arc<Input>,
        /// The range, newline-aligned.
        range: std::ops::Range<u64>,
    },
    /// Standard input, read to its end (`sentinel scan -`).
    Stdin,
    /// A whole gzip file.
    Gzip {
        /// The file.
        input: Arc<Input>,
    },
}

/// A planned input: its path and the identity it had when planned.
#[derive(Debug)]
pub struct Input {
    /// The path as given (for messages).
    pub path: Arc<str>,
    os_path: PathBuf,
    /// (device, inode) at planning time: a different file at the path is not read.
    id: (u64, u64),
    len: u64,
    /// A regular file (mappable); not a FIFO, device or the like.
    regular: bool,
}

impl Input {
    /// Its length when planned.
    pub fn planned_bytes(&self) -> u64 {
        self.len
    }

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
pub struct Counted {
    /// Lines, error lines, long lines.
    pub stats: ScanStats,
    /// Error lines by attribution.
    pub counts: LineCounts,
    /// Bytes read.
    pub bytes: u64,
    /// Something the user should know about the input that did not stop its scan (it was
    /// truncated while being read: the counts cover what was read).
    pub warning: Option<String>,
}

/// What the workers share.
#[derive(Debug)]
pub struct Shared<'a> {
    /// The error-line scanner.
    pub scanner: &'a Scanner,
    /// Components and severities.
    pub rules: &'a Arc<LiveRules>,
    /// Worker threads.
    pub threads: usize,
    /// Advanced by the bytes scanned.
    pub progress: Option<&'a indicatif::ProgressBar>,
    /// Map regular files and scan them in place (else read them into buffers).
    pub mmap: bool,
}

/// What each unit of work counted (per input path), in work order.
pub type PerInput = Vec<(Arc<str>, Result<Counted, String>)>;

/// Scans `work` on `threads` workers and commits to the target's store (a dry run only
/// counts).
///
/// # Errors
///
/// Threads that cannot start, or a failed commit.
pub fn run(
    work: Vec<Work>,
    target: Target,
    shared: &Shared<'_>,
) -> anyhow::Result<(PerInput, StoreOutcome)> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(shared.threads)
        .thread_name(|i| format!("sentinel-scan-{i}"))
        .start_handler(|_| yield_to_the_committer())
        .build()
        .context("starting worker threads")?;

    let (tx, rx) = crossbeam_channel::bounded::<IngestBatch>(CHANNEL_DEPTH);
    let fingerprints = Arc::new(SharedFingerprints::new());
    let for_store = fingerprints.clone();
    // Hurrying helps a committer that creates incidents as they come: not a dry run's, nor
    // one whose new descriptions wait for one large flush (`grouping.templates`).
    let pace = Pace::for_machine(shared.threads);
    let pace = Arc::new(match &target {
        Target::Write(s) if s.templates().is_none() => pace,
        _ => pace.without_hurry(),
    });
    let for_committer = pace.clone();
    let writer = std::thread::Builder::new()
        .name("sentinel-store".into())
        .spawn(move || store_thread(target, for_store, &for_committer, rx))
        .context("starting the store thread")?;

    let ctx = Ctx {
        scanner: shared.scanner,
        rules: shared.rules,
        shared: fingerprints,
        tx: &tx,
        progress: shared.progress,
        mmap: shared.mmap,
        pace: &pace,
    };
    let results: PerInput = pool.install(|| {
        use rayon::prelude::*;
        work.into_par_iter()
            .map(|w| {
                let path = match &w {
                    Work::Segment { input, .. } | Work::Gzip { input } => input.path.clone(),
                    Work::Stdin => Arc::from(STDIN_NAME),
                };
                let scanning = ctx.pace.start();
                let r = scan_work(w, &ctx);
                drop(scanning);
                (path, r)
            })
            .collect()
    });
    drop(tx);
    let outcome = writer
        .join()
        .map_err(|_| anyhow::anyhow!("the store thread panicked"))?
        .context("writing incidents")?;
    Ok((results, outcome))
}

/// What every worker shares.
struct Ctx<'a> {
    scanner: &'a Scanner,
    rules: &'a Arc<LiveRules>,
    shared: Arc<SharedFingerprints>,
    tx: &'a crossbeam_channel::Sender<IngestBatch>,
    progress: Option<&'a indicatif::ProgressBar>,
    mmap: bool,
    /// How the workers keep pace with the committer.
    pace: &'a Pace,
}

impl Ctx<'_> {
    /// Between two chunks: whether a worker hands its batch on now (it is full, or the
    /// committer waits for work and the batch describes new incidents), after waiting for
    /// its turn to scan on (see [`Pace::pass`]).
    fn hand_on(&self, agg: &LineAggregator, limit: usize) -> bool {
        self.pace.pass();
        agg.held_bytes() >= limit || (agg.described() >= HUNGRY_DESCRIBED && self.pace.wants_work())
    }
}

/// Lowers the calling scan worker's priority (nice 5, Linux) below the committer's. The
/// committer is one thread and, on a first scan with many new incidents, the bound: with
/// every core scanning, the scheduler shared the cores three ways and the committer got
/// two thirds of one until the scan ended, then worked alone (1 GiB, 28,638 new
/// incidents, 2 cores: the committer ran 0.39 s past the scan's end). Below it, the
/// workers take what it leaves, and they wait on it anyway once a flush is queued. Where
/// the priority cannot be set nothing changes. (While the committer is behind, workers
/// beyond `cores - 1` also park between chunks: see [`Pace`].)
fn yield_to_the_committer() {
    #[cfg(target_os = "linux")]
    let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 5);
}

/// Scans one unit of work, sending full batches to the store thread.
fn scan_work(work: Work, ctx: &Ctx<'_>) -> Result<Counted, String> {
    match work {
        Work::Segment { input, range } => {
            let len = range.end - range.start;
            let file = input.open()?;
            if ctx.mmap && input.regular && len > 0 {
                // No guard slot, or a file system that cannot map: read it.
                if let Ok(Some(map)) = MappedRange::map(&file, range.clone()) {
                    return scan_mapped(&map, range.start, &input.path, ctx);
                }
            }
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
        Work::Stdin => {
            let stdin = std::io::stdin();
            let counted = scan_reader(stdin.lock(), 0, &Arc::from(STDIN_NAME), ctx, true)
                .map_err(|e| format!("reading standard input: {e}"))?;
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

/// Collects a chunk's error lines (offset and length in the chunk) until the chunk is known
/// to be sound (no truncation fault while it was scanned).
struct Deferred<'v>(&'v mut Vec<(usize, usize)>);

impl Sink for Deferred<'_> {
    type Error = std::convert::Infallible;

    fn error_line(&mut self, line: &ErrorLine<'_>) -> Result<bool, Self::Error> {
        self.0.push((line.offset(), line.line().len()));
        Ok(true)
    }
}

/// Scans a mapped segment in place (see the module docs and [`crate::ingest::mmap`]): in
/// newline-aligned chunks of about [`MAPPED_CHUNK_BYTES`]; a chunk's error lines reach the
/// aggregator only once no truncation fault happened while it was scanned. After a fault the
/// chunk is rescanned up to the file's new end and the segment stops there, with a warning.
fn scan_mapped(
    map: &MappedRange,
    start: u64,
    path: &Arc<str>,
    ctx: &Ctx<'_>,
) -> Result<Counted, String> {
    let scanner = ctx.scanner;
    let bytes = map.bytes();
    let mut agg = LineAggregator::new(ctx.rules, path.clone()).with_shared(ctx.shared.clone());
    let mut stats = ScanStats::default();
    let mut lines: Vec<(usize, usize)> = Vec::new();
    let mut cut = bytes.len();
    let mut seen_faults = 0u64;
    let mut truncated = false;
    let mut pos = 0usize;
    let mut batch_limit = FIRST_BATCH_BYTES;
    while pos < cut {
        let mut end = if cut - pos <= MAPPED_CHUNK_BYTES {
            cut
        } else {
            // The probe touches the chunk's end first: a truncation before it faults here,
            // before anything of the chunk is counted.
            let probe = &bytes[pos..pos + MAPPED_CHUNK_BYTES];
            match memchr::memrchr(b'\n', probe) {
                Some(i) => pos + i + 1,
                None => match memchr::memchr(b'\n', &bytes[pos + MAPPED_CHUNK_BYTES..cut]) {
                    Some(i) => pos + MAPPED_CHUNK_BYTES + i + 1,
                    None => cut,
                },
            }
        };
        lines.clear();
        let chunk = &bytes[pos..end.min(cut)];
        let Ok(s) = scanner.scan(chunk, &mut Deferred(&mut lines));
        let faults = map.faults();
        if faults != seen_faults {
            // Some of what was just scanned may be zeros standing in for truncated pages:
            // forget it, and scan again only what still is the file.
            seen_faults = faults;
            truncated = true;
            cut = cut.min(
                map.valid_end()
                    .map_err(|e| format!("after a truncation: {}", describe_io(&e)))?,
            );
            continue;
        }
        end = end.min(cut);
        for &(at, len) in &lines {
            let _ = agg.error_line(&ErrorLine::at(chunk, at, len));
        }
        stats.add(&s);
        if let Some(p) = ctx.progress {
            p.inc((end - pos) as u64);
        }
        if ctx.hand_on(&agg, batch_limit) {
            let _ = ctx.tx.send(agg.take_batch());
            batch_limit = DEFAULT_BATCH_BYTES;
        }
        pos = end;
        #[cfg(feature = "test-util")]
        if start == 0 && pos == end {
            test_pause(path);
        }
    }
    let counts = agg.counts();
    let _ = ctx.tx.send(agg.take_batch());
    let warning = truncated.then(|| {
        format!(
            "truncated while being scanned (to {} bytes or less): counted what was read, \
             up to offset {}",
            start + cut as u64,
            start + pos as u64
        )
    });
    if let (Some(p), true) = (ctx.progress, truncated) {
        p.inc((bytes.len() - pos) as u64);
    }
    Ok(Counted {
        stats,
        counts,
        bytes: pos as u64,
        warning,
    })
}

/// Test support: with `SENTINEL_TEST_SCAN_PAUSE=DIR`, the worker scanning the first segment
/// of a mapped file creates `DIR/paused` after its first chunk and waits (up to a minute)
/// for `DIR/resume`, so a test can truncate or rewrite the file in the middle of its scan.
#[cfg(feature = "test-util")]
fn test_pause(path: &str) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static DONE: AtomicBool = AtomicBool::new(false);
    let Some(dir) = std::env::var_os("SENTINEL_TEST_SCAN_PAUSE") else {
        return;
    };
    if DONE.swap(true, Ordering::AcqRel) {
        return;
    }
    let dir = std::path::PathBuf::from(dir);
    let _ = std::fs::write(dir.join("paused"), path);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !dir.join("resume").exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
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
    let mut batch_limit = FIRST_BATCH_BYTES;
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
        if ctx.hand_on(&agg, batch_limit) {
            send(&mut agg);
            batch_limit = DEFAULT_BATCH_BYTES;
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
        warning: None,
    })
}

/// What the store thread did.
#[derive(Debug, Default)]
pub struct StoreOutcome {
    /// Incidents this run created (overflow incidents included).
    pub created: u64,
    /// Incidents that existed before and were counted again.
    pub updated: u64,
    /// Every fingerprint seen, folded or not (exact up to
    /// [`crate::aggregate::distinct::EXACT_DISTINCT`], estimated beyond).
    pub fingerprints: DistinctCounter,
    /// New fingerprints the cardinality guard folded into overflow incidents (a fingerprint
    /// folded in two transactions counts twice).
    pub folded: u64,
    /// A dry run: the fingerprints seen that the store already has (exact while
    /// `fingerprints` is).
    pub existing: Option<DistinctCounter>,
    /// Error lines per PACT key.
    pub key_counts: BTreeMap<String, u64>,
}

/// Where the store thread writes.
#[derive(Debug)]
pub enum Target {
    /// Commit to this store.
    Write(Store),
    /// A dry run: write nothing; count the fingerprints this store (if any) already has.
    DryRun(Option<Store>),
}

/// New incidents one write transaction creates at most, so that a long scan's incidents
/// become visible (and durable) as it goes. Not a memory bound: redb keeps a transaction's
/// dirty pages within half its cache ([`crate::store::CACHE_BYTES`]) and writes the rest
/// to the file before the commit. Each commit writes (and checksums) every page its
/// transaction touched, and new incidents have random keys in a dozen tables, so commits of
/// 2,048 rewrote most of the store's pages fourteen times on the 1 GiB corpus (28,638
/// incidents): 32,768 per commit took its first scan from 1.36 s to 1.18 s, and its peak
/// anonymous memory from 68 to 49 MiB (2026-12-07, README "Performance").
const NEW_PER_COMMIT: u64 = 32_768;

/// How long one write transaction stays open at most, however few incidents it created, so
/// that a long scan's counts become visible (and durable) as it goes. Not a number of
/// flushes (it was sixteen): flushes are small while the committer waits for work (see
/// [`Pace`]), a few dozen incidents each, and each commit writes (and checksums) every page
/// its transaction touched.
const COMMIT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Descriptions of new incidents pending before a flush (besides [`COMMIT_BYTES`]).
const DESCRIBED_PER_FLUSH: usize = 4096;

/// With `grouping.templates`, descriptions of new incidents pending before a flush: the
/// texts a transaction mines in one fingerprint order (`store::templates`). Bounded so that
/// a flood of distinct texts, every one described, does not hold three 16 MiB flushes of
/// descriptions at once (1,000,000 distinct lines peaked at 146 MiB).
const TEMPLATE_DESCRIBED_PER_FLUSH: usize = 8192;

/// Undescribed lines ([`crate::store::Undescribed`]) pending before a flush.
const UNDESCRIBED_PER_FLUSH: usize = 1 << 17;

/// Merges worker batches and hands them, in flushes, to the committer thread, which applies
/// them in large transactions (see [`commit_loop`]): while it applies and commits one flush
/// (an fsync), this thread keeps taking the workers' batches and merging the next, so the
/// workers keep scanning instead of waiting on a full channel.
///
/// Memory does not grow with the number of distinct fingerprints: pending batches are
/// flushed by bytes and by descriptions, at most one flush waits for the committer while it
/// applies another, a transaction commits after [`NEW_PER_COMMIT`] creations, the distinct
/// counts are [`DistinctCounter`]s, and the map of folded fingerprints only holds those
/// that may still arrive as counts alone (members of the bounded `shared` set).
fn store_thread(
    target: Target,
    shared: Arc<SharedFingerprints>,
    pace: &Pace,
    rx: crossbeam_channel::Receiver<IngestBatch>,
) -> Result<StoreOutcome, crate::store::StoreError> {
    let mut out = StoreOutcome::default();
    let (store, dry) = match target {
        Target::Write(s) => (Some(s), None),
        Target::DryRun(s) => {
            out.existing = Some(DistinctCounter::default());
            (None, s)
        }
    };
    let store = store.as_ref();
    let committed = std::thread::scope(|scope| {
        let (ftx, frx) = crossbeam_channel::bounded::<IngestBatch>(FLUSHES_WAITING);
        let committer = std::thread::Builder::new()
            .name("sentinel-commit".into())
            .spawn_scoped(scope, move || commit_loop(store, shared, pace, frx))
            .map_err(|e| crate::store::StoreError::Storage {
                path: store.map(|s| s.path().to_path_buf()).unwrap_or_default(),
                source: redb::Error::Io(e),
            })?;
        // With `grouping.templates` the new descriptions wait for one transaction (up to
        // COMMIT_BYTES), so that they are mined in one fingerprint order (`store::templates`).
        let templates = store.is_some_and(|s| s.templates().is_some());
        let merged = merge_loop(&rx, &ftx, pace, dry.as_ref(), templates, &mut out);
        drop(ftx);
        // The committer's error first: when it stopped, merging stops with a closed channel.
        let committed = committer
            .join()
            .map_err(|_| crate::store::StoreError::Storage {
                path: store.map(|s| s.path().to_path_buf()).unwrap_or_default(),
                source: redb::Error::Io(std::io::Error::other("the commit thread panicked")),
            })??;
        merged?;
        Ok::<_, crate::store::StoreError>(committed)
    })?;
    out.created = committed.created;
    out.updated = committed.touched.count().saturating_sub(committed.created);
    out.folded = committed.folded_n;
    Ok(out)
}

/// Flushes that may wait for the committer while it applies another.
const FLUSHES_WAITING: usize = 1;

/// The merging half of the store thread: takes the workers' batches, keeps the run's
/// accounting, and sends a flush to the committer whenever what it holds passes
/// [`COMMIT_BYTES`] or [`DESCRIBED_PER_FLUSH`] descriptions (and the rest at the end).
fn merge_loop(
    rx: &crossbeam_channel::Receiver<IngestBatch>,
    ftx: &crossbeam_channel::Sender<IngestBatch>,
    pace: &Pace,
    dry: Option<&Store>,
    templates: bool,
    out: &mut StoreOutcome,
) -> Result<(), crate::store::StoreError> {
    let mut pending = IngestBatch::new();
    let mut described = 0usize;
    let mut described_bytes = 0usize;
    // The first descriptions go at once (a worker's first batch), so the committer starts
    // while the workers scan on instead of waiting for a whole flush of them.
    let mut first = true;
    for batch in rx {
        for fp in batch.incidents.keys() {
            out.fingerprints.insert(fp.0);
        }
        for fp in batch.undescribed.iter().flat_map(|u| &u.lines) {
            out.fingerprints.insert(fp.0);
        }
        if let (Some(dry), Some(existing)) = (dry, &mut out.existing) {
            for fp in dry.existing_of(batch.incidents.keys())? {
                existing.insert(fp.0);
            }
        }
        for (k, n) in &batch.key_counts {
            match out.key_counts.get_mut(k.as_str()) {
                Some(c) => *c += n,
                None => {
                    out.key_counts.insert(k.clone(), *n);
                }
            }
        }
        for d in batch.incidents.values().filter_map(|d| d.new.as_ref()) {
            described += 1;
            described_bytes += d.heap_bytes();
        }
        // Merge the smaller into the larger: a merge walks its argument.
        if batch.incidents.len() > pending.incidents.len() {
            let earlier = std::mem::replace(&mut pending, batch);
            pending.merge_earlier(earlier);
        } else {
            pending.merge(batch);
        }
        let held = described_bytes
            + (pending.incidents.len() + pending.key_counts.len()) * PENDING_ENTRY_BYTES;
        let flush = if held >= COMMIT_BYTES
            || pending.incidents.len() >= PENDING_COUNTS
            || (templates && described >= TEMPLATE_DESCRIBED_PER_FLUSH)
        {
            Some(std::mem::take(&mut pending))
        } else if (described >= DESCRIBED_PER_FLUSH
            || ((first || pace.wants_work()) && described > 0)
            || pending.undescribed_lines() >= UNDESCRIBED_PER_FLUSH)
            && !templates
        {
            // Only the new descriptions (with their counts) and the per-key sums go now; the
            // counts of fingerprints described before stay until COMMIT_BYTES or the end.
            // Sending them too would rewrite every incident seen so far (its record and its
            // indexes) at each flush: on a corpus of 28,000 known errors that was most of
            // the first scan's time and all of a rescan's.
            // The per-key sums wait too: a flush while the committer waits may hold a few
            // dozen descriptions beside the sums of a few hundred keys, each a row to
            // rewrite.
            let mut flush = std::mem::take(&mut pending);
            pending.incidents = flush.incidents.extract_if(|_, d| d.new.is_none()).collect();
            pending.key_counts = std::mem::take(&mut flush.key_counts);
            Some(flush)
        } else {
            None
        };
        if let Some(flush) = flush {
            pace.handing();
            if ftx.send(flush).is_err() {
                // The committer stopped on an error; it reports it.
                return Ok(());
            }
            (described, described_bytes) = (0, 0);
            first = false;
        }
    }
    if !pending.is_empty() {
        pace.handing();
        let _ = ftx.send(pending);
    }
    Ok(())
}

/// What the committer did.
#[derive(Default)]
struct Committed {
    created: u64,
    touched: DistinctCounter,
    folded_n: u64,
}

/// The committing half of the store thread: applies each flush in the open transaction
/// (committing it when full), after sending the counts of fingerprints folded earlier to
/// their overflow incident and adding the counts still waiting for their description.
fn commit_loop(
    store: Option<&Store>,
    shared: Arc<SharedFingerprints>,
    pace: &Pace,
    frx: crossbeam_channel::Receiver<IngestBatch>,
) -> Result<Committed, crate::store::StoreError> {
    let mut w = Flusher {
        store,
        shared,
        txn: None,
        txn_new: 0,
        txn_since: std::time::Instant::now(),
        touched: DistinctCounter::default(),
        created: 0,
        folded: HashMap::new(),
        folded_n: 0,
        now: jiff::Timestamp::now(),
        known: None,
    };
    // Counts of incidents whose description has not arrived yet.
    let mut waiting = IngestBatch::new();
    // Says when it waits for work (see `Pace`), and when it stops, so that no worker waits
    // for its turn after an error.
    let _stopped = pace.stopped_on_drop();
    let next = || match frx.try_recv() {
        Ok(b) => {
            pace.taken();
            Some(b)
        }
        Err(crossbeam_channel::TryRecvError::Disconnected) => None,
        Err(crossbeam_channel::TryRecvError::Empty) => {
            pace.waiting();
            let b = frx.recv().ok();
            pace.working();
            if b.is_some() {
                pace.taken();
            }
            b
        }
    };
    while let Some(mut batch) = next() {
        if !w.folded.is_empty() {
            let moved: Vec<IncidentDelta> = batch
                .incidents
                .extract_if(|fp, d| d.new.is_none() && w.folded.contains_key(fp))
                .map(|(fp, d)| IncidentDelta::count_only(w.folded[&fp], d.count))
                .collect();
            for d in moved {
                let mut one = IngestBatch::new();
                one.incidents.insert(d.fingerprint, d);
                batch.merge(one);
            }
        }
        batch.merge(std::mem::take(&mut waiting));
        waiting = batch;
        let before = w.created;
        w.flush(&mut waiting, false)?;
        pace.created(w.created > before);
    }
    w.flush(&mut waiting, true)?;
    // Every worker has handed over everything, so every description has arrived.
    debug_assert!(
        waiting.incidents.is_empty(),
        "counts left without a description"
    );
    Ok(Committed {
        created: w.created,
        touched: w.touched,
        folded_n: w.folded_n,
    })
}

/// The store thread's writing half: one open transaction over several flushes.
struct Flusher<'s> {
    store: Option<&'s Store>,
    shared: Arc<SharedFingerprints>,
    txn: Option<crate::store::StoreTxn<'s>>,
    /// Incidents created in the open transaction, and when it began.
    txn_new: u64,
    txn_since: std::time::Instant,
    /// Fingerprints created or updated: their number minus the created is the preexisting.
    touched: DistinctCounter,
    created: u64,
    /// Folded fingerprints that may still arrive as counts alone → their overflow incident.
    folded: HashMap<Fingerprint, Fingerprint>,
    folded_n: u64,
    /// The run's time: every incident the scan creates or sees again is first or last seen
    /// at the same moment, so that the counts of an incident that arrive in several flushes
    /// move its recency entries once, not at every flush (which, on a rescan, moved every
    /// incident twice).
    now: jiff::Timestamp,
    /// Every incident's fingerprint, taken when a key last went over its budget (see
    /// [`KNOWN_MAX`]), so that the undescribed lines of such keys are checked here, not
    /// looked up one by one in the store.
    known: Option<Vec<u64>>,
}

/// The most incidents whose fingerprints [`Flusher::known`] holds (8 MiB): past it,
/// undescribed lines are looked up in the store.
const KNOWN_MAX: u64 = 1 << 20;

impl Flusher<'_> {
    /// Applies `pending` (leaving in it the counts that wait for their description); commits
    /// when the transaction is full or `last`.
    fn flush(
        &mut self,
        pending: &mut IngestBatch,
        last: bool,
    ) -> Result<(), crate::store::StoreError> {
        let batch = std::mem::take(pending);
        let Some(store) = self.store else {
            return Ok(());
        };
        if !batch.is_empty() {
            let t = match &mut self.txn {
                Some(t) => t,
                None => {
                    self.txn_since = std::time::Instant::now();
                    self.txn.insert(store.begin_write()?)
                }
            };
            let mut batch = batch;
            if let Some(known) = &self.known {
                check_absent(&mut batch, known);
            }
            let o = t.apply(&batch, self.now)?;
            // Counts of incidents whose description is still on its way wait for it.
            for d in o.deferred {
                pending.incidents.insert(d.fingerprint, d);
            }
            self.folded_n += o.folded.len() as u64 + o.folded_undescribed;
            if o.overflowing.iter().any(|k| !self.shared.is_overflowing(k)) {
                // Taken before the key is said to be over its budget: its undescribed lines
                // come after, and no incident of it is created later in the run (the run
                // has one time, so its window is spent for the rest of it). Another key's
                // incidents have other fingerprints (the key is part of the line).
                self.known = t.fingerprints(KNOWN_MAX)?;
            }
            for key in &o.overflowing {
                if self.shared.mark_overflowing(key) {
                    tracing::debug!(
                        key = %key,
                        "over its budget of new incidents: its new fingerprints are sent \
                         without descriptions for the rest of the scan"
                    );
                }
            }
            for (fp, to) in o.folded {
                if self.shared.contains(fp) {
                    self.folded.insert(fp, to);
                }
            }
            self.created += o.created.len() as u64;
            self.txn_new += o.created.len() as u64;
            for fp in o.created.iter().chain(&o.updated) {
                self.touched.insert(fp.0);
            }
        }
        if last || self.txn_new >= NEW_PER_COMMIT || self.txn_since.elapsed() >= COMMIT_EVERY {
            if let Some(t) = self.txn.take() {
                t.commit()?;
            }
            self.txn_new = 0;
        }
        Ok(())
    }
}

/// Splits the undescribed lines of `batch` by `known` (every incident's fingerprint,
/// sorted): a known one becomes a count of its incident, the rest are marked absent (see
/// [`crate::store::Undescribed::absent`]).
fn check_absent(batch: &mut IngestBatch, known: &[u64]) {
    for u in &mut batch.undescribed {
        if u.absent {
            continue;
        }
        u.lines.retain(|fp| {
            if known.binary_search(&fp.0).is_err() {
                return true;
            }
            match batch.incidents.entry(*fp) {
                std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().count += 1,
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(IncidentDelta::count_only(*fp, 1));
                }
            }
            false
        });
        u.absent = true;
    }
}

/// Opens the files and cuts them into work units.
pub fn plan(files: &[PathBuf], threads: usize) -> (Vec<Work>, Vec<(String, String)>) {
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
            regular: meta.is_file(),
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

/// A short reason for an I/O error, for a message about a file.
pub fn describe_io(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Undescribed;

    #[test]
    fn undescribed_lines_of_known_fingerprints_become_their_counts_and_the_rest_absent() {
        let mut b = IngestBatch::new();
        b.incidents
            .insert(Fingerprint(3), IncidentDelta::count_only(Fingerprint(3), 5));
        let key: Arc<str> = Arc::from("PACT:a:b");
        for fp in [1, 2, 1, 3, 4] {
            Undescribed::push(&mut b.undescribed, &key, Fingerprint(fp));
        }
        check_absent(&mut b, &[1, 3, 7]);
        assert_eq!(b.incidents[&Fingerprint(1)].count, 2);
        assert_eq!(b.incidents[&Fingerprint(3)].count, 6);
        assert!(b.incidents.values().all(|d| d.new.is_none()));
        let u = &b.undescribed[0];
        assert!(u.absent);
        assert_eq!(u.lines, [Fingerprint(2), Fingerprint(4)]);
    }
}
