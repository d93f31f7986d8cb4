//! What flows into the ingest pipeline: the messages sources send and the answers they get.
//! Shared by the writer and the ingest logger, which both take them.

use std::sync::Arc;

use crate::aggregate::Event;
use crate::store::{FileKey, FilePosition, IngestBatch};

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
    /// On an edge (`forward.nats`): the error lines folded into `batch`, one by one, to
    /// publish before the positions are committed (empty otherwise).
    pub forward: Vec<ForwardLine>,
}

/// An error line an edge forwards ([`crate::forward`]).
#[derive(Debug, Clone)]
pub struct ForwardLine {
    /// Where it was read: the source's name and the file's identity and generation.
    pub origin: Arc<str>,
    /// The offset of its first byte there (increasing within `origin`).
    pub at: u64,
    /// Its fingerprint.
    pub fingerprint: u64,
    /// The line, without its newline.
    pub line: Vec<u8>,
    /// How it is published: with its position (a file's line), or without one.
    pub kind: ForwardKind,
}

/// How an edge publishes a [`ForwardLine`] (see [`crate::forward`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ForwardKind {
    /// `at` is the line's position at its origin (a file's offset): published positioned,
    /// and an aggregator skips it when it applied that position of that origin already.
    #[default]
    Positioned,
    /// No position an aggregator could skip by: published `unpositioned` (applied once per
    /// stream sequence) with `key`, the key the edge used when the line carries none (a JSON
    /// record's `pact_key` field).
    Unpositioned {
        /// The line's own message id (a CloudWatch event's identity: published alone, so
        /// that a republish after a crash is the same message); `None`: messages with ids
        /// unique to this run of the daemon (a command's output, standard input).
        id: Option<Arc<str>>,
        /// The key when the line carries none.
        key: Option<String>,
    },
}

/// The events of one webhook request.
#[derive(Debug)]
pub struct EventBatch {
    /// The source (metrics label and the scope of event ids).
    pub source: Arc<str>,
    /// The events, all to be counted as error lines.
    pub events: Vec<Event>,
    /// The events folded already ([`super::logger::fold_events`]), done where the request
    /// was decoded so that the folding of many requests runs in parallel; used when none
    /// of the events is a duplicate (else the logger folds the others itself).
    pub folded: Option<IngestBatch>,
    /// Where the outcome goes once the events are durable (or failed).
    pub reply: tokio::sync::oneshot::Sender<Result<EventAck, WriteError>>,
    /// Held until the events are folded into the store's next commit (a share of the
    /// webhook memory budget: the events stay counted after the answer).
    pub hold: Option<Hold>,
}

/// Something kept alive as long as the events it came with (see [`EventBatch::hold`]).
pub struct Hold(pub Box<dyn std::any::Any + Send>);

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hold")
    }
}

/// What the writer did with an [`EventBatch`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct EventAck {
    /// Events counted by this commit.
    pub accepted: usize,
    /// Events whose id had been committed before: acknowledged, not counted again.
    pub duplicates: usize,
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

/// Why [`super::writer::WriterHandle::try_send_events`] refused a batch.
#[derive(Debug)]
pub enum SubmitError {
    /// The queue is full: try again later (429).
    Full(Box<EventBatch>),
    /// The writer has stopped (503).
    Closed(Box<EventBatch>),
    /// The store cannot commit (a full disk, failing I/O) and is being recovered: nothing
    /// is accepted meanwhile (503 with `Retry-After`); the reason.
    Degraded(Box<EventBatch>, String),
}

/// Where an edge's webhook events go instead of the local store (`forward.nats`): the
/// future resolves once every event is durable there (JetStream acknowledged it), with the
/// number accepted and the number the server knew already (duplicates), or fails with why
/// (the webhook then answers 503 and nothing was counted locally).
pub trait ForwardEvents: Send + Sync + std::fmt::Debug {
    /// Forwards the events of one request.
    fn forward(self: Arc<Self>, source: Arc<str>, events: Vec<Event>) -> Forwarding;
}

/// What [`ForwardEvents::forward`] returns: (accepted, duplicates) or why not.
pub type Forwarding =
    std::pin::Pin<Box<dyn Future<Output = Result<(usize, usize), ForwardError>> + Send>>;

/// Why a forward failed, and whether the events may still arrive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardError {
    /// What went wrong.
    pub reason: String,
    /// The events were handed to the connection but not acknowledged: the server may
    /// store them later (a publish buffered across a reconnect, an acknowledgement lost in
    /// an outage). `false` when nothing was sent.
    pub maybe_stored: bool,
}
