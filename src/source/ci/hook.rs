//! The listener of a `type: github` / `type: gitlab` source and its log-reading queue.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;

use super::fetch::Api;
use super::payload::{self, Hook, Job, Outcome};
use crate::aggregate::{Event, LineAggregator};
use crate::config::{CiSourceConfig, ForgeProvider};
use crate::http::ApiError;
use crate::http::auth::TokenDigest;
use crate::ingest::writer::{EventBatch, SubmitError, WriterHandle};
use crate::metrics::Metrics;
use crate::scan::Scanner;
use crate::store::Store;
use crate::store::ci::{CI_ERRORS_MAX, CiOccurrence, CiRecord};

/// The largest webhook body accepted (GitHub caps its payloads at 25 MB; job and pipeline
/// events are kilobytes).
pub const MAX_BODY_BYTES: usize = 5 << 20;
/// Jobs waiting for their log at most; past it a failed job is answered 429 (the sender
/// redelivers).
pub const QUEUE_CAPACITY: usize = 256;
/// Delivery ids remembered in memory (a redelivery of one is acknowledged at once).
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

/// Work for the log queue.
#[derive(Debug)]
pub(crate) enum Work {
    /// A job that ended.
    Job(Job, Outcome),
    /// A GitHub run that ended: list its jobs first.
    Run(Job, u64, Outcome),
}

/// Delivery ids seen lately (in memory; the counted jobs' ids are durable in the store).
#[derive(Debug, Default)]
struct Recent {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl Recent {
    fn seen(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    fn insert(&mut self, id: &str) {
        if self.set.insert(id.to_string()) {
            self.order.push_back(id.to_string());
            if self.order.len() > RECENT_DELIVERIES
                && let Some(old) = self.order.pop_front()
            {
                self.set.remove(&old);
            }
        }
    }
}

/// One CI source's handler state.
#[derive(Debug)]
pub(crate) struct CiHook {
    pub(crate) name: Arc<str>,
    pub(crate) provider: ForgeProvider,
    pub(crate) secret: Secret,
    pub(crate) queue: mpsc::Sender<Work>,
    pub(crate) metrics: Arc<Metrics>,
    recent: Mutex<Recent>,
}

/// The router of one CI source: `POST` on any path.
pub(crate) fn router(
    src: &CiSourceConfig,
    secret: Secret,
    queue: mpsc::Sender<Work>,
    metrics: Arc<Metrics>,
) -> Router {
    let hook = Arc::new(CiHook {
        name: Arc::from(src.common.name.as_str()),
        provider: src.provider,
        secret,
        queue,
        metrics,
        recent: Mutex::new(Recent::default()),
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
        if let Some(d) = &delivery
            && self.recent().seen(d)
        {
            return Ok((
                StatusCode::OK,
                json!({"duplicate": true, "delivery": d, "note": "this delivery was received before; not counted again"}),
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
                    .map(|(j, o)| Work::Job(j, o))
                    .collect();
                if work.is_empty() {
                    (
                        StatusCode::OK,
                        json!({"ignored": "a job passed on its first attempt"}),
                    )
                } else {
                    let n = work.len();
                    self.enqueue(work)?;
                    (StatusCode::ACCEPTED, json!({"queued": n}))
                }
            }
            Hook::Run {
                template,
                run_id,
                outcome,
            } => {
                self.enqueue(vec![Work::Run(*template, run_id, outcome)])?;
                (StatusCode::ACCEPTED, json!({"queued": 1}))
            }
        };
        if let Some(d) = &delivery {
            self.recent().insert(d);
        }
        Ok(reply)
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn enqueue(&self, work: Vec<Work>) -> Result<(), ApiError> {
        let permits = self.queue.try_reserve_many(work.len()).map_err(|_| {
            self.metrics
                .rejected
                .with_label_values(&[&self.name, "queue_full"])
                .inc();
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "queue_full",
                "too many CI jobs wait for their logs; redeliver later",
            )
            .with_retry_after(5)
        })?;
        for (p, w) in permits.zip(work) {
            p.send(w);
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

impl Worker {
    /// Takes work until the queue closes (or `stop`). One job at a time, in order: the
    /// failure of a commit is recorded before a later rerun's pass is looked at.
    pub(crate) async fn run(
        self,
        mut rx: mpsc::Receiver<Work>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        loop {
            let work = tokio::select! {
                () = &mut stop => return,
                w = rx.recv() => match w { Some(w) => w, None => return },
            };
            // A job in the works is abandoned at stop. The queue is in memory: jobs answered
            // 202 and not yet read are lost at a stop (redelivered from the forge, they count).
            tokio::select! {
                () = &mut stop => return,
                () = self.work(work) => {}
            }
        }
    }

    async fn work(&self, work: Work) {
        match work {
            Work::Job(job, o) => self.job(job, o).await,
            Work::Run(template, run_id, outcome) => {
                match self.api.run_jobs(&template, run_id).await {
                    Ok(jobs) => {
                        for (j, o) in jobs {
                            match o {
                                Some(Outcome::Failed) if outcome == Outcome::Failed => {
                                    self.job(j, Outcome::Failed).await;
                                }
                                Some(Outcome::Passed) if j.attempt > 1 => {
                                    self.job(j, Outcome::Passed).await;
                                }
                                _ => {}
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(source = %self.name, run = run_id, error = %e, "cannot list a run's jobs");
                    }
                }
            }
        }
    }

    async fn job(&self, mut job: Job, outcome: Outcome) {
        if let Err(e) = self.api.complete(&mut job).await {
            tracing::warn!(source = %self.name, job = job.id, error = %e, "cannot read a CI job");
            if outcome == Outcome::Passed {
                return;
            }
        }
        match outcome {
            Outcome::Passed => self.passed(job).await,
            Outcome::Failed => self.failed(job).await,
        }
    }

    /// The failure of `job`: its log read, its first error line counted as an incident.
    async fn failed(&self, job: Job) {
        let (step, errors, log_error) = match self.api.log(&job).await {
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
            Err(e) => {
                tracing::warn!(source = %self.name, job = job.id, error = %e, "cannot read a failed CI job's log");
                (job.step.clone(), vec![LOG_UNREAD.to_string()], e)
            }
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
    async fn passed(&self, job: Job) {
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
            Ok(())
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
