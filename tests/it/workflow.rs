//! The product's workflow with the daemon running (issue 18): `fix`, `triage`, `approve`,
//! `reject` from another terminal go through the daemon's API and answer as they do without
//! one; `report`, `incident` and `fixes` read the store beside it; `status` shows the
//! configuration; the tool installs like a real one (completions, man page, version).
//! A scripted fake LLM on loopback, a real git repository, the real binary.

use std::io::Write;
use std::time::Duration;

use serde_json::{Value, json};

use sentinel::fix::fake_llm::{FakeLlm, Reply, Route};
use sentinel::fix::llm::Usage;

use crate::fix_e2e::{KEY, answer, config_with, project, reproducer, the_fix};
use crate::harness::{Workspace, http, stdout};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Prices that make the fake's tokens cost something (`$3` / `$15` per million).
const PRICED: &str = "  price_input_per_mtok: 3.0\n  price_output_per_mtok: 15.0\n";

#[test]
fn with_watch_running_fix_approve_reject_and_report_work_from_the_cli() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeLlm::start());
    fake.otherwise(
        Route::Anthropic,
        answer(reproducer(), the_fix(), Value::Null),
    );
    let ws = Workspace::with_config(
        &config_with(
            fake.base_url(),
            PRICED,
            "  require_approval: true\n",
            "api:\n  listen: 127.0.0.1:0\n",
        )
        .replace("auto_remediate: true", "auto_remediate: false"),
    );
    project(&ws);
    assert!(ws.run(&["register", "project"]).status.success());
    ws.file("logs/app.log", "");
    let mut d = ws.spawn_env(&["watch"], &[("FAKE_LLM_KEY", "k")]);
    let info = d.ready();
    let report = |incident: &str, accept: &str| {
        let r = http()
            .get(info.api_url(&format!("/incidents/{incident}/report")))
            .header("accept", accept)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        let kind = r.headers()["content-type"].to_str().unwrap().to_string();
        (kind, r.text().unwrap())
    };

    // `fix` while the daemon owns the store: the daemon runs it, the CLI waits and prints it.
    let out = ws.run(&["fix", KEY, "IndexError: list index out of range"]);
    assert!(
        out.status.success(),
        "{}\n{}\n{}",
        stdout(&out),
        stderr(&out),
        d.log_text()
    );
    let first: Value = serde_json::from_slice(&out.stdout).expect("a FixResult");
    assert_eq!(first["status"], "awaiting_approval", "{first:#}");
    assert!(first["spend_usd"].as_f64().unwrap() > 0.0, "{first:#}");
    let first_id = first["id"].as_str().unwrap().to_string();
    let incident = first["incident_id"].as_str().unwrap().to_string();
    let (kind, md) = report(&incident, "text/markdown");
    assert!(kind.starts_with("text/markdown"), "{kind}");
    assert!(
        md.contains("(Open)") && md.contains(&format!("sentinel approve {first_id}")),
        "{md}"
    );
    let file = ws
        .path()
        .join(format!("state/monitoring/reports/{incident}.md"));
    // (With auto_remediate off the new incident was escalated at once, so a postmortem may
    // exist already; it is rewritten as the state moves.)

    // Approve from the CLI; a second review of it is refused (exit 1, said why).
    let out = ws.run(&["approve", &first_id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with(&format!("Approved fix {first_id}")));
    let out = ws.run(&["reject", &first_id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not awaiting_approval"),
        "{}",
        stderr(&out)
    );
    // The postmortem is written once the incident ends, and served as markdown or HTML.
    let written = crate::harness::eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(&file)
            .ok()
            .filter(|t| t.contains("(Resolved)"))
    });
    assert!(written.is_some(), "{}", d.log_text());
    let (kind, page) = report(&incident, "text/html,*/*;q=0.8");
    assert!(kind.starts_with("text/html"), "{kind}");
    assert!(
        page.contains("<h2>Next steps</h2>") && page.contains("Review and merge branch"),
        "{page}"
    );
    let out = ws.run(&["approve", "000000000000"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no fix"), "{}", stderr(&out));

    // `--no-wait` prints the queued fix's id; reject it with a reason once it waits.
    let out = ws.run(&[
        "fix",
        "--no-wait",
        KEY,
        "IndexError: tuple index out of range",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let second_id = stdout(&out).trim().to_string();
    assert_eq!(second_id.len(), first_id.len(), "an id: {second_id}");
    let waiting = crate::harness::eventually(Duration::from_secs(90), || {
        let out = ws.run(&["fixes", &second_id, "--json"]);
        let f: Value = serde_json::from_slice(&out.stdout).ok()?;
        (f["status"] == "awaiting_approval").then_some(f)
    });
    assert!(waiting.is_some(), "{}", d.log_text());
    let out = ws.run(&["reject", &second_id, "--reason", "too broad a change"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = ws.run(&["fixes", &second_id, "--json"]);
    let rejected: Value = serde_json::from_slice(&out.stdout).unwrap();
    let second_incident = rejected["incident_id"].as_str().unwrap().to_string();
    let escalated = crate::harness::eventually(Duration::from_secs(10), || {
        let path = ws
            .path()
            .join(format!("state/monitoring/reports/{second_incident}.md"));
        std::fs::read_to_string(path)
            .ok()
            .filter(|t| t.contains("(Escalated)"))
    });
    let escalated = escalated.unwrap_or_else(|| panic!("no postmortem:\n{}", d.log_text()));
    assert!(escalated.contains("too broad a change"), "{escalated}");
    assert_eq!(rejected["status"], "rejected");
    assert_eq!(
        rejected["error"],
        "rejected by a reviewer: too broad a change"
    );

    // An unregistered component: the same failed FixResult as without a daemon, exit 1.
    let out = ws.run(&["fix", "PACT:ghost:run", "boom"]);
    assert_eq!(out.status.code(), Some(1));
    let failed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(failed["status"], "failure");

    // `report` beside the daemon: real spend, the fix attempts, the fix history.
    let out = ws.run(&["report"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("$0.00"), "spend is real:\n{text}");
    assert!(text.contains(&format!("fix {first_id}  success")), "{text}");
    assert!(
        text.contains(&format!("fix {second_id}  rejected")),
        "{text}"
    );
    assert!(text.contains("Fix history"), "{text}");
    let out = ws.run(&["report", "--json"]);
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    let total: f64 = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["spend_usd"].as_f64().unwrap())
        .sum();
    let fixes_spend =
        first["spend_usd"].as_f64().unwrap() + rejected["spend_usd"].as_f64().unwrap();
    assert!(
        (total - fixes_spend).abs() < 1e-6,
        "{total} vs {fixes_spend}"
    );
    let out = ws.run(&["incident", &incident, "--json"]);
    let view: Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<&str> = view["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"fix_started"), "{kinds:?}");
    assert!(kinds.contains(&"incident_resolved"), "{kinds:?}");
    assert_eq!(view["fixes"].as_array().unwrap().len(), 1, "{view:#}");
    assert!(d.term(Duration::from_secs(10)).success());

    // Without the daemon: the same review on the store directly.
    let out = ws.run(&["reject", &first_id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not awaiting_approval"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn with_watch_running_triage_asks_the_daemon_and_its_budget_pays() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeLlm::start());
    fake.push(
        Route::Anthropic,
        Reply::anthropic_tool(
            "TriageResult",
            json!({"component_id": "auth_module", "confidence": 0.9, "reasoning": "tokens"}),
            Usage {
                input_tokens: 500,
                output_tokens: 20,
                ..Usage::default()
            },
        ),
    );
    let ws = Workspace::with_config(&config_with(
        fake.base_url(),
        PRICED,
        "",
        "api:\n  listen: 127.0.0.1:0\n",
    ));
    project(&ws);
    assert!(ws.run(&["register", "project"]).status.success());
    let mut d = ws.spawn_env(&["watch"], &[("FAKE_LLM_KEY", "k")]);
    d.ready();
    // No key in this CLI's environment: the daemon's LLM answers.
    let out = ws.run(&["triage", "IndexError in validate_token", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(&out), stderr(&out)));
    assert_eq!(v["component_id"], "auth_module", "{v:#}");
    assert_eq!(v["confidence"], 0.8);
    assert_eq!(fake.request_count(), 1);
    // A key needs no LLM.
    let out = ws.run(&["triage", "boom [PACT:auth_module:validate_token]"]);
    assert!(
        stdout(&out).contains("confidence:   1.0"),
        "{}",
        stdout(&out)
    );
    assert_eq!(fake.request_count(), 1);
    assert!(d.term(Duration::from_secs(10)).success());
    let spent = ws
        .store()
        .unwrap()
        .spend_since("2000-01-01T00:00:00Z".parse().unwrap())
        .unwrap();
    assert_eq!(spent.len(), 1, "the daemon recorded the call's cost");
    assert!(spent[0].2 > 0);
}

#[test]
fn status_shows_the_configuration_and_the_budget() {
    let ws = Workspace::with_config(
        "state_dir: state\nauto_remediate: true\nsources:\n  - type: file\n    path: logs/*.log\n  - type: webhook\n    name: hooks\n    port: 0\n\
         llm:\n  model: claude-test-model\n  budget_per_fix: 1.5\nbudget:\n  hourly_cap: 7\n",
    );
    project(&ws);
    assert!(ws.run(&["register", "project"]).status.success());
    let out = ws.run(&["status"]);
    let text = stdout(&out);
    for want in [
        "logs/*.log",
        "http://127.0.0.1:0",
        "auto-fix   on",
        "claude-test-model ($1.50 per fix",
        "auth_module",
        "hourly    $0.00 / $7.00 ($7.00)",
    ] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }
    let out = ws.run(&["status", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["settings"]["sources"][1]["type"], "webhook");
    assert_eq!(v["settings"]["budget"][0]["cap_usd"], 7.0);
}

#[test]
fn completions_man_page_version_and_manifest_remove() {
    let ws = Workspace::with_config("state_dir: state\n");
    let out = ws.run(&["completions", "bash"]);
    assert!(out.status.success());
    let script = stdout(&out);
    assert!(script.contains("_sentinel()"), "{script}");
    assert!(script.contains("approve"), "every command completes");
    for shell in ["zsh", "fish"] {
        let out = ws.run(&["completions", shell]);
        assert!(out.status.success() && !out.stdout.is_empty(), "{shell}");
    }
    let out = ws.run(&["man"]);
    let page = stdout(&out);
    assert!(
        page.starts_with(".ie") || page.contains(".TH sentinel"),
        "{page}"
    );
    let dir = ws.path().join("man1");
    let out = ws.run(&["man", "--dir", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(dir.join("sentinel.1").exists() && dir.join("sentinel-watch.1").exists());
    let out = ws.run(&["--version"]);
    let v = stdout(&out);
    let commit = v
        .trim()
        .rsplit_once('(')
        .and_then(|(_, c)| c.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no commit in {v:?}"));
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{v:?}"
    );
    // manifest remove: the component goes, an unknown one is an error.
    project(&ws);
    assert!(ws.run(&["register", "project"]).status.success());
    let out = ws.run(&["manifest", "remove", "auth_module"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = ws.run(&["manifest", "show", "--json"]);
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(m["components"].get("auth_module").is_none(), "{m:#}");
    let out = ws.run(&["manifest", "remove", "auth_module"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not registered"));
    let _ = std::io::stdout().flush();
}

/// The validator `.ci/run` installs into `.venv-test` (PyPI `openapi-spec-validator`), or
/// `SENTINEL_OPENAPI_VALIDATOR`.
fn openapi_validator() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("SENTINEL_OPENAPI_VALIDATOR") {
        return Some(p.into());
    }
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".venv-test/bin/openapi-spec-validator");
    venv.exists().then_some(venv)
}

#[test]
fn the_openapi_document_passes_the_validator() {
    let Some(validator) = openapi_validator() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "openapi-spec-validator is not installed (.ci/run installs it into .venv-test)"
        );
        eprintln!(
            "the_openapi_document_passes_the_validator: SKIPPED: openapi-spec-validator not \
             found (`.venv-test/bin/pip install openapi-spec-validator`)"
        );
        return;
    };
    let ws = Workspace::with_config("state_dir: state\n");
    let mut d = ws.spawn(&["serve", "--port", "0"]);
    let info = d.ready();
    let doc = http()
        .get(info.api_url("/openapi.json"))
        .send()
        .and_then(|r| r.text())
        .expect("GET /openapi.json");
    assert!(d.term(Duration::from_secs(10)).success());
    let path = ws.file("openapi.json", doc);
    let out = std::process::Command::new(&validator)
        .arg(&path)
        .output()
        .expect("run openapi-spec-validator");
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("OK"), "{}", stdout(&out));
    // Every JSON body is described: no client can be generated from a document without.
    let doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for schema in [
        "Incident",
        "IncidentPage",
        "FixResult",
        "FixRequest",
        "ErrorBody",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "no {schema} schema"
        );
    }
}

/// The client generator (`openapi-python-client`, PyPI) in the test venv.
fn openapi_client_generator() -> Option<std::path::PathBuf> {
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".venv-test/bin/openapi-python-client");
    venv.exists().then_some(venv)
}

/// What the generated client does against the daemon: trigger a fix (waiting for it) and
/// list the incidents of the component; prints what it saw as JSON.
const CLIENT_SCRIPT: &str = r#"
import json, sys
from sentinel_client import Client
from sentinel_client.api.default import post_fix, list_incidents, get_incident
from sentinel_client.models import FixRequest, FixStatus
from sentinel_client.types import Response

c = Client(base_url=sys.argv[1], raise_on_unexpected_status=True, timeout=120.0)
fix = post_fix.sync(client=c, body=FixRequest(pact_key=sys.argv[2], error=sys.argv[3]), wait=True)
page = list_incidents.sync(client=c, component="auth_module", limit=10)
detail = get_incident.sync(client=c, id=fix.incident_id)
missing = get_incident.sync_detailed(client=c, id="000000000000")
print(json.dumps({
    "fix_status": fix.status.value,
    "fix_is_success": fix.status == FixStatus.SUCCESS,
    "incident_id": fix.incident_id,
    "listed": [i.id for i in page.incidents],
    "first_seen_year": page.incidents[0].first_seen.year,
    "attempts": len(detail.fix_attempts),
    "missing_status": int(missing.status_code),
    "missing_code": missing.parsed.error.code,
}))
"#;

#[test]
fn a_client_generated_from_the_openapi_document_lists_incidents_and_triggers_a_fix() {
    let Some(generator) = openapi_client_generator() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "openapi-python-client is not installed (.ci/run installs it into .venv-test)"
        );
        eprintln!(
            "a_client_generated_from_the_openapi_document…: SKIPPED: openapi-python-client not \
             found (`.venv-test/bin/pip install openapi-python-client`)"
        );
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeLlm::start());
    fake.otherwise(
        Route::Anthropic,
        answer(reproducer(), the_fix(), Value::Null),
    );
    let ws = Workspace::with_config(&config_with(fake.base_url(), "", "", ""));
    project(&ws);
    assert!(ws.run(&["register", "project"]).status.success());
    let mut d = ws.spawn_env(&["watch"], &[("FAKE_LLM_KEY", "k")]);
    let info = d.ready();
    let doc = http()
        .get(info.api_url("/openapi.json"))
        .send()
        .and_then(|r| r.text())
        .expect("GET /openapi.json");
    let spec = ws.file("openapi.json", doc);
    let out_dir = ws.path().join("gen");
    std::fs::create_dir_all(&out_dir).unwrap();
    // The generator runs ruff from PATH over what it wrote: the venv's bin first.
    let bin = generator.parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new(&generator)
        .args(["generate", "--meta", "none", "--path"])
        .arg(&spec)
        .arg("--output-path")
        .arg(out_dir.join("sentinel_client"))
        .env("PATH", &path)
        .output()
        .expect("run openapi-python-client");
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let script = ws.file("use_client.py", CLIENT_SCRIPT);
    let out = std::process::Command::new(bin.join("python"))
        .arg(&script)
        .arg(info.api_url(""))
        .arg(KEY)
        .arg("IndexError: list index out of range")
        .env("PYTHONPATH", &out_dir)
        .output()
        .expect("run the generated client");
    assert!(
        out.status.success(),
        "{}{}\n{}",
        stdout(&out),
        stderr(&out),
        d.log_text()
    );
    let seen: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)));
    assert_eq!(seen["fix_status"], "success", "{seen:#}");
    assert_eq!(seen["fix_is_success"], true, "{seen:#}");
    let id = seen["incident_id"].as_str().unwrap();
    assert_eq!(seen["listed"], json!([id]), "{seen:#}");
    assert!(
        seen["first_seen_year"].as_i64().unwrap() >= 2026,
        "{seen:#}"
    );
    assert_eq!(seen["attempts"], 1, "{seen:#}");
    assert_eq!(seen["missing_status"], 404, "{seen:#}");
    assert_eq!(seen["missing_code"], "not_found", "{seen:#}");
    assert!(d.term(Duration::from_secs(10)).success());
}

#[test]
fn import_reference_brings_every_component_incident_and_spend_once() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/reference-state/dot-sentinel");
    let ws = Workspace::with_config("state_dir: state\n");
    // A copy with one spend entry (the real sample's log is empty: no LLM was configured).
    let dir = ws.path().join("ref");
    for f in [
        "manifest.json",
        "monitoring/incidents.json",
        "monitoring/budget.json",
    ] {
        let to = dir.join(f);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(fixture.join(f), &to).unwrap();
    }
    let budget = dir.join("monitoring/budget.json");
    let mut b: Value = serde_json::from_slice(&std::fs::read(&budget).unwrap()).unwrap();
    b["spend_log"] = json!([{"timestamp": "2026-12-06T04:50:00.000001", "incident_id": "12f6076972b0", "amount": 0.25}]);
    std::fs::write(&budget, b.to_string()).unwrap();

    let dir_s = dir.to_str().unwrap();
    let out = ws.run(&["import-reference", dir_s, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let done: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["components_added"], 6, "{done}");
    assert_eq!(done["incidents_imported"], 7, "{done}");
    assert_eq!(done["spend_entries_imported"], 1, "{done}");
    let out = ws.run(&["manifest", "show", "--json"]);
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(m["components"].as_object().unwrap().len(), 6);
    let out = ws.run(&["report", "--json", "--limit", "100"]);
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 7, "{rows:#?}");
    assert!(
        rows.iter()
            .all(|r| r["status"] == "escalated" && r["count"] == 1)
    );
    let auth = rows
        .iter()
        .find(|r| r["component_id"] == "auth_module")
        .expect("the auth_module incident");
    assert_eq!(auth["attribution"], "registered");
    assert_eq!(auth["first_seen"], "2026-12-06T04:45:27.154936Z");
    assert_eq!(auth["last_seen"], "2026-12-06T04:45:27.154952Z");
    assert!(
        (auth["spend_usd"].as_f64().unwrap() - 0.25).abs() < 1e-9,
        "{auth}"
    );
    let unkeyed = rows.iter().find(|r| r["pact_key"] == "").expect("unkeyed");
    assert!(
        unkeyed["sample"]
            .as_str()
            .unwrap()
            .contains("payment webhook timed out")
    );

    // Again: nothing twice.
    let out = ws.run(&["import-reference", dir_s, "--json"]);
    let again: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            again["incidents_imported"].as_u64(),
            again["incidents_skipped"].as_u64(),
            again["spend_entries_imported"].as_u64()
        ),
        (Some(0), Some(7), Some(0)),
        "{again}"
    );
    let out = ws.run(&["report", "--json", "--limit", "100"]);
    let rows2: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows2.as_array().unwrap().len(), 7);
    assert!(rows2.as_array().unwrap().iter().all(|r| r["count"] == 1));

    // A malformed file is named, and nothing of the rest is imported.
    let ws2 = Workspace::with_config("state_dir: state\n");
    let bad = ws2.path().join("bad");
    std::fs::create_dir_all(bad.join("monitoring")).unwrap();
    std::fs::copy(fixture.join("manifest.json"), bad.join("manifest.json")).unwrap();
    std::fs::write(
        bad.join("monitoring/incidents.json"),
        "{\"incidents\": [1, 2",
    )
    .unwrap();
    let out = ws2.run(&["import-reference", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("incidents.json"), "{}", stderr(&out));
    assert!(
        !ws2.path().join("state/manifest.json").exists() || {
            let out = ws2.run(&["manifest", "show", "--json"]);
            let m: Value = serde_json::from_slice(&out.stdout).unwrap();
            m["components"].as_object().unwrap().is_empty()
        }
    );
    let out = ws2.run(&[
        "import-reference",
        ws2.path().join("nope").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
}

/// Whether a recorded LLM request was a triage call (the `TriageResult` tool forced).
fn is_triage(r: &sentinel::fix::fake_llm::Recorded) -> bool {
    r.body.to_string().contains("\"TriageResult\"")
}

#[test]
fn the_daemon_triages_an_unkeyed_incident_once_within_its_hourly_limit_and_it_is_then_fixed() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeLlm::start());
    fake.push(
        Route::Anthropic,
        Reply::anthropic_tool(
            "TriageResult",
            json!({"component_id": "auth_module", "confidence": 0.9,
                   "reasoning": "validate_token is auth_module's function"}),
            Usage {
                input_tokens: 400,
                output_tokens: 30,
                ..Usage::default()
            },
        ),
    );
    fake.otherwise(
        Route::Anthropic,
        answer(reproducer(), the_fix(), Value::Null),
    );
    let ws = Workspace::with_config(&config_with(
        fake.base_url(),
        PRICED,
        "",
        "triage:\n  max_per_hour: 1\n",
    ));
    project(&ws);
    assert!(ws.run(&["register", "project"]).status.success());
    let log = ws.file("logs/app.log", "");
    let mut d = ws.spawn_env(&["watch"], &[("FAKE_LLM_KEY", "k")]);
    let info = d.ready();
    let append = |text: &str| {
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    };
    // Three lines of one incident, without a PACT key.
    append(
        "ERROR IndexError in validate_token for request 17\n\
         ERROR IndexError in validate_token for request 18\n\
         ERROR IndexError in validate_token for request 19\n",
    );
    let incidents = |status: &str| -> Vec<Value> {
        http()
            .get(info.api_url(&format!("/incidents?status={status}")))
            .send()
            .ok()
            .and_then(|r| r.json::<Value>().ok())
            .and_then(|v| v["incidents"].as_array().cloned())
            .unwrap_or_default()
    };
    let detail = |id: &str| -> Value {
        http()
            .get(info.api_url(&format!("/incidents/{id}")))
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    // Triage attributes it, a fix is queued like any keyed incident's, and it ends proven.
    let fixed = crate::harness::eventually(Duration::from_secs(90), || {
        let all = incidents("resolved");
        let inc = all.first()?;
        let v = detail(inc["id"].as_str()?);
        (!v["fix_attempts"].as_array()?.is_empty()).then_some(v)
    });
    let v = fixed.unwrap_or_else(|| panic!("never fixed\n{}", d.log_text()));
    assert_eq!(v["component_id"], "auth_module", "{v:#}");
    assert_eq!(v["attribution"], "registered", "{v:#}");
    assert_eq!(v["count"], 3, "{v:#}");
    assert_eq!(v["triage"]["outcome"], "attributed", "{v:#}");
    assert_eq!(v["triage"]["confidence"], 0.9, "{v:#}");
    assert_eq!(v["fix_attempts"][0]["status"], "success", "{v:#}");
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(
        fake.requests().iter().filter(|r| is_triage(r)).count(),
        1,
        "one triage call for one distinct incident"
    );

    // A second distinct unkeyed error waits: the hour's one triage call is spent.
    append("ERROR disk quota exceeded on the token cache volume\n");
    let waiting = crate::harness::eventually(Duration::from_secs(30), || {
        incidents("triaging").first().cloned()
    });
    let waiting = waiting.unwrap_or_else(|| panic!("not waiting\n{}", d.log_text()));
    assert_eq!(waiting["component_id"], "", "{waiting:#}");
    // A repeat of the first one is counted, not triaged again.
    append("ERROR IndexError in validate_token for request 20\n");
    let counted = crate::harness::eventually(Duration::from_secs(30), || {
        (detail(&id)["count"] == 4).then_some(())
    });
    assert!(counted.is_some(), "{}", d.log_text());
    assert_eq!(fake.requests().iter().filter(|r| is_triage(r)).count(), 1);
    assert!(d.term(Duration::from_secs(10)).success());

    // The answer, its cost and the story are kept: `incident`, the spend log, the postmortem.
    let out = ws.run(&["incident", &id]);
    assert!(
        stdout(&out).contains("triage     auth_module (confidence 0.90)"),
        "{}",
        stdout(&out)
    );
    let spend = ws
        .store()
        .unwrap()
        .spend_since("2000-01-01T00:00:00Z".parse().unwrap())
        .unwrap();
    assert!(
        spend.iter().filter(|(_, inc, _)| *inc == id).count() >= 2,
        "triage and the fix are charged to the incident: {spend:?}"
    );
    let pm = std::fs::read_to_string(ws.path().join(format!("state/monitoring/reports/{id}.md")))
        .unwrap();
    assert!(
        pm.contains("LLM triage attributed it to **auth_module**"),
        "{pm}"
    );
}
