//! The sources of an edge that are not files — a command's output (`type: process`) and
//! CloudWatch Logs — forward their error lines to JetStream (a real `nats-server`, as in
//! [`crate::nats`]) and count nothing themselves: an aggregator's per-key counts equal what
//! was written, across a server outage while the child prints and a SIGKILL of the edge.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::cloudwatch::{AWS_ENV, Moto, events, now_ms};
use crate::harness::{Rng, Workspace, eventually, http, seed};
use crate::nats::{NatsServer, client, counts, runtime};

fn aggregator_config(url: &str) -> String {
    format!(
        "state_dir: state\nsources:\n  - type: nats\n    name: cluster\n    url: {url}\n    \
         stream: SENTINEL\n    subject_prefix: sentinel.errors\n    partitions: [0, 1, 2, 3]\n"
    )
}

fn forward_section(url: &str, edge: &str) -> String {
    format!(
        "forward:\n  nats:\n    url: {url}\n    stream: SENTINEL\n    \
         subject_prefix: sentinel.errors\n    partitions: 4\n    edge: {edge}\n"
    )
}

/// The messages the stream `SENTINEL` holds.
fn stream_messages(url: &str) -> u64 {
    let rt = runtime();
    rt.block_on(async {
        let nc = client(url).await;
        let js = async_nats::jetstream::new(nc);
        let mut s = js.get_stream("SENTINEL").await.expect("stream");
        s.info().await.expect("stream info").state.messages
    })
}

fn total(t: &BTreeMap<String, u64>, k: &str) -> u64 {
    t.get(k).copied().unwrap_or(0)
}

/// The child's phases: lines `[0, P1)`, then (once `go1` exists) `[P1, P2)`, then (once
/// `go2` exists) `[P2, P3)`. Phase 2 is far more than the pipe, the source's channel and
/// the forwarder's queue hold, so a child that NATS cannot take from must wait in it.
const P1: u64 = 3_000;
const P2: u64 = 300_000;
const P3: u64 = 303_000;

/// Every third line is an error line with a key with digits; the child's script writes the
/// same lines (`child.sh`).
fn key_of(i: u64) -> Option<String> {
    i.is_multiple_of(3)
        .then(|| format!("PACT:svc_{}:op{}", (i / 3) % 7, i % 5))
}

fn expected_until(end: u64) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for i in 0..end {
        if let Some(k) = key_of(i) {
            *m.entry(k).or_default() += 1;
        }
    }
    m
}

/// A POSIX shell child: prints the phases' lines (one `echo`, one write, each), writing how
/// far it got to `progress` every 1,000 lines.
const CHILD: &str = r#"emit() {
  i=$1
  while [ "$i" -lt "$2" ]; do
    if [ $((i % 3)) -eq 0 ]; then
      echo "ERROR [PACT:svc_$(((i / 3) % 7)):op$((i % 5))] request $i failed after $((i % 997)) ms"
    else
      echo "INFO request $i served"
    fi
    i=$((i + 1))
    if [ $((i % 1000)) -eq 0 ]; then echo "$i" > progress.tmp && mv progress.tmp progress; fi
  done
  echo "$i" > progress.tmp && mv progress.tmp progress
}
emit 0 3000
while [ ! -e go1 ]; do sleep 0.05; done
emit 3000 300000
while [ ! -e go2 ]; do sleep 0.05; done
emit 300000 303000
"#;

fn progress(ws: &Workspace) -> u64 {
    std::fs::read_to_string(ws.path().join("progress"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// An edge's `type: process` source: the child's error lines are counted by the aggregator,
/// exactly per key, and not by the edge; the server killed (by its pid) while the child
/// prints: the child waits (its pipe fills) rather than anything being dropped or counted
/// locally, and after the restart the counts are still exact (no loss, no double count).
#[test]
fn edge_process_lines_reach_the_aggregator_exactly_across_a_server_outage() {
    let Some(mut server) = NatsServer::start("edge_process_exactly_once") else {
        return;
    };
    let agg = Workspace::with_config(&aggregator_config(&server.url));
    let edge = Workspace::with_config(&format!(
        "state_dir: state\napi:\n  listen: 127.0.0.1:0\nsources:\n  - type: process\n    \
         name: job\n    command: [\"sh\", \"child.sh\"]\n    restart: never\n{}",
        forward_section(&server.url, "edge-p")
    ));
    edge.file("child.sh", CHILD);
    assert_eq!(
        expected_until(P3).len(),
        35,
        "the key set (7 services x 5 operations)"
    );
    let mut a = agg.spawn(&["watch", "--no-api"]);
    a.ready();
    let mut e = edge.spawn(&["watch"]);
    let info = e.ready();
    let logs = |a: &crate::harness::Daemon, e: &crate::harness::Daemon| {
        format!(
            "edge:\n{}\n-----\naggregator:\n{}",
            e.log_text(),
            a.log_text()
        )
    };
    let reach = |expected: &BTreeMap<String, u64>, within: u64| {
        eventually(Duration::from_secs(within), || {
            (counts(&agg).0 == *expected).then_some(())
        })
    };

    // Phase 1: counted by the aggregator, not by the edge.
    let exp1 = expected_until(P1);
    assert!(
        reach(&exp1, 60).is_some(),
        "phase 1: {:?} != {exp1:?}\n{}",
        counts(&agg).0,
        logs(&a, &e)
    );

    // Phase 2: the server is killed while the child prints.
    std::fs::write(edge.path().join("go1"), "").unwrap();
    let printing = eventually(Duration::from_secs(60), || {
        (progress(&edge) >= P1 + 10_000).then_some(())
    });
    assert!(
        printing.is_some(),
        "the child did not go on:\n{}",
        logs(&a, &e)
    );
    server.kill9();
    let noticed = eventually(Duration::from_secs(30), || {
        e.log_text().contains("forward.nats:").then_some(())
    });
    assert!(
        noticed.is_some(),
        "the edge never noticed:\n{}",
        logs(&a, &e)
    );
    // The child waits: its progress stops short of the phase's end (a child whose lines
    // were dropped, or counted locally, would print on to the end).
    let (mut last, mut since) = (progress(&edge), Instant::now());
    let stalled = eventually(Duration::from_secs(90), || {
        let p = progress(&edge);
        if p != last {
            (last, since) = (p, Instant::now());
        }
        (p >= P2 || since.elapsed() >= Duration::from_secs(2)).then_some(p)
    });
    let stalled = stalled.expect("progress neither stopped nor ended in 90 s");
    assert!(
        stalled < P2,
        "the child printed all {P2} lines while NATS was down: nothing held it back\n{}",
        logs(&a, &e)
    );
    assert!(counts(&edge).0.is_empty(), "the edge counted locally");
    server.restart();
    let exp2 = expected_until(P2);
    assert!(
        reach(&exp2, 180).is_some(),
        "phase 2 after the restart: {} lines counted of {}\n{}",
        counts(&agg).0.values().sum::<u64>(),
        exp2.values().sum::<u64>(),
        logs(&a, &e)
    );

    // Phase 3, on the restarted server.
    std::fs::write(edge.path().join("go2"), "").unwrap();
    let exp3 = expected_until(P3);
    assert!(
        reach(&exp3, 60).is_some(),
        "phase 3: {:?} != {exp3:?}\n{}",
        counts(&agg).0,
        logs(&a, &e)
    );
    assert_eq!(counts(&agg).0, exp3, "counted exactly once per key");
    assert!(counts(&edge).0.is_empty(), "the edge counted locally");
    // Every message the stream holds applied once.
    let held = stream_messages(&server.url);
    let applied = eventually(Duration::from_secs(20), || {
        (total(&counts(&agg).1, "nats_messages") == held).then_some(())
    });
    assert!(
        applied.is_some(),
        "applied {} messages, the stream holds {held}",
        total(&counts(&agg).1, "nats_messages")
    );
    // `/status`: the forwarder's row says how many lines of the source went out.
    let lines: u64 = exp3.values().sum();
    let c = http();
    let url = info.api_url("/status");
    let row = eventually(Duration::from_secs(10), || {
        let v: serde_json::Value = c.get(&url).send().ok()?.json().ok()?;
        v["source_details"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == "forward.nats")
            .cloned()
            .filter(|r| r["sources"]["job"] == lines)
    });
    assert!(
        row.is_some(),
        "the forwarder's /status row does not show {lines} lines of `job`"
    );
    let status = e.term(Duration::from_secs(20));
    assert!(status.success(), "{status}");
    let status = a.term(Duration::from_secs(20));
    assert!(status.success(), "{status}");
}

/// An edge's `type: cloudwatch` source (moto): the events' error lines are counted by the
/// aggregator exactly per key, and not by the edge; the edge killed with SIGKILL while it
/// reads (more events put while it is down) and started again: still exact, and each error
/// event is one message in the stream (a republish was dropped by the server).
#[test]
fn edge_cloudwatch_events_reach_the_aggregator_exactly_across_kill_9() {
    let Some(moto) = Moto::start("edge_cloudwatch_exactly_once") else {
        return;
    };
    let Some(server) = NatsServer::start("edge_cloudwatch_exactly_once") else {
        return;
    };
    let mut rng = Rng(seed("edge_cloudwatch_exactly_once"));
    let group = "/app/edge";
    let streams = ["i-1", "i-2"];
    moto.create(group, &streams);
    let mut expected = BTreeMap::new();
    let mut put_events = 0u64;
    let mut t0 = now_ms() - 600_000;
    let mut put = |expected: &mut BTreeMap<String, u64>, n: usize| {
        for s in streams {
            let evs = events(&mut rng, n, t0, &format!("{group}/{s}"), expected);
            put_events += evs.len() as u64;
            moto.put(group, s, &evs);
        }
        t0 += 60_000;
        put_events
    };
    put(&mut expected, 150);
    let agg = Workspace::with_config(&aggregator_config(&server.url));
    let edge = Workspace::with_config(&format!(
        "state_dir: state\nsources:\n  - type: cloudwatch\n    name: cw\n    log_groups: \
         [{group}]\n    format: auto\n    region: us-east-1\n    endpoint: {}\n    \
         start_at: beginning\n    poll_interval: 1\n    max_requests_per_second: 10\n{}",
        moto.url,
        forward_section(&server.url, "edge-cw")
    ));
    let mut env: Vec<(&str, &str)> = AWS_ENV.to_vec();
    env.push(("SENTINEL_CLOUDWATCH_PAGE_LIMIT", "7"));
    let mut a = agg.spawn(&["watch", "--no-api"]);
    a.ready();
    let mut e = edge.spawn_env(&["watch", "--no-api"], &env);
    e.ready();
    let lines = |m: &BTreeMap<String, u64>| m.values().sum::<u64>();
    // Killed once a part is counted: pages are 7 events, so some are in flight.
    let target = lines(&expected) / 3;
    let part = eventually(Duration::from_secs(60), || {
        (lines(&counts(&agg).0) >= target).then_some(())
    });
    assert!(
        part.is_some(),
        "{target} lines not counted in 60 s:\nedge:\n{}\n-----\naggregator:\n{}",
        e.log_text(),
        a.log_text()
    );
    e.kill9();
    let all = put(&mut expected, 40);
    let mut e = edge.spawn_env(&["watch", "--no-api"], &env);
    e.ready();
    let done = eventually(Duration::from_secs(120), || {
        (total(&counts(&edge).1, "cloudwatch_events") >= all && counts(&agg).0 == expected)
            .then_some(())
    });
    assert!(
        done.is_some(),
        "edge read {} of {all} events; aggregator {:?} != {expected:?}\nedge:\n{}\n-----\n\
         aggregator:\n{}",
        total(&counts(&edge).1, "cloudwatch_events"),
        counts(&agg).0,
        e.log_text(),
        a.log_text()
    );
    assert_eq!(counts(&agg).0, expected, "counted exactly once per key");
    assert!(counts(&edge).0.is_empty(), "the edge counted locally");
    // One message per error event: what was published again after the kill was dropped by
    // the server as a duplicate.
    assert_eq!(
        stream_messages(&server.url),
        lines(&expected),
        "one message per error event"
    );
    let status = e.term(Duration::from_secs(20));
    assert!(status.success(), "{status}");
    let status = a.term(Duration::from_secs(20));
    assert!(status.success(), "{status}");
}
