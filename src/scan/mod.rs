//! The hot path: lines over bytes, error-line detection, PACT keys and fingerprints.
//!
//! Nothing here knows about files, HTTP or redb. Every function works on `&[u8]`: logs are
//! bytes, invalid UTF-8 and NUL bytes included, and nothing allocates per line.
//!
//! - [`framing`]: turns a byte stream into regions of complete lines, carrying the partial
//!   last line to the next read and skipping over-long lines without stalling.
//! - [`matcher`]: the [`Scanner`], which finds error lines in a region with one vectorised
//!   pass and hands each to a [`Sink`].
//! - [`keys`]: PACT key extraction by hand over bytes.
//! - [`fingerprint`]: the one-pass normaliser and xxh3 hash that decides which error lines
//!   are "the same" incident.
//! - [`rules`]: the user's `grouping.rules`, applied before the normalisation.

pub mod fingerprint;
pub mod framing;
pub mod keys;
pub mod matcher;
pub mod rules;
mod simd;
pub mod templates;

pub use fingerprint::{Fingerprint, Fingerprinter};
pub use framing::LineReader;
pub use keys::{PactKey, PactKeys};
pub use matcher::{ErrorLine, Kernel, ScanStats, Scanner, ScannerBuilder, Sink};
