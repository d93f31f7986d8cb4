//! The ingest writer: the one thread that writes ingest state to the store.
//!
//! File shards send it a [`FileBatch`] (counts already folded, plus the file positions they
//! reached); webhook requests go to the ingest logger ([`super::logger`]), which makes them
//! durable in the ingest log, acknowledges them, and hands the writer their folded events as
//! a [`LogChunk`]. The writer takes whatever is queued (group commit) and in ONE durable
//! transaction applies every batch, stores every file position, remembers the delivery ids
//! and records the highest ingest-log sequence number applied; then the log's segments up
//! to it are deleted. A file position is only ever persisted together with the counts of
//! the lines before it, so a restart after a crash at any moment resumes exactly after the
//! last counted line; logged events the store does not hold yet are replayed from the log.
//!
//! File batches are committed at once (append → incident latency); logged events alone wait
//! up to [`EVENT_COMMIT_INTERVAL`], so that a webhook flood costs a few commits a second
//! instead of one per group.
//!
//! Overload is backpressure: a full file channel blocks the shard that sends (the file is
//! the buffer); a full request channel is reported to the handler, which answers 429; a
//! writer that falls behind blocks the logger, which fills the request channel.
//! A failed commit is retried with backoff, keeping its file batches and logged events;
//! nothing is acknowledged that is not durable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded, never, select};
use jiff::Timestamp;

use super::dedupe::{DeliveryIds, MAX_REMEMBERED};
use super::logger::{Fold, LogChunk, Logged, Logger, Payload};
pub use super::message::{EventAck, EventBatch, FileBatch, Hold, SubmitError, WriteError};
use super::wal::Wal;
use crate::attribute::{LiveRules, Severity};
use crate::episode::Episode;
use crate::metrics::Metrics;
use crate::store::health::COMMITS;
use crate::store::{ApplyOutcome, FileKey, FilePosition, Health, IngestBatch, Store, StoreError};

/// Batches a file channel holds before shards wait.
pub const FILE_QUEUE_CAPACITY: usize = 64;
/// Requests the event channel holds before handlers answer 429.
pub const EVENT_QUEUE_CAPACITY: usize = 256;
/// Logged chunks the writer's channel holds before the logger waits.
const CHUNK_QUEUE_CAPACITY: usize = 64;
/// A group of file batches stops growing once it holds this many bytes (approximately)...
const GROUP_MAX_BYTES: usize = 32 << 20;
/// ... or this many batches.
const GROUP_MAX_MESSAGES: usize = 512;
/// Logged events alone are committed at most this long after they were logged (the
/// environment variable [`COMMIT_INTERVAL_ENV`] overrides it).
pub const EVENT_COMMIT_INTERVAL: Duration = Duration::from_millis(50);
/// Milliseconds to use instead of [`EVENT_COMMIT_INTERVAL`]: for tests that need logged
/// events to stay out of the store for a while (the replay after a crash), and for tuning.
pub const COMMIT_INTERVAL_ENV: &str = "SENTINEL_EVENT_COMMIT_INTERVAL_MS";
/// ... or once this much of them waits (approximately).
const PENDING_MAX_BYTES: usize = 16 << 20;
/// How long delivery ids are remembered: a retry later than this counts again.
pub const DELIVERY_TTL: Duration = Duration::from_secs(24 * 3600);
/// Rows pruned per commit at most (pruning never makes a commit slow).
const PRUNE_PER_COMMIT: usize = 10_000;
/// Rows of delivery ids forgotten per commit at most (each holds one commit's ids).
const DELIVERY_ROWS_PER_COMMIT: usize = 64;
/// The `meta` counter holding the highest ingest-log record applied.
pub const WAL_APPLIED_SEQ: &str = "wal_applied_seq";

/// The sending side of the writer; cheap to clone.
#[derive(Debug, Clone)]
pub struct WriterHandle {
    files: Sender<FileBatch>,
    events: Sender<EventBatch>,
    metrics: Arc<Metrics>,
    rules: Arc<LiveRules>,
    health: Arc<Health>,
    /// One per handle (the writer holds one more): the writer learns that every handle is
    /// gone while it does not receive files (a commit to retry).
    alive: Arc<()>,
    /// The daemon is stopping.
    stopping: Arc<std::sync::atomic::AtomicBool>,
    /// File batches go to an edge's forwarder ([`crate::forward`]), which wants their
    /// error lines one by one ([`FileBatch::forward`]).
    forwards: bool,
    /// An edge's webhook events go here instead of the store.
    events_forward: Option<Arc<dyn super::message::ForwardEvents>>,
}

impl WriterHandle {
    /// The rules events are attributed through (to fold a request's events where it is
    /// decoded: see [`EventBatch::folded`]).
    pub fn rules(&self) -> &Arc<LiveRules> {
        &self.rules
    }

    /// Sends a file batch, waiting while the queue is full (backpressure on the shard).
    ///
    /// Once the daemon is stopping ([`WriterHandle::shutdown_flag`]) while the store is
    /// degraded, the writer takes nothing more and a shutdown must not wait for the disk:
    /// the send gives up. The batch's position was never committed, so its lines are read
    /// again at the next start.
    ///
    /// # Errors
    ///
    /// Returns the batch when the writer has stopped, or gave up as above.
    pub fn send_files(&self, batch: FileBatch) -> Result<(), Box<FileBatch>> {
        use std::sync::atomic::Ordering;
        self.metrics.queue_depth.inc();
        let mut batch = batch;
        loop {
            match self.files.send_timeout(batch, Duration::from_millis(100)) {
                Ok(()) => return Ok(()),
                Err(crossbeam_channel::SendTimeoutError::Timeout(b)) => {
                    if self.stopping.load(Ordering::SeqCst) && self.health.is_degraded() {
                        self.metrics.queue_depth.dec();
                        return Err(Box::new(b));
                    }
                    batch = b;
                }
                Err(crossbeam_channel::SendTimeoutError::Disconnected(b)) => {
                    self.metrics.queue_depth.dec();
                    return Err(Box::new(b));
                }
            }
        }
    }

    /// A handle whose file batches go to `files` (an edge's forwarder, which hands them on
    /// to this handle once published) and that asks for their error lines one by one.
    pub fn redirect_files(&self, files: Sender<FileBatch>) -> WriterHandle {
        WriterHandle {
            files,
            forwards: true,
            ..self.clone()
        }
    }

    /// A handle whose webhook events go to `to` (an edge's JetStream publisher) instead of
    /// the store: see [`WriterHandle::event_forwarder`].
    pub fn redirect_events(&self, to: Arc<dyn super::message::ForwardEvents>) -> WriterHandle {
        WriterHandle {
            events_forward: Some(to),
            ..self.clone()
        }
    }

    /// Where webhook events go instead of [`WriterHandle::try_send_events`], on an edge.
    pub fn event_forwarder(&self) -> Option<&Arc<dyn super::message::ForwardEvents>> {
        self.events_forward.as_ref()
    }

    /// Whether file batches must carry their error lines ([`FileBatch::forward`]).
    pub fn forwards(&self) -> bool {
        self.forwards
    }

    /// Set when the daemon starts stopping (see [`WriterHandle::send_files`]).
    pub fn shutdown_flag(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.stopping.clone()
    }

    /// True while the store cannot commit (webhook requests are refused with 503).
    pub fn degraded(&self) -> Option<crate::store::Degraded> {
        self.health.degraded()
    }

    /// Queues a webhook request without waiting.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Full`] when the queue is full, [`SubmitError::Closed`] when the
    /// writer has stopped; the batch is handed back either way.
    pub fn try_send_events(&self, batch: EventBatch) -> Result<(), SubmitError> {
        if let Some(d) = self.health.degraded() {
            return Err(SubmitError::Degraded(Box::new(batch), d.reason));
        }
        self.metrics.queue_depth.inc();
        self.events.try_send(batch).map_err(|e| {
            self.metrics.queue_depth.dec();
            match e {
                TrySendError::Full(b) => SubmitError::Full(Box::new(b)),
                TrySendError::Disconnected(b) => SubmitError::Closed(Box::new(b)),
            }
        })
    }
}

/// A new incident, as the writer reports it to the operator.
#[derive(Debug, Clone)]
pub struct NewIncidentNote {
    /// Incident id.
    pub id: String,
    /// Attributed component ("" when none).
    pub component: String,
    /// Method of the key ("" when none).
    pub method: String,
    /// Severity name.
    pub severity: String,
    /// Attribution status name.
    pub attribution: String,
    /// Configured source.
    pub source: Arc<str>,
}

/// Called with every incident a commit created (after the commit).
pub type OnNewIncident = Box<dyn Fn(&NewIncidentNote) + Send>;

/// The running writer and ingest-logger threads.
#[derive(Debug)]
pub struct Writer {
    logger: JoinHandle<()>,
    thread: JoinHandle<()>,
}

/// Why the writer could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The store could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The ingest log (a directory next to the store) could not be opened.
    #[error("the ingest log {path}: {source}")]
    Log {
        /// The log's directory.
        path: std::path::PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A thread could not be started.
    #[error("could not start the writer: {0}")]
    Thread(std::io::Error),
}

impl Writer {
    /// Starts the writer on `store`. Events are attributed through `rules`. Returns the
    /// writer and the handle sources send through; the writer stops once every handle is
    /// dropped and the queues are drained.
    ///
    /// Before anything is taken, the ingest log (`<store>.wal/`, next to the store file) is
    /// read back: logged events the store does not hold yet are committed by the writer's
    /// first commit, and the remembered delivery ids are loaded.
    ///
    /// # Errors
    ///
    /// [`StartError`] when the store or the ingest log cannot be read.
    pub fn start(
        store: Arc<Store>,
        rules: Arc<LiveRules>,
        metrics: Arc<Metrics>,
        on_new: Option<OnNewIncident>,
    ) -> Result<(Writer, WriterHandle), StartError> {
        // Delivery ids of an older Sentinel (one row each) become one row of hashes.
        let mut txn = store.begin_write()?;
        let moved = txn.migrate_legacy_deliveries()?;
        if moved > 0 {
            txn.commit()?;
            tracing::info!(ids = moved, "webhook delivery ids moved to the new format");
        } else {
            drop(txn);
        }
        let ids = Arc::new(DeliveryIds::new());
        let mut scratch = Vec::new();
        let mut remembered_ids = 0u64;
        for (_, hashes) in store.delivery_rows()? {
            ids.insert_all(&hashes, &mut scratch);
            remembered_ids += hashes.len() as u64;
        }
        let applied = store.meta_value(WAL_APPLIED_SEQ)?.unwrap_or(0);
        let wal_dir = crate::state_dir::wal_of(store.path());
        let (wal, recovered) = Wal::open(&wal_dir, applied).map_err(|source| StartError::Log {
            path: wal_dir.clone(),
            source,
        })?;
        // A torn tail or corruption was logged by `Wal::open`, naming segment and offset.
        let mut pending = super::logger::replay(&recovered.records, &rules);
        if !recovered.records.is_empty() {
            tracing::info!(
                records = recovered.records.len(),
                "replaying logged webhook events the store does not hold yet"
            );
            ids.insert_all(&pending.hashes, &mut scratch);
            metrics.log_unapplied.add(pending.events as i64);
        }
        // Commit the replayed events (or just forget applied segments) first thing.
        pending.seq = pending.seq.max(applied);
        let wal = Arc::new(Mutex::new(wal));

        let (files_tx, files_rx) = bounded(FILE_QUEUE_CAPACITY);
        let (events_tx, events_rx) = bounded(EVENT_QUEUE_CAPACITY);
        let (chunks_tx, chunks_rx) = bounded(CHUNK_QUEUE_CAPACITY);
        let handle = WriterHandle {
            files: files_tx,
            events: events_tx,
            metrics: metrics.clone(),
            rules: rules.clone(),
            health: store.health().clone(),
            alive: Arc::new(()),
            stopping: Arc::default(),
            forwards: false,
            events_forward: None,
        };
        let handles = handle.alive.clone();
        let commits = store.meta_value(COMMITS)?.unwrap_or(0);
        let logger = Logger {
            events: events_rx,
            wal: wal.clone(),
            ids: ids.clone(),
            metrics: metrics.clone(),
            chunks: chunks_tx,
            failing: crate::episode::Episode::new(
                "the ingest log cannot be written: webhook events are refused (503)",
            ),
        };
        let replayed = !pending.is_empty();
        let commit_interval = std::env::var(COMMIT_INTERVAL_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(EVENT_COMMIT_INTERVAL, Duration::from_millis);
        let mut state = WriterLoop {
            store,
            rules,
            metrics,
            files: files_rx,
            chunks: chunks_rx,
            on_new,
            retry: None,
            pending,
            fold: Fold::new(),
            // Replayed events are committed first thing.
            pending_since: replayed.then(|| {
                let now = Instant::now();
                now.checked_sub(commit_interval).unwrap_or(now)
            }),
            commit_interval,
            wal,
            remembered_ids,
            last_prune: None,
            attributed_version: None,
            commits,
            handles,
            replayed_upto: 0,
            failing: Episode::new(
                "the store cannot commit: webhook events are refused (503) and file positions held until it recovers",
            ),
        };
        let thread = std::thread::Builder::new()
            .name("sentinel-writer".into())
            .spawn(move || state.run())
            .map_err(StartError::Thread)?;
        let logger = std::thread::Builder::new()
            .name("sentinel-ingest-log".into())
            .spawn(move || logger.run())
            .map_err(StartError::Thread)?;
        Ok((Writer { logger, thread }, handle))
    }

    /// Waits for the writer to drain its queues and stop (after every handle was dropped).
    pub fn join(self) {
        if self.logger.join().is_err() {
            tracing::error!("the ingest logger panicked");
        }
        if self.thread.join().is_err() {
            tracing::error!("the ingest writer panicked");
        }
    }
}

struct WriterLoop {
    store: Arc<Store>,
    rules: Arc<LiveRules>,
    metrics: Arc<Metrics>,
    files: Receiver<FileBatch>,
    chunks: Receiver<Logged>,
    on_new: Option<OnNewIncident>,
    /// File batches of a failed commit, with the time of the next attempt and the backoff.
    retry: Option<(Vec<FileBatch>, Instant, Duration)>,
    /// Logged events not committed yet (kept across a failed commit)...
    pending: LogChunk,
    /// ... and those that came unfolded, folded here until the next commit.
    fold: Fold,
    /// When the oldest of them arrived (None: nothing pending).
    pending_since: Option<Instant>,
    /// How long logged events alone wait for a commit.
    commit_interval: Duration,
    wal: Arc<Mutex<Wal>>,
    /// Delivery ids in the store's rows (pruned beyond [`MAX_REMEMBERED`]).
    remembered_ids: u64,
    last_prune: Option<Instant>,
    /// The rules version whose manifest the stored incidents were last re-attributed
    /// against (None: not yet, done with the first commit).
    attributed_version: Option<u64>,
    /// The number of the last commit known durable (the store's [`COMMITS`]).
    commits: u64,
    /// Counts the handles (see [`WriterHandle::alive`]).
    handles: Arc<()>,
    /// Chunks up to this sequence number were re-derived from the ingest log (see
    /// `reopen`) and are skipped when they arrive.
    replayed_upto: u64,
    /// Failing commits, logged as one episode.
    failing: Episode,
}

/// What one commit added, per source: (incidents created by severity, incidents updated).
type PerSource = HashMap<Arc<str>, (Vec<(Severity, u64)>, u64)>;

impl WriterLoop {
    fn run(&mut self) {
        let mut files = self.files.clone();
        let mut chunks = self.chunks.clone();
        let mut files_open = true;
        let mut chunks_open = true;
        loop {
            if !files_open && !chunks_open {
                // Shutting down: commit what is left, one last try if it failed before.
                if self.retry.is_some() || self.pending_since.is_some() {
                    self.commit_group(Vec::new());
                }
                if self.retry.take().is_some() {
                    tracing::error!(
                        "could not commit the last batches; files are read again and logged \
                         events replayed on the next start"
                    );
                }
                return;
            }
            if self.retry.is_none() && self.store.health().is_degraded() {
                // A read found the handle unusable: recover without waiting for a commit.
                self.retry = Some((Vec::new(), Instant::now(), Duration::from_millis(100)));
            }
            let due = match (&self.retry, self.pending_since) {
                (Some((_, at, _)), _) => Some(*at),
                (None, Some(since)) => Some(since + self.commit_interval),
                (None, None) => None,
            };
            let mut wait = due.map_or(Duration::from_secs(1), |d| {
                d.saturating_duration_since(Instant::now())
            });
            if self.retry.is_some() {
                // Files are not received meanwhile, so their channel cannot tell that every
                // handle is gone (a shutdown): ask often, a shutdown must not wait.
                if Arc::strong_count(&self.handles) == 1 {
                    files_open = false;
                    files = never();
                }
                wait = wait.min(Duration::from_millis(200));
            }
            // While a retry is pending, file batches stay queued (the shards wait).
            let files_rx = if self.retry.is_some() {
                never()
            } else {
                files.clone()
            };
            // Holding as much logged work as it may, the writer takes no more (the logger
            // waits, requests queue up, then get 429s) until it committed.
            let chunks_rx = if self.pending_bytes() >= PENDING_MAX_BYTES {
                never()
            } else {
                chunks.clone()
            };
            let mut fb = Vec::new();
            let mut bytes = 0usize;
            select! {
                recv(files_rx) -> m => match m {
                    Ok(b) => { bytes += file_bytes(&b); fb.push(b); }
                    Err(_) => { files_open = false; files = never(); }
                },
                recv(chunks_rx) -> m => match m {
                    Ok(c) => self.add_pending(c),
                    Err(_) => { chunks_open = false; chunks = never(); }
                },
                default(wait) => {}
            }
            if self.pending_bytes() >= PENDING_MAX_BYTES {
                // Paused above: still notice the logger stopping (shutdown), taking at most
                // one more chunk per turn (a turn waits for the retry's backoff).
                match chunks.try_recv() {
                    Ok(c) => self.add_pending(c),
                    Err(crossbeam_channel::TryRecvError::Disconnected) => {
                        chunks_open = false;
                        chunks = never();
                    }
                    Err(crossbeam_channel::TryRecvError::Empty) => {}
                }
            }
            // Take what queued up meanwhile (but not past the commit's time: under a flood
            // more keeps coming).
            loop {
                let commit_due = self
                    .pending_since
                    .is_some_and(|s| s.elapsed() >= self.commit_interval);
                if !commit_due
                    && self.pending_bytes() < PENDING_MAX_BYTES
                    && let Ok(c) = chunks.try_recv()
                {
                    self.add_pending(c);
                } else if self.retry.is_none()
                    && !fb.is_empty()
                    && fb.len() < GROUP_MAX_MESSAGES
                    && bytes < GROUP_MAX_BYTES
                    && let Ok(b) = files.try_recv()
                {
                    bytes += file_bytes(&b);
                    fb.push(b);
                } else {
                    break;
                }
            }
            self.metrics.queue_depth.sub(fb.len() as i64);
            let now = Instant::now();
            let commit = !fb.is_empty()
                || due.is_some_and(|d| now >= d)
                || (self.retry.is_none()
                    && self
                        .pending_since
                        .is_some_and(|s| now >= s + self.commit_interval))
                || (self.retry.is_none() && self.pending_bytes() >= PENDING_MAX_BYTES);
            if commit {
                self.commit_group(fb);
            }
        }
    }

    /// Takes logged events in (folding those that come unfolded).
    fn add_pending(&mut self, l: Logged) {
        if l.seq <= self.replayed_upto {
            // Re-derived from the ingest log already (see `reopen`).
            let events: u64 = l
                .batches
                .iter()
                .map(|(_, p, _)| match p {
                    Payload::Folded(b) => b.totals.get("webhook_events").copied().unwrap_or(0),
                    Payload::Raw(events) => events.len() as u64,
                })
                .sum();
            self.metrics.log_unapplied.sub(events as i64);
            return;
        }
        let p = &mut self.pending;
        p.seq = p.seq.max(l.seq);
        p.hashes.extend(l.hashes);
        p.at = Some(l.at);
        for (source, payload, hold) in l.batches {
            match payload {
                Payload::Folded(batch) => {
                    let keyed = batch.totals.get("keyed_lines").copied().unwrap_or(0);
                    p.events += batch.totals.get("webhook_events").copied().unwrap_or(0);
                    self.metrics
                        .keyed_lines
                        .with_label_values(&[&source])
                        .inc_by(keyed);
                    p.per_source.entry(source).or_default().merge(batch);
                }
                Payload::Raw(events) => {
                    let agg = self.fold.agg(&self.rules, &source);
                    for e in &events {
                        agg.add_text(&e.line, e.key.as_deref());
                    }
                    p.events += events.len() as u64;
                }
            }
            // The request's memory is given back once its events are taken in.
            drop(hold);
        }
        self.pending_since.get_or_insert_with(Instant::now);
    }

    /// Bytes the logged events not committed yet hold, approximately.
    fn pending_bytes(&self) -> usize {
        self.pending.approx_bytes() + self.fold.held_bytes()
    }

    /// Moves what was folded here into `pending`.
    fn take_fold(&mut self) {
        for (source, b) in std::mem::take(&mut self.fold).finish() {
            let keyed = b.totals.get("keyed_lines").copied().unwrap_or(0);
            self.metrics
                .keyed_lines
                .with_label_values(&[&source])
                .inc_by(keyed);
            self.pending.per_source.entry(source).or_default().merge(b);
        }
    }

    /// Commits the file batches (plus any pending retry) and the pending logged events in
    /// one transaction.
    fn commit_group(&mut self, mut files: Vec<FileBatch>) {
        let mut backoff = Duration::from_millis(50);
        if let Some((mut pending, _, b)) = self.retry.take() {
            pending.append(&mut files);
            files = pending;
            backoff = b;
        }
        self.take_fold();
        if self.store.health().is_degraded() {
            match self.reopen() {
                // The commit that failed was durable after all (its error came late, from
                // the final sync): its file batches are committed, and what is pending was
                // re-derived from the ingest log; nothing is applied twice.
                Ok(true) => files.clear(),
                Ok(false) => {}
                Err(e) => {
                    self.failed(files, backoff, &e);
                    return;
                }
            }
        }
        let now = Timestamp::now();
        let started = Instant::now();
        match self.try_commit(&files, now) {
            Ok((notes, per_source)) => {
                self.metrics
                    .commit_seconds
                    .observe(started.elapsed().as_secs_f64());
                self.committed(notes, per_source);
            }
            Err(e) => self.failed(files, backoff, &e),
        }
    }

    /// Reopens the store after a storage error and reads back whether the commit that
    /// failed was durable after all (true) or not (false: it is tried again).
    fn reopen(&mut self) -> Result<bool, StoreError> {
        self.store.reopen()?;
        let durable = self.store.meta_value(COMMITS)?.unwrap_or(0);
        if durable == self.commits {
            return Ok(false);
        }
        // One ahead: the failed commit landed. Events that came in after it are pending
        // too, folded together with its own: re-derive them from the ingest log, exactly as
        // a restart would (every acknowledged event is there until a commit applied it).
        self.commits = durable;
        let applied = self.store.meta_value(WAL_APPLIED_SEQ)?.unwrap_or(0);
        let records = self
            .wal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .records_after(applied)
            .map_err(|e| StoreError::Unavailable {
                path: crate::state_dir::wal_of(self.store.path()),
                reason: format!("cannot read the ingest log back: {e}"),
            })?;
        let _ = std::mem::take(&mut self.fold).finish();
        self.remembered_ids += self.pending.hashes.len() as u64;
        self.metrics.log_unapplied.sub(self.pending.events as i64);
        let mut pending = super::logger::replay(&records, &self.rules);
        pending.seq = pending.seq.max(applied);
        self.metrics.log_unapplied.add(pending.events as i64);
        // Chunks still on their way hold records read here: skipped when they arrive.
        self.replayed_upto = pending.seq;
        self.pending_since = (!pending.is_empty()).then(Instant::now);
        self.pending = pending;
        Ok(true)
    }

    /// A commit failed: keeps everything for the next attempt, marks the store degraded
    /// (webhooks answer 503, shards wait), logs the episode.
    fn failed(&mut self, files: Vec<FileBatch>, backoff: Duration, e: &StoreError) {
        self.metrics.commit_errors.inc();
        let reason = match e {
            StoreError::Storage { source, .. } => source.to_string(),
            StoreError::Unavailable { reason, .. } => reason.clone(),
            e => e.to_string(),
        };
        self.store.health().set_degraded(&reason);
        self.metrics.store_degraded.set(1);
        self.failing.failed(e);
        let next = (backoff * 2).min(Duration::from_secs(5));
        self.retry = Some((files, Instant::now() + backoff, next));
    }

    /// A commit succeeded (or was found durable after a reopen).
    fn committed(&mut self, notes: Vec<NewIncidentNote>, per_source: PerSource) {
        if let Some(d) = self.store.health().set_healthy() {
            self.metrics.store_degraded.set(0);
            tracing::info!(since = %d.since, "the store commits again; webhook events are accepted and files read");
        }
        self.failing.ended();
        {
            {
                let seq = self.pending.seq;
                self.metrics.log_unapplied.sub(self.pending.events as i64);
                self.pending = LogChunk::default();
                self.pending_since = None;
                if seq > 0 {
                    let removed = self
                        .wal
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .applied(seq);
                    if let Err(e) = removed {
                        tracing::warn!(error = %e, "could not delete applied ingest-log segments");
                    }
                }
                for (source, (created, updated)) in per_source {
                    let s: &str = &source;
                    for (sev, n) in created {
                        self.metrics
                            .incidents_created
                            .with_label_values(&[s, sev.as_str()])
                            .inc_by(n);
                    }
                    if updated == 0 {
                        continue;
                    }
                    self.metrics
                        .incidents_updated
                        .with_label_values(&[s])
                        .inc_by(updated);
                }
                if let Some(f) = &self.on_new {
                    for n in &notes {
                        f(n);
                    }
                }
            }
        }
    }

    fn try_commit(
        &mut self,
        files: &[FileBatch],
        now: Timestamp,
    ) -> Result<(Vec<NewIncidentNote>, PerSource), StoreError> {
        let mut txn = self.store.begin_write()?;
        // Logged events and files, merged per source; the last position of a file wins
        // (batches of one file come from one shard, in order).
        let mut per_source: HashMap<Arc<str>, IngestBatch> = self.pending.per_source.clone();
        let mut positions: HashMap<FileKey, &FilePosition> = HashMap::new();
        let mut forget: Vec<FileKey> = Vec::new();
        for fb in files {
            per_source
                .entry(fb.source.clone())
                .or_default()
                .merge(fb.batch.clone());
            for (k, p) in &fb.positions {
                positions.insert(*k, p);
            }
            forget.extend(fb.forget.iter().copied());
        }
        let mut notes = Vec::new();
        let mut counts = HashMap::new();
        for (source, batch) in &per_source {
            let outcome: ApplyOutcome = txn.apply(batch, now)?;
            let mut created: Vec<(Severity, u64)> = Vec::new();
            for fp in &outcome.created {
                let sev = batch
                    .incidents
                    .get(fp)
                    .and_then(|d| d.new.as_ref())
                    .map_or(Severity::Medium, |n| n.severity);
                match created.iter_mut().find(|(s, _)| *s == sev) {
                    Some((_, n)) => *n += 1,
                    None => created.push((sev, 1)),
                }
            }
            counts.insert(source.clone(), (created, outcome.updated.len() as u64));
            if self.on_new.is_some() {
                for (fp, id) in outcome.created.iter().zip(&outcome.created_ids) {
                    if let Some(new) = batch.incidents.get(fp).and_then(|d| d.new.as_ref()) {
                        notes.push(NewIncidentNote {
                            id: id.clone(),
                            component: new.component_id().to_string(),
                            method: new.method().to_string(),
                            severity: new.severity.to_string(),
                            attribution: new.attribution.as_str().to_string(),
                            source: source.clone(),
                        });
                    }
                }
            }
        }
        for (k, p) in positions {
            txn.set_file_position(k, p)?;
        }
        for k in forget {
            txn.remove_file_position(k)?;
        }
        // The logged events' delivery ids and log position.
        let now_us = now.as_microsecond().max(0) as u64;
        if self.pending.seq > 0 {
            txn.record_delivery_hashes(now_us, self.pending.seq, &self.pending.hashes)?;
            txn.set_meta(WAL_APPLIED_SEQ, self.pending.seq)?;
        }
        // Read back after a reopen: was this commit durable?
        txn.set_meta(COMMITS, self.commits + 1)?;
        // A component registered since the last commit: incidents already stored under its
        // key become registered (new lines are attributed by the aggregators' rules).
        let version = self.rules.version();
        let reattribute = self.attributed_version != Some(version);
        if reattribute {
            let n = txn.reattribute(&self.rules.snapshot().manifest)?;
            if n > 0 {
                tracing::info!(
                    incidents = n,
                    "incidents re-attributed to newly registered components"
                );
            }
        }
        let prune_due = self
            .last_prune
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(60));
        // Rows older than the TTL or beyond the newest MAX_REMEMBERED ids go (memory forgets
        // by itself, a generation at a time).
        let mut remembered = self.remembered_ids + self.pending.hashes.len() as u64;
        let too_many = remembered > MAX_REMEMBERED as u64;
        if prune_due || too_many {
            let cutoff = now
                .checked_sub(jiff::SignedDuration::try_from(DELIVERY_TTL).unwrap_or_default())
                .unwrap_or(now);
            let cutoff_us = cutoff.as_microsecond().max(0) as u64;
            let mut left = remembered;
            let forgotten =
                txn.prune_delivery_rows(cutoff_us, DELIVERY_ROWS_PER_COMMIT, too_many, |hs| {
                    left = left.saturating_sub(hs.count() as u64);
                    left > MAX_REMEMBERED as u64
                })?;
            remembered = remembered.saturating_sub(forgotten as u64);
        }
        if prune_due {
            // The newest EVENTS_KEEP, and what the outbox has not delivered yet (capped).
            let keep_from = txn.events_keep_from(self.store.event_head())?;
            txn.prune_events(keep_from, PRUNE_PER_COMMIT)?;
            txn.prune_trend(now, PRUNE_PER_COMMIT)?;
        }
        txn.commit()?;
        self.commits += 1;
        self.remembered_ids = remembered;
        if prune_due {
            self.last_prune = Some(Instant::now());
        }
        if reattribute {
            self.attributed_version = Some(version);
        }
        Ok((notes, counts))
    }
}

fn file_bytes(b: &FileBatch) -> usize {
    b.batch.approx_bytes + 64 * b.positions.len()
}
