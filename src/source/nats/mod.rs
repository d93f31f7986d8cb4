//! `type: nats` sources: the aggregator side of a scale-out cluster on NATS JetStream.
//!
//! Each configured partition `p` is read from subject `<subject_prefix>.<p>` of the stream
//! by its own task, **strictly in stream order**, and folded like any source's lines
//! ([`super::lines::Folder`]). Every batch sent to the ingest writer carries the partition's
//! last applied stream sequence (and, for `format: sentinel`, the last applied position of
//! each edge source it touched) in [`crate::store::IngestBatch::source_positions`], which the
//! writer commits in the **same redb transaction** as the counts ([`position`]).
//!
//! **The store, not the server, says what was applied.** On start, and whenever the
//! subscription fails (the server restarted, the connection dropped, heartbeats were missed),
//! the partition is read again by a new *ordered* consumer (ephemeral, no acks, flow control
//! and heartbeats) positioned at the last sequence handed to the writer + 1
//! (`DeliverPolicy::ByStartSequence`). The ordered consumer checks that consumer sequences
//! are contiguous and re-positions itself after its last delivered message when they are not
//! (a gap is a reason to re-position, never to move on); and anything at or below the
//! sequence already applied is skipped here, whatever the server sends. Killed at any
//! moment, the daemon resumes after the last committed batch: each stream sequence is applied
//! exactly once. There is no durable consumer and no ack: a durable consumer with explicit
//! acks redelivers an unacknowledged message only after its ack wait, behind newer ones
//! already applied, and "skip what is at or below the stored sequence" would then lose it.
//! The stream's retention is therefore by limits (age, size), not by acknowledgement.
//!
//! **Payloads.** `format: sentinel`: messages of Sentinel edges ([`wire`]); a line is
//! applied only when its position is beyond the last position applied for its edge source in
//! this partition, so an edge's republish after a crash counts nothing twice even outside
//! the server's duplicate window. `format: raw`: what log shippers publish (Vector's and
//! Fluent Bit's `nats` outputs, plain core-NATS publishes to subjects the stream captures):
//! each message is one line or NDJSON, a JSON record's `message` (or `log`) field is the
//! line, and the lines are scanned with the source's `error_patterns` as a file's are.
//!
//! **Stream.** If the stream does not exist it is created capturing `<subject_prefix>.>`,
//! with file storage, `max_age_hours` (default a week) and a two-minute duplicate window.
//! While the server is unreachable the partitions wait (state `waiting` in `/status`) and
//! read on from their position once it is back.

pub mod position;
pub mod wire;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use futures_util::StreamExt;
use serde_json::json;
use tokio::time::Instant;

use super::lines::{Folder, scanner_of};
use super::{Running, SourceBoard, SourceContext, SourceInfo, Stopper};
use crate::config::{NatsFormat, SourceConfig};
use crate::ingest::writer::{FileBatch, WriterHandle};

/// A partition's batch goes to the writer this long after its first message at most.
pub const FLUSH_AFTER: Duration = Duration::from_millis(20);
/// ... or once it holds this many payload bytes.
pub const FLUSH_BYTES: usize = 4 << 20;
/// The first wait after the server could not be reached; it doubles up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// The longest wait between attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The duplicate window of a stream this source creates.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Connects to `url` (comma-separated servers) with the options every Sentinel NATS client
/// uses: the connection is made (and remade) in the background, forever.
///
/// # Errors
///
/// A malformed URL.
pub async fn connect(url: &str, name: &str) -> Result<async_nats::Client, String> {
    let addrs: Vec<async_nats::ServerAddr> = url
        .split(',')
        .map(|u| u.trim().parse::<async_nats::ServerAddr>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{url:?}: {e}"))?;
    async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        .reconnect_delay_callback(|n| {
            BACKOFF_MIN
                .saturating_mul(1 << n.min(5) as u32)
                .min(BACKOFF_MAX)
        })
        .connect(addrs)
        .await
        .map_err(|e| format!("{url}: {e}"))
}

/// The stream `name` capturing `<prefix>.>`, created (file storage, `max_age`, the
/// [`DUPLICATE_WINDOW`]) if missing.
///
/// # Errors
///
/// The server's answer (unreachable, JetStream off, a conflicting stream).
pub async fn ensure_stream(
    js: &jetstream::Context,
    name: &str,
    prefix: &str,
    max_age: Duration,
) -> Result<jetstream::stream::Stream, String> {
    js.get_or_create_stream(jetstream::stream::Config {
        name: name.to_string(),
        subjects: vec![format!("{prefix}.>")],
        storage: jetstream::stream::StorageType::File,
        max_age,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    })
    .await
    .map_err(|e| e.to_string())
}

/// Starts the `type: nats` sources (registered in [`crate::source::SOURCE_TYPES`]).
///
/// # Errors
///
/// Bad patterns, a malformed URL, an unreadable store or position.
pub fn start(sources: &[&SourceConfig], cx: &SourceContext) -> anyhow::Result<Running> {
    let mut running = Running {
        infos: Vec::new(),
        listening: Vec::new(),
        stoppers: Vec::new(),
    };
    for src in sources {
        let SourceConfig::Nats(src) = src else {
            continue;
        };
        let name = src.common.name.clone();
        for addr in src.url.split(',') {
            addr.trim()
                .parse::<async_nats::ServerAddr>()
                .map_err(|e| anyhow::anyhow!("source {name:?}: url {addr:?}: {e}"))?;
        }
        let saved: HashMap<String, Vec<u8>> = cx
            .store
            .source_positions(&position::source_prefix(&name))?
            .into_iter()
            .collect();
        let mut partitions = Vec::new();
        for token in &src.partitions {
            let key = position::partition_key(&name, token);
            let known = saved.contains_key(&key);
            let seq = match saved.get(&key).map(|v| position::decode(v)) {
                Some(Ok(s)) => s,
                Some(Err(e)) => {
                    anyhow::bail!("source {name:?}: the stored sequence of partition {token}: {e}")
                }
                None => 0,
            };
            let mut edges = HashMap::new();
            for (k, v) in &saved {
                if let Some(edge) = k.strip_prefix(&key).filter(|e| !e.is_empty()) {
                    let at = position::decode(v).map_err(|e| {
                        anyhow::anyhow!("source {name:?}: the stored position of {edge:?}: {e}")
                    })?;
                    edges.insert(edge.to_string(), at);
                }
            }
            tracing::info!(source = %name, partition = %token, from = seq + 1, "reading NATS partition");
            partitions.push(Partition {
                name: Arc::from(name.as_str()),
                token: token.clone(),
                subject: format!("{}.{token}", src.subject_prefix),
                key,
                seq,
                known,
                cluster: cx.cluster.clone(),
                force: false,
                edges,
                changed: BTreeMap::new(),
                folder: Folder::new(
                    &name,
                    scanner_of(&src.common, &cx.defaults)?,
                    src.common.format,
                    &cx.rules,
                    cx.metrics.clone(),
                ),
                payload: src.payload,
                pending_bytes: 0,
                pending_messages: 0,
                skipped_lines: 0,
                first_pending: None,
                region: Vec::new(),
                writer: cx.ingest.clone(),
                board: cx.board.clone(),
            });
        }
        running.infos.push(SourceInfo {
            name: name.clone(),
            kind: "nats".into(),
            detail: format!(
                "{} {} {}.{{{}}}",
                src.url,
                src.stream,
                src.subject_prefix,
                src.partitions.join(",")
            ),
        });
        cx.board.set(&name, json!({"state": "starting"}));
        let src = src.clone();
        let stop = cx.stop.clone();
        let board = cx.board.clone();
        running
            .stoppers
            .push(Stopper::Task(tokio::spawn(async move {
                let client = match connect(&src.url, &format!("sentinel {name}")).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(source = %name, "NATS: {e}");
                        board.set(&name, json!({"state": "failing", "error": e}));
                        return Ok(());
                    }
                };
                let js = jetstream::new(client);
                let max_age = Duration::from_secs(src.max_age_hours.saturating_mul(3600));
                let tasks: Vec<_> = partitions
                    .into_iter()
                    .map(|p| {
                        tokio::spawn(p.run(
                            js.clone(),
                            src.stream.clone(),
                            src.subject_prefix.clone(),
                            max_age,
                            stop.clone(),
                        ))
                    })
                    .collect();
                for t in tasks {
                    let _ = t.await;
                }
                board.set(&name, json!({"state": "stopped"}));
                Ok(())
            })));
    }
    Ok(running)
}

/// Why reading a partition ended.
enum End {
    /// The daemon is stopping.
    Stopped,
    /// The writer is gone (the daemon is stopping after a failure).
    WriterGone,
}

/// One partition of a source: its position and what was read since the last batch.
struct Partition {
    name: Arc<str>,
    token: String,
    subject: String,
    /// Its sequence key (and the prefix of its edge keys).
    key: String,
    /// The last stream sequence applied (committed, or in a batch handed to the writer).
    seq: u64,
    /// Whether the store had a sequence for it (else it may be taken over from another
    /// node: see [`Partition::take_over`]).
    known: bool,
    /// The cluster, asked where the partition was left by another node.
    cluster: Option<Arc<crate::cluster::Cluster>>,
    /// The next flush writes the positions even without messages (a take-over's).
    force: bool,
    /// The last position applied per edge source (`format: sentinel`).
    edges: HashMap<String, u64>,
    /// Edge positions moved since the last batch.
    changed: BTreeMap<String, u64>,
    folder: Folder,
    payload: NatsFormat,
    pending_bytes: usize,
    pending_messages: u64,
    skipped_lines: u64,
    first_pending: Option<Instant>,
    /// Reused buffer of the lines of a raw message.
    region: Vec<u8>,
    writer: WriterHandle,
    board: Arc<SourceBoard>,
}

impl Partition {
    async fn run(
        mut self,
        js: jetstream::Context,
        stream: String,
        prefix: String,
        max_age: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        if let Some(cluster) = self.cluster.clone() {
            match self.take_over(&cluster, &stream, &prefix, &mut stop).await {
                Ok(()) => {}
                Err(End::Stopped | End::WriterGone) => return,
            }
        }
        let mut backoff = BACKOFF_MIN;
        let mut failing: Option<String> = None;
        loop {
            if *stop.borrow() {
                return;
            }
            match self.read(&js, &stream, &prefix, max_age, &mut stop).await {
                Ok(Ok(())) => backoff = BACKOFF_MIN,
                Ok(Err(e)) => {
                    if failing.as_deref() != Some(e.as_str()) {
                        tracing::warn!(source = %self.name, partition = %self.token,
                            "NATS: {e}; reading again from sequence {}", self.seq + 1);
                        failing = Some(e.clone());
                    }
                    self.publish("waiting", Some(&e));
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = stopped(&mut stop) => return,
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
                Err(End::Stopped | End::WriterGone) => return,
            }
        }
    }

    /// The hand-off of a partition between aggregators: asks the cluster where the other
    /// nodes left this partition and starts after the highest sequence any of them applied
    /// (with their edge positions), so that a partition moved from one aggregator's
    /// `partitions` to another's is applied exactly once. While another node still reads
    /// the partition (it is in its `partitions`), or, for a partition this store never
    /// read, while an expected node does not answer, it waits: reading from the start then
    /// could apply again what that node applied.
    async fn take_over(
        &mut self,
        cluster: &crate::cluster::Cluster,
        stream: &str,
        prefix: &str,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), End> {
        let mut backoff = BACKOFF_MIN;
        let mut said: Option<String> = None;
        loop {
            let asked = cluster
                .ask(
                    "position",
                    json!({"stream": stream, "subject_prefix": prefix, "partition": self.token}),
                    &[],
                )
                .await;
            let mut owners = Vec::new();
            let mut best: Option<(String, u64, serde_json::Value)> = None;
            for (node, answer) in &asked.answers {
                let Ok(v) = answer else { continue };
                if v["owns"].as_bool() == Some(true) {
                    owners.push(node.clone());
                }
                let seq = v["sequence"].as_u64().unwrap_or(0);
                if seq > best.as_ref().map_or(0, |b| b.1) {
                    best = Some((node.clone(), seq, v["edges"].clone()));
                }
            }
            let refused: Vec<&String> = asked
                .answers
                .iter()
                .filter(|(_, a)| a.is_err())
                .map(|(n, _)| n)
                .collect();
            let wait = if !owners.is_empty() {
                Some(format!(
                    "partition {} is still read by {} (remove it from its partitions first)",
                    self.token,
                    owners.join(", ")
                ))
            } else if !self.known && (!asked.missing.is_empty() || !refused.is_empty()) {
                Some(format!(
                    "partition {} was never read here: waiting for {} to say where they left it",
                    self.token,
                    asked
                        .missing
                        .iter()
                        .chain(refused.iter().copied())
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            } else {
                None
            };
            if let Some(why) = wait {
                if said.as_deref() != Some(why.as_str()) {
                    tracing::warn!(source = %self.name, "NATS: {why}");
                    said = Some(why.clone());
                }
                self.publish("waiting", Some(&why));
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stopped(stop) => return Err(End::Stopped),
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
            if let Some((node, seq, edges)) = best
                && seq > self.seq
            {
                tracing::info!(source = %self.name, partition = %self.token, from = %node,
                    "NATS: taking the partition over after sequence {seq} (was {})", self.seq);
                self.seq = seq;
                for (edge, at) in edges.as_object().into_iter().flatten() {
                    let Some(at) = at.as_u64() else { continue };
                    if self.edges.get(edge).is_none_or(|&mine| at > mine) {
                        self.edges.insert(edge.clone(), at);
                        self.changed.insert(edge.clone(), at);
                    }
                }
                self.force = true;
                self.flush().await?;
            }
            return Ok(());
        }
    }

    /// Reads the partition from `seq + 1` until the subscription fails (`Ok(Err)`) or the
    /// daemon stops (`Err`).
    async fn read(
        &mut self,
        js: &jetstream::Context,
        stream: &str,
        prefix: &str,
        max_age: Duration,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<Result<(), String>, End> {
        let s = match ensure_stream(js, stream, prefix, max_age).await {
            Ok(s) => s,
            Err(e) => return Ok(Err(format!("stream {stream}: {e}"))),
        };
        let deliver_policy = if self.seq == 0 {
            DeliverPolicy::All
        } else {
            DeliverPolicy::ByStartSequence {
                start_sequence: self.seq + 1,
            }
        };
        let consumer = match s
            .create_consumer(OrderedConfig {
                filter_subject: self.subject.clone(),
                deliver_policy,
                ..Default::default()
            })
            .await
        {
            Ok(c) => c,
            Err(e) => return Ok(Err(format!("consumer on {}: {e}", self.subject))),
        };
        let mut messages = match consumer.messages().await {
            Ok(m) => m,
            Err(e) => return Ok(Err(format!("reading {}: {e}", self.subject))),
        };
        self.publish("ok", None);
        loop {
            let flush_at = self.first_pending.map(|t| t + FLUSH_AFTER);
            tokio::select! {
                biased;
                () = stopped(stop) => return Err(End::Stopped),
                () = sleep_until_some(flush_at) => self.flush().await?,
                m = messages.next() => match m {
                    Some(Ok(m)) => {
                        self.apply(&m);
                        if self.pending_bytes >= FLUSH_BYTES {
                            self.flush().await?;
                        }
                    }
                    Some(Err(e)) => {
                        self.flush().await?;
                        return Ok(Err(e.to_string()));
                    }
                    None => {
                        self.flush().await?;
                        return Ok(Err("the subscription ended".into()));
                    }
                },
            }
        }
    }

    /// Folds one message, unless its sequence was applied already.
    fn apply(&mut self, m: &jetstream::Message) {
        let Ok(info) = m.info() else {
            return;
        };
        let seq = info.stream_sequence;
        if seq <= self.seq {
            return;
        }
        self.seq = seq;
        self.pending_messages += 1;
        self.pending_bytes += m.payload.len();
        self.first_pending.get_or_insert_with(Instant::now);
        match self.payload {
            NatsFormat::Raw => self.apply_raw(&m.payload),
            NatsFormat::Sentinel => self.apply_edge(&m.payload, seq),
        }
    }

    fn apply_raw(&mut self, payload: &[u8]) {
        self.region.clear();
        for line in payload.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.trim_ascii().is_empty() {
                continue;
            }
            match shipped_message(line) {
                Some(text) => self.region.extend(
                    text.bytes()
                        .map(|b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
                ),
                None => self.region.extend_from_slice(line),
            }
            self.region.push(b'\n');
        }
        if !self.region.is_empty() {
            self.folder.scan_region(&self.region);
        }
    }

    fn apply_edge(&mut self, payload: &[u8], seq: u64) {
        let msg = match wire::EdgeMessage::decode(payload) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(source = %self.name, partition = %self.token, seq,
                    "not a Sentinel edge message ({e}); skipped");
                return;
            }
        };
        if msg.unpositioned {
            for l in &msg.lines {
                self.folder
                    .add_error_keyed(l.line.as_bytes(), l.key.as_deref().map(str::as_bytes));
            }
            return;
        }
        let last = self.edges.get(&msg.edge).copied();
        let mut reached = last;
        for l in &msg.lines {
            if reached.is_some_and(|r| l.at <= r) {
                self.skipped_lines += 1;
                continue;
            }
            reached = Some(l.at);
            self.folder.add_error(l.line.as_bytes());
        }
        if let Some(r) = reached
            && Some(r) != last
        {
            self.edges.insert(msg.edge.clone(), r);
            self.changed.insert(msg.edge, r);
        }
    }

    /// Sends what was folded, with the partition's sequence and the edge positions moved,
    /// to the writer (one transaction).
    async fn flush(&mut self) -> Result<(), End> {
        if self.pending_messages == 0 && !std::mem::take(&mut self.force) {
            self.first_pending = None;
            return Ok(());
        }
        let mut batch = self.folder.take();
        batch
            .totals
            .insert("nats_messages", std::mem::take(&mut self.pending_messages));
        let skipped = std::mem::take(&mut self.skipped_lines);
        if skipped > 0 {
            batch.totals.insert("nats_lines_skipped", skipped);
        }
        batch
            .source_positions
            .insert(self.key.clone(), position::encode(self.seq));
        for (edge, at) in std::mem::take(&mut self.changed) {
            batch
                .source_positions
                .insert(position::edge_key(&self.key, &edge), position::encode(at));
        }
        self.pending_bytes = 0;
        self.first_pending = None;
        let fb = FileBatch {
            source: self.folder.name().clone(),
            batch,
            positions: Vec::new(),
            forget: Vec::new(),
            forward: Vec::new(),
        };
        let writer = self.writer.clone();
        // The writer's queue is bounded: a blocking send, off the async workers.
        match tokio::task::spawn_blocking(move || writer.send_files(fb)).await {
            Ok(Ok(())) => {
                self.publish("ok", None);
                Ok(())
            }
            _ => Err(End::WriterGone),
        }
    }

    fn publish(&self, state: &str, error: Option<&str>) {
        let mut fields = self.board.get(&self.name);
        let mut parts = fields
            .remove("partitions")
            .and_then(|v| match v {
                serde_json::Value::Object(m) => Some(m),
                _ => None,
            })
            .unwrap_or_default();
        parts.insert(
            self.token.clone(),
            json!({"state": state, "error": error, "applied_sequence": self.seq}),
        );
        let worst = parts
            .values()
            .filter_map(|p| p.get("state").and_then(|s| s.as_str()))
            .find(|s| *s != "ok")
            .unwrap_or("ok")
            .to_string();
        self.board.set(
            &self.name,
            json!({"state": worst, "error": error, "partitions": parts}),
        );
    }
}

/// This node's answer to the cluster's `position` question (see
/// [`crate::cluster`]): the last sequence applied of partition `partition` of the NATS
/// sources reading `stream` / `prefix`, their edge positions there, and whether one of them
/// reads it now (`owns`).
///
/// # Errors
///
/// An unreadable store or position.
pub fn local_position(
    store: &crate::store::Store,
    config: &crate::config::Config,
    stream: &str,
    prefix: &str,
    partition: &str,
) -> Result<serde_json::Value, String> {
    let mut sequence = 0u64;
    let mut edges: BTreeMap<String, u64> = BTreeMap::new();
    let mut owns = false;
    for src in &config.sources {
        let SourceConfig::Nats(src) = src else {
            continue;
        };
        if src.stream != stream || src.subject_prefix != prefix {
            continue;
        }
        owns |= src.partitions.iter().any(|p| p == partition);
        let key = position::partition_key(&src.common.name, partition);
        for (k, v) in store.source_positions(&key).map_err(|e| e.to_string())? {
            let at = position::decode(&v)?;
            match k.strip_prefix(&key) {
                Some("") => sequence = sequence.max(at),
                Some(edge) => {
                    let e = edges.entry(edge.to_string()).or_default();
                    *e = (*e).max(at);
                }
                None => {}
            }
        }
    }
    Ok(json!({"sequence": sequence, "edges": edges, "owns": owns}))
}

/// Completes when the daemon stops (the guard `wait_for` returns is not held across awaits).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[derive(serde::Deserialize)]
struct Shipped<'a> {
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    log: Option<Cow<'a, str>>,
}

/// The line a shipper's JSON record carries (`message`, Vector's; `log`, Fluent Bit's), or
/// None when `line` is not such a record (then it is the line itself).
fn shipped_message(line: &[u8]) -> Option<Cow<'_, str>> {
    if !line.trim_ascii_start().starts_with(b"{") {
        return None;
    }
    let r: Shipped<'_> = serde_json::from_slice(line).ok()?;
    r.message.or(r.log)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipper_records_are_unwrapped() {
        assert_eq!(
            shipped_message(br#"{"message":"ERROR a","host":"h"}"#).as_deref(),
            Some("ERROR a")
        );
        assert_eq!(
            shipped_message(br#"{"log":"ERROR \"b\""}"#).as_deref(),
            Some("ERROR \"b\"")
        );
        assert_eq!(shipped_message(br#"{"level":"ERROR"}"#), None);
        assert_eq!(shipped_message(b"ERROR plain"), None);
    }
}
