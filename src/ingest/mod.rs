//! The durable ingest pipeline: everything between a source and a committed store.
//!
//! The daemon's pipeline (feature `daemon`):
//!
//! - [`message`]: what sources send ([`FileBatch`], [`EventBatch`]) and the answers.
//! - [`logger`]: makes webhook events durable in the ingest log ([`wal`]) before they are
//!   acknowledged, dropping delivery ids seen before ([`dedupe`]).
//! - [`batch`]: the pipeline `sentinel scan` runs: files cut into segments, scanned on every
//!   core, their batches merged by one store thread and committed in large transactions.
//! - [`writer`]: the one thread that commits counts, positions and delivery ids to the
//!   store in group commits.
//! - [`mmap`]: regular files mapped and scanned in place, guarded against truncation.
//! - [`pace`]: how the scan's workers keep pace with its committer.
//!
//! Folding error lines into deltas is pure and lives apart, in [`crate::aggregate`].

pub mod batch;
#[cfg(feature = "daemon")]
pub mod dedupe;
#[cfg(all(test, feature = "daemon"))]
mod fault_tests;
#[cfg(feature = "daemon")]
pub mod logger;
#[cfg(feature = "daemon")]
pub mod message;
pub mod mmap;
pub mod pace;
#[cfg(feature = "daemon")]
pub mod wal;
#[cfg(feature = "daemon")]
pub mod writer;

#[cfg(feature = "daemon")]
pub use message::{
    EventAck, EventBatch, FileBatch, ForwardError, ForwardEvents, ForwardKind, ForwardLine, Hold,
    SubmitError, WriteError,
};
#[cfg(feature = "daemon")]
pub use writer::{NewIncidentNote, Writer, WriterHandle};
