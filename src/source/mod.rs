//! Sources: where lines come from. They frame and scan bytes and hand counts (files) or
//! events (webhooks) to the ingest writer ([`crate::aggregate::writer`]); they know nothing
//! about incidents.

pub mod file;
pub mod webhook;
