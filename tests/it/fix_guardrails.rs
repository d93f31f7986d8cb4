//! The fixer's guardrails, each refusing once and visibly (the incident's timeline, `report`,
//! the API, `/metrics`): `fix.min_confidence`, `fix.max_files` and `fix.max_changed_lines`
//! on the proposal before any test runs, `fix.mode: shadow` keeping nothing, a `fix.freeze`
//! window, `fix.cooldown_seconds` and the kill switch holding queued fixes. Real git
//! repositories and the scripted fake LLM on loopback, as in `fix_e2e`.

use std::io::Write;
use std::time::Duration;

use serde_json::{Value, json};

use sentinel::fix::fake_llm::{FakeLlm, Reply, Route};
use sentinel::fix::llm::Usage;

use crate::fix_e2e::{KEY, config_with, git, project, reproducer, the_fix};
use crate::harness::{Workspace, eventually, http, stderr, stdout};

const SOURCE: &str = "src/auth_module/auth_module.py";

/// A proposal with these edits and this confidence.
fn answer(reproducer: Vec<Value>, fix: Vec<Value>, confidence: f64) -> Reply {
    Reply::anthropic_tool(
        "propose_fix",
        json!({
            "reproducer_edits": reproducer,
            "fix_edits": fix,
            "contract_change": null,
            "explanation": "A token with fewer than three parts must be rejected as malformed.",
            "confidence": confidence,
        }),
        Usage {
            input_tokens: 1000,
            output_tokens: 200,
            ..Usage::default()
        },
    )
}

fn good(confidence: f64) -> Reply {
    answer(vec![reproducer()], vec![the_fix()], confidence)
}

/// `sentinel report --json`'s row of the only incident.
fn report_row(ws: &Workspace) -> Value {
    let out = ws.run(&["report", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    rows[0].clone()
}

#[test]
fn proposals_over_a_guardrail_are_refused_before_their_tests_and_say_why() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeLlm::start());
    // 1: too unsure. 2: three files. 3: a fix of 30 lines. 4: within every limit.
    fake.push(Route::Anthropic, good(0.4));
    fake.push(
        Route::Anthropic,
        answer(
            vec![reproducer()],
            vec![
                the_fix(),
                json!({"path": "src/auth_module/extra.py", "old": null, "new": null, "contents": "X = 1\n"}),
            ],
            0.9,
        ),
    );
    let padding = "    # note\n".repeat(30);
    fake.push(
        Route::Anthropic,
        answer(
            vec![reproducer()],
            vec![json!({
                "path": SOURCE,
                "old": "    user, expiry, signature = parts[0], parts[1], parts[2]",
                "new": format!("{padding}    if len(parts) != 3:\n        raise ValueError(\"malformed token\")\n    user, expiry, signature = parts"),
                "contents": null,
            })],
            0.9,
        ),
    );
    fake.push(Route::Anthropic, good(0.9));
    let ws = Workspace::with_config(&config_with(
        fake.base_url(),
        "",
        "  max_attempts: 4\n  min_confidence: 0.7\n  max_files: 2\n  max_changed_lines: 20\n",
        "",
    ));
    let project = project(&ws);
    assert!(ws.run(&["register", "project"]).status.success());
    let out = ws.run_env(
        &["fix", KEY, "IndexError: list index out of range"],
        &[("FAKE_LLM_KEY", "k")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let fix: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(fix["status"], "success", "{fix:#}");
    assert_eq!(fix["attempts"], 4);
    let guardrails: Vec<&str> = fix["refusals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["guardrail"].as_str().unwrap())
        .collect();
    assert_eq!(
        guardrails,
        ["min_confidence", "max_files", "max_changed_lines"]
    );
    assert!(
        fix["refusals"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("0.40 is below fix.min_confidence 0.7"),
        "{fix:#}"
    );
    assert_eq!(fake.request_count(), 4);
    // The proven fix is the fourth proposal: the oversized one never reached the tree.
    let source = git(
        &project,
        &[
            "show",
            &format!("{}:{SOURCE}", fix["branch"].as_str().unwrap()),
        ],
    );
    assert!(!source.contains("# note"), "{source}");
    // Visible in `report` (text and JSON) and on the incident's timeline.
    let row = report_row(&ws);
    let reported: Vec<&str> = row["refusals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["guardrail"].as_str().unwrap())
        .collect();
    assert_eq!(
        reported,
        ["min_confidence", "max_files", "max_changed_lines"]
    );
    let text = stdout(&ws.run(&["report"]));
    assert!(
        text.contains("refused by max_files: the proposal touches 3 files"),
        "{text}"
    );
    let id = row["id"].as_str().unwrap();
    let text = stdout(&ws.run(&["incident", id]));
    assert!(text.contains("fix_refused"), "{text}");
    assert!(
        text.contains("max_changed_lines: the proposal changes"),
        "{text}"
    );

    // When every proposal is refused the incident says so.
    let fake2 = rt.block_on(FakeLlm::start());
    fake2.otherwise(Route::Anthropic, good(0.2));
    let ws = Workspace::with_config(&config_with(
        fake2.base_url(),
        "",
        "  max_attempts: 1\n  min_confidence: 0.7\n",
        "",
    ));
    crate::fix_e2e::project(&ws);
    assert!(ws.run(&["register", "project"]).status.success());
    let out = ws.run_env(
        &["fix", KEY, "IndexError: list index out of range"],
        &[("FAKE_LLM_KEY", "k")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let row = report_row(&ws);
    assert_eq!(
        (row["status"].as_str(), row["resolution"].as_str()),
        (Some("escalated"), Some("guardrail_refused")),
        "{row:#}"
    );
}

#[test]
fn shadow_mode_proves_and_records_a_fix_and_keeps_nothing() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeLlm::start());
    fake.push(Route::Anthropic, good(0.9));
    let ws = Workspace::with_config(&config_with(
        fake.base_url(),
        "",
        "  mode: shadow\n  merge: true\n",
        "",
    ));
    let project = project(&ws);
    git(&project, &["checkout", "--quiet", "--", "NOTES.md"]);
    std::fs::remove_file(project.join("scratch.txt")).unwrap();
    let head = git(&project, &["rev-parse", "HEAD"]);
    assert!(ws.run(&["register", "project"]).status.success());
    let out = ws.run_env(
        &["fix", KEY, "IndexError: list index out of range"],
        &[("FAKE_LLM_KEY", "k")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let fix: Value = serde_json::from_slice(&out.stdout).unwrap();
    // Everything ran and is recorded: the proof, the fixed source, the commit it made.
    assert_eq!(
        (fix["status"].as_str(), fix["shadow"].as_bool()),
        (Some("success"), Some(true)),
        "{fix:#}"
    );
    assert!(
        fix["fixed_source"][SOURCE]
            .as_str()
            .unwrap()
            .contains("malformed token")
    );
    assert!(!fix["git_fix_ref"].as_str().unwrap().is_empty());
    // The committed change, as a unified diff against the user's commit.
    let diff = fix["diff"].as_str().unwrap();
    assert!(diff.contains(&format!("+++ b/{SOURCE}")), "{diff}");
    assert!(
        diff.lines()
            .any(|l| l.starts_with('+') && l.contains("malformed token")),
        "{diff}"
    );
    // Nothing is kept: no branch, the user's branch not moved.
    assert_eq!(fix["branch"], "", "{fix:#}");
    assert_eq!(fix["merged"], false);
    assert_eq!(git(&project, &["branch", "--list", "sentinel/*"]), "");
    assert_eq!(git(&project, &["rev-parse", "HEAD"]), head);
    assert_eq!(git(&project, &["status", "--porcelain"]), "");
    let row = report_row(&ws);
    assert_eq!(
        (row["status"].as_str(), row["resolution"].as_str()),
        (Some("escalated"), Some("shadow_fix_proven"))
    );
    assert_eq!(row["fixes"][0]["shadow"], true);
    assert!(stdout(&ws.run(&["report"])).contains("(shadow)"));
}

#[test]
fn a_freeze_window_holds_a_fix_and_bad_windows_are_config_errors() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeLlm::start());
    fake.otherwise(Route::Anthropic, good(0.9));
    let now = jiff::Timestamp::now();
    let freeze = format!(
        "  freeze:\n    - start: {}\n      end: {}\n",
        now - jiff::SignedDuration::from_hours(1),
        now + jiff::SignedDuration::from_hours(1)
    );
    let ws = Workspace::with_config(&config_with(fake.base_url(), "", &freeze, ""));
    let project = project(&ws);
    assert!(ws.run(&["register", "project"]).status.success());
    let out = ws.run_env(
        &["fix", KEY, "IndexError: list index out of range"],
        &[("FAKE_LLM_KEY", "k")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let fix: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(fix["status"], "pending", "held, still queued: {fix:#}");
    assert_eq!(fake.request_count(), 0, "no call during a freeze");
    assert_eq!(git(&project, &["branch", "--list", "sentinel/*"]), "");
    let row = report_row(&ws);
    assert_eq!(row["refusals"][0]["guardrail"], "freeze", "{row:#}");
    assert!(
        row["refusals"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("the fix waits until it ends")
    );

    // A window that is not one names the file, line and key.
    let ws = Workspace::with_config(
        "state_dir: state\nfix:\n  freeze:\n    - days: [mon]\n      from: \"09:00\"\n      to: \"17:00\"\n      tz: Mars/Olympus\n",
    );
    let out = ws.run(&["watch"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("sentinel.yaml:4:"), "{err}");
    assert!(err.contains("fix.freeze[0].tz"), "{err}");
}

fn metric(api: &str, series: &str) -> Option<f64> {
    let text = http()
        .get(format!("{api}/metrics"))
        .send()
        .ok()?
        .text()
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// The incident's `fix_refused` events, from `GET /incidents/{id}`.
fn refused(api: &str, id: &str) -> Vec<Value> {
    let Ok(r) = http().get(format!("{api}/incidents/{id}")).send() else {
        return Vec::new();
    };
    let doc: Value = r.json().unwrap_or_default();
    doc["timeline"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["kind"] == "fix_refused")
        .collect()
}

#[test]
fn the_kill_switch_and_the_cooldown_hold_queued_fixes_visibly() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeLlm::start());
    fake.otherwise(Route::Anthropic, good(0.9));
    let ws = Workspace::with_config(&config_with(
        fake.base_url(),
        "",
        "  cooldown_seconds: 3600\n",
        "",
    ));
    project(&ws);
    assert!(ws.run(&["register", "project"]).status.success());
    // Paused before the daemon starts (no daemon: the switch file directly); it holds.
    let out = ws.run(&["fixes", "pause", "--reason", "release in progress"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("fixes paused since"));
    let log = ws.file("logs/app.log", "");
    let mut d = ws.spawn_env(&["watch"], &[("FAKE_LLM_KEY", "k")]);
    let info = d.ready();
    let api = info.api_url("");
    let append = |line: &str| {
        writeln!(
            std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
            "{line}"
        )
        .unwrap();
    };
    append(&format!(
        "ERROR [{KEY}] IndexError: list index out of range"
    ));
    let incident = eventually(Duration::from_secs(30), || {
        let list: Value = http()
            .get(format!("{api}/incidents"))
            .send()
            .ok()?
            .json()
            .ok()?;
        list["incidents"].as_array()?.first()?["id"]
            .as_str()
            .map(String::from)
    })
    .expect("the incident");
    let held = eventually(Duration::from_secs(30), || {
        refused(&api, &incident).into_iter().next()
    })
    .expect("the pause is recorded on the incident");
    assert_eq!(held["data"]["guardrail"], "paused");
    assert!(
        held["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("release in progress")
    );
    assert_eq!(
        metric(&api, "sentinel_fix_refusals_total{guardrail=\"paused\"}"),
        Some(1.0)
    );
    assert_eq!(metric(&api, "sentinel_fixes_paused"), Some(1.0));
    assert_eq!(fake.request_count(), 0, "no fix starts while paused");
    // Bad bodies are named; resume through the daemon's API starts the held fix.
    let r = http()
        .post(format!("{api}/fixes/pause"))
        .body("{\"reason\": 3}")
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    let out = ws.run(&["fixes", "resume"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let fix = eventually(Duration::from_secs(120), || {
        let fixes: Value = http()
            .get(format!("{api}/fixes"))
            .send()
            .ok()?
            .json()
            .ok()?;
        let f = fixes.as_array()?.first()?.clone();
        (f["status"] == "success").then_some(f)
    })
    .expect("the held fix ran after resume");
    assert_eq!(fix["incident_id"].as_str(), Some(incident.as_str()));
    assert_eq!(metric(&api, "sentinel_fixes_paused"), Some(0.0));

    // A second error of the same component within the cooldown: held, visibly.
    append(&format!(
        "ERROR [{KEY}] KeyError: 'signature' while reading the token header"
    ));
    let second = eventually(Duration::from_secs(30), || {
        let list: Value = http()
            .get(format!("{api}/incidents"))
            .send()
            .ok()?
            .json()
            .ok()?;
        list["incidents"]
            .as_array()?
            .iter()
            .find(|i| i["id"] != incident.as_str())?["id"]
            .as_str()
            .map(String::from)
    })
    .unwrap_or_else(|| {
        let list = http()
            .get(format!("{api}/incidents"))
            .send()
            .and_then(|r| r.text());
        panic!("no second incident: {list:?}\n{}", d.log_text())
    });
    let held = eventually(Duration::from_secs(30), || {
        refused(&api, &second).into_iter().next()
    })
    .expect("the cooldown is recorded");
    assert_eq!(held["data"]["guardrail"], "cooldown");
    assert!(
        held["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("fix.cooldown_seconds")
    );
    assert_eq!(
        metric(&api, "sentinel_fix_refusals_total{guardrail=\"cooldown\"}"),
        Some(1.0)
    );
    assert_eq!(fake.request_count(), 1, "one fix, the second waits");
    assert!(d.term(Duration::from_secs(10)).success());
}
