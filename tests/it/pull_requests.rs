//! From a failing CI job to a pull request, and from an escalated incident to an issue: the
//! real daemon, a signed `workflow_job`, the fake GitHub API (`fake_forge`), the fake LLM, a
//! real git project and a real bare repository as the push remote.

use std::time::Duration;

use serde_json::{Value, json};

use crate::ci_sources::{GH_TOKEN, SHA1, SHA2, detail, send_job, wait_incident};
use crate::fake_forge::Bench;
use crate::fix_e2e::{KEY, answer, git, reproducer, the_fix};
use crate::harness::{eventually, http, stdout};

/// `fix.pull_request` with the label `sentinel` and `max_open: 3`.
fn pull_request_section(b: &Bench) -> String {
    b.pull_request_section("    labels: [sentinel]\n", 3)
}

fn wait_fix(api: &str) -> Value {
    eventually(Duration::from_secs(120), || {
        let fixes: Value = http()
            .get(format!("{api}/fixes"))
            .send()
            .ok()?
            .json()
            .ok()?;
        let f = fixes.as_array()?.first()?.clone();
        (f["status"] != "pending" && f["status"] != "running").then_some(f)
    })
    .expect("the fix ended")
}

#[test]
fn a_failing_job_ends_as_a_pull_request_whose_body_is_the_report() {
    let b = Bench::new(vec![answer(reproducer(), the_fix(), Value::Null)], &[601]);
    b.configure(&pull_request_section(&b), "");
    let (fake, ws) = (&b.forge, &b.ws);
    let (d, info) = b.watch();
    let api = info.api_url("");
    send_job(&info.webhook_url("gh"), "pr-1", 601, SHA1, 1, "failure");
    let inc = wait_incident(&api, "IndexError");
    assert_eq!(inc["pact_key"], KEY);
    assert_eq!(inc["component_id"], "auth_module");
    let id = inc["id"].as_str().unwrap().to_string();
    let fix = wait_fix(&api);
    assert_eq!(fix["status"], "success", "{fix:#}\n{}", d.log_text());
    let branch = fix["branch"].as_str().unwrap().to_string();
    let commit = fix["git_fix_ref"].as_str().unwrap().to_string();
    // The pull request: opened on the fake API once the branch is in the remote.
    let links = eventually(Duration::from_secs(30), || {
        let doc = detail(&api, &id);
        doc["forge"]["pull_request"]["number"]
            .as_u64()
            .map(|_| doc["forge"].clone())
    })
    .unwrap_or_else(|| panic!("{:#}\n{}", detail(&api, &id), d.log_text()));
    assert_eq!(
        b.remote_refs(),
        format!("refs/heads/{branch} {commit}"),
        "the proven fix's branch, and only it, is in the remote"
    );
    let pulls = fake.pulls();
    assert_eq!(pulls.len(), 1, "{pulls:#?}");
    let pr = &pulls[0];
    assert_eq!(
        (pr.head.as_str(), pr.base.as_str()),
        (branch.as_str(), "main")
    );
    assert_eq!(pr.labels, ["sentinel"]);
    assert!(pr.title.contains(KEY), "{}", pr.title);
    // The body is the incident's report (the postmortem, as the API renders it).
    assert!(
        pr.body
            .starts_with(&format!("# Postmortem: incident {id} (Resolved)")),
        "{}",
        pr.body
    );
    let report = http()
        .get(format!("{api}/incidents/{id}/report"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let section = |doc: &str, name: &str| -> String {
        doc.split("\n## ")
            .find(|s| s.starts_with(name))
            .unwrap_or_default()
            .to_string()
    };
    for name in ["Summary", "Root cause", "The change"] {
        assert_eq!(section(&pr.body, name), section(&report, name), "{name}");
    }
    assert!(pr.body.contains(&branch));
    assert_eq!(
        links["pull_request"]["url"],
        "https://github.example/acme/app/pull/1"
    );
    assert_eq!(links["pull_request"]["state"], "open");
    let created = fake
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.path == "/repos/acme/app/pulls")
        .unwrap();
    assert_eq!(created.auth, format!("Bearer {GH_TOKEN}"));
    assert_eq!(created.body["head"], branch.as_str());
    // Shown by `incident` and `report`; the token is in no log.
    let text = stdout(&ws.run(&["incident", &id]));
    assert!(
        text.contains("pull req   #1 https://github.example/acme/app/pull/1 (open)"),
        "{text}"
    );
    let text = stdout(&ws.run(&["report"]));
    assert!(text.contains("pull request #1 (open)"), "{text}");
    assert!(!d.log_text().contains(GH_TOKEN));
    assert!(d.term(Duration::from_secs(10)).success());
}

#[test]
fn shadow_mode_pushes_nothing_and_opens_nothing() {
    let b = Bench::new(vec![answer(reproducer(), the_fix(), Value::Null)], &[701]);
    b.configure(&format!("  mode: shadow\n{}", pull_request_section(&b)), "");
    let (fake, ws) = (&b.forge, &b.ws);
    let (d, info) = b.watch();
    let api = info.api_url("");
    send_job(&info.webhook_url("gh"), "s-1", 701, SHA1, 1, "failure");
    let inc = wait_incident(&api, "IndexError");
    let fix = wait_fix(&api);
    assert_eq!(
        (fix["status"].as_str(), fix["shadow"].as_bool()),
        (Some("success"), Some(true))
    );
    // The forge saw the fix end (its cursor is past it) and did nothing.
    let id = inc["id"].as_str().unwrap();
    let store_head = || {
        ws.store()
            .and_then(|s| s.outbox_cursor(sentinel::forge::CURSOR).ok().flatten())
            .unwrap_or(0)
    };
    let ended = ws.store().unwrap().event_head();
    eventually(Duration::from_secs(30), || {
        (store_head() >= ended).then_some(())
    })
    .expect("the forge followed the log past the fix");
    assert_eq!(b.remote_refs(), "", "nothing pushed in shadow mode");
    assert!(fake.pulls().is_empty());
    assert!(detail(&api, id)["forge"].is_null());
    assert!(d.term(Duration::from_secs(10)).success());
}

#[test]
fn an_escalated_incident_opens_one_issue_commented_on_and_closed_when_resolved() {
    // The first proposal does not fix: the incident ends escalated (fix_failed).
    let no_fix = json!({
        "path": "src/auth_module/auth_module.py",
        "old": "    user, expiry, signature = parts[0], parts[1], parts[2]",
        "new": "    # looked at\n    user, expiry, signature = parts[0], parts[1], parts[2]",
        "contents": null,
    });
    let b = Bench::new(
        vec![
            answer(reproducer(), no_fix, Value::Null),
            answer(reproducer(), the_fix(), Value::Null),
        ],
        &[801, 802],
    );
    b.configure(
        "",
        &format!(
            "issues:\n  provider: github\n  repo: acme/app\n  token_env: GH_TOKEN\n  api_url: {}\n  labels: [sentinel, ci]\n  max_per_hour: 5\n",
            b.forge.github_url()
        ),
    );
    let fake = &b.forge;
    let (d, info) = b.watch();
    let api = info.api_url("");
    let gh = info.webhook_url("gh");
    send_job(&gh, "i-1", 801, SHA1, 1, "failure");
    let inc = wait_incident(&api, "IndexError");
    let id = inc["id"].as_str().unwrap().to_string();
    let issue = eventually(Duration::from_secs(120), || {
        detail(&api, &id)["forge"]["issue"]["number"].as_u64()
    })
    .unwrap_or_else(|| panic!("{:#}\n{}", detail(&api, &id), d.log_text()));
    assert_eq!(detail(&api, &id)["resolution"], "fix_failed");
    let issues = fake.issues();
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].number, issue);
    assert_eq!(issues[0].labels, ["sentinel", "ci"]);
    assert!(
        issues[0]
            .body
            .starts_with(&format!("# Postmortem: incident {id} (Escalated)")),
        "{}",
        issues[0].body
    );
    // The same failure on the next commit: a comment, not a second issue.
    send_job(&gh, "i-2", 802, SHA2, 1, "failure");
    let comments = eventually(Duration::from_secs(30), || {
        let i = fake.issues();
        (!i[0].comments.is_empty()).then(|| i[0].comments.clone())
    })
    .expect("the recurrence commented on");
    assert!(comments[0].contains("2 occurrences"), "{comments:?}");
    assert!(comments[0].contains(SHA2), "{comments:?}");
    // Fixed (by hand here): the issue is closed with a comment.
    let sample = detail(&api, &id)["sample"].as_str().unwrap().to_string();
    let r = http()
        .post(format!("{api}/fix"))
        .json(&json!({"pact_key": KEY, "error": sample}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().unwrap_or_default());
    let closed = eventually(Duration::from_secs(120), || {
        let i = fake.issues();
        (i[0].state == "closed").then(|| i[0].clone())
    })
    .unwrap_or_else(|| panic!("{:#}\n{}", detail(&api, &id), d.log_text()));
    assert!(
        closed
            .comments
            .last()
            .unwrap()
            .starts_with("Resolved by Sentinel"),
        "{:?}",
        closed.comments
    );
    assert_eq!(fake.issues().len(), 1, "exactly one issue");
    // The fake closes the issue a moment before the store says so.
    let doc = eventually(Duration::from_secs(30), || {
        let doc = detail(&api, &id);
        (doc["forge"]["issue"]["state"] == "closed").then_some(doc)
    })
    .unwrap_or_else(|| panic!("{:#}", detail(&api, &id)));
    assert_eq!(doc["status"], "resolved");
    assert!(d.term(Duration::from_secs(10)).success());
}

#[test]
fn a_push_that_fails_leaves_the_branch_local_and_says_so() {
    let b = Bench::new(vec![answer(reproducer(), the_fix(), Value::Null)], &[901]);
    let missing = b.ws.path().join("no-such-remote.git");
    b.configure(
        &pull_request_section(&b).replace(
            &b.remote.display().to_string(),
            &missing.display().to_string(),
        ),
        "",
    );
    let (fake, ws, project) = (&b.forge, &b.ws, &b.project);
    let (d, info) = b.watch();
    let api = info.api_url("");
    send_job(&info.webhook_url("gh"), "pf-1", 901, SHA1, 1, "failure");
    let id = wait_incident(&api, "IndexError")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let fix = wait_fix(&api);
    assert_eq!(fix["status"], "success", "{fix:#}");
    let branch = fix["branch"].as_str().unwrap();
    let error = eventually(Duration::from_secs(30), || {
        detail(&api, &id)["forge"]["error"]
            .as_str()
            .filter(|e| !e.is_empty())
            .map(String::from)
    })
    .unwrap_or_else(|| panic!("{:#}", detail(&api, &id)));
    assert!(error.contains("was not pushed"), "{error}");
    assert!(error.contains(branch), "{error}");
    assert!(fake.pulls().is_empty());
    // The branch is still there, in the user's repository.
    assert_eq!(
        git(project, &["branch", "--list", branch]).trim_start_matches("* "),
        branch
    );
    let text = stdout(&ws.run(&["incident", &id]));
    assert!(
        text.contains("forge      the fix branch was not pushed"),
        "{text}"
    );
    assert!(d.term(Duration::from_secs(10)).success());
}
