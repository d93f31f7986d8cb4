//! The HTTP API on the real daemon: health, status, metrics (text and JSON), incidents with
//! filters, and JSON errors for unknown routes, wrong methods and bad queries.

use std::time::Duration;

use reqwest::blocking::Client;
use serde_json::{Value, json};

use crate::harness::{DaemonInfo, Workspace, eventually, http};

// A threshold never reached: incidents stay `detected` (see tests/it/components.rs and the
// store's unit tests for what happens when they become actionable).
const CONFIG: &str = "state_dir: state
error_threshold:
  count: 1000000
# The stalled-stream test opens 100,000 distinct incidents of one (empty) key: above the
# cardinality guard's default, which would fold them into one overflow incident.
grouping:
  max_new_incidents_per_key: 1000000
api:
  listen: 127.0.0.1:0
sources:
  - type: webhook
    name: hook
    port: 0
  - type: file
    name: app
    path: logs/*.log
";

fn get(c: &Client, info: &DaemonInfo, path: &str) -> (u16, Value) {
    let r = c.get(info.api_url(path)).send().expect("GET");
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(
        ct.starts_with("application/json"),
        "{path}: content-type {ct:?}"
    );
    (status, r.json().expect("JSON"))
}

fn setup() -> (Workspace, crate::harness::Daemon, DaemonInfo) {
    let ws = Workspace::with_config(CONFIG);
    std::fs::create_dir_all(ws.path().join("logs")).expect("mkdir");
    ws.file(
        "state/manifest.json",
        r#"{"components": {"auth": {"component_id": "auth"}}}"#,
    );
    let mut d = ws.spawn(&["watch"]);
    let info = d.ready();
    (ws, d, info)
}

fn ingest(c: &Client, info: &DaemonInfo, body: &str) {
    let r = c
        .post(info.webhook_url("hook"))
        .header("content-type", "application/x-ndjson")
        .body(body.to_string())
        .send()
        .expect("POST");
    assert_eq!(r.status().as_u16(), 200);
    // Acknowledged means durable in the ingest log; wait for the store's commit too, so
    // that each call is its own commit (ordering and timestamps as the test expects).
    let applied = crate::harness::eventually(Duration::from_secs(10), || {
        let m = c.get(info.api_url("/metrics")).send().ok()?.text().ok()?;
        m.lines()
            .any(|l| l == "sentinel_ingest_log_unapplied_events 0")
            .then_some(())
    });
    assert!(applied.is_some(), "events not committed within 10 s");
}

#[test]
fn health_status_and_metrics() {
    let (_ws, d, info) = setup();
    let c = http();
    assert_eq!(get(&c, &info, "/health"), (200, json!({"status": "ok"})));

    let (s, v) = get(&c, &info, "/status");
    assert_eq!(s, 200);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["sources"], 2);
    assert_eq!(v["components"], 1);
    assert_eq!(v["active_incidents"], 0);
    assert_eq!(v["total_fixes"], 0);
    for k in [
        "arbiter_configured",
        "stigmergy_configured",
        "ledger_configured",
        "pact_configured",
    ] {
        assert_eq!(v[k], false, "{k}");
    }
    assert!(v["uptime_seconds"].is_u64());
    let started = v["started_at"].as_str().expect("started_at");
    assert!(started.parse::<jiff::Timestamp>().is_ok(), "{started}");
    let details = v["source_details"].as_array().expect("source_details");
    let hook = details.iter().find(|s| s["name"] == "hook").expect("hook");
    assert_eq!(hook["type"], "webhook");
    assert!(
        hook["detail"]
            .as_str()
            .unwrap_or("")
            .starts_with("127.0.0.1:")
    );
    let app = details.iter().find(|s| s["name"] == "app").expect("app");
    assert_eq!(app["type"], "file");
    // A file source's lag (what is behind is tested in `source::file::lag_tests`).
    assert!(app["lag_bytes"].is_u64(), "{app}");
    assert!(app["files_behind"].is_u64(), "{app}");
    assert!(app["most_behind"].is_array(), "{app}");
    assert!(hook.get("lag_bytes").is_none(), "{hook}");

    // Prometheus text with its content type; counters move with ingestion.
    let scrape = |c: &Client| {
        let r = c
            .get(info.api_url("/metrics"))
            .send()
            .expect("GET /metrics");
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(
            r.headers()["content-type"],
            sentinel::metrics::CONTENT_TYPE,
            "Prometheus needs the 0.0.4 text content type"
        );
        r.text().expect("text")
    };
    let before = scrape(&c);
    assert!(
        before.contains("# TYPE sentinel_webhook_requests_total counter"),
        "{before}"
    );
    assert!(
        before.contains(r#"sentinel_error_lines_total{source="hook"} 0"#),
        "{before}"
    );
    ingest(
        &c,
        &info,
        "{\"error\":\"ERROR [PACT:auth:login] x\"}\n{\"error\":\"ERROR y\"}\n",
    );
    // The 2xx comes once the events are durable in the ingest log; the writer commits them
    // to the store (and counts the incidents it created) right after.
    let want = [
        r#"sentinel_error_lines_total{source="hook"} 2"#,
        r#"sentinel_keyed_lines_total{source="hook"} 1"#,
        r#"sentinel_webhook_events_total{outcome="accepted",source="hook"} 2"#,
        r#"sentinel_webhook_requests_total{code="200",source="hook"} 1"#,
        r#"sentinel_incidents_created_total{severity="medium",source="hook"} 2"#,
        // The store's tallies, read at scrape time.
        "# TYPE sentinel_incidents gauge",
        r#"sentinel_incidents{status="detected"} 2"#,
        r#"sentinel_incidents{status="resolved"} 0"#,
        r#"sentinel_incidents_by_severity{severity="medium"} 2"#,
    ];
    let mut after = String::new();
    let all_there = eventually(Duration::from_secs(10), || {
        after = scrape(&c);
        want.iter().all(|l| after.contains(l)).then_some(())
    });
    for line in want {
        assert!(
            all_there.is_some() && after.contains(line),
            "{line} missing:\n{after}"
        );
    }
    assert!(after.contains("sentinel_ingest_queue_bytes 0"), "{after}");

    let (s, v) = get(&c, &info, "/metrics.json");
    assert_eq!(s, 200);
    assert_eq!(
        v,
        json!({
            "total_incidents": 2,
            "active_incidents": 2,
            "total_fixes_attempted": 0,
            "fixes_succeeded": 0,
            "fixes_failed": 0,
            "total_spend_usd": 0.0,
            "components_registered": 1,
        })
    );
    let (_, v) = get(&c, &info, "/status");
    assert_eq!(v["active_incidents"], 2);
    assert_eq!(v["incidents_by_status"]["detected"], 2);
    assert_eq!(v["incidents_by_severity"]["medium"], 2);
    assert_eq!(v["incidents_by_severity"]["high"], 0);
    assert!(d.term(Duration::from_secs(10)).success());
}

#[test]
fn incidents_newest_first_with_filters_and_by_id() {
    let (_ws, d, info) = setup();
    let c = http();
    // Three incidents, in order: auth (registered), pay (unregistered), none (unattributed).
    ingest(
        &c,
        &info,
        "{\"error\":\"ERROR [PACT:auth:login] denied\"}\n",
    );
    ingest(
        &c,
        &info,
        "{\"error\":\"ERROR [PACT:pay:charge] declined\"}\n",
    );
    ingest(
        &c,
        &info,
        "{\"error\":\"ERROR no key gdpr_erasable field leaked\"}\n",
    );
    let (s, v) = get(&c, &info, "/incidents");
    assert_eq!(s, 200);
    let list = v["incidents"].as_array().expect("an array");
    assert_eq!(v["next_cursor"], Value::Null, "one page: {v}");
    let components: Vec<&str> = list
        .iter()
        .map(|i| i["component_id"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(components, ["", "pay", "auth"], "newest first");
    let auth = &list[2];
    assert_eq!(auth["attribution"], "registered");
    assert_eq!(auth["pact_key"], "PACT:auth:login");
    assert_eq!(auth["status"], "detected");
    assert_eq!(auth["count"], 1);
    assert_eq!(auth["source"], "hook");

    let ids = |path: &str| -> Vec<String> {
        let (s, v) = get(&c, &info, path);
        assert_eq!(s, 200, "{path}: {v}");
        v["incidents"]
            .as_array()
            .expect("array")
            .iter()
            .map(|i| i["component_id"].as_str().unwrap_or("?").to_string())
            .collect()
    };
    assert_eq!(ids("/incidents?limit=1"), [""]);
    assert_eq!(ids("/incidents?component=pay"), ["pay"]);
    assert_eq!(ids("/incidents?severity=high"), [""]);
    assert_eq!(ids("/incidents?status=active&limit=2"), ["", "pay"]);
    assert!(ids("/incidents?status=resolved").is_empty());
    assert!(ids("/incidents?component=nobody").is_empty());

    for bad in [
        "/incidents?limit=0",
        "/incidents?limit=5000",
        "/incidents?limit=ten",
        "/incidents?status=open",
        "/incidents?severity=urgent",
        "/incidents?sort=asc",
        "/incidents?since=2026-13-01",
        "/incidents?cursor=c1",
    ] {
        let (s, v) = get(&c, &info, bad);
        assert_eq!(s, 400, "{bad}");
        assert_eq!(v["error"]["code"], "invalid_query", "{bad}: {v}");
    }

    let id = auth["id"].as_str().expect("id");
    let (s, v) = get(&c, &info, &format!("/incidents/{id}"));
    assert_eq!(s, 200);
    assert_eq!(v["id"], id);
    assert_eq!(v["pact_key"], "PACT:auth:login");
    assert_eq!(v["timeline"][0]["kind"], "incident_detected", "{v}");
    assert_eq!(v["timeline"][0]["incident_id"], id);
    assert_eq!(v["fix_attempts"], json!([]));
    let (s, v) = get(&c, &info, "/incidents/000000000000");
    assert_eq!(s, 404);
    assert_eq!(v["error"]["code"], "not_found");
    assert!(d.term(Duration::from_secs(10)).success());
}

#[test]
fn unknown_routes_and_wrong_methods_are_json_errors() {
    let (_ws, d, info) = setup();
    let c = http();
    let (s, v) = get(&c, &info, "/nope");
    assert_eq!(s, 404);
    assert_eq!(v["error"]["code"], "not_found");
    assert!(v["error"]["message"].is_string());
    for path in ["/health", "/status", "/incidents", "/metrics"] {
        let r = c.post(info.api_url(path)).body("{}").send().expect("POST");
        assert_eq!(r.status().as_u16(), 405, "{path}");
        assert!(r.headers().contains_key("allow"), "{path}");
        let v: Value = r.json().expect("JSON");
        assert_eq!(v["error"]["code"], "method_not_allowed", "{path}");
    }
    let r = c
        .delete(info.api_url("/incidents/abc"))
        .send()
        .expect("DELETE");
    assert_eq!(r.status().as_u16(), 405);
    assert!(d.term(Duration::from_secs(10)).success());
}

#[test]
fn bearer_scopes_and_host_check() {
    let ws = Workspace::with_config(
        "state_dir: state\napi:\n  listen: 127.0.0.1:0\n  read_token_env: T_READ\n  write_token_env: T_WRITE\n",
    );
    let mut d = ws.spawn_env(&["serve"], &[("T_READ", "r-token"), ("T_WRITE", "w-token")]);
    let info = d.ready();
    let c = crate::harness::http();
    let call = |method: &str, path: &str, token: Option<&str>| -> (u16, Value) {
        let mut r = match method {
            "GET" => c.get(info.api_url(path)),
            _ => c.post(info.api_url(path)).body("{}"),
        };
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().expect("request");
        let s = r.status().as_u16();
        (s, r.json().unwrap_or(Value::Null))
    };
    // Open routes.
    assert_eq!(call("GET", "/health", None).0, 200);
    assert_eq!(call("GET", "/status", None).0, 200);
    // GETs: read or write token.
    let (s, v) = call("GET", "/incidents", None);
    assert_eq!(
        (s, &v["error"]["code"]),
        (401, &json!("unauthorized")),
        "{v}"
    );
    assert_eq!(call("GET", "/incidents", Some("wrong")).0, 401);
    assert_eq!(call("GET", "/incidents", Some("r-token")).0, 200);
    assert_eq!(call("GET", "/metrics.json", Some("w-token")).0, 200);
    // POSTs: the write token only.
    assert_eq!(call("POST", "/register", None).0, 401);
    let (s, v) = call("POST", "/register", Some("r-token"));
    assert_eq!((s, &v["error"]["code"]), (403, &json!("forbidden")), "{v}");
    let (s, v) = call("POST", "/register", Some("w-token"));
    assert_eq!(s, 400, "past auth, the body is checked: {v}");
    // The fixer's routes follow the same scopes; past auth, bodies and ids are checked.
    for post in ["/fix", "/fixes/abc/approve", "/fixes/abc/reject"] {
        assert_eq!(call("POST", post, None).0, 401, "{post}");
        assert_eq!(call("POST", post, Some("r-token")).0, 403, "{post}");
    }
    let (s, v) = call("POST", "/fix", Some("w-token"));
    assert_eq!(
        (s, &v["error"]["code"]),
        (400, &json!("invalid_body")),
        "{v}"
    );
    let (s, v) = call("POST", "/fixes/abc/approve", Some("w-token"));
    assert_eq!((s, &v["error"]["code"]), (404, &json!("not_found")), "{v}");
    assert_eq!(call("GET", "/fixes", None).0, 401);
    let (s, v) = call("GET", "/fixes", Some("r-token"));
    assert_eq!((s, v), (200, json!([])));
    assert_eq!(call("GET", "/fixes/abc", Some("r-token")).0, 404);
    assert_eq!(call("GET", "/events?kinds=nope", None).0, 401);
    assert_eq!(call("GET", "/events?kinds=nope", Some("r-token")).0, 400);
    assert!(d.term(Duration::from_secs(5)).success());

    // Without tokens: open, but only to loopback Host names; a non-loopback bind is refused.
    let ws = Workspace::with_config("state_dir: state\napi:\n  listen: 127.0.0.1:0\n");
    let mut d = ws.spawn(&["serve"]);
    let info = d.ready();
    let r = c
        .get(info.api_url("/incidents"))
        .header("host", "attacker.example")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(
        c.get(info.api_url("/incidents"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    assert!(d.term(Duration::from_secs(5)).success());
    let out = ws.run(&["serve", "--host", "0.0.0.0", "--port", "0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        crate::harness::stderr(&out).contains("not a loopback address"),
        "{}",
        crate::harness::stderr(&out)
    );
}

/// One Server-Sent Events message: `(id, event, data)`.
type Frame = (Option<u64>, String, Value);

/// Opens `GET /events` and reads its messages on a thread; they arrive on the channel.
/// Returns once the stream's headers arrived (so it follows from this point on).
fn open_events(
    info: &DaemonInfo,
    query: &str,
    last_event_id: Option<u64>,
) -> std::sync::mpsc::Receiver<Frame> {
    use std::io::BufRead;
    let c = reqwest::blocking::Client::builder()
        .timeout(None)
        .build()
        .expect("client");
    let mut req = c.get(info.api_url(&format!("/events{query}")));
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id.to_string());
    }
    let r = req.send().expect("GET /events");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = std::io::BufReader::new(r).lines();
        let (mut id, mut event, mut data) = (None, String::new(), String::new());
        while let Some(Ok(line)) = lines.next() {
            if line.is_empty() {
                if !event.is_empty() || !data.is_empty() {
                    let v = serde_json::from_str(&data).unwrap_or(Value::Null);
                    if tx.send((id.take(), std::mem::take(&mut event), v)).is_err() {
                        return;
                    }
                    data.clear();
                }
            } else if let Some(v) = line.strip_prefix("id: ") {
                id = v.parse().ok();
            } else if let Some(v) = line.strip_prefix("event: ") {
                event = v.to_string();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push_str(v);
            }
        }
    });
    rx
}

fn next_frame(rx: &std::sync::mpsc::Receiver<Frame>, within: Duration) -> Frame {
    rx.recv_timeout(within)
        .unwrap_or_else(|e| panic!("no event within {within:?}: {e}"))
}

#[test]
fn events_stream_an_appended_line_within_a_second() {
    let ws = Workspace::with_config(CONFIG);
    ws.file("logs/app.log", "");
    let mut d = ws.spawn(&["watch"]);
    let info = d.ready();
    let rx = open_events(&info, "", None);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(ws.path().join("logs/app.log"))
        .expect("open");
    let appended = std::time::Instant::now();
    std::io::Write::write_all(&mut f, b"ERROR [PACT:auth:login] token expired\n").expect("append");
    let (id, event, data) = next_frame(&rx, Duration::from_secs(1));
    let took = appended.elapsed();
    assert_eq!(event, "incident_detected", "{data}");
    assert!(id.is_some_and(|i| i >= 1));
    assert_eq!(data["kind"], "incident_detected");
    assert_eq!(data["component_id"], "auth");
    assert_eq!(data["data"]["pact_key"], "PACT:auth:login");
    eprintln!("incident_detected {took:?} after the append");
    assert!(d.term(Duration::from_secs(10)).success());
}

#[test]
fn events_resume_after_last_event_id_with_exactly_the_missed_events() {
    let (_ws, d, info) = setup();
    let c = http();
    for w in ["alpha", "bravo", "charlie"] {
        ingest(&c, &info, &format!("{{\"error\":\"ERROR {w} failed\"}}\n"));
    }
    // The three are committed (and logged) once /incidents lists them.
    let listed = crate::harness::eventually(Duration::from_secs(10), || {
        let (_, v) = get(&c, &info, "/incidents");
        (v["incidents"].as_array().map_or(0, Vec::len) == 3).then_some(())
    });
    assert!(listed.is_some());
    let rx = open_events(&info, "?kinds=incident_detected", Some(1));
    let first = next_frame(&rx, Duration::from_secs(5));
    let second = next_frame(&rx, Duration::from_secs(5));
    assert_eq!((first.0, second.0), (Some(2), Some(3)));
    assert!(
        first.2["data"]["sample"]
            .as_str()
            .unwrap_or("")
            .contains("bravo")
    );
    // Then live, with nothing replayed twice.
    ingest(&c, &info, "{\"error\":\"ERROR delta failed\"}\n");
    let third = next_frame(&rx, Duration::from_secs(5));
    assert_eq!(third.0, Some(4), "{third:?}");
    // Bad resume points and filters are 400s with the JSON shape.
    for (path, code) in [
        ("/events?after=x", "invalid_query"),
        ("/events?kinds=nope", "invalid_query"),
    ] {
        let (s, v) = get(&c, &info, path);
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some(code)),
            "{path}"
        );
    }
    let r = c
        .get(info.api_url("/events"))
        .header("last-event-id", "abc")
        .send()
        .expect("GET");
    assert_eq!(r.status().as_u16(), 400);
    // An id ahead of the log: a gap message first.
    let rx = open_events(&info, "", Some(1000));
    let (id, event, data) = next_frame(&rx, Duration::from_secs(5));
    assert_eq!((id, event.as_str()), (None, "gap"), "{data}");
    assert_eq!(data["after"], 1000);
    assert!(d.term(Duration::from_secs(10)).success());
}

#[test]
fn incident_pages_walk_everything_once_while_new_incidents_arrive() {
    let (_ws, d, info) = setup();
    let c = http();
    let word = |i: u32| -> String {
        let a = (b'a' + (i / 26) as u8) as char;
        let b = (b'a' + (i % 26) as u8) as char;
        format!("{a}{b}zz")
    };
    let body: String = (0..25)
        .map(|i| format!("{{\"error\":\"ERROR {} failed\"}}\n", word(i)))
        .collect();
    ingest(&c, &info, &body);
    let ready = crate::harness::eventually(Duration::from_secs(10), || {
        let (_, v) = get(&c, &info, "/incidents?limit=1000");
        (v["incidents"].as_array().map_or(0, Vec::len) == 25).then_some(())
    });
    assert!(ready.is_some());
    let mut seen = Vec::new();
    let mut path = "/incidents?limit=10".to_string();
    let mut new = 100;
    loop {
        let (s, v) = get(&c, &info, &path);
        assert_eq!(s, 200, "{v}");
        for inc in v["incidents"].as_array().expect("incidents") {
            seen.push(inc["id"].as_str().expect("id").to_string());
        }
        // A new incident arrives between pages.
        ingest(
            &c,
            &info,
            &format!("{{\"error\":\"ERROR {} failed\"}}\n", word(new)),
        );
        new += 1;
        match v["next_cursor"].as_str() {
            Some(cursor) => path = format!("/incidents?limit=10&cursor={cursor}"),
            None => break,
        }
    }
    let unique: std::collections::HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no duplicates: {seen:?}");
    assert!(seen.len() >= 25, "every incident: {seen:?}");
    let (_, v) = get(&c, &info, "/incidents?since=2999-01-01T00:00:00Z");
    assert_eq!(v["incidents"], json!([]));
    assert!(d.term(Duration::from_secs(10)).success());
}

#[test]
fn events_need_the_read_token() {
    let ws = Workspace::with_config(
        "state_dir: state\napi:\n  listen: 127.0.0.1:0\n  read_token_env: T_READ\n  write_token_env: T_WRITE\n",
    );
    let mut d = ws.spawn_env(&["serve"], &[("T_READ", "r-token"), ("T_WRITE", "w-token")]);
    let info = d.ready();
    let c = reqwest::blocking::Client::builder()
        .timeout(None)
        .build()
        .expect("client");
    let r = c.get(info.api_url("/events")).send().expect("GET");
    assert_eq!(r.status().as_u16(), 401);
    let v: Value = r.json().expect("JSON");
    assert_eq!(v["error"]["code"], "unauthorized");
    let r = c
        .get(info.api_url("/events"))
        .bearer_auth("wrong")
        .send()
        .expect("GET");
    assert_eq!(r.status().as_u16(), 401);
    for token in ["r-token", "w-token"] {
        let r = c
            .get(info.api_url("/events"))
            .bearer_auth(token)
            .send()
            .expect("GET");
        assert_eq!(r.status().as_u16(), 200, "{token}");
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        drop(r);
    }
    // Open streams do not hold up shutdown.
    let _open = c
        .get(info.api_url("/events"))
        .bearer_auth("r-token")
        .send()
        .expect("GET");
    assert!(d.term(Duration::from_secs(3)).success());
}

/// A loopback HTTP server answering 200 `{}` to every request; returns its address.
fn tiny_server() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}");
        }
    });
    addr
}

#[test]
fn status_checks_integrations_and_fails_on_an_unreachable_one() {
    let up = tiny_server();
    let closed = crate::harness::free_port();
    let config = |arbiter: String| {
        format!(
            "state_dir: state\napi:\n  listen: 127.0.0.1:{closed}\nllm:\n  provider: openai\n  \
             base_url: http://{up}\narbiter:\n  api_endpoint: {arbiter}\n"
        )
    };
    let ws = Workspace::with_config(&config(format!("http://{up}/")));
    let out = ws.run(&["status"]);
    let text = crate::harness::stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("arbiter    ok"), "{text}");
    assert!(text.contains("llm        ok"), "{text}");
    assert!(text.contains("api        not running"), "{text}");

    let ws = Workspace::with_config(&config(format!("http://127.0.0.1:{closed}/")));
    let out = ws.run(&["status", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        crate::harness::stdout(&out)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let arbiter = v["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "arbiter")
        .expect("arbiter")
        .clone();
    assert_eq!(arbiter["state"], "unreachable", "{v}");
    assert!(
        arbiter["error"]
            .as_str()
            .unwrap_or("")
            .contains("connection failed"),
        "{v}"
    );
    assert_eq!(v["ok"], false);
}

#[test]
fn openapi_lists_every_route() {
    let (_ws, d, info) = setup();
    let c = http();
    let (s, v) = get(&c, &info, "/openapi.json");
    assert_eq!(s, 200);
    assert!(
        v["openapi"].as_str().is_some_and(|o| o.starts_with("3.")),
        "{v}"
    );
    let paths: std::collections::BTreeSet<&str> = v["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(String::as_str)
        .collect();
    let served = [
        "/events",
        "/fix",
        "/fixes",
        "/fixes/pause",
        "/fixes/resume",
        "/fixes/{id}",
        "/fixes/{id}/approve",
        "/fixes/{id}/reject",
        "/health",
        "/incidents",
        "/incidents/{id}",
        "/incidents/{id}/report",
        "/incidents/{id}/trend",
        "/manifest",
        "/metrics",
        "/metrics.json",
        "/openapi.json",
        "/register",
        "/status",
        "/trend",
        "/triage",
    ];
    assert_eq!(paths, served.into_iter().collect(), "{v}");
    // Every listed GET route answers (not the fallback's 404).
    for p in served.iter().filter(|p| {
        ![
            "/register",
            "/events",
            "/fix",
            "/triage",
            "/fixes/pause",
            "/fixes/resume",
        ]
        .contains(p)
            && !p.ends_with("/approve")
            && !p.ends_with("/reject")
    }) {
        let p = p.replace("{id}", "000000000000");
        let r = c.get(info.api_url(&p)).send().expect("GET");
        let code = r.status().as_u16();
        let body = r.text().unwrap_or_default();
        assert!(
            code == 200
                || (code == 404 && (body.contains("no incident") || body.contains("no fix"))),
            "{p}: {code} {body}"
        );
    }
    assert!(v["paths"]["/register"]["post"].is_object(), "{v}");
    assert!(d.term(Duration::from_secs(10)).success());
}

/// A stream whose client reads nothing while 100,000 events are logged holds no more than a
/// small batch: when its client reads again it gets every event in order from where it
/// stopped (or, had the log pruned them, one `gap` first and then everything kept).
#[test]
fn a_stream_stalled_through_100000_events_then_gets_them_all_in_order() {
    use std::io::BufRead;
    let (ws, d, info) = setup();
    let c = http();
    let start = ws.store().map_or(0, |s| s.event_head());
    // Opened, then not read: its socket fills and the daemon stops writing to it.
    let stalled = reqwest::blocking::Client::builder()
        .timeout(None)
        .build()
        .expect("client")
        .get(info.api_url(&format!("/events?after={start}")))
        .send()
        .expect("GET /events");
    assert_eq!(stalled.status().as_u16(), 200);

    // 100,000 distinct errors (letters, not digits, tell them apart), 1,000 per request.
    let word = |mut i: u32| -> String {
        let mut w = String::new();
        for _ in 0..4 {
            w.push((b'g' + (i % 20) as u8) as char);
            i /= 20;
        }
        w
    };
    let total = 100_000u32;
    for batch in 0..total / 1000 {
        let body: String = (batch * 1000..(batch + 1) * 1000)
            .map(|i| format!("{{\"error\":\"ERROR stalled {} failed\"}}\n", word(i)))
            .collect();
        loop {
            let r = c
                .post(info.webhook_url("hook"))
                .header("content-type", "application/x-ndjson")
                .body(body.clone())
                .send()
                .expect("POST");
            match r.status().as_u16() {
                200 => break,
                // Back-pressure: retried as a client would (pacing, not synchronisation).
                429 | 503 => std::thread::sleep(Duration::from_millis(50)),
                s => panic!("unexpected status {s}"),
            }
        }
    }
    let head = crate::harness::eventually(Duration::from_secs(120), || {
        let head = ws.store()?.event_head();
        (head >= start + u64::from(total)).then_some(head)
    })
    .expect("every event logged within 120 s");
    // What 200 stalled streams cost during a flood is measured by bench/sse_stalled.sh.
    let hwm = crate::harness::vm_hwm_kib(info.pid).expect("VmHWM");
    eprintln!("daemon peak RSS {} MiB with one stalled stream", hwm / 1024);

    // Now read: every event after `start` in order, or a gap and then every one kept.
    let mut lines = std::io::BufReader::new(stalled).lines();
    let (mut expect, mut got, mut gaps) = (start + 1, 0u64, 0);
    let (mut id, mut event) = (None::<u64>, String::new());
    while expect <= head {
        let line = lines.next().expect("stream open").expect("read");
        if let Some(v) = line.strip_prefix("id: ") {
            id = v.parse().ok();
        } else if let Some(v) = line.strip_prefix("event: ") {
            event = v.to_string();
        } else if let Some(v) = line.strip_prefix("data: ")
            && event == "gap"
        {
            let gap: Value = serde_json::from_str(v).expect("gap JSON");
            assert_eq!(got, 0, "a gap only comes first: {gap}");
            gaps += 1;
            expect = gap["oldest"].as_u64().expect("oldest");
        } else if line.is_empty() && event != "gap" && !event.is_empty() {
            assert_eq!(id, Some(expect), "events in order, none missing");
            expect += 1;
            got += 1;
            event.clear();
        } else if line.is_empty() {
            event.clear();
        }
    }
    eprintln!("read {got} events after the stall ({gaps} gap)");
    assert!(got >= u64::from(total) / 2, "{got}");
    let m = c
        .get(info.api_url("/metrics"))
        .send()
        .expect("GET")
        .text()
        .expect("text");
    assert!(m.contains("sentinel_sse_streams 1"), "{m}");
    assert!(d.term(Duration::from_secs(10)).success());
}
