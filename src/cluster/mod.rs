//! One view of a scale-out cluster: with `cluster: {nats: URL}` every daemon answers the
//! cluster's questions over NATS request-reply, and the API of any of them answers for all
//! (`GET /incidents`, `GET /incidents/{id}`, `GET /metrics.json`, `sentinel report
//! --cluster`). No home-made clustering: NATS carries the questions, each node answers
//! from its own store.
//!
//! **Subjects** (`<prefix>` is `cluster.subject_prefix`, default `sentinel.cluster`):
//!
//! | subject | what |
//! |---|---|
//! | `<prefix>.hello` | `{"node", "new"}`: a node announces itself at start (`new: true`, every other node then announces itself at once) and every [`HELLO_INTERVAL`] |
//! | `<prefix>.ask` | `{"op", "from", "args"}`, with a reply subject: every node but the asker answers `{"node", "ok": ...}` or `{"node", "error": {"code", "message"}}` |
//!
//! The operations: `incidents` (a page of the node's incidents, `args.params` the query
//! of `GET /incidents`, `args.cursors` a cursor per node), `incident` (`args.id`: the
//! incident with its timeline, or `null`), `metrics` (the node's `/metrics.json`) and
//! `position` (`args.stream`, `args.subject_prefix`, `args.partition`: the last sequence a
//! node applied of a NATS partition, and its edge positions; see [`crate::source::nats`]'s
//! hand-off).
//!
//! **Who must answer.** The asker expects every node it has heard from since it started
//! (hellos, answers) and every node `cluster.nodes` lists; the answers are collected until
//! each expected node answered or `cluster.timeout_ms` passed. An expected node that did not
//! answer is **named** (`missing_nodes`), never silently left out; a node that answers
//! without being expected is taken in (and expected from then on). The asker answers for
//! itself from its own store, so with NATS down the API still answers for its node and
//! names the others.
//!
//! **Sizes.** An answer is one NATS message (the server's `max_payload`, 1 MiB by default):
//! a page of incidents that would not fit is halved until it does (the node's cursor says
//! where its next page starts, so nothing is skipped).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::config::{ClusterConfig, Config};
use crate::store::Store;

/// How often a node announces itself.
pub const HELLO_INTERVAL: Duration = Duration::from_secs(5);

/// What a node answers from: its store and its configuration.
#[derive(Debug, Clone)]
pub struct Local {
    /// The node's store.
    pub store: Arc<Store>,
    /// The live rules (the manifest, for `components_registered`).
    pub rules: Arc<crate::attribute::LiveRules>,
    /// The configuration (its NATS sources, for `position`).
    pub config: Arc<Config>,
}

/// A node's refusal: its error code and message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Refused {
    /// The code (`invalid_query`, `store_unavailable`, ...).
    pub code: String,
    /// What went wrong.
    pub message: String,
}

/// The answers to one question.
#[derive(Debug, Default)]
pub struct Asked {
    /// Each node that answered (the asker not included), with its answer.
    pub answers: BTreeMap<String, Result<Value, Refused>>,
    /// The expected nodes that did not answer in time, sorted.
    pub missing: Vec<String>,
}

/// The running cluster member: answers the others, asks them.
#[derive(Debug)]
pub struct Cluster {
    node: String,
    prefix: String,
    timeout: Duration,
    configured: Vec<String>,
    client: async_nats::Client,
    /// The other nodes heard from since start.
    roster: Mutex<BTreeSet<String>>,
}

impl Cluster {
    /// Connects (in the background: the connection is made and remade forever) and starts
    /// answering the cluster's questions from `local` until `stop` turns true.
    ///
    /// # Errors
    ///
    /// A malformed URL.
    pub async fn start(
        cfg: &ClusterConfig,
        local: Local,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<Arc<Cluster>> {
        let client =
            crate::source::nats::connect(&cfg.nats, &format!("sentinel node {}", cfg.node))
                .await
                .map_err(|e| anyhow::anyhow!("cluster.nats: {e}"))?;
        let cluster = Arc::new(Cluster {
            node: cfg.node.clone(),
            prefix: cfg.subject_prefix.clone(),
            timeout: cfg.timeout,
            configured: cfg
                .nodes
                .iter()
                .filter(|n| **n != cfg.node)
                .cloned()
                .collect(),
            client,
            roster: Mutex::new(BTreeSet::new()),
        });
        let asks = cluster
            .client
            .subscribe(format!("{}.ask", cluster.prefix))
            .await
            .map_err(|e| anyhow::anyhow!("cluster: subscribing: {e}"))?;
        let hellos = cluster
            .client
            .subscribe(format!("{}.hello", cluster.prefix))
            .await
            .map_err(|e| anyhow::anyhow!("cluster: subscribing: {e}"))?;
        tokio::spawn(cluster.clone().serve(asks, hellos, local, stop));
        tracing::info!(node = %cfg.node, nats = %cfg.nats, "answering for the cluster");
        Ok(cluster)
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The other nodes expected to answer: those `cluster.nodes` lists and those heard from.
    pub fn expected(&self) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self.configured.iter().cloned().collect();
        out.extend(self.lock_roster().iter().cloned());
        out
    }

    fn lock_roster(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.roster
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn heard(&self, node: &str) {
        if node != self.node && !node.is_empty() {
            self.lock_roster().insert(node.to_string());
        }
    }

    async fn hello(&self, new: bool) {
        let body = json!({"node": self.node, "new": new}).to_string();
        let _ = self
            .client
            .publish(format!("{}.hello", self.prefix), body.into())
            .await;
    }

    async fn serve(
        self: Arc<Self>,
        mut asks: async_nats::Subscriber,
        mut hellos: async_nats::Subscriber,
        local: Local,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        self.hello(true).await;
        let mut tick = tokio::time::interval(HELLO_INTERVAL);
        tick.tick().await;
        loop {
            tokio::select! {
                () = stopped(&mut stop) => return,
                _ = tick.tick() => self.hello(false).await,
                m = hellos.next() => {
                    let Some(m) = m else { return };
                    let Ok(v) = serde_json::from_slice::<Value>(&m.payload) else { continue };
                    let node = v["node"].as_str().unwrap_or_default();
                    if node == self.node {
                        continue;
                    }
                    self.heard(node);
                    if v["new"].as_bool() == Some(true) {
                        self.hello(false).await;
                    }
                }
                m = asks.next() => {
                    let Some(m) = m else { return };
                    let Some(reply) = m.reply.clone() else { continue };
                    let Ok(q) = serde_json::from_slice::<Value>(&m.payload) else { continue };
                    let from = q["from"].as_str().unwrap_or_default();
                    if from == self.node {
                        continue;
                    }
                    self.heard(from);
                    let me = self.clone();
                    let local = local.clone();
                    tokio::spawn(async move {
                        let body = me.answer(&q, &local).await;
                        let _ = me.client.publish(reply, body.into()).await;
                        let _ = me.client.flush().await;
                    });
                }
            }
        }
    }

    /// This node's answer to `q`, encoded.
    async fn answer(&self, q: &Value, local: &Local) -> Vec<u8> {
        let max = self.client.server_info().max_payload.max(64 << 10) - 1024;
        let args = &q["args"];
        let result = match q["op"].as_str().unwrap_or_default() {
            "incidents" => {
                let mut params = params_of(&args["params"]);
                let cursor = args["cursors"][&self.node].as_str().map(str::to_string);
                if cursor.as_deref() == Some(END) {
                    Ok(json!({"incidents": [], "next_cursor": null}))
                } else {
                    if let Some(c) = cursor {
                        params.push(("cursor".into(), c));
                    }
                    // Halve the page until it fits in one message.
                    let mut limit = limit_of(&params);
                    loop {
                        let mut p = params.clone();
                        p.retain(|(k, _)| k != "limit");
                        p.push(("limit".into(), limit.to_string()));
                        match crate::api::local_incidents(&local.store, &p).await {
                            Ok(v) => {
                                let body = envelope(&self.node, Ok(v.clone()));
                                if body.len() <= max || limit == 1 {
                                    break Ok(v);
                                }
                                limit = (limit / 2).max(1);
                            }
                            Err(e) => break Err(e),
                        }
                    }
                }
            }
            "incident" => {
                let id = args["id"].as_str().unwrap_or_default().to_string();
                crate::api::local_incident(&local.store, &id).await
            }
            "metrics" => crate::api::local_metrics(&local.store, &local.rules).await,
            "position" => {
                let (store, config) = (local.store.clone(), local.config.clone());
                let field = |k: &str| args[k].as_str().unwrap_or_default().to_string();
                let (stream, prefix, partition) =
                    (field("stream"), field("subject_prefix"), field("partition"));
                match tokio::task::spawn_blocking(move || {
                    crate::source::nats::local_position(
                        &store, &config, &stream, &prefix, &partition,
                    )
                })
                .await
                {
                    Ok(Ok(v)) => Ok(v),
                    Ok(Err(e)) => Err(Refused {
                        code: "store_unavailable".into(),
                        message: e,
                    }),
                    Err(e) => Err(Refused {
                        code: "internal".into(),
                        message: e.to_string(),
                    }),
                }
            }
            other => Err(Refused {
                code: "unknown_op".into(),
                message: format!("no operation {other:?}"),
            }),
        };
        let body = envelope(&self.node, result);
        if body.len() > max {
            return envelope(
                &self.node,
                Err(Refused {
                    code: "too_large".into(),
                    message: format!("the answer ({} bytes) exceeds max_payload", body.len()),
                }),
            );
        }
        body
    }

    /// Asks every other node `op` and collects their answers for at most the timeout (less
    /// when every expected node answered). `also` are nodes to expect besides the usual
    /// ones (the nodes a cursor names).
    pub async fn ask(&self, op: &str, args: Value, also: &[String]) -> Asked {
        let mut expected = self.expected();
        expected.extend(also.iter().filter(|n| **n != self.node).cloned());
        let mut asked = Asked::default();
        let inbox = self.client.new_inbox();
        let question = json!({"op": op, "from": self.node, "args": args}).to_string();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let sent = async {
            let sub = self.client.subscribe(inbox.clone()).await.ok()?;
            self.client
                .publish_with_reply(format!("{}.ask", self.prefix), inbox, question.into())
                .await
                .ok()?;
            self.client.flush().await.ok()?;
            Some(sub)
        };
        if let Ok(Some(mut sub)) = tokio::time::timeout_at(deadline, sent).await {
            loop {
                if !expected.is_empty() && expected.iter().all(|n| asked.answers.contains_key(n)) {
                    break;
                }
                match tokio::time::timeout_at(deadline, sub.next()).await {
                    Ok(Some(m)) => {
                        let Ok(v) = serde_json::from_slice::<Value>(&m.payload) else {
                            continue;
                        };
                        let Some(node) = v["node"].as_str().map(str::to_string) else {
                            continue;
                        };
                        if node == self.node {
                            continue;
                        }
                        self.heard(&node);
                        let result = match v.get("error") {
                            Some(e) => Err(Refused {
                                code: e["code"].as_str().unwrap_or_default().to_string(),
                                message: e["message"].as_str().unwrap_or_default().to_string(),
                            }),
                            None => Ok(v.get("ok").cloned().unwrap_or(Value::Null)),
                        };
                        asked.answers.insert(node, result);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            let _ = sub.unsubscribe().await;
        }
        asked.missing = expected
            .into_iter()
            .filter(|n| !asked.answers.contains_key(n))
            .collect();
        asked
    }
}

/// Completes when the daemon stops (the guard `wait_for` returns is not held across awaits).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// A node's cursor once it has nothing more to give.
pub const END: &str = "end";

fn envelope(node: &str, result: Result<Value, Refused>) -> Vec<u8> {
    match result {
        Ok(v) => json!({"node": node, "ok": v}),
        Err(e) => json!({"node": node, "error": {"code": e.code, "message": e.message}}),
    }
    .to_string()
    .into_bytes()
}

/// `[[k, v], ...]` as query pairs.
pub fn params_of(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| {
                    Some((
                        p.get(0)?.as_str()?.to_string(),
                        p.get(1)?.as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn limit_of(params: &[(String, String)]) -> usize {
    params
        .iter()
        .rev()
        .find(|(k, _)| k == "limit")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(crate::api::DEFAULT_INCIDENT_LIMIT)
}

/// The cluster cursor of `GET /incidents`: a position per node (its own cursor, or
/// [`END`]), as base64url (no padding) of `{"v": 1, "nodes": {...}}`.
pub fn encode_cursor(nodes: &BTreeMap<String, String>) -> String {
    base64url(json!({"v": 1, "nodes": nodes}).to_string().as_bytes())
}

/// [`encode_cursor`]'s input back, or None for anything else.
pub fn decode_cursor(c: &str) -> Option<BTreeMap<String, String>> {
    let bytes = unbase64url(c)?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    if v["v"] != 1 {
        return None;
    }
    v["nodes"]
        .as_object()?
        .iter()
        .map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect()
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn base64url(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn unbase64url(s: &str) -> Option<Vec<u8>> {
    if s.len() % 4 == 1 || s.len() > 64 << 10 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.as_bytes().chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            let v = B64.iter().position(|b| b == c)? as u32;
            n |= v << (18 - 6 * i);
        }
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        for n in 0..8 {
            let mut nodes = BTreeMap::new();
            for i in 0..n {
                nodes.insert(format!("node-{i}"), format!("c1{:032x}", i * 7919));
            }
            nodes.insert("done".into(), END.into());
            let c = encode_cursor(&nodes);
            assert!(c.bytes().all(|b| B64.contains(&b)), "{c}");
            assert_eq!(decode_cursor(&c), Some(nodes));
        }
        for bad in [
            "",
            "abc",
            "c1zz",
            "!!!!",
            &base64url(b"{\"v\": 2, \"nodes\": {}}"),
        ] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
        for len in 0..40 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(unbase64url(&base64url(&data)), Some(data));
        }
    }
}
