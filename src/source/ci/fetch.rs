//! Reading jobs and their logs through the forge's API, with retries.
//!
//! GitHub answers `GET /repos/{owner}/{repo}/actions/jobs/{id}/logs` with a redirect to a
//! short-lived download URL: reqwest follows it (and drops the `Authorization` header when
//! the redirect leaves the API's host). That URL carries its own credentials, so no error
//! of this module ever names a URL: messages say which request failed and how (status
//! codes; reqwest errors are stripped of their URL).

use std::time::Duration;

use serde_json::Value;

use super::payload::{self, Job};
use crate::config::ForgeProvider;

/// Attempts per request (the first and the retries).
pub const ATTEMPTS: u32 = 4;
/// The wait before the first retry; doubled before each next one.
pub const BACKOFF: Duration = Duration::from_millis(250);
/// The most of a job log read: a longer log keeps its end (where the failure is).
pub const MAX_LOG_BYTES: usize = 32 << 20;

/// The API client of one CI source.
#[derive(Clone)]
pub(crate) struct Api {
    client: reqwest::Client,
    provider: ForgeProvider,
    base: String,
    token: Option<String>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("provider", &self.provider)
            .field("token", &self.token.is_some())
            .finish_non_exhaustive()
    }
}

/// Percent-encodes a path segment (a GitLab project path).
pub(crate) fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Api {
    /// A client of `base` (an API URL without the trailing slash) with `token`.
    ///
    /// # Errors
    ///
    /// The HTTP client cannot be built (no TLS roots).
    pub(crate) fn new(
        provider: ForgeProvider,
        base: &str,
        token: Option<String>,
    ) -> Result<Api, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::limited(5))
            .user_agent(concat!("sentinel/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Api {
            client,
            provider,
            base: base.trim_end_matches('/').to_string(),
            token,
        })
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        let mut rb = self.client.get(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            rb = match self.provider {
                ForgeProvider::Gitlab => rb.header("PRIVATE-TOKEN", t),
                _ => rb
                    .bearer_auth(t)
                    .header("Accept", "application/vnd.github+json")
                    .header("X-GitHub-Api-Version", "2022-11-28"),
            };
        }
        rb
    }

    /// GETs `path` once; `what` names the request in errors. Network errors, 404 (a log
    /// not there yet), 408, 429 and 5xx are worth a retry; the caller schedules it (the
    /// queue keeps the retry state durable: [`ATTEMPTS`], [`BACKOFF`]).
    async fn fetch(&self, what: &str, path: &str) -> Result<reqwest::Response, Failure> {
        match self.get(path).send().await {
            Ok(r) if r.status().is_success() => Ok(r),
            Ok(r) => {
                let code = r.status();
                let retry = code.is_server_error() || matches!(code.as_u16(), 404 | 408 | 429);
                Err(Failure {
                    message: format!("{what}: HTTP {}", code.as_u16()),
                    retry,
                })
            }
            Err(e) => Err(Failure::retry(describe(what, e))),
        }
    }

    /// Fills a job the payload described only in part (a GitHub `check_run`).
    pub(crate) async fn complete(&self, job: &mut Job) -> Result<(), Failure> {
        if job.complete || self.provider == ForgeProvider::Gitlab {
            return Ok(());
        }
        let r = self
            .fetch(
                "reading the job",
                &format!("/repos/{}/actions/jobs/{}", job.project, job.id),
            )
            .await?;
        let v: Value = r
            .json()
            .await
            .map_err(|e| Failure::retry(describe("reading the job", e)))?;
        let mut full = payload::github_job(&job.repo, &v);
        if full.url.is_empty() {
            full.url = std::mem::take(&mut job.url);
        }
        *job = full;
        Ok(())
    }

    /// The jobs of GitHub run `run_id` (a `workflow_run` event): `GET
    /// /repos/{owner}/{repo}/actions/runs/{run_id}/jobs`, the latest attempt's (GitHub's
    /// default `filter=latest`); each job says its own `run_attempt`.
    pub(crate) async fn run_jobs(
        &self,
        template: &Job,
        run_id: u64,
    ) -> Result<Vec<(Job, Option<payload::Outcome>)>, Failure> {
        let what = "listing the run's jobs";
        let r = self
            .fetch(
                what,
                &format!(
                    "/repos/{}/actions/runs/{run_id}/jobs?filter=latest&per_page=100",
                    template.project
                ),
            )
            .await?;
        let v: Value = r
            .json()
            .await
            .map_err(|e| Failure::retry(describe(what, e)))?;
        Ok(v["jobs"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|j| {
                let o = match j["conclusion"].as_str() {
                    Some("failure" | "timed_out") => Some(payload::Outcome::Failed),
                    Some("success") => Some(payload::Outcome::Passed),
                    _ => None,
                };
                let mut job = payload::github_job(&template.repo, j);
                if job.workflow.is_empty() {
                    job.workflow.clone_from(&template.workflow);
                }
                if job.branch.is_empty() {
                    job.branch.clone_from(&template.branch);
                }
                (job, o)
            })
            .collect())
    }

    /// The job's log (its last [`MAX_LOG_BYTES`] when longer), lossy UTF-8.
    pub(crate) async fn log(&self, job: &Job) -> Result<String, Failure> {
        let (what, path) = match self.provider {
            ForgeProvider::Gitlab => (
                "reading the job trace",
                format!("/projects/{}/jobs/{}/trace", segment(&job.project), job.id),
            ),
            _ => (
                "reading the job log",
                format!("/repos/{}/actions/jobs/{}/logs", job.project, job.id),
            ),
        };
        let mut r = self.fetch(what, &path).await?;
        let mut buf: Vec<u8> = Vec::new();
        loop {
            match r.chunk().await {
                Ok(Some(c)) => {
                    buf.extend_from_slice(&c);
                    if buf.len() > 2 * MAX_LOG_BYTES {
                        buf.drain(..buf.len() - MAX_LOG_BYTES);
                    }
                }
                Ok(None) => break,
                Err(e) => return Err(Failure::retry(describe(what, e))),
            }
        }
        if buf.len() > MAX_LOG_BYTES {
            buf.drain(..buf.len() - MAX_LOG_BYTES);
        }
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

/// A request that failed: why (no URL), and whether another attempt may do better.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) message: String,
    pub(crate) retry: bool,
}

impl Failure {
    fn retry(message: String) -> Failure {
        Failure {
            message,
            retry: true,
        }
    }
}

/// The wait before retry number `tries` (1-based): [`BACKOFF`] doubled each time, capped
/// at a minute.
pub(crate) fn backoff(tries: u32) -> Duration {
    BACKOFF
        .saturating_mul(1u32 << tries.saturating_sub(1).min(16))
        .min(Duration::from_secs(60))
}

/// A reqwest error as words, without its URL (a redirect's URL carries credentials).
fn describe(what: &str, e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_redirect() {
        "too many redirects"
    } else if e.is_body() || e.is_decode() {
        "the answer could not be read"
    } else {
        "request failed"
    };
    let e = e.without_url();
    format!("{what}: {kind} ({e})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles() {
        assert_eq!(backoff(1), BACKOFF);
        assert_eq!(backoff(2), BACKOFF * 2);
        assert_eq!(backoff(3), BACKOFF * 4);
        assert_eq!(backoff(40), Duration::from_secs(60));
    }

    #[test]
    fn project_paths_are_encoded() {
        assert_eq!(segment("acme/app"), "acme%2Fapp");
        assert_eq!(segment("42"), "42");
    }
}
