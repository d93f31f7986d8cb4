//! File sources: glob discovery, sharded tailing, rotation, committed positions.
//!
//! # Threads
//!
//! - The **coordinator** expands every source's glob, stats what it finds and keeps the
//!   map of tracked files by identity ([`FileKey`]: device and inode). A file it has not
//!   seen before goes to the least loaded shard; a tracked file no longer found at any
//!   matched path (renamed away, deleted) is *detached*: its shard drains it through the
//!   open handle (a closed one is first looked for by identity in its directory) and
//!   closes it once it has been idle for the rotate wait. A file inotify
//!   reports created or moved into a watched directory is tracked at once (one stat of
//!   that path). The globs are expanded at most once a [`RESCAN_INTERVAL`]: promptly
//!   (within that cap) after inotify reported something gone or a directory created, else
//!   every [`WATCHED_RESCAN_INTERVAL`] as a safety net — or every [`RESCAN_INTERVAL`] while
//!   a glob's directory cannot be watched (missing, inotify unavailable).
//! - Each **shard** owns its files: it polls them (polling is the source of truth; an
//!   inotify write event on a file has its shard poll that file at once), reads what was
//!   appended in big chunks, frames and scans the bytes and folds the error lines into a
//!   batch, which it sends to the ingest writer together with the position each file
//!   reached. The writer commits counts and positions in one transaction, so a restart
//!   resumes exactly after the last counted line. Each file is polled on its own schedule:
//!   again at once after data, then backing off from 10 ms up to 250 ms while the file had
//!   data in the last 10 s, and up to 1 s once it is idle.
//!
//! # Descriptors
//!
//! Thousands of files under a descriptor limit of 1024 or 256 are ordinary, so the file
//! sources never hold one descriptor per file: they hold at most `max_open_files` (default
//! [`default_max_open_files`]: half the soft limit, at most [`DEFAULT_MAX_OPEN_FILES`]). The
//! private `open_set` module splits them between the shards and a few pins (files the
//! coordinator or the inotify handler open at once, so that a file rotated away right after
//! it appeared is still read); without a free pin a file is handed to its shard closed. A
//! shard closes the files that gave data longest ago (read to their end, never one
//! draining a rotation) to make room, and reopens a closed file by identity when its
//! `stat` shows a change (the `shard` module says how): a file's position survives any
//! number of closes. EMFILE / ENFILE are faults, logged once, counted
//! (`sentinel_descriptor_refusals_total`, `sentinel_files_waiting_for_descriptor`) and
//! retried; a glob expansion that could not list a directory never takes its files for
//! gone. inotify's watch budget running out turns the directories it misses to polling
//! (said once, `sentinel_inotify_watch_limit_total`).
//!
//! # Idle cost
//!
//! Waiting is a timer or a channel, never a spin, and nothing wakes on Sentinel's own reads
//! (the private `watch` module says which inotify events wake whom). An idle daemon
//! therefore costs one `fstat` per open tailed file (a `stat` of its path per closed one)
//! per second plus one glob expansion every few seconds (`sentinel_file_polls_total`,
//! `sentinel_glob_expansions_total`, `sentinel_inotify_events_total{kind}` show it).
//!
//! # Identity, generations, rotation
//!
//! A file's identity is its (device, inode) plus the xxh3 of its first ≤ 1 KiB (the head),
//! stored with the position. When the file at a known inode is smaller than the position,
//! or its head changed, it is a new *generation* of that key; the one that ended is kept
//! (head and offset, in the position record too). Every file that starts from byte 0 is
//! first decided by its head (the private `heads` module): a copy of an ended generation
//! continues it at its offset, a copy of one being read is not read, anything else is read
//! from 0:
//!
//! | rotation | what happens | loss |
//! |---|---|---|
//! | rename + create | the old inode is drained to EOF through its open handle, then the new file is read from 0 | none |
//! | delete + recreate | the same (a deleted file stays readable through the handle) | none |
//! | copytruncate | truncation noticed (size below the read position, or the head changed) ⇒ the generation ended; its copy (found by the globs or beside the file, `Coordinator::find_copies`) continues it; the file's new generation is decided and read from 0 | lines appended between logrotate's copy and its truncate, and not read before the truncate: they are in no file |
//! | compress | compressed files are never read | none |
//! | `cp` | a copy of a file being read is not read | none |
//! | inode reuse | head mismatch ⇒ new generation | none |
//!
//! A crash while a rotated-away file was still being drained is covered too: at start the
//! coordinator looks for files of unfinished positions in the directory they were last
//! seen in, by identity (`app.log` renamed to `app.log.1`), and drains them.
//!
//! Files present at the very first start are read from the beginning, or, with
//! `start_at: end`, from after their last complete line; files that appear later are
//! always read from byte 0. Symlinks are skipped unless `follow_symlinks` is set.

mod heads;
mod open_set;
mod shard;
mod start;
mod watch;

pub use open_set::{DEFAULT_MAX_OPEN_FILES, MAX_PINS, default_max_open_files};
use open_set::{OpenSet, Pinned};
pub use start::start;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, never, select, unbounded};
use jiff::Timestamp;

use crate::attribute::LiveRules;
use crate::config::{FileSourceConfig, LogFormat, StartAt, resolve_path};
use crate::ingest::writer::{FileBatch, WriterHandle};
use crate::metrics::Metrics;
use crate::scan::matcher::PatternError;
use crate::scan::{Scanner, ScannerBuilder};
use crate::source::SourceDefaults;
use crate::store::{EndedGeneration, FileKey, FilePosition};

/// Globs are expanded at most once in this interval (inotify's create and move events
/// included), and at least once in it while a glob's directory cannot be watched.
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(1);
/// How often globs are expanded when inotify watches every glob's directory and reports
/// nothing (a safety net: events lost or raced, e.g. files created in a new subdirectory
/// before its watch was added).
pub const WATCHED_RESCAN_INTERVAL: Duration = Duration::from_secs(5);
/// How long a rotated-away or deleted file stays open after its last data.
pub const DEFAULT_ROTATE_WAIT: Duration = Duration::from_secs(5);
/// Positions of files not found anywhere for this long are forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);
/// Total counter that records that file sources have started before (see `start_at`).
const STARTS_TOTAL: &str = "file_source_starts";

/// One configured file source, resolved.
#[derive(Debug)]
pub struct FileSpec {
    /// The source's name (metrics label).
    pub name: Arc<str>,
    /// The glob, absolute.
    pub pattern: String,
    /// How lines are read.
    pub format: LogFormat,
    /// Where to start in files present at the very first start.
    pub start_at: StartAt,
    /// Whether symlinks are followed.
    pub follow_symlinks: bool,
    /// The error-line scanner.
    pub scanner: Scanner,
}

/// Why a file source could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileSourceError {
    /// The glob is invalid.
    #[error("source {name:?}: invalid glob {pattern:?}: {message}")]
    Glob {
        /// The source.
        name: String,
        /// The pattern.
        pattern: String,
        /// What is wrong.
        message: String,
    },
    /// An error pattern is invalid.
    #[error("source {name:?}: {source}")]
    Pattern {
        /// The source.
        name: String,
        /// The cause.
        source: PatternError,
    },
    /// A thread could not be started.
    #[error("cannot start file source threads: {0}")]
    Io(#[from] std::io::Error),
}

impl FileSpec {
    /// Resolves a `type: file` source: a relative `path` is relative to the config file's
    /// directory (like `state_dir`); the patterns are the source's own or the top-level ones.
    ///
    /// # Errors
    ///
    /// [`FileSourceError`] for an invalid glob or pattern.
    pub fn from_config(
        src: &FileSourceConfig,
        defaults: &SourceDefaults,
    ) -> Result<FileSpec, FileSourceError> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let pattern = resolve_path(&src.path, &defaults.base_dir, home.as_deref())
            .to_string_lossy()
            .into_owned();
        if let Err(e) = glob::Pattern::new(&pattern) {
            return Err(FileSourceError::Glob {
                name: src.common.name.clone(),
                pattern,
                message: e.msg.to_string(),
            });
        }
        let patterns = src
            .common
            .error_patterns
            .as_ref()
            .unwrap_or(&defaults.error_patterns);
        let scanner = ScannerBuilder::new()
            .max_line_bytes(defaults.max_line_bytes)
            .build(patterns)
            .map_err(|source| FileSourceError::Pattern {
                name: src.common.name.clone(),
                source,
            })?;
        Ok(FileSpec {
            name: Arc::from(src.common.name.as_str()),
            pattern,
            format: src.common.format,
            start_at: src.start_at,
            follow_symlinks: src.follow_symlinks,
            scanner,
        })
    }
}

/// Tuning of the file sources.
#[derive(Debug, Clone)]
pub struct Options {
    /// Shard threads.
    pub shards: usize,
    /// How long a detached file stays open after its last data.
    pub rotate_wait: Duration,
    /// Paths under these directories are never tailed (Sentinel's own state).
    pub exclude: Vec<PathBuf>,
    /// The most descriptors the file sources hold (`max_open_files`; None: the default,
    /// [`default_max_open_files`] of the soft limit).
    pub max_open_files: Option<usize>,
}

/// What the file sources found at start.
#[derive(Debug, Clone, Default)]
pub struct StartSummary {
    /// Files matched per source, in configuration order.
    pub files: Vec<(Arc<str>, usize)>,
    /// Files found only by identity (rotated away before a crash) and drained.
    pub recovered: usize,
    /// Whether this was the first start (`start_at` applies).
    pub first_start: bool,
    /// The most descriptors the file sources hold.
    pub max_open_files: usize,
}

/// The running file sources.
#[derive(Debug)]
pub struct FileSources {
    stop: Arc<AtomicBool>,
    wakers: Vec<Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl FileSources {
    /// Starts discovery and the shards. `positions` and `starts` come from the store
    /// ([`crate::store::Store::file_positions`], the `file_source_starts` total).
    ///
    /// # Errors
    ///
    /// [`FileSourceError::Io`] when threads cannot be started.
    pub fn start(
        specs: Vec<FileSpec>,
        options: Options,
        positions: HashMap<FileKey, FilePosition>,
        starts: u64,
        rules: Arc<LiveRules>,
        writer: WriterHandle,
        metrics: Arc<Metrics>,
    ) -> Result<(FileSources, StartSummary), FileSourceError> {
        let specs: Vec<Arc<FileSpec>> = specs.into_iter().map(Arc::new).collect();
        for s in &specs {
            metrics.touch_source(&s.name);
            metrics.touch_file_source(&s.name);
            metrics.files_tracked.with_label_values(&[&s.name]).set(0);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let shards = options.shards.max(1);
        let max_open = options
            .max_open_files
            .unwrap_or_else(|| default_max_open_files(crate::limits::soft_open_files_limit()));
        let open_set = OpenSet::new(max_open, shards, metrics.files_open.clone());
        let heads = Arc::new(heads::Heads::new(&positions));
        let (report_tx, report_rx) = unbounded();
        let mut wakers = Vec::new();
        let mut controls = Vec::new();
        let mut threads = Vec::new();
        for id in 0..shards {
            let (ctl_tx, ctl_rx) = unbounded();
            let (wake_tx, wake_rx) = bounded(1);
            let shard = shard::Shard::new(shard::ShardParts {
                control: ctl_rx,
                wake: wake_rx,
                reports: report_tx.clone(),
                writer: writer.clone(),
                metrics: metrics.clone(),
                rules: rules.clone(),
                stop: stop.clone(),
                rotate_wait: options.rotate_wait,
                open_set: open_set.clone(),
                heads: heads.clone(),
            });
            threads.push(
                std::thread::Builder::new()
                    .name(format!("sentinel-shard-{id}"))
                    .spawn(move || shard.run())?,
            );
            controls.push(ctl_tx);
            wakers.push(wake_tx);
        }
        let (coord_wake_tx, coord_wake_rx) = bounded(1);
        let first_start = starts == 0;
        // Watch before the first expansion, so that nothing falls between the two.
        let routes = watch::Routes::default();
        let mut bases: Vec<(PathBuf, bool)> = Vec::new();
        for s in &specs {
            let (dir, recursive) = glob_base(&s.pattern);
            match bases.iter_mut().find(|(d, _)| *d == dir) {
                Some((_, r)) => *r |= recursive,
                None => bases.push((dir, recursive)),
            }
        }
        let lost = Arc::new(AtomicBool::new(false));
        let changes = watch::Changes::new(
            open_set.clone(),
            watch::WatchLimit::new(metrics.inotify_watch_limit.clone()),
        );
        let specs_patterns = specs
            .iter()
            .map(|s| glob::Pattern::new(&s.pattern).ok())
            .collect();
        let handler = watch::Handler::new(
            routes.clone(),
            changes.clone(),
            specs
                .iter()
                .filter_map(|s| glob::Pattern::new(&s.pattern).ok())
                .collect(),
            wakers.clone(),
            coord_wake_tx.clone(),
            bases.iter().map(|(d, _)| d.clone()).collect(),
            lost.clone(),
            options.exclude.clone(),
            &metrics,
        );
        let dir_watch = watch::DirWatch::start(bases, handler, lost);
        let expansions = specs
            .iter()
            .map(|s| metrics.glob_expansions.with_label_values(&[&s.name]))
            .collect();
        let mut coord = Coordinator {
            specs,
            exclude: options.exclude,
            tracked: HashMap::new(),
            positions,
            controls,
            load: vec![0; shards],
            reports: report_rx,
            wake: coord_wake_rx,
            warned: HashSet::new(),
            first_start,
            writer,
            stop: stop.clone(),
            patterns: specs_patterns,
            routes,
            changes,
            dir_watch,
            expansions,
            open_set: open_set.clone(),
            heads,
        };
        let mut summary = coord.first_round();
        summary.max_open_files = open_set.capacity();
        tracing::info!(
            max_open_files = summary.max_open_files,
            open_files_limit = %crate::limits::open_files_limit_text(),
            "file sources hold at most {} files open (idle files are closed and reopened by identity)",
            summary.max_open_files
        );
        let mut all_wakers = wakers.clone();
        all_wakers.push(coord_wake_tx);
        threads.push(
            std::thread::Builder::new()
                .name("sentinel-files".into())
                .spawn(move || coord.run())?,
        );
        Ok((
            FileSources {
                stop,
                wakers: all_wakers,
                threads,
            },
            summary,
        ))
    }

    /// Stops discovery and the shards: each sends what it has read (counts and positions)
    /// to the writer and exits. Returns once every thread has stopped.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for w in &self.wakers {
            let _ = w.try_send(());
        }
        for t in self.threads {
            if t.join().is_err() {
                tracing::error!("a file source thread panicked");
            }
        }
    }
}

/// The directory a glob starts from (its longest literal directory prefix) and whether
/// matches may lie below its immediate children.
fn glob_base(pattern: &str) -> (PathBuf, bool) {
    let meta = |c: char| matches!(c, '*' | '?' | '[' | '{');
    let first_meta = pattern.find(meta);
    let literal = &pattern[..first_meta.unwrap_or(pattern.len())];
    let dir = match literal.rfind('/') {
        Some(0) => PathBuf::from("/"),
        Some(i) => PathBuf::from(&literal[..i]),
        None => PathBuf::from("."),
    };
    let rest = &pattern[dir.as_os_str().len()..];
    let recursive = rest.trim_start_matches('/').contains('/') || rest.contains("**");
    (dir, recursive)
}

/// A control message to a shard.
#[derive(Debug)]
enum Control {
    /// Start tailing this file.
    Open(OpenFile),
    /// The file is no longer found at any matched path: drain it and close it.
    Detach(FileKey),
    /// The file is (again) found at this path.
    Attach(FileKey, PathBuf),
}

#[derive(Debug)]
struct OpenFile {
    key: FileKey,
    /// Opened by the coordinator or the event handler (its identity checked), or None:
    /// closed, the shard opens it by path (and checks its identity) when it has room.
    file: Option<Pinned>,
    path: PathBuf,
    spec: Arc<FileSpec>,
    start: Start,
    /// Found by identity only (rotated away before a crash): drain and close.
    detached: bool,
    /// Set by an inotify event on the file: poll it now.
    woken: Arc<AtomicBool>,
}

/// Where to start reading a newly tracked file.
#[derive(Debug, Clone)]
enum Start {
    Beginning,
    End,
    Resume(FilePosition),
    /// Found by [`Coordinator::find_copies`] beside a file that was truncated: continued
    /// if its head is an ended generation's, read from 0 if its head is unknown, not read
    /// if it is a copy of a generation still being read.
    Copy,
}

/// A shard's report to the coordinator.
#[derive(Debug)]
enum Report {
    /// The shard closed the file; its last position (None when it could not be opened).
    Closed(FileKey, Option<FilePosition>),
    /// The file (last seen at this path) was truncated or replaced: the generation that
    /// ended may have left a copy beside it.
    Ended(FileKey, PathBuf, EndedGeneration),
}

/// How recently (inode change time) a file must have appeared to be looked at as the copy
/// of a generation that just ended.
const COPY_AGE: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Tracked {
    shard: usize,
    path: PathBuf,
    detached: bool,
    /// Shared with the shard and the inotify handler's route to the file.
    woken: Arc<AtomicBool>,
}

struct Coordinator {
    specs: Vec<Arc<FileSpec>>,
    exclude: Vec<PathBuf>,
    tracked: HashMap<FileKey, Tracked>,
    /// Committed (or about to be) positions of files not tracked now.
    positions: HashMap<FileKey, FilePosition>,
    controls: Vec<Sender<Control>>,
    load: Vec<usize>,
    reports: Receiver<Report>,
    wake: Receiver<()>,
    warned: HashSet<PathBuf>,
    first_start: bool,
    writer: WriterHandle,
    stop: Arc<AtomicBool>,
    /// Tracked paths, for the inotify handler.
    routes: watch::Routes,
    /// What inotify reported created, moved in or gone, for this thread.
    changes: watch::Changes,
    /// The specs' globs, compiled (for [`Coordinator::adopt`]).
    patterns: Vec<Option<glob::Pattern>>,
    dir_watch: watch::DirWatch,
    /// `sentinel_glob_expansions_total`, per spec.
    expansions: Vec<prometheus::IntCounter>,
    /// The bounded set of descriptors (this thread takes pins from it).
    open_set: Arc<OpenSet>,
    /// The head fingerprints of the generations known (see [`heads`]).
    heads: Arc<heads::Heads>,
}

impl Coordinator {
    /// Tracks files inotify reported created or moved in at once; expands the globs at
    /// most once per [`RESCAN_INTERVAL`]: as soon as that allows after inotify reported a
    /// file or directory gone (or a directory created), else on the periodic timer. In
    /// between it blocks on its channels.
    fn run(mut self) {
        let mut last = Instant::now();
        let mut prompted = false;
        let mut reports = self.reports.clone();
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            let (paths, moved, expand) = self.changes.take();
            if !paths.is_empty() || !moved.is_empty() {
                self.adopt(paths, moved);
            }
            prompted |= expand;
            let every = if prompted {
                RESCAN_INTERVAL
            } else if self.dir_watch.is_complete() {
                WATCHED_RESCAN_INTERVAL
            } else {
                RESCAN_INTERVAL
            };
            let due = last + every;
            let now = Instant::now();
            if now < due {
                select! {
                    recv(self.wake) -> m => match m {
                        Ok(()) => {}
                        // Every waker is gone: nobody can stop us any more but the flag.
                        Err(_) => return,
                    },
                    recv(reports) -> r => match r {
                        Ok(r) => self.report(r),
                        // The shards are gone (they stop with us): stop listening.
                        Err(_) => reports = never(),
                    },
                    default(due - now) => {}
                }
                continue;
            }
            self.handle_reports();
            self.dir_watch.refresh();
            let (seen, complete) = self.discover();
            self.reconcile(seen, false, complete);
            last = Instant::now();
            prompted = false;
        }
    }

    /// The first discovery: summary, `start_at`, recovery of files rotated away before a
    /// crash, forgetting positions of files long gone.
    fn first_round(&mut self) -> StartSummary {
        let (seen, complete) = self.discover();
        let mut summary = StartSummary {
            first_start: self.first_start,
            ..StartSummary::default()
        };
        for (i, s) in self.specs.iter().enumerate() {
            let n = seen.values().filter(|(_, spec)| *spec == i).count();
            summary.files.push((s.name.clone(), n));
        }
        // Unfinished positions whose file is not at a matched path: look for the file by
        // identity where it was last seen.
        let missing: Vec<(FileKey, FilePosition)> = self
            .positions
            .iter()
            .filter(|(k, _)| !seen.contains_key(k))
            .map(|(k, p)| (*k, p.clone()))
            .collect();
        let mut by_dir: HashMap<PathBuf, Vec<(FileKey, FilePosition)>> = HashMap::new();
        for (k, p) in missing {
            let dir = Path::new(&p.path)
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            by_dir.entry(dir).or_default().push((k, p));
        }
        let mut forget = Vec::new();
        let now = Timestamp::now();
        for (dir, wanted) in by_dir {
            let mut found: HashMap<FileKey, (PathBuf, u64)> = HashMap::new();
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    let path = e.path();
                    if let Ok(m) = std::fs::symlink_metadata(&path)
                        && m.is_file()
                        && !self.is_excluded(&path)
                    {
                        found.insert(
                            FileKey {
                                dev: m.dev(),
                                ino: m.ino(),
                            },
                            (path, m.len()),
                        );
                    }
                }
            }
            for (k, p) in wanted {
                match found.remove(&k) {
                    Some((path, size)) if size > p.offset => {
                        let spec = self.spec_for(&p.path);
                        tracing::info!(
                            file = %path.display(),
                            was = %p.path,
                            "draining a file rotated away before the last stop"
                        );
                        self.open(k, path, spec, Start::Resume(p), true);
                        summary.recovered += 1;
                    }
                    _ => {
                        let age = now.duration_since(p.updated);
                        if age.as_secs() > FORGET_AFTER.as_secs() as i64 {
                            forget.push(k);
                        }
                    }
                }
            }
        }
        for k in &forget {
            self.positions.remove(k);
            self.heads.forget(*k);
        }
        self.reconcile(seen, self.first_start, complete);
        // Record the start (and forget stale positions) through the writer.
        let mut batch = FileBatch {
            source: Arc::from("files"),
            forget,
            ..FileBatch::default()
        };
        batch.batch.totals.insert(STARTS_TOTAL, 1);
        let _ = self.writer.send_files(batch);
        summary
    }

    /// The spec whose glob matches `path`, else the first (only used to label a recovered
    /// file).
    fn spec_for(&self, path: &str) -> usize {
        self.specs
            .iter()
            .position(|s| glob::Pattern::new(&s.pattern).is_ok_and(|p| p.matches(path)))
            .unwrap_or(0)
    }

    fn is_excluded(&self, path: &Path) -> bool {
        self.exclude.iter().any(|d| path.starts_with(d))
    }

    /// Expands every glob: file identity → (path, spec index), first match wins; and
    /// whether every directory could be listed (a directory that could not, for want of a
    /// descriptor say, must not make its files look gone).
    fn discover(&mut self) -> (HashMap<FileKey, (PathBuf, usize)>, bool) {
        let mut seen = HashMap::new();
        let mut complete = true;
        for (i, spec) in self.specs.iter().enumerate() {
            self.expansions[i].inc();
            let Ok(paths) = glob::glob(&spec.pattern) else {
                continue;
            };
            for path in paths {
                let path = match path {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot list a directory; no file of this expansion is taken for gone");
                        complete = false;
                        continue;
                    }
                };
                if let Some(key) = identify(&path, spec, &self.exclude, &mut self.warned) {
                    seen.entry(key).or_insert((path, i));
                }
            }
        }
        (seen, complete)
    }

    /// Tracks files that inotify reported created or moved in, without listing anything
    /// (see [`watch`]): the first source whose glob matches a path gets it. Files that left
    /// are noticed by the next expansion.
    ///
    /// A file moved from a matched path to an unmatched one (rotated) that is not tracked
    /// (it appeared and was rotated away before this thread saw it) is opened detached: it
    /// is read from the start (or its committed position), drained and closed.
    fn adopt(&mut self, paths: Vec<(PathBuf, Option<Pinned>)>, moved: Vec<(PathBuf, PathBuf)>) {
        for (path, file) in paths {
            let Some(i) = self.matching_spec(&path) else {
                continue;
            };
            // Pinned by the event handler: that file, wherever it is now (the next
            // expansion detaches it if it left).
            let pinned = file.and_then(|f| {
                let m = f.file.metadata().ok()?;
                let key = FileKey {
                    dev: m.dev(),
                    ino: m.ino(),
                };
                (m.is_file() && !self.is_excluded(&path)).then_some((key, f))
            });
            match pinned {
                Some((key, _)) if self.tracked.contains_key(&key) => {
                    self.track(key, &path, i, false);
                }
                Some((key, f)) => {
                    let start = match self.positions.remove(&key) {
                        Some(p) => Start::Resume(p),
                        None => Start::Beginning,
                    };
                    self.hand_over(key, Some(f), path, i, start, false);
                }
                None => {
                    if let Some(key) =
                        identify(&path, &self.specs[i], &self.exclude, &mut self.warned)
                    {
                        self.track(key, &path, i, false);
                    }
                }
            }
        }
        for (from, to) in moved {
            if self.matching_spec(&to).is_some() {
                continue; // reported as moved in
            }
            let Some(i) = self.matching_spec(&from) else {
                continue;
            };
            let Some(key) = identify(&to, &self.specs[i], &self.exclude, &mut self.warned) else {
                continue;
            };
            if self.tracked.contains_key(&key) {
                continue; // the next expansion detaches it
            }
            tracing::debug!(file = %to.display(), was = %from.display(), "draining a file rotated away before it was tracked");
            let start = match self.positions.remove(&key) {
                Some(p) => Start::Resume(p),
                None => Start::Beginning,
            };
            self.open(key, to, i, start, true);
        }
    }

    /// The first spec whose glob matches `path` (as `glob::glob` would list it).
    fn matching_spec(&self, path: &Path) -> Option<usize> {
        let opts = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: false,
        };
        self.patterns
            .iter()
            .position(|p| p.as_ref().is_some_and(|p| p.matches_path_with(path, opts)))
    }

    fn handle_reports(&mut self) {
        while let Ok(r) = self.reports.try_recv() {
            self.report(r);
        }
    }

    fn report(&mut self, r: Report) {
        match r {
            Report::Closed(key, pos) => {
                if let Some(t) = self.tracked.remove(&key) {
                    self.load[t.shard] = self.load[t.shard].saturating_sub(1);
                    self.routes.remove(&t.path, key);
                }
                if let Some(pos) = pos {
                    self.positions.insert(key, pos);
                }
            }
            Report::Ended(key, path, prev) => self.find_copies(key, &path, prev),
        }
    }

    /// The generation `prev` of the file `key` at `path` ended (truncated, replaced): looks
    /// in its directory for the copies `copytruncate` made before truncating — files
    /// Sentinel does not know, created within [`COPY_AGE`], whose head is that
    /// generation's or whose name extends the file's (`app.log.1`, `app.log-20261206`) —
    /// whether a glob matches their names or not (`*.log` does not match `app.log.1`).
    /// The one whose head is `prev`'s continues it from where reading it stopped; one
    /// named like a rotation of the file with a head Sentinel never saw holds a generation
    /// that came and went between two reads of the file (two rotations in that time) and
    /// is read from 0. A copy a glob matches is found this way or by an expansion, never
    /// both (the registry of heads lets one file continue a generation).
    fn find_copies(&mut self, key: FileKey, path: &Path, prev: EndedGeneration) {
        let Some(dir) = path.parent() else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let spec = self.spec_for(&path.to_string_lossy());
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        for e in entries.flatten() {
            let candidate = e.path();
            let Ok(m) = std::fs::symlink_metadata(&candidate) else {
                continue;
            };
            let k = FileKey {
                dev: m.dev(),
                ino: m.ino(),
            };
            if !m.is_file()
                || k == key
                || m.len() == 0
                || now.saturating_sub(m.ctime()) > COPY_AGE.as_secs() as i64
                || self.tracked.contains_key(&k)
                || self.positions.contains_key(&k)
                || self.is_excluded(&candidate)
            {
                continue;
            }
            let rotated_name = name.as_ref().is_some_and(|n| {
                e.file_name()
                    .to_str()
                    .is_some_and(|c| c.len() > n.len() && c.starts_with(n.as_str()))
            });
            if !rotated_name {
                let Ok(file) = File::open(&candidate) else {
                    continue;
                };
                let mut head = vec![0u8; usize::from(prev.head_len)];
                if std::os::unix::fs::FileExt::read_exact_at(&file, &mut head, 0).is_err()
                    || xxhash_rust::xxh3::xxh3_64(&head) != prev.head_hash
                {
                    continue;
                }
            }
            tracing::debug!(file = %candidate.display(), of = %path.display(), "found the copy of a truncated file");
            self.open(k, candidate, spec, Start::Copy, true);
        }
    }

    fn reconcile(&mut self, seen: HashMap<FileKey, (PathBuf, usize)>, first: bool, complete: bool) {
        // Known files found again are read again (resumed): a copy of one of them must not
        // be taken for a copy of an ended generation meanwhile.
        for key in seen.keys() {
            if self.positions.contains_key(key) {
                self.heads.set_live(*key);
            }
        }
        for (key, (path, spec)) in &seen {
            self.track(*key, path, *spec, first);
        }
        if !complete {
            return;
        }
        let gone: Vec<FileKey> = self
            .tracked
            .iter()
            .filter(|(k, t)| !t.detached && !seen.contains_key(k))
            .map(|(k, _)| *k)
            .collect();
        for key in gone {
            let Some(t) = self.tracked.get_mut(&key) else {
                continue;
            };
            t.detached = true;
            // Its events name another path now, or none: polling drains it.
            self.routes.remove(&t.path, key);
            let _ = self.controls[t.shard].send(Control::Detach(key));
        }
    }

    /// The file `key` is at `path`, matched by spec `spec`: open it, or attach it there.
    fn track(&mut self, key: FileKey, path: &Path, spec: usize, first: bool) {
        if let Some(t) = self.tracked.get_mut(&key) {
            if t.detached || t.path != path {
                if t.path != path {
                    self.routes.remove(&t.path, key);
                }
                self.routes.insert(
                    path.to_path_buf(),
                    watch::Route {
                        shard: t.shard,
                        key,
                        woken: t.woken.clone(),
                    },
                );
                t.detached = false;
                t.path = path.to_path_buf();
                let _ = self.controls[t.shard].send(Control::Attach(key, path.to_path_buf()));
            }
            return;
        }
        let start = match self.positions.remove(&key) {
            Some(p) => Start::Resume(p),
            None if first && self.specs[spec].start_at == StartAt::End => Start::End,
            None => Start::Beginning,
        };
        self.open(key, path.to_path_buf(), spec, start, false);
    }

    /// Opens the file `key` at `path` here when a pin is free, so that it is pinned before
    /// a rotation can move it on, and hands it to the least loaded shard; without a pin (or
    /// a descriptor) it is handed over closed. When the path no longer leads to `key`,
    /// nothing happens (the next event or expansion sees what is there now).
    fn open(&mut self, key: FileKey, path: PathBuf, spec: usize, start: Start, detached: bool) {
        let pinned = match self.open_set.try_pin() {
            None => None,
            Some(slot) => match File::open(&path) {
                Ok(file) => Some(Pinned { file, slot }),
                Err(e) if open_set::is_exhausted(&e) => None,
                Err(e) => {
                    tracing::debug!(file = %path.display(), error = %e, "cannot open a matched file; retrying later");
                    return;
                }
            },
        };
        if let Some(p) = &pinned
            && !p
                .file
                .metadata()
                .is_ok_and(|m| m.dev() == key.dev && m.ino() == key.ino)
        {
            tracing::debug!(file = %path.display(), "the path changed before it was opened");
            return;
        }
        self.hand_over(key, pinned, path, spec, start, detached);
    }

    /// Hands the open file `key` (found at `path`) to the least loaded shard.
    fn hand_over(
        &mut self,
        key: FileKey,
        file: Option<Pinned>,
        path: PathBuf,
        spec: usize,
        start: Start,
        detached: bool,
    ) {
        let shard = self
            .load
            .iter()
            .enumerate()
            .min_by_key(|(_, n)| **n)
            .map_or(0, |(i, _)| i);
        self.load[shard] += 1;
        self.heads.set_live(key);
        let woken = Arc::new(AtomicBool::new(false));
        self.tracked.insert(
            key,
            Tracked {
                shard,
                path: path.clone(),
                detached,
                woken: woken.clone(),
            },
        );
        self.routes.insert(
            path.clone(),
            watch::Route {
                shard,
                key,
                woken: woken.clone(),
            },
        );
        let _ = self.controls[shard].send(Control::Open(OpenFile {
            key,
            file,
            path,
            spec: self.specs[spec].clone(),
            start,
            detached,
            woken,
        }));
    }
}

/// The identity of the regular file at `path` (a glob match of `spec`); None when it is
/// gone, not a regular file, excluded, or a symlink `spec` does not follow (warned once).
fn identify(
    path: &Path,
    spec: &FileSpec,
    exclude: &[PathBuf],
    warned: &mut HashSet<PathBuf>,
) -> Option<FileKey> {
    if exclude.iter().any(|d| path.starts_with(d)) {
        return None;
    }
    let mut meta = std::fs::symlink_metadata(path).ok()?;
    if meta.file_type().is_symlink() {
        if !spec.follow_symlinks {
            if warned.insert(path.to_path_buf()) {
                tracing::warn!(
                    file = %path.display(),
                    source = %spec.name,
                    "skipping a symlink (set follow_symlinks: true to tail it)"
                );
            }
            return None;
        }
        meta = std::fs::metadata(path).ok()?;
    }
    meta.is_file().then(|| FileKey {
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

/// Reads the `file_source_starts` total (how many times file sources started before).
pub fn starts_total(totals: &std::collections::BTreeMap<String, u64>) -> u64 {
    totals.get(STARTS_TOTAL).copied().unwrap_or(0)
}

#[cfg(test)]
mod lag_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_base_finds_the_literal_directory() {
        assert_eq!(
            glob_base("/var/log/*.log"),
            (PathBuf::from("/var/log"), false)
        );
        assert_eq!(
            glob_base("/var/log/**/*.log"),
            (PathBuf::from("/var/log"), true)
        );
        assert_eq!(glob_base("/var/*/x.log"), (PathBuf::from("/var"), true));
        assert_eq!(glob_base("/a/app.log"), (PathBuf::from("/a"), false));
    }
}
