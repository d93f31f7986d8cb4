//! The forge's limits against the real daemon: `fix.pull_request.max_open` holding back a
//! second pull request (and saying why), and `issues.max_per_hour` holding across a restart.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::ci_sources::{
    GH_SECRET, SHA1, SHA2, detail, job_event, post_github, sign, wait_incident,
};
use crate::fake_forge::{Bench, ended_fixes};
use crate::fix_e2e::{answer, git, reproducer, the_fix};
use crate::harness::{eventually, stdout};

/// Posts a signed failing `workflow_job` of job `name` (another name: another incident).
fn send_named(url: &str, delivery: &str, id: u64, sha: &str, name: &str) {
    let mut v: Value = serde_json::from_slice(&job_event(id, sha, 1, "failure")).unwrap();
    v["workflow_job"]["name"] = json!(name);
    let body = serde_json::to_vec(&v).unwrap();
    let (code, v) = post_github(
        url,
        "workflow_job",
        delivery,
        &body,
        Some(sign(GH_SECRET, &body)),
    );
    assert_eq!(code, 202, "{v}");
}

/// The incident of job `name`, once there.
fn incident_of_job(api: &str, name: &str) -> String {
    let needle = format!("· {name} ·");
    wait_incident(api, &needle)["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn remote_ref(bare: &Path, branch: &str) -> String {
    git(bare, &["rev-parse", &format!("refs/heads/{branch}")])
        .trim()
        .to_string()
}

#[test]
fn max_open_holds_back_a_second_pull_request_and_says_why() {
    let b = Bench::new(
        vec![answer(reproducer(), the_fix(), Value::Null); 3],
        &[1101, 1102, 1103],
    );
    b.configure(&b.pull_request_section("", 1), "");
    let (fake, ws, remote) = (&b.forge, &b.ws, &b.remote);
    let (d, info) = b.watch();
    let api = info.api_url("");
    let gh = info.webhook_url("gh");

    // The first incident's proven fix: a pull request.
    send_named(&gh, "m-1", 1101, SHA1, "test");
    let first = incident_of_job(&api, "test");
    let fix1 = ended_fixes(&api, &first, 1).remove(0);
    assert_eq!(fix1["status"], "success", "{fix1:#}");
    let pr = eventually(Duration::from_secs(30), || {
        detail(&api, &first)["forge"]["pull_request"]["number"].as_u64()
    })
    .unwrap_or_else(|| panic!("{:#}\n{}", detail(&api, &first), d.log_text()));
    let branch1 = fix1["branch"].as_str().unwrap().to_string();

    // Another incident's proven fix while that one is open: no second pull request, and
    // the incident says why (API and report).
    send_named(&gh, "m-2", 1102, SHA1, "test-py312");
    let second = incident_of_job(&api, "test-py312");
    assert_ne!(first, second);
    let fix2 = ended_fixes(&api, &second, 1).remove(0);
    assert_eq!(fix2["status"], "success", "{fix2:#}");
    let error = eventually(Duration::from_secs(30), || {
        detail(&api, &second)["forge"]["error"]
            .as_str()
            .filter(|e| !e.is_empty())
            .map(String::from)
    })
    .unwrap_or_else(|| panic!("{:#}\n{}", detail(&api, &second), d.log_text()));
    assert!(error.contains("max_open 1"), "{error}");
    assert!(error.contains(fix2["branch"].as_str().unwrap()), "{error}");
    assert!(detail(&api, &second)["forge"]["pull_request"].is_null());
    assert_eq!(fake.pulls().len(), 1, "{:#?}", fake.pulls());
    let text = stdout(&ws.run(&["report"]));
    assert!(text.contains("forge: no pull request opened"), "{text}");
    assert!(text.contains("max_open 1"), "{text}");

    // The first incident's failure on the next commit, its pull request open: counted, and
    // no second pull request (a recurrence before the fix is merged is no regression).
    send_named(&gh, "m-3", 1103, SHA2, "test");
    eventually(Duration::from_secs(30), || {
        (detail(&api, &first)["count"] == 2).then_some(())
    })
    .unwrap_or_else(|| panic!("{:#}", detail(&api, &first)));
    assert_eq!(fake.pulls().len(), 1, "{:#?}", fake.pulls());
    assert_eq!(
        detail(&api, &first)["forge"]["pull_request"]["number"],
        json!(pr)
    );
    assert_eq!(
        remote_ref(remote, &branch1),
        fix1["git_fix_ref"].as_str().unwrap()
    );
    assert!(d.term(Duration::from_secs(10)).success());
}

#[test]
fn the_issue_rate_limit_holds_across_a_restart() {
    // Proposals that do not fix: each incident ends escalated (fix_failed).
    let no_fix = json!({
        "path": "src/auth_module/auth_module.py",
        "old": "    user, expiry, signature = parts[0], parts[1], parts[2]",
        "new": "    # looked at\n    user, expiry, signature = parts[0], parts[1], parts[2]",
        "contents": null,
    });
    let b = Bench::new(
        vec![answer(reproducer(), no_fix, Value::Null); 2],
        &[1201, 1202],
    );
    b.configure(
        "",
        &format!(
            "issues:\n  provider: github\n  repo: acme/app\n  token_env: GH_TOKEN\n  api_url: {}\n  max_per_hour: 1\n",
            b.forge.github_url()
        ),
    );
    let (fake, ws) = (&b.forge, &b.ws);
    let (d, info) = b.watch();
    let api = info.api_url("");
    send_named(&info.webhook_url("gh"), "r-1", 1201, SHA1, "test");
    let first = incident_of_job(&api, "test");
    eventually(Duration::from_secs(120), || {
        detail(&api, &first)["forge"]["issue"]["number"].as_u64()
    })
    .unwrap_or_else(|| panic!("{:#}\n{}", detail(&api, &first), d.log_text()));
    assert_eq!(fake.issues().len(), 1);
    assert!(d.term(Duration::from_secs(10)).success());

    // Restarted within the hour: another escalation waits, and says so.
    let (d, info) = b.watch();
    let api = info.api_url("");
    send_named(&info.webhook_url("gh"), "r-2", 1202, SHA1, "test-py312");
    let second = incident_of_job(&api, "test-py312");
    let error = eventually(Duration::from_secs(120), || {
        detail(&api, &second)["forge"]["error"]
            .as_str()
            .filter(|e| !e.is_empty())
            .map(String::from)
    })
    .unwrap_or_else(|| panic!("{:#}\n{}", detail(&api, &second), d.log_text()));
    assert_eq!(detail(&api, &second)["status"], "escalated");
    assert!(error.starts_with("rate-limited"), "{error}");
    assert!(error.contains("max_per_hour (1)"), "{error}");
    assert!(detail(&api, &second)["forge"]["issue"].is_null());
    assert_eq!(fake.issues().len(), 1, "{:#?}", fake.issues());
    let limit = ws.store().unwrap().issue_limit().unwrap();
    assert_eq!(limit.opened.len(), 1, "{limit:?}");
    assert_eq!(limit.waiting, std::slice::from_ref(&second), "{limit:?}");
    let text = stdout(&ws.run(&["report"]));
    assert!(text.contains("forge: rate-limited"), "{text}");
    assert!(d.term(Duration::from_secs(10)).success());
}
