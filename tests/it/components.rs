//! `init`, `register`, `manifest`, `triage`, severity with Ledger, live attribution: the
//! real binary against `testdata/pact_project` and `../shared/pact-sample`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::{Workspace, eventually, stderr, stdout};

fn pact_project() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/pact_project")
}

fn manifest_json(ws: &Workspace) -> serde_json::Value {
    let text = std::fs::read_to_string(ws.path().join("state/manifest.json")).expect("manifest");
    serde_json::from_str(&text).expect("manifest JSON")
}

#[test]
fn init_register_show_and_init_again_keeps_the_manifest() {
    let ws = Workspace::new();
    // `init` in a directory without sentinel.yaml writes the commented defaults.
    let fresh = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(crate::harness::BIN)
        .current_dir(fresh.path())
        .env("HOME", fresh.path())
        .env_remove("SENTINEL_CONFIG")
        .arg("init")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "Created sentinel.yaml\nInitialized .sentinel/\n"
    );
    let yaml = std::fs::read_to_string(fresh.path().join("sentinel.yaml")).unwrap();
    assert!(
        yaml.contains("# ") && yaml.contains("budget_per_fix: 2.0"),
        "{yaml}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(fresh.path().join(".sentinel"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    assert!(fresh.path().join(".sentinel/proposed_contracts").is_dir());

    // In the workspace (its own sentinel.yaml, state_dir: state).
    let out = ws.run(&["init"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "Initialized state/\n",
        "sentinel.yaml is kept"
    );
    let out = ws.run(&["register", pact_project().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let project = std::fs::canonicalize(pact_project()).unwrap();
    assert_eq!(
        stdout(&out),
        format!(
            "  Registered: auth_module\n  Registered: cart_service\n  Registered: payment_processor\n\n\
             Registered 3 components from {}\n",
            project.display()
        )
    );
    let err = stderr(&out);
    assert!(
        err.contains("Skipped: legacy_billing") && err.contains("not valid JSON"),
        "the broken contract is reported: {err}"
    );
    let m = manifest_json(&ws);
    let auth = &m["components"]["auth_module"];
    assert_eq!(auth["language"], "python");
    assert_eq!(m["components"]["cart_service"]["language"], "typescript");
    assert_eq!(
        auth["contract_path"],
        project
            .join("contracts/auth_module/interface.json")
            .to_str()
            .unwrap()
    );
    assert_eq!(auth["pact_project"], project.to_str().unwrap());
    assert!(m["components"].get("legacy_billing").is_none());

    let out = ws.run(&["manifest", "show"]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.starts_with("  auth_module\n    contract: /"), "{text}");
    assert!(text.contains("    language: typescript\n"), "{text}");

    let out = ws.run(&["manifest", "show", "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown, m);

    // init again: the manifest is kept; --force rewrites only sentinel.yaml.
    for args in [&["init"][..], &["init", "--force"]] {
        let out = ws.run(args);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(manifest_json(&ws), m, "{args:?} kept the manifest");
    }
    let yaml = std::fs::read_to_string(ws.path().join("sentinel.yaml")).unwrap();
    assert!(yaml.starts_with("# sentinel.yaml"), "--force rewrote it");
}

#[test]
fn register_reports_json_vanished_components_and_prunes() {
    let ws = Workspace::new();
    let proj = ws.path().join("proj");
    for id in ["a", "b"] {
        ws.file(
            &format!("proj/contracts/{id}/interface.json"),
            format!(r#"{{"component_id": "{id}", "functions": []}}"#),
        );
    }
    ws.file("proj/src/b/main.go", "package b\n");
    ws.file("proj/contracts/c/interface.json", "[]");
    let out = ws.run(&["register", "--json", proj.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["registered"], serde_json::json!(["a", "b"]));
    assert_eq!(v["skipped"][0]["component_id"], "c");
    assert_eq!(manifest_json(&ws)["components"]["b"]["language"], "go");

    std::fs::remove_dir_all(proj.join("contracts/a")).unwrap();
    let out = ws.run(&["register", proj.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("no longer exist in it: a (--prune removes them)"),
        "{}",
        stderr(&out)
    );
    assert!(manifest_json(&ws)["components"].get("a").is_some());
    let out = ws.run(&["register", "--prune", proj.to_str().unwrap()]);
    assert!(stdout(&out).contains("  Pruned: a\n"), "{}", stdout(&out));
    assert!(manifest_json(&ws)["components"].get("a").is_none());
}

#[test]
fn bad_input_is_reported_clearly_and_never_empties_the_manifest() {
    let ws = Workspace::new();
    let out = ws.run(&["register", "no/such/dir"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no/such/dir does not exist"),
        "{}",
        stderr(&out)
    );

    let out = ws.run(&["register", ws.path().to_str().unwrap()]);
    assert!(out.status.success());
    assert!(stdout(&out).starts_with("No components found in "));

    let out = ws.run(&["manifest", "add", "bad-id"]);
    assert_eq!(out.status.code(), Some(2));
    let out = ws.run(&["manifest", "add", "x", "--source", "missing/dir"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--allow-missing"), "{}", stderr(&out));
    let out = ws.run(&[
        "manifest",
        "add",
        "x",
        "--source",
        "missing/dir",
        "--allow-missing",
        "--language",
        "Rust",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "Registered x\n");
    let m = manifest_json(&ws);
    assert_eq!(m["components"]["x"]["language"], "rust");
    assert!(
        m["components"]["x"]["source_path"]
            .as_str()
            .unwrap()
            .starts_with('/')
    );

    // A manifest edited into invalid JSON: every command names the file; nothing empties it.
    let broken = "{\"components\": {\"x\": ";
    ws.file("state/manifest.json", broken);
    for args in [
        &["manifest", "show"][..],
        &["register", pact_project().to_str().unwrap()],
        &["triage", "PACT:x:y"],
        &["init"],
    ] {
        let out = ws.run(args);
        assert!(
            !out.status.success(),
            "{args:?} succeeded on a broken manifest"
        );
        assert!(
            stderr(&out).contains("state/manifest.json is not valid"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert_eq!(
        std::fs::read_to_string(ws.path().join("state/manifest.json")).unwrap(),
        broken
    );
}

#[test]
fn triage_prints_the_reference_lines() {
    let ws = Workspace::new();
    let out = ws.run(&["triage", "anything"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "No components registered. Use 'sentinel register <dir>' first.\n"
    );
    let out = ws.run(&["register", pact_project().to_str().unwrap()]);
    assert!(out.status.success());

    let out = ws.run(&[
        "triage",
        "ERROR [PACT:auth_module:validate_token] IndexError: list index out of range",
    ]);
    assert!(out.status.success());
    assert_eq!(
        stdout(&out),
        "component_id: auth_module\nconfidence:   1.0\nreasoning:    PACT key \
         'PACT:auth_module:validate_token' found in error text, matched to registered component\n"
    );
    let out = ws.run(&["triage", "ERROR [PACT:ghost_service:run] boom"]);
    assert!(out.status.success());
    assert_eq!(
        stdout(&out),
        "component_id: unknown\nconfidence:   0.5\nreasoning:    PACT key \
         'PACT:ghost_service:run' found but component not registered in manifest\n"
    );
    let out = ws.run(&["triage", "ERROR no key at all"]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        text.starts_with("component_id: unknown\nconfidence:   0.0\nreasoning:    No PACT key"),
        "{text}"
    );

    // `-` reads stdin; --json for scripts; the preamble form attributes by its 2nd segment.
    let mut child = std::process::Command::new(crate::harness::BIN)
        .current_dir(ws.path())
        .env("HOME", ws.path())
        .args(["triage", "-", "--json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"[PACT:9e1c2d:payment_processor] charge failed\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["component_id"], "payment_processor");
    assert_eq!(v["confidence"], 1.0);
}

/// Serves `body` to every GET until the returned guard is dropped; returns the base URL.
fn serve_ledger(body: &'static str, status: u16) -> (String, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        // One request is all a scan makes; serve it and stop.
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            assert!(
                got.starts_with(b"GET /export/sentinel "),
                "{}",
                String::from_utf8_lossy(&got)
            );
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (format!("http://{addr}"), t)
}

const SEVERITY_LOG: &str = "\
2026-11-30T10:00:00Z ERROR [PACT:auth_module:erase] gdpr_erasable field email could not be erased\n\
2026-11-30T10:00:01Z ERROR [PACT:auth_module:audit] audit_field created_by was deleted by migration\n\
2026-11-30T10:00:02Z ERROR [PACT:payment_processor:charge_card] rejected write to payment.card.number\n\
2026-11-30T10:00:03Z ERROR [PACT:payment_processor:refund] timeout after 30s\n";

fn severities(ws: &Workspace) -> std::collections::BTreeMap<String, String> {
    let out = ws.run(&["report", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["method"].as_str().unwrap().to_string(),
                i["severity"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn severity_rules_and_ledger_mappings_from_a_file_and_from_ledger() {
    // Ledger's own export shape, from a file.
    let ws = Workspace::with_config("state_dir: state\nledger:\n  mappings_file: ledger.json\n");
    ws.file(
        "ledger.json",
        r#"{"severity_mappings": [{"annotation_key": "pii_field", "severity": "CRITICAL",
            "field_pattern": "*.card.number", "description": "card numbers"}]}"#,
    );
    ws.file("app.log", SEVERITY_LOG);
    let out = ws.run(&["scan", "app.log"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Registered after the scan: `register` re-attributes what the store holds.
    let out = ws.run(&["register", pact_project().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = ws.run(&["report", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .all(|i| i["attribution"] == "registered"),
        "{v:#}"
    );
    let s = severities(&ws);
    assert_eq!(s["erase"], "high", "gdpr_erasable raises to high");
    assert_eq!(s["audit"], "compliance", "audit field + deletion word");
    assert_eq!(s["charge_card"], "critical", "the Ledger mapping");
    assert_eq!(s["refund"], "medium");
    let out = ws.run(&["report"]);
    assert!(stdout(&out).contains("  compliance\n"), "{}", stdout(&out));

    // The reference's shape, served on loopback at an `/export/` URL (read as a document; a
    // base URL means Ledger's `/annotations`, see tests/it/peers.rs).
    let (url, server) = serve_ledger(
        r#"{"severity_mappings": [{"field_pattern": "card\\.number", "annotation": "pii", "sentinel_severity": "high"}]}"#,
        200,
    );
    let ws = Workspace::with_config(&format!(
        "state_dir: state\nledger:\n  ledger_api: {url}/export/sentinel\n"
    ));
    ws.file("app.log", SEVERITY_LOG);
    let out = ws.run(&["scan", "app.log"]);
    assert!(out.status.success(), "{}", stderr(&out));
    server.join().unwrap();
    assert_eq!(severities(&ws)["charge_card"], "high");

    // Ledger down or answering garbage: a warning, the defaults, and the scan goes on.
    let (url, server) = serve_ledger("<html>nope</html>", 200);
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    for api in [format!("{url}/export/sentinel"), dead] {
        let ws =
            Workspace::with_config(&format!("state_dir: state\nledger:\n  ledger_api: {api}\n"));
        ws.file("app.log", SEVERITY_LOG);
        let out = ws.run(&["scan", "app.log"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("proceeding without"),
            "{}",
            stderr(&out)
        );
        let s = severities(&ws);
        assert_eq!(
            (s["charge_card"].as_str(), s["erase"].as_str()),
            ("medium", "high")
        );
    }
    server.join().unwrap();
}

#[test]
fn a_component_registered_while_the_daemon_runs_applies_to_new_lines() {
    let ws = Workspace::with_config(
        "state_dir: state\nsources:\n  - type: file\n    path: logs/*.log\n",
    );
    let log = ws.file("logs/app.log", "");
    let mut d = ws.spawn(&["watch", "--no-api"]);
    d.ready();
    let append = |line: &str| {
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(line.as_bytes()).unwrap();
    };
    let attribution = |method: &str| {
        ws.store().and_then(|s| {
            s.recent_incidents(100)
                .ok()?
                .into_iter()
                .find(|i| i.method == method)
                .map(|i| i.attribution.as_str().to_string())
        })
    };
    append("ERROR [PACT:auth_module:before] gdpr_erasable leak\n");
    let before = eventually(Duration::from_secs(10), || attribution("before"));
    assert_eq!(before.as_deref(), Some("unregistered"), "{}", d.log_text());
    let sev = ws.store().unwrap().recent_incidents(10).unwrap()[0].severity;
    assert_eq!(sev.as_str(), "high", "a watched gdpr_erasable line is high");

    let out = ws.run(&["register", pact_project().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The daemon follows the manifest: a line after the registration is attributed (poll:
    // a line appended before the reload is picked up would still be unregistered, so keep
    // appending new ones until one is registered).
    // Method names without digits: digits are normalised away by the fingerprint, so
    // `after1` and `after2` would be one incident.
    let mut n = 0u8;
    let after = eventually(Duration::from_secs(10), || {
        n += 1;
        let method = format!("after{}", char::from(b'a' + n % 26));
        append(&format!("ERROR [PACT:auth_module:{method}] boom\n"));
        eventually(Duration::from_secs(5), || attribution(&method)).filter(|a| a == "registered")
    });
    assert!(after.is_some(), "{}", d.log_text());
    // And the incident seen before the registration is re-attributed.
    let before = eventually(Duration::from_secs(10), || {
        attribution("before").filter(|a| a == "registered")
    });
    assert!(before.is_some(), "{}", d.log_text());
    assert!(
        d.log_text().contains("manifest reloaded"),
        "{}",
        d.log_text()
    );
    let status = d.term(Duration::from_secs(5));
    assert!(status.success());
}

#[test]
fn register_against_the_real_pact_sample() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/pact-sample");
    if !sample.join("contracts").is_dir() {
        eprintln!("skipped: {} is not here", sample.display());
        return;
    }
    let ws = Workspace::new();
    let out = ws.run(&["register", "--json", sample.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["registered"],
        serde_json::json!([
            "src_sentinel_api",
            "src_sentinel_arbiter",
            "src_sentinel_attribution",
            "src_sentinel_cli",
            "src_sentinel_config"
        ])
    );
    assert_eq!(v["skipped"], serde_json::json!([]));
    let m = manifest_json(&ws);
    let comps = m["components"].as_object().unwrap();
    let with_tests = comps.values().filter(|c| c["test_path"] != "").count();
    assert_eq!(with_tests, 4, "src_sentinel_config has no tests dir");
    assert!(
        comps
            .values()
            .all(|c| c["source_path"] == "" && c["language"] == "python")
    );
    // Attribution of a preamble-form line from a real Pact project.
    let out = ws.run(&["triage", "[PACT:5d2a8e:src_sentinel_cli] crash"]);
    assert!(stdout(&out).starts_with("component_id: src_sentinel_cli\nconfidence:   1.0\n"));
}

#[test]
fn post_register_is_confined_to_the_configured_roots_and_applies_at_once() {
    let ws = Workspace::with_config(&format!(
        "state_dir: state\napi:\n  listen: 127.0.0.1:0\n  register_roots: [roots]\n\
         pact:\n  project_dir: {}\nsources:\n  - type: file\n    path: logs/*.log\n",
        pact_project().display()
    ));
    ws.file("logs/app.log", "");
    ws.file(
        "roots/other/contracts/extra_service/interface.json",
        r#"{"component_id": "extra_service"}"#,
    );
    ws.file(
        "outside/contracts/evil/interface.json",
        r#"{"component_id": "evil"}"#,
    );
    std::os::unix::fs::symlink(ws.path().join("outside"), ws.path().join("roots/escape")).unwrap();
    let mut d = ws.spawn(&["watch"]);
    let info = d.ready();
    let c = crate::harness::http();
    let post = |body: &str| {
        let r = c
            .post(info.api_url("/register"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json::<serde_json::Value>().unwrap())
    };

    // A whole project, inside pact.project_dir.
    let (s, v) = post(&format!(
        r#"{{"pact_dir": "{}"}}"#,
        pact_project().display()
    ));
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["registered"],
        serde_json::json!(["auth_module", "cart_service", "payment_processor"])
    );
    assert_eq!(v["skipped"][0]["component_id"], "legacy_billing");
    // One component, the reference's body, a path inside a register root.
    let contract = ws
        .path()
        .join("roots/other/contracts/extra_service/interface.json");
    let (s, v) = post(&format!(
        r#"{{"component_id": "extra_service", "contract_path": "{}"}}"#,
        contract.display()
    ));
    assert_eq!(
        (s, &v["status"]),
        (200, &serde_json::json!("registered")),
        "{v}"
    );
    let m: serde_json::Value = c
        .get(info.api_url("/manifest"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(m["components"].as_object().unwrap().len(), 4, "{m}");
    assert_eq!(
        m["components"]["extra_service"]["contract_path"],
        std::fs::canonicalize(&contract).unwrap().to_str().unwrap()
    );

    // Applies at once: the next line of that component is registered.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(ws.path().join("logs/app.log"))
        .unwrap();
    f.write_all(b"ERROR [PACT:extra_service:go] failed\n")
        .unwrap();
    let registered = eventually(Duration::from_secs(10), || {
        let s = ws.store()?;
        let inc = s
            .recent_incidents(10)
            .ok()?
            .into_iter()
            .find(|i| i.method == "go")?;
        Some(inc.attribution.as_str().to_string())
    });
    assert_eq!(registered.as_deref(), Some("registered"));

    // Refused: outside the roots, `..`, a symlink out, bad JSON, no id, bad id, GET.
    let outside = ws.path().join("outside");
    for (body, code) in [
        (
            format!(r#"{{"pact_dir": "{}"}}"#, outside.display()),
            "invalid_path",
        ),
        (
            r#"{"pact_dir": "roots/../outside"}"#.to_string(),
            "invalid_path",
        ),
        (
            format!(
                r#"{{"pact_dir": "{}"}}"#,
                ws.path().join("roots/escape").display()
            ),
            "invalid_path",
        ),
        (
            format!(
                r#"{{"component_id": "evil", "source_path": "{}"}}"#,
                outside.display()
            ),
            "invalid_path",
        ),
        ("{not json".to_string(), "invalid_json"),
        (r#"{"language": "go"}"#.to_string(), "missing_field"),
        (
            r#"{"component_id": "no-dashes"}"#.to_string(),
            "invalid_component_id",
        ),
        (
            r#"{"component_id": "x", "language": "cobol"}"#.to_string(),
            "invalid_language",
        ),
    ] {
        let (s, v) = post(&body);
        assert_eq!(s, 400, "{body}: {v}");
        assert_eq!(v["error"]["code"], code, "{body}: {v}");
    }
    let r = c.get(info.api_url("/register")).send().unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    let m = manifest_json(&ws);
    assert!(m["components"].get("evil").is_none());
    assert_eq!(m["components"].as_object().unwrap().len(), 4);
    assert!(d.term(Duration::from_secs(5)).success());
}
