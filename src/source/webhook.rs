//! Webhook sources: log shippers (Vector, Fluent Bit), CI jobs and scripts POST events over
//! HTTP; each is counted as an error line, exactly once, and answered 2xx only once durable.
//!
//! Each `type: webhook` source gets its own listener and [`router`]. A request goes through:
//!
//! 1. **Auth** (per source): a bearer token (`token_env`) is checked before the body is
//!    read; an HMAC-SHA256 signature (`hmac_secret_env`: `X-Sentinel-Timestamp` unix
//!    seconds within ±300 s, `X-Sentinel-Signature: sha256=<hex HMAC(secret, ts + "." +
//!    body)>`) over the raw bytes as received. Both compare in constant time; failures are
//!    401. A source configuring both requires both.
//! 2. **Memory budget**: the body's bytes, then its decompressed bytes, then its decoded
//!    events are held in the shared [`IngestBudget`] until the writer answered; a request
//!    that would exceed it is answered 429 + `Retry-After` at once. So memory is bounded
//!    by the budget, not by the number of clients.
//! 3. **Decoding** ([`decode`], a pure module without the `daemon` feature, for fuzzing):
//!    JSON object/array, NDJSON, text lines, gzip/deflate; ≤ 8 MiB decompressed,
//!    ≤ 10 000 events, `event_id` ≤ 256 bytes; errors are 400/413/415 with a JSON body
//!    naming the problem. Bodies over 64 KiB are decoded on the blocking pool.
//! 4. **Filtering**: a source without its own `error_patterns` counts every event (the
//!    reference's behaviour); one with them counts only the events they match (the same
//!    [`crate::scan::Scanner`] as file sources), the rest are answered as `ignored`.
//! 5. **The writer** ([`crate::ingest::writer`]) takes the events without waiting
//!    (queue full: 429 + `Retry-After: 1`), commits them in a group commit together with
//!    their event ids, and answers after the commit: 200 `{"accepted", "duplicates",
//!    "ignored"}`. A failed commit is 503 + `Retry-After`; nothing of it was kept.
//!
//! A client that retries a request with the same event ids until it gets a 2xx has every
//! event counted exactly once, across crashes of Sentinel (see `tests/it/webhook.rs`).

pub mod decode;
#[cfg(feature = "daemon")]
mod server;
#[cfg(feature = "daemon")]
mod start;

#[cfg(feature = "daemon")]
pub(crate) use server::drain;
#[cfg(feature = "daemon")]
pub use server::{
    DEFAULT_INGEST_BUDGET, DRAIN_TIME, EVENT_OVERHEAD, INLINE_DECODE_BYTES, IngestBudget,
    IngestReply, RETRY_AFTER_SECS, Reservation, SIGNATURE_HEADER, SIGNATURE_TOLERANCE_SECS,
    TIMESTAMP_HEADER, WebhookAuth, WebhookError, router, signature,
};
#[cfg(feature = "daemon")]
pub use start::start;
