//! One open pull request per incident (issue 19): a newer proven fix of an incident whose
//! pull request is open updates it; one merged (or closed) on the forge meanwhile gets a
//! successor; a forge that cannot say which leaves the fix local; a recurrence while the
//! pull request is open comments at most once an hour. Against the real daemon, the fake
//! GitHub API (`fake_forge`), the fake LLM, the test project and a real bare remote.
//!
//! A newer fix reaches the forge in three ways, each shown here: a regression of a merged
//! fix approved by a person (`fix.require_approval`: at the approval's `incident_resolved`),
//! a regression of a fix merged by `fix.merge` (at its `fix_completed`), and a fix requested
//! by hand (`POST /fix`) while the pull request is open (at its `fix_completed`).

use std::time::Duration;

use serde_json::{Value, json};

use crate::ci_sources::{SHA1, SHA2, detail, send_job, wait_incident};
use crate::fake_forge::{Bench, ended_fixes};
use crate::fix_e2e::{KEY, answer, git, reproducer, the_fix};
use crate::harness::{eventually, http, stdout};

/// The second generation's proposal, for the code with the first fix merged: a blank user
/// must be malformed too.
fn regression_answer() -> sentinel::fix::fake_llm::Reply {
    let reproducer = json!({
        "path": "tests/auth_module/contract_test.py",
        "old": "    def test_empty_part_is_malformed(self):",
        "new": "    def test_blank_user_is_malformed(self):\n        with self.assertRaises(ValueError):\n            validate_token(\" .2000.sig\", 1000)\n\n    def test_empty_part_is_malformed(self):",
        "contents": null,
    });
    let fix = json!({
        "path": "src/auth_module/auth_module.py",
        "old": "    if not user or not expiry or not signature:",
        "new": "    if not user.strip() or not expiry or not signature:",
        "contents": null,
    });
    answer(reproducer, fix, Value::Null)
}

/// The incident's forge links once `pred` holds for them.
fn wait_links(api: &str, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    eventually(Duration::from_secs(60), || {
        let doc = detail(api, id);
        pred(&doc["forge"]).then(|| doc["forge"].clone())
    })
    .unwrap_or_else(|| panic!("{what}: {:#}", detail(api, id)))
}

fn approve(api: &str, fix: &Value) {
    let r = http()
        .post(format!(
            "{api}/fixes/{}/approve",
            fix["id"].as_str().unwrap()
        ))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
    let approved: Value = r.json().unwrap();
    assert_eq!(
        (approved["status"].as_str(), approved["merged"].as_bool()),
        (Some("success"), Some(true)),
        "{approved:#}"
    );
}

/// Whether the forge has followed the event log to its end.
fn forge_caught_up(b: &Bench) -> bool {
    let Some(s) = b.ws.store() else {
        return false;
    };
    let head = s.event_head();
    s.outbox_cursor(sentinel::forge::CURSOR)
        .ok()
        .flatten()
        .is_some_and(|c| c >= head)
}

#[test]
fn an_approved_regression_fix_updates_the_open_pull_request() {
    let b = Bench::new(
        vec![
            answer(reproducer(), the_fix(), Value::Null),
            regression_answer(),
        ],
        &[1301, 1302],
    );
    b.clean_tree().configure(
        &format!(
            "  merge: true\n  require_approval: true\n{}",
            b.pull_request_section("", 3)
        ),
        "",
    );
    let (d, info) = b.watch();
    let api = info.api_url("");
    let gh = info.webhook_url("gh");
    send_job(&gh, "u-1", 1301, SHA1, 1, "failure");
    let id = wait_incident(&api, "IndexError")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let fix1 = ended_fixes(&api, &id, 1).remove(0);
    assert_eq!(fix1["status"], "awaiting_approval", "{fix1:#}");
    assert!(b.forge.pulls().is_empty(), "nothing opened before approval");
    approve(&api, &fix1);
    let links = wait_links(&api, &id, "a pull request", |f| {
        f["pull_request"]["number"].is_u64()
    });
    let branch1 = fix1["branch"].as_str().unwrap().to_string();
    assert_eq!(links["pull_request"]["branch"], branch1.as_str());
    assert_eq!(
        b.remote_refs(),
        format!(
            "refs/heads/{branch1} {}",
            fix1["git_fix_ref"].as_str().unwrap()
        )
    );

    // The error comes back after the merge: a regression, a new fix, approved.
    send_job(&gh, "u-2", 1302, SHA2, 1, "failure");
    let fixes = ended_fixes(&api, &id, 2);
    let fix2 = fixes[1].clone();
    assert_eq!(fix2["status"], "awaiting_approval", "{fix2:#}");
    assert_eq!(fix2["generation"], 2, "{fix2:#}");
    assert_eq!(detail(&api, &id)["status"], "verifying");
    approve(&api, &fix2);
    let fix2_id = fix2["id"].as_str().unwrap();
    let commit2 = fix2["git_fix_ref"].as_str().unwrap();
    let links = wait_links(&api, &id, "the pull request carrying fix 2", |f| {
        f["pull_request"]["fix_id"] == fix2_id
    });

    // One pull request, the same one: its branch now at the new fix, its body the new
    // postmortem, a comment saying what replaced what.
    let pulls = b.forge.pulls();
    assert_eq!(pulls.len(), 1, "{pulls:#?}");
    let pr = &pulls[0];
    assert_eq!(links["pull_request"]["number"], pr.number);
    assert_eq!(links["pull_request"]["state"], "open");
    assert_eq!(links["pull_request"]["branch"], branch1.as_str());
    assert_eq!(links["error"], "");
    assert!(links.get("earlier_pull_requests").is_none(), "{links:#}");
    assert_eq!(pr.head, branch1);
    assert_eq!(
        b.remote_refs(),
        format!("refs/heads/{branch1} {commit2}"),
        "the new fix was pushed onto the pull request's branch, and nowhere else"
    );
    assert!(pr.body.contains(commit2), "{}", pr.body);
    assert!(pr.body.contains(fix2["branch"].as_str().unwrap()));
    assert_eq!(pr.comments.len(), 1, "{:?}", pr.comments);
    assert!(pr.comments[0].contains(fix2_id), "{:?}", pr.comments);
    assert!(
        pr.comments[0].contains("(a regression)"),
        "{:?}",
        pr.comments
    );
    // The forge was asked before the branch was rewritten.
    assert_eq!(
        b.forge
            .count(&format!("/repos/acme/app/pulls/{}", pr.number)),
        2
    );
    let text = stdout(&b.ws.run(&["incident", &id]));
    assert!(
        text.contains(&format!(
            "pull req   #{} https://github.example/acme/app/pull/{} (open)",
            pr.number, pr.number
        )),
        "{text}"
    );
    assert!(d.term(Duration::from_secs(10)).success());
}

#[test]
fn a_pull_request_merged_on_the_forge_gets_a_successor_for_a_regression() {
    let b = Bench::new(
        vec![
            answer(reproducer(), the_fix(), Value::Null),
            regression_answer(),
        ],
        &[1401, 1402],
    );
    b.clean_tree().configure(
        &format!("  merge: true\n{}", b.pull_request_section("", 3)),
        "",
    );
    let (d, info) = b.watch();
    let api = info.api_url("");
    let gh = info.webhook_url("gh");
    send_job(&gh, "s-1", 1401, SHA1, 1, "failure");
    let id = wait_incident(&api, "IndexError")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let fix1 = ended_fixes(&api, &id, 1).remove(0);
    assert_eq!(
        (fix1["status"].as_str(), fix1["merged"].as_bool()),
        (Some("success"), Some(true)),
        "{fix1:#}"
    );
    let first = wait_links(&api, &id, "a pull request", |f| {
        f["pull_request"]["number"].is_u64()
    })["pull_request"]["number"]
        .as_u64()
        .unwrap();
    // A person merges it on the forge; Sentinel still thinks it open.
    b.forge.set_pull_state(first, "merged");
    assert_eq!(detail(&api, &id)["forge"]["pull_request"]["state"], "open");

    // The regression's fix: the merged pull request's branch is left alone, a new one opened.
    send_job(&gh, "s-2", 1402, SHA2, 1, "failure");
    let fix2 = ended_fixes(&api, &id, 2)[1].clone();
    assert_eq!(fix2["status"], "success", "{fix2:#}");
    let fix2_id = fix2["id"].as_str().unwrap();
    let links = wait_links(&api, &id, "a second pull request", |f| {
        f["pull_request"]["fix_id"] == fix2_id
    });
    let pulls = b.forge.pulls();
    assert_eq!(pulls.len(), 2, "{pulls:#?}");
    let (old, new) = (&pulls[0], &pulls[1]);
    assert_eq!(old.number, first);
    assert_eq!(old.state, "merged");
    assert!(old.comments.is_empty(), "{:?}", old.comments);
    let (branch1, branch2) = (
        fix1["branch"].as_str().unwrap(),
        fix2["branch"].as_str().unwrap(),
    );
    assert_eq!(old.head, branch1);
    assert_eq!(new.head, branch2);
    assert_eq!(new.state, "open");
    assert!(new.body.contains(fix2["git_fix_ref"].as_str().unwrap()));
    assert_eq!(links["pull_request"]["number"], new.number);
    assert_eq!(links["pull_request"]["state"], "open");
    assert_eq!(links["earlier_pull_requests"][0]["number"], first);
    assert_eq!(links["earlier_pull_requests"][0]["state"], "merged");
    assert_eq!(links["earlier_pull_requests"][0]["fix_id"], fix1["id"]);
    let mut want = [
        format!(
            "refs/heads/{branch1} {}",
            fix1["git_fix_ref"].as_str().unwrap()
        ),
        format!(
            "refs/heads/{branch2} {}",
            fix2["git_fix_ref"].as_str().unwrap()
        ),
    ];
    want.sort();
    assert_eq!(
        b.remote_refs(),
        want.join("\n"),
        "the merged branch untouched"
    );
    assert!(
        !b.forge
            .requests()
            .iter()
            .any(|r| r.method == "PATCH" && r.path == format!("/repos/acme/app/pulls/{first}")),
        "the merged pull request's body is not rewritten"
    );
    let text = stdout(&b.ws.run(&["incident", &id]));
    assert!(
        text.contains(&format!(
            "earlier    #{first} https://github.example/acme/app/pull/{first} (merged)"
        )),
        "{text}"
    );
    let text = stdout(&b.ws.run(&["report"]));
    assert!(
        text.contains(&format!("earlier pull request #{first} (merged)")),
        "{text}"
    );
    assert!(d.term(Duration::from_secs(10)).success());
}

/// A daemon whose first fix of an incident waits for review on its pull request.
struct Reviewed {
    d: crate::harness::Daemon,
    api: String,
    gh: String,
    id: String,
    fix1: Value,
    number: u64,
}

/// Configures `b` with pull requests and no merge, starts the daemon and sends the failed
/// CI job `job` (run `run`): its incident's first fix is proven and its pull request opened.
fn awaiting_review(b: &Bench, run: &str, job: u64) -> Reviewed {
    b.configure(&b.pull_request_section("", 3), "");
    let (d, info) = b.watch();
    let api = info.api_url("");
    let gh = info.webhook_url("gh");
    send_job(&gh, run, job, SHA1, 1, "failure");
    let id = wait_incident(&api, "IndexError")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let fix1 = ended_fixes(&api, &id, 1).remove(0);
    assert_eq!(fix1["status"], "success", "{fix1:#}");
    let number = wait_links(&api, &id, "a pull request", |f| {
        f["pull_request"]["number"].is_u64()
    })["pull_request"]["number"]
        .as_u64()
        .unwrap();
    Reviewed {
        d,
        api,
        gh,
        id,
        fix1,
        number,
    }
}

#[test]
fn while_the_pull_request_is_open_recurrences_comment_and_a_forge_failure_keeps_a_fix_local() {
    let b = Bench::new(
        vec![
            answer(reproducer(), the_fix(), Value::Null),
            answer(reproducer(), the_fix(), Value::Null),
            answer(reproducer(), the_fix(), Value::Null),
        ],
        &[1501, 1502, 1503],
    );
    // No merge: the fix waits for review on its pull request (the user's tree is dirty too).
    let Reviewed {
        d,
        api,
        gh,
        id,
        fix1,
        number,
    } = awaiting_review(&b, "o-1", 1501);
    let branch1 = fix1["branch"].as_str().unwrap().to_string();
    let commit1 = fix1["git_fix_ref"].as_str().unwrap().to_string();
    let body1 = b.forge.pulls()[0].body.clone();

    // Recurrences while it is open: the incident stays resolved and counts them; one
    // comment says so, and the next within the hour adds none.
    send_job(&gh, "o-2", 1502, SHA2, 1, "failure");
    let comments = eventually(Duration::from_secs(30), || {
        let c = b.forge.pulls()[0].comments.clone();
        (!c.is_empty()).then_some(c)
    })
    .unwrap_or_else(|| panic!("no comment: {:#}\n{}", detail(&api, &id), d.log_text()));
    assert!(
        comments[0].starts_with(
            "Seen 1 more time since this pull request's fix was pushed (2 occurrences in all"
        ),
        "{comments:?}"
    );
    send_job(&gh, "o-3", 1503, SHA2, 1, "failure");
    eventually(Duration::from_secs(30), || {
        (detail(&api, &id)["count"] == 3 && forge_caught_up(&b)).then_some(())
    })
    .unwrap_or_else(|| panic!("{:#}", detail(&api, &id)));
    let doc = detail(&api, &id);
    assert_eq!(
        (doc["status"].as_str(), doc["resolution"].as_str()),
        (Some("resolved"), Some("fix_ready_for_review"))
    );
    assert_eq!(b.forge.pulls()[0].comments.len(), 1, "at most one an hour");
    assert_eq!(doc["forge"]["pull_request"]["noted_count"], 2);
    assert_eq!(b.forge.pulls().len(), 1);
    assert_eq!(ended_fixes(&api, &id, 1).len(), 1, "no new fix");

    // A fix asked for by hand while the forge cannot say the pull request's state: nothing
    // pushed, nothing rewritten, the fix stays on its local branch and the incident says why.
    let path = format!("/repos/acme/app/pulls/{number}");
    b.forge.fail("GET", &path, 502);
    let sample = doc["sample"].as_str().unwrap().to_string();
    let ask = || {
        let r = http()
            .post(format!("{api}/fix"))
            .json(&json!({"pact_key": KEY, "error": sample}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().unwrap_or_default());
    };
    ask();
    let fix2 = ended_fixes(&api, &id, 2)[1].clone();
    assert_eq!(fix2["status"], "success", "{fix2:#}");
    let branch2 = fix2["branch"].as_str().unwrap().to_string();
    let error = wait_links(&api, &id, "the error", |f| {
        f["error"].as_str().is_some_and(|e| !e.is_empty())
    })["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.starts_with(&format!("the fix stays on its local branch {branch2}")),
        "{error}"
    );
    assert!(
        error.contains(&format!("pull request #{number}'s state could not be read")),
        "{error}"
    );
    assert!(error.contains("HTTP 502"), "{error}");
    assert_eq!(b.remote_refs(), format!("refs/heads/{branch1} {commit1}"));
    let pulls = b.forge.pulls();
    assert_eq!((pulls.len(), pulls[0].body.as_str()), (1, body1.as_str()));
    assert_eq!(
        detail(&api, &id)["forge"]["pull_request"]["fix_id"],
        fix1["id"]
    );
    assert_eq!(
        git(&b.project, &["branch", "--list", &branch2]).trim_start_matches("* "),
        branch2
    );
    let text = stdout(&b.ws.run(&["incident", &id]));
    assert!(
        text.contains("forge      the fix stays on its local branch"),
        "{text}"
    );

    // The forge answers again (once it is done with fix 2: its incident_resolved tries fix 2
    // once more): the next fix asked for by hand updates the same pull request.
    eventually(Duration::from_secs(30), || {
        forge_caught_up(&b).then_some(())
    })
    .expect("the forge followed the log to its end");
    b.forge.fail("GET", &path, 0);
    ask();
    let fix3 = ended_fixes(&api, &id, 3)[2].clone();
    assert_eq!(fix3["status"], "success", "{fix3:#}");
    let fix3_id = fix3["id"].as_str().unwrap();
    let links = wait_links(&api, &id, "the pull request carrying fix 3", |f| {
        f["pull_request"]["fix_id"] == fix3_id
    });
    assert_eq!(links["pull_request"]["number"], number);
    assert_eq!(links["error"], "");
    let pulls = b.forge.pulls();
    assert_eq!(pulls.len(), 1, "{pulls:#?}");
    assert_eq!(
        b.remote_refs(),
        format!(
            "refs/heads/{branch1} {}",
            fix3["git_fix_ref"].as_str().unwrap()
        )
    );
    assert!(
        pulls[0]
            .body
            .contains(fix3["git_fix_ref"].as_str().unwrap())
    );
    let replaced = pulls[0].comments.last().unwrap();
    assert!(replaced.contains(fix3_id), "{replaced}");
    assert!(!replaced.contains("regression"), "{replaced}");
    assert!(d.term(Duration::from_secs(10)).success());
}

/// A pull request a person merges on the forge (Sentinel did not merge its fix): the next
/// recurrence finds it merged and records so, and from then on the fix counts as deployed:
/// the occurrence after that reopens the incident as a regression, whose fix opens a new
/// pull request.
#[test]
fn a_pull_request_a_person_merges_makes_the_next_recurrence_a_regression() {
    let b = Bench::new(
        vec![
            answer(reproducer(), the_fix(), Value::Null),
            answer(reproducer(), the_fix(), Value::Null),
        ],
        &[1701, 1702, 1703],
    );
    // No merge by Sentinel: the fix waits for review on its pull request.
    let Reviewed {
        d,
        api,
        gh,
        id,
        fix1,
        number: first,
    } = awaiting_review(&b, "m-1", 1701);
    assert_eq!(fix1["merged"], false, "{fix1:#}");
    b.forge.set_pull_state(first, "merged");

    // A recurrence: the forge says merged. Recorded, the fix marked merged; no comment, no
    // new fix, the incident still resolved.
    send_job(&gh, "m-2", 1702, SHA2, 1, "failure");
    wait_links(&api, &id, "the merge seen", |f| {
        f["pull_request"]["state"] == "merged"
    });
    let doc = detail(&api, &id);
    assert_eq!(
        (doc["status"].as_str(), doc["count"].as_u64()),
        (Some("resolved"), Some(2)),
        "{doc:#}"
    );
    assert!(b.forge.pulls()[0].comments.is_empty());
    let fixes = ended_fixes(&api, &id, 1);
    assert_eq!(fixes.len(), 1, "no new fix");
    assert_eq!(fixes[0]["merged"], true, "{:#}", fixes[0]);

    // The next occurrence is a regression: a new generation, a new pull request beside the
    // merged one.
    send_job(&gh, "m-3", 1703, SHA2, 1, "failure");
    let fix2 = ended_fixes(&api, &id, 2)[1].clone();
    assert_eq!(
        (fix2["status"].as_str(), fix2["generation"].as_u64()),
        (Some("success"), Some(2)),
        "{fix2:#}"
    );
    let fix2_id = fix2["id"].as_str().unwrap();
    let links = wait_links(&api, &id, "a second pull request", |f| {
        f["pull_request"]["fix_id"] == fix2_id
    });
    let pulls = b.forge.pulls();
    assert_eq!(pulls.len(), 2, "{pulls:#?}");
    assert_eq!(
        (pulls[0].number, pulls[0].state.as_str()),
        (first, "merged")
    );
    assert_eq!(links["earlier_pull_requests"][0]["number"], first);
    assert_eq!(links["earlier_pull_requests"][0]["state"], "merged");
    let text = stdout(&b.ws.run(&["incident", &id]));
    assert_eq!(text.matches("incident_regressed").count(), 1, "{text}");
    assert!(
        text.contains(&format!(
            "earlier    #{first} https://github.example/acme/app/pull/{first} (merged)"
        )),
        "{text}"
    );
    assert!(d.term(Duration::from_secs(10)).success());
}
