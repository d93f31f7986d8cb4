//! One view of a scale-out cluster (`cluster: {nats: URL}`) and the hand-off of a NATS
//! partition between aggregators, against a real `nats-server` (see `nats.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Workspace, eventually, http, stdout};
use crate::nats::{NatsServer, client, counts, runtime};

/// An aggregator of partitions `partitions` with the API on a free port, node `node`.
fn node_config(url: &str, node: &str, partitions: &str, api: bool) -> String {
    let api = if api {
        "api:\n  listen: 127.0.0.1:0\n"
    } else {
        ""
    };
    format!(
        "state_dir: state\n{api}cluster:\n  nats: {url}\n  node: {node}\n  timeout_ms: 1500\n\
         sources:\n  - type: nats\n    name: cluster\n    url: {url}\n    stream: SENTINEL\n    \
         subject_prefix: sentinel.errors\n    partitions: {partitions}\n"
    )
}

/// Publishes `n` edge messages of one line each to partition `p` (edge source `edge`,
/// positions from `from`), the lines keyed `PACT:<svc>:op<i mod 3>`; adds them to
/// `expected`.
fn publish(
    rt: &tokio::runtime::Runtime,
    url: &str,
    (p, edge): (u32, &str),
    (from, n): (u64, u64),
    svc: &str,
    expected: &mut BTreeMap<String, u64>,
) {
    use sentinel::source::nats::wire::{EdgeLine, EdgeMessage, VERSION};
    rt.block_on(async {
        let nc = client(url).await;
        let js = async_nats::jetstream::new(nc);
        sentinel::source::nats::ensure_stream(
            &js,
            "SENTINEL",
            "sentinel.errors",
            Duration::from_secs(3600),
        )
        .await
        .expect("stream");
        let mut acks = Vec::new();
        for i in from..from + n {
            let key = format!("PACT:{svc}:op{}", i % 3);
            *expected.entry(key.clone()).or_default() += 1;
            let msg = EdgeMessage {
                v: VERSION,
                edge: edge.into(),
                unpositioned: false,
                lines: vec![EdgeLine {
                    at: i + 1,
                    t: 0,
                    fp: String::new(),
                    key: None,
                    line: format!("ERROR [{key}] request {i} failed"),
                }],
            };
            acks.push(
                js.publish(format!("sentinel.errors.{p}"), msg.encode().into())
                    .await
                    .expect("publish"),
            );
        }
        for a in acks {
            a.await.expect("ack");
        }
    });
}

fn get(url: &str) -> (u16, Value) {
    let r = http().get(url).send().expect("GET");
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn total_of(ws: &Workspace, k: &str) -> u64 {
    counts(ws).1.get(k).copied().unwrap_or(0)
}

/// Two aggregators on one nats-server, each with incidents of its own partitions: the API
/// of either answers for both (incidents merged by last seen, paged with a cursor per node;
/// an incident of the other node by id; metrics per node and summed; `report --cluster`).
/// One aggregator killed with SIGKILL: within the timeout the other's answers name it in
/// `missing_nodes` (and `report --cluster` in a line), never silently leave it out.
#[test]
fn cluster_api_answers_for_every_node_and_names_a_killed_one() {
    let Some(server) = NatsServer::start("cluster_view") else {
        return;
    };
    let rt = runtime();
    let mut expected = BTreeMap::new();
    publish(
        &rt,
        &server.url,
        (0, "e/app/1"),
        (0, 30),
        "alpha",
        &mut expected,
    );
    publish(
        &rt,
        &server.url,
        (2, "e/app/2"),
        (0, 40),
        "beta",
        &mut expected,
    );
    let a = Workspace::with_config(&node_config(&server.url, "agg-a", "[0, 1]", true));
    let b = Workspace::with_config(&node_config(&server.url, "agg-b", "[2, 3]", true));
    let mut da = a.spawn(&["watch"]);
    let ia = da.ready();
    let mut db = b.spawn(&["watch"]);
    let ib = db.ready();
    let applied = eventually(Duration::from_secs(30), || {
        (total_of(&a, "nats_messages") == 30 && total_of(&b, "nats_messages") == 40).then_some(())
    });
    assert!(
        applied.is_some(),
        "not applied:\n{}\n-----\n{}",
        da.log_text(),
        db.log_text()
    );
    let local_ids = |ws: &Workspace| -> BTreeSet<String> {
        ws.store()
            .expect("store")
            .find_incidents(&Default::default(), 1000)
            .expect("incidents")
            .into_iter()
            .map(|i| i.id)
            .collect()
    };
    let (ids_a, ids_b) = (local_ids(&a), local_ids(&b));
    assert_eq!((ids_a.len(), ids_b.len()), (3, 3));

    // Either API lists every incident of both nodes, each with its node, newest first.
    for (info, name) in [(&ia, "agg-a"), (&ib, "agg-b")] {
        let (st, v) = get(&info.api_url("/incidents"));
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["missing_nodes"], serde_json::json!([]), "{v}");
        assert_eq!(v["nodes"][0], name);
        let list = v["incidents"].as_array().unwrap();
        assert_eq!(list.len(), 6, "{v}");
        for inc in list {
            let id = inc["id"].as_str().unwrap();
            let node = if ids_a.contains(id) { "agg-a" } else { "agg-b" };
            assert_eq!(inc["node"], node, "{inc}");
        }
        let seen: Vec<&str> = list
            .iter()
            .map(|i| i["last_seen"].as_str().unwrap())
            .collect();
        let mut sorted = seen.clone();
        sorted.sort_by(|x, y| {
            y.parse::<jiff::Timestamp>()
                .unwrap()
                .cmp(&x.parse::<jiff::Timestamp>().unwrap())
        });
        assert_eq!(seen, sorted, "merged by last seen");
    }
    // Pages of 1, 2 and 4 with the cluster cursor: every incident once.
    for limit in [1, 2, 4] {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..20 {
            let q = match &cursor {
                Some(c) => format!("/incidents?limit={limit}&cursor={c}"),
                None => format!("/incidents?limit={limit}"),
            };
            let (st, v) = get(&ia.api_url(&q));
            assert_eq!(st, 200, "{v}");
            for i in v["incidents"].as_array().unwrap() {
                all.push(i["id"].as_str().unwrap().to_string());
            }
            match v["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        let unique: BTreeSet<String> = all.iter().cloned().collect();
        assert_eq!(all.len(), 6, "limit {limit}: {all:?}");
        assert_eq!(unique, ids_a.union(&ids_b).cloned().collect());
    }
    // A filter goes to every node.
    let (_, v) = get(&ia.api_url("/incidents?component=beta"));
    assert_eq!(v["incidents"].as_array().unwrap().len(), 3, "{v}");
    let (st, v) = get(&ia.api_url("/incidents?cursor=nonsense"));
    assert_eq!(
        (st, &v["error"]["code"]),
        (400, &serde_json::json!("invalid_query"))
    );

    // One of b's incidents, by id, through a's API.
    let b_id = ids_b.iter().next().unwrap();
    let (st, v) = get(&ia.api_url(&format!("/incidents/{b_id}")));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["node"], "agg-b");
    assert_eq!(v["id"], b_id.as_str());
    assert!(v["timeline"].is_array(), "{v}");
    let (st, _) = get(&ia.api_url("/incidents/000000000000"));
    assert_eq!(st, 404);

    // Metrics: per node and summed.
    let (st, m) = get(&ib.api_url("/metrics.json"));
    assert_eq!(st, 200, "{m}");
    assert_eq!(m["total_incidents"], 6, "{m}");
    assert_eq!(m["nodes"]["agg-a"]["total_incidents"], 3, "{m}");
    assert_eq!(m["nodes"]["agg-b"]["total_incidents"], 3, "{m}");
    assert_eq!(m["missing_nodes"], serde_json::json!([]));

    let out = a.run(&["report", "--cluster"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("2 node(s) answered (agg-a, agg-b)"), "{text}");
    assert!(
        text.contains("node=agg-b") && text.contains("node=agg-a"),
        "{text}"
    );

    // b killed: a names it within the timeout (1.5 s), and answers for itself.
    db.kill9();
    let t = Instant::now();
    let (st, v) = get(&ia.api_url("/incidents"));
    let took = t.elapsed();
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["missing_nodes"], serde_json::json!(["agg-b"]), "{v}");
    assert_eq!(v["incidents"].as_array().unwrap().len(), 3, "{v}");
    assert!(took < Duration::from_millis(1500 + 1000), "{took:?}");
    let (_, m) = get(&ia.api_url("/metrics.json"));
    assert_eq!(m["missing_nodes"], serde_json::json!(["agg-b"]), "{m}");
    assert_eq!(m["total_incidents"], 3, "{m}");
    let (st, v) = get(&ia.api_url(&format!("/incidents/{b_id}")));
    assert_eq!(st, 404, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("agg-b"),
        "{v}"
    );
    let out = a.run(&["report", "--cluster"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("MISSING: node agg-b"), "{text}");
    let status = da.term(Duration::from_secs(15));
    assert!(status.success(), "{status}");
}

/// A partition moved from one aggregator's `partitions` to another's: the new owner asks
/// the cluster where the old one left it and starts after that sequence (with its edge
/// positions), so every line is applied exactly once; while the old owner still reads the
/// partition, the new one waits.
#[test]
fn a_partition_handed_to_another_aggregator_is_applied_exactly_once() {
    let Some(server) = NatsServer::start("cluster_handoff") else {
        return;
    };
    let rt = runtime();
    let mut expected = BTreeMap::new();
    publish(
        &rt,
        &server.url,
        (1, "e/app/1"),
        (0, 50),
        "moved",
        &mut expected,
    );
    publish(
        &rt,
        &server.url,
        (2, "e/app/2"),
        (0, 20),
        "stays",
        &mut expected,
    );
    let a = Workspace::with_config(&node_config(&server.url, "agg-a", "[0, 1]", false));
    let b = Workspace::with_config(&node_config(&server.url, "agg-b", "[2, 3]", false));
    let mut da = a.spawn(&["watch", "--no-api"]);
    da.ready();
    let mut db = b.spawn(&["watch", "--no-api"]);
    db.ready();
    let ok = eventually(Duration::from_secs(30), || {
        (total_of(&a, "nats_messages") == 50 && total_of(&b, "nats_messages") == 20).then_some(())
    });
    assert!(ok.is_some(), "{}\n-----\n{}", da.log_text(), db.log_text());

    // b is given partition 1 while a still reads it: b waits for a to let it go.
    let status = db.term(Duration::from_secs(15));
    assert!(status.success());
    b.file(
        "sentinel.yaml",
        node_config(&server.url, "agg-b", "[1, 2, 3]", false),
    );
    let mut db = b.spawn(&["watch", "--no-api"]);
    db.ready();
    let waiting = eventually(Duration::from_secs(20), || {
        db.log_text()
            .contains("is still read by agg-a")
            .then_some(())
    });
    assert!(waiting.is_some(), "{}", db.log_text());
    publish(
        &rt,
        &server.url,
        (1, "e/app/1"),
        (50, 25),
        "moved",
        &mut expected,
    );
    let ok = eventually(Duration::from_secs(30), || {
        (total_of(&a, "nats_messages") == 75).then_some(())
    });
    assert!(ok.is_some(), "{}", da.log_text());
    // a lets partition 1 go (restarted without it); b takes it over after a's sequence.
    let status = da.term(Duration::from_secs(15));
    assert!(status.success());
    a.file(
        "sentinel.yaml",
        node_config(&server.url, "agg-a", "[0]", false),
    );
    let mut da = a.spawn(&["watch", "--no-api"]);
    da.ready();
    publish(
        &rt,
        &server.url,
        (1, "e/app/1"),
        (75, 25),
        "moved",
        &mut expected,
    );
    let cluster = || {
        let mut keys: BTreeMap<String, u64> = BTreeMap::new();
        for ws in [&a, &b] {
            for (k, n) in counts(ws).0 {
                *keys.entry(k).or_default() += n;
            }
        }
        keys
    };
    let done = eventually(Duration::from_secs(40), || {
        (total_of(&b, "nats_messages") >= 20 + 25).then_some(())
    });
    assert!(
        done.is_some(),
        "{:?}\n{}\n-----\n{}",
        counts(&b),
        da.log_text(),
        db.log_text()
    );
    assert!(
        db.log_text()
            .contains("taking the partition over after sequence"),
        "{}",
        db.log_text()
    );
    // The counts are exact, and the applied totals below account for every one of the 120
    // messages published (75 + 45): nothing is left to arrive late.
    assert_eq!(cluster(), expected, "each line counted exactly once");
    assert_eq!(
        total_of(&a, "nats_messages"),
        75,
        "a applied what it read before"
    );
    assert_eq!(
        total_of(&b, "nats_messages"),
        20 + 25,
        "b applied only what came after"
    );
    for d in [da, db] {
        let status = d.term(Duration::from_secs(15));
        assert!(status.success(), "{status}");
    }
}

/// An edge's webhook forwards to JetStream: 2xx after the acknowledgement (the edge counts
/// nothing itself), 503 naming the problem with `Retry-After` while the server is down, 2xx
/// again once it is back. A sender retries each 503'd request, with its event ids, until it
/// is 2xx'd, and every event is counted by the aggregator exactly once: a request retried
/// with the same ids counts nothing again, including one whose 503 came after its messages
/// were sent (the server died under them, and the client sent them again on reconnecting).
#[test]
fn edge_webhooks_answer_503_while_nats_is_down_and_count_2xx_events_exactly_once() {
    let Some(mut server) = NatsServer::start("edge_webhooks") else {
        return;
    };
    let edge = Workspace::with_config(&format!(
        "state_dir: state\nsources:\n  - type: webhook\n    name: hook\n    port: 0\n\
         forward:\n  nats:\n    url: {}\n    partitions: 4\n    edge: edge-w\n",
        server.url
    ));
    let agg = Workspace::with_config(&node_config(&server.url, "agg", "[0, 1, 2, 3]", false));
    let mut de = edge.spawn(&["watch", "--no-api"]);
    let info = de.ready();
    let mut da = agg.spawn(&["watch", "--no-api"]);
    da.ready();
    let url = info.webhook_url("hook");
    let c = http();
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    let mut next = 0u64;
    let mut body = |expected: &mut BTreeMap<String, u64>, count: bool| {
        let mut events = Vec::new();
        for _ in 0..5 {
            let key = format!("PACT:hook_{}:op{}", next % 3, next % 2);
            if count {
                *expected.entry(key.clone()).or_default() += 1;
            }
            events.push(serde_json::json!({
                "message": format!("ERROR [{key}] event {next} failed"),
                "event_id": format!("ev-{next}"),
            }));
            next += 1;
        }
        Value::Array(events).to_string()
    };
    let send = |b: &str| {
        let r = c
            .post(&url)
            .header("content-type", "application/json")
            .body(b.to_string())
            .send()
            .expect("POST");
        let retry = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        (
            r.status().as_u16(),
            retry,
            r.json::<Value>().unwrap_or(Value::Null),
        )
    };
    // The edge connects in the background: the first request is retried, as a sender
    // would after a 503, until it is acknowledged.
    let first = body(&mut expected, true);
    let ok = eventually(Duration::from_secs(20), || {
        (send(&first).0 == 200).then_some(())
    });
    assert!(ok.is_some(), "{}", de.log_text());
    for _ in 0..3 {
        let b = body(&mut expected, true);
        let (st, _, v) = send(&b);
        assert_eq!(st, 200, "{v}\n{}", de.log_text());
        assert_eq!(v["accepted"], 5, "{v}");
    }
    // The same request again (same event ids): acknowledged, nothing counted again.
    let again = body(&mut expected, true);
    assert_eq!(send(&again).0, 200);
    let (st, _, v) = send(&again);
    assert_eq!((st, &v["duplicates"]), (200, &serde_json::json!(5)), "{v}");

    // The server goes away: 503 with Retry-After and a body naming the problem. Every
    // request is kept for the sender's retry; until the edge sees the connection gone one
    // may still be 2xx'd (the server took it before it died).
    server.kill9();
    let mut refused_bodies = Vec::new();
    let refused = eventually(Duration::from_secs(20), || {
        let b = body(&mut expected, true);
        let (st, retry, v) = send(&b);
        if st == 200 {
            return None;
        }
        refused_bodies.push(b);
        (st == 503).then_some((retry, v))
    });
    let (retry, v) = refused.expect("a 503 while NATS is down");
    assert!(retry.is_some(), "Retry-After");
    assert_eq!(v["error"]["code"], "nats_unavailable", "{v}");
    for _ in 0..3 {
        let b = body(&mut expected, true);
        let (st, _, v) = send(&b);
        assert_eq!(st, 503, "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("retry")),
            "{v}"
        );
        refused_bodies.push(b);
    }
    server.restart();
    // Back: a request is 2xx again once the edge reconnected (retried as a sender would),
    // and so is every request refused meanwhile.
    let back = body(&mut expected, true);
    let ok = eventually(Duration::from_secs(30), || {
        (send(&back).0 == 200).then_some(())
    });
    assert!(ok.is_some(), "{}", de.log_text());
    for b in &refused_bodies {
        let (st, _, v) = send(b);
        assert_eq!(st, 200, "{v}");
        let (accepted, dups) = (v["accepted"].as_u64(), v["duplicates"].as_u64());
        assert_eq!(accepted.unwrap_or(0) + dups.unwrap_or(0), 5, "{v}");
    }
    for _ in 0..3 {
        let b = body(&mut expected, true);
        assert_eq!(send(&b).0, 200);
    }
    let done = eventually(Duration::from_secs(30), || {
        (counts(&agg).0 == expected).then_some(())
    });
    assert!(
        done.is_some(),
        "aggregator {:?} != 2xx'd {expected:?}\n{}",
        counts(&agg).0,
        da.log_text()
    );
    assert!(counts(&edge).0.is_empty(), "the edge counted locally");
    for d in [de, da] {
        let status = d.term(Duration::from_secs(15));
        assert!(status.success(), "{status}");
    }
}

/// The README's figure: append → incident visible through the cluster API, p50/p99. One
/// edge (`forward.nats`, a file source) and two aggregators (two partitions each, `cluster`
/// set); each round appends one error line with a new key to the edge's file and polls
/// aggregator A's `GET /incidents?component=<key>` (which asks both nodes) until the
/// incident is there. Also the bytes the stream stores per forwarded line. Run with
/// `cargo test --test it -- --ignored cluster_append_to_visible_latency --nocapture`.
#[test]
#[ignore = "a measurement: run by hand for the README"]
fn cluster_append_to_visible_latency() {
    use std::io::Write;
    let Some(server) = NatsServer::start("cluster_latency") else {
        return;
    };
    let edge = Workspace::with_config(&format!(
        "state_dir: state\nsources:\n  - type: file\n    name: app\n    path: logs/*.log\n\
         forward:\n  nats:\n    url: {}\n    partitions: 4\n    edge: edge-l\n",
        server.url
    ));
    std::fs::create_dir_all(edge.path().join("logs")).unwrap();
    let log = edge.path().join("logs/app.log");
    std::fs::write(&log, "").unwrap();
    let a = Workspace::with_config(&node_config(&server.url, "agg-a", "[0, 1]", true));
    let b = Workspace::with_config(&node_config(&server.url, "agg-b", "[2, 3]", true));
    let mut da = a.spawn(&["watch"]);
    let ia = da.ready();
    let mut db = b.spawn(&["watch"]);
    db.ready();
    let mut de = edge.spawn(&["watch", "--no-api"]);
    de.ready();
    let c = http();
    let rounds = 300;
    let mut took = Vec::with_capacity(rounds);
    let mut line_bytes = 0usize;
    for i in 0..rounds {
        let line = format!(
            "2026-12-06T10:00:00Z ERROR [PACT:lat_{i}:op] request {i} failed: timeout after 30000 ms talking to upstream\n"
        );
        line_bytes += line.len();
        let url = ia.api_url(&format!("/incidents?component=lat_{i}"));
        let t = Instant::now();
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(line.as_bytes()).unwrap();
        drop(f);
        let seen = eventually(Duration::from_secs(20), || {
            let v: Value = c.get(&url).send().ok()?.json().ok()?;
            (v["incidents"].as_array()?.len() == 1).then_some(())
        });
        assert!(seen.is_some(), "round {i}:\n{}", de.log_text());
        took.push(t.elapsed());
    }
    took.sort();
    let pct = |p: f64| took[((took.len() as f64 * p).ceil() as usize).min(took.len()) - 1];
    let rt = runtime();
    let nc = rt.block_on(client(&server.url));
    let (msgs, bytes) = rt.block_on(async {
        let js = async_nats::jetstream::new(nc);
        let mut s = js.get_stream("SENTINEL").await.expect("stream");
        let st = s.info().await.expect("info").state.clone();
        (st.messages, st.bytes)
    });
    eprintln!(
        "cluster_append_to_visible_latency: {rounds} rounds: p50 {:?}, p90 {:?}, p99 {:?}, max {:?}; \
         the stream holds {msgs} messages, {bytes} bytes for {rounds} lines of {:.0} bytes \
         on average ({:.0} stored bytes per line, one line per message)",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        took[took.len() - 1],
        line_bytes as f64 / rounds as f64,
        bytes as f64 / msgs.max(1) as f64,
    );
    for d in [de, da, db] {
        d.term(Duration::from_secs(15));
    }
}
