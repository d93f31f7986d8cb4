//! Sentinel against fakes of its real peers, served on loopback by the test, that answer as
//! the real projects do. The Ledger's shapes come from jmcentire/ledger at 8f61281
//! (`src/api/api.py`: `POST /backends`, `POST /schemas`, `GET /annotations`, `GET
//! /export/{json|csv|yaml}` and 422 for any other format), so Sentinel drifting from what the
//! real one serves fails here. Each fake stops when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Workspace, eventually, http, stderr};

/// One request as a fake saw it.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) content_type: String,
    pub(crate) body: Vec<u8>,
}

type Handler = dyn Fn(&Request) -> (u16, String) + Send + Sync;

/// A one-connection-at-a-time HTTP/1.1 server on loopback; every answer closes the
/// connection. Stopped (and its thread joined) on drop.
pub(crate) struct FakeServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeServer {
    pub(crate) fn start(handler: Arc<Handler>) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::Acquire) {
                    break;
                }
                if let Ok(conn) = conn {
                    serve(conn, &*handler);
                }
            }
        });
        FakeServer {
            port,
            stop,
            thread: Some(thread),
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wakes the accept loop, which then sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(conn: TcpStream, handler: &Handler) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let (mut len, mut content_type) = (0usize, String::new());
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            return;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            } else if k.eq_ignore_ascii_case("content-type") {
                content_type = v.trim().to_string();
            }
        }
    }
    let mut body = vec![0; len];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let (status, text) = handler(&Request {
        method,
        path,
        content_type,
        body,
    });
    let mut conn = reader.into_inner();
    let _ = write!(
        conn,
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    );
}

// ---------------------------------------------------------------------------------------
// Ledger (jmcentire/ledger src/api/api.py, InMemoryRegistry)

/// A registered schema: backend, table, its YAML, and its annotations as (column, item).
#[derive(Debug)]
struct Schema {
    backend: String,
    table: String,
    yaml: String,
    annotations: Vec<(String, Value)>,
}

#[derive(Debug, Default)]
struct LedgerState {
    /// (backend_id, display_name, description), in registration order.
    backends: Vec<(String, String, String)>,
    /// In registration order.
    schemas: Vec<Schema>,
    /// Answer 503 to everything (Ledger down behind its proxy).
    down: bool,
    /// `GET /annotations` requests served (2xx), and answered while down.
    annotations_served: usize,
    refused_while_down: usize,
}

pub(crate) struct FakeLedger {
    state: Arc<Mutex<LedgerState>>,
    server: FakeServer,
}

fn detail(status: u16, msg: &str) -> (u16, String) {
    (status, json!({"error": msg, "violations": []}).to_string())
}

impl FakeLedger {
    pub(crate) fn start() -> FakeLedger {
        let state = Arc::new(Mutex::new(LedgerState::default()));
        let st = state.clone();
        let server = FakeServer::start(Arc::new(move |r: &Request| {
            ledger_answer(&mut st.lock().expect("lock"), r)
        }));
        FakeLedger { state, server }
    }

    pub(crate) fn url(&self) -> String {
        self.server.url()
    }

    fn set_down(&self, down: bool) {
        self.state.lock().expect("lock").down = down;
    }

    fn served(&self) -> usize {
        self.state.lock().expect("lock").annotations_served
    }

    fn refused(&self) -> usize {
        self.state.lock().expect("lock").refused_while_down
    }

    /// Seeds it through its own API, as `curl` would: a backend, then a schema whose YAML
    /// annotates columns.
    pub(crate) fn seed(&self, backend: &str, table: &str, yaml: &str) {
        let post = |path: &str, body: Value| {
            let r = http()
                .post(format!("{}{path}", self.url()))
                .json(&body)
                .send()
                .expect("POST to the fake Ledger");
            let status = r.status().as_u16();
            assert!(
                status == 200 || status == 201,
                "{path}: {status} {}",
                r.text().unwrap_or_default()
            );
        };
        post(
            "/backends",
            json!({"backend_id": backend, "display_name": backend, "description": ""}),
        );
        post(
            "/schemas",
            json!({"backend_id": backend, "table_name": table, "yaml_content": yaml, "version": "1.0.0"}),
        );
    }
}

fn ledger_answer(s: &mut LedgerState, r: &Request) -> (u16, String) {
    if s.down {
        if r.path == "/annotations" {
            s.refused_while_down += 1;
        }
        return (503, r#"{"error":"upstream unavailable"}"#.into());
    }
    let body = || serde_json::from_slice::<Value>(&r.body).unwrap_or(Value::Null);
    // FastAPI's request validation: a missing required string field is a 422.
    let need = |v: &Value, keys: &[&str]| -> Result<(), (u16, String)> {
        for k in keys {
            if !v.get(*k).is_some_and(Value::is_string) {
                return Err((
                    422,
                    json!({"detail": [{"type": "missing", "loc": ["body", k]}]}).to_string(),
                ));
            }
        }
        Ok(())
    };
    // FastAPI reads a body model only from a JSON body (no content type: JSON too).
    if r.method == "POST"
        && !r.content_type.is_empty()
        && !r.content_type.to_ascii_lowercase().contains("json")
    {
        return (
            422,
            json!({"detail": [{"type": "model_attributes_type", "loc": ["body"]}]}).to_string(),
        );
    }
    match (r.method.as_str(), r.path.as_str()) {
        ("GET", "/health") => (200, json!({"status": "ok", "version": "1.0.0"}).to_string()),
        ("POST", "/backends") => {
            let v = body();
            if let Err(e) = need(&v, &["backend_id", "display_name"]) {
                return e;
            }
            let id = v["backend_id"].as_str().unwrap_or("").to_string();
            let name = v["display_name"].as_str().unwrap_or("").to_string();
            let desc = v["description"].as_str().unwrap_or("").to_string();
            let created = match s.backends.iter().find(|b| b.0 == id) {
                Some(b) if b.1 == name && b.2 == desc => false,
                Some(_) => {
                    return detail(
                        409,
                        &format!("Backend '{id}' already registered with different properties"),
                    );
                }
                None => {
                    s.backends.push((id.clone(), name.clone(), desc));
                    true
                }
            };
            (
                if created { 201 } else { 200 },
                json!({"backend_id": id, "display_name": name, "created": created}).to_string(),
            )
        }
        ("POST", "/schemas") => {
            let v = body();
            if let Err(e) = need(&v, &["backend_id", "table_name", "yaml_content"]) {
                return e;
            }
            let backend = v["backend_id"].as_str().unwrap_or("").to_string();
            let table = v["table_name"].as_str().unwrap_or("").to_string();
            let yaml = v["yaml_content"].as_str().unwrap_or("").to_string();
            if !s.backends.iter().any(|b| b.0 == backend) {
                return detail(404, &format!("Backend '{backend}' not found"));
            }
            if let Some(existing) = s
                .schemas
                .iter()
                .find(|x| x.backend == backend && x.table == table)
            {
                return if existing.yaml == yaml {
                    (
                        200,
                        json!({"backend_id": backend, "table_name": table, "created": false})
                            .to_string(),
                    )
                } else {
                    detail(
                        409,
                        &format!("Schema '{table}' already registered with different content"),
                    )
                };
            }
            let Ok(parsed) = serde_saphyr::from_str::<Value>(&yaml) else {
                return detail(400, "Invalid YAML");
            };
            // Ledger: every `columns[].annotations[]` item, as written, with the column name.
            let mut annotations = Vec::new();
            for col in parsed["columns"].as_array().into_iter().flatten() {
                let field = col["name"].as_str().unwrap_or("").to_string();
                for a in col["annotations"].as_array().into_iter().flatten() {
                    annotations.push((field.clone(), a.clone()));
                }
            }
            s.schemas.push(Schema {
                backend: backend.clone(),
                table: table.clone(),
                yaml,
                annotations,
            });
            (
                201,
                json!({"backend_id": backend, "table_name": table, "created": true}).to_string(),
            )
        }
        ("GET", "/annotations") => {
            s.annotations_served += 1;
            // Backends in registration order, then their tables (Python dicts keep order).
            let mut list = Vec::new();
            for (backend, ..) in &s.backends {
                for schema in s.schemas.iter().filter(|x| &x.backend == backend) {
                    for (field, annotation) in &schema.annotations {
                        list.push(json!({
                            "backend_id": schema.backend, "table_name": schema.table, "field": field,
                            "annotation": annotation, "propagated": false,
                        }));
                    }
                }
            }
            let n = list.len();
            (
                200,
                json!({"annotations": list, "total_count": n}).to_string(),
            )
        }
        ("GET", p) if p.starts_with("/export/") => {
            let format = &p["/export/".len()..];
            if ["json", "csv", "yaml"].contains(&format) {
                (200, json!({"format": format, "schemas": []}).to_string())
            } else {
                (
                    422,
                    json!({"error": format!("Invalid format: {format}"), "violations": [
                        {"message": "Supported formats: ['csv', 'json', 'yaml']", "severity": "error"}
                    ]})
                    .to_string(),
                )
            }
        }
        _ => (404, r#"{"detail":"Not Found"}"#.into()),
    }
}

/// The issue's schema: `payment.card_number` annotated `encrypted_at_rest, pii_field`,
/// `payment.email` `gdpr_erasable`.
pub(crate) const PAYMENT_SCHEMA: &str = "table: payment
columns:
  - name: id
    type: bigint
    annotations: [primary_key]
  - name: card_number
    type: varchar(19)
    annotations: [encrypted_at_rest, pii_field]
  - name: email
    type: text
    annotations: [gdpr_erasable]
  - name: amount
    type: numeric
";

const PAYMENT_LOG: &str = "\
2026-12-06T10:00:00Z ERROR [PACT:payment_processor:charge_card] cannot store payment.card_number: cipher not configured\n\
2026-12-06T10:00:01Z ERROR [PACT:payment_processor:receipt] mail bounced for payment.email\n\
2026-12-06T10:00:02Z ERROR [PACT:payment_processor:refund] timeout after 30s\n";

/// method -> severity, from `report --json`.
fn severities(ws: &Workspace) -> std::collections::BTreeMap<String, String> {
    let out = ws.run(&["report", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("report JSON");
    v.as_array()
        .expect("a list")
        .iter()
        .map(|i| {
            (
                i["method"].as_str().unwrap_or("").to_string(),
                i["severity"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn only_ledger_api_gives_ledgers_severities_from_its_annotations() {
    let ledger = FakeLedger::start();
    ledger.seed("pg", "payment", PAYMENT_SCHEMA);
    // What the reference asked for does not exist on the real Ledger.
    let r = http()
        .get(format!("{}/export/sentinel", ledger.url()))
        .send()
        .expect("GET");
    assert_eq!(r.status().as_u16(), 422);

    let ws = Workspace::with_config(&format!(
        "state_dir: state\nledger:\n  ledger_api: {}\n",
        ledger.url()
    ));
    ws.file("app.log", PAYMENT_LOG);
    let out = ws.run(&["scan", "app.log"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("WARN"), "{}", stderr(&out));
    assert_eq!(ledger.served(), 1);
    let s = severities(&ws);
    assert_eq!(s["charge_card"], "critical", "encrypted_at_rest, pii_field");
    assert_eq!(s["receipt"], "high", "gdpr_erasable");
    assert_eq!(s["refund"], "medium", "names no annotated field");

    // The table is configurable: Ledger's `gdpr_erasable` made critical here.
    let ws = Workspace::with_config(&format!(
        "state_dir: state\nledger:\n  ledger_api: {}\n  annotation_severity:\n    gdpr_erasable: critical\n",
        ledger.url()
    ));
    ws.file("app.log", PAYMENT_LOG);
    let out = ws.run(&["scan", "app.log"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(severities(&ws)["receipt"], "critical");
}

/// Severities of the incidents whose sample contains `needle`, from the store (read while
/// the daemon runs).
fn severity_of(ws: &Workspace, needle: &str) -> Option<String> {
    let store = ws.store()?;
    store
        .recent_incidents(1000)
        .ok()?
        .into_iter()
        .find(|i| i.sample.contains(needle))
        .map(|i| i.severity.to_string())
}

#[test]
fn the_daemon_refreshes_ledger_and_keeps_the_last_good_mapping_while_it_is_down() {
    let ledger = FakeLedger::start();
    ledger.seed("pg", "payment", PAYMENT_SCHEMA);
    let ws = Workspace::with_config(&format!(
        "state_dir: state\napi:\n  listen: 127.0.0.1:0\nsources:\n  - type: file\n    path: logs/*.log\nledger:\n  ledger_api: {}\n  refresh_seconds: 1\n",
        ledger.url()
    ));
    let log = ws.file("logs/app.log", "");
    let append = |line: &str| {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .expect("open log");
        writeln!(f, "{line}").expect("append");
    };
    let mut d = ws.spawn(&["watch"]);
    d.ready();
    append("ERROR [PACT:payment_processor:charge_card] cannot store payment.card_number");
    append(
        r#"{"level":"error","msg":"rejected","field":"email","pact_key":"PACT:payment_processor:receipt"}"#,
    );
    append("ERROR [PACT:payment_processor:refund] timeout after 30s");
    let want = [
        ("payment.card_number", "critical"),
        (r#""field":"email""#, "high"),
        ("timeout after 30s", "medium"),
    ];
    for (needle, sev) in want {
        let got = eventually(Duration::from_secs(20), || severity_of(&ws, needle));
        assert_eq!(got.as_deref(), Some(sev), "{needle}\n{}", d.log_text());
    }

    // Ledger goes down for several refreshes: the last good mapping stays in force.
    ledger.set_down(true);
    eventually(Duration::from_secs(20), || {
        (ledger.refused() >= 3).then_some(())
    })
    .unwrap_or_else(|| panic!("no refresh while down\n{}", d.log_text()));
    append("ERROR [PACT:payment_processor:charge_card] again payment.card_number rejected");
    let got = eventually(Duration::from_secs(20), || {
        severity_of(&ws, "again payment.card_number")
    });
    assert_eq!(got.as_deref(), Some("critical"), "{}", d.log_text());

    // Back, with one more annotated field: new incidents naming it follow the new mapping.
    ledger.set_down(false);
    ledger.seed(
        "pg",
        "ledger_entry",
        "columns:\n  - name: posted_at\n    annotations: [immutable]\n",
    );
    let after = ledger.served();
    // Two more reads: the first carried the new schema, and was applied before the second.
    eventually(Duration::from_secs(20), || {
        (ledger.served() >= after + 2).then_some(())
    })
    .unwrap_or_else(|| panic!("no refresh after coming back\n{}", d.log_text()));
    append("ERROR [PACT:ledger_svc:post] update of ledger_entry.posted_at refused");
    let got = eventually(Duration::from_secs(20), || {
        severity_of(&ws, "ledger_entry.posted_at")
    });
    assert_eq!(got.as_deref(), Some("critical"), "{}", d.log_text());

    // One warning when it went down, one when it came back: no flood.
    let text = d.log_text();
    assert_eq!(
        text.matches("keeping its last good severity overrides")
            .count(),
        1,
        "{text}"
    );
    assert_eq!(text.matches("answers again").count(), 1, "{text}");
    assert!(text.contains("answered HTTP 503"), "{text}");
    d.term(Duration::from_secs(10));
}
