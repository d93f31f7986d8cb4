//! The CI sources' durable log-fetch queue and the other GitHub events, against the real
//! daemon: a job acknowledged 202 survives a stop (SIGTERM) before its log could be read,
//! and `workflow_run` / `check_run` / `workflow_job` reports of the same job count once.

use std::time::Duration;

use serde_json::{Value, json};

use crate::ci_sources::{
    GH_SECRET, GH_TOKEN, SHA1, SHA2, detail, detail_ci, fixture, github_source, incidents,
    post_github, send_job, sign, wait_incident,
};
use crate::fake_forge::{FakeForge, HOLD};
use crate::fix_e2e::KEY;
use crate::harness::{Workspace, eventually};

const RUN: u64 = 10453467900;
const JOB: u64 = 29679471;
const LINT: u64 = 29679470;
const STEP: &str = "python -m unittest discover -s tests/auth_module";

fn daemon_env() -> [(&'static str, &'static str); 2] {
    [("GH_SECRET", GH_SECRET), ("GH_TOKEN", GH_TOKEN)]
}

fn workspace(fake: &FakeForge) -> Workspace {
    Workspace::with_config(&format!(
        "state_dir: state\nsources:\n{}api:\n  listen: 127.0.0.1:0\n",
        github_source(&fake.github_url())
    ))
}

/// The rows of the durable queue (read from the store while the daemon runs, or after).
fn pending(ws: &Workspace) -> Vec<(u64, sentinel::store::ci::PendingFetch)> {
    ws.store().expect("the store").ci_pending().unwrap()
}

fn wait_drained(ws: &Workspace) {
    eventually(Duration::from_secs(30), || {
        pending(ws).is_empty().then_some(())
    })
    .unwrap_or_else(|| panic!("the queue did not drain: {:#?}", pending(ws)));
}

fn log_path(id: u64) -> String {
    format!("/repos/acme/app/actions/jobs/{id}/logs")
}

#[test]
fn a_job_acknowledged_before_a_stop_is_fetched_after_the_restart() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeForge::start());
    // The log endpoint fails once, then holds the next request open: the daemon stops with
    // the fetch in its backoff state and an attempt in flight.
    fake.script_log(JOB, &[503, HOLD]);
    let ws = workspace(&fake);
    let mut d = ws.spawn_env(&["watch"], &daemon_env());
    let info = d.ready();
    send_job(&info.webhook_url("gh"), "q-1", JOB, SHA1, 1, "failure");
    // Acknowledged means kept: the row is in the store when the 202 is answered.
    let rows = pending(&ws);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0].1.source, "gh");
    assert_eq!(rows[0].1.work["job"]["id"], JOB, "{rows:#?}");
    eventually(Duration::from_secs(30), || {
        (fake.count(&log_path(JOB)) >= 2).then_some(())
    })
    .unwrap_or_else(|| panic!("the log was not asked for twice:\n{}", d.log_text()));
    // The failed attempt is in the row: one try spent, the next not before its backoff.
    let rows = pending(&ws);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0].1.tries, 1, "{rows:#?}");
    assert!(rows[0].1.not_before_ms > 0, "{rows:#?}");
    assert!(
        incidents(&info.api_url("")).is_empty(),
        "nothing recorded before the log is read"
    );
    assert!(d.term(Duration::from_secs(20)).success());
    assert_eq!(pending(&ws).len(), 1, "the stop keeps the row");

    // Restarted with the log endpoint working: the fetch resumes and the failure is one
    // incident, counted once, with the log's error.
    fake.set_log(JOB, &fixture("github_job_log.txt"));
    let mut d = ws.spawn_env(&["watch"], &daemon_env());
    let info = d.ready();
    let api = info.api_url("");
    let inc = wait_incident(&api, "IndexError");
    assert_eq!(inc["pact_key"], KEY, "{inc:#}");
    let id = inc["id"].as_str().unwrap().to_string();
    let doc = detail_ci(&api, &id);
    wait_drained(&ws);
    let doc2 = detail(&api, &id);
    assert_eq!(doc2["count"], 1, "{doc2:#}");
    assert_eq!(doc["ci"]["occurrences"].as_array().unwrap().len(), 1);
    assert_eq!(doc["ci"]["occurrences"][0]["log_read"], true);
    assert_eq!(doc["ci"]["occurrences"][0]["job_id"], JOB);
    assert!(doc["ci"]["errors"][0].as_str().unwrap().contains(KEY));
    assert_eq!(incidents(&api).len(), 1, "{:#?}", incidents(&api));
    assert!(d.log_text().contains("resuming queued CI log fetches"));
    assert!(d.term(Duration::from_secs(20)).success());
}

fn run_event(run_id: u64, sha: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_str(&fixture("github_workflow_run_failed.json")).unwrap();
    v["workflow_run"]["id"] = json!(run_id);
    v["workflow_run"]["head_sha"] = json!(sha);
    serde_json::to_vec(&v).unwrap()
}

fn check_event(job: u64, run_id: u64, sha: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_str(&fixture("github_check_run_failed.json")).unwrap();
    let c = &mut v["check_run"];
    // The check run's own id differs from the job's: the job is the details_url's.
    c["id"] = json!(job + 1_000_000);
    c["head_sha"] = json!(sha);
    c["details_url"] = json!(format!(
        "https://github.com/acme/app/actions/runs/{run_id}/job/{job}"
    ));
    serde_json::to_vec(&v).unwrap()
}

/// The jobs listing of run `run_id`: `lint` passed, `test` (`job`) failed on `sha`.
fn listing(run_id: u64, job: u64, sha: &str) -> Value {
    let mut v: Value = serde_json::from_str(&fixture("github_run_jobs.json")).unwrap();
    for j in v["jobs"].as_array_mut().unwrap() {
        j["run_id"] = json!(run_id);
        j["head_sha"] = json!(sha);
        if j["conclusion"] == "failure" {
            j["id"] = json!(job);
            j["html_url"] = json!(format!(
                "https://github.com/acme/app/actions/runs/{run_id}/job/{job}"
            ));
        }
    }
    v
}

fn post(url: &str, event: &str, delivery: &str, body: &[u8]) {
    let (code, v) = post_github(url, event, delivery, body, Some(sign(GH_SECRET, body)));
    assert_eq!((code, &v["queued"]), (202, &json!(1)), "{event}: {v}");
}

#[test]
fn workflow_run_check_run_and_workflow_job_of_one_job_count_once() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeForge::start());
    let (run2, job2) = (RUN + 1, JOB + 10);
    for (run, job, sha) in [(RUN, JOB, SHA1), (run2, job2, SHA2)] {
        let l = listing(run, job, sha);
        fake.set_run_jobs(run, l.clone());
        fake.set_job(l["jobs"][1].clone());
        fake.set_log(job, &fixture("github_job_log.txt"));
    }
    let ws = workspace(&fake);
    let mut d = ws.spawn_env(&["watch"], &daemon_env());
    let info = d.ready();
    let api = info.api_url("");
    let gh = info.webhook_url("gh");

    // A failed workflow_run: its jobs listed, the failed one's log read, an incident.
    post(&gh, "workflow_run", "r-1", &run_event(RUN, SHA1));
    let inc = wait_incident(&api, "IndexError");
    assert_eq!(inc["pact_key"], KEY, "{inc:#}");
    let id = inc["id"].as_str().unwrap().to_string();
    let doc = detail_ci(&api, &id);
    let ci = &doc["ci"];
    assert_eq!(
        (
            ci["workflow"].as_str(),
            ci["job"].as_str(),
            ci["step"].as_str()
        ),
        (Some("CI"), Some("test"), Some(STEP)),
        "{doc:#}"
    );
    assert_eq!(ci["occurrences"][0]["job_id"], JOB);
    assert_eq!(ci["occurrences"][0]["commit"], SHA1);
    assert_eq!(
        fake.count(&format!("/repos/acme/app/actions/runs/{RUN}/jobs")),
        1
    );
    assert_eq!(fake.count(&log_path(LINT)), 0, "a passed job is not read");

    // The same job reported by its check_run, then by its workflow_job: each is fetched
    // (the check run's job read from the API first), neither counts again.
    post(&gh, "check_run", "c-1", &check_event(JOB, RUN, SHA1));
    wait_drained(&ws);
    assert_eq!(
        fake.count(&format!("/repos/acme/app/actions/jobs/{JOB}")),
        1,
        "the check run's job was read"
    );
    assert_eq!(fake.count(&log_path(JOB)), 2);
    send_job(&gh, "j-1", JOB, SHA1, 1, "failure");
    wait_drained(&ws);
    assert_eq!(fake.count(&log_path(JOB)), 3);

    // The other order, on another commit: workflow_job first, then check_run and
    // workflow_run: one more occurrence of the same incident.
    send_job(&gh, "j-2", job2, SHA2, 1, "failure");
    wait_drained(&ws);
    post(&gh, "check_run", "c-2", &check_event(job2, run2, SHA2));
    wait_drained(&ws);
    post(&gh, "workflow_run", "r-2", &run_event(run2, SHA2));
    wait_drained(&ws);
    assert_eq!(fake.count(&log_path(job2)), 3);

    let doc = detail(&api, &id);
    assert_eq!(
        doc["count"], 2,
        "one per job, whichever events came: {doc:#}"
    );
    let occ = doc["ci"]["occurrences"].as_array().unwrap();
    assert_eq!(occ.len(), 2, "{doc:#}");
    assert_eq!(
        (occ[0]["job_id"].as_u64(), occ[1]["job_id"].as_u64()),
        (Some(JOB), Some(job2))
    );
    assert_eq!(incidents(&api).len(), 1, "{:#?}", incidents(&api));
    assert!(d.term(Duration::from_secs(20)).success());
}
