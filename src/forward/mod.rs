//! The edge of a scale-out cluster: `forward.nats` on `sentinel watch`.
//!
//! An edge scans its files as a single Sentinel does (the same shards, the same SIMD
//! filter: the ~98% of bytes that are not errors stop here), but its file batches go to the
//! forwarder thread instead of the ingest writer. For each batch the forwarder publishes the
//! batch's error lines ([`crate::ingest::FileBatch::forward`]) to JetStream — each line to
//! `<subject_prefix>.<fingerprint mod partitions>`, the lines of one file and partition
//! together in a [`crate::source::nats::wire::EdgeMessage`] with the `Nats-Msg-Id`
//! `<edge>/<source>/<file identity>@<first offset>-<last offset>#<partition>` — and waits
//! until JetStream has **acknowledged every message** (stored them). Only then does the batch
//! go on to the local writer, **without its counts** (the aggregators count these lines) but
//! with the files' positions: a position is committed locally only after the lines before it
//! are durable in the stream. Killed at any moment, the edge reads again from its committed
//! position; what it publishes again either has the same message id (the server drops it
//! within its duplicate window) or is skipped by the aggregators, which keep the last
//! position applied per edge source (see [`crate::source::nats`]).
//!
//! **NATS down.** A publish that fails or is not acknowledged within [`ACK_TIMEOUT`] is
//! tried again (1/4 s doubling to 5 s) with the same batch: meanwhile the shards' sends
//! wait (the bounded channel is full), so the files wait, exactly as under backpressure,
//! When the daemon stops while NATS is down, the unpublished batch and every batch after
//! it are dropped: their positions were never committed, so their lines are read again at
//! the next start.
//!
//! **Webhooks.** An edge's webhook sources forward too ([`EventForwarder`]): a request's
//! events are published (one message per partition, `unpositioned`: an aggregator applies
//! its lines once per stream sequence, without an edge position) and the webhook answers
//! 2xx only **after JetStream acknowledged** every message; while the server cannot be
//! reached (or does not acknowledge within [`WEBHOOK_ACK_TIMEOUT`]) it answers 503 with
//! `Retry-After` and counts nothing locally. A 503 is not always "nothing kept": when the
//! request's messages were handed to the connection before it failed (the server died
//! under them, or did not acknowledge in time), the server may still store them — the
//! client sends what it could not write once it reconnects — and the body says so. The
//! message id is made of the request's event ids when every event has one, so the retry
//! a 503 asks for counts them once whatever happened (within the server's duplicate window
//! it is dropped there and reported as `duplicates`); a request without ids may, after
//! such a 503, count again on retry.
//!
//! **CloudWatch, process and stdin sources** of an edge forward through the same thread:
//! their batches carry their error lines ([`crate::ingest::ForwardKind::Unpositioned`],
//! recorded by the sources' line folder, `src/source/lines.rs`), which are published
//! `unpositioned` (an aggregator applies them once per stream sequence) and, once
//! JetStream acknowledged them, the batch goes on to the local writer without its counts —
//! with a CloudWatch group's position ([`crate::source::cloudwatch::position`]), committed
//! only then. While NATS is down these sources wait as the files do: a CloudWatch poller's
//! send waits (its position does not move; it reads on when the send returns); a process
//! source's folding thread waits, its readers' channel fills, then the child's pipe, and the
//! child blocks on its next write (backpressure). Nothing is dropped or counted locally.
//!
//! *Process and stdin* lines have no position to re-read from (a pipe cannot be re-read),
//! so their messages (one per source and partition, cut at [`MESSAGE_BYTES`]) get ids
//! unique to this run of the daemon: `<edge>/<source>/<pid>-<start ns>.<batch>#<p>.<n>`. A
//! retry after a failed or unacknowledged publish resends the same messages with the same
//! ids, so one the server stored before an outage is dropped as a duplicate when retried.
//! Their lines read but not yet acknowledged when the daemon is killed, or stops while NATS
//! is down, are lost (counting them is at most once, with or without an edge).
//!
//! *CloudWatch* events are not positioned the way a file's lines are: the aggregators'
//! skip is a high-water mark per edge source (`at` beyond the last applied), which needs a
//! total order of the source that a re-read reproduces. A log group's order is the event
//! timestamp, with no defined order among the events of one millisecond and with late
//! arrivals landing behind what was read; a high-water mark over it could skip an event
//! that was never applied — a loss. So each event's error line is published **alone**,
//! `unpositioned`, under a message id made of the event's identity,
//! `<edge>/<source>/<log group>/<log stream>/<event id>` (the same whatever page or sweep
//! reads it), and the group's position is committed only after the acknowledgement. The
//! exactly-once argument: (1) an event is published before the position that covers it is
//! committed, so a crash loses nothing — the restarted edge reads it again from the
//! committed position; (2) what it publishes again was published with the same id, which
//! the server drops within its duplicate window (two minutes, [`DUPLICATE_WINDOW`]); (3) an
//! event is republished only if the edge died between JetStream's acknowledgement and the
//! local commit of the position (the writer's next transaction, milliseconds), or if the
//! server stored it but its acknowledgement was lost in an outage. So a count twice needs
//! such a crash (or outage) **and** the edge (or server) staying away for longer than the
//! duplicate window before the retry: that case, unlike a file's, is not covered by the
//! aggregators' per-edge skip. The same holds for process and stdin messages retried after
//! an outage longer than the window.
//!
//! [`DUPLICATE_WINDOW`]: crate::source::nats::DUPLICATE_WINDOW

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use crossbeam_channel::{Receiver, bounded};
use serde_json::json;

use crate::config::ForwardNatsConfig;
use crate::ingest::writer::{FILE_QUEUE_CAPACITY, FileBatch, WriterHandle};
use crate::ingest::{ForwardKind, ForwardLine};
use crate::source::SourceBoard;
use crate::source::nats::wire::{EdgeLine, EdgeMessage, VERSION, partition_of};

/// How long a publish waits for JetStream's acknowledgement before it is tried again.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages are cut at about this many bytes of lines (the server's default `max_payload`
/// is 1 MiB).
pub const MESSAGE_BYTES: usize = 512 << 10;
/// How long a webhook request waits for JetStream's acknowledgements before it answers 503.
pub const WEBHOOK_ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a webhook request waits for a connection to NATS being made before it answers
/// 503.
pub const CONNECT_GRACE: Duration = Duration::from_secs(1);
/// The name the forwarder shows under in `/status`.
pub const BOARD_NAME: &str = "forward.nats";

/// The running forwarder thread.
#[derive(Debug)]
pub struct Forwarder {
    thread: std::thread::JoinHandle<()>,
}

impl Forwarder {
    /// Starts the forwarder: returns it and the handle the sources must send to (the
    /// batches of files, CloudWatch, processes and standard input come to the forwarder;
    /// everything else goes to `writer`).
    ///
    /// # Errors
    ///
    /// A malformed URL, a thread that could not start.
    pub fn start(
        cfg: ForwardNatsConfig,
        writer: WriterHandle,
        runtime: tokio::runtime::Handle,
        stop: tokio::sync::watch::Receiver<bool>,
        board: Arc<SourceBoard>,
    ) -> anyhow::Result<(Forwarder, WriterHandle)> {
        for addr in cfg.url.split(',') {
            addr.trim()
                .parse::<async_nats::ServerAddr>()
                .map_err(|e| anyhow::anyhow!("forward.nats.url {addr:?}: {e}"))?;
        }
        let (tx, rx) = bounded(FILE_QUEUE_CAPACITY);
        let sources = writer.redirect_files(tx);
        board.set(BOARD_NAME, json!({"state": "starting", "url": cfg.url}));
        let thread = std::thread::Builder::new()
            .name("sentinel-forward".into())
            .spawn(move || run(cfg, rx, writer, runtime, stop, board))?;
        tracing::info!("forwarding error lines to NATS JetStream");
        Ok((Forwarder { thread }, sources))
    }

    /// Waits for the thread (it ends once every source's handle is gone).
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

fn run(
    cfg: ForwardNatsConfig,
    rx: Receiver<FileBatch>,
    writer: WriterHandle,
    rt: tokio::runtime::Handle,
    stop: tokio::sync::watch::Receiver<bool>,
    board: Arc<SourceBoard>,
) {
    // The client's timers and tasks live on the daemon's runtime.
    let _runtime = rt.enter();
    let client = match rt.block_on(crate::source::nats::connect(
        &cfg.url,
        &format!("sentinel edge {}", cfg.edge),
    )) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("forward.nats: {e}");
            board.set(BOARD_NAME, json!({"state": "failing", "error": e}));
            return;
        }
    };
    let js = jetstream::new(client);
    let max_age = Duration::from_secs(cfg.max_age_hours.saturating_mul(3600));
    let mut stream_ready = false;
    let mut published: u64 = 0;
    // Lines forwarded per source (the `/status` row's `sources`).
    let mut by_source: std::collections::BTreeMap<String, u64> = Default::default();
    // This run's identity, for the ids of messages without a position (see the module docs).
    let run_id = format!(
        "{}-{}",
        std::process::id(),
        jiff::Timestamp::now().as_nanosecond()
    );
    let mut batches: u64 = 0;
    // Once a batch was given up (the daemon stopping while NATS is down), no later batch
    // may commit a position past its lines: everything after it is dropped too.
    let mut gave_up = false;
    for mut fb in rx {
        if gave_up {
            continue;
        }
        let lines = std::mem::take(&mut fb.forward);
        if !lines.is_empty() {
            batches += 1;
            let messages = messages(&cfg, &lines, &format!("{run_id}.{batches}"));
            let mut backoff = crate::source::nats::BACKOFF_MIN;
            let mut failing: Option<String> = None;
            loop {
                let attempt = rt.block_on(async {
                    if !stream_ready {
                        crate::source::nats::ensure_stream(
                            &js,
                            &cfg.stream,
                            &cfg.subject_prefix,
                            max_age,
                        )
                        .await
                        .map_err(|e| format!("stream {}: {e}", cfg.stream))?;
                    }
                    publish_all(&js, &messages).await
                });
                match attempt {
                    Ok(()) => {
                        stream_ready = true;
                        if failing.take().is_some() {
                            tracing::info!("forward.nats: JetStream acknowledges again");
                        }
                        break;
                    }
                    Err(e) => {
                        stream_ready = false;
                        if failing.as_deref() != Some(e.as_str()) {
                            tracing::warn!("forward.nats: {e}; the sources wait");
                            failing = Some(e.clone());
                        }
                        board.set(BOARD_NAME, json!({"state": "waiting", "error": e}));
                        if *stop.borrow() {
                            // Not committed: read again at the next start.
                            break;
                        }
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(crate::source::nats::BACKOFF_MAX);
                    }
                }
            }
            if failing.is_some() {
                gave_up = true;
                continue;
            }
            published += lines.len() as u64;
            *by_source.entry(fb.source.to_string()).or_default() += lines.len() as u64;
            board.set(
                BOARD_NAME,
                json!({
                    "state": "ok",
                    "error": null,
                    "forwarded_lines": published,
                    "sources": by_source,
                }),
            );
            // The aggregators count these lines: the edge keeps its positions only.
            fb.batch.incidents.clear();
            fb.batch.key_counts.clear();
            fb.batch
                .totals
                .insert("forwarded_lines", lines.len() as u64);
        }
        if writer.send_files(fb).is_err() {
            return;
        }
    }
}

/// One message to publish: subject, message id, body.
type Outgoing = (String, String, bytes::Bytes);

/// The lines of one file (origin) and partition.
type Group<'a> = ((Arc<str>, u32), Vec<&'a ForwardLine>);

/// Groups `lines` by origin (a file, a source) and partition, in read order, into messages
/// of at most about [`MESSAGE_BYTES`]; a line with an id of its own
/// ([`ForwardKind::Unpositioned`] `id`) is a message alone. `batch` makes the ids of
/// unpositioned messages without one unique (this run and batch).
fn messages(cfg: &ForwardNatsConfig, lines: &[ForwardLine], batch: &str) -> Vec<Outgoing> {
    let (positioned, unpositioned): (Vec<&ForwardLine>, Vec<&ForwardLine>) = lines
        .iter()
        .partition(|l| l.kind == ForwardKind::Positioned);
    let mut out = positioned_messages(cfg, &positioned);
    out.extend(unpositioned_messages(cfg, &unpositioned, batch));
    out
}

/// The messages of a file's lines: see [`messages`].
fn positioned_messages(cfg: &ForwardNatsConfig, lines: &[&ForwardLine]) -> Vec<Outgoing> {
    let mut groups: Vec<Group<'_>> = Vec::new();
    for &l in lines {
        let p = partition_of(l.fingerprint, cfg.partitions);
        match groups
            .iter_mut()
            .find(|((o, q), _)| *q == p && **o == *l.origin)
        {
            Some((_, v)) => v.push(l),
            None => groups.push(((l.origin.clone(), p), vec![l])),
        }
    }
    let now = jiff::Timestamp::now().as_millisecond();
    let mut out = Vec::new();
    for ((origin, p), group) in groups {
        let edge = format!("{}/{origin}", cfg.edge);
        for chunk in chunks(&group) {
            let (first, last) = (chunk[0].at, chunk[chunk.len() - 1].at);
            let msg = EdgeMessage {
                v: VERSION,
                edge: edge.clone(),
                unpositioned: false,
                lines: chunk
                    .iter()
                    .map(|l| EdgeLine {
                        at: l.at,
                        t: now,
                        fp: format!("{:016x}", l.fingerprint),
                        key: crate::scan::keys::first_key(&l.line)
                            .map(|k| String::from_utf8_lossy(k.as_bytes()).into_owned()),
                        line: String::from_utf8_lossy(&l.line).into_owned(),
                    })
                    .collect(),
            };
            out.push((
                format!("{}.{p}", cfg.subject_prefix),
                format!("{edge}@{first}-{last}#{p}"),
                bytes::Bytes::from(msg.encode()),
            ));
        }
    }
    out
}

/// The messages of lines without a position: see [`messages`] and the module docs.
fn unpositioned_messages(
    cfg: &ForwardNatsConfig,
    lines: &[&ForwardLine],
    batch: &str,
) -> Vec<Outgoing> {
    let now = jiff::Timestamp::now().as_millisecond();
    let edge_line = |l: &ForwardLine| {
        let key = match &l.kind {
            ForwardKind::Unpositioned { key: Some(k), .. } => Some(k.clone()),
            _ => crate::scan::keys::first_key(&l.line)
                .map(|k| String::from_utf8_lossy(k.as_bytes()).into_owned()),
        };
        EdgeLine {
            at: 0,
            t: now,
            fp: format!("{:016x}", l.fingerprint),
            key,
            line: String::from_utf8_lossy(&l.line).into_owned(),
        }
    };
    let message = |edge: &str, chunk: &[&ForwardLine]| EdgeMessage {
        v: VERSION,
        edge: edge.to_string(),
        unpositioned: true,
        lines: chunk.iter().map(|l| edge_line(l)).collect(),
    };
    let mut out = Vec::new();
    let mut groups: Vec<Group<'_>> = Vec::new();
    for &l in lines {
        let p = partition_of(l.fingerprint, cfg.partitions);
        if let ForwardKind::Unpositioned { id: Some(id), .. } = &l.kind {
            // Alone, under its own identity: the same message whoever reads it again.
            let edge = format!("{}/{}", cfg.edge, l.origin);
            out.push((
                format!("{}.{p}", cfg.subject_prefix),
                format!("{edge}/{id}"),
                bytes::Bytes::from(message(&edge, &[l]).encode()),
            ));
            continue;
        }
        match groups
            .iter_mut()
            .find(|((o, q), _)| *q == p && **o == *l.origin)
        {
            Some((_, v)) => v.push(l),
            None => groups.push(((l.origin.clone(), p), vec![l])),
        }
    }
    for ((origin, p), group) in groups {
        let edge = format!("{}/{origin}", cfg.edge);
        for (n, chunk) in chunks(&group).into_iter().enumerate() {
            out.push((
                format!("{}.{p}", cfg.subject_prefix),
                format!("{edge}/{batch}#{p}.{n}"),
                bytes::Bytes::from(message(&edge, chunk).encode()),
            ));
        }
    }
    out
}

/// `group` cut into runs of at most about [`MESSAGE_BYTES`] of lines.
fn chunks<'a>(group: &'a [&'a ForwardLine]) -> Vec<&'a [&'a ForwardLine]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, l) in group.iter().enumerate() {
        if i > start && bytes + l.line.len() > MESSAGE_BYTES {
            out.push(&group[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += l.line.len() + 64;
    }
    if start < group.len() {
        out.push(&group[start..]);
    }
    out
}

/// Publishes every message (pipelined) and waits for all the acknowledgements.
async fn publish_all(js: &jetstream::Context, messages: &[Outgoing]) -> Result<(), String> {
    let mut acks = Vec::with_capacity(messages.len());
    for (subject, id, body) in messages {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
        let ack = js
            .publish_with_headers(subject.clone(), headers, body.clone())
            .await
            .map_err(|e| format!("publish to {subject}: {e}"))?;
        acks.push(ack);
    }
    for ack in acks {
        match tokio::time::timeout(ACK_TIMEOUT, ack).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("not acknowledged: {e}")),
            Err(_) => {
                return Err(format!(
                    "not acknowledged within {} s",
                    ACK_TIMEOUT.as_secs()
                ));
            }
        }
    }
    Ok(())
}

/// An edge's webhook events to JetStream (see the module docs): installed on the writer
/// handle the webhook sources get ([`WriterHandle::redirect_events`]).
#[derive(Debug)]
pub struct EventForwarder {
    cfg: ForwardNatsConfig,
    client: async_nats::Client,
    js: jetstream::Context,
    rules: Arc<crate::attribute::LiveRules>,
    stream_ready: std::sync::atomic::AtomicBool,
    requests: std::sync::atomic::AtomicU64,
}

impl EventForwarder {
    /// Connects (in the background: the connection is made and remade forever).
    ///
    /// # Errors
    ///
    /// A malformed URL.
    pub async fn connect(
        cfg: ForwardNatsConfig,
        rules: Arc<crate::attribute::LiveRules>,
    ) -> anyhow::Result<Arc<EventForwarder>> {
        let client =
            crate::source::nats::connect(&cfg.url, &format!("sentinel edge {} webhooks", cfg.edge))
                .await
                .map_err(|e| anyhow::anyhow!("forward.nats: {e}"))?;
        Ok(Arc::new(EventForwarder {
            js: jetstream::new(client.clone()),
            client,
            cfg,
            rules,
            stream_ready: std::sync::atomic::AtomicBool::new(false),
            requests: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    /// The messages of one request's events.
    fn messages(&self, source: &Arc<str>, events: &[crate::aggregate::Event]) -> Vec<Outgoing> {
        let mut agg = crate::aggregate::LineAggregator::new(&self.rules, source.clone());
        let edge = format!("{}/{source}/webhook", self.cfg.edge);
        let now = jiff::Timestamp::now().as_millisecond();
        let mut parts: std::collections::BTreeMap<u32, Vec<EdgeLine>> = Default::default();
        for e in events {
            let fp = agg.add_text(&e.line, e.key.as_deref()).0;
            parts
                .entry(partition_of(fp, self.cfg.partitions))
                .or_default()
                .push(EdgeLine {
                    at: 0,
                    t: now,
                    fp: format!("{fp:016x}"),
                    key: e
                        .key
                        .as_deref()
                        .map(|k| String::from_utf8_lossy(k).into_owned()),
                    line: String::from_utf8_lossy(&e.line).into_owned(),
                });
        }
        // The request's identity: its event ids when every event has one (a retry is then
        // the same message), else unique to this request.
        let ids: Option<Vec<&str>> = events.iter().map(|e| e.id.as_deref()).collect();
        let request = match ids {
            Some(ids) => format!(
                "id{:016x}",
                xxhash_rust::xxh3::xxh3_64(ids.join("\u{1f}").as_bytes())
            ),
            None => format!(
                "rq{}-{}-{}",
                std::process::id(),
                jiff::Timestamp::now().as_nanosecond(),
                self.requests
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ),
        };
        let mut out = Vec::new();
        for (p, lines) in parts {
            let mut chunk: Vec<EdgeLine> = Vec::new();
            let mut bytes = 0;
            let mut n = 0;
            let mut flush = |chunk: Vec<EdgeLine>, n: &mut u32| {
                let msg = EdgeMessage {
                    v: VERSION,
                    edge: edge.clone(),
                    unpositioned: true,
                    lines: chunk,
                };
                out.push((
                    format!("{}.{p}", self.cfg.subject_prefix),
                    format!("{edge}/{request}#{p}.{n}"),
                    bytes::Bytes::from(msg.encode()),
                ));
                *n += 1;
            };
            for l in lines {
                if !chunk.is_empty() && bytes + l.line.len() > MESSAGE_BYTES {
                    flush(std::mem::take(&mut chunk), &mut n);
                    bytes = 0;
                }
                bytes += l.line.len() + 64;
                chunk.push(l);
            }
            if !chunk.is_empty() {
                flush(chunk, &mut n);
            }
        }
        out
    }
}

impl crate::ingest::ForwardEvents for EventForwarder {
    fn forward(
        self: Arc<Self>,
        source: Arc<str>,
        events: Vec<crate::aggregate::Event>,
    ) -> crate::ingest::message::Forwarding {
        Box::pin(async move {
            use crate::ingest::ForwardError;
            use std::sync::atomic::{AtomicBool, Ordering};
            // A connection being (re)made gets a moment; a server that is down is said at
            // once rather than after the acknowledgement timeout.
            let connected =
                || self.client.connection_state() == async_nats::connection::State::Connected;
            let deadline = tokio::time::Instant::now() + CONNECT_GRACE;
            while !connected() {
                if tokio::time::Instant::now() >= deadline {
                    return Err(ForwardError {
                        reason: format!("the NATS server {} cannot be reached", self.cfg.url),
                        maybe_stored: false,
                    });
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let messages = self.messages(&source, &events);
            // Set once the first message is handed to the client: from then on a failure
            // leaves its fate unknown (the client keeps what it could not write across a
            // reconnect, and sends it then).
            let sent = AtomicBool::new(false);
            let attempt = async {
                if !self.stream_ready.load(Ordering::Acquire) {
                    crate::source::nats::ensure_stream(
                        &self.js,
                        &self.cfg.stream,
                        &self.cfg.subject_prefix,
                        Duration::from_secs(self.cfg.max_age_hours.saturating_mul(3600)),
                    )
                    .await
                    .map_err(|e| format!("stream {}: {e}", self.cfg.stream))?;
                    self.stream_ready.store(true, Ordering::Release);
                }
                let mut acks = Vec::with_capacity(messages.len());
                for (subject, id, body) in &messages {
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
                    sent.store(true, Ordering::Relaxed);
                    let ack = self
                        .js
                        .publish_with_headers(subject.clone(), headers, body.clone())
                        .await
                        .map_err(|e| format!("publish to {subject}: {e}"))?;
                    acks.push(ack);
                }
                let mut duplicate_messages = Vec::new();
                for (i, ack) in acks.into_iter().enumerate() {
                    let a = ack.await.map_err(|e| format!("not acknowledged: {e}"))?;
                    if a.duplicate {
                        duplicate_messages.push(i);
                    }
                }
                Ok::<_, String>(duplicate_messages)
            };
            let outcome = tokio::time::timeout(WEBHOOK_ACK_TIMEOUT, attempt).await;
            let failed = |reason: String| {
                self.stream_ready.store(false, Ordering::Release);
                Err(ForwardError {
                    reason,
                    maybe_stored: sent.load(Ordering::Relaxed),
                })
            };
            match outcome {
                Ok(Ok(dups)) => {
                    // A message the server had already: its events were counted before.
                    let dup_events: usize = dups
                        .iter()
                        .filter_map(|&i| messages.get(i))
                        .filter_map(|(_, _, body)| EdgeMessage::decode(body).ok())
                        .map(|m| m.lines.len())
                        .sum();
                    Ok((events.len() - dup_events, dup_events))
                }
                Ok(Err(e)) => failed(e),
                Err(_) => failed(format!(
                    "not acknowledged within {} s",
                    WEBHOOK_ACK_TIMEOUT.as_secs()
                )),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ForwardNatsConfig {
        ForwardNatsConfig {
            url: "nats://127.0.0.1:4222".into(),
            stream: "SENTINEL".into(),
            subject_prefix: "sentinel.errors".into(),
            partitions: 4,
            edge: "web-1".into(),
            max_age_hours: 1,
        }
    }

    fn line(origin: &str, fp: u64, text: &str, kind: ForwardKind) -> ForwardLine {
        ForwardLine {
            origin: Arc::from(origin),
            at: 0,
            fingerprint: fp,
            line: text.as_bytes().to_vec(),
            kind,
        }
    }

    #[test]
    fn unpositioned_lines_are_published_alone_under_their_id_or_grouped_per_run() {
        let event = |id: &str| ForwardKind::Unpositioned {
            id: Some(Arc::from(id)),
            key: Some("PACT:a:b".into()),
        };
        let run = ForwardKind::Unpositioned {
            id: None,
            key: None,
        };
        let lines = [
            line("cw", 1, "ERROR x", event("/g/s/1")),
            line("cw", 1, "ERROR y", event("/g/s/2")),
            line("job", 2, "ERROR [PACT:c:d] one", run.clone()),
            line("job", 6, "ERROR two", run.clone()),
            line("job", 3, "ERROR three", run),
            line("app/1:2/0", 1, "ERROR file", ForwardKind::Positioned),
        ];
        let out = messages(&cfg(), &lines, "77-5.9");
        let ids: Vec<&str> = out.iter().map(|(_, id, _)| id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "web-1/app/1:2/0@0-0#1",
                "web-1/cw//g/s/1",
                "web-1/cw//g/s/2",
                "web-1/job/77-5.9#2.0",
                "web-1/job/77-5.9#3.0",
            ]
        );
        let subjects: Vec<&str> = out.iter().map(|(s, _, _)| s.as_str()).collect();
        assert_eq!(subjects[1], "sentinel.errors.1");
        assert_eq!(subjects[3], "sentinel.errors.2");
        let cw = EdgeMessage::decode(&out[1].2).unwrap();
        assert!(cw.unpositioned);
        assert_eq!(cw.edge, "web-1/cw");
        assert_eq!(cw.lines.len(), 1);
        assert_eq!(cw.lines[0].key.as_deref(), Some("PACT:a:b"));
        let job = EdgeMessage::decode(&out[3].2).unwrap();
        assert!(job.unpositioned);
        assert_eq!(job.lines.len(), 2, "partition 2: fingerprints 2 and 6");
        assert_eq!(job.lines[0].key.as_deref(), Some("PACT:c:d"));
        assert_eq!(job.lines[1].key, None);
        assert!(!EdgeMessage::decode(&out[0].2).unwrap().unpositioned);
    }
}
