//! What a GitHub or GitLab webhook says about CI jobs: which failed, which passed.
//!
//! Pure functions over the parsed JSON (the shapes of GitHub's `workflow_job`,
//! `workflow_run` and `check_run` events and GitLab's Job and Pipeline Hooks), so they are
//! tested without a listener.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One CI job, as far as a payload (or the API) describes it (kept in the durable queue).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Job {
    /// `owner/name` (GitLab: the project's path with namespace).
    pub repo: String,
    /// The project as the API names it: GitHub `owner/name`, GitLab the numeric id.
    pub project: String,
    /// The workflow (GitLab: the stage).
    pub workflow: String,
    /// The job's name.
    pub name: String,
    /// The provider's job id (GitHub: also the check run's id).
    pub id: u64,
    /// The attempt (GitHub `run_attempt`; GitLab `retries_count + 1`).
    pub attempt: u64,
    /// The commit.
    pub commit: String,
    /// The branch or ref.
    pub branch: String,
    /// The job's web page.
    pub url: String,
    /// The failing step as the payload names it (GitHub's `steps`), else empty.
    pub step: String,
    /// False when the payload lacks the workflow and attempt (a `check_run`): read the job
    /// from the API first.
    pub complete: bool,
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Outcome {
    /// Failed: its log is read and it becomes (or recurs in) an incident.
    Failed,
    /// Passed: a rerun that passes marks the failure of the same commit flaky.
    Passed,
}

/// What to do with one webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Hook {
    /// GitHub's `ping` (and GitLab's test hooks): answered 200.
    Ping,
    /// Jobs that ended.
    Jobs(Vec<(Job, Outcome)>),
    /// A whole run ended (GitHub `workflow_run`): its jobs are listed through the API.
    Run {
        /// A job template: repository, project, commit, branch, attempt.
        template: Box<Job>,
        /// The run's id.
        run_id: u64,
        /// How the run ended.
        outcome: Outcome,
    },
    /// Acknowledged and not acted on: why.
    Ignored(String),
}

fn s(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(t) => t.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

fn n(v: &Value, key: &str) -> u64 {
    match &v[key] {
        Value::Number(n) => n.as_u64().unwrap_or(0),
        Value::String(t) => t.parse().unwrap_or(0),
        _ => 0,
    }
}

fn outcome(conclusion: &str) -> Option<Outcome> {
    match conclusion {
        "failure" | "failed" | "timed_out" => Some(Outcome::Failed),
        "success" => Some(Outcome::Passed),
        _ => None,
    }
}

/// A GitHub job object (a `workflow_job` payload's, or `GET .../actions/jobs/{id}`).
pub(crate) fn github_job(repo: &str, j: &Value) -> Job {
    let step = j["steps"]
        .as_array()
        .and_then(|steps| {
            steps
                .iter()
                .find(|st| st["conclusion"] == "failure")
                .map(|st| s(st, "name"))
        })
        .unwrap_or_default();
    Job {
        repo: repo.to_string(),
        project: repo.to_string(),
        workflow: s(j, "workflow_name"),
        name: s(j, "name"),
        id: n(j, "id"),
        attempt: n(j, "run_attempt").max(1),
        commit: s(j, "head_sha"),
        branch: s(j, "head_branch"),
        url: s(j, "html_url"),
        step: step.strip_prefix("Run ").unwrap_or(&step).to_string(),
        complete: true,
    }
}

/// The Actions job of a check run: the id at the end of its `details_url`
/// (`…/actions/runs/{run_id}/job/{job_id}`), else the check run's `id` (GitHub Actions gives
/// a job's check run the job's id).
fn check_run_job(c: &Value) -> u64 {
    let url = s(c, "details_url");
    url.split('?')
        .next()
        .and_then(|u| u.rsplit_once("/job/"))
        .and_then(|(_, id)| id.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| n(c, "id"))
}

/// Reads a GitHub webhook of type `event` (`X-GitHub-Event`).
pub(crate) fn github(event: &str, body: &Value) -> Hook {
    let repo = s(&body["repository"], "full_name");
    let action = s(body, "action");
    let completed = || action == "completed";
    match event {
        "ping" => Hook::Ping,
        "workflow_job" => {
            if !completed() {
                return Hook::Ignored(format!("workflow_job {action}"));
            }
            let j = &body["workflow_job"];
            match outcome(&s(j, "conclusion")) {
                Some(o) => Hook::Jobs(vec![(github_job(&repo, j), o)]),
                None => Hook::Ignored(format!("workflow_job concluded {}", s(j, "conclusion"))),
            }
        }
        "check_run" => {
            if !completed() {
                return Hook::Ignored(format!("check_run {action}"));
            }
            let c = &body["check_run"];
            let Some(o) = outcome(&s(c, "conclusion")) else {
                return Hook::Ignored(format!("check_run concluded {}", s(c, "conclusion")));
            };
            let app = s(&c["app"], "slug");
            if !app.is_empty() && app != "github-actions" {
                return Hook::Ignored(format!(
                    "check_run of the app {app:?}: only GitHub Actions jobs have logs to read"
                ));
            }
            let job = Job {
                repo: repo.clone(),
                project: repo,
                name: s(c, "name"),
                id: check_run_job(c),
                attempt: 1,
                commit: s(c, "head_sha"),
                branch: s(&c["check_suite"], "head_branch"),
                url: s(c, "html_url"),
                complete: false,
                ..Job::default()
            };
            Hook::Jobs(vec![(job, o)])
        }
        "workflow_run" => {
            if !completed() {
                return Hook::Ignored(format!("workflow_run {action}"));
            }
            let r = &body["workflow_run"];
            let Some(o) = outcome(&s(r, "conclusion")) else {
                return Hook::Ignored(format!("workflow_run concluded {}", s(r, "conclusion")));
            };
            let attempt = n(r, "run_attempt").max(1);
            if o == Outcome::Passed && attempt == 1 {
                return Hook::Ignored("workflow_run passed on its first attempt".into());
            }
            Hook::Run {
                template: Box::new(Job {
                    repo: repo.clone(),
                    project: repo,
                    workflow: s(r, "name"),
                    attempt,
                    commit: s(r, "head_sha"),
                    branch: s(r, "head_branch"),
                    url: s(r, "html_url"),
                    complete: true,
                    ..Job::default()
                }),
                run_id: n(r, "id"),
                outcome: o,
            }
        }
        other => Hook::Ignored(format!("event {other:?} is not read")),
    }
}

fn gitlab_project(p: &Value, fallback_name: &str, fallback_id: u64) -> (String, String, String) {
    let path = s(p, "path_with_namespace");
    let repo = if path.is_empty() {
        fallback_name.to_string()
    } else {
        path
    };
    let id = match n(p, "id") {
        0 => fallback_id,
        id => id,
    };
    (repo, id.to_string(), s(p, "web_url"))
}

/// Reads a GitLab webhook of type `event` (`X-Gitlab-Event`).
pub(crate) fn gitlab(event: &str, body: &Value) -> Hook {
    let kind = s(body, "object_kind");
    match (event, kind.as_str()) {
        (_, "build") => {
            let Some(o) = outcome(&s(body, "build_status")) else {
                return Hook::Ignored(format!("job {}", s(body, "build_status")));
            };
            let (repo, project, web) = gitlab_project(
                &body["project"],
                &s(body, "project_name"),
                n(body, "project_id"),
            );
            let id = n(body, "build_id");
            let job = Job {
                repo,
                project,
                workflow: s(body, "build_stage"),
                name: s(body, "build_name"),
                id,
                attempt: n(body, "retries_count") + 1,
                commit: s(body, "sha"),
                branch: s(body, "ref"),
                url: if web.is_empty() {
                    String::new()
                } else {
                    format!("{web}/-/jobs/{id}")
                },
                complete: true,
                ..Job::default()
            };
            Hook::Jobs(vec![(job, o)])
        }
        (_, "pipeline") => {
            let a = &body["object_attributes"];
            if s(a, "status") != "failed" {
                return Hook::Ignored(format!("pipeline {}", s(a, "status")));
            }
            let (repo, project, web) = gitlab_project(&body["project"], "", 0);
            let jobs = body["builds"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter(|b| s(b, "status") == "failed" && b["allow_failure"] != true)
                .map(|b| {
                    let id = n(b, "id");
                    (
                        Job {
                            repo: repo.clone(),
                            project: project.clone(),
                            workflow: s(b, "stage"),
                            name: s(b, "name"),
                            id,
                            attempt: 1,
                            commit: s(a, "sha"),
                            branch: s(a, "ref"),
                            url: if web.is_empty() {
                                String::new()
                            } else {
                                format!("{web}/-/jobs/{id}")
                            },
                            complete: true,
                            ..Job::default()
                        },
                        Outcome::Failed,
                    )
                })
                .collect::<Vec<_>>();
            if jobs.is_empty() {
                Hook::Ignored("a failed pipeline without failed jobs".into())
            } else {
                Hook::Jobs(jobs)
            }
        }
        ("Test Hook" | "System Hook", _) => Hook::Ping,
        _ => Hook::Ignored(format!("event {event:?} ({kind:?}) is not read")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn github_workflow_job_failure_names_its_failing_step() {
        let body = json!({
            "action": "completed",
            "repository": {"full_name": "acme/app"},
            "workflow_job": {
                "id": 29679449, "run_id": 5, "run_attempt": 2, "workflow_name": "CI",
                "name": "test", "head_sha": "abc", "head_branch": "main",
                "html_url": "https://github.com/acme/app/actions/runs/5/job/29679449",
                "status": "completed", "conclusion": "failure",
                "steps": [
                    {"name": "Set up job", "conclusion": "success"},
                    {"name": "Run python -m unittest", "conclusion": "failure"}
                ]
            }
        });
        let Hook::Jobs(jobs) = github("workflow_job", &body) else {
            panic!("jobs")
        };
        let (job, o) = &jobs[0];
        assert_eq!(*o, Outcome::Failed);
        assert_eq!(
            (job.repo.as_str(), job.workflow.as_str(), job.name.as_str()),
            ("acme/app", "CI", "test")
        );
        assert_eq!((job.id, job.attempt), (29679449, 2));
        assert_eq!(job.step, "python -m unittest");
        assert!(job.complete);
        assert_eq!(github("ping", &json!({"zen": "x"})), Hook::Ping);
        assert!(matches!(github("push", &body), Hook::Ignored(_)));
        let mut queued = body.clone();
        queued["action"] = json!("queued");
        assert!(matches!(github("workflow_job", &queued), Hook::Ignored(_)));
        let mut cancelled = body;
        cancelled["workflow_job"]["conclusion"] = json!("cancelled");
        assert!(matches!(
            github("workflow_job", &cancelled),
            Hook::Ignored(_)
        ));
    }

    #[test]
    fn github_check_run_and_workflow_run() {
        let body = json!({"action": "completed", "repository": {"full_name": "a/b"},
            "check_run": {"id": 7, "name": "test", "head_sha": "c", "conclusion": "failure",
                          "check_suite": {"head_branch": "dev"}}});
        let Hook::Jobs(jobs) = github("check_run", &body) else {
            panic!()
        };
        assert!(!jobs[0].0.complete);
        assert_eq!(jobs[0].0.branch, "dev");
        assert_eq!(jobs[0].0.id, 7);
        // The job is the one its details_url names; another app's check run is not read.
        let mut body = body;
        body["check_run"]["details_url"] =
            json!("https://github.com/a/b/actions/runs/5/job/71?pr=3");
        body["check_run"]["app"] = json!({"slug": "github-actions"});
        let Hook::Jobs(jobs) = github("check_run", &body) else {
            panic!()
        };
        assert_eq!(jobs[0].0.id, 71);
        body["check_run"]["app"] = json!({"slug": "circleci-checks"});
        assert!(matches!(github("check_run", &body), Hook::Ignored(_)));
        let body = json!({"action": "completed", "repository": {"full_name": "a/b"},
            "workflow_run": {"id": 9, "name": "CI", "head_sha": "c", "run_attempt": 1,
                             "conclusion": "failure"}});
        assert!(matches!(
            github("workflow_run", &body),
            Hook::Run {
                run_id: 9,
                outcome: Outcome::Failed,
                ..
            }
        ));
    }

    #[test]
    fn gitlab_job_and_pipeline_hooks() {
        let job = json!({"object_kind": "build", "build_id": 380, "build_name": "test",
            "build_stage": "test", "build_status": "failed", "sha": "abc", "ref": "main",
            "project_id": 3, "retries_count": 1,
            "project": {"id": 3, "path_with_namespace": "acme/app",
                        "web_url": "https://gitlab.com/acme/app"}});
        let Hook::Jobs(jobs) = gitlab("Job Hook", &job) else {
            panic!()
        };
        let j = &jobs[0].0;
        assert_eq!((j.project.as_str(), j.attempt), ("3", 2));
        assert_eq!(j.url, "https://gitlab.com/acme/app/-/jobs/380");
        let pipe = json!({"object_kind": "pipeline",
            "object_attributes": {"id": 31, "ref": "main", "sha": "abc", "status": "failed"},
            "project": {"id": 3, "path_with_namespace": "acme/app"},
            "builds": [{"id": 380, "stage": "test", "name": "test", "status": "failed"},
                       {"id": 381, "stage": "lint", "name": "lint", "status": "success"}]});
        let Hook::Jobs(jobs) = gitlab("Pipeline Hook", &pipe) else {
            panic!()
        };
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].0.id, 380);
    }
}
