//! The integrations outbox on the real daemon, against fake sinks served on loopback by the
//! test: an Arbiter that is down while incidents are detected receives every event exactly
//! once, in order, when it is back; a rejected event is not retried forever; a restart after
//! `kill -9` resumes from the durable cursor.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Workspace, eventually, http};

/// One request a fake sink saw: its path, the status it answered and the JSON body.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) path: String,
    pub(crate) status: u16,
    pub(crate) body: Value,
}

#[derive(Debug, Default)]
struct State {
    /// What to answer next (200 when unset).
    status: u16,
    seen: Vec<Seen>,
}

/// An HTTP endpoint on loopback answering every POST with the current status.
pub(crate) struct FakeSink {
    port: u16,
    state: Arc<Mutex<State>>,
}

impl FakeSink {
    pub(crate) fn start(status: u16) -> FakeSink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(State {
            status,
            seen: Vec::new(),
        }));
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || serve_one(conn, &st));
            }
        });
        FakeSink { port, state }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn set_status(&self, status: u16) {
        self.state.lock().expect("lock").status = status;
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.lock().expect("lock").seen.clone()
    }

    /// The bodies it accepted (answered 2xx) on `path`, in arrival order.
    pub(crate) fn accepted(&self, path: &str) -> Vec<Value> {
        self.seen()
            .into_iter()
            .filter(|s| s.path == path && s.status < 300)
            .map(|s| s.body)
            .collect()
    }
}

fn serve_one(conn: std::net::TcpStream, st: &Mutex<State>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            return;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; len];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let status = {
        let mut s = st.lock().expect("lock");
        let status = if s.status == 0 { 200 } else { s.status };
        s.seen.push(Seen {
            path,
            status,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        });
        status
    };
    let text = match status {
        200 => r#"{"status":"ok"}"#,
        400 => r#"{"error_code":"INVALID_EVENT_TYPE","message":"nope"}"#,
        _ => r#"{"error":"unavailable"}"#,
    };
    let mut conn = reader.into_inner();
    let _ = write!(
        conn,
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    );
}

fn config(arbiter: &FakeSink, extra: &str) -> String {
    format!(
        "state_dir: state
api:
  listen: 127.0.0.1:0
arbiter:
  api_endpoint: {}
sources:
  - type: webhook
    name: hook
    port: 0
  - type: file
    name: app
    path: logs/*.log
{extra}",
        arbiter.url()
    )
}

fn ingest(info: &crate::harness::DaemonInfo, lines: &[String]) {
    let body: String = lines
        .iter()
        .map(|l| format!("{}\n", serde_json::json!({ "error": l })))
        .collect();
    let r = http()
        .post(info.webhook_url("hook"))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .expect("POST");
    assert_eq!(r.status().as_u16(), 200);
}

fn metrics(info: &crate::harness::DaemonInfo) -> String {
    http()
        .get(info.api_url("/metrics"))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default()
}

/// The value of the series `series` (exact text before the value) in a scrape.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// The incident ids of the `incident_detected` events, in log order.
fn detected(ws: &Workspace) -> Vec<String> {
    let store = ws.store().expect("store");
    store
        .events_after(0, 10_000)
        .expect("events")
        .into_iter()
        .filter(|e| e.kind == sentinel::store::EventKind::IncidentDetected)
        .map(|e| e.incident_id)
        .collect()
}

fn run_ids(bodies: &[Value]) -> Vec<String> {
    bodies
        .iter()
        .map(|b| b["run_id"].as_str().unwrap_or("").to_string())
        .collect()
}

const NAMES: [&str; 5] = ["alpha", "bravo", "charlie", "delta", "echo"];

#[test]
fn arbiter_down_then_back_receives_every_event_once_in_order() {
    let arbiter = FakeSink::start(503);
    let hook = FakeSink::start(200);
    let ws = Workspace::with_config(&config(
        &arbiter,
        &format!("notify:\n  webhook_url: {}/hook\n", hook.url()),
    ));
    std::fs::create_dir_all(ws.path().join("logs")).expect("mkdir");
    let mut d = ws.spawn(&["watch"]);
    let info = d.ready();

    let lines: Vec<String> = NAMES
        .iter()
        .map(|n| format!("ERROR [PACT:{n}:run] {n} exploded"))
        .collect();
    ingest(&info, &lines);
    // The Arbiter is down: the outbox keeps retrying, and the rest of the daemon works.
    eventually(Duration::from_secs(20), || {
        (arbiter.seen().len() >= 2).then_some(())
    })
    .unwrap_or_else(|| panic!("no retries:\n{}", d.log_text()));
    let m = metrics(&info);
    assert!(
        metric(
            &m,
            r#"sentinel_outbox_failures_total{kind="transient",sink="arbiter"}"#
        )
        .is_some_and(|v| v >= 2.0),
        "{m}"
    );
    assert!(
        metric(&m, r#"sentinel_outbox_lag_events{sink="arbiter"}"#).is_some_and(|v| v >= 1.0),
        "{m}"
    );
    // The notify webhook, up all along, is not held back by the Arbiter.
    eventually(Duration::from_secs(20), || {
        (hook.accepted("/hook").len() >= 10).then_some(())
    })
    .unwrap_or_else(|| panic!("notify stalled: {:?}\n{}", hook.seen(), d.log_text()));

    arbiter.set_status(200);
    let ids = detected(&ws);
    assert_eq!(ids.len(), 5);
    eventually(Duration::from_secs(60), || {
        let m = metrics(&info);
        (arbiter.accepted("/trust/event").len() >= 5
            && metric(&m, r#"sentinel_outbox_lag_events{sink="arbiter"}"#) == Some(0.0))
        .then_some(())
    })
    .unwrap_or_else(|| panic!("not delivered: {:?}\n{}", arbiter.seen(), d.log_text()));
    let got = arbiter.accepted("/trust/event");
    // Exactly once each, in the order the incidents were detected.
    assert_eq!(run_ids(&got), ids, "{got:?}");
    for b in &got {
        assert_eq!(b["event"], "AUDIT_FAIL");
        assert_eq!(b["weight"], -0.3);
        assert!(NAMES.contains(&b["node_id"].as_str().unwrap_or("")), "{b}");
        assert!(
            b["timestamp"]
                .as_str()
                .is_some_and(|t| t.parse::<jiff::Timestamp>().is_ok()),
            "{b}"
        );
    }
    let m = metrics(&info);
    assert_eq!(
        metric(&m, r#"sentinel_outbox_delivered_total{sink="arbiter"}"#),
        Some(5.0),
        "{m}"
    );

    // notify: with the default threshold (1) and auto_remediate off, each incident is
    // detected and at once escalated: `error` then `escalated`, per incident.
    let notes = hook.accepted("/hook");
    assert_eq!(notes.len(), 10, "{notes:?}");
    for id in &ids {
        let kinds: Vec<&str> = notes
            .iter()
            .filter(|n| n["incident_id"] == id.as_str())
            .map(|n| n["event_type"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(kinds, ["error", "escalated"], "{notes:?}");
    }
    assert!(notes.iter().all(|n| n["source"] == "sentinel"));
    assert!(d.term(Duration::from_secs(10)).success());
    // What Arbiter accepted, per component, is kept with the sink's cursor (the components
    // page shows it): one trust event each.
    let store = ws.store().expect("store");
    let per_component = store.delivered_by_component("arbiter").expect("delivered");
    let expected: std::collections::BTreeMap<String, u64> =
        NAMES.iter().map(|n| (n.to_string(), 1)).collect();
    assert_eq!(per_component, expected);
}

#[test]
fn a_rejected_event_is_logged_and_skipped_not_retried_forever() {
    let arbiter = FakeSink::start(400);
    let ws = Workspace::with_config(&config(&arbiter, ""));
    std::fs::create_dir_all(ws.path().join("logs")).expect("mkdir");
    let mut d = ws.spawn(&["watch"]);
    let info = d.ready();
    ingest(
        &info,
        &[
            "ERROR [PACT:alpha:run] first".to_string(),
            "ERROR [PACT:bravo:run] second".to_string(),
        ],
    );
    eventually(Duration::from_secs(20), || {
        let m = metrics(&info);
        (metric(
            &m,
            r#"sentinel_outbox_failures_total{kind="rejected",sink="arbiter"}"#,
        ) == Some(2.0))
        .then_some(())
    })
    .unwrap_or_else(|| panic!("not rejected: {:?}\n{}", arbiter.seen(), d.log_text()));
    // The queue moves on: the next event is delivered once the Arbiter accepts again, and
    // the two rejected ones were each sent exactly once.
    arbiter.set_status(200);
    ingest(&info, &["ERROR [PACT:charlie:run] third".to_string()]);
    eventually(Duration::from_secs(20), || {
        (arbiter.accepted("/trust/event").len() == 1).then_some(())
    })
    .unwrap_or_else(|| panic!("not delivered: {:?}\n{}", arbiter.seen(), d.log_text()));
    let seen = arbiter.seen();
    let statuses: Vec<u16> = seen.iter().map(|s| s.status).collect();
    assert_eq!(statuses, [400, 400, 200], "{seen:?}");
    let m = metrics(&info);
    assert_eq!(
        metric(
            &m,
            r#"sentinel_outbox_failures_total{kind="transient",sink="arbiter"}"#
        ),
        Some(0.0),
        "{m}"
    );
    let log = d.log_text();
    assert_eq!(
        log.matches("rejected an event").count(),
        2,
        "logged once per rejected event:\n{log}"
    );
    assert!(log.contains("INVALID_EVENT_TYPE"), "{log}");
    d.term(Duration::from_secs(10));
}

#[test]
fn kill_9_and_restart_resume_from_the_durable_cursor() {
    let arbiter = FakeSink::start(200);
    let ws = Workspace::with_config(&config(&arbiter, ""));
    let log = ws.file("logs/app.log", "");
    let append = |names: &[&str]| {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .expect("open log");
        for n in names {
            writeln!(f, "ERROR [PACT:{n}:run] {n} went wrong").expect("append");
        }
    };
    let cursor = |ws: &Workspace| {
        let store = ws.store()?;
        let head = store.refresh_event_head().ok()?;
        let c = store.outbox_cursor("arbiter").ok()??;
        Some((c, head))
    };

    let mut d = ws.spawn(&["watch"]);
    d.ready();
    append(&NAMES[..2]);
    // Delivered AND acknowledged in the store: the cursor reached the head.
    eventually(Duration::from_secs(20), || {
        let (c, head) = cursor(&ws)?;
        (arbiter.accepted("/trust/event").len() == 2 && head > 0 && c == head).then_some(())
    })
    .unwrap_or_else(|| panic!("not delivered: {:?}\n{}", arbiter.seen(), d.log_text()));
    d.kill9();

    // Written while the daemon is down; read (and delivered) after the restart.
    append(&NAMES[2..]);
    let mut d = ws.spawn(&["watch"]);
    d.ready();
    eventually(Duration::from_secs(30), || {
        (arbiter.accepted("/trust/event").len() >= 5).then_some(())
    })
    .unwrap_or_else(|| panic!("not resumed: {:?}\n{}", arbiter.seen(), d.log_text()));
    let ids = detected(&ws);
    assert_eq!(ids.len(), 5);
    // Nothing lost, nothing acknowledged sent again, in order.
    eventually(Duration::from_secs(20), || {
        let (c, head) = cursor(&ws)?;
        (c == head).then_some(())
    })
    .expect("cursor at head");
    assert_eq!(run_ids(&arbiter.accepted("/trust/event")), ids);
    d.term(Duration::from_secs(10));
}
