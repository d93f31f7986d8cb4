//! CloudWatch Logs sources against moto's server mode (a real CloudWatch Logs emulator,
//! installed by `.ci/run` into `.venv-test/`), and against a stub server for the answers
//! moto does not give (throttling, access denied).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use crate::harness::{Rng, Workspace, eventually, free_port, http, seed};

/// Credentials moto accepts (any).
pub(crate) const AWS_ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "AKIDTEST"),
    ("AWS_SECRET_ACCESS_KEY", "secret"),
    ("AWS_REGION", "us-east-1"),
];

/// moto's `moto_server`: `SENTINEL_MOTO_SERVER`, else the virtualenv `.ci/run` makes.
fn moto_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SENTINEL_MOTO_SERVER") {
        return Some(PathBuf::from(p));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-test/bin/moto_server");
    venv.exists().then_some(venv)
}

/// A moto server on a free loopback port, stopped (by its pid) on drop.
pub(crate) struct Moto {
    child: Child,
    pub(crate) url: String,
}

impl Moto {
    /// Starts one, or says why not and returns None (in CI a missing moto is a failure).
    pub(crate) fn start(test: &str) -> Option<Moto> {
        let Some(bin) = moto_binary() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "moto_server is not installed (.ci/run installs it into .venv-test)"
            );
            eprintln!(
                "{test}: SKIPPED: moto_server not found (set SENTINEL_MOTO_SERVER or run \
                 `python3 -m venv .venv-test && .venv-test/bin/pip install 'moto[server]'`)"
            );
            return None;
        };
        let port = free_port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        let moto = Moto {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let up = eventually(Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        assert!(up.is_some(), "moto_server did not listen on {port} in 30 s");
        Some(moto)
    }

    /// Calls a CloudWatch Logs action, signed with Sentinel's own signer.
    fn call(&self, action: &str, body: &Value) -> Value {
        let target = format!("Logs_20140328.{action}");
        let body = serde_json::to_vec(body).unwrap();
        let url = format!("{}/", self.url);
        let creds = sentinel::source::cloudwatch::Credentials::new("AKIDTEST", "secret", None);
        let headers = sentinel::source::cloudwatch::sign(
            &creds,
            "us-east-1",
            &url,
            &target,
            &body,
            SystemTime::now(),
        )
        .unwrap();
        let mut rb = http()
            .post(&url)
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", &target);
        for (k, v) in headers {
            rb = rb.header(k, v);
        }
        let r = rb.body(body).send().expect("moto answers");
        let status = r.status();
        let text = r.text().unwrap_or_default();
        assert!(status.is_success(), "{action}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    pub(crate) fn create(&self, group: &str, streams: &[&str]) {
        self.call("CreateLogGroup", &json!({"logGroupName": group}));
        for s in streams {
            self.call(
                "CreateLogStream",
                &json!({"logGroupName": group, "logStreamName": s}),
            );
        }
    }

    pub(crate) fn put(&self, group: &str, stream: &str, events: &[(i64, String)]) {
        for chunk in events.chunks(500) {
            let evs: Vec<Value> = chunk
                .iter()
                .map(|(t, m)| json!({"timestamp": t, "message": m}))
                .collect();
            self.call(
                "PutLogEvents",
                &json!({"logGroupName": group, "logStreamName": stream, "logEvents": evs}),
            );
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Events for one stream: error lines with keys, some plain lines; several at the same
/// millisecond (so that one millisecond's events straddle pages). Adds to `expected`.
pub(crate) fn events(
    rng: &mut Rng,
    n: usize,
    t0: i64,
    tag: &str,
    expected: &mut BTreeMap<String, u64>,
) -> Vec<(i64, String)> {
    let mut t = t0;
    let mut out = Vec::new();
    for i in 0..n {
        if rng.below(3) != 0 {
            t += 1;
        }
        let msg = if rng.below(5) == 0 {
            format!("INFO {tag} request {i} ok")
        } else {
            let key = format!("PACT:svc_{}:op_{}", rng.below(4), rng.below(3));
            *expected.entry(key.clone()).or_default() += 1;
            if rng.below(4) == 0 {
                // JSON, key in a field (format: auto).
                format!(r#"{{"level":"ERROR","msg":"{tag} failed {i}","pact_key":"{key}"}}"#)
            } else {
                format!("ERROR [{key}] {tag} failed {i}\n")
            }
        };
        out.push((t, msg));
    }
    out
}

fn counts(ws: &Workspace) -> (BTreeMap<String, u64>, u64) {
    let Some(store) = ws.store() else {
        return (BTreeMap::new(), 0);
    };
    let keys: BTreeMap<String, u64> = store
        .key_counts()
        .expect("key counts")
        .into_iter()
        .collect();
    let events = store
        .totals()
        .expect("totals")
        .get("cloudwatch_events")
        .copied()
        .unwrap_or(0);
    (keys, events)
}

const GROUPS: [&str; 2] = ["/app/api", "/app/worker"];
const STREAMS: [&str; 2] = ["i-1", "i-2"];

fn moto_config(url: &str) -> String {
    format!(
        "state_dir: state\nsources:\n  - type: cloudwatch\n    name: cw\n    log_groups: \
         [{}, {}]\n    format: auto\n    region: us-east-1\n    endpoint: {url}\n    \
         start_at: beginning\n    poll_interval: 1\n    max_requests_per_second: 25\n",
        GROUPS[0], GROUPS[1]
    )
}

/// Events put into the emulator are counted exactly per key: across pages (7 events a
/// page), two log groups of two streams each, and kill -9 at random moments with more
/// events put while the daemon is down and while it runs.
#[test]
fn cloudwatch_counts_exactly_once_across_pages_groups_and_kill_9() {
    let Some(moto) = Moto::start("cloudwatch_exactly_once") else {
        return;
    };
    let mut rng = Rng(seed("cloudwatch_exactly_once"));
    for g in GROUPS {
        moto.create(g, &STREAMS);
    }
    let mut expected = BTreeMap::new();
    let mut total = 0u64;
    let mut t0 = now_ms() - 600_000;
    // Streams of a group put at the same milliseconds (one millisecond's events then come
    // from both); while the daemon runs, each put is later than everything before it (an
    // event older than what was read is a late arrival, which no timestamp cursor sees).
    let mut put_round =
        |rng: &mut Rng, expected: &mut BTreeMap<String, u64>, n: usize, running: bool| {
            for g in GROUPS {
                for s in STREAMS {
                    let evs = events(rng, n, t0, &format!("{g}/{s}"), expected);
                    total += evs.len() as u64;
                    moto.put(g, s, &evs);
                    if running {
                        t0 += 1_000;
                    }
                }
            }
            t0 += 60_000;
            total
        };
    put_round(&mut rng, &mut expected, 120, false);
    let ws = Workspace::with_config(&moto_config(&moto.url));
    let mut env: Vec<(&str, &str)> = AWS_ENV.to_vec();
    env.push(("SENTINEL_CLOUDWATCH_PAGE_LIMIT", "7"));
    for round in 0..3 {
        let mut d = ws.spawn_env(&["watch", "--no-api"], &env);
        d.ready();
        if round == 1 {
            // Put more while it reads.
            put_round(&mut rng, &mut expected, 40, true);
        }
        let (_, seen) = counts(&ws);
        let kill_at = seen + 20 + rng.below(60);
        let reached = eventually(Duration::from_secs(60), || {
            let (_, n) = counts(&ws);
            (n >= kill_at).then_some(n)
        });
        assert!(
            reached.is_some(),
            "round {round}: {kill_at} events not counted in 60 s:\n{}",
            d.log_text()
        );
        d.kill9();
        // Put more while it is down.
        put_round(&mut rng, &mut expected, 30, false);
    }
    let total = put_round(&mut rng, &mut expected, 10, false);
    let mut d = ws.spawn_env(&["watch", "--no-api"], &env);
    d.ready();
    let done = eventually(Duration::from_secs(90), || {
        let (_, n) = counts(&ws);
        (n >= total).then_some(())
    });
    assert!(
        done.is_some(),
        "not every event counted ({:?} of {total}):\n{}",
        counts(&ws).1,
        d.log_text()
    );
    // A few more polls: nothing more is counted.
    std::thread::sleep(Duration::from_secs(3));
    let (keys, n) = counts(&ws);
    assert_eq!(n, total, "events counted once each");
    assert_eq!(keys, expected, "error lines counted exactly per key");
    let status = d.term(Duration::from_secs(15));
    assert!(status.success(), "{status}");
}

/// Events per second the source pulls from the emulator (the README's figure; a figure
/// about moto on this machine, not about AWS). Run with
/// `cargo test --release cloudwatch_emulator_throughput -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement: run by hand for the README"]
fn cloudwatch_emulator_throughput() {
    let Some(moto) = Moto::start("cloudwatch_emulator_throughput") else {
        return;
    };
    let mut rng = Rng(1);
    moto.create("/bench", &["s"]);
    let mut expected = BTreeMap::new();
    let n = 100_000;
    let evs = events(&mut rng, n, now_ms() - 3_600_000, "bench", &mut expected);
    let t = Instant::now();
    moto.put("/bench", "s", &evs);
    eprintln!(
        "cloudwatch_emulator_throughput: put {n} events in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    for rate in [4, 50] {
        let ws = Workspace::with_config(&format!(
            "state_dir: state\nsources:\n  - type: cloudwatch\n    log_group: /bench\n    \
             region: us-east-1\n    endpoint: {}\n    start_at: beginning\n    \
             poll_interval: 1\n    max_requests_per_second: {rate}\n",
            moto.url
        ));
        let mut d = ws.spawn_env(&["watch", "--no-api"], &AWS_ENV);
        d.ready();
        let t = Instant::now();
        let done = eventually(Duration::from_secs(600), || {
            (counts(&ws).1 >= n as u64).then_some(())
        });
        assert!(done.is_some(), "{}", d.log_text());
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(counts(&ws).0, expected);
        eprintln!(
            "cloudwatch_emulator_throughput: {n} events in {secs:.2} s = {:.0} events/s \
             (default page size: 10,000 events; max_requests_per_second: {rate})",
            n as f64 / secs
        );
        d.term(Duration::from_secs(15));
    }
}

/// What the stub answers, per request (the `logGroupName` it asked for and the request
/// number).
type Script = dyn Fn(&Value, usize) -> (u16, Value) + Send + Sync;

/// A CloudWatch Logs stand-in: records when each request came, answers from `script`.
struct Stub {
    url: String,
    arrivals: Arc<Mutex<Vec<(Instant, Value)>>>,
}

impl Stub {
    fn start(script: Box<Script>) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let arrivals: Arc<Mutex<Vec<(Instant, Value)>>> = Arc::default();
        let script: Arc<Script> = Arc::from(script);
        let rec = arrivals.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let rec = rec.clone();
                let script = script.clone();
                std::thread::spawn(move || serve_conn(conn, &rec, &*script));
            }
        });
        Stub { url, arrivals }
    }

    fn arrivals(&self) -> Vec<(Instant, Value)> {
        self.arrivals.lock().unwrap().clone()
    }
}

fn serve_conn(conn: std::net::TcpStream, rec: &Mutex<Vec<(Instant, Value)>>, script: &Script) {
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let at = Instant::now();
        let mut len = 0usize;
        let mut signed = false;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let lower = h.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            if lower.starts_with("authorization: aws4-hmac-sha256 credential=akidtest/") {
                signed = true;
            }
        }
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let n = {
            let mut v = rec.lock().unwrap();
            v.push((at, req.clone()));
            v.len()
        };
        let (status, answer) = if signed {
            script(&req, n)
        } else {
            (400, json!({"__type": "MissingAuthenticationToken"}))
        };
        let text = answer.to_string();
        let head = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/x-amz-json-1.1\r\n\
             content-length: {}\r\n\r\n",
            text.len()
        );
        if w.write_all(head.as_bytes()).is_err() || w.write_all(text.as_bytes()).is_err() {
            return;
        }
    }
}

/// Throttling is honoured: requests of two sources sharing an account and region never
/// come closer than the configured rate allows, a ThrottlingException backs off, and the
/// events are counted once all the same.
#[test]
fn cloudwatch_throttling_is_honoured() {
    let t0 = now_ms() - 10_000;
    let stub = Stub::start(Box::new(move |req, n| {
        if (3..=5).contains(&n) {
            return (
                400,
                json!({"__type": "ThrottlingException", "message": "Rate exceeded"}),
            );
        }
        // Three pages per sweep from the start: 2 events each, then none.
        let group = req["logGroupName"].as_str().unwrap_or("").to_string();
        let page: u64 = req["nextToken"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        let events: Vec<Value> = (0..2)
            .map(|i| {
                let k = page * 2 + i;
                json!({"logStreamName": "s", "timestamp": t0 + k as i64, "eventId": k.to_string(),
                       "message": format!("ERROR [PACT:thr:{}] in {group}", k % 2)})
            })
            .filter(|e| e["timestamp"].as_i64().unwrap() >= req["startTime"].as_i64().unwrap())
            .collect();
        let next = (page < 2).then(|| (page + 1).to_string());
        (200, json!({"events": events, "nextToken": next}))
    }));
    let ws = Workspace::with_config(&format!(
        "state_dir: state\nsources:\n  - type: cloudwatch\n    name: a\n    log_groups: [g1, g2]\n    \
         region: us-east-1\n    endpoint: {url}\n    poll_interval: 1\n    \
         max_requests_per_second: 2\n  - type: cloudwatch\n    name: b\n    log_group: g3\n    \
         region: us-east-1\n    endpoint: {url}\n    poll_interval: 1\n    \
         max_requests_per_second: 3\napi:\n  listen: 127.0.0.1:0\n",
        url = stub.url
    ));
    let mut d = ws.spawn_env(&["watch"], &AWS_ENV);
    let info = d.ready();
    // 3 groups × 6 events, each counted once.
    let done = eventually(Duration::from_secs(60), || {
        let (keys, n) = counts(&ws);
        (n >= 18 && stub.arrivals().len() >= 18).then_some(keys)
    });
    let keys = done.unwrap_or_else(|| panic!("not counted:\n{}", d.log_text()));
    std::thread::sleep(Duration::from_millis(1500));
    let (keys2, n) = counts(&ws);
    assert_eq!(n, 18, "each event once");
    assert_eq!(keys, keys2);
    assert_eq!(keys["PACT:thr:0"], 9);
    assert_eq!(keys["PACT:thr:1"], 9);
    // The shared limit is the lower one: 2 per second, slots 500 ms apart whichever source
    // asks. Arrivals carry scheduling noise, so: never two within 150 ms, every four gaps
    // at least 1.7 s, and the whole run at most 2 per second.
    let arrivals = stub.arrivals();
    let t: Vec<Instant> = arrivals.iter().map(|(at, _)| *at).collect();
    for (i, w) in t.windows(2).enumerate() {
        let gap = w[1].duration_since(w[0]);
        assert!(
            gap >= Duration::from_millis(150),
            "two requests {gap:?} apart (max 2/s): {:?} then {:?}",
            arrivals[i].1,
            arrivals[i + 1].1
        );
    }
    for w in t.windows(5) {
        let span = w[4].duration_since(w[0]);
        assert!(
            span >= Duration::from_millis(1700),
            "five requests in {span:?}"
        );
    }
    let whole = t[t.len() - 1].duration_since(t[0]);
    assert!(
        whole >= Duration::from_millis(480) * (t.len() as u32 - 1),
        "{} requests in {whole:?}",
        t.len()
    );
    // After each throttled answer the group waited (≥ 0.5 s of backoff on top of the rate).
    let m = http()
        .get(info.api_url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let throttled: u64 = m
        .lines()
        .filter(|l| l.starts_with("sentinel_cloudwatch_requests_total") && l.contains("throttled"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(throttled, 3, "{m}");
    assert!(
        m.contains("sentinel_cloudwatch_lag_seconds{source=\"a\"}"),
        "{m}"
    );
    assert!(
        d.log_text()
            .contains("ThrottlingException: Rate exceeded; backing off"),
        "{}",
        d.log_text()
    );
    d.term(Duration::from_secs(15));
}

/// Access denied is reported clearly, once, in the log, `/status` and `sentinel status`,
/// while another source keeps counting.
#[test]
fn cloudwatch_denied_access_is_reported_and_others_keep_counting() {
    let stub = Stub::start(Box::new(|req, _| {
        if req["logGroupName"] == "forbidden" {
            (
                400,
                json!({"__type": "AccessDeniedException",
                       "message": "User: arn:aws:iam::1:user/x is not authorized to perform: logs:FilterLogEvents"}),
            )
        } else {
            (200, json!({"events": []}))
        }
    }));
    let ws = Workspace::with_config(&format!(
        "state_dir: state\nsources:\n  - type: cloudwatch\n    name: denied\n    log_group: forbidden\n    \
         region: us-east-1\n    endpoint: {url}\n    poll_interval: 1\n  - type: cloudwatch\n    \
         name: fine\n    log_group: allowed\n    region: us-east-1\n    endpoint: {url}\n    \
         poll_interval: 1\n  - type: file\n    name: app\n    path: app.log\napi:\n  listen: 127.0.0.1:0\n",
        url = stub.url
    ));
    ws.file("app.log", "");
    let mut d = ws.spawn_env(&["watch"], &AWS_ENV);
    let info = d.ready();
    let c = http();
    let status = eventually(Duration::from_secs(20), || {
        let v: Value = c.get(info.api_url("/status")).send().ok()?.json().ok()?;
        let details = v["source_details"].as_array()?.clone();
        let denied = details.iter().find(|s| s["name"] == "denied")?.clone();
        let fine = details.iter().find(|s| s["name"] == "fine")?.clone();
        (denied["state"] == "failing" && fine["state"] == "ok").then_some((denied, fine))
    });
    let (denied, fine) = status.unwrap_or_else(|| panic!("no failing state:\n{}", d.log_text()));
    let err = denied["error"].as_str().unwrap();
    assert!(
        err.contains("AccessDeniedException") && err.contains("logs:FilterLogEvents"),
        "{denied}"
    );
    assert_eq!(denied["log_groups"][0]["state"], "failing");
    assert!(fine["error"].is_null(), "{fine}");
    // The other sources count meanwhile.
    std::fs::write(
        ws.path().join("app.log"),
        "ERROR [PACT:file:go] still counted\n",
    )
    .unwrap();
    let counted = eventually(Duration::from_secs(20), || {
        let (keys, _) = counts(&ws);
        (keys.get("PACT:file:go") == Some(&1)).then_some(())
    });
    assert!(counted.is_some(), "{}", d.log_text());
    let polled = eventually(Duration::from_secs(10), || {
        let n = stub
            .arrivals()
            .iter()
            .filter(|(_, r)| r["logGroupName"] == "allowed")
            .count();
        (n >= 3).then_some(())
    });
    assert!(polled.is_some(), "the allowed group keeps being polled");
    // Reported once (retried slowly: not again within the test).
    let log = d.log_text();
    assert_eq!(
        log.matches("AccessDeniedException").count(),
        1,
        "the message once:\n{log}"
    );
    // `sentinel status` checks each CloudWatch source itself.
    let out = ws.run_env(&["status", "--json"], &AWS_ENV);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let checks = v["checks"].as_array().unwrap();
    let cw: Vec<&Value> = checks
        .iter()
        .filter(|c| c["name"] == "cloudwatch")
        .collect();
    assert_eq!(cw.len(), 2, "{v:#}");
    let bad = cw
        .iter()
        .find(|c| c["target"].as_str().unwrap().starts_with("denied"))
        .unwrap();
    assert_eq!(bad["state"], "failed");
    assert!(
        bad["error"]
            .as_str()
            .unwrap()
            .contains("AccessDeniedException"),
        "{bad}"
    );
    let good = cw
        .iter()
        .find(|c| c["target"].as_str().unwrap().starts_with("fine"))
        .unwrap();
    assert_eq!(good["state"], "ok", "{good}");
    assert_eq!(out.status.code(), Some(1), "a failed check fails `status`");
    // Without credentials at all: said so.
    let out = ws.run_env(
        &["status", "--json"],
        &[
            ("AWS_ACCESS_KEY_ID", ""),
            ("AWS_SECRET_ACCESS_KEY", ""),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
        ],
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "cloudwatch")
        .unwrap()
        .clone();
    assert!(
        first["error"]
            .as_str()
            .unwrap()
            .contains("no AWS credentials"),
        "{first}"
    );
    d.term(Duration::from_secs(15));
}
