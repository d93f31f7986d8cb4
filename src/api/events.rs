//! `GET /events`: the event log as Server-Sent Events, live, resumable.
//!
//! Each logged event ([`crate::store::events`]) is one SSE message:
//!
//! ```text
//! id: <seq>
//! event: <kind>            (incident_detected, incident_updated, fix_started, ...)
//! data: <the event as JSON: seq, at, kind, incident_id, fix_id, component_id, data>
//! ```
//!
//! - Where the stream starts: after `Last-Event-ID` (the header a browser's `EventSource`
//!   sends when it reconnects) or `?after=<seq>`; without either, at the newest event
//!   (live only). Events after that point are replayed from the store first, then the
//!   stream follows the log as it grows.
//! - When events the client asked for are gone (the log keeps the newest
//!   [`crate::store::events::EVENTS_KEEP`]) or the id is ahead of the log (another store),
//!   one `event: gap` comes first, `data: {"after": <asked>, "oldest": <oldest kept>,
//!   "head": <newest>}`, without an `id`; then the stream continues from what is kept.
//! - `?kinds=incident_detected,fix_completed` sends only those kinds (an unknown name is 400).
//! - A comment line (`: keep-alive`) every [`KEEP_ALIVE`] keeps proxies from closing an
//!   idle stream.
//! - At most [`MAX_STREAMS`] streams at once; beyond that 503 `too_many_streams`.
//! - A stream holds at most one small batch of events: it is a cursor over the durable log,
//!   read as its client takes what it was sent (ingestion only publishes the head). A client
//!   that stops reading stalls its own cursor; one whose socket takes nothing for
//!   [`crate::http::WRITE_STALL_TIMEOUT`] is closed. `sentinel_sse_streams`,
//!   `sentinel_sse_lagging_streams` and `sentinel_sse_closed_total{reason}` count them.
//! - The stream ends when the daemon stops, or after a store read error (the client
//!   reconnects with `Last-Event-ID` and loses nothing).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::{ApiError, ApiState, clip};
use crate::store::Store;
use crate::store::events::{Event, EventHook, EventKind};

/// Streams served at once.
pub const MAX_STREAMS: usize = 256;
/// The keep-alive comment interval.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Events read from the store per batch: all a stream ever holds. A stream is a cursor over
/// the durable event log, read a batch at a time as its client takes what it was sent; a
/// stalled client stalls only its own cursor (and its socket's write timeout closes it).
const BATCH: usize = 32;

/// The newest events, read from the store once and shared by every stream near the head:
/// 200 streams following the log cost one store read and one serialisation per event, not
/// 200. Filled by the streams themselves (the first to need newer events fetches them), so
/// ingestion never works for a stream; bounded by [`RECENT_KEEP`].
#[derive(Debug, Default)]
struct Recent {
    /// Consecutive events, oldest first: (seq, kind, the SSE message).
    events: VecDeque<(u64, EventKind, SseEvent)>,
}

/// Events the shared window keeps.
const RECENT_KEEP: usize = 2048;
/// Events fetched into the shared window at once.
const RECENT_FETCH: usize = 256;

/// What wakes the streams: the newest event's sequence number, and the daemon stopping.
#[derive(Debug)]
pub(super) struct EventFeed {
    recent: Arc<std::sync::RwLock<Recent>>,
    /// One stream at a time fetches newer events into `recent`.
    fetching: Arc<tokio::sync::Mutex<()>>,
    head: watch::Sender<u64>,
    stop: watch::Receiver<bool>,
    // Keeps `stop` open when no stop signal was given.
    _stop_tx: Option<watch::Sender<bool>>,
    slots: Arc<Semaphore>,
}

impl EventFeed {
    pub(super) fn new(head: u64) -> EventFeed {
        let (stop_tx, stop) = watch::channel(false);
        EventFeed {
            recent: Arc::default(),
            fetching: Arc::default(),
            head: watch::channel(head).0,
            stop,
            _stop_tx: Some(stop_tx),
            slots: Arc::new(Semaphore::new(MAX_STREAMS)),
        }
    }

    pub(super) fn set_stop(&mut self, stop: watch::Receiver<bool>) {
        self.stop = stop;
        self._stop_tx = None;
    }

    /// A store hook that wakes the streams (see [`Store::set_event_hook`]).
    pub(super) fn hook(&self) -> EventHook {
        let tx = self.head.clone();
        Arc::new(move |head| {
            tx.send_if_modified(|h| {
                let moved = head > *h;
                *h = (*h).max(head);
                moved
            });
        })
    }
}

/// Where a stream starts and what it sends.
#[derive(Debug, Default, PartialEq, Eq)]
struct StreamQuery {
    after: Option<u64>,
    kinds: Option<Vec<EventKind>>,
}

fn parse_query(params: &[(String, String)], headers: &HeaderMap) -> Result<StreamQuery, ApiError> {
    let bad = |m: String| ApiError::bad_request("invalid_query", m);
    let seq = |what: &str, v: &str| {
        v.trim().parse::<u64>().map_err(|_| {
            bad(format!(
                "{what} {:?} is not an event sequence number",
                clip(v)
            ))
        })
    };
    let mut q = StreamQuery::default();
    for (k, v) in params {
        match k.as_str() {
            "after" => q.after = Some(seq("after", v)?),
            "kinds" => {
                let mut kinds = Vec::new();
                for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    let kind = EventKind::ALL
                        .into_iter()
                        .find(|k| k.as_str() == name)
                        .ok_or_else(|| {
                            let all: Vec<&str> =
                                EventKind::ALL.iter().map(|k| k.as_str()).collect();
                            bad(format!(
                                "kind {:?} is not one of {}",
                                clip(name),
                                all.join(", ")
                            ))
                        })?;
                    kinds.push(kind);
                }
                if kinds.is_empty() {
                    return Err(bad("kinds must name at least one event kind".into()));
                }
                q.kinds = Some(kinds);
            }
            other => {
                return Err(bad(format!(
                    "unknown query parameter {:?}; use after, kinds",
                    clip(other)
                )));
            }
        }
    }
    if let Some(v) = headers.get("last-event-id") {
        let v = v
            .to_str()
            .map_err(|_| bad("Last-Event-ID is not text".into()))?;
        q.after = Some(
            seq("Last-Event-ID", v)
                .map_err(|e| ApiError::bad_request("invalid_header", e.message().to_string()))?,
        );
    }
    Ok(q)
}

/// `GET /events`.
#[utoipa::path(get, path = "/events", params(("after" = Option<u64>, Query, description = "replay the events after this sequence number"), ("kinds" = Option<String>, Query, description = "comma-separated event kinds")), responses((status = 200, description = "`text/event-stream`: `id: <seq>`, `event: <kind>`, `data: <event JSON>`"), (status = 400, description = "bad after, kinds or Last-Event-ID", body = crate::api::schema::ErrorBody), (status = 503, description = "too many streams", body = crate::api::schema::ErrorBody)))]
pub(crate) async fn events(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let q = parse_query(&params, &headers)?;
    let permit = s.feed.slots.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            format!("{MAX_STREAMS} event streams are open; try again later"),
        )
        .with_retry_after(5)
    })?;
    let store = s.store.clone();
    let head = store.event_head();
    let tail = {
        let st = store.clone();
        super::blocking(move || st.event_tail()).await?
    };
    let mut pending = VecDeque::new();
    let last = match q.after {
        None => head,
        Some(after) => {
            let pruned = tail > 0 && after.saturating_add(1) < tail;
            let ahead = after > head;
            if pruned || ahead {
                let gap = serde_json::json!({"after": after, "oldest": tail, "head": head});
                pending.push_back(SseEvent::default().event("gap").data(gap.to_string()));
            }
            if ahead { head } else { after }
        }
    };
    s.metrics.sse_streams.inc();
    let state = StreamState {
        recent: s.feed.recent.clone(),
        fetching: s.feed.fetching.clone(),
        metrics: s.metrics.clone(),
        lagging: false,
        end: "client",
        store,
        head: s.feed.head.subscribe(),
        stop: s.feed.stop.clone(),
        last,
        kinds: q.kinds,
        pending,
        done: false,
        _permit: permit,
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        let ev = st.next().await?;
        Some((Ok::<_, Infallible>(ev), st))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
        .into_response())
}

struct StreamState {
    recent: Arc<std::sync::RwLock<Recent>>,
    fetching: Arc<tokio::sync::Mutex<()>>,
    metrics: Arc<crate::metrics::Metrics>,
    /// Behind the head of the log after its last read (counted in the lagging gauge).
    lagging: bool,
    /// Why it ends, for `sentinel_sse_closed_total` (`client` unless the daemon says).
    end: &'static str,
    store: Arc<Store>,
    head: watch::Receiver<u64>,
    stop: watch::Receiver<bool>,
    last: u64,
    kinds: Option<Vec<EventKind>>,
    pending: VecDeque<SseEvent>,
    done: bool,
    _permit: OwnedSemaphorePermit,
}

impl StreamState {
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some(ev);
            }
            if self.done || *self.stop.borrow() {
                self.end = "stopped";
                return None;
            }
            let head = (*self.head.borrow_and_update()).max(self.store.event_head());
            if head > self.last {
                match self.take_recent() {
                    Window::Taken => {
                        self.set_lagging(self.last < head);
                        continue;
                    }
                    Window::Behind => match self.fetch_recent().await {
                        Some(true) => continue,
                        // Nothing newer to share yet: the read below settles it.
                        Some(false) => {}
                        None => {
                            self.end = "store_error";
                            return None;
                        }
                    },
                    // Fell behind the shared window: read on from the store by itself.
                    Window::Before => {}
                }
                let Some(batch) = read_after(&self.store, self.last, BATCH).await else {
                    self.end = "store_error";
                    return None;
                };
                if batch.is_empty() {
                    // The head is ahead of what this read saw (cannot happen after a commit);
                    // do not spin.
                    self.last = head;
                }
                for ev in batch {
                    self.last = ev.seq;
                    if self.wanted(&ev) {
                        self.pending.push_back(to_sse(&ev));
                    }
                }
                self.set_lagging(self.last < head);
                continue;
            }
            self.set_lagging(false);
            tokio::select! {
                r = self.head.changed() => if r.is_err() { self.done = true },
                _ = self.stop.wait_for(|s| *s) => {
                    self.end = "stopped";
                    return None;
                }
            }
        }
    }

    /// Takes up to [`BATCH`] events after `last` from the shared window.
    fn take_recent(&mut self) -> Window {
        let recent = self
            .recent
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (Some(front), Some(back)) = (recent.events.front(), recent.events.back()) else {
            return Window::Behind;
        };
        if back.0 <= self.last {
            return Window::Behind;
        }
        if front.0 > self.last + 1 {
            return Window::Before;
        }
        let from = recent.events.partition_point(|e| e.0 <= self.last);
        for (seq, kind, ev) in recent.events.range(from..).take(BATCH) {
            self.last = *seq;
            if self.kinds.as_ref().is_none_or(|k| k.contains(kind)) {
                self.pending.push_back(ev.clone());
            }
        }
        Window::Taken
    }

    /// Fetches the events after the shared window's newest (or after `last`, when the window
    /// is empty or stale) into it, once for every stream waiting on the same events. Whether
    /// there is something newer to take; None on a store error.
    async fn fetch_recent(&mut self) -> Option<bool> {
        let _turn = self.fetching.lock().await;
        let after = {
            let recent = self
                .recent
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match recent.events.back() {
                // Another stream fetched while this one waited.
                Some(back) if back.0 > self.last => return Some(true),
                Some(back) if back.0 == self.last => back.0,
                _ => self.last,
            }
        };
        let batch = read_after(&self.store, after, RECENT_FETCH).await?;
        if batch.is_empty() {
            return Some(false);
        }
        let mut recent = self
            .recent
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A window the new events do not continue (stale, or empty) starts again.
        if recent.events.back().is_none_or(|b| b.0 != after) {
            recent.events.clear();
        }
        for ev in &batch {
            recent.events.push_back((ev.seq, ev.kind, to_sse(ev)));
        }
        while recent.events.len() > RECENT_KEEP {
            recent.events.pop_front();
        }
        Some(true)
    }

    fn set_lagging(&mut self, lagging: bool) {
        if lagging != self.lagging {
            self.lagging = lagging;
            if lagging {
                self.metrics.sse_lagging.inc();
            } else {
                self.metrics.sse_lagging.dec();
            }
        }
    }

    fn wanted(&self, ev: &Event) -> bool {
        self.kinds.as_ref().is_none_or(|k| k.contains(&ev.kind))
    }
}

/// Up to `limit` events after `after`, read off the async threads; None (logged) on a store
/// error.
async fn read_after(store: &Arc<Store>, after: u64, limit: usize) -> Option<Vec<Event>> {
    let store = store.clone();
    match tokio::task::spawn_blocking(move || store.events_after(after, limit)).await {
        Ok(Ok(batch)) => Some(batch),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "GET /events: reading the event log failed");
            None
        }
        Err(_) => None,
    }
}

/// Where a stream stands against the shared window.
enum Window {
    /// It took events from it.
    Taken,
    /// It needs events newer than the window holds.
    Behind,
    /// It needs events older than the window holds.
    Before,
}

impl Drop for StreamState {
    fn drop(&mut self) {
        self.set_lagging(false);
        self.metrics.sse_streams.dec();
        self.metrics.sse_closed.with_label_values(&[self.end]).inc();
    }
}

fn to_sse(ev: &Event) -> SseEvent {
    let e = SseEvent::default()
        .id(ev.seq.to_string())
        .event(ev.kind.as_str());
    match e.clone().json_data(ev) {
        Ok(e) => e,
        Err(_) => e.data("{}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &[(&str, &str)]) -> Vec<(String, String)> {
        s.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn query_and_last_event_id() {
        let mut h = HeaderMap::new();
        let q = parse_query(
            &p(&[("after", "7"), ("kinds", "fix_failed, incident_detected")]),
            &h,
        )
        .unwrap();
        assert_eq!(q.after, Some(7));
        assert_eq!(
            q.kinds,
            Some(vec![EventKind::FixFailed, EventKind::IncidentDetected])
        );
        h.insert("last-event-id", "12".parse().unwrap());
        assert_eq!(
            parse_query(&p(&[("after", "7")]), &h).unwrap().after,
            Some(12)
        );
        h.insert("last-event-id", "x".parse().unwrap());
        assert_eq!(parse_query(&[], &h).unwrap_err().code(), "invalid_header");
        let h = HeaderMap::new();
        for bad in [
            p(&[("after", "-1")]),
            p(&[("kinds", "nope")]),
            p(&[("kinds", ",")]),
            p(&[("colour", "red")]),
        ] {
            assert_eq!(parse_query(&bad, &h).unwrap_err().code(), "invalid_query");
        }
    }
}
