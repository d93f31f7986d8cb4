//! A small fake of the GitHub and GitLab APIs on loopback, recording what it receives: job
//! logs (GitHub's answer is a 302 to a short-lived download URL carrying its own token, as
//! the real API's), GitLab job traces, pull (merge) requests (create, list, read, update,
//! comment; a test may merge or close one as a person would: [`FakeForge::set_pull_state`])
//! and issues (create, comment, close). Any request may be made to fail
//! ([`FakeForge::fail`]).
//!
//! For GitHub Actions it also serves a job (`GET …/actions/jobs/{id}`) and a run's jobs
//! (`GET …/actions/runs/{run_id}/jobs`), and a job's log can be scripted: answer a status,
//! or hold the request open until the log is set ([`FakeForge::script_log`]).
//!
//! GitHub's API is at the root (`api_url: http://<addr>`), GitLab's under `/api/v4`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The secret a download URL carries (it must never show in Sentinel's log).
pub(crate) const DOWNLOAD_SECRET: &str = "sig-5f1e0c2d9b";

/// One request the fake received.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub(crate) method: String,
    pub(crate) path: String,
    /// `Authorization` or `PRIVATE-TOKEN`.
    pub(crate) auth: String,
    /// The JSON body (Null when none).
    pub(crate) body: Value,
}

/// In a log script: hold the request open until the log is set.
pub(crate) const HOLD: u16 = 0;

/// A pull request or an issue.
#[derive(Debug, Clone, Default)]
pub(crate) struct Item {
    pub(crate) number: u64,
    pub(crate) title: String,
    pub(crate) body: String,
    pub(crate) head: String,
    pub(crate) base: String,
    pub(crate) state: String,
    pub(crate) labels: Vec<String>,
    pub(crate) comments: Vec<String>,
}

#[derive(Debug, Default)]
struct Inner {
    requests: Vec<Recorded>,
    /// job id → (status, log text).
    logs: HashMap<u64, (u16, String)>,
    /// job id → the answers to its next log requests ([`HOLD`]: held open until the log
    /// is set); when empty, `logs` answers.
    scripts: HashMap<u64, std::collections::VecDeque<u16>>,
    /// Bumped when a log is set: wakes held requests.
    wake: Option<tokio::sync::watch::Sender<u64>>,
    /// job id → the job object (`GET …/actions/jobs/{id}`).
    jobs: HashMap<u64, Value>,
    /// run id → the jobs listing (`GET …/actions/runs/{run_id}/jobs`).
    runs: HashMap<u64, Value>,
    pulls: Vec<Item>,
    issues: Vec<Item>,
    next: u64,
    /// "METHOD path" → the status answered instead.
    failing: HashMap<String, u16>,
}

/// The running fake.
#[derive(Debug, Clone)]
pub(crate) struct FakeForge {
    addr: String,
    inner: Arc<Mutex<Inner>>,
}

impl FakeForge {
    /// Starts it on `127.0.0.1:0` in the current runtime.
    pub(crate) async fn start() -> FakeForge {
        let inner = Arc::new(Mutex::new(Inner {
            next: 1,
            wake: Some(tokio::sync::watch::channel(0).0),
            ..Inner::default()
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeForge { addr, inner }
    }

    /// GitHub's API URL.
    pub(crate) fn github_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// GitLab's API URL.
    pub(crate) fn gitlab_url(&self) -> String {
        format!("http://{}/api/v4", self.addr)
    }

    /// Serves `text` as job `id`'s log (GitHub) or trace (GitLab); ends its script and
    /// releases the requests held open.
    pub(crate) fn set_log(&self, id: u64, text: &str) {
        let mut st = self.lock();
        st.logs.insert(id, (200, text.to_string()));
        st.scripts.remove(&id);
        if let Some(w) = &st.wake {
            w.send_modify(|n| *n += 1);
        }
    }

    /// Answers job `id`'s next log requests with `steps` in turn (a status, or [`HOLD`]: held
    /// open until [`FakeForge::set_log`]; a hold stays until then).
    pub(crate) fn script_log(&self, id: u64, steps: &[u16]) {
        self.lock()
            .scripts
            .insert(id, steps.iter().copied().collect());
    }

    /// Serves `job` as `GET …/actions/jobs/{its id}`.
    pub(crate) fn set_job(&self, job: Value) {
        let id = job["id"].as_u64().unwrap();
        self.lock().jobs.insert(id, job);
    }

    /// Serves `listing` as `GET …/actions/runs/{run_id}/jobs`.
    pub(crate) fn set_run_jobs(&self, run_id: u64, listing: Value) {
        self.lock().runs.insert(run_id, listing);
    }

    /// The requests received for `path` (without the query).
    pub(crate) fn count(&self, path: &str) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.path.split('?').next() == Some(path))
            .count()
    }

    /// Sets pull request `number`'s state (`open`, `merged` or `closed`), as a person on the
    /// forge would.
    pub(crate) fn set_pull_state(&self, number: u64, state: &str) {
        let mut st = self.lock();
        let p = st.pulls.iter_mut().find(|p| p.number == number).unwrap();
        p.state = state.to_string();
    }

    /// Answers `status` to every `method` request for `path` (GitLab's with its `/api/v4`)
    /// from now on; 0: answers it again.
    pub(crate) fn fail(&self, method: &str, path: &str, status: u16) {
        let key = format!("{method} {path}");
        let mut st = self.lock();
        if status == 0 {
            st.failing.remove(&key);
        } else {
            st.failing.insert(key, status);
        }
    }

    /// Answers `status` for job `id`'s log.
    pub(crate) fn fail_log(&self, id: u64, status: u16) {
        self.lock().logs.insert(id, (status, String::new()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap()
    }

    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    pub(crate) fn pulls(&self) -> Vec<Item> {
        self.lock().pulls.clone()
    }

    pub(crate) fn issues(&self) -> Vec<Item> {
        self.lock().issues.clone()
    }
}

fn text(v: &Value, keys: &[&str]) -> String {
    keys.iter()
        .find_map(|k| v[*k].as_str())
        .unwrap_or_default()
        .to_string()
}

fn labels(v: &Value) -> Vec<String> {
    match &v["labels"] {
        Value::Array(a) => a
            .iter()
            .filter_map(|l| l.as_str().map(String::from))
            .collect(),
        Value::String(s) if !s.is_empty() => s.split(',').map(String::from).collect(),
        _ => Vec::new(),
    }
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let auth = headers
        .get("authorization")
        .or_else(|| headers.get("private-token"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let path = uri.path().to_string();
    // A scripted log: a status in turn, or held open until the log is set.
    let log_id = match path.trim_start_matches('/').split('/').collect::<Vec<_>>()[..] {
        ["repos", _, _, "actions", "jobs", id, "logs"] => id.parse::<u64>().ok(),
        _ => None,
    };
    if let Some(id) = log_id {
        let held = {
            let mut st = inner.lock().unwrap();
            match st.scripts.get(&id).and_then(|q| q.front().copied()) {
                Some(HOLD) => {
                    st.requests.push(Recorded {
                        method: method.to_string(),
                        path: uri.to_string(),
                        auth: auth.clone(),
                        body: body.clone(),
                    });
                    st.wake.as_ref().map(tokio::sync::watch::Sender::subscribe)
                }
                Some(code) => {
                    if let Some(q) = st.scripts.get_mut(&id) {
                        q.pop_front();
                    }
                    st.requests.push(Recorded {
                        method: method.to_string(),
                        path: uri.to_string(),
                        auth: auth.clone(),
                        body: body.clone(),
                    });
                    return (
                        StatusCode::from_u16(code).unwrap(),
                        axum::Json(json!({"message": "scripted"})),
                    )
                        .into_response();
                }
                None => None,
            }
        };
        if let Some(mut rx) = held {
            loop {
                if rx.changed().await.is_err() {
                    return StatusCode::SERVICE_UNAVAILABLE.into_response();
                }
                if !inner.lock().unwrap().scripts.contains_key(&id) {
                    break;
                }
            }
            // Released: a client still waiting is answered, after a redirect, as usual.
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"message": "held, then released"})),
            )
                .into_response();
        }
    }
    let mut st = inner.lock().unwrap();
    st.requests.push(Recorded {
        method: method.to_string(),
        path: uri.to_string(),
        auth: auth.clone(),
        body: body.clone(),
    });
    if let Some(code) = st.failing.get(&format!("{method} {path}")) {
        return (
            StatusCode::from_u16(*code).unwrap(),
            axum::Json(json!({"message": "scripted failure"})),
        )
            .into_response();
    }
    let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let gitlab = seg.first() == Some(&"api");
    let seg: &[&str] = if gitlab { &seg[2..] } else { &seg };
    let json_of = |code: StatusCode, v: Value| (code, axum::Json(v)).into_response();
    // As the forges say it: GitLab `opened`/`merged`/`closed`; GitHub `open`/`closed`, merged
    // when `merged_at` is set.
    let item_json = |it: &Item| {
        let merged = it.state == "merged";
        if gitlab {
            let state = if it.state == "open" {
                "opened"
            } else {
                it.state.as_str()
            };
            json!({"iid": it.number, "web_url": format!("https://gitlab.example/acme/app/-/items/{}", it.number),
                   "source_branch": it.head, "target_branch": it.base, "state": state,
                   "description": it.body, "title": it.title})
        } else {
            let state = if merged { "closed" } else { it.state.as_str() };
            json!({"number": it.number, "html_url": format!("https://github.example/acme/app/pull/{}", it.number),
                   "head": {"ref": it.head}, "base": {"ref": it.base}, "state": state,
                   "merged_at": if merged { json!("2026-01-01T00:00:00Z") } else { Value::Null },
                   "body": it.body, "title": it.title})
        }
    };
    if auth.is_empty() && seg.first() != Some(&"_download") {
        return json_of(
            StatusCode::UNAUTHORIZED,
            json!({"message": "Requires authentication"}),
        );
    }
    match (method.as_str(), seg) {
        // GitHub: the log answers a redirect to a short-lived URL.
        ("GET", ["repos", _, _, "actions", "jobs", id, "logs"]) => {
            let id: u64 = id.parse().unwrap_or(0);
            match st.logs.get(&id) {
                Some((200, _)) => (
                    StatusCode::FOUND,
                    [(
                        "location",
                        format!("/_download/{id}?token={DOWNLOAD_SECRET}&expires=60"),
                    )],
                )
                    .into_response(),
                Some((code, _)) => json_of(
                    StatusCode::from_u16(*code).unwrap(),
                    json!({"message": "Not Found"}),
                ),
                None => json_of(StatusCode::NOT_FOUND, json!({"message": "Not Found"})),
            }
        }
        ("GET", ["repos", _, _, "actions", "jobs", id]) => {
            let id: u64 = id.parse().unwrap_or(0);
            match st.jobs.get(&id) {
                Some(j) => json_of(StatusCode::OK, j.clone()),
                None => json_of(StatusCode::NOT_FOUND, json!({"message": "Not Found"})),
            }
        }
        ("GET", ["repos", _, _, "actions", "runs", id, "jobs"]) => {
            let id: u64 = id.parse().unwrap_or(0);
            match st.runs.get(&id) {
                Some(j) => json_of(StatusCode::OK, j.clone()),
                None => json_of(StatusCode::NOT_FOUND, json!({"message": "Not Found"})),
            }
        }
        ("GET", ["_download", id]) => {
            let id: u64 = id.parse().unwrap_or(0);
            match st.logs.get(&id) {
                Some((200, t)) if uri.query().is_some_and(|q| q.contains(DOWNLOAD_SECRET)) => {
                    (StatusCode::OK, t.clone()).into_response()
                }
                _ => StatusCode::FORBIDDEN.into_response(),
            }
        }
        // GitLab: the trace itself.
        ("GET", ["projects", _, "jobs", id, "trace"]) => {
            let id: u64 = id.parse().unwrap_or(0);
            match st.logs.get(&id) {
                Some((200, t)) => (StatusCode::OK, t.clone()).into_response(),
                Some((code, _)) => StatusCode::from_u16(*code).unwrap().into_response(),
                None => StatusCode::NOT_FOUND.into_response(),
            }
        }
        ("POST", ["repos", _, _, "pulls"]) | ("POST", ["projects", _, "merge_requests"]) => {
            let n = st.next;
            st.next += 1;
            let it = Item {
                number: n,
                title: text(&body, &["title"]),
                body: text(&body, &["body", "description"]),
                head: text(&body, &["head", "source_branch"]),
                base: text(&body, &["base", "target_branch"]),
                state: "open".into(),
                labels: labels(&body),
                comments: Vec::new(),
            };
            let v = item_json(&it);
            st.pulls.push(it);
            json_of(StatusCode::CREATED, v)
        }
        ("GET", ["repos", _, _, "pulls"]) | ("GET", ["projects", _, "merge_requests"]) => {
            let v: Vec<Value> = st
                .pulls
                .iter()
                .filter(|p| p.state == "open")
                .map(item_json)
                .collect();
            json_of(StatusCode::OK, Value::Array(v))
        }
        ("GET", ["repos", _, _, "pulls", n]) | ("GET", ["projects", _, "merge_requests", n]) => {
            let n: u64 = n.parse().unwrap_or(0);
            match st.pulls.iter().find(|p| p.number == n) {
                Some(p) => json_of(StatusCode::OK, item_json(p)),
                None => json_of(StatusCode::NOT_FOUND, json!({"message": "Not Found"})),
            }
        }
        ("POST", ["projects", _, "merge_requests", n, "notes"]) => {
            let n: u64 = n.parse().unwrap_or(0);
            match st.pulls.iter_mut().find(|p| p.number == n) {
                Some(p) => {
                    p.comments.push(text(&body, &["body"]));
                    json_of(StatusCode::CREATED, json!({"id": p.comments.len()}))
                }
                None => json_of(StatusCode::NOT_FOUND, json!({"message": "Not Found"})),
            }
        }
        ("PATCH", ["repos", _, _, "pulls", n]) | ("PUT", ["projects", _, "merge_requests", n]) => {
            let n: u64 = n.parse().unwrap_or(0);
            match st.pulls.iter_mut().find(|p| p.number == n) {
                Some(p) => {
                    p.body = text(&body, &["body", "description"]);
                    p.title = text(&body, &["title"]);
                    let v = item_json(p);
                    json_of(StatusCode::OK, v)
                }
                None => json_of(StatusCode::NOT_FOUND, json!({"message": "Not Found"})),
            }
        }
        ("POST", ["repos", _, _, "issues", n, "labels"]) => {
            let n: u64 = n.parse().unwrap_or(0);
            if let Some(p) = st.pulls.iter_mut().find(|p| p.number == n) {
                p.labels.extend(labels(&body));
            }
            json_of(StatusCode::OK, json!([]))
        }
        ("POST", ["repos", _, _, "issues"]) | ("POST", ["projects", _, "issues"]) => {
            let n = st.next;
            st.next += 1;
            let it = Item {
                number: n,
                title: text(&body, &["title"]),
                body: text(&body, &["body", "description"]),
                state: "open".into(),
                labels: labels(&body),
                ..Item::default()
            };
            let v = if gitlab {
                json!({"iid": n, "web_url": format!("https://gitlab.example/acme/app/-/issues/{n}")})
            } else {
                json!({"number": n, "html_url": format!("https://github.example/acme/app/issues/{n}")})
            };
            st.issues.push(it);
            json_of(StatusCode::CREATED, v)
        }
        ("POST", ["repos", _, _, "issues", n, "comments"])
        | ("POST", ["projects", _, "issues", n, "notes"]) => {
            let n: u64 = n.parse().unwrap_or(0);
            // On GitHub a pull request's comments are its issue's.
            let Inner { issues, pulls, .. } = &mut *st;
            let pulls = pulls.iter_mut().filter(|_| !gitlab);
            match issues.iter_mut().chain(pulls).find(|i| i.number == n) {
                Some(i) => {
                    i.comments.push(text(&body, &["body"]));
                    json_of(StatusCode::CREATED, json!({"id": i.comments.len()}))
                }
                None => json_of(StatusCode::NOT_FOUND, json!({"message": "Not Found"})),
            }
        }
        ("PATCH", ["repos", _, _, "issues", n]) | ("PUT", ["projects", _, "issues", n]) => {
            let n: u64 = n.parse().unwrap_or(0);
            match st.issues.iter_mut().find(|i| i.number == n) {
                Some(i) => {
                    if body["state"] == "closed" || body["state_event"] == "close" {
                        i.state = "closed".into();
                    }
                    json_of(StatusCode::OK, json!({"number": n, "state": i.state}))
                }
                None => json_of(StatusCode::NOT_FOUND, json!({"message": "Not Found"})),
            }
        }
        _ => json_of(StatusCode::NOT_FOUND, json!({"message": "Not Found"})),
    }
}

/// A forge test's bench: the fake LLM, the fake GitHub API serving the CI fixture's log for
/// some jobs, a workspace with the test project (git) and a real bare repository,
/// `remote.git`, as the push remote. The runtime serving both fakes lives as long as it.
pub(crate) struct Bench {
    pub(crate) llm: sentinel::fix::fake_llm::FakeLlm,
    pub(crate) forge: FakeForge,
    pub(crate) ws: crate::harness::Workspace,
    /// The bare repository the fixes are pushed to.
    pub(crate) remote: std::path::PathBuf,
    /// The user's project (a git repository).
    pub(crate) project: std::path::PathBuf,
    _rt: tokio::runtime::Runtime,
}

impl Bench {
    /// The fakes, the LLM's `answers` queued in turn, the fixture's log served for `jobs`.
    pub(crate) fn new(answers: Vec<sentinel::fix::fake_llm::Reply>, jobs: &[u64]) -> Bench {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let llm = rt.block_on(sentinel::fix::fake_llm::FakeLlm::start());
        for a in answers {
            llm.push(sentinel::fix::fake_llm::Route::Anthropic, a);
        }
        let forge = rt.block_on(FakeForge::start());
        for id in jobs {
            forge.set_log(*id, &crate::ci_sources::fixture("github_job_log.txt"));
        }
        let ws = crate::harness::Workspace::new();
        crate::fix_e2e::git(ws.path(), &["init", "--quiet", "--bare", "remote.git"]);
        let remote = ws.path().join("remote.git");
        let project = crate::fix_e2e::project(&ws);
        Bench {
            llm,
            forge,
            ws,
            remote,
            project,
            _rt: rt,
        }
    }

    /// Discards the user's uncommitted work, so that `fix.merge` may move their branch.
    pub(crate) fn clean_tree(&self) -> &Bench {
        crate::fix_e2e::git(&self.project, &["checkout", "--quiet", "--", "NOTES.md"]);
        std::fs::remove_file(self.project.join("scratch.txt")).unwrap();
        self
    }

    /// `fix.pull_request` to the fake GitHub API and the bare remote (indented, for `fix`).
    pub(crate) fn pull_request_section(&self, labels: &str, max_open: u32) -> String {
        format!(
            "  pull_request:\n    provider: github\n    repo: acme/app\n    base: main\n    token_env: GH_TOKEN\n    api_url: {}\n{labels}    max_open: {max_open}\n    remote: {}\n",
            self.forge.github_url(),
            self.remote.display()
        )
    }

    /// Writes the daemon's config (the GitHub source, `fix_extra` and `extra` as in
    /// [`crate::ci_sources::config`]) and registers the project.
    pub(crate) fn configure(&self, fix_extra: &str, extra: &str) -> &Bench {
        std::fs::write(
            self.ws.path().join("sentinel.yaml"),
            crate::ci_sources::config(
                self.llm.base_url(),
                &self.forge.github_url(),
                fix_extra,
                extra,
            ),
        )
        .unwrap();
        assert!(self.ws.run(&["register", "project"]).status.success());
        self
    }

    /// Starts `sentinel watch` with the tokens in its environment.
    pub(crate) fn watch(&self) -> (crate::harness::Daemon, crate::harness::DaemonInfo) {
        let mut d = self.ws.spawn_env(&["watch"], &crate::ci_sources::env());
        let info = d.ready();
        (d, info)
    }

    /// The bare remote's branches and commits, one `refs/heads/… <commit>` a line.
    pub(crate) fn remote_refs(&self) -> String {
        crate::fix_e2e::git(
            &self.remote,
            &["for-each-ref", "--format=%(refname) %(objectname)"],
        )
    }
}

/// The ended fixes (success, failure or awaiting approval) of incident `id`, oldest first,
/// once there are `n`.
pub(crate) fn ended_fixes(api: &str, id: &str, n: usize) -> Vec<Value> {
    crate::harness::eventually(std::time::Duration::from_secs(120), || {
        let fixes: Value = crate::harness::http()
            .get(format!("{api}/fixes"))
            .send()
            .ok()?
            .json()
            .ok()?;
        let mut mine: Vec<Value> = fixes
            .as_array()?
            .iter()
            .filter(|f| f["incident_id"] == id)
            .cloned()
            .collect();
        mine.reverse();
        let ended = mine
            .iter()
            .filter(|f| f["status"] != "pending" && f["status"] != "running")
            .count();
        (mine.len() >= n && ended >= n).then_some(mine)
    })
    .unwrap_or_else(|| {
        panic!(
            "{n} ended fixes of {id}: {:#}",
            crate::ci_sources::detail(api, id)
        )
    })
}
