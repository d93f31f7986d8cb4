//! Integrations through a durable outbox: Arbiter, Stigmergy, Chronicler and the notify
//! webhook.
//!
//! # The outbox
//!
//! Every change worth telling someone about is logged in the store's event log **in the same
//! transaction as the change** ([`crate::store::events`]). This module is the other half:
//! one background task per configured sink follows the log from that sink's **durable
//! cursor** (redb table `outbox_cursors`, [`crate::store::cursors`]), turns each event into
//! zero or more HTTP requests ([`map`]: the payload shapes of `reference/SPEC.md` §9) and
//! POSTs them one at a time, in log order.
//!
//! - **Never inline.** Ingestion commits and moves on; the tasks are woken by the store's
//!   commit hook (a `tokio::sync::watch` of the newest sequence number). A slow or dead
//!   endpoint delays only its own sink.
//! - **Nothing lost while a sink is down.** Connect errors, timeouts, 408, 429 and 5xx are
//!   retried with exponential backoff and full jitter ([`BACKOFF_START`] doubling up to
//!   [`BACKOFF_MAX`]; a `Retry-After` in seconds is honoured up to that cap), forever. The
//!   cursor moves only once the sink answered 2xx, so the events wait in the log. The log
//!   keeps every event a configured sink has not reached, up to
//!   [`crate::store::cursors::EVENTS_HARD_CAP`] events; beyond that the oldest are pruned
//!   and counted in `sentinel_outbox_dropped_total{sink}`.
//! - **Never blocked forever.** Any other answer (a 4xx such as Arbiter's 400
//!   `INVALID_EVENT_TYPE`, or an unfollowed 3xx) is a permanent rejection: logged once at
//!   WARN with the start of the body, counted in
//!   `sentinel_outbox_failures_total{sink,kind="rejected"}`, and skipped.
//! - **Exactly once for acknowledged deliveries, at least once otherwise.** After a 2xx the
//!   cursor is committed before the next request. A crash (or `kill -9`) between the sink's
//!   answer and that commit sends the event again after the restart; so does an event with
//!   several requests (Stigmergy's `fix_applied` + `contract_tightened`) cut between them.
//!   On a clean stop the request in flight is abandoned and sent again on the next start.
//! - **First start: no history replay.** A sink with no cursor starts at the log's head when
//!   the daemon starts (before ingestion starts, so nothing committed after the start is
//!   missed). A sink removed from the config loses its cursor (so that it does not hold back
//!   pruning); configured again later, it starts at the head again.
//!
//! Metrics: `sentinel_outbox_delivered_total{sink}` (requests accepted),
//! `sentinel_outbox_failures_total{sink,kind}` (`transient` attempts, `rejected` requests),
//! `sentinel_outbox_lag_events{sink}` (head − cursor) and
//! `sentinel_outbox_dropped_total{sink}`.
//!
//! Timeouts per request: Arbiter 5 s, Stigmergy 2 s, Chronicler 5 s, notify 5 s (the
//! reference's).

pub mod map;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::{ArbiterConfig, ChroniclerConfig, Config, NotifyConfig, StigmergyConfig};
use crate::metrics::Metrics;
use crate::store::{Event, Store, StoreError};

pub use map::Rules;

/// The first retry delay.
pub const BACKOFF_START: Duration = Duration::from_millis(250);

/// The longest retry delay (also the cap on an honoured `Retry-After`).
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Events read from the log per batch.
const BATCH: usize = 256;

/// How often progress over events that need no request is committed (a crash re-reads
/// them, harmlessly).
const SKIP_COMMIT_EVERY: Duration = Duration::from_secs(5);

/// A sink's idle re-check of the log, in case a wake-up was missed.
const IDLE_POLL: Duration = Duration::from_secs(30);

/// How much of a rejection's body is logged.
const LOGGED_BODY_BYTES: usize = 500;

/// One configured destination.
#[derive(Debug, Clone, PartialEq)]
pub struct Sink {
    /// `arbiter`, `stigmergy`, `chronicler` or `notify`: the cursor and metric label.
    pub name: &'static str,
    /// Where the requests go.
    pub url: String,
    /// Per-request timeout.
    pub timeout: Duration,
    /// What is sent for which event.
    pub rules: Rules,
}

/// The sections of `sentinel.yaml` the outbox is built from.
#[derive(Debug, Clone, Copy)]
pub struct Peers<'a> {
    /// `arbiter`.
    pub arbiter: &'a ArbiterConfig,
    /// `stigmergy`.
    pub stigmergy: &'a StigmergyConfig,
    /// `chronicler`.
    pub chronicler: &'a ChroniclerConfig,
    /// `notify`.
    pub notify: &'a NotifyConfig,
}

impl<'a> Peers<'a> {
    /// The peer sections of `config`.
    pub fn of(config: &'a Config) -> Peers<'a> {
        Peers {
            arbiter: &config.arbiter,
            stigmergy: &config.stigmergy,
            chronicler: &config.chronicler,
            notify: &config.notify,
        }
    }
}

impl Sink {
    /// The sinks the peer sections enable (endpoints set; Chronicler also
    /// `chronicler_enabled`).
    pub fn enabled(config: Peers<'_>) -> Vec<Sink> {
        let base = |u: &str| u.trim().trim_end_matches('/').to_string();
        let set = |u: &Option<String>| u.as_deref().filter(|u| !u.trim().is_empty()).map(base);
        let mut out = Vec::new();
        if let Some(u) = set(&config.arbiter.api_endpoint) {
            out.push(Sink {
                name: "arbiter",
                url: format!("{u}/trust/event"),
                timeout: Duration::from_secs(5),
                rules: Rules::Arbiter {
                    map: config.arbiter.event_map,
                    on_fix: config.arbiter.trust_event_on_fix,
                },
            });
        }
        if let Some(u) = set(&config.stigmergy.endpoint) {
            out.push(Sink {
                name: "stigmergy",
                url: format!("{u}/signals"),
                timeout: Duration::from_secs(2),
                rules: Rules::Stigmergy,
            });
        }
        if config.chronicler.chronicler_enabled
            && !config.chronicler.chronicler_endpoint.trim().is_empty()
        {
            out.push(Sink {
                name: "chronicler",
                url: config.chronicler.events_url(),
                timeout: Duration::from_secs(5),
                // The store's salt is read when delivery starts (see `Worker::run`).
                rules: Rules::Chronicler { salt: 0 },
            });
        }
        if let Some(u) = config
            .notify
            .webhook_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
        {
            out.push(Sink {
                name: "notify",
                url: u.to_string(),
                timeout: Duration::from_secs(5),
                rules: Rules::Notify {
                    on_error: config.notify.on_error,
                    on_fix: config.notify.on_fix,
                },
            });
        }
        out
    }
}

/// The `meta` entry holding this store's salt of Chronicler event ids.
pub const EVENT_ID_SALT: &str = "outbox_event_id_salt";

/// This store's salt of Chronicler event ids ([`map::event_uuid`]), drawn at random and kept
/// in the store the first time it is asked for: ids stay the same across restarts and retries,
/// and differ between stores (a store made anew starts its sequence numbers again).
///
/// # Errors
///
/// [`StoreError`] on storage errors.
pub fn event_id_salt(store: &Store) -> Result<u64, StoreError> {
    if let Some(salt) = store.meta_value(EVENT_ID_SALT)? {
        return Ok(salt);
    }
    let salt = random_u64();
    let mut txn = store.begin_write()?;
    txn.set_meta(EVENT_ID_SALT, salt)?;
    txn.commit()?;
    Ok(salt)
}

/// 64 random bits: from the OS (`/dev/urandom`), else from std's randomly keyed hasher.
fn random_u64() -> u64 {
    use std::io::Read;
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok()
    {
        return u64::from_le_bytes(b);
    }
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(seed());
    h.write_u32(std::process::id());
    h.finish()
}

/// Gives every sink without a cursor one at the log's current head (no history replay) and
/// forgets the cursors of sinks no longer configured; draws the event-id salt when
/// Chronicler is configured. Call it before ingestion starts.
///
/// # Errors
///
/// [`StoreError`] on storage errors.
/// `forge`: the forge (pull requests, issues) is configured; its cursor is kept only then,
/// so an unused one never holds back the pruning of the event log.
pub fn init_cursors(store: &Store, sinks: &[Sink], forge: bool) -> Result<(), StoreError> {
    if sinks
        .iter()
        .any(|s| matches!(s.rules, Rules::Chronicler { .. }))
    {
        event_id_salt(store)?;
    }
    let mut names: Vec<&str> = sinks.iter().map(|s| s.name).collect();
    // The forge (pull requests, issues) follows the event log with its own cursor.
    if forge {
        names.push(crate::forge::CURSOR);
    }
    store.retain_outbox_cursors(&names)?;
    let head = store.event_head();
    for s in sinks {
        if store.outbox_cursor(s.name)?.is_none() {
            store.set_outbox_cursor(s.name, head)?;
            tracing::info!(
                sink = s.name,
                head,
                "outbox: new sink starts at the event log's head"
            );
        }
    }
    Ok(())
}

/// The running delivery tasks.
#[derive(Debug)]
pub struct Outbox {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Outbox {
    /// Starts one delivery task per sink (on the current tokio runtime). `wake` carries the
    /// newest event sequence number (fed by the store's event hook); `stop` turning true
    /// stops the tasks, which commit their cursors first.
    ///
    /// # Errors
    ///
    /// When the HTTP client cannot be built.
    pub fn start(
        sinks: Vec<Sink>,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        wake: watch::Receiver<u64>,
        stop: watch::Receiver<bool>,
    ) -> Result<Outbox, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .user_agent(concat!("sentinel/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let tasks = sinks
            .into_iter()
            .map(|sink| {
                metrics.touch_outbox(sink.name);
                let worker = Worker {
                    sink,
                    client: client.clone(),
                    store: store.clone(),
                    metrics: metrics.clone(),
                    wake: wake.clone(),
                    stop: stop.clone(),
                    rng: seed(),
                    delivered: BTreeMap::new(),
                };
                tokio::spawn(worker.run())
            })
            .collect();
        Ok(Outbox { tasks })
    }

    /// Waits (up to `within`) for the tasks to stop (after `stop` turned true).
    pub async fn join(self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        for t in self.tasks {
            if tokio::time::timeout_at(deadline, t).await.is_err() {
                tracing::warn!("an outbox task did not stop in time");
            }
        }
    }
}

/// How one POST ended.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// 2xx.
    Accepted,
    /// Worth retrying, after at least this long (a `Retry-After`).
    Transient(String, Option<Duration>),
    /// Never worth retrying: status and the start of the body.
    Rejected(u16, String),
}

/// Classifies an HTTP status (see the module docs).
fn classify(status: u16) -> Option<bool> {
    match status {
        200..=299 => Some(true),
        408 | 429 | 500..=599 => None,
        _ => Some(false),
    }
}

/// A `Retry-After` in seconds (the HTTP-date form is ignored: backoff applies).
fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The delay before retry number `attempt` (0-based): full jitter over an exponential
/// ceiling, but never less than a `Retry-After`; both capped at [`BACKOFF_MAX`].
fn backoff(attempt: u32, retry_after: Option<Duration>, rng: &mut u64) -> Duration {
    let ceiling = BACKOFF_START
        .saturating_mul(1u32 << attempt.min(16))
        .min(BACKOFF_MAX);
    // xorshift64: jitter only, no need for a real RNG.
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    let frac = (*rng % 1000) as f64 / 1000.0;
    // Half fixed, half random: retries spread out but never hammer.
    let jittered = ceiling.mul_f64(0.5 + frac / 2.0);
    match retry_after {
        Some(r) => jittered.max(r.min(BACKOFF_MAX)),
        None => jittered,
    }
}

/// Resolves when `wake` moves; never when its sender is gone (a closed channel answers at
/// once, and a loop waiting on it would spin: then only the periodic re-check wakes).
async fn wake_or_never(wake: &mut watch::Receiver<u64>) {
    if wake.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t | 1
}

struct Worker {
    sink: Sink,
    client: reqwest::Client,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    wake: watch::Receiver<u64>,
    stop: watch::Receiver<bool>,
    rng: u64,
    /// Events accepted since the last cursor commit, by component (committed with it).
    delivered: BTreeMap<String, u64>,
}

/// The worker was told to stop.
struct Stopped;

impl Worker {
    async fn run(mut self) {
        let name = self.sink.name;
        let mut cursor = match self.blocking(move |s| s.outbox_cursor(name)).await {
            Ok(Some(c)) => c,
            Ok(None) => self.store.event_head(),
            Err(e) => {
                tracing::error!(sink = name, error = %e, "outbox: cannot read the cursor; sink disabled");
                return;
            }
        };
        if let Rules::Chronicler { .. } = self.sink.rules {
            match self.blocking(event_id_salt).await {
                Ok(salt) => self.sink.rules = Rules::Chronicler { salt },
                Err(e) => {
                    tracing::error!(sink = name, error = %e, "outbox: cannot read the event-id salt; sink disabled");
                    return;
                }
            }
        }
        let mut committed = cursor;
        let mut last_commit = tokio::time::Instant::now();
        tracing::debug!(sink = name, cursor, url = %self.sink.url, "outbox: delivering");
        let mut reading = crate::episode::Episode::new("outbox: cannot read the event log");
        loop {
            if *self.stop.borrow() {
                break;
            }
            let events = match self.blocking(move |s| s.events_after(cursor, BATCH)).await {
                Ok(ev) => {
                    reading.ended();
                    ev
                }
                Err(e) => {
                    reading.failed(&e);
                    if self.pause(BACKOFF_MAX).await.is_err() {
                        break;
                    }
                    continue;
                }
            };
            self.set_lag(cursor);
            if events.is_empty() {
                if committed != cursor {
                    self.commit(cursor, &mut committed).await;
                    last_commit = tokio::time::Instant::now();
                }
                if self.idle().await.is_err() {
                    break;
                }
                continue;
            }
            for ev in events {
                if ev.seq > cursor.saturating_add(1) {
                    let lost = ev.seq - cursor - 1;
                    self.metrics
                        .outbox_dropped
                        .with_label_values(&[name])
                        .inc_by(lost);
                    tracing::warn!(
                        sink = name,
                        events = lost,
                        "outbox: events were pruned from the log before they were delivered"
                    );
                }
                let bodies = self.sink.rules.bodies(&ev);
                let sent = !bodies.is_empty();
                if self.deliver_all(&ev, bodies).await.is_err() {
                    // Stopped mid-event: it is sent again on the next start.
                    self.commit(cursor, &mut committed).await;
                    return;
                }
                cursor = ev.seq;
                if sent || last_commit.elapsed() >= SKIP_COMMIT_EVERY {
                    self.commit(cursor, &mut committed).await;
                    last_commit = tokio::time::Instant::now();
                }
                self.set_lag(cursor);
            }
        }
        self.commit(cursor, &mut committed).await;
    }

    /// Runs a store call off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || f(&store)).await {
            Ok(r) => r,
            Err(e) => Err(StoreError::Storage {
                path: self.store.path().to_path_buf(),
                source: redb::Error::Io(std::io::Error::other(e.to_string())),
            }),
        }
    }

    async fn commit(&mut self, cursor: u64, committed: &mut u64) {
        if cursor == *committed {
            return;
        }
        let name = self.sink.name;
        let delivered = std::mem::take(&mut self.delivered);
        let counts = delivered.clone();
        match self
            .blocking(move |s| s.commit_outbox(name, cursor, &counts))
            .await
        {
            Ok(()) => *committed = cursor,
            // The next delivery commits again; until then a restart repeats a few events.
            Err(e) => {
                for (c, n) in delivered {
                    *self.delivered.entry(c).or_default() += n;
                }
                tracing::warn!(sink = name, error = %e, "outbox: cannot commit the cursor");
            }
        }
    }

    fn set_lag(&self, cursor: u64) {
        let lag = self.store.event_head().saturating_sub(cursor);
        self.metrics
            .outbox_lag
            .with_label_values(&[self.sink.name])
            .set(i64::try_from(lag).unwrap_or(i64::MAX));
    }

    /// Waits for new events (or a periodic re-check), or a stop.
    async fn idle(&mut self) -> Result<(), Stopped> {
        let changed = wake_or_never(&mut self.wake);
        tokio::select! {
            () = changed => Ok(()),
            _ = tokio::time::sleep(IDLE_POLL) => Ok(()),
            _ = self.stop.wait_for(|s| *s) => Err(Stopped),
        }
    }

    async fn pause(&mut self, d: Duration) -> Result<(), Stopped> {
        tokio::select! {
            _ = tokio::time::sleep(d) => Ok(()),
            _ = self.stop.wait_for(|s| *s) => Err(Stopped),
        }
    }

    /// Sends every body of `ev`, each until it is accepted or rejected.
    async fn deliver_all(
        &mut self,
        ev: &Event,
        bodies: Vec<serde_json::Value>,
    ) -> Result<(), Stopped> {
        let name = self.sink.name;
        let mut accepted = false;
        for body in bodies {
            let mut attempt = 0u32;
            loop {
                let mut stop = self.stop.clone();
                let outcome = tokio::select! {
                    o = self.post(&body) => o,
                    _ = stop.wait_for(|s| *s) => return Err(Stopped),
                };
                match outcome {
                    Outcome::Accepted => {
                        accepted = true;
                        self.metrics
                            .outbox_delivered
                            .with_label_values(&[name])
                            .inc();
                        tracing::debug!(
                            sink = name,
                            seq = ev.seq,
                            kind = ev.kind.as_str(),
                            "outbox: delivered"
                        );
                        break;
                    }
                    Outcome::Rejected(status, text) => {
                        self.metrics
                            .outbox_failures
                            .with_label_values(&[name, "rejected"])
                            .inc();
                        tracing::warn!(
                            sink = name,
                            seq = ev.seq,
                            kind = ev.kind.as_str(),
                            status,
                            body = %text,
                            "outbox: the sink rejected an event; it is not sent again"
                        );
                        break;
                    }
                    Outcome::Transient(why, after) => {
                        self.metrics
                            .outbox_failures
                            .with_label_values(&[name, "transient"])
                            .inc();
                        let delay = backoff(attempt, after, &mut self.rng);
                        // The first failure of a streak is worth a line; the rest is noise.
                        if attempt == 0 {
                            tracing::warn!(sink = name, seq = ev.seq, error = %why, "outbox: delivery failed; retrying with backoff");
                        } else {
                            tracing::debug!(sink = name, seq = ev.seq, attempt, error = %why, delay_ms = delay.as_millis() as u64, "outbox: retry");
                        }
                        attempt = attempt.saturating_add(1);
                        self.pause(delay).await?;
                    }
                }
            }
        }
        let component = map::component(ev);
        if accepted && !component.is_empty() {
            *self.delivered.entry(component.to_string()).or_default() += 1;
        }
        Ok(())
    }

    async fn post(&self, body: &serde_json::Value) -> Outcome {
        let resp = self
            .client
            .post(&self.sink.url)
            .timeout(self.sink.timeout)
            .json(body)
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => return Outcome::Transient(e.to_string(), None),
        };
        let status = resp.status().as_u16();
        match classify(status) {
            Some(true) => Outcome::Accepted,
            None => {
                let after = retry_after(resp.headers());
                Outcome::Transient(format!("HTTP {status}"), after)
            }
            Some(false) => {
                let text = tokio::time::timeout(self.sink.timeout, resp.bytes())
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .map(|b| {
                        String::from_utf8_lossy(&b[..b.len().min(LOGGED_BODY_BYTES)]).into_owned()
                    })
                    .unwrap_or_default();
                Outcome::Rejected(status, text)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_closed_wake_channel_waits_instead_of_spinning() {
        let (tx, mut rx) = watch::channel(0u64);
        let started = tokio::time::Instant::now();
        let waiting = tokio::spawn(async move {
            wake_or_never(&mut rx).await;
        });
        tokio::task::yield_now().await;
        drop(tx);
        // Paused time auto-advances only when every task is idle: a spinning waiter would
        // finish at once, an idle one never does.
        let r = tokio::time::timeout(Duration::from_secs(3600), waiting).await;
        assert!(r.is_err(), "woke on a closed channel");
        assert!(started.elapsed() >= Duration::from_secs(3600));

        let (tx, mut rx) = watch::channel(0u64);
        let waiting = tokio::spawn(async move { wake_or_never(&mut rx).await });
        tx.send(1).expect("receiver alive");
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("a move wakes it")
            .expect("no panic");
    }

    #[test]
    fn statuses_are_classified() {
        assert_eq!(classify(200), Some(true));
        assert_eq!(classify(204), Some(true));
        for s in [408, 429, 500, 502, 503, 504] {
            assert_eq!(classify(s), None, "{s}");
        }
        for s in [301, 400, 401, 403, 404, 422] {
            assert_eq!(classify(s), Some(false), "{s}");
        }
    }

    #[test]
    fn backoff_grows_to_the_cap_and_honours_retry_after() {
        let mut rng = 12345;
        let d0 = backoff(0, None, &mut rng);
        assert!(d0 >= BACKOFF_START / 2 && d0 <= BACKOFF_START, "{d0:?}");
        for a in 0..40 {
            let d = backoff(a, None, &mut rng);
            assert!(d <= BACKOFF_MAX, "{a}: {d:?}");
        }
        assert!(backoff(30, None, &mut rng) >= BACKOFF_MAX / 2);
        assert!(backoff(0, Some(Duration::from_secs(7)), &mut rng) >= Duration::from_secs(7));
        assert_eq!(
            backoff(0, Some(Duration::from_secs(3600)), &mut rng),
            BACKOFF_MAX
        );
    }

    fn config(yaml: &str) -> Config {
        Config::from_yaml(yaml, std::path::Path::new("/tmp/sentinel.yaml"), None).unwrap()
    }

    #[test]
    fn sinks_from_config() {
        assert!(Sink::enabled(Peers::of(&config(""))).is_empty());
        let c = config(
            "arbiter: {api_endpoint: 'http://a:7700/', trust_event_on_fix: false}
stigmergy: {endpoint: 'http://s'}
chronicler: {enabled: true, endpoint: 'http://c:8080/events/'}
notify: {webhook_url: 'http://n/hook', on_fix: false}
",
        );
        let sinks = Sink::enabled(Peers::of(&c));
        let urls: Vec<(&str, &str)> = sinks.iter().map(|s| (s.name, s.url.as_str())).collect();
        assert_eq!(
            urls,
            vec![
                ("arbiter", "http://a:7700/trust/event"),
                ("stigmergy", "http://s/signals"),
                ("chronicler", "http://c:8080/events"),
                ("notify", "http://n/hook"),
            ]
        );
        assert_eq!(sinks[1].timeout, Duration::from_secs(2));
        assert_eq!(
            sinks[3].rules,
            Rules::Notify {
                on_error: true,
                on_fix: false
            }
        );
        assert!(matches!(
            sinks[0].rules,
            Rules::Arbiter { on_fix: false, .. }
        ));
    }
}
