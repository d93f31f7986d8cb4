//! A shard: tails its files, folds their error lines and sends counts with positions.
//!
//! Every file has its own poll schedule: polled again at once after it gave data, then
//! after [`POLL_MIN`], doubling while nothing arrives, up to [`POLL_ACTIVE_MAX`] while it
//! had data within [`ACTIVE_FOR`] and up to [`POLL_IDLE_MAX`] after that. An inotify write
//! event on a file marks it to be polled at once and wakes the shard. In between the shard
//! blocks on its channels until the earliest file is due: a thousand idle files cost a
//! thousand `fstat`s (and zero-byte reads) a second, nothing more.
//!
//! # Closed files
//!
//! A shard holds at most its share of the open set ([`super::open_set`]) open. A tailed
//! file whose handle was closed keeps its position (offset, generation, head fingerprint)
//! here; its poll is a `stat` of its path instead of an `fstat`. When the path still leads
//! to its (device, inode) and its size or mtime differs from what was read, it is reopened
//! by identity: the same inode, a size not below what was read, and the same head bytes
//! resume at the offset; anything else (truncated, or an inode reused by a new file) is a
//! new generation read from byte 0. A file whose path no longer leads to it is left alone
//! until the coordinator detaches it; then it is looked for by identity in its directory
//! (renamed away) and drained, or, gone, finished. Closing loses nothing: the position is
//! where the next line starts, a held partial line is read again after the reopen.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, never, select};
use jiff::Timestamp;

use super::heads::{DECIDE_WAIT, Decision, HEAD_BYTES, Head, Heads, is_compressed};
use super::open_set::{OpenSet, Pinned, Slot, is_exhausted};
use super::{Control, FileSpec, OpenFile, Report, Start};
use crate::aggregate::LineAggregator;
use crate::attribute::LiveRules;
use crate::config::LogFormat;
use crate::ingest::ForwardLine;
use crate::ingest::writer::{FileBatch, WriterHandle};
use crate::metrics::Metrics;
use crate::scan::framing::LineReader;
use crate::scan::{ErrorLine, ScanStats, Sink};
use crate::store::{EndedGeneration, FileKey, FilePosition};

/// A file at least this far behind its end is caught up mapped (see [`catch_up`]), a turn's
/// worth at a time; closer to its end it is read in chunks.
const CATCH_UP_BYTES: u64 = 4 << 20;
/// Bytes read per read call.
const READ_BYTES: usize = 256 * 1024;
/// Bytes read from one file per turn before the shard moves to its next file.
const TURN_BYTES: u64 = 2 << 20;
/// A batch is sent once it holds this much (it is also sent at the end of every turn).
const FLUSH_BYTES: usize = 4 << 20;
/// A file's poll interval right after data, doubling while nothing arrives ...
const POLL_MIN: Duration = Duration::from_millis(10);
/// ... up to this while the file had data recently ...
const POLL_ACTIVE_MAX: Duration = Duration::from_millis(250);
/// ... ("recently")...
const ACTIVE_FOR: Duration = Duration::from_secs(10);
/// ... and this once the file is idle.
const POLL_IDLE_MAX: Duration = Duration::from_secs(1);
/// How soon a file that waits for a descriptor tries again.
const RETRY_OPEN: Duration = Duration::from_millis(50);

pub(super) struct ShardParts {
    pub(super) control: Receiver<Control>,
    pub(super) wake: Receiver<()>,
    pub(super) reports: Sender<Report>,
    pub(super) writer: WriterHandle,
    pub(super) metrics: Arc<Metrics>,
    pub(super) rules: Arc<LiveRules>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) rotate_wait: Duration,
    pub(super) open_set: Arc<OpenSet>,
    pub(super) heads: Arc<Heads>,
}

pub(super) struct Shard {
    p: ShardParts,
    files: Vec<Tailed>,
    /// Files open in this shard's share (pins not included).
    own_open: usize,
    /// Files waiting for a descriptor (counted in `sentinel_files_waiting_for_descriptor`).
    waiting: usize,
    /// Per source: what was read since the last send.
    accs: HashMap<Arc<str>, Acc>,
}

/// One tailed file.
struct Tailed {
    key: FileKey,
    path: PathBuf,
    /// `path` as the incidents' `source` label.
    label: Arc<str>,
    spec: Arc<FileSpec>,
    /// The open handle; None while closed (see the module docs).
    handle: Option<Handle>,
    /// Where the first open starts (a file handed over closed).
    pending: Option<Start>,
    /// While closed: the offset reached (the next line's start).
    offset: u64,
    /// While closed: the mtime when it was closed (seconds, nanoseconds).
    closed_mtime: (i64, i64),
    /// Waiting for a descriptor.
    waiting: bool,
    /// The last poll read it to its end (it may be closed without delay).
    at_eof: bool,
    generation: u32,
    head_len: u16,
    head_hash: u64,
    /// Size at the last poll (while closed: the bytes read when it was closed).
    last_size: u64,
    /// When the coordinator said the file is no longer at a matched path.
    detached: Option<Instant>,
    /// When the file last gave data (or was opened).
    last_data: Instant,
    /// Whether it gave data since it was opened (a file that never did is idle).
    had_data: bool,
    /// Set by an inotify event on the file: poll it now.
    woken: Arc<AtomicBool>,
    /// The current poll interval (zero: poll again at once, the last poll gave data).
    interval: Duration,
    /// When the file is polled next.
    next_poll: Instant,
    /// `sentinel_file_polls_total{source}`.
    polls: prometheus::IntCounter,
    /// The position last handed to the writer (None: never).
    sent: Option<(u32, u64, u16, PathBuf)>,
    /// The position must be sent even if unchanged (a new generation).
    dirty: bool,
    /// Long lines skipped by the reader, as last counted.
    skipped_seen: u64,
    /// Set when the file is finished and must be closed after the next send.
    done: bool,
    /// It starts from byte 0 and its head has not decided yet whether it is a copy of a
    /// known generation (see [`super::heads`]): not read meanwhile, never closed.
    deciding: Option<Deciding>,
    /// A copy of a generation read up to this offset, not that long yet: read from there
    /// once it is.
    skip_to: Option<u64>,
    /// A compressed file: never read.
    ignored: bool,
    /// The generation this file had before its current one, ended.
    prev: Option<EndedGeneration>,
    /// The lag last reported to [`crate::metrics::FileLag`] (bytes behind its end).
    lag: u64,
}

/// A file waiting for its head to decide (see [`Tailed::deciding`]).
#[derive(Debug, Clone, Copy, Default)]
struct Deciding {
    /// When it was first seen holding bytes.
    since: Option<Instant>,
    /// Whether a copy of a generation being read was logged.
    said: bool,
    /// Found beside a truncated file ([`Start::Copy`]): not read if it is a copy of a
    /// generation being read (it is finished instead of waiting).
    copy_only: bool,
}

/// An open tailed file.
struct Handle {
    reader: LineReader<File>,
    /// Dropped after the reader (closes the file first).
    slot: Slot,
}

/// What a shard read for one source since its last send.
struct Acc {
    agg: LineAggregator,
    positions: Vec<(FileKey, FilePosition)>,
    stats: ScanStats,
    bytes: u64,
    /// `agg.counts().keyed_lines` at the last send.
    keyed_sent: u64,
    /// On an edge: the error lines folded since the last send, one by one.
    forward: Vec<ForwardLine>,
    /// Their bytes.
    forward_bytes: usize,
}

impl Shard {
    pub(super) fn new(p: ShardParts) -> Shard {
        Shard {
            p,
            files: Vec::new(),
            own_open: 0,
            waiting: 0,
            accs: HashMap::new(),
        }
    }

    /// Polls the files that are due (or woken), sends what they gave, and blocks until the
    /// next one is due, a control message or a wake-up.
    pub(super) fn run(mut self) {
        let mut control = self.p.control.clone();
        let mut wake = self.p.wake.clone();
        loop {
            while let Ok(c) = control.try_recv() {
                self.control(c);
            }
            if self.p.stop.load(Ordering::SeqCst) {
                self.flush();
                self.p.metrics.files_waiting.sub(self.waiting as i64);
                return;
            }
            self.turn();
            self.flush();
            self.close_done();
            let wait = self
                .files
                .iter()
                .map(|f| f.next_poll)
                .min()
                .map_or(POLL_IDLE_MAX, |t| {
                    t.saturating_duration_since(Instant::now())
                });
            if wait.is_zero() {
                continue;
            }
            select! {
                recv(control) -> c => match c {
                    Ok(c) => self.control(c),
                    // The coordinator is gone (stopping): never spin on a closed channel.
                    Err(_) => control = never(),
                },
                recv(wake) -> w => if w.is_err() { wake = never() },
                default(wait) => {}
            }
        }
    }

    fn control(&mut self, c: Control) {
        match c {
            Control::Open(o) => self.open(o),
            Control::Detach(key) => {
                let Some(i) = self.files.iter().position(|f| f.key == key) else {
                    return;
                };
                let f = &mut self.files[i];
                let linked = match &f.handle {
                    Some(h) => h.reader.get_ref().metadata().is_ok_and(|m| m.nlink() > 0),
                    None => locate(f).is_some(),
                };
                let kind = if linked { "rename" } else { "delete" };
                self.p
                    .metrics
                    .rotations
                    .with_label_values(&[&f.spec.name, kind])
                    .inc();
                tracing::debug!(file = %f.path.display(), kind, open = f.handle.is_some(), "rotated: draining");
                f.detached = Some(Instant::now());
                f.next_poll = Instant::now();
            }
            Control::Attach(key, path) => {
                if let Some(f) = self.files.iter_mut().find(|f| f.key == key) {
                    f.detached = None;
                    if f.path != path {
                        f.label = Arc::from(path.to_string_lossy().as_ref());
                        f.path = path;
                    }
                    f.next_poll = Instant::now();
                }
            }
        }
    }

    /// Starts tailing a file the coordinator handed over: open (pinned) or closed (it is
    /// opened by path when this shard has room).
    fn open(&mut self, o: OpenFile) {
        let now = Instant::now();
        let mut f = Tailed {
            key: o.key,
            label: Arc::from(o.path.to_string_lossy().as_ref()),
            path: o.path,
            polls: self.p.metrics.file_polls.with_label_values(&[&o.spec.name]),
            spec: o.spec,
            handle: None,
            pending: Some(o.start),
            offset: 0,
            closed_mtime: (0, 0),
            waiting: false,
            at_eof: false,
            generation: 0,
            head_len: 0,
            head_hash: 0,
            last_size: 0,
            detached: o.detached.then_some(now),
            last_data: now,
            had_data: false,
            woken: o.woken,
            interval: Duration::ZERO,
            next_poll: now,
            sent: None,
            dirty: false,
            skipped_seen: 0,
            done: false,
            deciding: None,
            skip_to: None,
            ignored: false,
            prev: None,
            lag: 0,
        };
        if let Some(Pinned { file, slot }) = o.file
            && let Err(e) = self.attach(&mut f, file, slot)
        {
            // Kept closed with its start: opened again by path at its first poll.
            tracing::debug!(file = %f.path.display(), error = %e, "cannot read a matched file; retrying");
        }
        self.p
            .metrics
            .files_tracked
            .with_label_values(&[&f.spec.name])
            .inc();
        self.files.push(f);
    }

    /// Gives `f` its open `file` (whose identity the caller checked) and resumes where it
    /// was: at its start position the first time, else at its offset if the file is the
    /// same (not below what was read, the same head bytes) or from 0 as a new generation.
    fn attach(&mut self, f: &mut Tailed, mut file: File, slot: Slot) -> std::io::Result<()> {
        let size = file.metadata()?.len();
        if f.ignored || f.skip_to.is_some() {
            // A compressed file reopened: still never read. A copy not long enough yet:
            // still waiting to reach the offset it continues at.
            let max_line = f.spec.scanner.max_line_bytes();
            f.last_size = size;
            if !slot.is_pin() {
                self.own_open += 1;
            }
            f.handle = Some(Handle {
                reader: LineReader::with_capacity(file, READ_BYTES, max_line),
                slot,
            });
            return Ok(());
        }
        let first = f.pending.is_some();
        let start = match &f.pending {
            Some(s) => s.clone(),
            None => Start::Resume(position(f, f.offset)),
        };
        let mut decide = false;
        let mut prev = None;
        let (generation, offset, head_len, head_hash, new) = match &start {
            Start::Beginning | Start::Copy => {
                decide = true;
                (0, 0, 0, 0, true)
            }
            Start::End => (0, last_line_start(&file, size)?, 0, 0, true),
            Start::Resume(p) => {
                let same = size >= p.offset
                    && size >= f.last_size
                    && (p.head_len == 0
                        || (size >= u64::from(p.head_len)
                            && head_hash(&file, u64::from(p.head_len))? == p.head_hash));
                if same {
                    prev = p.prev;
                    (p.generation, p.offset, p.head_len, p.head_hash, false)
                } else {
                    // The generation read up to p.offset ended: a copy of it (the one
                    // copytruncate made) continues there. What was read of it is sent
                    // before a copy can be decided against it.
                    let end = ended(p.head_len, p.head_hash, p.offset);
                    prev = end.or(p.prev);
                    self.flush();
                    self.p.heads.new_generation(f.key, prev);
                    if let Some(end) = end {
                        let _ = self
                            .p
                            .reports
                            .send(Report::Ended(f.key, f.path.clone(), end));
                    }
                    decide = true;
                    self.p
                        .metrics
                        .rotations
                        .with_label_values(&[&f.spec.name, "replaced"])
                        .inc();
                    if !first {
                        tracing::info!(file = %f.path.display(), "file truncated or replaced while closed; reading it from the start");
                    }
                    (p.generation.wrapping_add(1), 0, 0, 0, true)
                }
            }
        };
        file.seek(SeekFrom::Start(offset))?;
        let max_line = f.spec.scanner.max_line_bytes();
        let reader = LineReader::with_capacity(file, READ_BYTES, max_line).with_offset(offset);
        if first {
            f.sent = match &start {
                Start::Resume(p) if !new => {
                    Some((p.generation, p.offset, p.head_len, PathBuf::from(&p.path)))
                }
                _ => None,
            };
            tracing::debug!(file = %f.path.display(), offset, generation, "tailing");
        }
        f.dirty |= new;
        f.pending = None;
        f.prev = prev;
        f.deciding = decide.then(|| Deciding {
            copy_only: matches!(start, Start::Copy),
            ..Deciding::default()
        });
        f.generation = generation;
        f.head_len = head_len;
        f.head_hash = head_hash;
        f.offset = offset;
        f.last_size = size;
        f.skipped_seen = 0;
        f.at_eof = false;
        if !slot.is_pin() {
            self.own_open += 1;
        }
        f.handle = Some(Handle { reader, slot });
        Ok(())
    }

    /// Closes `f`'s handle, keeping its position.
    fn close(&mut self, f: &mut Tailed) {
        let Some(h) = f.handle.take() else {
            return;
        };
        f.offset = h.reader.offset();
        f.last_size = h.reader.position();
        f.closed_mtime = h.reader.get_ref().metadata().map_or((0, 0), |m| mtime(&m));
        if !h.slot.is_pin() {
            self.own_open -= 1;
        }
    }

    /// Polls every file that is due or was woken, once, and schedules its next poll. Closed
    /// files that changed are reopened after the others were polled (so that files read to
    /// their end can make room).
    fn turn(&mut self) {
        let mut files = std::mem::take(&mut self.files);
        let now = Instant::now();
        let mut reopen = Vec::new();
        for (i, f) in files.iter_mut().enumerate() {
            if self.p.stop.load(Ordering::SeqCst) {
                break;
            }
            // Only a set flag is written (the swap), so idle files cost a load here.
            let woken = f.woken.load(Ordering::Acquire) && f.woken.swap(false, Ordering::AcqRel);
            if !woken && f.next_poll > now {
                continue;
            }
            f.polls.inc();
            if f.handle.is_some() {
                self.poll_and_schedule(f);
            } else if self.changed_while_closed(f) {
                reopen.push(i);
            } else {
                f.waiting = false;
                schedule(f, false);
            }
        }
        let mut refused = None;
        for i in reopen {
            if self.p.stop.load(Ordering::SeqCst) {
                break;
            }
            if !self.make_room(&mut files, i) {
                wait(&mut files[i]);
                continue;
            }
            let f = &mut files[i];
            match self.reopen(f) {
                Ok(true) => {
                    f.waiting = false;
                    self.poll_and_schedule(f);
                }
                Ok(false) => {
                    // Not at its path (any more): the coordinator detaches it.
                    f.waiting = false;
                    schedule(f, false);
                }
                Err(e) if is_exhausted(&e) => {
                    self.p.metrics.descriptor_refusals.inc();
                    wait(f);
                    let (share, first) = self.p.open_set.exhausted();
                    // Said once per process: by the turn that met the first refusal.
                    if first {
                        refused = Some((e, share));
                    }
                }
                Err(e) => {
                    tracing::debug!(file = %f.path.display(), error = %e, "cannot reopen a tailed file; retrying");
                    f.waiting = false;
                    schedule(f, false);
                }
            }
        }
        self.files = files;
        self.fit();
        let waiting = self.files.iter().filter(|f| f.waiting).count();
        self.p
            .metrics
            .files_waiting
            .add(waiting as i64 - self.waiting as i64);
        self.waiting = waiting;
        if let Some((e, share)) = refused {
            tracing::warn!(
                error = %e,
                open_files_limit = %crate::limits::open_files_limit_text(),
                files_waiting = self.p.metrics.files_waiting.get(),
                files_open = self.p.open_set.held(),
                "out of file descriptors: files wait for one (sentinel_files_waiting_for_descriptor); \
                 each shard now holds at most {share} files open. Raise the limit (ulimit -n) or \
                 lower max_open_files"
            );
        }
    }

    /// Polls `f` (open) and schedules its next poll.
    fn poll_and_schedule(&mut self, f: &mut Tailed) {
        let got = match self.poll(f) {
            Ok(n) => n > 0,
            Err(e) => {
                self.p
                    .metrics
                    .file_errors
                    .with_label_values(&[&f.spec.name])
                    .inc();
                tracing::warn!(file = %f.path.display(), error = %e, "read error; retrying");
                false
            }
        };
        schedule(f, got);
    }

    /// Whether closed `f` must be opened: it was never opened, or its path still leads to
    /// it and its size or mtime changed. A detached file is looked for by identity (renamed
    /// away); gone, or unchanged for the rotate wait, it is finished.
    fn changed_while_closed(&mut self, f: &mut Tailed) -> bool {
        if f.pending.is_some() && f.detached.is_none() {
            // Waiting for a descriptor: show how far behind it is meanwhile.
            if f.waiting
                && let Some(from) = unread_from(f)
                && let Ok(m) = stat_path(f)
            {
                self.note_lag(f, m.len().saturating_sub(from));
            }
            return true;
        }
        let meta = if f.detached.is_some() {
            locate(f)
        } else {
            stat_path(f)
                .ok()
                .filter(|m| m.dev() == f.key.dev && m.ino() == f.key.ino)
        };
        let changed = meta.as_ref().is_some_and(|m| {
            f.pending.is_some() || m.len() != f.last_size || mtime(m) != f.closed_mtime
        });
        // A closed file that grew is behind until it is reopened (it may wait for a
        // descriptor), as is one never opened yet that starts before its end.
        if let Some(m) = &meta
            && let Some(from) = unread_from(f)
        {
            self.note_lag(f, m.len().saturating_sub(from));
        }
        if let Some(since) = f.detached
            && !changed
            && (meta.is_none() || since.elapsed() >= self.p.rotate_wait)
        {
            tracing::debug!(file = %f.path.display(), found = meta.is_some(), "closed after rotation");
            f.done = true;
        }
        changed
    }

    /// Opens closed `f` by path and checks it is the same file; Ok(false) when the path
    /// leads to another file now.
    fn reopen(&mut self, f: &mut Tailed) -> std::io::Result<bool> {
        let file = File::open(&f.path)?;
        let m = file.metadata()?;
        if m.dev() != f.key.dev || m.ino() != f.key.ino {
            return Ok(false);
        }
        let slot = self.p.open_set.shard_slot();
        self.attach(f, file, slot)?;
        Ok(true)
    }

    /// Makes room in this shard's share for `files[except]`, closing the files that gave
    /// data longest ago among those read to their end (never one draining a rotation);
    /// false when no file can be closed now.
    fn make_room(&mut self, files: &mut [Tailed], except: usize) -> bool {
        let share = self.p.open_set.share();
        while self.own_open >= share {
            match lru_closable(files, Some(except)) {
                Some(j) => self.close(&mut files[j]),
                None => return false,
            }
        }
        true
    }

    /// Trades pins for places in the share (or closes them once read to their end), and
    /// closes files beyond a share that shrank.
    fn fit(&mut self) {
        let mut files = std::mem::take(&mut self.files);
        let share = self.p.open_set.share();
        for f in &mut files {
            let pinned = f.handle.as_ref().is_some_and(|h| h.slot.is_pin());
            if !pinned || f.detached.is_some() || !f.at_eof {
                continue;
            }
            if self.own_open < share {
                if let Some(h) = &mut f.handle {
                    h.slot = self.p.open_set.shard_slot();
                    self.own_open += 1;
                }
            } else {
                self.close(f);
            }
        }
        while self.own_open > share {
            match lru_closable(&files, None) {
                Some(j) => self.close(&mut files[j]),
                None => break,
            }
        }
        self.files = files;
    }

    /// Reads what was appended to `f` (at most [`TURN_BYTES`]); returns the bytes read.
    fn poll(&mut self, f: &mut Tailed) -> std::io::Result<u64> {
        let Some(h) = &f.handle else {
            return Ok(0);
        };
        let size = h.reader.get_ref().metadata()?.len();
        if f.ignored {
            f.at_eof = true;
            self.finish_if_idle(f);
            return Ok(0);
        }
        if f.deciding.is_none() && f.skip_to.is_none() {
            if size < h.reader.position() {
                self.new_generation(f, "truncate")?;
            } else if size != f.last_size || f.head_len == 0 {
                self.check_head(f, size)?;
            }
        }
        f.last_size = size;
        if f.deciding.is_some() && !self.decide(f, size)? {
            f.at_eof = false;
            self.finish_if_idle(f);
            return Ok(0);
        }
        if let Some(to) = f.skip_to {
            if size < to {
                // Nothing to read: it may be closed (reopened when it changes).
                f.at_eof = true;
                self.note_position(f, to);
                self.finish_if_idle(f);
                return Ok(0);
            }
            if let Some(h) = &mut f.handle {
                let mut file = h.reader.get_ref().try_clone()?;
                file.seek(SeekFrom::Start(to))?;
                let max_line = f.spec.scanner.max_line_bytes();
                h.reader = LineReader::with_capacity(file, READ_BYTES, max_line).with_offset(to);
            }
            f.skip_to = None;
        }
        let Some(h) = &mut f.handle else {
            return Ok(0);
        };
        let reader = &mut h.reader;
        let acc = self.accs.entry(f.spec.name.clone()).or_insert_with(|| Acc {
            agg: LineAggregator::new(&self.p.rules, f.label.clone()),
            positions: Vec::new(),
            stats: ScanStats::default(),
            bytes: 0,
            keyed_sent: 0,
            forward: Vec::new(),
            forward_bytes: 0,
        });
        acc.agg.set_source(f.label.clone());
        let start = reader.position();
        let start_offset = reader.offset();
        let json = f.spec.format;
        // An edge forwards each error line with where it was read (see `crate::forward`).
        let origin: Option<Arc<str>> = self.p.writer.forwards().then(|| {
            format!(
                "{}/{}:{}/{}",
                f.spec.name, f.key.dev, f.key.ino, f.generation
            )
            .into()
        });
        let mut eof = false;
        // Far behind (files already on disk at start, a burst): map and scan in place.
        if size.saturating_sub(start) >= CATCH_UP_BYTES
            && let Some(s) = catch_up(reader, size, &f.spec.scanner, &mut |region, base, lines| {
                let mut sink = JsonAware {
                    agg: &mut acc.agg,
                    format: json,
                    forward: origin.as_ref().map(|o| Forwarding {
                        lines: &mut acc.forward,
                        bytes: &mut acc.forward_bytes,
                        origin: o,
                        base,
                    }),
                };
                for &(at, len) in lines {
                    let _ = sink.error_line(&ErrorLine::at(region, at, len));
                }
            })?
        {
            acc.stats.add(&s);
        }
        loop {
            if reader.position() - start >= TURN_BYTES {
                break;
            }
            let Some(region) = reader.next_region()? else {
                eof = true;
                break;
            };
            let mut sink = JsonAware {
                agg: &mut acc.agg,
                format: json,
                forward: origin.as_ref().map(|o| Forwarding {
                    lines: &mut acc.forward,
                    bytes: &mut acc.forward_bytes,
                    origin: o,
                    base: region.offset,
                }),
            };
            let Ok(s) = f.spec.scanner.scan(region.bytes, &mut sink);
            acc.stats.add(&s);
            if acc.agg.held_bytes() + acc.forward_bytes >= FLUSH_BYTES {
                break;
            }
        }
        f.at_eof = eof;
        let read = reader.position() - start;
        let skipped = reader.skipped_long_lines();
        if skipped > f.skipped_seen {
            let n = skipped - f.skipped_seen;
            acc.stats.long_lines += n;
            acc.stats.lines += n;
            f.skipped_seen = skipped;
        }
        if read > 0 {
            f.last_data = Instant::now();
        } else if let Some(since) = f.detached
            && since.elapsed() >= self.p.rotate_wait
            && f.last_data.elapsed() >= self.p.rotate_wait
        {
            // Rotated away, drained, idle: the unterminated last line is final now.
            let tail_at = reader.offset();
            let tail = reader.take_partial();
            if !tail.is_empty() {
                let mut sink = JsonAware {
                    agg: &mut acc.agg,
                    format: json,
                    forward: origin.as_ref().map(|o| Forwarding {
                        lines: &mut acc.forward,
                        bytes: &mut acc.forward_bytes,
                        origin: o,
                        base: tail_at,
                    }),
                };
                let Ok(s) = f.spec.scanner.scan(tail, &mut sink);
                acc.stats.add(&s);
            }
            let skipped = reader.skipped_long_lines();
            if skipped > f.skipped_seen {
                acc.stats.long_lines += skipped - f.skipped_seen;
                acc.stats.lines += skipped - f.skipped_seen;
                f.skipped_seen = skipped;
            }
            f.done = true;
        }
        let offset = reader.offset();
        // Bytes consumed (complete lines), not read: a held partial line is counted once,
        // when it is complete, also across restarts.
        acc.bytes += offset - start_offset;
        self.note_position(f, offset);
        self.note_lag(f, size.saturating_sub(offset));
        Ok(read)
    }

    /// Reports `f`'s lag (bytes behind its end) when it changed. A file that is not read
    /// on purpose (compressed, a copy waiting for its head or its length) is not behind.
    fn note_lag(&self, f: &mut Tailed, behind: u64) {
        let behind = if f.ignored || f.deciding.is_some() || f.skip_to.is_some() {
            0
        } else {
            behind
        };
        if behind != f.lag {
            f.lag = behind;
            self.p
                .metrics
                .file_lag
                .set((f.key.dev, f.key.ino), &f.spec.name, &f.label, behind);
        }
    }

    /// Queues `f`'s position at `offset` for the next send when it changed.
    fn note_position(&mut self, f: &mut Tailed, offset: u64) {
        let changed = f.dirty
            || f.sent.as_ref().is_none_or(|(g, o, h, p)| {
                *g != f.generation || *o != offset || *h != f.head_len || *p != f.path
            });
        if !changed {
            return;
        }
        let acc = self.accs.entry(f.spec.name.clone()).or_insert_with(|| Acc {
            agg: LineAggregator::new(&self.p.rules, f.label.clone()),
            positions: Vec::new(),
            stats: ScanStats::default(),
            bytes: 0,
            keyed_sent: 0,
            forward: Vec::new(),
            forward_bytes: 0,
        });
        acc.positions.push((f.key, position(f, offset)));
        f.sent = Some((f.generation, offset, f.head_len, f.path.clone()));
        f.dirty = false;
    }

    /// A file that is not being read (waiting for its head, a copy not long enough yet, a
    /// compressed file) and was rotated away: finished once the rotate wait passed.
    fn finish_if_idle(&self, f: &mut Tailed) {
        if let Some(since) = f.detached
            && since.elapsed() >= self.p.rotate_wait
        {
            f.done = true;
        }
    }

    /// Decides what a file that starts from byte 0 is, from its head (see
    /// [`super::heads`]): compressed (never read), a copy of a generation being read (not
    /// read while that one is), a copy of an ended one (continued at its offset), or a new
    /// file (read from 0). Returns whether it may be read now.
    fn decide(&mut self, f: &mut Tailed, size: u64) -> std::io::Result<bool> {
        let (Some(d), Some(h)) = (&mut f.deciding, &f.handle) else {
            return Ok(f.deciding.is_none());
        };
        if size > 0 && d.since.is_none() {
            d.since = Some(Instant::now());
        }
        let waited = d.since.is_some_and(|s| s.elapsed() >= DECIDE_WAIT);
        let head = read_head(h.reader.get_ref(), size.min(HEAD_BYTES))?;
        match is_compressed(&head) {
            Some(true) => {
                self.p
                    .metrics
                    .rotations
                    .with_label_values(&[&f.spec.name, "compressed"])
                    .inc();
                tracing::debug!(file = %f.path.display(), "compressed: not read (its lines were read before it was compressed, or never will be)");
                f.ignored = true;
                f.deciding = None;
                return Ok(false);
            }
            None if !waited => return Ok(false),
            _ => {}
        }
        match self.p.heads.decide(f.key, &head, size, waited) {
            Decision::Wait => Ok(false),
            Decision::CopyOfLive if d.copy_only => {
                f.done = true;
                Ok(false)
            }
            Decision::CopyOfLive => {
                if !d.said {
                    d.said = true;
                    tracing::debug!(file = %f.path.display(), "a copy of a file being read: not read while the original is");
                }
                Ok(false)
            }
            Decision::Continue(offset, head) => {
                self.p
                    .metrics
                    .rotations
                    .with_label_values(&[&f.spec.name, "copy"])
                    .inc();
                tracing::info!(file = %f.path.display(), offset, "a copy of a file already read (copytruncate, cp): reading only what it holds beyond");
                f.deciding = None;
                f.head_len = head.len;
                f.head_hash = head.hash;
                f.dirty = true;
                if size >= offset {
                    if let Some(h) = &mut f.handle {
                        let mut file = h.reader.get_ref().try_clone()?;
                        file.seek(SeekFrom::Start(offset))?;
                        let max_line = f.spec.scanner.max_line_bytes();
                        h.reader = LineReader::with_capacity(file, READ_BYTES, max_line)
                            .with_offset(offset);
                    }
                } else {
                    f.skip_to = Some(offset);
                }
                Ok(true)
            }
            Decision::New(head) => {
                f.deciding = None;
                f.head_len = head.len;
                f.head_hash = head.hash;
                f.dirty = true;
                Ok(true)
            }
        }
    }

    /// Extends the head fingerprint while the file is under [`HEAD_BYTES`], and checks that
    /// the bytes it covers did not change (truncated and rewritten past our position
    /// between two polls).
    fn check_head(&mut self, f: &mut Tailed, size: u64) -> std::io::Result<()> {
        let Some(h) = &f.handle else {
            return Ok(());
        };
        let file = h.reader.get_ref();
        if f.head_len > 0 && head_hash(file, u64::from(f.head_len))? != f.head_hash {
            return self.new_generation(f, "truncate");
        }
        let want = size.min(HEAD_BYTES);
        if want > u64::from(f.head_len) {
            f.head_hash = head_hash(file, want)?;
            f.head_len = want as u16;
            self.p.heads.set_head(
                f.key,
                Head {
                    len: f.head_len,
                    hash: f.head_hash,
                },
            );
        }
        Ok(())
    }

    /// The file at this identity was truncated or replaced: its generation ended where
    /// reading it stopped (a copy of it continues there); the new one is read from 0 once
    /// its head decided it is not a copy itself.
    fn new_generation(&mut self, f: &mut Tailed, kind: &str) -> std::io::Result<()> {
        let Some(h) = &f.handle else {
            return Ok(());
        };
        let end = ended(f.head_len, f.head_hash, h.reader.offset());
        let prev = end.or(f.prev);
        // What was read of the old generation is sent before a copy can continue it (the
        // writer commits in order): a crash never keeps the copy's lines and loses these.
        self.flush();
        self.p.heads.new_generation(f.key, prev);
        if let Some(end) = end {
            let _ = self
                .p
                .reports
                .send(Report::Ended(f.key, f.path.clone(), end));
        }
        f.prev = prev;
        let Some(h) = &mut f.handle else {
            return Ok(());
        };
        self.p
            .metrics
            .rotations
            .with_label_values(&[&f.spec.name, kind])
            .inc();
        tracing::info!(file = %f.path.display(), kind, "file truncated or replaced; reading it from the start");
        let mut file = h.reader.get_ref().try_clone()?;
        file.seek(SeekFrom::Start(0))?;
        let max_line = f.spec.scanner.max_line_bytes();
        // The clone replaces the original descriptor (dropped with the old reader).
        h.reader = LineReader::with_capacity(file, READ_BYTES, max_line);
        f.generation = f.generation.wrapping_add(1);
        f.skipped_seen = 0;
        f.dirty = true;
        f.head_hash = 0;
        f.head_len = 0;
        f.deciding = Some(Deciding::default());
        Ok(())
    }

    /// Sends what was read, per source.
    fn flush(&mut self) {
        for (source, acc) in &mut self.accs {
            if acc.positions.is_empty() && acc.agg.is_empty() && acc.stats.lines == 0 {
                continue;
            }
            acc.forward_bytes = 0;
            let batch = crate::source::lines::take_batch(
                &self.p.metrics,
                source,
                &mut acc.agg,
                &mut acc.stats,
                &mut acc.bytes,
                &mut acc.keyed_sent,
            );
            let fb = FileBatch {
                source: source.clone(),
                batch,
                positions: std::mem::take(&mut acc.positions),
                forget: Vec::new(),
                forward: std::mem::take(&mut acc.forward),
            };
            if self.p.writer.send_files(fb).is_err() {
                // The writer is gone (shutting down after a failure): nothing more can be
                // committed; what was read is read again at the next start.
                return;
            }
        }
    }

    /// Closes finished files (after their final position was sent) and reports them.
    fn close_done(&mut self) {
        let mut i = 0;
        while i < self.files.len() {
            if !self.files[i].done {
                i += 1;
                continue;
            }
            let mut f = self.files.swap_remove(i);
            self.close(&mut f);
            if f.lag > 0 {
                self.p.metrics.file_lag.remove((f.key.dev, f.key.ino));
            }
            if f.waiting {
                f.waiting = false;
                self.waiting -= 1;
                self.p.metrics.files_waiting.dec();
            }
            self.p
                .metrics
                .files_tracked
                .with_label_values(&[&f.spec.name])
                .dec();
            // Never opened: its start position is still what it was handed. Never read
            // (undecided, compressed): none.
            let pos = match f.pending.take() {
                Some(Start::Resume(p)) => Some(p),
                Some(_) => None,
                None if f.deciding.is_some() || f.ignored => None,
                None => Some(position(&f, f.skip_to.unwrap_or(f.offset))),
            };
            match &pos {
                Some(p) => self.p.heads.set_ended(
                    f.key,
                    Head {
                        len: p.head_len,
                        hash: p.head_hash,
                    },
                    p.offset,
                ),
                None => self.p.heads.set_ended(f.key, Head::default(), 0),
            }
            tracing::debug!(file = %f.path.display(), "closed after rotation");
            let _ = self.p.reports.send(Report::Closed(f.key, pos));
        }
    }
}

/// Where closed `f`'s unread bytes start: the offset reached, or where a file never
/// opened starts (None: at its end, or not known before its head is read).
fn unread_from(f: &Tailed) -> Option<u64> {
    match &f.pending {
        None => Some(f.offset),
        Some(Start::Beginning) => Some(0),
        Some(Start::Resume(p)) => Some(p.offset),
        Some(Start::End | Start::Copy) => None,
    }
}

/// Schedules `f`'s next poll after a poll that gave data (`got`) or not.
fn schedule(f: &mut Tailed, got: bool) {
    if got {
        f.had_data = true;
    }
    let active = f.had_data && f.last_data.elapsed() < ACTIVE_FOR;
    f.interval = next_interval(f.interval, got, active);
    f.next_poll = Instant::now() + f.interval;
}

/// `f` changed while closed and waits for a descriptor: it tries again soon.
fn wait(f: &mut Tailed) {
    f.waiting = true;
    f.next_poll = Instant::now() + RETRY_OPEN;
}

/// The open file (in a shard's share, read to its end, not draining a rotation, not woken)
/// that gave data longest ago, other than `except`.
fn lru_closable(files: &[Tailed], except: Option<usize>) -> Option<usize> {
    files
        .iter()
        .enumerate()
        .filter(|(j, f)| {
            Some(*j) != except
                && f.at_eof
                && f.detached.is_none()
                && f.handle.as_ref().is_some_and(|h| !h.slot.is_pin())
                && !f.woken.load(Ordering::Relaxed)
        })
        .min_by_key(|(_, f)| f.last_data)
        .map(|(j, _)| j)
}

/// What `f`'s path leads to (a symlink itself unless its source follows symlinks).
fn stat_path(f: &Tailed) -> std::io::Result<std::fs::Metadata> {
    if f.spec.follow_symlinks {
        std::fs::metadata(&f.path)
    } else {
        std::fs::symlink_metadata(&f.path)
    }
}

/// Finds closed, detached `f` by identity: at its path, else in its directory (renamed
/// away; then `f.path` follows it). None: gone.
fn locate(f: &mut Tailed) -> Option<std::fs::Metadata> {
    use std::os::unix::fs::DirEntryExt;
    if let Ok(m) = stat_path(f)
        && m.dev() == f.key.dev
        && m.ino() == f.key.ino
    {
        return Some(m);
    }
    let dir = f.path.parent()?;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        if e.ino() != f.key.ino {
            continue;
        }
        if let Ok(m) = std::fs::symlink_metadata(e.path())
            && m.is_file()
            && m.dev() == f.key.dev
            && m.ino() == f.key.ino
        {
            tracing::debug!(file = %e.path().display(), was = %f.path.display(), "found a closed file rotated away");
            f.path = e.path();
            return Some(m);
        }
    }
    None
}

/// A file's mtime (seconds, nanoseconds).
fn mtime(m: &std::fs::Metadata) -> (i64, i64) {
    (m.mtime(), m.mtime_nsec())
}

/// A file's next poll interval after a poll that gave data (`got`) or not; `active`: it
/// gave data within [`ACTIVE_FOR`].
fn next_interval(current: Duration, got: bool, active: bool) -> Duration {
    if got {
        return Duration::ZERO;
    }
    let max = if active {
        POLL_ACTIVE_MAX
    } else {
        POLL_IDLE_MAX
    };
    if current.is_zero() {
        POLL_MIN.min(max)
    } else {
        (current * 2).min(max)
    }
}

fn position(f: &Tailed, offset: u64) -> FilePosition {
    FilePosition {
        generation: f.generation,
        offset,
        head_len: f.head_len,
        head_hash: f.head_hash,
        path: f.path.to_string_lossy().into_owned(),
        updated: Timestamp::now(),
        prev: f.prev,
    }
}

/// The ended generation of a file whose head was `head_len` bytes hashing to `head_hash`,
/// read up to `offset` (None: its head was never known).
fn ended(head_len: u16, head_hash: u64, offset: u64) -> Option<EndedGeneration> {
    (head_len > 0).then_some(EndedGeneration {
        head_len,
        head_hash,
        offset,
    })
}

/// The first `len` bytes of `file` (fewer at its end).
fn read_head(file: &File, len: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    let mut got = 0;
    while got < buf.len() {
        let n = file.read_at(&mut buf[got..], got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    buf.truncate(got);
    Ok(buf)
}

/// xxh3 of the first `len` bytes of `file` (positional reads: the read position is kept).
fn head_hash(file: &File, len: u64) -> std::io::Result<u64> {
    Ok(xxhash_rust::xxh3::xxh3_64(&read_head(file, len)?))
}

/// The offset just after the last `\n` before `size` (0 when the tail holds none within
/// 64 KiB): where `start_at: end` starts, so a line being written is read whole.
fn last_line_start(file: &File, size: u64) -> std::io::Result<u64> {
    let from = size.saturating_sub(64 * 1024);
    let mut buf = vec![0u8; (size - from) as usize];
    let mut got = 0;
    while got < buf.len() {
        let n = file.read_at(&mut buf[got..], from + got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(match memchr::memrchr(b'\n', &buf[..got]) {
        Some(i) => from + i as u64 + 1,
        None if from == 0 => 0,
        None => size,
    })
}

/// Folds error lines; for JSON lines without a key of their own, the record's `pact_key`
/// (or `log_key`) field is the key.
struct JsonAware<'a> {
    agg: &'a mut LineAggregator,
    format: LogFormat,
    /// On an edge: where each error line is also recorded.
    forward: Option<Forwarding<'a>>,
}

/// Where an edge's shard records its error lines (see [`FileBatch::forward`]).
struct Forwarding<'a> {
    lines: &'a mut Vec<ForwardLine>,
    bytes: &'a mut usize,
    origin: &'a Arc<str>,
    /// The offset of the scanned bytes' first byte in the file.
    base: u64,
}

#[derive(serde::Deserialize)]
struct KeyFields<'a> {
    #[serde(borrow, default)]
    pact_key: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    log_key: Option<Cow<'a, str>>,
}

impl Sink for JsonAware<'_> {
    type Error = std::convert::Infallible;

    fn error_line(&mut self, hit: &ErrorLine<'_>) -> Result<bool, Self::Error> {
        let line = hit.line();
        let json = match self.format {
            LogFormat::Text => false,
            LogFormat::Jsonl => true,
            LogFormat::Auto => line.trim_ascii_start().starts_with(b"{"),
        };
        let fp = if json && hit.first_key().is_none() {
            let fields = serde_json::from_slice::<KeyFields<'_>>(line).ok();
            let key = fields.and_then(|f| f.pact_key.or(f.log_key));
            self.agg.add_text(line, key.as_deref().map(str::as_bytes))
        } else {
            self.agg.add_line(hit)
        };
        if let Some(fw) = &mut self.forward {
            *fw.bytes += line.len() + 64;
            fw.lines.push(ForwardLine {
                origin: fw.origin.clone(),
                at: fw.base + hit.offset() as u64,
                fingerprint: fp.0,
                line: line.to_vec(),
                kind: crate::ingest::ForwardKind::Positioned,
            });
        }
        Ok(true)
    }
}

/// Catches `reader` up by one turn ([`TURN_BYTES`], to a line end) without copying: maps
/// the bytes from its position (the guard of [`crate::ingest::mmap`] makes a truncation
/// harmless), scans them in place, hands the chunk and its error lines (offset, length in
/// the chunk) with the chunk's file offset to `deliver`, and moves the reader past them.
/// Returns `None`, having consumed nothing, when the reader holds a partial line, the range
/// has no line end, or the file cannot be mapped or shrank while mapped: the caller reads
/// (and notices a truncation) as usual. Positions stay line starts, so committed offsets and
/// exactly-once counting are unchanged.
/// Receives a caught-up range: its bytes, its file offset, and its error lines' spans.
type Deliver<'a> = dyn FnMut(&[u8], u64, &[(usize, usize)]) + 'a;

fn catch_up(
    reader: &mut LineReader<File>,
    size: u64,
    scanner: &crate::scan::Scanner,
    deliver: &mut Deliver<'_>,
) -> std::io::Result<Option<ScanStats>> {
    use crate::ingest::mmap::MappedRange;
    let from = reader.position();
    if from != reader.offset() || reader.is_skipping() {
        return Ok(None);
    }
    let to = size.min(from + TURN_BYTES);
    let Ok(Some(map)) = MappedRange::map(reader.get_ref(), from..to) else {
        return Ok(None);
    };
    let bytes = map.bytes();
    let Some(nl) = memchr::memrchr(b'\n', bytes) else {
        return Ok(None);
    };
    let region = &bytes[..=nl];
    let mut lines = Vec::new();
    let Ok(s) = scanner.scan(region, &mut DeferLines(&mut lines));
    if map.faults() != 0 {
        // Truncated while mapped: forget what was scanned.
        return Ok(None);
    }
    // Moved first: a failed seek delivers nothing (and changes nothing).
    if !reader.seek_to(from + region.len() as u64)? {
        return Ok(None);
    }
    deliver(region, from, &lines);
    Ok(Some(s))
}

/// Collects error lines (offset and length in the region) until the scan is known sound.
struct DeferLines<'v>(&'v mut Vec<(usize, usize)>);

impl Sink for DeferLines<'_> {
    type Error = std::convert::Infallible;

    fn error_line(&mut self, line: &ErrorLine<'_>) -> Result<bool, Self::Error> {
        self.0.push((line.offset(), line.line().len()));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schedule the README promises: at once after data, then 10 ms doubling to 250 ms
    /// while active, to 1 s once idle.
    #[test]
    fn polling_backs_off_per_file() {
        let mut i = next_interval(Duration::from_secs(1), true, true);
        assert_eq!(i, Duration::ZERO);
        let mut seen = Vec::new();
        for _ in 0..8 {
            i = next_interval(i, false, true);
            seen.push(i.as_millis());
        }
        assert_eq!(seen, [10, 20, 40, 80, 160, 250, 250, 250]);
        let mut seen = Vec::new();
        for _ in 0..4 {
            i = next_interval(i, false, false);
            seen.push(i.as_millis());
        }
        assert_eq!(seen, [500, 1000, 1000, 1000]);
        // A file opened idle starts at 10 ms and reaches 1 s in eight polls.
        let mut i = Duration::ZERO;
        let mut n = 0;
        while i < POLL_IDLE_MAX {
            i = next_interval(i, false, false);
            n += 1;
        }
        assert_eq!(n, 8);
    }
}
