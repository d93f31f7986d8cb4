//! Sentinel: a log-ingestion and production-attribution engine.
//!
//! Sentinel reads logs as bytes, finds error lines with one vectorised pass per chunk
//! ([`scan::Scanner`]), attributes each error line to the Pact component named by its
//! `PACT:<component_id>:<method_name>` key ([`attribute`]), folds repeats into incidents keyed
//! by a normalised fingerprint ([`scan::fingerprint`]) and keeps them in an embedded redb
//! database ([`store::Store`]).
//!
//! The data flows one way: [`source`] -> [`scan`] -> [`aggregate`] -> `ingest` -> [`store`];
//! the event log in the store feeds the API, the integrations and the fixer ([`fix`]). The
//! command line ([`cli`]) and the daemon sit at the edge. Each module's docs say what it owns
//! and why it is built so; the README's Architecture section draws the whole.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]
// The module docs link to private items on purpose: they are for Sentinel's developers,
// who read them with `cargo doc --document-private-items`.
#![allow(rustdoc::private_intra_doc_links)]

pub mod aggregate;
#[cfg(feature = "daemon")]
pub mod api;
pub mod attribute;
pub mod cli;
#[cfg(feature = "daemon")]
pub mod cluster;
pub mod config;
#[cfg(feature = "daemon")]
pub mod daemon;
#[cfg(feature = "daemon")]
pub mod dashboard;
pub mod episode;
pub mod fix;
#[cfg(feature = "daemon")]
pub mod forge;
#[cfg(feature = "daemon")]
pub mod forward;
#[cfg(feature = "daemon")]
pub mod http;
pub mod ingest;
#[cfg(feature = "daemon")]
pub mod integrations;
pub mod lifecycle;
pub mod limits;
pub mod metrics;
#[cfg(feature = "daemon")]
pub mod readonly;
pub mod scan;
pub mod source;
pub mod state_dir;
pub mod store;
