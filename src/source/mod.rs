//! Sources: where lines come from. They frame and scan bytes and hand counts (files,
//! CloudWatch, processes, standard input) or events (webhooks) to the ingest writer
//! ([`crate::ingest::writer`]); they know nothing about incidents.
//!
//! Every source type is its own module with one `start` function, registered in
//! [`SOURCE_TYPES`]: the daemon starts the configured sources through [`start_all`] and
//! knows no type by name. A `start` function gets every configured source of its type (file
//! sources share their threads) and a [`SourceContext`], and returns what it left running.
//!
//! Without the `daemon` feature only the pure webhook body decoder
//! ([`webhook::decode`]) is built (the fuzz targets use it).

pub mod ci;
#[cfg(feature = "daemon")]
pub mod cloudwatch;
#[cfg(feature = "daemon")]
pub mod file;
#[cfg(feature = "daemon")]
mod lines;
#[cfg(feature = "daemon")]
pub mod nats;
#[cfg(feature = "daemon")]
pub mod process;
#[cfg(feature = "daemon")]
mod running;
pub mod webhook;

#[cfg(feature = "daemon")]
pub use running::{
    Running, SOURCE_TYPES, SourceBoard, SourceContext, SourceDefaults, SourceInfo, StartFn,
    Stopper, start_all,
};
