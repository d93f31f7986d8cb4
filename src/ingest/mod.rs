//! The durable ingest pipeline: everything between a source and a committed store.
//!
//! - [`message`]: what sources send ([`FileBatch`], [`EventBatch`]) and the answers.
//! - [`logger`]: makes webhook events durable in the ingest log ([`wal`]) before they are
//!   acknowledged, dropping delivery ids seen before ([`dedupe`]).
//! - [`writer`]: the one thread that commits counts, positions and delivery ids to the
//!   store in group commits.
//!
//! Folding error lines into deltas is pure and lives apart, in [`crate::aggregate`].

pub mod dedupe;
pub mod logger;
pub mod message;
pub mod wal;
pub mod writer;

pub use message::{EventAck, EventBatch, FileBatch, Hold, SubmitError, WriteError};
pub use writer::{NewIncidentNote, Writer, WriterHandle};
