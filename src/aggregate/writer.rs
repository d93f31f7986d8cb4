//! The ingest writer: the one thread that writes ingest state to the store.
//!
//! Sources send it batches over two bounded channels — file shards a [`FileBatch`] (counts
//! already folded, plus the file positions they reached), webhook handlers an
//! [`EventBatch`] (decoded events and a reply channel). The writer takes whatever is queued
//! (group commit), and in ONE durable transaction records delivery ids, folds the events
//! that were not delivered before, applies every batch and stores every file position. Only
//! after that commit returned does it answer the webhook requests: a 2xx means durable. A
//! file position is only ever persisted together with the counts of the lines before it, so
//! a restart after a crash at any moment resumes exactly after the last counted line.
//!
//! Overload is backpressure: a full file channel blocks the shard that sends (the file is
//! the buffer); a full event channel is reported to the handler, which answers 429.
//! A failed commit fails every request of its group (503) and keeps the file batches for a
//! retry with backoff; nothing is acknowledged that was not committed.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded, never, select};
use jiff::Timestamp;

pub use super::Event;
use super::LineAggregator;
use crate::attribute::{LiveRules, Severity};
use crate::metrics::Metrics;
use crate::store::{ApplyOutcome, FileKey, FilePosition, IngestBatch, Store, StoreError};

/// Batches a file channel holds before shards wait.
pub const FILE_QUEUE_CAPACITY: usize = 64;
/// Requests the event channel holds before handlers answer 429.
pub const EVENT_QUEUE_CAPACITY: usize = 256;
/// A group stops growing once it holds this many bytes (approximately)...
const GROUP_MAX_BYTES: usize = 32 << 20;
/// ... or this many messages.
const GROUP_MAX_MESSAGES: usize = 512;
/// How long delivery ids are remembered: a retry later than this counts again.
pub const DELIVERY_TTL: Duration = Duration::from_secs(24 * 3600);
/// Delivery ids pruned per commit at most (pruning never makes a commit slow).
const PRUNE_PER_COMMIT: usize = 10_000;

/// Counts and positions from one turn of a file shard.
#[derive(Debug, Default)]
pub struct FileBatch {
    /// The configured source the files belong to (the metrics label).
    pub source: Arc<str>,
    /// Incident deltas, key counts and totals of the lines read.
    pub batch: IngestBatch,
    /// The positions reached: each just after the last line folded into `batch`.
    pub positions: Vec<(FileKey, FilePosition)>,
    /// Positions to forget (files gone for good).
    pub forget: Vec<FileKey>,
}

/// The events of one webhook request.
#[derive(Debug)]
pub struct EventBatch {
    /// The source (metrics label and the scope of event ids).
    pub source: Arc<str>,
    /// The events, all to be counted as error lines.
    pub events: Vec<Event>,
    /// Where the outcome goes once committed (or failed).
    pub reply: tokio::sync::oneshot::Sender<Result<EventAck, WriteError>>,
}

/// What the writer did with an [`EventBatch`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct EventAck {
    /// Events counted by this commit.
    pub accepted: usize,
    /// Events whose id had been committed before: acknowledged, not counted again.
    pub duplicates: usize,
    /// Of the accepted events, those attributed to a PACT key (their own or a fallback).
    pub keyed: usize,
}

/// Why events could not be committed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The store failed to commit; nothing of the request was stored.
    #[error("the store could not commit: {0}")]
    Store(String),
    /// The writer is shutting down.
    #[error("Sentinel is shutting down")]
    Closed,
}

/// Why [`WriterHandle::try_send_events`] refused a batch.
#[derive(Debug)]
pub enum SubmitError {
    /// The queue is full: try again later (429).
    Full(EventBatch),
    /// The writer has stopped (503).
    Closed(EventBatch),
}

/// The sending side of the writer; cheap to clone.
#[derive(Debug, Clone)]
pub struct WriterHandle {
    files: Sender<FileBatch>,
    events: Sender<EventBatch>,
    metrics: Arc<Metrics>,
}

impl WriterHandle {
    /// Sends a file batch, waiting while the queue is full (backpressure on the shard).
    ///
    /// # Errors
    ///
    /// Returns the batch when the writer has stopped.
    pub fn send_files(&self, batch: FileBatch) -> Result<(), Box<FileBatch>> {
        self.metrics.queue_depth.inc();
        self.files.send(batch).map_err(|e| {
            self.metrics.queue_depth.dec();
            Box::new(e.0)
        })
    }

    /// Queues a webhook request without waiting.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Full`] when the queue is full, [`SubmitError::Closed`] when the
    /// writer has stopped; the batch is handed back either way.
    pub fn try_send_events(&self, batch: EventBatch) -> Result<(), SubmitError> {
        self.metrics.queue_depth.inc();
        self.events.try_send(batch).map_err(|e| {
            self.metrics.queue_depth.dec();
            match e {
                TrySendError::Full(b) => SubmitError::Full(b),
                TrySendError::Disconnected(b) => SubmitError::Closed(b),
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

/// The running writer thread.
#[derive(Debug)]
pub struct Writer {
    thread: JoinHandle<()>,
}

impl Writer {
    /// Starts the writer on `store`. Events are attributed through `rules`. Returns the
    /// writer and the handle sources send through; the writer stops once every handle is
    /// dropped and the queues are drained.
    pub fn start(
        store: Arc<Store>,
        rules: Arc<LiveRules>,
        metrics: Arc<Metrics>,
        on_new: Option<OnNewIncident>,
    ) -> std::io::Result<(Writer, WriterHandle)> {
        let (files_tx, files_rx) = bounded(FILE_QUEUE_CAPACITY);
        let (events_tx, events_rx) = bounded(EVENT_QUEUE_CAPACITY);
        let handle = WriterHandle {
            files: files_tx,
            events: events_tx,
            metrics: metrics.clone(),
        };
        let mut state = WriterLoop {
            store,
            rules,
            metrics,
            files: files_rx,
            events: events_rx,
            on_new,
            retry: None,
            last_prune: None,
            attributed_version: None,
        };
        let thread = std::thread::Builder::new()
            .name("sentinel-writer".into())
            .spawn(move || state.run())?;
        Ok((Writer { thread }, handle))
    }

    /// Waits for the writer to drain its queues and stop (after every handle was dropped).
    pub fn join(self) {
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
    events: Receiver<EventBatch>,
    on_new: Option<OnNewIncident>,
    /// File batches of a failed commit, with the time of the next attempt and the backoff.
    retry: Option<(Vec<FileBatch>, Instant, Duration)>,
    last_prune: Option<Instant>,
    /// The rules version whose manifest the stored incidents were last re-attributed
    /// against (None: not yet, done with the first commit).
    attributed_version: Option<u64>,
}

enum Msg {
    Files(FileBatch),
    Events(EventBatch),
}

impl WriterLoop {
    fn run(&mut self) {
        let mut files = self.files.clone();
        let mut events = self.events.clone();
        let mut files_open = true;
        let mut events_open = true;
        loop {
            // While a retry is pending, file batches stay queued (the shards wait) and only
            // events (answered 503 on failure) are taken.
            let files_rx = if self.retry.is_some() {
                never()
            } else {
                files.clone()
            };
            let wait = match &self.retry {
                Some((_, at, _)) => at.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(1),
            };
            let first = select! {
                recv(files_rx) -> m => match m {
                    Ok(b) => Some(Msg::Files(b)),
                    Err(_) => { files_open = false; files = never(); None }
                },
                recv(events) -> m => match m {
                    Ok(b) => Some(Msg::Events(b)),
                    Err(_) => { events_open = false; events = never(); None }
                },
                default(wait) => None,
            };
            let retry_due = self
                .retry
                .as_ref()
                .is_some_and(|(_, at, _)| Instant::now() >= *at);
            let Some(first) = first else {
                if retry_due {
                    self.commit_group(Vec::new(), Vec::new());
                } else if !files_open && !events_open && self.retry.is_none() {
                    return;
                } else if !files_open && !events_open {
                    // Shutting down with a failed commit pending: one last try.
                    self.commit_group(Vec::new(), Vec::new());
                    if self.retry.take().is_some() {
                        tracing::error!(
                            "could not commit the last file batches; they will be read again \
                             on the next start"
                        );
                    }
                    return;
                }
                continue;
            };
            let (mut fb, mut eb) = (Vec::new(), Vec::new());
            let mut bytes = 0usize;
            let push = |m: Msg, fb: &mut Vec<FileBatch>, eb: &mut Vec<EventBatch>| match m {
                Msg::Files(b) => {
                    let n = b.batch.approx_bytes + 64 * b.positions.len();
                    fb.push(b);
                    n
                }
                Msg::Events(b) => {
                    let n = b.events.iter().map(|e| e.line.len() + 64).sum::<usize>();
                    eb.push(b);
                    n
                }
            };
            bytes += push(first, &mut fb, &mut eb);
            // Group commit: take what queued up while the previous commit ran.
            while fb.len() + eb.len() < GROUP_MAX_MESSAGES && bytes < GROUP_MAX_BYTES {
                if let Ok(b) = events.try_recv() {
                    bytes += push(Msg::Events(b), &mut fb, &mut eb);
                } else if self.retry.is_none()
                    && let Ok(b) = files.try_recv()
                {
                    bytes += push(Msg::Files(b), &mut fb, &mut eb);
                } else {
                    break;
                }
            }
            self.metrics.queue_depth.sub((fb.len() + eb.len()) as i64);
            self.commit_group(fb, eb);
        }
    }

    /// Commits the file batches (plus any pending retry) and the event batches in one
    /// transaction, then answers the event batches.
    fn commit_group(&mut self, mut files: Vec<FileBatch>, events: Vec<EventBatch>) {
        let mut backoff = Duration::from_millis(50);
        if let Some((mut pending, _, b)) = self.retry.take() {
            pending.append(&mut files);
            files = pending;
            backoff = b;
        }
        let now = Timestamp::now();
        let started = Instant::now();
        let result = self.try_commit(&files, &events, now);
        match result {
            Ok((acks, notes, per_source)) => {
                self.metrics
                    .commit_seconds
                    .observe(started.elapsed().as_secs_f64());
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
                for (batch, ack) in events.into_iter().zip(acks) {
                    let s: &str = &batch.source;
                    let m = &self.metrics.webhook_events;
                    m.with_label_values(&[s, "accepted"])
                        .inc_by(ack.accepted as u64);
                    m.with_label_values(&[s, "duplicate"])
                        .inc_by(ack.duplicates as u64);
                    let _ = batch.reply.send(Ok(ack));
                }
                if let Some(f) = &self.on_new {
                    for n in &notes {
                        f(n);
                    }
                }
            }
            Err(e) => {
                self.metrics.commit_errors.inc();
                tracing::error!(error = %e, "commit failed; retrying file batches in {backoff:?}");
                let msg = e.to_string();
                for batch in events {
                    let _ = batch.reply.send(Err(WriteError::Store(msg.clone())));
                }
                if !files.is_empty() {
                    let next = (backoff * 2).min(Duration::from_secs(5));
                    self.retry = Some((files, Instant::now() + backoff, next));
                }
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn try_commit(
        &mut self,
        files: &[FileBatch],
        events: &[EventBatch],
        now: Timestamp,
    ) -> Result<
        (
            Vec<EventAck>,
            Vec<NewIncidentNote>,
            HashMap<Arc<str>, (Vec<(Severity, u64)>, u64)>,
        ),
        StoreError,
    > {
        let mut txn = self.store.begin_write()?;
        // Events: drop the deliveries committed before, fold the rest per source.
        let mut per_source: HashMap<Arc<str>, IngestBatch> = HashMap::new();
        let mut acks = Vec::with_capacity(events.len());
        let mut aggs: HashMap<Arc<str>, LineAggregator> = HashMap::new();
        for batch in events {
            let ids = batch.events.iter().filter_map(|e| e.id.as_deref());
            let fresh = txn.record_deliveries(&batch.source, ids, now)?;
            let mut fresh = fresh.into_iter();
            let agg = aggs
                .entry(batch.source.clone())
                .or_insert_with(|| LineAggregator::new(&self.rules, batch.source.clone()));
            let mut ack = EventAck::default();
            let keyed_before = agg.counts().keyed_lines;
            for e in &batch.events {
                let new = e.id.is_none() || fresh.next().unwrap_or(true);
                if new {
                    agg.add_text(&e.line, e.key.as_deref());
                    ack.accepted += 1;
                } else {
                    ack.duplicates += 1;
                }
            }
            ack.keyed = (agg.counts().keyed_lines - keyed_before) as usize;
            acks.push(ack);
        }
        for (source, mut agg) in aggs {
            let mut b = agg.take_batch();
            let c = agg.counts();
            b.totals
                .insert("error_lines", c.keyed_lines + c.unattributed_lines);
            b.totals.insert("keyed_lines", c.keyed_lines);
            b.totals
                .insert("webhook_events", c.keyed_lines + c.unattributed_lines);
            per_source.entry(source).or_default().merge(b);
        }
        // Files: merge per source; the last position of a file wins (batches of one file
        // come from one shard, in order).
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
                            component: new.component_id.clone(),
                            method: new.method.clone(),
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
        if prune_due {
            let cutoff = now
                .checked_sub(jiff::SignedDuration::try_from(DELIVERY_TTL).unwrap_or_default())
                .unwrap_or(now);
            txn.prune_deliveries(cutoff, PRUNE_PER_COMMIT)?;
            // The newest EVENTS_KEEP, and what the outbox has not delivered yet (capped).
            let keep_from = txn.events_keep_from(self.store.event_head())?;
            txn.prune_events(keep_from, PRUNE_PER_COMMIT)?;
        }
        txn.commit()?;
        if prune_due {
            self.last_prune = Some(Instant::now());
        }
        if reattribute {
            self.attributed_version = Some(version);
        }
        Ok((acks, notes, counts))
    }
}
