//! The HTTP side of a webhook source: auth, bounded body reading, the memory budget, the
//! hand-off to the ingest writer and the answer. See the parent module's docs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use prometheus::IntGauge;
use serde::Serialize;

use super::decode::{self, DecodeError, Encoding, Format, Limits};
use crate::aggregate::Event;
use crate::attribute::LiveRules;
use crate::config::WebhookSourceConfig;
use crate::http::ApiError;
use crate::http::auth::{HmacKey, TokenDigest, bearer_token};
pub use crate::http::auth::{
    SIGNATURE_HEADER, SIGNATURE_TOLERANCE_SECS, TIMESTAMP_HEADER, signature,
};
use crate::ingest::writer::{EventBatch, Hold, SubmitError, WriteError, WriterHandle};
use crate::metrics::Metrics;
use crate::scan::matcher::PatternError;
use crate::scan::{Scanner, ScannerBuilder};

/// The default [`IngestBudget`]: bytes of webhook requests being read, decoded or waiting
/// for their commit, across all webhook sources.
pub const DEFAULT_INGEST_BUDGET: usize = 48 << 20;
/// Bytes counted per decoded event on top of its text (vector and map overhead).
pub const EVENT_OVERHEAD: usize = 96;
/// Bodies up to this size are decoded on the async worker; larger ones on the blocking
/// pool, so a big body never stalls the other connections.
pub const INLINE_DECODE_BYTES: usize = 64 << 10;
/// The longest a refused body is read (and discarded) before the answer; see `drain`.
pub const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);
/// `Retry-After` of 429 and 503 answers, in seconds.
pub const RETRY_AFTER_SECS: u32 = 1;

/// A memory budget shared by the webhook sources: the bytes of requests being read,
/// decoded, or waiting for their commit. A request that would take it over the limit is
/// answered 429 at once, so memory stays bounded however many clients post at the same
/// time. Cheap to share (`Arc`); lock-free.
#[derive(Debug)]
pub struct IngestBudget {
    max: usize,
    used: AtomicUsize,
    gauge: Option<IntGauge>,
}

impl Default for IngestBudget {
    fn default() -> IngestBudget {
        IngestBudget::new(DEFAULT_INGEST_BUDGET)
    }
}

impl IngestBudget {
    /// A budget of `max_bytes`.
    pub fn new(max_bytes: usize) -> IngestBudget {
        IngestBudget {
            max: max_bytes,
            used: AtomicUsize::new(0),
            gauge: None,
        }
    }

    /// Mirrors the bytes in use into `gauge` (`sentinel_ingest_queue_bytes`).
    pub fn with_gauge(mut self, gauge: IntGauge) -> IngestBudget {
        self.gauge = Some(gauge);
        self
    }

    /// The limit.
    pub fn max_bytes(&self) -> usize {
        self.max
    }

    /// The bytes reserved now.
    pub fn used_bytes(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Whether `bytes` more would fit now (no reservation is made).
    pub fn would_fit(&self, bytes: usize) -> bool {
        self.used_bytes().saturating_add(bytes) <= self.max
    }

    /// Reserves `bytes`, or `None` when that would pass the limit.
    pub fn try_reserve(self: &Arc<Self>, bytes: usize) -> Option<Reservation> {
        self.take(bytes).then(|| Reservation {
            budget: self.clone(),
            bytes,
        })
    }

    fn take(&self, n: usize) -> bool {
        let ok = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|&t| t <= self.max)
            })
            .is_ok();
        if ok && let Some(g) = &self.gauge {
            g.add(n as i64);
        }
        ok
    }

    fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
        if let Some(g) = &self.gauge {
            g.sub(n as i64);
        }
    }
}

/// Bytes held from an [`IngestBudget`]; given back on drop.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<IngestBudget>,
    bytes: usize,
}

impl Reservation {
    /// The bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Holds `bytes` instead: shrinking always works, growing fails (holding what it held)
    /// when the budget is short.
    pub fn resize(&mut self, bytes: usize) -> bool {
        if bytes > self.bytes {
            if !self.budget.take(bytes - self.bytes) {
                return false;
            }
        } else {
            self.budget.give(self.bytes - bytes);
        }
        self.bytes = bytes;
        true
    }

    /// Grows by `more` bytes (see [`Reservation::resize`]).
    pub fn grow(&mut self, more: usize) -> bool {
        self.resize(self.bytes.saturating_add(more))
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.give(self.bytes);
    }
}

/// Why a webhook source could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// A configured secret's environment variable is unset or empty.
    #[error(
        "source {name:?}: {key}: the environment variable {var} is not set or empty \
         (set it, or remove `{key}` to accept requests without it)"
    )]
    MissingSecret {
        /// The source.
        name: String,
        /// `token_env` or `hmac_secret_env`.
        key: &'static str,
        /// The variable.
        var: String,
    },
    /// The source's `error_patterns` do not build.
    #[error("source {name:?}: error_patterns: {error}")]
    Patterns {
        /// The source.
        name: String,
        /// Why.
        #[source]
        error: PatternError,
    },
}

/// The authentication a webhook source requires: a bearer token, an HMAC signature, both
/// (each checked) or none. Secrets are kept hashed (token) or keyed (HMAC) and never
/// printed.
#[derive(Clone, Default)]
pub struct WebhookAuth {
    token: Option<TokenDigest>,
    hmac: Option<HmacKey>,
}

impl std::fmt::Debug for WebhookAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookAuth")
            .field("token", &self.token.is_some())
            .field("hmac", &self.hmac.is_some())
            .finish()
    }
}

impl WebhookAuth {
    /// No authentication.
    pub fn none() -> WebhookAuth {
        WebhookAuth::default()
    }

    /// The secrets named by `source.token_env` / `source.hmac_secret_env`, read from the
    /// process environment.
    ///
    /// # Errors
    ///
    /// [`WebhookError::MissingSecret`] when a named variable is unset or empty.
    pub fn from_env(source: &WebhookSourceConfig) -> Result<WebhookAuth, WebhookError> {
        WebhookAuth::from_lookup(source, |var| std::env::var(var).ok())
    }

    /// As [`WebhookAuth::from_env`], with `lookup` resolving variable names.
    ///
    /// # Errors
    ///
    /// [`WebhookError::MissingSecret`] when a named variable resolves to nothing or "".
    pub fn from_lookup(
        source: &WebhookSourceConfig,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<WebhookAuth, WebhookError> {
        let get =
            |key: &'static str, var: &Option<String>| -> Result<Option<String>, WebhookError> {
                let Some(var) = var else { return Ok(None) };
                match lookup(var) {
                    Some(v) if !v.is_empty() => Ok(Some(v)),
                    _ => Err(WebhookError::MissingSecret {
                        name: source.common.name.clone(),
                        key,
                        var: var.clone(),
                    }),
                }
            };
        let mut auth = WebhookAuth::none();
        if let Some(token) = get("token_env", &source.token_env)? {
            auth = auth.with_token(&token);
        }
        if let Some(secret) = get("hmac_secret_env", &source.hmac_secret_env)? {
            auth = auth.with_hmac_secret(secret.as_bytes());
        }
        Ok(auth)
    }

    /// Requires `Authorization: Bearer <token>`.
    pub fn with_token(mut self, token: &str) -> WebhookAuth {
        self.token = Some(TokenDigest::of(token.as_bytes()));
        self
    }

    /// Requires an HMAC-SHA256 signature made with `secret` (see [`signature`]).
    pub fn with_hmac_secret(mut self, secret: &[u8]) -> WebhookAuth {
        self.hmac = Some(HmacKey::new(secret));
        self
    }

    /// Whether requests must authenticate at all.
    pub fn is_required(&self) -> bool {
        self.token.is_some() || self.hmac.is_some()
    }

    fn check_token(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(want) = &self.token else {
            return Ok(());
        };
        let Some(presented) = bearer_token(headers) else {
            return Err(ApiError::unauthorized(
                "missing bearer token (Authorization: Bearer <token>)",
                Some("Bearer"),
            ));
        };
        if want.matches(presented.as_bytes()) {
            Ok(())
        } else {
            Err(ApiError::unauthorized(
                "invalid bearer token",
                Some("Bearer"),
            ))
        }
    }

    fn check_signature(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), ApiError> {
        match &self.hmac {
            None => Ok(()),
            Some(key) => key.verify(headers, body, now),
        }
    }
}

/// The answer to an accepted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IngestReply {
    /// Events counted by this request's commit.
    pub accepted: usize,
    /// Events whose `event_id` was committed before: acknowledged, not counted again.
    pub duplicates: usize,
    /// Events that matched none of the source's `error_patterns` (not counted).
    pub ignored: usize,
}

/// One webhook source's handler state.
#[derive(Debug)]
struct Hook {
    name: Arc<str>,
    auth: WebhookAuth,
    scanner: Option<Scanner>,
    limits: Limits,
    writer: WriterHandle,
    metrics: Arc<Metrics>,
    /// The series every request touches, resolved once (a label look-up hashes and locks).
    hot: HotCounters,
    budget: Arc<IngestBudget>,
}

#[derive(Debug)]
struct HotCounters {
    lines: prometheus::IntCounter,
    bytes: prometheus::IntCounter,
    error_lines: prometheus::IntCounter,
    ignored: prometheus::IntCounter,
    ok: prometheus::IntCounter,
}

/// Builds the router of one webhook source: `POST` on any path ingests (the reference
/// ignored the path), any other method is 405. Wrap it with [`crate::http::harden`].
///
/// `max_line_bytes` is the longest line the source's `error_patterns` look at (events
/// longer are not error lines when the source filters).
///
/// # Errors
///
/// [`WebhookError::Patterns`] when the source's `error_patterns` do not build.
pub fn router(
    source: &WebhookSourceConfig,
    auth: WebhookAuth,
    max_line_bytes: usize,
    writer: WriterHandle,
    metrics: Arc<Metrics>,
    budget: Arc<IngestBudget>,
) -> Result<Router, WebhookError> {
    let scanner = match &source.common.error_patterns {
        None => None,
        Some(p) => Some(
            ScannerBuilder::new()
                .max_line_bytes(max_line_bytes)
                .build(p)
                .map_err(|error| WebhookError::Patterns {
                    name: source.common.name.clone(),
                    error,
                })?,
        ),
    };
    let name: Arc<str> = Arc::from(source.common.name.as_str());
    for outcome in ["accepted", "duplicate", "ignored", "rejected"] {
        metrics.webhook_events.with_label_values(&[&name, outcome]);
    }
    for reason in ["queue_full", "memory_budget", "store_unavailable"] {
        metrics.rejected.with_label_values(&[&name, reason]);
    }
    // The series alerts are written against exist from the start.
    for code in ["200", "429", "503"] {
        metrics.webhook_requests.with_label_values(&[&name, code]);
    }
    let hot = HotCounters {
        lines: metrics.lines.with_label_values(&[&name]),
        bytes: metrics.bytes.with_label_values(&[&name]),
        error_lines: metrics.error_lines.with_label_values(&[&name]),
        ignored: metrics
            .webhook_events
            .with_label_values(&[&name, "ignored"]),
        ok: metrics.webhook_requests.with_label_values(&[&name, "200"]),
    };
    let hook = Arc::new(Hook {
        name,
        auth,
        scanner,
        limits: Limits::default(),
        writer,
        metrics,
        hot,
        budget,
    });
    Ok(Router::new().fallback(handle).with_state(hook))
}

async fn handle(State(hook): State<Arc<Hook>>, req: Request) -> Response {
    let resp = match hook.ingest(req).await {
        Ok(reply) => (StatusCode::OK, axum::Json(reply)).into_response(),
        Err(e) => e.into_response(),
    };
    if resp.status() == StatusCode::OK {
        hook.hot.ok.inc();
    } else {
        hook.metrics
            .webhook_requests
            .with_label_values(&[&hook.name, resp.status().as_str()])
            .inc();
    }
    resp
}

/// The threads big bodies are decoded on: as many as cores, shared by every webhook source.
/// Not tokio's blocking pool, which grows to hundreds of threads under a flood — each with
/// its own allocator arena holding on to freed memory.
fn decode_pool() -> &'static rayon::ThreadPool {
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("sentinel-decode-{i}"))
            .build()
            .unwrap_or_else(|e| panic!("cannot start the decode threads: {e}"))
    })
}

/// Decoded events and what they cost.
struct Prepared {
    events: Vec<Event>,
    /// The events folded (see [`EventBatch::folded`]).
    folded: Option<crate::store::IngestBatch>,
    /// Events in the body (before filtering).
    total: usize,
    /// Body bytes after decompression.
    bytes: usize,
}

impl Hook {
    async fn ingest(&self, req: Request) -> Result<IngestReply, ApiError> {
        if req.method() != Method::POST {
            return Err(ApiError::method_not_allowed("POST"));
        }
        let (parts, body) = req.into_parts();
        let headers = &parts.headers;
        // The cheap refusals first, before a byte of the body is read.
        self.auth.check_token(headers)?;
        let format = Format::from_content_type(header_text(headers, header::CONTENT_TYPE)?)
            .map_err(decode_error)?;
        let encoding = Encoding::from_header(header_text(headers, header::CONTENT_ENCODING)?)
            .map_err(decode_error)?;
        let limit = self.limits.max_body_bytes;
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if let Some(n) = declared
            && n > limit
        {
            drain(body, limit).await;
            return Err(decode_error(DecodeError::TooLarge {
                limit,
                decompressed: false,
            }));
        }
        // Admission: a body that cannot fit now is refused before it is read. The bytes
        // are then held as they arrive (a slow sender holds only what it sent).
        let held = declared
            .is_none_or(|n| self.budget.would_fit(n))
            .then(|| self.budget.try_reserve(0))
            .flatten();
        let Some(mut held) = held else {
            drain(body, limit).await;
            return Err(self.over_budget());
        };
        let mut body = body;
        let raw = read_body(&mut body, limit, declared, &mut held)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge => decode_error(DecodeError::TooLarge {
                    limit,
                    decompressed: false,
                }),
                BodyError::OverBudget => self.over_budget(),
                BodyError::Read(m) => ApiError::bad_request("body_read", m),
            });
        let raw = match raw {
            Ok(raw) => raw,
            Err(e) => {
                drop(held);
                if matches!(
                    e.status(),
                    StatusCode::TOO_MANY_REQUESTS | StatusCode::PAYLOAD_TOO_LARGE
                ) {
                    drain(body, limit).await;
                }
                return Err(e);
            }
        };
        self.auth.check_signature(headers, &raw, unix_now())?;

        let limits = self.limits;
        let scanner = self.scanner.clone();
        // Small bodies are decoded here and folded by the writer (a fold per request would
        // cost the async workers more than it saves); big ones are decoded and folded on the
        // decode threads, in parallel.
        let big = raw.len() > INLINE_DECODE_BYTES;
        let fold = big.then(|| (self.writer.rules().clone(), self.name.clone()));
        let job = move || {
            let fold = fold.as_ref().map(|(rules, name)| (rules, name));
            let p = prepare(
                format,
                encoding,
                &raw,
                &limits,
                scanner.as_ref(),
                &mut held,
                fold,
            );
            (p, held)
        };
        let (prepared, held) = if big {
            let (tx, rx) = tokio::sync::oneshot::channel();
            decode_pool().spawn(move || {
                let _ = tx.send(job());
            });
            rx.await
                .map_err(|_| ApiError::internal("decoding the body failed"))?
        } else {
            job()
        };
        let prepared = match prepared {
            Ok(p) => p,
            Err(DecodeError::OverBudget) => return Err(self.over_budget()),
            Err(e) => return Err(decode_error(e)),
        };
        self.submit(prepared, held).await
    }

    /// Hands the events to the writer and waits for their commit.
    async fn submit(&self, p: Prepared, held: Reservation) -> Result<IngestReply, ApiError> {
        let ignored = p.total - p.events.len();
        let s: &str = &self.name;
        let m = &self.metrics;
        let hot = &self.hot;
        if ignored > 0 {
            hot.ignored.inc_by(ignored as u64);
        }
        let n = p.events.len();
        // Keyed lines are counted when the writer folds the events.
        let counted = |accepted: usize| {
            hot.lines.inc_by(p.total as u64);
            hot.bytes.inc_by(p.bytes as u64);
            hot.error_lines.inc_by(accepted as u64);
        };
        if n == 0 {
            counted(0);
            return Ok(IngestReply {
                accepted: 0,
                duplicates: 0,
                ignored,
            });
        }
        // An edge: the events go to JetStream, and 2xx means JetStream acknowledged them;
        // while NATS cannot take them, 503 (the sender retries; with event ids the retry
        // counts once even when the server stored what it did not acknowledge).
        if let Some(forward) = self.writer.event_forwarder() {
            let outcome = forward.clone().forward(self.name.clone(), p.events).await;
            drop(held);
            return match outcome {
                Ok((accepted, duplicates)) => {
                    counted(accepted);
                    m.webhook_events
                        .with_label_values(&[s, "accepted"])
                        .inc_by(accepted as u64);
                    if duplicates > 0 {
                        m.webhook_events
                            .with_label_values(&[s, "duplicate"])
                            .inc_by(duplicates as u64);
                    }
                    Ok(IngestReply {
                        accepted,
                        duplicates,
                        ignored,
                    })
                }
                Err(e) => {
                    m.rejected.with_label_values(&[s, "nats_unavailable"]).inc();
                    m.webhook_events
                        .with_label_values(&[s, "rejected"])
                        .inc_by(n as u64);
                    let kept = if e.maybe_stored {
                        "the server may still store them when it is back: retry with the same \
                         event_id values and they count once"
                    } else {
                        "nothing of this request was kept: retry later"
                    };
                    Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "nats_unavailable",
                        format!(
                            "this edge forwards to NATS JetStream, which did not acknowledge the \
                             events ({}); {kept}",
                            e.reason
                        ),
                    )
                    .with_retry_after(RETRY_AFTER_SECS))
                }
            };
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let batch = EventBatch {
            source: self.name.clone(),
            events: p.events,
            folded: p.folded,
            reply: tx,
            // The events stay counted in the budget until the writer has folded them.
            hold: Some(Hold(Box::new(held))),
        };
        let refused = |reason: &str| {
            m.rejected.with_label_values(&[s, reason]).inc();
            m.webhook_events
                .with_label_values(&[s, "rejected"])
                .inc_by(n as u64);
        };
        match self.writer.try_send_events(batch) {
            Ok(()) => {}
            Err(SubmitError::Full(_)) => {
                refused("queue_full");
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "queue_full",
                    "the ingest queue is full; retry later",
                )
                .with_retry_after(RETRY_AFTER_SECS));
            }
            Err(SubmitError::Closed(_)) => {
                refused("shutting_down");
                return Err(shutting_down());
            }
            Err(SubmitError::Degraded(_, reason)) => {
                refused("store_degraded");
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_degraded",
                    format!(
                        "the store cannot commit ({reason}); nothing of this request was kept; \
                         Sentinel recovers by itself: retry later"
                    ),
                )
                .with_retry_after(RETRY_AFTER_SECS));
            }
        }
        match rx.await {
            Ok(Ok(ack)) => {
                counted(ack.accepted);
                Ok(IngestReply {
                    accepted: ack.accepted,
                    duplicates: ack.duplicates,
                    ignored,
                })
            }
            Ok(Err(WriteError::Store(_))) => {
                // The cause (with the store's path) is in Sentinel's log.
                refused("store_unavailable");
                Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the events could not be stored; nothing of this request was kept; retry later",
                )
                .with_retry_after(RETRY_AFTER_SECS))
            }
            Ok(Err(_)) | Err(_) => {
                refused("shutting_down");
                Err(shutting_down())
            }
        }
    }

    fn over_budget(&self) -> ApiError {
        self.metrics
            .rejected
            .with_label_values(&[&self.name, "memory_budget"])
            .inc();
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "over_capacity",
            "too many bytes of webhook requests in flight; retry later",
        )
        .with_retry_after(RETRY_AFTER_SECS)
    }
}

fn shutting_down() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting_down",
        "Sentinel is shutting down; nothing of this request was kept; retry later",
    )
    .with_retry_after(RETRY_AFTER_SECS)
}

/// Decompresses (asking `held` for the memory), parses and filters a body.
fn prepare(
    format: Format,
    encoding: Encoding,
    raw: &[u8],
    limits: &Limits,
    scanner: Option<&Scanner>,
    held: &mut Reservation,
    fold: Option<(&Arc<LiveRules>, &Arc<str>)>,
) -> Result<Prepared, DecodeError> {
    let plain = decode::decompress(encoding, raw, limits.max_body_bytes, &mut |n| held.grow(n))?;
    let bytes = plain.len();
    let mut events = decode::parse(format, &plain, limits)?;
    drop(plain);
    let total = events.len();
    if let Some(scanner) = scanner {
        events.retain(|e| scanner.is_error_line(&e.line));
    }
    // From here on the events are what the request holds.
    let held_now: usize = events
        .iter()
        .map(|e| {
            e.line.len()
                + e.key.as_ref().map_or(0, Vec::len)
                + e.id.as_ref().map_or(0, String::len)
                + EVENT_OVERHEAD
        })
        .sum();
    if !held.resize(held_now) {
        return Err(DecodeError::OverBudget);
    }
    let folded =
        fold.map(|(rules, source)| crate::ingest::logger::fold_events(rules, source, &events));
    Ok(Prepared {
        events,
        folded,
        total,
        bytes,
    })
}

enum BodyError {
    TooLarge,
    OverBudget,
    Read(String),
}

/// Reads and discards what is left of a refused body, at most `limit` bytes and
/// [`DRAIN_TIME`] (a bounded "lingering close"), so that the client gets to read the 413
/// or 429 it is about to receive: a server that closes a connection with unread data
/// makes the kernel reset it, and the client then sees a reset instead of the answer.
/// Memory stays bounded: every frame is dropped as it comes.
pub(crate) async fn drain(mut body: Body, limit: usize) {
    let discard = async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(d) = frame.data_ref() {
                seen += d.len();
                if seen > limit {
                    return;
                }
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, discard).await;
}

/// Reads the body, at most `limit` bytes, holding its size in `held` as it arrives.
async fn read_body(
    body: &mut Body,
    limit: usize,
    declared: Option<usize>,
    held: &mut Reservation,
) -> Result<Bytes, BodyError> {
    let mut first: Option<Bytes> = None;
    let mut buf: Vec<u8> = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Read(format!("reading the body failed: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        total += data.len();
        if total > limit {
            return Err(BodyError::TooLarge);
        }
        if total > held.bytes() && !held.resize(total) {
            return Err(BodyError::OverBudget);
        }
        if first.is_none() && buf.is_empty() {
            first = Some(data);
            continue;
        }
        if let Some(f) = first.take() {
            buf.reserve_exact(declared.unwrap_or(0).max(total).min(limit) - buf.len());
            buf.extend_from_slice(&f);
        }
        buf.extend_from_slice(&data);
    }
    Ok(match first {
        Some(f) => f,
        None => Bytes::from(buf),
    })
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Result<Option<&str>, ApiError> {
    match headers.get(&name) {
        None => Ok(None),
        Some(v) => v.to_str().map(Some).map_err(|_| {
            ApiError::bad_request("bad_header", format!("the {name} header is not ASCII"))
        }),
    }
}

fn decode_error(e: DecodeError) -> ApiError {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let err = ApiError::new(status, e.code(), e.to_string());
    if status == StatusCode::TOO_MANY_REQUESTS {
        err.with_retry_after(RETRY_AFTER_SECS)
    } else {
        err
    }
}

/// The wall clock, read at the edge (the signature check takes it as a parameter).
fn unix_now() -> i64 {
    jiff::Timestamp::now().as_second()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::Manifest;
    use crate::ingest::writer::Writer;
    use crate::store::Store;
    use axum::http::HeaderValue;
    use tower::ServiceExt;

    #[test]
    fn signature_matches_an_independent_hmac() {
        // python3: hmac.new(b"s3cret", b'1700000000.{"error":"x"}', hashlib.sha256).hexdigest()
        assert_eq!(
            signature(b"s3cret", 1_700_000_000, br#"{"error":"x"}"#),
            "sha256=c45f29bf613d7db9499218b0dc3417f87f46e5521534eebafd01e4d510ca30a2"
        );
    }

    fn signed(secret: &[u8], ts: i64, body: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(TIMESTAMP_HEADER, HeaderValue::from(ts));
        let sig = signature(secret, ts, body);
        h.insert(SIGNATURE_HEADER, HeaderValue::from_str(&sig).unwrap());
        h
    }

    #[test]
    fn hmac_checks_time_window_and_every_bit() {
        let auth = WebhookAuth::none().with_hmac_secret(b"k");
        let now = 1_700_000_000;
        let body = b"{\"error\":\"x\"}";
        assert!(
            auth.check_signature(&signed(b"k", now, body), body, now)
                .is_ok()
        );
        assert!(
            auth.check_signature(&signed(b"k", now - 300, body), body, now)
                .is_ok()
        );
        assert!(
            auth.check_signature(&signed(b"k", now - 301, body), body, now)
                .is_err()
        );
        assert!(
            auth.check_signature(&signed(b"k", now + 301, body), body, now)
                .is_err()
        );
        assert!(
            auth.check_signature(&signed(b"other", now, body), body, now)
                .is_err()
        );
        assert!(auth.check_signature(&HeaderMap::new(), body, now).is_err());
        for i in 0..body.len() * 8 {
            let mut flipped = body.to_vec();
            flipped[i / 8] ^= 1 << (i % 8);
            let e = auth
                .check_signature(&signed(b"k", now, body), &flipped, now)
                .unwrap_err();
            assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
        }
        // No HMAC configured: nothing to check.
        assert!(
            WebhookAuth::none()
                .check_signature(&HeaderMap::new(), body, now)
                .is_ok()
        );
    }

    #[test]
    fn bearer_tokens_compare_exactly() {
        let auth = WebhookAuth::none().with_token("tok");
        let h = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            h
        };
        assert!(auth.check_token(&h("Bearer tok")).is_ok());
        assert!(auth.check_token(&h("bearer  tok ")).is_ok());
        assert!(auth.check_token(&h("Bearer tok2")).is_err());
        assert!(auth.check_token(&h("Bearer to")).is_err());
        assert!(auth.check_token(&h("Basic dG9rOg==")).is_err());
        assert!(auth.check_token(&HeaderMap::new()).is_err());
        let shown = format!("{:?}", WebhookAuth::none().with_token("s3cr3t-value"));
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }

    #[test]
    fn missing_secrets_are_named() {
        let src = crate::config::Config::from_yaml(
            "sources:\n  - type: webhook\n    name: ci\n    port: 0\n    token_env: CI_TOKEN\n",
            std::path::Path::new("/x/sentinel.yaml"),
            None,
        )
        .unwrap()
        .sources
        .remove(0);
        let crate::config::SourceConfig::Webhook(mut src) = src else {
            panic!("a webhook source")
        };
        let e = WebhookAuth::from_lookup(&src, |_| None).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("\"ci\"") && msg.contains("CI_TOKEN"), "{msg}");
        assert!(WebhookAuth::from_lookup(&src, |_| Some(String::new())).is_err());
        assert!(
            WebhookAuth::from_lookup(&src, |_| Some("t".into()))
                .unwrap()
                .is_required()
        );
        src.token_env = None;
        assert!(
            !WebhookAuth::from_lookup(&src, |_| None)
                .unwrap()
                .is_required()
        );
    }

    #[test]
    fn the_budget_is_shared_and_given_back() {
        let b = Arc::new(IngestBudget::new(100));
        let mut r1 = b.try_reserve(60).unwrap();
        assert!(b.would_fit(40) && !b.would_fit(41));
        assert!(b.try_reserve(41).is_none());
        let r2 = b.try_reserve(40).unwrap();
        assert!(!r1.grow(1));
        assert_eq!(r1.bytes(), 60);
        drop(r2);
        assert!(r1.grow(40));
        assert!(r1.resize(10));
        assert_eq!(b.used_bytes(), 10);
        drop(r1);
        assert_eq!(b.used_bytes(), 0);
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        writer: Option<Writer>,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            if let Some(w) = self.writer.take() {
                w.join();
            }
        }
    }

    fn fixture(yaml_source: &str, auth: WebhookAuth, budget: usize) -> (Fixture, Router) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("s.redb")).unwrap());
        let metrics = Arc::new(Metrics::new());
        let (writer, handle) = Writer::start(
            store.clone(),
            crate::attribute::LiveRules::with_manifest(Manifest::default()),
            metrics.clone(),
            None,
        )
        .unwrap();
        let yaml = format!("sources:\n  - type: webhook\n    name: hook\n{yaml_source}");
        let src = crate::config::Config::from_yaml(&yaml, &dir.path().join("s.yaml"), None)
            .unwrap()
            .sources
            .remove(0);
        let crate::config::SourceConfig::Webhook(src) = src else {
            panic!("a webhook source")
        };
        let app = router(
            &src,
            auth,
            4096,
            handle,
            metrics.clone(),
            Arc::new(IngestBudget::new(budget)),
        )
        .unwrap();
        let f = Fixture {
            _dir: dir,
            store,
            metrics,
            writer: Some(writer),
        };
        (f, app)
    }

    async fn post(app: &Router, ct: &str, body: &[u8]) -> (StatusCode, serde_json::Value) {
        let req = Request::post("/any/path")
            .header(header::CONTENT_TYPE, ct)
            .body(Body::from(body.to_vec()))
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn events_are_committed_before_the_answer_and_ids_dedupe() {
        let (f, app) = fixture("    port: 0\n", WebhookAuth::none(), 1 << 20);
        let body = br#"[{"error":"ERROR [PACT:a:b] boom","event_id":"e1"},{"message":"no key","event_id":"e2"}]"#;
        let (st, v) = post(&app, "application/json", body).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(
            v,
            serde_json::json!({"accepted": 2, "duplicates": 0, "ignored": 0})
        );
        // Durable before the answer (in the ingest log); in the store a commit later.
        eventually(|| f.store.delivery_seen("hook", "e2").unwrap());
        assert_eq!(f.store.key_counts().unwrap()["PACT:a:b"], 1);
        let (st, v) = post(&app, "application/json", body).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(
            v,
            serde_json::json!({"accepted": 0, "duplicates": 2, "ignored": 0})
        );
        assert_eq!(f.store.key_counts().unwrap()["PACT:a:b"], 1);
        assert_eq!(f.store.totals().unwrap()["webhook_events"], 2);
        let text = f.metrics.render();
        assert!(
            text.contains(r#"sentinel_webhook_requests_total{code="200",source="hook"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"sentinel_error_lines_total{source="hook"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"sentinel_keyed_lines_total{source="hook"} 1"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn own_error_patterns_filter_and_the_rest_is_ignored() {
        let (f, app) = fixture(
            "    port: 0\n    error_patterns: [FATAL]\n",
            WebhookAuth::none(),
            1 << 20,
        );
        let (st, v) = post(
            &app,
            "text/plain",
            b"FATAL [PACT:a:b] x\ninfo fine\nFATAL again\n",
        )
        .await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(
            v,
            serde_json::json!({"accepted": 2, "duplicates": 0, "ignored": 1})
        );
        eventually(|| f.store.totals().unwrap().get("webhook_events") == Some(&2));
    }

    /// Polls `cond` until it holds (5 s at most).
    fn eventually(mut cond: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !cond() {
            assert!(
                std::time::Instant::now() < deadline,
                "condition not met in 5 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[tokio::test]
    async fn refusals_are_json_with_the_right_status() {
        let (_f, app) = fixture(
            "    port: 0\n",
            WebhookAuth::none().with_token("t"),
            1 << 20,
        );
        let (st, v) = post(&app, "application/json", b"{}").await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        assert_eq!(v["error"]["code"], "unauthorized");
        let (_f, app) = fixture("    port: 0\n", WebhookAuth::none(), 1 << 20);
        let (st, v) = post(&app, "application/json", b"{\"error\":").await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert_eq!(v["error"]["code"], "invalid_json");
        let (st, v) = post(&app, "application/msgpack", b"\x81").await;
        assert_eq!(st, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(v["error"]["code"], "unsupported_media_type");
        let big = vec![b'x'; decode::MAX_BODY_BYTES + 1];
        let (st, v) = post(&app, "text/plain", &big).await;
        assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(v["error"]["code"], "payload_too_large");
        let resp = app
            .clone()
            .oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test]
    async fn over_the_memory_budget_is_429_with_retry_after() {
        let (f, app) = fixture("    port: 0\n", WebhookAuth::none(), 1000);
        let body = "ERROR x\n".repeat(200);
        let req = Request::post("/")
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from(body))
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
        let text = f.metrics.render();
        assert!(
            text.contains(
                r#"sentinel_ingest_rejected_total{reason="memory_budget",source="hook"} 1"#
            ),
            "{text}"
        );
        // A small one still fits.
        let (st, _) = post(&app, "text/plain", b"ERROR small\n").await;
        assert_eq!(st, StatusCode::OK);
    }
}
