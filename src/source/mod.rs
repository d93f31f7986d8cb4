//! Sources: where lines come from. They frame and scan bytes and hand counts (files) or
//! events (webhooks) to the ingest writer ([`crate::aggregate::writer`]); they know nothing
//! about incidents.
//!
//! Without the `daemon` feature only the pure webhook body decoder
//! ([`webhook::decode`]) is built (the fuzz targets use it).

#[cfg(feature = "daemon")]
pub mod file;
pub mod webhook;
