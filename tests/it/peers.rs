//! Sentinel against fakes of its real peers, served on loopback by the test: a Ledger and a
//! Chronicler that answer as the real projects do. Their shapes come from those projects'
//! sources — jmcentire/ledger at 8f61281 (`src/api/api.py`: `POST /backends`, `POST
//! /schemas`, `GET /annotations`, `GET /export/{json|csv|yaml}` and 422 for any other format)
//! and jmcentire/chronicler at 4c6ca43 (`src/chronicler/sources/webhook.py`: `POST /events`
//! validating its `Event` model, 415/400 otherwise) — so Sentinel drifting from what the real
//! ones accept fails here. Each fake stops when dropped.

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

// ---------------------------------------------------------------------------------------
// Chronicler (jmcentire/chronicler src/chronicler/sources/webhook.py)

#[derive(Debug, Default)]
struct ChroniclerState {
    /// Every request: path, status answered, body.
    seen: Vec<(String, u16, Value)>,
    /// Answer 503 to this many more valid events before accepting.
    unavailable: usize,
}

pub(crate) struct FakeChronicler {
    state: Arc<Mutex<ChroniclerState>>,
    server: FakeServer,
}

/// `^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`
fn is_uuid4(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            14 => c == '4',
            19 => matches!(c, '8' | '9' | 'a' | 'b'),
            _ => c.is_ascii_digit() || ('a'..='f').contains(&c),
        })
}

/// `^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$`
fn is_zoned_iso8601(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|x| x.iter().all(u8::is_ascii_digit));
    if b.len() < 20
        || !(digits(0..4) && b[4] == b'-' && digits(5..7) && b[7] == b'-' && digits(8..10))
        || !(b[10] == b'T' && digits(11..13) && b[13] == b':' && digits(14..16))
        || !(b[16] == b':' && digits(17..19))
    {
        return false;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    rest == "Z"
        || (rest.len() == 6
            && matches!(rest.as_bytes()[0], b'+' | b'-')
            && rest.as_bytes()[3] == b':'
            && rest[1..3]
                .bytes()
                .chain(rest[4..].bytes())
                .all(|c| c.is_ascii_digit()))
}

/// Chronicler's `WebhookSource._handle_post` and `Event.model_validate`: the status and body
/// it answers.
fn chronicler_validate(r: &Request) -> Result<Value, (u16, String)> {
    let bad = |m: String| (400, json!({"error": m}).to_string());
    if !r
        .content_type
        .to_ascii_lowercase()
        .starts_with("application/json")
    {
        return Err((415, r#"{"error": "Unsupported Media Type"}"#.into()));
    }
    if r.body.is_empty() {
        return Err(bad("Empty body".into()));
    }
    let v: Value =
        serde_json::from_slice(&r.body).map_err(|e| bad(format!("Invalid JSON: {e}")))?;
    let Some(o) = v.as_object() else {
        return Err(bad("Body must be a JSON object".into()));
    };
    let mut errors = Vec::new();
    for k in ["event_id", "event_kind", "timestamp", "source"] {
        match o.get(k) {
            None => errors.push(format!("{k}: Field required")),
            Some(Value::String(_)) => {}
            Some(_) => errors.push(format!("{k}: Input should be a valid string")),
        }
    }
    if let Some(Value::String(id)) = o.get("event_id")
        && !is_uuid4(id)
    {
        errors.push(format!("event_id must be a valid UUID4: {id:?}"));
    }
    if let Some(Value::String(t)) = o.get("timestamp")
        && !is_zoned_iso8601(t)
    {
        errors.push(format!("timestamp must be ISO 8601 with timezone: {t:?}"));
    }
    if o.get("payload").is_some_and(|p| !p.is_object()) {
        errors.push("payload: Input should be a valid dictionary".into());
    }
    if o.get("correlation_keys")
        .is_some_and(|c| !(c.is_object() || c.is_array()))
    {
        errors.push("correlation_keys: Input should be a valid list or dictionary".into());
    }
    if errors.is_empty() {
        Ok(v)
    } else {
        Err(bad(format!("Invalid event: {}", errors.join("; "))))
    }
}

impl FakeChronicler {
    pub(crate) fn start() -> FakeChronicler {
        let state = Arc::new(Mutex::new(ChroniclerState::default()));
        let st = state.clone();
        let server = FakeServer::start(Arc::new(move |r: &Request| {
            let mut s = st.lock().expect("lock");
            let body = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            let (status, text) = if r.method != "POST" || r.path != "/events" {
                (
                    if r.path == "/events" { 405 } else { 404 },
                    "{}".to_string(),
                )
            } else {
                match chronicler_validate(r) {
                    Err(e) => e,
                    Ok(_) if s.unavailable > 0 => {
                        s.unavailable -= 1;
                        (503, r#"{"error":"unavailable"}"#.into())
                    }
                    Ok(v) => (
                        200,
                        json!({"event_id": v["event_id"], "status": "accepted"}).to_string(),
                    ),
                }
            };
            s.seen.push((r.path.clone(), status, body));
            (status, text)
        }));
        FakeChronicler { state, server }
    }

    pub(crate) fn url(&self) -> String {
        self.server.url()
    }

    pub(crate) fn unavailable_for(&self, n: usize) {
        self.state.lock().expect("lock").unavailable = n;
    }

    pub(crate) fn seen(&self) -> Vec<(String, u16, Value)> {
        self.state.lock().expect("lock").seen.clone()
    }

    /// The events it accepted, in arrival order.
    pub(crate) fn accepted(&self) -> Vec<Value> {
        self.seen()
            .into_iter()
            .filter(|(_, s, _)| *s == 200)
            .map(|(_, _, b)| b)
            .collect()
    }
}

/// What every accepted Sentinel event must look like beyond Chronicler's webhook check: its
/// core model's shapes (`schemas.py`: `EventKind` `^[a-z][a-z0-9_.]{0,254}$`, correlation
/// keys a `{str: non-empty str}` map).
pub(crate) fn assert_sentinel_event(e: &Value) {
    let kind = e["event_kind"].as_str().unwrap_or("");
    assert!(kind.starts_with("sentinel.incident."), "{e}");
    assert!(
        kind.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'.'),
        "{e}"
    );
    assert_eq!(e["source"], "sentinel", "{e}");
    let keys = e["correlation_keys"].as_object().expect("a map");
    assert!(keys.contains_key("incident_id"), "{e}");
    assert!(
        keys.values()
            .all(|v| v.as_str().is_some_and(|s| !s.is_empty())),
        "{e}"
    );
    assert_eq!(
        e["payload"]["incident_id"], e["correlation_keys"]["incident_id"],
        "{e}"
    );
    assert!(
        e["timestamp"]
            .as_str()
            .is_some_and(|t| t.parse::<jiff::Timestamp>().is_ok())
    );
}

#[test]
fn the_fake_chronicler_refuses_what_sentinel_used_to_send() {
    let c = FakeChronicler::start();
    let post = |ct: &str, body: &str| {
        let r = http()
            .post(format!("{}/events", c.url()))
            .header("content-type", ct)
            .body(body.to_string())
            .send()
            .expect("POST");
        (r.status().as_u16(), r.text().unwrap_or_default())
    };
    let (status, text) = post(
        "application/json",
        r#"{"incident_id":"abc","component_id":"auth","pact_key":"PACT:auth:login","severity":"high","signal_count":1,"spend_usd":0.0,"event":"incident.detected","timestamp":"2026-12-06T06:00:00Z"}"#,
    );
    assert_eq!(status, 400);
    for k in ["event_id", "event_kind", "source"] {
        assert!(text.contains(k), "{text}");
    }
    assert_eq!(post("text/plain", "{}").0, 415);
    let ok = r#"{"event_id":"3f2a1c9e-1b2c-4d5e-8f90-123456789abc","event_kind":"sentinel.incident.detected","timestamp":"2026-12-06T06:00:00.123Z","source":"sentinel"}"#;
    assert_eq!(post("application/json", ok).0, 200);
    assert_eq!(
        post("application/json", &ok.replace(".123Z", "")).0,
        400,
        "no zone"
    );
    assert_eq!(
        post("application/json", &ok.replace("-4d5e-", "-1d5e-")).0,
        400,
        "not version 4"
    );
}

#[test]
fn chronicler_accepts_every_event_and_a_retry_is_the_same_event() {
    let chronicler = FakeChronicler::start();
    // The first delivery meets a Chronicler that is not ready; the retry must be the same
    // event.
    chronicler.unavailable_for(1);
    let ws = Workspace::with_config(&format!(
        "state_dir: state\napi:\n  listen: 127.0.0.1:0\nsources:\n  - type: file\n    path: logs/*.log\n\
         chronicler:\n  enabled: true\n  endpoint: {}/events\n",
        chronicler.url()
    ));
    let out = ws.run(&["manifest", "add", "auth_module", "--allow-missing"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = ws.file("logs/app.log", "");
    let mut d = ws.spawn(&["watch"]);
    d.ready();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .expect("open log");
    writeln!(f, "ERROR [PACT:auth_module:login] token signature mismatch").expect("append");
    // With auto_remediate off and the default threshold: detected, then escalated.
    let got = eventually(Duration::from_secs(30), || {
        let a = chronicler.accepted();
        (a.len() >= 2).then_some(a)
    })
    .unwrap_or_else(|| panic!("{:?}\n{}", chronicler.seen(), d.log_text()));
    let seen = chronicler.seen();
    assert!(
        seen.iter()
            .all(|(path, status, _)| path == "/events" && *status != 400),
        "{seen:?}"
    );
    assert_eq!(seen[0].1, 503, "{seen:?}");
    assert_eq!(
        seen[0].2["event_id"], got[0]["event_id"],
        "the retry is the same event"
    );
    let kinds: Vec<&str> = got
        .iter()
        .map(|e| e["event_kind"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        kinds,
        ["sentinel.incident.detected", "sentinel.incident.escalated"],
        "{got:?}"
    );
    for e in &got {
        assert_sentinel_event(e);
        assert_eq!(e["correlation_keys"]["component_id"], "auth_module", "{e}");
        assert_eq!(
            e["correlation_keys"]["pact_key"], "PACT:auth_module:login",
            "{e}"
        );
        assert_eq!(e["payload"]["component_id"], "auth_module", "{e}");
        assert_eq!(e["payload"]["severity"], "medium", "{e}");
    }
    assert_ne!(got[0]["event_id"], got[1]["event_id"]);
    assert_eq!(
        got[0]["correlation_keys"]["incident_id"],
        got[1]["correlation_keys"]["incident_id"]
    );
    d.term(Duration::from_secs(10));
}
