//! `type: cloudwatch` sources: AWS CloudWatch Logs log groups, counted exactly once.
//!
//! Each source is one tokio task polling its log groups, each every `poll_interval`
//! seconds. A poll of a group (a *sweep*) calls `FilterLogEvents` from the group's
//! [`position`] (`startTime` = the timestamp of the newest event counted, `interleaved`, the
//! `filter_pattern` and `log_stream_prefix` passed through) and follows `nextToken` until it
//! is absent (a page may be empty and still carry one).
//!
//! **Exactly once.** Every page's new events are folded ([`super::lines::Folder`]: the
//! `error_patterns` pick error lines when `filter_pattern` is empty, else every event
//! returned is one; `format` decides JSON as for files) and sent to the ingest writer as
//! one batch carrying the group's new position, which the writer commits in the same redb
//! transaction as the counts ([`crate::store::IngestBatch::source_positions`]). The
//! service answers in timestamp order, so the position — the newest timestamp and the ids
//! of the events counted at that millisecond — says exactly which events were counted: a
//! restart (or a sweep started again after an error) asks from that millisecond and skips
//! the ids it holds. Killed at any moment, the daemon resumes after the last committed
//! page; a `nextToken` is never stored (it expires).
//!
//! **On an edge** (`forward.nats`) the same batches carry the pages' error lines, one per
//! event, and the forwarder publishes each alone, `unpositioned`, with the message id
//! `<edge>/<source>/<log group>/<log stream>/<event id>`; only once JetStream acknowledged
//! them does the batch reach the writer, with the group's position and without counts (the
//! aggregators count; see [`crate::forward`] for why this is exactly once).
//!
//! **Rate.** Requests go through a limiter shared by every cloudwatch source of one access
//! key, region and endpoint, spacing them `1 / max_requests_per_second` apart (default 4
//! per second, under the account's 5 per second `FilterLogEvents` quota).
//!
//! **Errors.** Throttling, 5xx and network failures: the sweep stops and the group waits
//! 1 s, doubling to 60 s, with jitter (half to all of the wait), then sweeps again from its
//! position. Access denied, a missing group, missing or rejected credentials: the message
//! is logged once, the group (and the source) shows `failing` with it in `/status`, and it
//! is tried again every [`FAILING_RETRY`]; the other groups and sources go on.
//!
//! **Start.** A group without a saved position starts at `start_at: end` (the default:
//! `lookback_seconds`, 300, before now, as the reference) or `beginning` (its oldest
//! event).

mod aws;
pub mod position;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::json;
use tokio::time::Instant;

pub use aws::{
    ApiError, Credentials, FilterPage, FilterRequest, FilteredEvent, LogsClient, RateLimiter,
    classify, endpoint_of, find_credentials, region_of, shared_limiter, sign,
};
pub use position::GroupPosition;

use super::lines::{Folder, scanner_of};
use super::{Running, SourceBoard, SourceContext, SourceInfo, Stopper};
use crate::config::{CloudwatchSourceConfig, SourceConfig, StartAt};
use crate::ingest::writer::{FileBatch, WriterHandle};
use crate::metrics::Metrics;

/// How often a failing group (access denied, missing group, bad credentials) is tried again.
pub const FAILING_RETRY: Duration = Duration::from_secs(60);
/// The first backoff after throttling or a transient error; it doubles up to
/// [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// The longest backoff.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Events per `FilterLogEvents` page to ask for instead of the service's default (tests:
/// several pages from few events).
pub const PAGE_LIMIT_ENV: &str = "SENTINEL_CLOUDWATCH_PAGE_LIMIT";

/// Starts the `type: cloudwatch` sources (registered in [`crate::source::SOURCE_TYPES`]).
///
/// # Errors
///
/// No region, bad patterns, an unreadable store.
pub fn start(sources: &[&SourceConfig], cx: &SourceContext) -> anyhow::Result<Running> {
    let mut running = Running {
        infos: Vec::new(),
        listening: Vec::new(),
        stoppers: Vec::new(),
    };
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .user_agent(concat!("sentinel/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let page_limit = std::env::var(PAGE_LIMIT_ENV)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|n| (1..=10_000).contains(n));
    let mut pollers = Vec::new();
    for src in sources {
        let SourceConfig::Cloudwatch(src) = src else {
            continue;
        };
        let name = src.common.name.clone();
        let Some(region) = region_of(&src.region, |k| std::env::var(k).ok()) else {
            anyhow::bail!("source {name:?}: no region: set `region` in the source, or AWS_REGION");
        };
        let endpoint = endpoint_of(src.endpoint.as_deref(), &region);
        let mut folder = Folder::new(
            &name,
            scanner_of(&src.common, &cx.defaults)?,
            src.common.format,
            &cx.rules,
            cx.metrics.clone(),
        );
        // On an edge its error lines are published, not counted (see the module docs).
        folder.forward_unpositioned(cx.ingest.forwards(), &name);
        for outcome in ["ok", "throttled", "error", "denied"] {
            cx.metrics
                .cloudwatch_requests
                .with_label_values(&[&name, outcome]);
        }
        let saved: HashMap<String, Vec<u8>> = cx
            .store
            .source_positions(&position::key(&name, ""))?
            .into_iter()
            .collect();
        let now_ms = Timestamp::now().as_millisecond();
        let mut groups = Vec::new();
        for g in &src.log_groups {
            let key = position::key(&name, g);
            let pos = match saved.get(&key).map(|b| GroupPosition::decode(b)) {
                Some(Ok(p)) => p,
                Some(Err(e)) => {
                    tracing::warn!(source = %name, group = %g, error = %e,
                        "unreadable saved position; starting as configured");
                    initial(src, now_ms)
                }
                None => initial(src, now_ms),
            };
            tracing::info!(
                source = %name,
                group = %g,
                from = %Timestamp::from_millisecond(pos.timestamp).unwrap_or_default(),
                resumed = saved.contains_key(&key),
                "polling CloudWatch Logs"
            );
            groups.push(Group {
                name: g.clone(),
                key,
                pos,
                next: Instant::now(),
                backoff: BACKOFF_MIN,
                state: GroupState::Starting,
                last_complete: None,
            });
        }
        let poller = Poller {
            name: name.clone(),
            client: LogsClient::new(http.clone(), endpoint.clone(), region.clone()),
            src: src.clone(),
            groups,
            folder,
            writer: cx.ingest.clone(),
            metrics: cx.metrics.clone(),
            board: cx.board.clone(),
            stop: cx.stop.clone(),
            page_limit,
            started: Instant::now(),
        };
        poller.publish();
        // The shared limiter at the lowest rate of its sharers before any request.
        if let Ok(creds) = find_credentials(src.profile.as_deref(), |k| std::env::var(k).ok()) {
            shared_limiter(
                &limiter_key(&creds, &poller.client),
                src.max_requests_per_second,
            );
        }
        running.infos.push(SourceInfo {
            name: name.clone(),
            kind: "cloudwatch".into(),
            detail: format!("{region} {}", src.log_groups.join(",")),
        });
        pollers.push(poller);
    }
    for poller in pollers {
        running
            .stoppers
            .push(Stopper::Task(tokio::spawn(poller.run())));
    }
    Ok(running)
}

/// Requests of one access key (account), region and endpoint share a limiter.
fn limiter_key(creds: &Credentials, client: &LogsClient) -> String {
    format!(
        "{}|{}|{}",
        creds.access_key_id,
        client.region(),
        client.endpoint()
    )
}

fn initial(src: &CloudwatchSourceConfig, now_ms: i64) -> GroupPosition {
    match src.start_at {
        StartAt::Beginning => GroupPosition::at(0),
        StartAt::End => {
            GroupPosition::at(now_ms - (src.lookback_seconds as i64).saturating_mul(1000))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum GroupState {
    Starting,
    Ok,
    BackingOff(String),
    Failing(String),
}

#[derive(Debug)]
struct Group {
    name: String,
    key: String,
    pos: GroupPosition,
    next: Instant,
    backoff: Duration,
    state: GroupState,
    /// When the last complete sweep started.
    last_complete: Option<Instant>,
}

/// Why a sweep ended early.
enum SweepEnd {
    Stopped,
    Api(ApiError),
    /// The writer is gone (the daemon is stopping after a failure).
    WriterGone,
}

struct Poller {
    name: String,
    client: LogsClient,
    src: CloudwatchSourceConfig,
    groups: Vec<Group>,
    folder: Folder,
    writer: WriterHandle,
    metrics: Arc<Metrics>,
    board: Arc<SourceBoard>,
    stop: tokio::sync::watch::Receiver<bool>,
    page_limit: Option<u32>,
    started: Instant,
}

impl Poller {
    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
        let _ = stop.wait_for(|s| *s).await;
    }

    async fn run(mut self) -> std::io::Result<()> {
        let interval = Duration::from_secs(self.src.poll_interval.max(1));
        loop {
            if self.stopping() {
                break;
            }
            let Some((gi, at)) = self
                .groups
                .iter()
                .enumerate()
                .map(|(i, g)| (i, g.next))
                .min_by_key(|(_, t)| *t)
            else {
                break;
            };
            // Wake at least every second to keep the lag gauge current.
            let wake = at.min(Instant::now() + Duration::from_secs(1));
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                () = Self::stopped(self.stop.clone()) => break,
            }
            if Instant::now() < at {
                self.publish();
                continue;
            }
            let began = Instant::now();
            let result = self.sweep(gi).await;
            let g = &mut self.groups[gi];
            match result {
                Ok(()) => {
                    if let GroupState::Failing(_) | GroupState::BackingOff(_) = &g.state {
                        tracing::info!(source = %self.name, group = %g.name, "CloudWatch reads again");
                    }
                    g.state = GroupState::Ok;
                    g.backoff = BACKOFF_MIN;
                    g.last_complete = Some(began);
                    g.next = began + interval;
                }
                Err(SweepEnd::Stopped | SweepEnd::WriterGone) => break,
                Err(SweepEnd::Api(ApiError::Denied(msg))) => {
                    if g.state != GroupState::Failing(msg.clone()) {
                        tracing::error!(
                            source = %self.name,
                            group = %g.name,
                            "CloudWatch Logs: {msg}; retrying every {} s",
                            FAILING_RETRY.as_secs()
                        );
                    }
                    g.state = GroupState::Failing(msg);
                    g.next = Instant::now() + FAILING_RETRY.max(interval);
                }
                Err(SweepEnd::Api(e)) => {
                    let wait = jitter(g.backoff);
                    if !matches!(g.state, GroupState::BackingOff(_)) {
                        tracing::warn!(
                            source = %self.name,
                            group = %g.name,
                            "CloudWatch Logs: {}; backing off {} ms",
                            e.message(),
                            wait.as_millis()
                        );
                    }
                    g.state = GroupState::BackingOff(e.message().to_string());
                    g.next = Instant::now() + wait;
                    g.backoff = (g.backoff * 2).min(BACKOFF_MAX);
                }
            }
            self.publish();
        }
        self.board.set(&self.name, json!({"state": "stopped"}));
        Ok(())
    }

    /// Reads one group from its position to the last page.
    async fn sweep(&mut self, gi: usize) -> Result<(), SweepEnd> {
        let creds = find_credentials(self.src.profile.as_deref(), |k| std::env::var(k).ok())
            .map_err(|e| SweepEnd::Api(ApiError::Denied(e)))?;
        let limiter = shared_limiter(
            &limiter_key(&creds, &self.client),
            self.src.max_requests_per_second,
        );
        let start = self.groups[gi].pos.timestamp;
        let mut token: Option<String> = None;
        loop {
            tokio::select! {
                () = limiter.acquire() => {}
                () = Self::stopped(self.stop.clone()) => return Err(SweepEnd::Stopped),
            }
            let group = &self.groups[gi];
            let req = FilterRequest {
                log_group_name: &group.name,
                start_time: start,
                interleaved: true,
                next_token: token.as_deref(),
                filter_pattern: Some(self.src.filter_pattern.as_str()).filter(|p| !p.is_empty()),
                log_stream_name_prefix: self.src.log_stream_prefix.as_deref(),
                limit: self.page_limit,
            };
            let answer = tokio::select! {
                a = self.client.filter(&creds, &req) => a,
                () = Self::stopped(self.stop.clone()) => return Err(SweepEnd::Stopped),
            };
            let outcome = match &answer {
                Ok(_) => "ok",
                Err(e) => e.outcome(),
            };
            self.metrics
                .cloudwatch_requests
                .with_label_values(&[&self.name, outcome])
                .inc();
            let page = answer.map_err(SweepEnd::Api)?;
            self.take_page(gi, &page).await?;
            match page.next_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok(()),
            }
        }
    }

    /// Folds the page's new events and sends them with the group's new position.
    async fn take_page(&mut self, gi: usize, page: &FilterPage) -> Result<(), SweepEnd> {
        let every_event = !self.src.filter_pattern.is_empty();
        let forwarding = self.folder.is_forwarding();
        let g = &mut self.groups[gi];
        let mut region: Vec<u8> = Vec::new();
        let mut new = 0usize;
        for ev in &page.events {
            let h = GroupPosition::event_hash(&ev.log_stream_name, &ev.event_id);
            if g.pos.has(ev.timestamp, h) {
                continue;
            }
            g.pos.record(ev.timestamp, h);
            new += 1;
            let msg = ev.message.trim_end();
            if forwarding {
                // On an edge, one event at a time: its error line is published alone under
                // the event's identity (see `crate::forward`).
                self.folder.set_event_id(Some(Arc::from(
                    forward_id(&g.name, &ev.log_stream_name, &ev.event_id).as_str(),
                )));
                let mut line: Vec<u8> = msg
                    .bytes()
                    .map(|b| if b == b'\n' || b == b'\r' { b' ' } else { b })
                    .collect();
                if every_event {
                    self.folder.add_error(&line);
                } else {
                    line.push(b'\n');
                    self.folder.scan_region(&line);
                }
                self.folder.set_event_id(None);
            } else if every_event {
                let line: Vec<u8> = msg
                    .bytes()
                    .map(|b| if b == b'\n' || b == b'\r' { b' ' } else { b })
                    .collect();
                self.folder.add_error(&line);
            } else {
                region.extend(
                    msg.bytes()
                        .map(|b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
                );
                region.push(b'\n');
            }
        }
        if new == 0 {
            return Ok(());
        }
        if !region.is_empty() {
            self.folder.scan_region(&region);
        }
        let mut batch = self.folder.take();
        batch.totals.insert("cloudwatch_events", new as u64);
        batch.source_positions.insert(g.key.clone(), g.pos.encode());
        let fb = FileBatch {
            source: self.folder.name().clone(),
            batch,
            positions: Vec::new(),
            forget: Vec::new(),
            // On an edge: published before the position is committed (without counts).
            forward: self.folder.take_forward(),
        };
        let writer = self.writer.clone();
        // The writer's queue is bounded: a blocking send, off the async workers.
        match tokio::task::spawn_blocking(move || writer.send_files(fb)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(SweepEnd::WriterGone),
        }
    }

    /// Publishes the live state (`/status`) and the lag gauge.
    fn publish(&self) {
        let now = Instant::now();
        let oldest = self
            .groups
            .iter()
            .map(|g| g.last_complete.unwrap_or(self.started))
            .min()
            .unwrap_or(self.started);
        let lag = now.saturating_duration_since(oldest).as_secs_f64();
        self.metrics
            .cloudwatch_lag
            .with_label_values(&[&self.name])
            .set(lag);
        let mut state = "ok";
        let mut error: Option<String> = None;
        let mut groups = Vec::new();
        for g in &self.groups {
            let (s, e) = match &g.state {
                GroupState::Starting => ("starting", None),
                GroupState::Ok => ("ok", None),
                GroupState::BackingOff(m) => ("backing_off", Some(m.clone())),
                GroupState::Failing(m) => ("failing", Some(m.clone())),
            };
            let rank = |s: &str| match s {
                "failing" => 3,
                "backing_off" => 2,
                "starting" => 1,
                _ => 0,
            };
            if rank(s) > rank(state) {
                state = s;
                error = e.clone().map(|m| format!("{}: {m}", g.name));
            }
            groups.push(json!({
                "name": g.name,
                "state": s,
                "error": e,
                "position": Timestamp::from_millisecond(g.pos.timestamp)
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
                "events_at_position": g.pos.seen.len(),
            }));
        }
        self.board.set(
            &self.name,
            json!({
                "state": state,
                "error": error,
                "endpoint": self.client.endpoint(),
                "log_groups": groups,
                "lag_seconds": (lag * 10.0).round() / 10.0,
            }),
        );
    }
}

/// The message id part of an event an edge forwards: its log group, log stream and event
/// id (the forwarder puts the edge and source before it). Control characters (which a
/// header cannot hold, and which no valid name has) are replaced.
fn forward_id(group: &str, stream: &str, event_id: &str) -> String {
    format!("{group}/{stream}/{event_id}")
        .chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect()
}

/// Half to all of `d`, at random.
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 8];
    let r = if getrandom::fill(&mut b).is_ok() {
        u64::from_le_bytes(b)
    } else {
        xxhash_rust::xxh3::xxh3_64(&Timestamp::now().as_nanosecond().to_le_bytes())
    };
    let frac = (r >> 11) as f64 / (1u64 << 53) as f64;
    d.mul_f64(0.5 + 0.5 * frac)
}

/// What `sentinel status` reports for one cloudwatch source: a one-event
/// `FilterLogEvents` on each of its groups, signed like the daemon's.
///
/// # Errors
///
/// The first failure: no region or credentials ([`ApiError::Denied`]), an unreachable
/// endpoint ([`ApiError::Transient`]), a denied or throttled answer.
pub async fn probe(src: &CloudwatchSourceConfig, timeout: Duration) -> Result<String, ApiError> {
    let region = region_of(&src.region, |k| std::env::var(k).ok()).ok_or_else(|| {
        ApiError::Denied("no region: set `region` in the source, or AWS_REGION".into())
    })?;
    let endpoint = endpoint_of(src.endpoint.as_deref(), &region);
    let creds = find_credentials(src.profile.as_deref(), |k| std::env::var(k).ok())
        .map_err(ApiError::Denied)?;
    let http = reqwest::Client::builder()
        .connect_timeout(timeout)
        .timeout(timeout)
        .user_agent(concat!("sentinel/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ApiError::Denied(format!("cannot build an HTTP client: {e}")))?;
    let client = LogsClient::new(http, endpoint.clone(), region);
    for g in &src.log_groups {
        let req = FilterRequest {
            log_group_name: g,
            start_time: Timestamp::now().as_millisecond() - 60_000,
            interleaved: true,
            next_token: None,
            filter_pattern: None,
            log_stream_name_prefix: src.log_stream_prefix.as_deref(),
            limit: Some(1),
        };
        client.filter(&creds, &req).await.map_err(|e| match e {
            ApiError::Throttled(m) => ApiError::Throttled(format!("{g}: {m}")),
            ApiError::Transient(m) => ApiError::Transient(format!("{g}: {m}")),
            ApiError::Denied(m) => ApiError::Denied(format!("{g}: {m}")),
        })?;
    }
    Ok(endpoint)
}
