//! The fixer end to end: a log line written to a watched file ends as a commit on
//! `sentinel/fix-<id>` whose reproducer failed before the fix and passes after it — proven
//! again here, independently — with a scripted fake LLM on loopback and a real git
//! repository holding a small Pact-style Python project. The user's working tree (with
//! uncommitted and untracked files) stays byte-identical, after a success and a failure.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use sentinel::fix::fake_llm::{FakeLlm, Reply, Route};
use sentinel::fix::llm::Usage;

use crate::harness::{Workspace, eventually, http};

pub(crate) const KEY: &str = "PACT:auth_module:validate_token";

pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "User")
        .env("GIT_AUTHOR_EMAIL", "user@example.invalid")
        .env("GIT_COMMITTER_NAME", "User")
        .env("GIT_COMMITTER_EMAIL", "user@example.invalid")
        .args(args)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            if e.file_name() != "__pycache__" {
                copy_dir(&p, &to.join(e.file_name()));
            }
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// `<ws>/project`: the auth_module component of testdata/pact_project (its known defect: a
/// token with fewer than three parts raises IndexError instead of ValueError), committed,
/// plus the user's uncommitted work: a modified tracked file and an untracked one.
pub(crate) fn project(ws: &Workspace) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/pact_project");
    let dst = ws.path().join("project");
    for d in ["src", "tests", "contracts"] {
        copy_dir(
            &src.join(d).join("auth_module"),
            &dst.join(d).join("auth_module"),
        );
    }
    std::fs::write(dst.join("NOTES.md"), "committed notes\n").unwrap();
    git(&dst, &["init", "--quiet", "--initial-branch=main"]);
    git(&dst, &["add", "-A"]);
    git(&dst, &["commit", "--quiet", "-m", "initial"]);
    std::fs::write(
        dst.join("NOTES.md"),
        "committed notes\nand my uncommitted edit\n",
    )
    .unwrap();
    std::fs::write(dst.join("scratch.txt"), "untracked work in progress\n").unwrap();
    dst
}

/// Every file of the user's tree (outside .git), with its bytes, plus HEAD and the status.
fn snapshot(dir: &Path) -> (BTreeMap<PathBuf, Vec<u8>>, String, String) {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if e.file_name() == ".git" {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(
                    p.strip_prefix(root).unwrap().into(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    let mut files = BTreeMap::new();
    walk(dir, dir, &mut files);
    (
        files,
        git(dir, &["rev-parse", "HEAD"]),
        git(dir, &["status", "--porcelain", "--untracked-files=all"]),
    )
}

fn edit(path: &str, old: Option<&str>, new: Option<&str>, contents: Option<&str>) -> Value {
    json!({"path": path, "old": old, "new": new, "contents": contents})
}

const TESTS: &str = "tests/auth_module/contract_test.py";
const SOURCE: &str = "src/auth_module/auth_module.py";

pub(crate) fn reproducer() -> Value {
    edit(
        TESTS,
        Some("    def test_empty_part_is_malformed(self):"),
        Some(
            "    def test_short_token_is_malformed(self):\n        with self.assertRaises(ValueError):\n            validate_token(\"alice.2000\", 1000)\n\n    def test_empty_part_is_malformed(self):",
        ),
        None,
    )
}

pub(crate) fn the_fix() -> Value {
    edit(
        SOURCE,
        Some("    user, expiry, signature = parts[0], parts[1], parts[2]"),
        Some(
            "    if len(parts) != 3:\n        log.error(\"[%s] malformed token\", PACT_KEY)\n        raise ValueError(\"malformed token\")\n    user, expiry, signature = parts",
        ),
        None,
    )
}

pub(crate) fn answer(reproducer: Value, fix: Value, contract: Value) -> Reply {
    Reply::anthropic_tool(
        "propose_fix",
        json!({
            "reproducer_edits": [reproducer],
            "fix_edits": [fix],
            "contract_change": contract,
            "explanation": "A token with fewer than three parts must be rejected as malformed.",
            "confidence": 0.9
        }),
        Usage {
            input_tokens: 1200,
            output_tokens: 300,
            ..Usage::default()
        },
    )
}

fn config(llm: &str, extra: &str) -> String {
    config_with(llm, "", "", extra)
}

/// The test config; `llm_extra` and `fix_extra` are more keys of those sections (indented).
pub(crate) fn config_with(llm: &str, llm_extra: &str, fix_extra: &str, extra: &str) -> String {
    format!(
        "state_dir: state\nauto_remediate: true\nerror_threshold:\n  count: 1\n  window_seconds: 300\n\
         sources:\n  - type: file\n    path: logs/*.log\n\
         pact:\n  project_dir: project\n\
         llm:\n  provider: anthropic\n  base_url: {llm}\n  api_key_env: FAKE_LLM_KEY\n  timeout_seconds: 20\n{llm_extra}\
         fix:\n  test_timeout_seconds: 60\n{fix_extra}{api}{extra}",
        // A free port, unless the test configures the API itself (8484, the default, is
        // taken when two of these daemons run at once).
        api = if extra.contains("api:") {
            ""
        } else {
            "api:\n  listen: 127.0.0.1:0\n"
        }
    )
}

fn unittest(dir: &Path) -> bool {
    Command::new("python3")
        .current_dir(dir)
        .args([
            "-m",
            "unittest",
            "discover",
            "-s",
            "tests/auth_module",
            "-p",
            "*test*.py",
        ])
        .output()
        .expect("python3")
        .status
        .success()
}

fn wait_fix(api: &str, within: Duration) -> Value {
    eventually(within, || {
        let fixes: Value = http()
            .get(format!("{api}/fixes"))
            .send()
            .ok()?
            .json()
            .ok()?;
        let f = fixes.as_array()?.first()?.clone();
        (!matches!(f["status"].as_str(), Some("pending" | "running"))).then_some(f)
    })
    .expect("the fix ended in time")
}

#[test]
fn a_logged_error_ends_as_a_proven_fix_commit_and_the_users_tree_is_untouched() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeLlm::start());
    let contract = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/pact_project/contracts/auth_module/interface.json"),
    )
    .unwrap();
    fake.push(
        Route::Anthropic,
        answer(reproducer(), the_fix(), json!(contract)),
    );
    let arbiter = crate::outbox::FakeSink::start(200);
    let stigmergy = crate::outbox::FakeSink::start(200);
    let chronicler = crate::peers::FakeChronicler::start();
    let ws = Workspace::with_config(&config(
        fake.base_url(),
        &format!(
            "arbiter:\n  api_endpoint: {}\nstigmergy:\n  endpoint: {}\nchronicler:\n  enabled: true\n  endpoint: {}\n",
            arbiter.url(),
            stigmergy.url(),
            chronicler.url()
        ),
    ));
    let project = project(&ws);
    let before = snapshot(&project);
    let out = ws.run(&["register", "project"]);
    assert!(out.status.success(), "{}", crate::harness::stderr(&out));
    let log = ws.file("logs/app.log", "");
    let mut d = ws.spawn_env(&["watch"], &[("FAKE_LLM_KEY", "test-key")]);
    let info = d.ready();
    let api = info.api_url("");
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    writeln!(
        f,
        "2026-12-01T10:00:00Z ERROR [{KEY}] IndexError: list index out of range (token \"alice.2000\", user bob@example.com)"
    )
    .unwrap();
    let fix = wait_fix(&api, Duration::from_secs(120));
    assert_eq!(fix["status"], "success", "{fix:#}\n{}", d.log_text());
    let id = fix["id"].as_str().unwrap();
    let branch = format!("sentinel/fix-{id}");
    assert_eq!(fix["branch"], branch.as_str());
    let commit = git(&project, &["rev-parse", &branch]);
    assert_eq!(fix["git_fix_ref"], commit.as_str());
    assert_eq!(fix["git_snapshot_ref"], before.1.as_str());
    assert_eq!(fix["attempts"], 1);
    assert_eq!(fix["input_tokens"], 1200);
    assert!(fix["spend_usd"].as_f64().unwrap() > 0.0);
    // Exactly the component's two files, in one commit on top of the user's HEAD.
    let files = git(&project, &["show", "--name-only", "--format=", &commit]);
    assert_eq!(files.lines().collect::<Vec<_>>(), [SOURCE, TESTS]);
    assert_eq!(
        git(&project, &["rev-parse", &format!("{commit}^")]),
        before.1
    );
    // Proven again, independently: in a clone at the fix commit the tests pass; with the
    // source put back as it was, the reproducer fails.
    let check = ws.path().join("check");
    git(
        ws.path(),
        &[
            "clone",
            "--quiet",
            project.to_str().unwrap(),
            check.to_str().unwrap(),
        ],
    );
    git(&check, &["checkout", "--quiet", &commit]);
    assert!(unittest(&check), "the fix commit's tests pass");
    git(&check, &["checkout", "--quiet", &before.1, "--", SOURCE]);
    assert!(!unittest(&check), "the reproducer fails without the fix");
    // The user's tree: byte-identical, HEAD and status unchanged; no worktree left.
    assert_eq!(
        snapshot(&project),
        before,
        "the user's working tree was touched"
    );
    assert_eq!(git(&project, &["worktree", "list"]).lines().count(), 1);
    // The incident is resolved (the fix waits on its branch: fix.merge is off).
    let incidents: Value = http()
        .get(format!("{api}/incidents"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let inc = &incidents["incidents"][0];
    assert_eq!(inc["status"], "resolved", "{incidents:#}");
    assert_eq!(inc["resolution"], "fix_ready_for_review");
    // The report, the proposed contract (version + 1), the redacted, fenced prompt.
    let report = ws.path().join(format!(
        "state/monitoring/reports/{}.md",
        inc["id"].as_str().unwrap()
    ));
    // The postmortem is written from the store once the event log says the incident ended.
    let report = eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(&report).ok()
    })
    .expect("a postmortem");
    assert!(report.contains(&branch), "{report}");
    assert!(report.starts_with("# Postmortem: incident"), "{report}");
    for section in [
        "## Timeline",
        "## Root cause",
        "## What was done",
        "## The change",
        "## Next steps",
    ] {
        assert!(report.contains(section), "{section}:\n{report}");
    }
    if fix["contract_push"]
        .as_str()
        .unwrap()
        .starts_with("proposed:")
    {
        let proposed: Value = serde_json::from_slice(
            &std::fs::read(ws.path().join("state/proposed_contracts/auth_module.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(proposed["version"], 2);
    }
    assert_eq!(fix["contract_changed"], true);
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let sent = requests[0].body.to_string();
    assert!(
        !sent.contains("bob@example.com"),
        "the e-mail was sent unredacted"
    );
    assert!(sent.contains("UNTRUSTED-DATA"));
    assert!(sent.contains("def validate_token"), "the source was sent");
    // The events tell the story.
    let store = ws.store().unwrap();
    let kinds: Vec<&str> = store
        .events_after(0, 100)
        .unwrap()
        .iter()
        .map(|e| e.kind.as_str())
        .collect();
    for k in [
        "incident_detected",
        "fix_started",
        "fix_completed",
        "incident_resolved",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    // Arbiter and Stigmergy hear of the error and of the fix, through the outbox.
    let trust = eventually(Duration::from_secs(30), || {
        let got = arbiter.accepted("/trust/event");
        (got.len() >= 2).then_some(got)
    })
    .expect("Arbiter received the trust events");
    assert_eq!(trust[0]["event"], "AUDIT_FAIL");
    assert_eq!(trust[0]["node_id"], "auth_module");
    assert_eq!(trust[1]["event"], "AUDIT_PASS");
    assert_eq!(trust[1]["run_id"], id);
    let signals = eventually(Duration::from_secs(30), || {
        let got = stigmergy.accepted("/signals");
        got.iter()
            .any(|s| s["type"] == "fix_applied")
            .then_some(got)
    })
    .expect("Stigmergy received fix_applied");
    assert!(signals.iter().any(|s| s["type"] == "production_error"));
    // Chronicler accepts each lifecycle step as it happened, as valid Events of one incident.
    let story = eventually(Duration::from_secs(30), || {
        let got = chronicler.accepted();
        got.iter()
            .any(|e| e["event_kind"] == "sentinel.incident.resolved")
            .then_some(got)
    })
    .unwrap_or_else(|| panic!("{:?}", chronicler.seen()));
    assert!(
        chronicler
            .seen()
            .iter()
            .all(|(_, status, _)| *status == 200),
        "{:?}",
        chronicler.seen()
    );
    let kinds: Vec<&str> = story
        .iter()
        .map(|e| e["event_kind"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        kinds,
        [
            "sentinel.incident.detected",
            "sentinel.incident.remediating",
            "sentinel.incident.resolved"
        ],
        "{story:?}"
    );
    for e in &story {
        crate::peers::assert_sentinel_event(e);
        assert_eq!(e["correlation_keys"]["component_id"], "auth_module", "{e}");
        assert_eq!(
            e["correlation_keys"]["incident_id"],
            story[0]["correlation_keys"]["incident_id"]
        );
    }
    let prom = http()
        .get(format!("{api}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        prom.contains("sentinel_fixes_total{status=\"success\"} 1"),
        "{prom}"
    );
    assert!(prom.contains("sentinel_fixes_running 0"), "{prom}");
    let m: Value = http()
        .get(format!("{api}/metrics.json"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        (
            m["total_fixes_attempted"].as_u64(),
            m["fixes_succeeded"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert!(d.term(Duration::from_secs(10)).success());
}

#[test]
fn rejected_proposals_fail_the_fix_and_change_nothing() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeLlm::start());
    // Attempt 1: a "fix" outside the component (a path escape). Attempt 2: a reproducer
    // that already passes (it does not reproduce anything).
    fake.push(
        Route::Anthropic,
        answer(
            reproducer(),
            edit("../outside.txt", None, None, Some("pwned")),
            Value::Null,
        ),
    );
    fake.push(
        Route::Anthropic,
        answer(
            edit(
                TESTS,
                Some("    def test_empty_part_is_malformed(self):"),
                Some("    def test_nothing(self):\n        pass\n\n    def test_empty_part_is_malformed(self):"),
                None,
            ),
            the_fix(),
            Value::Null,
        ),
    );
    let ws = Workspace::with_config(&config(fake.base_url(), ""));
    let project = project(&ws);
    let before = snapshot(&project);
    assert!(ws.run(&["register", "project"]).status.success());
    let out = ws.run_env(
        &["fix", KEY, "IndexError: list index out of range"],
        &[("FAKE_LLM_KEY", "k")],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        crate::harness::stderr(&out)
    );
    let fix: Value = serde_json::from_slice(&out.stdout).expect("FixResult JSON");
    assert_eq!(fix["status"], "failure");
    assert_eq!(fix["attempts"], 2);
    let error = fix["error"].as_str().unwrap();
    assert!(error.contains("outside"), "{error}");
    assert!(error.contains("passes on the current source"), "{error}");
    assert_eq!(fake.request_count(), 2);
    assert!(!ws.path().join("outside.txt").exists());
    assert_eq!(
        snapshot(&project),
        before,
        "the user's working tree was touched"
    );
    let branches = git(&project, &["branch", "--list", "sentinel/*"]);
    assert!(
        branches.is_empty(),
        "a failed fix leaves no branch: {branches}"
    );
    let store = ws.store().unwrap();
    let inc = store.recent_incidents(1).unwrap().remove(0);
    assert_eq!(
        (inc.status.as_str(), inc.resolution.as_str()),
        ("escalated", "fix_failed")
    );
}

#[test]
fn an_exhausted_budget_makes_no_call_and_escalates() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeLlm::start());
    fake.otherwise(
        Route::Anthropic,
        answer(reproducer(), the_fix(), Value::Null),
    );
    let ws = Workspace::with_config(&config(fake.base_url(), "budget:\n  hourly_cap: 0.0001\n"));
    project(&ws);
    assert!(ws.run(&["register", "project"]).status.success());
    let out = ws.run_env(
        &["fix", KEY, "IndexError: list index out of range"],
        &[("FAKE_LLM_KEY", "k")],
    );
    assert_eq!(out.status.code(), Some(1));
    let fix: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(fix["error"].as_str().unwrap().contains("budget"), "{fix:#}");
    assert_eq!(
        fake.request_count(),
        0,
        "no call once a cap would be exceeded"
    );
    let inc = ws.store().unwrap().recent_incidents(1).unwrap().remove(0);
    assert_eq!(inc.resolution, "budget_exceeded");
}

/// `<ws>/project` with `n` components `comp_a`, `comp_b`, … (a source and a test directory
/// each), committed; registers them. (No digits: incidents are told apart by their
/// normalised text, where digit runs are `<n>`.)
fn many_components(ws: &Workspace, n: usize) {
    let dst = ws.path().join("project");
    let mut manifest = serde_json::Map::new();
    for i in 0..n {
        let id = format!("comp_{}", char::from(b'a' + i as u8));
        for (d, f) in [("src", "code.py"), ("tests", "code_test.py")] {
            std::fs::create_dir_all(dst.join(d).join(&id)).unwrap();
            std::fs::write(dst.join(d).join(&id).join(f), "x = 1\n").unwrap();
        }
        manifest.insert(
            id.clone(),
            json!({
                "component_id": id,
                "source_path": dst.join("src").join(&id),
                "test_path": dst.join("tests").join(&id),
                "language": "python",
                "pact_project": dst,
            }),
        );
    }
    git(&dst, &["init", "--quiet", "--initial-branch=main"]);
    git(&dst, &["add", "-A"]);
    git(&dst, &["commit", "--quiet", "-m", "initial"]);
    ws.file(
        "state/manifest.json",
        json!({ "components": manifest }).to_string(),
    );
}

#[test]
fn fifty_distinct_errors_make_fifty_fixes_never_more_than_two_at_once() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeLlm::start());
    // Every call takes 150 ms and answers with no edits: each fix fails after one attempt.
    fake.otherwise(
        Route::Anthropic,
        Reply::anthropic_tool(
            "propose_fix",
            json!({"reproducer_edits": [], "fix_edits": [], "contract_change": null, "explanation": "", "confidence": null}),
            Usage::default(),
        )
        .after(Duration::from_millis(150)),
    );
    let ws = Workspace::with_config(&config_with(
        fake.base_url(),
        "  max_concurrent_fixes: 2\n",
        "  max_attempts: 1\n",
        "",
    ));
    many_components(&ws, 5);
    let log = ws.file("logs/app.log", "");
    let mut d = ws.spawn_env(&["watch", "--no-api"], &[("FAKE_LLM_KEY", "k")]);
    d.ready();
    let mut text = String::new();
    for c in 0..5u8 {
        for e in 0..10u8 {
            let (c, word) = (char::from(b'a' + c), char::from(b'a' + e));
            text.push_str(&format!("ERROR [PACT:comp_{c}:run_{word}] failed\n"));
        }
    }
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let events = eventually(Duration::from_secs(120), || {
        let s = ws.store()?;
        let ev = s.events_after(0, 100_000).ok()?;
        (ev.iter()
            .filter(|e| e.kind.as_str() == "fix_failed")
            .count()
            == 50)
            .then_some(ev)
    })
    .unwrap_or_else(|| panic!("50 fixes did not end:\n{}", d.log_text()));
    assert_eq!(ws.store().unwrap().fix_jobs().unwrap().len(), 50);
    if fake.request_count() != 50 {
        let fixes = ws.store().unwrap().fixes(100).unwrap();
        let errors: Vec<&str> = fixes.iter().map(|f| f.error.as_str()).collect();
        panic!(
            "{} LLM calls for 50 distinct errors; the fixes' errors: {errors:?}\n{}",
            fake.request_count(),
            d.log_text()
        );
    }
    assert!(
        fake.max_in_flight() <= 2,
        "{} calls at once",
        fake.max_in_flight()
    );
    // In commit order: never more than 2 fixes between fix_started and their end, never
    // two of one component.
    let mut running: Vec<String> = Vec::new();
    let mut most = 0;
    for e in &events {
        match e.kind.as_str() {
            "fix_started" => {
                assert!(
                    !running.contains(&e.component_id),
                    "two fixes of {} at once",
                    e.component_id
                );
                running.push(e.component_id.clone());
                most = most.max(running.len());
            }
            "fix_failed" | "fix_completed" => running.retain(|c| *c != e.component_id),
            _ => {}
        }
    }
    assert!(most <= 2, "{most} fixes at once");
    assert!(d.term(Duration::from_secs(10)).success());
}

#[test]
fn a_fix_cut_off_by_kill_9_is_resumed_once_and_ends_proven() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeLlm::start());
    fake.push(Route::Anthropic, Reply::hang());
    let ws = Workspace::with_config(&config(fake.base_url(), ""));
    let project = project(&ws);
    assert!(ws.run(&["register", "project"]).status.success());
    let log = ws.file("logs/app.log", "");
    let mut d = ws.spawn_env(&["watch", "--no-api"], &[("FAKE_LLM_KEY", "k")]);
    d.ready();
    writeln!(
        std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
        "ERROR [{KEY}] IndexError: list index out of range"
    )
    .unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), fake.wait_for_requests(1))
            .await
            .expect("the fixer called the LLM")
    });
    d.kill9();
    // The fix was running: after the restart its job is queued again and runs to the end.
    fake.push(
        Route::Anthropic,
        answer(reproducer(), the_fix(), Value::Null),
    );
    let mut d = ws.spawn_env(&["watch"], &[("FAKE_LLM_KEY", "k")]);
    let info = d.ready();
    let fix = eventually(Duration::from_secs(120), || {
        let fixes: Value = http()
            .get(info.api_url("/fixes"))
            .send()
            .ok()?
            .json()
            .ok()?;
        fixes
            .as_array()?
            .iter()
            .find(|f| f["status"] == "success")
            .cloned()
    })
    .unwrap_or_else(|| panic!("no successful fix:\n{}", d.log_text()));
    let store = ws.store().unwrap();
    let jobs = store.fix_jobs().unwrap();
    assert_eq!(jobs.len(), 1, "one job, never a second one");
    assert_eq!(
        jobs[0].attempts, 2,
        "started twice: before the kill and after"
    );
    let fixes = store.fixes(10).unwrap();
    assert_eq!(fixes.len(), 2);
    let cut = fixes
        .iter()
        .find(|f| f.id != fix["id"].as_str().unwrap())
        .unwrap();
    assert_eq!(cut.status.as_str(), "failure");
    assert!(cut.error.contains("interrupted"), "{}", cut.error);
    assert_eq!(fake.request_count(), 2);
    // The cut fix's worktree and branch were cleaned up at the restart: what is left is the
    // proven fix's branch and the user's own worktree.
    let branches = git(&project, &["branch", "--list", "sentinel/*"]);
    assert_eq!(branches.lines().count(), 1, "{branches}");
    assert!(branches.contains(fix["id"].as_str().unwrap()), "{branches}");
    assert_eq!(git(&project, &["worktree", "list"]).lines().count(), 1);
    assert!(d.term(Duration::from_secs(10)).success());
}

#[test]
fn a_hanging_llm_does_not_hold_ingestion_and_the_incident_is_escalated() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeLlm::start());
    fake.otherwise(Route::Anthropic, Reply::hang());
    let ws = Workspace::with_config(
        &config_with(fake.base_url(), "  max_retries: 1\n", "", "")
            .replace("timeout_seconds: 20", "timeout_seconds: 2"),
    );
    project(&ws);
    assert!(ws.run(&["register", "project"]).status.success());
    let log = ws.file("logs/app.log", "");
    let mut d = ws.spawn_env(&["watch", "--no-api"], &[("FAKE_LLM_KEY", "k")]);
    d.ready();
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    writeln!(f, "ERROR [{KEY}] IndexError: list index out of range").unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), fake.wait_for_requests(1))
            .await
            .expect("the fixer called the LLM")
    });
    // While the LLM hangs, 20 000 more lines are ingested and committed.
    let mut text = String::new();
    for i in 0..20_000 {
        text.push_str(&format!("ERROR [PACT:other:run] event {i} failed\n"));
    }
    f.write_all(text.as_bytes()).unwrap();
    let committed_during_hang = eventually(Duration::from_secs(30), || {
        let s = ws.store()?;
        let lines = s.totals().ok()?.get("error_lines").copied()?;
        let fix_ended = s
            .events_after(0, 100_000)
            .ok()?
            .iter()
            .any(|e| e.kind.as_str() == "fix_failed");
        (lines == 20_001).then_some(!fix_ended)
    })
    .expect("the lines were committed");
    assert!(
        committed_during_hang,
        "ingestion waited for the LLM (the lines committed only after the fix ended)"
    );
    let inc = eventually(Duration::from_secs(60), || {
        let s = ws.store()?;
        s.recent_incidents(10)
            .ok()?
            .into_iter()
            .find(|i| i.component_id == "auth_module" && i.status.as_str() == "escalated")
    })
    .unwrap_or_else(|| panic!("not escalated:\n{}", d.log_text()));
    assert_eq!(inc.resolution, "llm_unavailable");
    // 2 attempts × (1 try + 1 retry).
    assert_eq!(fake.request_count(), 4);
    assert!(d.term(Duration::from_secs(10)).success());
}

#[test]
fn a_merged_fix_moves_a_clean_branch_and_a_recurrence_reopens_as_a_regression() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeLlm::start());
    fake.push(
        Route::Anthropic,
        answer(reproducer(), the_fix(), Value::Null),
    );
    let ws = Workspace::with_config(&config_with(fake.base_url(), "", "  merge: true\n", ""));
    let project = project(&ws);
    // A clean tree: the fix may be merged.
    git(&project, &["checkout", "--quiet", "--", "NOTES.md"]);
    std::fs::remove_file(project.join("scratch.txt")).unwrap();
    assert!(ws.run(&["register", "project"]).status.success());
    let log = ws.file("logs/app.log", "");
    let mut d = ws.spawn_env(&["watch"], &[("FAKE_LLM_KEY", "k")]);
    let info = d.ready();
    let line = format!("ERROR [{KEY}] IndexError: list index out of range");
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    writeln!(f, "{line}").unwrap();
    let fix = wait_fix(&info.api_url(""), Duration::from_secs(120));
    assert_eq!(fix["status"], "success", "{fix:#}");
    assert_eq!(fix["merged"], true);
    assert_eq!(
        git(&project, &["rev-parse", "HEAD"]),
        fix["git_fix_ref"].as_str().unwrap()
    );
    assert!(unittest(&project), "the user's branch has the proven fix");
    let inc = ws.store().unwrap().recent_incidents(1).unwrap().remove(0);
    assert_eq!(
        (inc.status.as_str(), inc.resolution.as_str()),
        ("resolved", "auto_fixed")
    );
    // The error comes back: the incident reopens as a regression and a new fix is queued.
    writeln!(f, "{line}").unwrap();
    let jobs = eventually(Duration::from_secs(30), || {
        let s = ws.store()?;
        let jobs = s.fix_jobs().ok()?;
        (jobs.len() == 2).then_some(jobs)
    })
    .unwrap_or_else(|| panic!("no second job:\n{}", d.log_text()));
    assert_eq!(jobs[1].incident_id, inc.id);
    let kinds: Vec<String> = ws
        .store()
        .unwrap()
        .events_after(0, 1000)
        .unwrap()
        .iter()
        .map(|e| e.kind.as_str().to_string())
        .collect();
    assert!(
        kinds.contains(&"incident_regressed".to_string()),
        "{kinds:?}"
    );
    assert!(d.term(Duration::from_secs(10)).success());
}

#[test]
fn with_require_approval_a_proven_fix_waits_for_a_human() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeLlm::start());
    fake.push(
        Route::Anthropic,
        answer(reproducer(), the_fix(), Value::Null),
    );
    let ws = Workspace::with_config(&config_with(
        fake.base_url(),
        "",
        "  merge: true\n  require_approval: true\n",
        "",
    ));
    let project = project(&ws);
    git(&project, &["checkout", "--quiet", "--", "NOTES.md"]);
    std::fs::remove_file(project.join("scratch.txt")).unwrap();
    let head = git(&project, &["rev-parse", "HEAD"]);
    assert!(ws.run(&["register", "project"]).status.success());
    let log = ws.file("logs/app.log", "");
    let mut d = ws.spawn_env(&["watch"], &[("FAKE_LLM_KEY", "k")]);
    let info = d.ready();
    writeln!(
        std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
        "ERROR [{KEY}] IndexError: list index out of range"
    )
    .unwrap();
    let fix = wait_fix(&info.api_url(""), Duration::from_secs(120));
    assert_eq!(fix["status"], "awaiting_approval", "{fix:#}");
    assert_eq!(
        git(&project, &["rev-parse", "HEAD"]),
        head,
        "nothing merged before approval"
    );
    let id = fix["id"].as_str().unwrap();
    let inc = ws.store().unwrap().recent_incidents(1).unwrap().remove(0);
    assert_eq!(inc.status.as_str(), "verifying");
    // Unknown ids 404; approving answers the fix, merged; a second approval is a conflict.
    let post = |path: &str| http().post(info.api_url(path)).send().unwrap();
    assert_eq!(post("/fixes/000000000000/approve").status(), 404);
    let r = post(&format!("/fixes/{id}/approve"));
    assert_eq!(r.status(), 200);
    let approved: Value = r.json().unwrap();
    assert_eq!(
        (approved["status"].as_str(), approved["merged"].as_bool()),
        (Some("success"), Some(true))
    );
    assert_eq!(
        git(&project, &["rev-parse", "HEAD"]),
        fix["git_fix_ref"].as_str().unwrap()
    );
    let r = post(&format!("/fixes/{id}/reject"));
    assert_eq!(r.status(), 409);
    let body: Value = r.json().unwrap();
    assert_eq!(body["error"]["code"], "not_awaiting_approval");
    let inc = ws.store().unwrap().recent_incidents(1).unwrap().remove(0);
    assert_eq!(
        (inc.status.as_str(), inc.resolution.as_str()),
        ("resolved", "auto_fixed")
    );
    assert!(d.term(Duration::from_secs(10)).success());
}

#[test]
fn triage_without_a_key_asks_the_llm_and_records_the_spend() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeLlm::start());
    let verdict = |id: &str, confidence: f64| {
        Reply::anthropic_tool(
            "TriageResult",
            json!({"component_id": id, "confidence": confidence, "reasoning": "token parsing"}),
            Usage {
                input_tokens: 500,
                output_tokens: 20,
                ..Usage::default()
            },
        )
    };
    fake.push(Route::Anthropic, verdict("auth_module", 0.9));
    fake.push(Route::Anthropic, verdict("auth_module", 0.1));
    let ws = Workspace::with_config(&config(fake.base_url(), ""));
    project(&ws);
    assert!(ws.run(&["register", "project"]).status.success());
    let triage = || {
        ws.run_env(
            &[
                "triage",
                "IndexError in validate_token for alice@example.com",
            ],
            &[("FAKE_LLM_KEY", "k")],
        )
    };
    let out = triage();
    let text = crate::harness::stdout(&out);
    assert!(text.contains("component_id: auth_module"), "{text}");
    assert!(text.contains("confidence:   0.8"), "{text}");
    // Below the 0.3 confidence floor: unknown.
    let text = crate::harness::stdout(&triage());
    assert!(text.contains("component_id: unknown"), "{text}");
    assert!(text.contains("confidence:   0.0"), "{text}");
    let sent = fake.requests()[0].body.to_string();
    assert!(!sent.contains("alice@example.com"));
    assert!(
        sent.contains("validate_token"),
        "the contract's functions were listed"
    );
    let store = ws.store().unwrap();
    let spent = store
        .spend_since("2000-01-01T00:00:00Z".parse().unwrap())
        .unwrap();
    assert_eq!(spent.len(), 2, "both calls are in the spend log");
}

#[test]
fn a_tightened_contract_goes_through_pact_into_the_fix_commit() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeLlm::start());
    let contract_file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/pact_project/contracts/auth_module/interface.json");
    let mut contract: Value =
        serde_json::from_slice(&std::fs::read(&contract_file).unwrap()).unwrap();
    contract["description"] = json!("Tokens must have exactly three non-empty parts.");
    fake.push(
        Route::Anthropic,
        answer(reproducer(), the_fix(), json!(contract.to_string())),
    );
    let ws = Workspace::with_config(&config(fake.base_url(), ""));
    let project = project(&ws);
    let before = snapshot(&project);
    assert!(ws.run(&["register", "project"]).status.success());
    // A stand-in for `pact sentinel push-contract <project> <id> <file>` (the real CLI,
    // PyPI pact-agents, needs Python 3.12): it rewrites the component's interface.json and
    // records its arguments.
    let bin = ws.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let calls = ws.path().join("pact-calls.txt");
    let script = format!(
        "#!/bin/sh\necho \"$@\" >> '{}'\n[ \"$1 $2\" = 'sentinel push-contract' ] || exit 2\n\
         cp \"$5\" \"$3/contracts/$4/interface.json\"\necho \"Contract updated for $4\"\n",
        calls.display()
    );
    std::fs::write(bin.join("pact"), script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.join("pact"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = ws.run_env(
        &["fix", KEY, "IndexError: list index out of range"],
        &[("FAKE_LLM_KEY", "k"), ("PATH", &path)],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        crate::harness::stderr(&out)
    );
    let fix: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(fix["contract_push"], "pact-cli", "{fix:#}");
    let args = std::fs::read_to_string(&calls).unwrap();
    assert!(args.starts_with("sentinel push-contract "), "{args}");
    assert!(args.contains(" auth_module "), "{args}");
    // The new contract (version 2) is in the fix commit, beside the code; the user's tree
    // is untouched.
    let commit = fix["git_fix_ref"].as_str().unwrap();
    let files = git(&project, &["show", "--name-only", "--format=", commit]);
    assert!(
        files.contains("contracts/auth_module/interface.json"),
        "{files}"
    );
    let committed: Value = serde_json::from_str(&git(
        &project,
        &[
            "show",
            &format!("{commit}:contracts/auth_module/interface.json"),
        ],
    ))
    .unwrap();
    assert_eq!(committed["version"], 2);
    assert_eq!(committed["description"], contract["description"]);
    assert_eq!(snapshot(&project), before);
}

/// A small Rust crate as a Pact-style component `token_parser` (source `src/token_parser/`,
/// tests `tests/token_parser.rs`) with a defect: a token without a `.` panics (index out of
/// bounds) instead of returning an error.
fn rust_project(ws: &Workspace) -> PathBuf {
    let dst = ws.path().join("project");
    let files = [
        (
            "Cargo.toml",
            "[package]\nname = \"tokens\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n",
        ),
        ("src/lib.rs", "pub mod token_parser;\n"),
        (
            "src/token_parser/mod.rs",
            "/// PACT:token_parser:parse\npub fn parse(token: &str) -> Result<(String, u64), String> {\n    let parts: Vec<&str> = token.split('.').collect();\n    let user = parts[0];\n    let exp = parts[1];\n    let exp: u64 = exp.parse().map_err(|_| \"bad expiry\".to_string())?;\n    Ok((user.to_string(), exp))\n}\n",
        ),
        (
            "tests/token_parser.rs",
            "use tokens::token_parser::parse;\n\n#[test]\nfn parses_a_token() {\n    assert_eq!(parse(\"alice.5\"), Ok((\"alice\".to_string(), 5)));\n}\n\n// more tests\n",
        ),
        (
            "contracts/token_parser/interface.json",
            "{\"component_id\": \"token_parser\", \"version\": 1, \"functions\": [{\"name\": \"parse\"}]}\n",
        ),
        (".gitignore", "target/\nCargo.lock\n"),
    ];
    for (rel, text) in files {
        let p = dst.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    git(&dst, &["init", "--quiet", "--initial-branch=main"]);
    git(&dst, &["add", "-A"]);
    git(&dst, &["commit", "--quiet", "-m", "initial"]);
    std::fs::write(dst.join("WIP.md"), "untracked\n").unwrap();
    ws.file(
        "state/manifest.json",
        json!({"components": {"token_parser": {
            "component_id": "token_parser",
            "contract_path": dst.join("contracts/token_parser/interface.json"),
            "source_path": dst.join("src/token_parser"),
            "test_path": dst.join("tests/token_parser.rs"),
            "language": "rust",
            "pact_project": dst,
        }}})
        .to_string(),
    );
    dst
}

#[test]
fn a_rust_component_is_fixed_and_proven_with_cargo_test() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeLlm::start());
    fake.push(
        Route::Anthropic,
        Reply::anthropic_tool(
            "propose_fix",
            json!({
                "reproducer_edits": [edit(
                    "tests/token_parser.rs",
                    Some("// more tests"),
                    Some("#[test]\nfn a_token_without_expiry_is_an_error() {\n    assert!(parse(\"alice\").is_err());\n}"),
                    None,
                )],
                "fix_edits": [edit(
                    "src/token_parser/mod.rs",
                    Some("    let exp = parts[1];"),
                    Some("    let exp = parts.get(1).ok_or_else(|| \"malformed token\".to_string())?;"),
                    None,
                )],
                "contract_change": null,
                "explanation": "A token without an expiry is malformed.",
                "confidence": 0.9
            }),
            Usage::default(),
        ),
    );
    let ws = Workspace::with_config(
        &config_with(fake.base_url(), "", "", "")
            .replace("test_timeout_seconds: 60", "test_timeout_seconds: 240"),
    );
    let project = rust_project(&ws);
    let before = snapshot(&project);
    // The real HOME: cargo's toolchain is found under it.
    let home = std::env::var("HOME").unwrap();
    let out = ws.run_env(
        &["fix", "PACT:token_parser:parse", "thread 'main' panicked at src/token_parser/mod.rs:5:15: index out of bounds: the len is 1 but the index is 1"],
        &[("FAKE_LLM_KEY", "k"), ("HOME", &home)],
    );
    let fix: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("no JSON: {}", crate::harness::stderr(&out)));
    assert_eq!(fix["status"], "success", "{fix:#}");
    assert_eq!(out.status.code(), Some(0));
    let commit = fix["git_fix_ref"].as_str().unwrap();
    let files = git(&project, &["show", "--name-only", "--format=", commit]);
    assert_eq!(
        files.lines().collect::<Vec<_>>(),
        ["src/token_parser/mod.rs", "tests/token_parser.rs"]
    );
    assert_eq!(
        snapshot(&project),
        before,
        "the user's working tree was touched"
    );
}

#[test]
fn post_fix_answers_202_at_once_and_wait_true_the_result() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeLlm::start());
    fake.otherwise(
        Route::Anthropic,
        answer(reproducer(), the_fix(), Value::Null).after(Duration::from_millis(300)),
    );
    let ws = Workspace::with_config(
        &config(fake.base_url(), "").replace("auto_remediate: true", "auto_remediate: false"),
    );
    project(&ws);
    assert!(ws.run(&["register", "project"]).status.success());
    let mut d = ws.spawn_env(&["serve", "--port", "0"], &[("FAKE_LLM_KEY", "k")]);
    let info = d.ready();
    let body = json!({"pact_key": KEY, "error": "IndexError: list index out of range"});
    let r = http()
        .post(info.api_url("/fix"))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let queued: Value = r.json().unwrap();
    assert_eq!(queued["status"], "pending");
    assert_eq!(
        location,
        format!("/fixes/{}", queued["id"].as_str().unwrap())
    );
    let done = eventually(Duration::from_secs(60), || {
        let f: Value = http()
            .get(info.api_url(&location))
            .send()
            .ok()?
            .json()
            .ok()?;
        (f["status"] == "success").then_some(f)
    })
    .unwrap_or_else(|| panic!("the fix did not end:\n{}", d.log_text()));
    assert_eq!(done["manual"], true);
    // The reference's synchronous answer.
    let r = http()
        .post(info.api_url("/fix?wait=true"))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let waited: Value = r.json().unwrap();
    assert_eq!(waited["status"], "success");
    assert_ne!(waited["id"], done["id"]);
    // An unregistered component: 422 in the one error shape.
    let r = http()
        .post(info.api_url("/fix"))
        .json(&json!({"pact_key": "PACT:ghost:run", "error": "boom"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    let e: Value = r.json().unwrap();
    assert_eq!(e["error"]["code"], "not_registered");
    let fixes: Value = http()
        .get(info.api_url("/fixes"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(fixes.as_array().unwrap().len(), 2, "{fixes:#}");
    assert_eq!(fixes[0]["id"], waited["id"], "newest first");
    assert!(d.term(Duration::from_secs(10)).success());
}
