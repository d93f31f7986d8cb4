//! The listener of a `type: github` / `type: gitlab` source and its log-reading queue.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;

use super::fetch::{ATTEMPTS, Api, Failure, backoff};
use super::payload::{self, Hook, Job, Outcome};
use crate::aggregate::{Event, LineAggregator};
use crate::config::ForgeProvider;
use crate::http::ApiError;
use crate::http::auth::TokenDigest;
use crate::ingest::writer::{EventBatch, SubmitError, WriterHandle};
use crate::metrics::Metrics;
use crate::scan::Scanner;
use crate::store::Store;
use crate::store::ci::{CI_ERRORS_MAX, CiOccurrence, CiRecord, PendingFetch};
use crate::store::deliveries::delivery_hash;

/// The largest webhook body accepted (GitHub caps its payloads at 25 MB; job and pipeline
/// events are kilobytes).
pub const MAX_BODY_BYTES: usize = 5 << 20;
/// Fetches waiting in a source's durable queue at most (rows of `ci_queue`); past it a
/// webhook that would add one is answered 503 with `Retry-After` (the sender redelivers),
/// never acknowledged. A `workflow_run` listed into its failed jobs may pass it by the
/// run's jobs (at most 100).
pub const QUEUE_CAPACITY: usize = 256;
/// Delivery ids remembered (in memory, and durably for the deliveries that queued work); a
/// redelivery of one is acknowledged at once.
pub const RECENT_DELIVERIES: usize = 10_000;
/// How far the `webhook-timestamp` of a signed GitLab hook may be from now, in seconds.
pub const SIGNATURE_TOLERANCE_SECS: i64 = 300;
/// The text of an incident whose job's log could not be read.
pub const LOG_UNREAD: &str = "ERROR CI job failed; its log could not be read";

/// How a source authenticates its webhooks.
#[derive(Clone, Default)]
pub(crate) struct Secret {
    /// The raw secret (GitHub HMAC key; GitLab token or `whsec_` signing key).
    raw: Option<Vec<u8>>,
    /// GitLab's `X-Gitlab-Token`, hashed.
    token: Option<TokenDigest>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("set", &self.raw.is_some())
            .finish()
    }
}

impl Secret {
    pub(crate) fn new(secret: Option<&str>) -> Secret {
        match secret {
            None => Secret::default(),
            Some(s) => Secret {
                raw: Some(s.as_bytes().to_vec()),
                token: Some(TokenDigest::of(s.as_bytes())),
            },
        }
    }

    fn hmac(key: &[u8]) -> hmac::Hmac<Sha256> {
        <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
    }

    /// GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`.
    pub(crate) fn check_github(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
        let Some(key) = &self.raw else { return Ok(()) };
        let Some(sig) = text(headers, "x-hub-signature-256") else {
            return Err(ApiError::unauthorized(
                "missing X-Hub-Signature-256 (configure the webhook's secret)",
                None,
            ));
        };
        let Some(want) = sig
            .trim()
            .strip_prefix("sha256=")
            .and_then(|h| hex::decode(h).ok())
        else {
            return Err(ApiError::unauthorized(
                "X-Hub-Signature-256 is not sha256=<hex>",
                None,
            ));
        };
        let mut mac = Secret::hmac(key);
        mac.update(body);
        mac.verify_slice(&want).map_err(|_| {
            ApiError::unauthorized("X-Hub-Signature-256 does not match the body", None)
        })
    }

    /// GitLab: `X-Gitlab-Token` equal to the secret, or the signed form (`webhook-id`,
    /// `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256(key, id.ts.body)>`,
    /// the key being the secret's `whsec_` base64 part, or the secret itself).
    pub(crate) fn check_gitlab(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<(), ApiError> {
        let (Some(raw), Some(token)) = (&self.raw, &self.token) else {
            return Ok(());
        };
        if let Some(sigs) = text(headers, "webhook-signature") {
            let (Some(id), Some(ts)) = (
                text(headers, "webhook-id"),
                text(headers, "webhook-timestamp"),
            ) else {
                return Err(ApiError::unauthorized(
                    "a signed hook needs webhook-id and webhook-timestamp",
                    None,
                ));
            };
            let Ok(at) = ts.trim().parse::<i64>() else {
                return Err(ApiError::unauthorized(
                    "webhook-timestamp is not unix seconds",
                    None,
                ));
            };
            if (now - at).abs() > SIGNATURE_TOLERANCE_SECS {
                return Err(ApiError::unauthorized(
                    format!(
                        "webhook-timestamp is more than {SIGNATURE_TOLERANCE_SECS} s from now \
                         (check the sender's clock)"
                    ),
                    None,
                ));
            }
            let key = signing_key(raw);
            for sig in sigs.split_whitespace() {
                let Some(b64) = sig.strip_prefix("v1,") else {
                    continue;
                };
                let Ok(want) =
                    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64)
                else {
                    continue;
                };
                let mut mac = Secret::hmac(&key);
                mac.update(id.as_bytes());
                mac.update(b".");
                mac.update(ts.trim().as_bytes());
                mac.update(b".");
                mac.update(body);
                if mac.verify_slice(&want).is_ok() {
                    return Ok(());
                }
            }
            return Err(ApiError::unauthorized(
                "webhook-signature does not match the body",
                None,
            ));
        }
        match text(headers, "x-gitlab-token") {
            Some(t) if token.matches(t.as_bytes()) => Ok(()),
            Some(_) => Err(ApiError::unauthorized("invalid X-Gitlab-Token", None)),
            None => Err(ApiError::unauthorized(
                "missing X-Gitlab-Token (or a webhook-signature)",
                None,
            )),
        }
    }
}

/// The HMAC key of a GitLab signing token: the bytes `whsec_<base64>` encodes, else the
/// secret as written.
fn signing_key(raw: &[u8]) -> Vec<u8> {
    std::str::from_utf8(raw)
        .ok()
        .and_then(|s| s.strip_prefix("whsec_"))
        .and_then(|b| base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b).ok())
        .unwrap_or_else(|| raw.to_vec())
}

fn text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Work for the log queue (serialised into its durable row).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Work {
    /// A job that ended.
    Job {
        /// The job.
        job: Job,
        /// How.
        outcome: Outcome,
    },
    /// A GitHub run that ended: list its jobs first.
    Run {
        /// Repository, commit, branch, workflow of its jobs.
        template: Job,
        /// The run's id.
        run_id: u64,
        /// How it ended.
        outcome: Outcome,
    },
}

/// One row of the durable queue, in memory.
#[derive(Debug)]
pub(crate) struct Queued {
    seq: u64,
    work: Work,
    tries: u32,
    not_before_ms: u64,
}

/// Delivery ids seen lately, as hashes ([`delivery_hash`] with the source's scope).
#[derive(Debug, Default)]
struct Recent {
    set: HashSet<u64>,
    order: VecDeque<u64>,
}

impl Recent {
    fn seen(&self, h: u64) -> bool {
        self.set.contains(&h)
    }

    fn insert(&mut self, h: u64) {
        if self.set.insert(h) {
            self.order.push_back(h);
            if self.order.len() > RECENT_DELIVERIES
                && let Some(old) = self.order.pop_front()
            {
                self.set.remove(&old);
            }
        }
    }
}

/// The scope of a CI source's delivery hashes.
fn scope(name: &str) -> String {
    format!("ci\0{name}")
}

fn now_ms() -> u64 {
    u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap_or(0)
}

/// One CI source's handler state.
#[derive(Debug)]
pub(crate) struct CiHook {
    pub(crate) name: Arc<str>,
    pub(crate) provider: ForgeProvider,
    pub(crate) secret: Secret,
    pub(crate) queue: mpsc::Sender<Queued>,
    pub(crate) metrics: Arc<Metrics>,
    store: Arc<Store>,
    /// Rows of this source in the durable queue (shared with the worker).
    pending: Arc<AtomicUsize>,
    capacity: usize,
    recent: Mutex<Recent>,
}

/// The durable queue of one source, as found at start.
#[derive(Debug)]
pub(crate) struct Backlog {
    /// Its rows, in order.
    pub(crate) rows: VecDeque<Queued>,
    /// How many rows it holds: the hook adds, the worker takes away.
    pub(crate) pending: Arc<AtomicUsize>,
    /// The delivery hashes remembered.
    recent: Vec<u64>,
    /// The most rows the source keeps ([`QUEUE_CAPACITY`]).
    pub(crate) capacity: usize,
}

/// Reads `name`'s rows of the durable queue and the remembered delivery ids (blocking: at
/// start). Rows that no longer decode are dropped with a warning.
///
/// # Errors
///
/// The store cannot be read.
pub(crate) fn backlog(store: &Store, name: &str) -> Result<Backlog, crate::store::StoreError> {
    let mut rows = VecDeque::new();
    let mut bad = Vec::new();
    for (seq, p) in store.ci_pending()? {
        if p.source != name {
            continue;
        }
        match serde_json::from_value::<Work>(p.work) {
            Ok(work) => rows.push_back(Queued {
                seq,
                work,
                tries: p.tries,
                not_before_ms: p.not_before_ms,
            }),
            Err(e) => {
                tracing::warn!(source = %name, seq, error = %e, "dropping a queued CI fetch that does not decode");
                bad.push(seq);
            }
        }
    }
    if !bad.is_empty() {
        let mut txn = store.begin_write()?;
        for seq in bad {
            txn.remove_ci_fetch(seq)?;
        }
        txn.commit()?;
    }
    if !rows.is_empty() {
        tracing::info!(source = %name, pending = rows.len(), "resuming queued CI log fetches");
    }
    Ok(Backlog {
        pending: Arc::new(AtomicUsize::new(rows.len())),
        rows,
        recent: store.ci_deliveries()?,
        capacity: QUEUE_CAPACITY,
    })
}

/// The router of one CI source: `POST` on any path; `backlog.capacity` bounds its durable
/// queue.
pub(crate) fn router(
    name: &str,
    provider: ForgeProvider,
    secret: Secret,
    queue: mpsc::Sender<Queued>,
    metrics: Arc<Metrics>,
    store: Arc<Store>,
    backlog: &Backlog,
) -> Router {
    let mut recent = Recent::default();
    for h in &backlog.recent {
        recent.insert(*h);
    }
    let hook = Arc::new(CiHook {
        name: Arc::from(name),
        provider,
        secret,
        queue,
        metrics,
        store,
        pending: backlog.pending.clone(),
        capacity: backlog.capacity,
        recent: Mutex::new(recent),
    });
    Router::new().fallback(handle).with_state(hook)
}

async fn handle(State(hook): State<Arc<CiHook>>, req: Request) -> Response {
    let resp = match hook.receive(req).await {
        Ok((code, body)) => (code, axum::Json(body)).into_response(),
        Err(e) => e.into_response(),
    };
    hook.metrics
        .webhook_requests
        .with_label_values(&[&hook.name, resp.status().as_str()])
        .inc();
    resp
}

impl CiHook {
    async fn receive(&self, req: Request) -> Result<(StatusCode, Value), ApiError> {
        if req.method() != Method::POST {
            return Err(ApiError::method_not_allowed("POST"));
        }
        let (parts, body) = req.into_parts();
        let headers = &parts.headers;
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is over {MAX_BODY_BYTES} bytes"),
            )
        };
        if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
            crate::source::webhook::drain(body, MAX_BODY_BYTES).await;
            return Err(too_large());
        }
        let raw = match read_limited(body, MAX_BODY_BYTES).await {
            Ok(b) => b,
            Err(None) => return Err(too_large()),
            Err(Some(m)) => return Err(ApiError::bad_request("body_read", m)),
        };
        let now = jiff::Timestamp::now().as_second();
        let (event, delivery) = match self.provider {
            ForgeProvider::Gitlab => {
                self.secret.check_gitlab(headers, &raw, now)?;
                (
                    text(headers, "x-gitlab-event").unwrap_or("").to_string(),
                    text(headers, "x-gitlab-event-uuid")
                        .or_else(|| text(headers, "webhook-id"))
                        .map(str::to_string),
                )
            }
            _ => {
                self.secret.check_github(headers, &raw)?;
                (
                    text(headers, "x-github-event").unwrap_or("").to_string(),
                    text(headers, "x-github-delivery").map(str::to_string),
                )
            }
        };
        let body: Value = serde_json::from_slice(&raw).map_err(|e| {
            ApiError::bad_request(
                "invalid_json",
                format!(
                    "the body is not JSON: {e} (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            )
        })?;
        let delivery_key = delivery
            .as_deref()
            .map(|d| delivery_hash(&scope(&self.name), d));
        if let Some(h) = delivery_key
            && self.recent().seen(h)
        {
            return Ok((
                StatusCode::OK,
                json!({"duplicate": true, "delivery": delivery, "note": "this delivery was received before; not counted again"}),
            ));
        }
        let hook = match self.provider {
            ForgeProvider::Gitlab => payload::gitlab(&event, &body),
            _ => payload::github(&event, &body),
        };
        let reply = match hook {
            Hook::Ping => (StatusCode::OK, json!({"ok": true, "event": event})),
            Hook::Ignored(why) => (StatusCode::OK, json!({"ignored": why})),
            Hook::Jobs(jobs) => {
                // A pass on the first attempt says nothing about flakiness.
                let work: Vec<Work> = jobs
                    .into_iter()
                    .filter(|(j, o)| *o == Outcome::Failed || j.attempt > 1 || !j.complete)
                    .map(|(job, outcome)| Work::Job { job, outcome })
                    .collect();
                if work.is_empty() {
                    (
                        StatusCode::OK,
                        json!({"ignored": "a job passed on its first attempt"}),
                    )
                } else {
                    let n = work.len();
                    self.enqueue(work, delivery_key).await?;
                    (StatusCode::ACCEPTED, json!({"queued": n}))
                }
            }
            Hook::Run {
                template,
                run_id,
                outcome,
            } => {
                self.enqueue(
                    vec![Work::Run {
                        template: *template,
                        run_id,
                        outcome,
                    }],
                    delivery_key,
                )
                .await?;
                (StatusCode::ACCEPTED, json!({"queued": 1}))
            }
        };
        if let Some(h) = delivery_key {
            self.recent().insert(h);
        }
        Ok(reply)
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes `work` into the durable queue, with the delivery's id, and hands it to the
    /// worker: only then is the webhook answered 202. A full queue (or a store that cannot
    /// take the rows) is 503 with `Retry-After`: nothing is acknowledged that is not kept.
    async fn enqueue(&self, work: Vec<Work>, delivery: Option<u64>) -> Result<(), ApiError> {
        let n = work.len();
        let full = |what: &str| {
            self.metrics
                .rejected
                .with_label_values(&[&self.name, "queue_full"])
                .inc();
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "queue_full",
                format!(
                    "{what}: {} CI log fetches wait at most (the queue holds {}); redeliver later",
                    self.capacity,
                    self.pending.load(Ordering::SeqCst)
                ),
            )
            .with_retry_after(30)
        };
        let before = self.pending.fetch_add(n, Ordering::SeqCst);
        if before + n > self.capacity {
            self.pending.fetch_sub(n, Ordering::SeqCst);
            return Err(full("the log-fetch queue is full"));
        }
        let Ok(permits) = self.queue.try_reserve_many(n) else {
            self.pending.fetch_sub(n, Ordering::SeqCst);
            return Err(full("the log-fetch queue is full"));
        };
        let fetches: Vec<PendingFetch> = work
            .iter()
            .map(|w| PendingFetch::new(&self.name, serde_json::to_value(w).unwrap_or(Value::Null)))
            .collect();
        let at_us = u64::try_from(jiff::Timestamp::now().as_microsecond()).unwrap_or(0);
        let store = self.store.clone();
        let written = tokio::task::spawn_blocking(move || {
            let mut txn = store.begin_write()?;
            let seqs =
                txn.enqueue_ci_fetches(delivery.map(|h| (at_us, h)), RECENT_DELIVERIES, &fetches)?;
            txn.commit()?;
            Ok::<_, crate::store::StoreError>(seqs)
        })
        .await;
        let seqs = match written {
            Ok(Ok(seqs)) => seqs,
            Ok(Err(e)) => {
                self.pending.fetch_sub(n, Ordering::SeqCst);
                tracing::warn!(source = %self.name, error = %e, "cannot queue a CI log fetch");
                return Err(full("the log-fetch queue cannot be written"));
            }
            Err(e) => {
                self.pending.fetch_sub(n, Ordering::SeqCst);
                tracing::warn!(source = %self.name, error = %e, "cannot queue a CI log fetch");
                return Err(full("the log-fetch queue cannot be written"));
            }
        };
        for ((p, work), seq) in permits.zip(work).zip(seqs) {
            p.send(Queued {
                seq,
                work,
                tries: 0,
                not_before_ms: 0,
            });
        }
        Ok(())
    }
}

/// Reads at most `limit` bytes of `body`: Err(None) when it is longer.
async fn read_limited(body: Body, limit: usize) -> Result<Vec<u8>, Option<String>> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Some(format!("reading the body failed: {e}")))?;
        if let Ok(d) = frame.into_data() {
            if out.len() + d.len() > limit {
                crate::source::webhook::drain(body, limit).await;
                return Err(None);
            }
            out.extend_from_slice(&d);
        }
    }
    Ok(out)
}

/// What the log queue's worker needs.
#[derive(Debug)]
pub(crate) struct Worker {
    pub(crate) name: Arc<str>,
    pub(crate) provider: ForgeProvider,
    pub(crate) api: Api,
    pub(crate) scanner: Scanner,
    pub(crate) writer: WriterHandle,
    pub(crate) store: Arc<Store>,
    pub(crate) max_line_bytes: usize,
}

/// How one attempt at a queued fetch ended.
enum Done {
    /// A failed job's log (or why it could not be read: attempts spent).
    Failed(Job, Result<String, String>),
    /// A passed rerun.
    Passed(Job),
    /// A run's jobs, listed.
    Run(Outcome, Vec<(Job, Option<Outcome>)>),
    /// Nothing to record (attempts spent on a passed job or a run's listing).
    Dropped,
}

impl Worker {
    /// Takes work until the queue closes (or `stop`): first the rows `backlog` found in
    /// the durable queue at start, then what the hook hands over. One fetch at a time, in
    /// order: the failure of a commit is recorded before a later rerun's pass is looked
    /// at. A fetch in the works is abandoned at stop; its row stays and is resumed at the
    /// next start (with its retry state).
    pub(crate) async fn run(
        self,
        mut rx: mpsc::Receiver<Queued>,
        mut backlog: VecDeque<Queued>,
        pending: Arc<AtomicUsize>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        loop {
            let q = match backlog.pop_front() {
                Some(q) => q,
                None => tokio::select! {
                    () = &mut stop => return,
                    w = rx.recv() => match w { Some(w) => w, None => return },
                },
            };
            tokio::select! {
                () = &mut stop => return,
                () = self.process(q) => {
                    // Its row is gone (a run's rows for its jobs too: worked on inline).
                    let _ = pending.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |p| {
                        Some(p.saturating_sub(1))
                    });
                }
            }
        }
    }

    /// Works on one row until its result is committed (or its attempts are spent); a run's
    /// jobs are worked on here too.
    async fn process(&self, mut q: Queued) {
        loop {
            let wait = q.not_before_ms.saturating_sub(now_ms());
            if wait > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
            }
            match self.attempt(&q.work).await {
                Ok(done) => return self.finish(q.seq, done).await,
                Err(f) if f.retry && q.tries + 1 < ATTEMPTS => {
                    q.tries += 1;
                    let pause = backoff(q.tries);
                    q.not_before_ms =
                        now_ms() + u64::try_from(pause.as_millis()).unwrap_or(u64::MAX);
                    tracing::info!(source = %self.name, seq = q.seq, tries = q.tries, error = %f.message, "a CI fetch failed; retried in {pause:?}");
                    let row = PendingFetch {
                        tries: q.tries,
                        not_before_ms: q.not_before_ms,
                        ..PendingFetch::new(
                            &self.name,
                            serde_json::to_value(&q.work).unwrap_or(Value::Null),
                        )
                    };
                    let (store, seq) = (self.store.clone(), q.seq);
                    let _ = tokio::task::spawn_blocking(move || {
                        let mut txn = store.begin_write()?;
                        txn.update_ci_fetch(seq, &row)?;
                        txn.commit()
                    })
                    .await;
                }
                Err(f) => {
                    let done = match &q.work {
                        Work::Job {
                            job,
                            outcome: Outcome::Failed,
                        } => {
                            tracing::warn!(source = %self.name, job = job.id, error = %f.message, "cannot read a failed CI job's log");
                            Done::Failed(job.clone(), Err(f.message))
                        }
                        Work::Job { job, .. } => {
                            tracing::warn!(source = %self.name, job = job.id, error = %f.message, "cannot read a CI job");
                            Done::Dropped
                        }
                        Work::Run { run_id, .. } => {
                            tracing::warn!(source = %self.name, run = run_id, error = %f.message, "cannot list a run's jobs");
                            Done::Dropped
                        }
                    };
                    return self.finish(q.seq, done).await;
                }
            }
        }
    }

    /// One attempt: the API requests a row needs.
    async fn attempt(&self, work: &Work) -> Result<Done, Failure> {
        match work {
            Work::Job { job, outcome } => {
                let mut job = job.clone();
                self.api.complete(&mut job).await?;
                match outcome {
                    Outcome::Passed => Ok(Done::Passed(job)),
                    Outcome::Failed => {
                        let text = self.api.log(&job).await?;
                        Ok(Done::Failed(job, Ok(text)))
                    }
                }
            }
            Work::Run {
                template,
                run_id,
                outcome,
            } => {
                let jobs = self.api.run_jobs(template, *run_id).await?;
                Ok(Done::Run(*outcome, jobs))
            }
        }
    }

    /// Commits what an attempt found, removing row `seq` in the same transaction.
    async fn finish(&self, seq: u64, done: Done) {
        match done {
            Done::Failed(job, log) => self.failed(job, log, seq).await,
            Done::Passed(job) => self.passed(job, seq).await,
            Done::Dropped => self.remove(seq).await,
            Done::Run(outcome, jobs) => {
                let work: Vec<Work> = jobs
                    .into_iter()
                    .filter_map(|(job, o)| match o {
                        Some(Outcome::Failed) if outcome == Outcome::Failed => Some(Work::Job {
                            job,
                            outcome: Outcome::Failed,
                        }),
                        Some(Outcome::Passed) if job.attempt > 1 => Some(Work::Job {
                            job,
                            outcome: Outcome::Passed,
                        }),
                        _ => None,
                    })
                    .collect();
                // The run's row becomes its jobs' rows, in one transaction.
                let rows: Vec<PendingFetch> = work
                    .iter()
                    .map(|w| {
                        PendingFetch::new(
                            &self.name,
                            serde_json::to_value(w).unwrap_or(Value::Null),
                        )
                    })
                    .collect();
                let store = self.store.clone();
                let written = tokio::task::spawn_blocking(move || {
                    let mut txn = store.begin_write()?;
                    txn.remove_ci_fetch(seq)?;
                    let seqs = txn.enqueue_ci_fetches(None, RECENT_DELIVERIES, &rows)?;
                    txn.commit()?;
                    Ok::<_, crate::store::StoreError>(seqs)
                })
                .await;
                let seqs = match written {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::warn!(source = %self.name, error = %e, "cannot queue a run's jobs");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(source = %self.name, error = %e, "cannot queue a run's jobs");
                        return;
                    }
                };
                for (seq, work) in seqs.into_iter().zip(work) {
                    // Boxed: a job's processing never lists a run again.
                    Box::pin(self.process(Queued {
                        seq,
                        work,
                        tries: 0,
                        not_before_ms: 0,
                    }))
                    .await;
                }
            }
        }
    }

    /// Removes row `seq` (nothing to record).
    async fn remove(&self, seq: u64) {
        let store = self.store.clone();
        let done = tokio::task::spawn_blocking(move || {
            let mut txn = store.begin_write()?;
            txn.remove_ci_fetch(seq)?;
            txn.commit()
        })
        .await;
        if !matches!(done, Ok(Ok(()))) {
            tracing::warn!(source = %self.name, seq, "cannot remove a CI fetch from the queue");
        }
    }

    /// The failure of `job`: its log read, its first error line counted as an incident.
    async fn failed(&self, job: Job, log: Result<String, String>, seq: u64) {
        let (step, errors, log_error) = match log {
            Ok(text) => {
                let parsed = match self.provider {
                    ForgeProvider::Gitlab => super::log::gitlab(&text),
                    _ => super::log::github(&text),
                };
                let errors: Vec<String> = parsed
                    .lines
                    .iter()
                    .filter(|l| self.scanner.is_error_line(l.as_bytes()))
                    .take(CI_ERRORS_MAX)
                    .cloned()
                    .collect();
                let step = if parsed.step.is_empty() {
                    job.step.clone()
                } else {
                    parsed.step
                };
                let errors = if errors.is_empty() {
                    vec![if parsed.failure.is_empty() {
                        "ERROR CI job failed".to_string()
                    } else {
                        format!("ERROR {}", parsed.failure)
                    }]
                } else {
                    errors
                };
                (step, errors, String::new())
            }
            Err(e) => (job.step.clone(), vec![LOG_UNREAD.to_string()], e),
        };
        let mut line = format!(
            "{} [ci {} · {} · {} · {}]",
            errors[0], job.repo, job.workflow, job.name, step
        );
        if line.len() > self.max_line_bytes {
            let mut end = self.max_line_bytes;
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            line.truncate(end);
        }
        let mut agg = LineAggregator::new(self.writer.rules(), self.name.clone());
        let fp = agg.add_text(line.as_bytes(), None).0;
        let id = format!(
            "{}:{}:{}:{}",
            self.provider.as_str(),
            job.repo,
            job.id,
            job.attempt
        );
        let count = |store: &Store| store.incident_of(fp).ok().flatten().map_or(0, |i| i.count);
        let before = count(&self.store);
        let Some(accepted) = self.submit(line.into_bytes(), id).await else {
            return;
        };
        // The writer's ack means durable in the ingest log; the store has the count a commit
        // later. The occurrence is recorded (and announced) once it has, so that what follows
        // the announcement (an issue comment) sees the new count; bounded: it is recorded
        // either way.
        for _ in 0..200 {
            if accepted == 0 || count(&self.store) > before {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        let store = self.store.clone();
        let provider = self.provider.as_str();
        let done = tokio::task::spawn_blocking(move || -> Result<(), crate::store::StoreError> {
            let mut rec = store.ci_record(fp)?.unwrap_or_else(|| CiRecord {
                provider: provider.to_string(),
                repository: job.repo.clone(),
                workflow: job.workflow.clone(),
                job: job.name.clone(),
                step: step.clone(),
                ..CiRecord::default()
            });
            if rec.errors.is_empty() || log_error.is_empty() {
                rec.errors = errors;
            }
            rec.log_error = log_error.clone();
            rec.push(CiOccurrence {
                commit: job.commit,
                branch: job.branch,
                run_url: job.url,
                attempt: job.attempt,
                job_id: job.id,
                at: jiff::Timestamp::now(),
                log_read: log_error.is_empty(),
            });
            let now = jiff::Timestamp::now();
            let mut txn = store.begin_write()?;
            txn.put_ci_record(fp, &rec, (accepted > 0).then_some("occurrence"), now)?;
            txn.remove_ci_fetch(seq)?;
            txn.commit()
        })
        .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(source = %self.name, error = %e, "cannot record a CI occurrence")
            }
            Err(e) => {
                tracing::warn!(source = %self.name, error = %e, "cannot record a CI occurrence")
            }
        }
    }

    /// Hands the line to the writer (waiting while its queue is full); Some(accepted).
    async fn submit(&self, line: Vec<u8>, id: String) -> Option<usize> {
        let mut wait = std::time::Duration::from_millis(50);
        loop {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let batch = EventBatch {
                source: self.name.clone(),
                events: vec![Event {
                    line: line.clone(),
                    key: None,
                    id: Some(id.clone()),
                }],
                folded: None,
                reply: tx,
                hold: None,
            };
            match self.writer.try_send_events(batch) {
                Ok(()) => {}
                Err(SubmitError::Closed(_)) => return None,
                Err(_) => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(5));
                    continue;
                }
            }
            return match rx.await {
                Ok(Ok(ack)) => Some(ack.accepted),
                Ok(Err(e)) => {
                    tracing::warn!(source = %self.name, error = %e, "a CI failure could not be stored; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(5));
                    continue;
                }
                Err(_) => None,
            };
        }
    }

    /// A rerun that passed: the same job's failure on the same commit (an earlier attempt)
    /// is flaky.
    async fn passed(&self, job: Job, seq: u64) {
        let store = self.store.clone();
        let name = self.name.clone();
        let _ = tokio::task::spawn_blocking(move || -> Result<(), crate::store::StoreError> {
            for (fp, mut rec) in store.ci_records()? {
                if rec.flaky
                    || rec.repository != job.repo
                    || rec.job != job.name
                    || (!rec.workflow.is_empty() && !job.workflow.is_empty() && rec.workflow != job.workflow)
                {
                    continue;
                }
                let Some(failed) = rec
                    .occurrences
                    .iter()
                    .find(|o| o.commit == job.commit && o.attempt < job.attempt)
                else {
                    continue;
                };
                rec.flaky = true;
                rec.flaky_reason = format!(
                    "failed on attempt {} of commit {}, passed on attempt {}",
                    failed.attempt,
                    short(&job.commit),
                    job.attempt
                );
                tracing::info!(source = %name, job = %job.name, commit = %short(&job.commit), "a CI failure is flaky");
                let mut txn = store.begin_write()?;
                txn.put_ci_record(fp, &rec, Some("flaky"), jiff::Timestamp::now())?;
                txn.commit()?;
            }
            let mut txn = store.begin_write()?;
            txn.remove_ci_fetch(seq)?;
            txn.commit()
        })
        .await;
    }
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    /// A failing `workflow_job` (unsigned: the source has no secret).
    fn failing_job(id: u64) -> Request {
        let body = json!({"action": "completed", "repository": {"full_name": "acme/app"},
            "workflow_job": {"id": id, "name": "test", "workflow_name": "CI", "run_attempt": 1,
                             "head_sha": "c", "conclusion": "failure"}});
        Request::builder()
            .method("POST")
            .uri("/")
            .header("x-github-event", "workflow_job")
            .header("x-github-delivery", format!("d-{id}"))
            .body(Body::from(body.to_string()))
            .unwrap()
    }

    #[tokio::test]
    async fn a_full_queue_is_503_and_what_is_acknowledged_is_kept() {
        use tower::ServiceExt;
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("s.redb")).unwrap());
        let mut found = backlog(&store, "gh").unwrap();
        found.capacity = 1;
        let (tx, mut rx) = mpsc::channel(4);
        let app = router(
            "gh",
            ForgeProvider::Github,
            Secret::new(None),
            tx,
            Arc::new(Metrics::new()),
            store.clone(),
            &found,
        );
        let r = app.clone().oneshot(failing_job(1)).await.unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        // Acknowledged: in the store already, and handed to the worker.
        let pending = store.ci_pending().unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].1.source, "gh");
        assert_eq!(rx.try_recv().unwrap().seq, pending[0].0);
        // The bound: one more is refused, 503 with Retry-After and a JSON body, not kept.
        let r = app.clone().oneshot(failing_job(2)).await.unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()["retry-after"], "30");
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "queue_full", "{v}");
        assert_eq!(store.ci_pending().unwrap().len(), 1);
        // The delivery id of the kept one is durable: a restarted source knows it.
        let mut again = backlog(&store, "gh").unwrap();
        again.capacity = 8;
        assert_eq!(again.rows.len(), 1);
        assert_eq!(again.pending.load(Ordering::SeqCst), 1);
        let (tx, _rx) = mpsc::channel(4);
        let app = router(
            "gh",
            ForgeProvider::Github,
            Secret::new(None),
            tx,
            Arc::new(Metrics::new()),
            store.clone(),
            &again,
        );
        let r = app.clone().oneshot(failing_job(1)).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "a redelivery after a restart");
        assert_eq!(store.ci_pending().unwrap().len(), 1);
        // Another source's rows are not this one's.
        assert!(backlog(&store, "other").unwrap().rows.is_empty());
    }

    #[test]
    fn github_signatures_are_checked_over_the_raw_body() {
        let s = Secret::new(Some("It's a Secret to Everybody"));
        // GitHub's documented example: the body "Hello, World!".
        let mut h = HeaderMap::new();
        h.insert(
            "x-hub-signature-256",
            HeaderValue::from_static(
                "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            ),
        );
        assert!(s.check_github(&h, b"Hello, World!").is_ok());
        assert_eq!(
            s.check_github(&h, b"Hello, World?").unwrap_err().status(),
            StatusCode::UNAUTHORIZED
        );
        assert!(s.check_github(&HeaderMap::new(), b"x").is_err());
        assert!(
            Secret::new(None)
                .check_github(&HeaderMap::new(), b"x")
                .is_ok()
        );
    }

    #[test]
    fn gitlab_tokens_and_signed_hooks() {
        let s = Secret::new(Some("tok"));
        let mut h = HeaderMap::new();
        h.insert("x-gitlab-token", HeaderValue::from_static("tok"));
        assert!(s.check_gitlab(&h, b"{}", 0).is_ok());
        h.insert("x-gitlab-token", HeaderValue::from_static("tok2"));
        assert!(s.check_gitlab(&h, b"{}", 0).is_err());
        // Standard Webhooks' signed form, with a whsec_ key.
        let key = b"0123456789abcdef";
        let secret = format!(
            "whsec_{}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key)
        );
        let s = Secret::new(Some(&secret));
        let mut mac = Secret::hmac(key);
        mac.update(b"msg_1.1700000000.{}");
        let sig = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            mac.finalize().into_bytes(),
        );
        let mut h = HeaderMap::new();
        h.insert("webhook-id", HeaderValue::from_static("msg_1"));
        h.insert("webhook-timestamp", HeaderValue::from_static("1700000000"));
        h.insert(
            "webhook-signature",
            HeaderValue::from_str(&format!("v1,bogus v1,{sig}")).unwrap(),
        );
        assert!(s.check_gitlab(&h, b"{}", 1_700_000_010).is_ok());
        assert!(s.check_gitlab(&h, b"{ }", 1_700_000_010).is_err());
        assert!(s.check_gitlab(&h, b"{}", 1_700_001_000).is_err());
    }
}
