//! CI failures as a source (`type: github`, `type: gitlab`) against the real daemon: signed
//! webhooks written after GitHub's and GitLab's documented shapes (`testdata/ci/`), job logs
//! read from a fake of their APIs on loopback (GitHub's answer is a redirect to a
//! short-lived URL), incidents attributed by the PACT key of the failing step's error.

use std::time::Duration;

use hmac::{KeyInit, Mac};
use serde_json::{Value, json};

use crate::fake_forge::{DOWNLOAD_SECRET, FakeForge};
use crate::fix_e2e::{KEY, project};
use crate::harness::{DaemonInfo, Workspace, eventually, http, stderr};

pub(crate) const GH_SECRET: &str = "gh-webhook-secret";
pub(crate) const GH_TOKEN: &str = "gh-api-token";
/// A GitLab signing token (`whsec_` + base64 of the key `0123456789abcdef`); also the
/// `X-Gitlab-Token` the GitLab source accepts.
const GL_SECRET: &str = "whsec_MDEyMzQ1Njc4OWFiY2RlZg==";
const GL_TOKEN: &str = "gl-api-token";
pub(crate) const SHA1: &str = "8f3c2b1a9d4e5f60718293a4b5c6d7e8f9012345";
pub(crate) const SHA2: &str = "1111111111222222222233333333334444444444";
const STEP: &str = "python -m unittest discover -s tests/auth_module";

pub(crate) fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/ci")
            .join(name),
    )
    .unwrap()
}

/// The `workflow_job` fixture as job `id` of commit `sha`, attempt `attempt`, concluded
/// `conclusion`.
pub(crate) fn job_event(id: u64, sha: &str, attempt: u64, conclusion: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_str(&fixture("github_workflow_job_failed.json")).unwrap();
    let j = &mut v["workflow_job"];
    j["id"] = json!(id);
    j["head_sha"] = json!(sha);
    j["run_attempt"] = json!(attempt);
    j["conclusion"] = json!(conclusion);
    j["html_url"] = json!(format!(
        "https://github.com/acme/app/actions/runs/10453467841/job/{id}"
    ));
    if conclusion == "success" {
        for st in j["steps"].as_array_mut().unwrap() {
            st["conclusion"] = json!("success");
        }
    }
    serde_json::to_vec(&v).unwrap()
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`.
pub(crate) fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// POSTs a GitHub webhook; `signature` None: unsigned.
pub(crate) fn post_github(
    url: &str,
    event: &str,
    delivery: &str,
    body: &[u8],
    signature: Option<String>,
) -> (u16, Value) {
    let mut rb = http()
        .post(url)
        .header("content-type", "application/json")
        .header("x-github-event", event)
        .header("x-github-delivery", delivery)
        .body(body.to_vec());
    if let Some(s) = signature {
        rb = rb.header("x-hub-signature-256", s);
    }
    let r = rb.send().unwrap();
    let code = r.status().as_u16();
    (code, r.json().unwrap_or(Value::Null))
}

/// Posts a signed failing (or passing) job; asserts the answer.
pub(crate) fn send_job(
    url: &str,
    delivery: &str,
    id: u64,
    sha: &str,
    attempt: u64,
    conclusion: &str,
) {
    let body = job_event(id, sha, attempt, conclusion);
    let (code, v) = post_github(
        url,
        "workflow_job",
        delivery,
        &body,
        Some(sign(GH_SECRET, &body)),
    );
    assert_eq!(code, 202, "{v}");
    assert_eq!(v["queued"], 1, "{v}");
}

pub(crate) fn incidents(api: &str) -> Vec<Value> {
    http()
        .get(format!("{api}/incidents"))
        .send()
        .ok()
        .and_then(|r| r.json::<Value>().ok())
        .and_then(|v| v["incidents"].as_array().cloned())
        .unwrap_or_default()
}

pub(crate) fn detail(api: &str, id: &str) -> Value {
    http()
        .get(format!("{api}/incidents/{id}"))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

/// The incident's detail once its CI record is written (a moment after the incident).
pub(crate) fn detail_ci(api: &str, id: &str) -> Value {
    eventually(Duration::from_secs(30), || {
        let doc = detail(api, id);
        doc["ci"].is_object().then_some(doc)
    })
    .unwrap_or_else(|| panic!("no CI record: {:#}", detail(api, id)))
}

/// The incident whose sample contains `needle`, once there.
pub(crate) fn wait_incident(api: &str, needle: &str) -> Value {
    eventually(Duration::from_secs(30), || {
        incidents(api)
            .into_iter()
            .find(|i| i["sample"].as_str().is_some_and(|s| s.contains(needle)))
    })
    .unwrap_or_else(|| panic!("no incident with {needle:?}: {:#?}", incidents(api)))
}

pub(crate) fn github_source(api_url: &str) -> String {
    format!(
        "  - type: github\n    name: gh\n    port: 0\n    secret_env: GH_SECRET\n    token_env: GH_TOKEN\n    api_url: {api_url}\n"
    )
}

#[test]
fn github_and_gitlab_failures_become_attributed_incidents() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeForge::start());
    fake.set_log(29679449, &fixture("github_job_log.txt"));
    fake.set_log(29679450, &fixture("github_job_log.txt"));
    fake.fail_log(29679451, 404);
    fake.set_log(1977, &fixture("gitlab_job_trace.txt"));
    fake.set_log(1978, &fixture("gitlab_job_trace.txt"));
    let ws = Workspace::with_config(&format!(
        "state_dir: state\nsources:\n{}  - type: gitlab\n    name: gl\n    port: 0\n    secret_env: GL_SECRET\n    token_env: GL_TOKEN\n    api_url: {}\napi:\n  listen: 127.0.0.1:0\n",
        github_source(&fake.github_url()),
        fake.gitlab_url()
    ));
    let mut d = ws.spawn_env(
        &["watch"],
        &[
            ("GH_SECRET", GH_SECRET),
            ("GH_TOKEN", GH_TOKEN),
            ("GL_SECRET", GL_SECRET),
            ("GL_TOKEN", GL_TOKEN),
        ],
    );
    let info: DaemonInfo = d.ready();
    let api = info.api_url("");
    let gh = info.webhook_url("gh");
    let gl = info.webhook_url("gl");

    // ping is answered; an event Sentinel does not read is acknowledged and ignored.
    let ping = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
    let (code, _) = post_github(&gh, "ping", "p-1", ping, Some(sign(GH_SECRET, ping)));
    assert_eq!(code, 200);
    let push = br#"{"ref":"refs/heads/main"}"#;
    let (code, v) = post_github(&gh, "push", "p-2", push, Some(sign(GH_SECRET, push)));
    assert_eq!((code, v["ignored"].is_string()), (200, true), "{v}");

    // A signed failing workflow_job: 202 at once, then an incident attributed by the PACT key
    // of the failing step's first error line.
    send_job(&gh, "d-1", 29679449, SHA1, 1, "failure");
    let inc = wait_incident(&api, "IndexError");
    assert_eq!(inc["pact_key"], KEY, "{inc:#}");
    assert_eq!(inc["source"], "gh");
    let sample = inc["sample"].as_str().unwrap();
    assert!(
        sample.starts_with("ERROR [PACT:auth_module:validate_token] IndexError: list index out of range [ci acme/app · CI · test · python -m unittest"),
        "{sample}"
    );
    let id = inc["id"].as_str().unwrap().to_string();
    let doc = detail_ci(&api, &id);
    let ci = &doc["ci"];
    assert_eq!(
        (
            ci["provider"].as_str(),
            ci["repository"].as_str(),
            ci["workflow"].as_str(),
            ci["job"].as_str(),
            ci["step"].as_str()
        ),
        (
            Some("github"),
            Some("acme/app"),
            Some("CI"),
            Some("test"),
            Some(STEP)
        ),
        "{doc:#}"
    );
    let occ = &ci["occurrences"][0];
    assert_eq!(occ["commit"], SHA1);
    assert_eq!(occ["branch"], "main");
    assert_eq!(occ["attempt"], 1);
    assert_eq!(occ["log_read"], true);
    assert!(occ["run_url"].as_str().unwrap().ends_with("/job/29679449"));
    assert!(ci["errors"][0].as_str().unwrap().contains(KEY));
    // The log was read with the token, through the redirect; the short-lived URL is in no log.
    let reqs = fake.requests();
    let log_req = reqs
        .iter()
        .find(|r| r.path.ends_with("/actions/jobs/29679449/logs"))
        .expect("the log was asked for");
    assert_eq!(log_req.auth, format!("Bearer {GH_TOKEN}"));
    assert!(
        reqs.iter()
            .any(|r| r.path.starts_with("/_download/29679449"))
    );
    assert!(!d.log_text().contains(DOWNLOAD_SECRET));

    // A replayed delivery is acknowledged and not counted again; the same job under another
    // delivery id is not counted again either (the job's id is durable in the store); the
    // same failure on another commit is the same incident, one more occurrence.
    let body = job_event(29679449, SHA1, 1, "failure");
    let (code, v) = post_github(
        &gh,
        "workflow_job",
        "d-1",
        &body,
        Some(sign(GH_SECRET, &body)),
    );
    assert_eq!((code, &v["duplicate"]), (200, &json!(true)), "{v}");
    send_job(&gh, "d-1-again", 29679449, SHA1, 1, "failure");
    send_job(&gh, "d-2", 29679450, SHA2, 1, "failure");
    let counted = eventually(Duration::from_secs(30), || {
        let doc = detail(&api, &id);
        (doc["ci"]["occurrences"].as_array()?.len() == 2).then_some(doc)
    })
    .expect("the second commit's failure");
    assert_eq!(counted["count"], 2, "{counted:#}");
    assert_eq!(counted["ci"]["occurrences"][1]["commit"], SHA2);
    assert_eq!(
        incidents(&api)
            .iter()
            .filter(|i| i["sample"].as_str().unwrap().contains("IndexError") && i["source"] == "gh")
            .count(),
        1
    );

    // Refusals: a bad or missing signature is 401, an oversized body 413, bad JSON 400
    // naming the position.
    let (code, v) = post_github(
        &gh,
        "workflow_job",
        "x-1",
        &body,
        Some(sign("wrong", &body)),
    );
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (401, Some("unauthorized")),
        "{v}"
    );
    let (code, _) = post_github(&gh, "workflow_job", "x-2", &body, None);
    assert_eq!(code, 401);
    let big = vec![b' '; sentinel::source::ci::MAX_BODY_BYTES + 1];
    let (code, v) = post_github(
        &gh,
        "workflow_job",
        "x-3",
        &big,
        Some(sign(GH_SECRET, &big)),
    );
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (413, Some("payload_too_large")),
        "{v}"
    );
    let bad = b"{\"action\": \"completed\",\n  \"workflow_job\": {\"id\": 1,,}}";
    let (code, v) = post_github(&gh, "workflow_job", "x-4", bad, Some(sign(GH_SECRET, bad)));
    assert_eq!(code, 400, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("line 2, column"), "{msg}");

    // A log that cannot be read still makes an incident, which says so.
    send_job(&gh, "d-3", 29679451, SHA1, 1, "failure");
    let unread = wait_incident(&api, "its log could not be read");
    let doc = detail_ci(&api, unread["id"].as_str().unwrap());
    assert!(
        doc["ci"]["log_error"]
            .as_str()
            .unwrap()
            .contains("HTTP 404"),
        "{doc:#}"
    );
    assert_eq!(doc["ci"]["occurrences"][0]["log_read"], false);

    // GitLab: a Job Hook with X-Gitlab-Token, the trace read with PRIVATE-TOKEN.
    let hook = fixture("gitlab_job_hook_failed.json");
    let post_gitlab = |body: &str, headers: &[(&str, String)]| {
        let mut rb = http()
            .post(&gl)
            .header("content-type", "application/json")
            .header("x-gitlab-event", "Job Hook")
            .body(body.to_string());
        for (k, v) in headers {
            rb = rb.header(*k, v);
        }
        let r = rb.send().unwrap();
        (
            r.status().as_u16(),
            r.json::<Value>().unwrap_or(Value::Null),
        )
    };
    let (code, v) = post_gitlab(&hook, &[("x-gitlab-token", "nope".into())]);
    assert_eq!(code, 401, "{v}");
    let (code, v) = post_gitlab(&hook, &[("x-gitlab-token", GL_SECRET.into())]);
    assert_eq!(code, 202, "{v}");
    let glinc = eventually(Duration::from_secs(30), || {
        incidents(&api).into_iter().find(|i| i["source"] == "gl")
    })
    .expect("the GitLab incident");
    assert_eq!(glinc["pact_key"], KEY);
    let gid = glinc["id"].as_str().unwrap().to_string();
    let doc = detail_ci(&api, &gid);
    assert_eq!(
        (doc["ci"]["provider"].as_str(), doc["ci"]["step"].as_str()),
        (Some("gitlab"), Some("step_script")),
        "{doc:#}"
    );
    assert!(
        doc["ci"]["occurrences"][0]["run_url"]
            .as_str()
            .unwrap()
            .ends_with("/acme/app/-/jobs/1977")
    );
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.path == "/api/v4/projects/380/jobs/1977/trace" && r.auth == GL_TOKEN)
    );
    // The signed form (webhook-signature), the same failure on another commit: one incident.
    let mut v: Value = serde_json::from_str(&hook).unwrap();
    v["build_id"] = json!(1978);
    v["sha"] = json!(SHA2);
    let body = serde_json::to_string(&v).unwrap();
    let ts = jiff::Timestamp::now().as_second().to_string();
    let mut mac =
        <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(b"0123456789abcdef").unwrap();
    mac.update(format!("msg_2.{ts}.{body}").as_bytes());
    let sig = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        mac.finalize().into_bytes(),
    );
    let (code, v) = post_gitlab(
        &body,
        &[
            ("webhook-id", "msg_2".into()),
            ("webhook-timestamp", ts.clone()),
            ("webhook-signature", format!("v1,{sig}")),
        ],
    );
    assert_eq!(code, 202, "{v}");
    eventually(Duration::from_secs(30), || {
        (detail(&api, &gid)["count"] == 2).then_some(())
    })
    .expect("the signed GitLab hook counted in the same incident");
    let (code, _) = post_gitlab(
        &body,
        &[
            ("webhook-id", "msg_3".into()),
            ("webhook-timestamp", ts),
            ("webhook-signature", format!("v1,{sig}")),
        ],
    );
    assert_eq!(code, 401, "a signature over another id does not verify");
    assert!(d.term(Duration::from_secs(10)).success());
}

#[test]
fn a_flaky_failure_is_never_sent_to_the_fixer() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let llm = rt.block_on(sentinel::fix::fake_llm::FakeLlm::start());
    llm.otherwise(
        sentinel::fix::fake_llm::Route::Anthropic,
        sentinel::fix::fake_llm::Reply::status(500),
    );
    let fake = rt.block_on(FakeForge::start());
    fake.set_log(501, &fixture("github_job_log.txt"));
    let ws = Workspace::with_config(&config(llm.base_url(), &fake.github_url(), "", ""));
    project(&ws);
    assert!(ws.run(&["register", "project"]).status.success());
    // Held while the rerun comes in (the kill switch, before the daemon starts).
    let out = ws.run(&["fixes", "pause", "--reason", "waiting for the rerun"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut d = ws.spawn_env(&["watch"], &env());
    let info = d.ready();
    let api = info.api_url("");
    let gh = info.webhook_url("gh");
    send_job(&gh, "f-1", 501, SHA1, 1, "failure");
    let inc = wait_incident(&api, "IndexError");
    let id = inc["id"].as_str().unwrap().to_string();
    // The rerun of the same commit passes: flaky.
    send_job(&gh, "f-2", 502, SHA1, 2, "success");
    let doc = eventually(Duration::from_secs(30), || {
        let doc = detail(&api, &id);
        (doc["ci"]["flaky"] == true).then_some(doc)
    })
    .expect("marked flaky");
    assert!(
        doc["ci"]["flaky_reason"]
            .as_str()
            .unwrap()
            .contains("passed on attempt 2"),
        "{doc:#}"
    );
    let out = ws.run(&["fixes", "resume"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc = eventually(Duration::from_secs(30), || {
        let doc = detail(&api, &id);
        (doc["status"] == "escalated").then_some(doc)
    })
    .unwrap_or_else(|| panic!("{:#}\n{}", detail(&api, &id), d.log_text()));
    assert_eq!(doc["resolution"], "flaky");
    assert!(
        doc["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "fix_refused" && e["data"]["guardrail"] == "flaky"),
        "{doc:#}"
    );
    assert_eq!(
        llm.request_count(),
        0,
        "a flaky failure never reaches the LLM"
    );
    let out = ws.run(&["report", "--json"]);
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap();
    assert_eq!(row["flaky"], true);
    let text = String::from_utf8_lossy(&ws.run(&["report"]).stdout).into_owned();
    assert!(text.contains("FLAKY"), "{text}");
    assert!(d.term(Duration::from_secs(10)).success());
}

/// The environment of a daemon with the GitHub source (and `fix.pull_request`/`issues`
/// using the same token).
pub(crate) fn env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("GH_SECRET", GH_SECRET),
        ("GH_TOKEN", GH_TOKEN),
        ("FAKE_LLM_KEY", "k"),
    ]
}

/// A fixing daemon's config: the GitHub source, the project, the fake LLM; `fix_extra` and
/// `extra` are more keys of `fix` (indented) and top-level sections.
pub(crate) fn config(llm: &str, api_url: &str, fix_extra: &str, extra: &str) -> String {
    format!(
        "state_dir: state\nauto_remediate: true\nerror_threshold:\n  count: 1\n  window_seconds: 300\n\
         sources:\n{}\
         pact:\n  project_dir: project\n\
         llm:\n  provider: anthropic\n  base_url: {llm}\n  api_key_env: FAKE_LLM_KEY\n  timeout_seconds: 20\n\
         fix:\n  test_timeout_seconds: 60\n  max_attempts: 1\n{fix_extra}\
         api:\n  listen: 127.0.0.1:0\n{extra}",
        github_source(api_url)
    )
}
