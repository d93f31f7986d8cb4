//! The few GitHub and GitLab API calls the forge makes: open, read, update, comment on and
//! count pull (merge) requests; open, comment on and close issues.

use std::time::Duration;

use serde_json::{Value, json};

use crate::config::ForgeProvider;

/// Attempts per call (server errors, 429 and network errors are retried).
const ATTEMPTS: u32 = 3;
/// The wait before the first retry (doubled before each next one).
const BACKOFF: Duration = Duration::from_millis(300);

/// A call that failed: what and how (status code and the forge's message; never the token).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ForgeError(String);

/// A pull request or issue that was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Its number (GitLab: `iid`).
    pub number: u64,
    /// Its web page.
    pub url: String,
}

/// Where a pull (merge) request stands on the forge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PullRequestState {
    /// Open (GitLab: `opened`; its short-lived `locked`, a merge under way, is answered as
    /// an error: neither pushed onto nor replaced).
    Open,
    /// Merged (GitHub: closed with a `merged_at`).
    Merged,
    /// Closed without being merged.
    Closed,
}

impl PullRequestState {
    /// `open`, `merged` or `closed` (as [`crate::store::ci::ForgeLink::state`] keeps it).
    pub fn as_str(self) -> &'static str {
        match self {
            PullRequestState::Open => "open",
            PullRequestState::Merged => "merged",
            PullRequestState::Closed => "closed",
        }
    }
}

/// The API of one repository on one forge.
#[derive(Clone)]
pub struct ForgeApi {
    client: reqwest::Client,
    provider: ForgeProvider,
    base: String,
    repo: String,
    token: String,
}

impl std::fmt::Debug for ForgeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForgeApi")
            .field("provider", &self.provider)
            .field("repo", &self.repo)
            .finish_non_exhaustive()
    }
}

impl ForgeApi {
    /// The API at `api_url` (default: the provider's public one) for `repo`.
    ///
    /// # Errors
    ///
    /// The HTTP client cannot be built.
    pub fn new(
        provider: ForgeProvider,
        api_url: Option<&str>,
        repo: &str,
        token: &str,
    ) -> Result<ForgeApi, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("sentinel/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(ForgeApi {
            client,
            provider,
            base: api_url
                .unwrap_or(provider.default_api_url())
                .trim_end_matches('/')
                .to_string(),
            repo: repo.to_string(),
            token: token.to_string(),
        })
    }

    /// Where branches go when `remote` is not configured: the public forge's HTTPS URL.
    pub fn default_remote(&self) -> String {
        match self.provider {
            ForgeProvider::Gitlab => format!("https://gitlab.com/{}.git", self.repo),
            _ => format!("https://github.com/{}.git", self.repo),
        }
    }

    /// The repository's API prefix.
    fn prefix(&self) -> String {
        match self.provider {
            ForgeProvider::Gitlab => format!(
                "{}/projects/{}",
                self.base,
                crate::source::ci::segment(&self.repo)
            ),
            _ => format!("{}/repos/{}", self.base, self.repo),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<Value, ForgeError> {
        let url = format!("{}{path}", self.prefix());
        let mut wait = BACKOFF;
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            let mut rb = self.client.request(method.clone(), &url);
            rb = match self.provider {
                ForgeProvider::Gitlab => rb.header("PRIVATE-TOKEN", &self.token),
                _ => rb
                    .bearer_auth(&self.token)
                    .header("Accept", "application/vnd.github+json")
                    .header("X-GitHub-Api-Version", "2022-11-28"),
            };
            if let Some(b) = body {
                rb = rb.json(b);
            }
            match rb.send().await {
                Ok(r) if r.status().is_success() => {
                    let text = r.text().await.unwrap_or_default();
                    return Ok(serde_json::from_str(&text).unwrap_or(Value::Null));
                }
                Ok(r) => {
                    let code = r.status();
                    let text = r.text().await.unwrap_or_default();
                    let message = serde_json::from_str::<Value>(&text)
                        .ok()
                        .and_then(|v| {
                            v.get("message")
                                .or_else(|| v.get("error"))
                                .map(|m| m.to_string())
                        })
                        .unwrap_or_default();
                    last = format!("{what}: HTTP {} {message}", code.as_u16())
                        .trim_end()
                        .to_string();
                    if !(code.is_server_error() || code.as_u16() == 429) {
                        break;
                    }
                }
                Err(e) => last = format!("{what}: {}", e.without_url()),
            }
        }
        Err(ForgeError(last))
    }

    /// How many of Sentinel's pull requests (head branch `sentinel/…`) are open.
    ///
    /// # Errors
    ///
    /// [`ForgeError`] when the forge cannot be asked.
    pub async fn open_pull_requests(&self) -> Result<usize, ForgeError> {
        let (path, branch) = match self.provider {
            ForgeProvider::Gitlab => (
                "/merge_requests?state=opened&per_page=100",
                "/source_branch",
            ),
            _ => ("/pulls?state=open&per_page=100", "/head/ref"),
        };
        let v = self
            .call(reqwest::Method::GET, path, None, "listing pull requests")
            .await?;
        Ok(v.as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter(|p| {
                p.pointer(branch)
                    .and_then(Value::as_str)
                    .is_some_and(|b| b.starts_with("sentinel/"))
            })
            .count())
    }

    fn opened(&self, v: &Value) -> Opened {
        let (n, url) = match self.provider {
            ForgeProvider::Gitlab => ("iid", "web_url"),
            _ => ("number", "html_url"),
        };
        Opened {
            number: v[n].as_u64().unwrap_or(0),
            url: v[url].as_str().unwrap_or_default().to_string(),
        }
    }

    /// Opens a pull (merge) request of `head` into `base`.
    ///
    /// # Errors
    ///
    /// [`ForgeError`] when the forge refuses or cannot be reached.
    pub async fn open_pull_request(
        &self,
        title: &str,
        head: &str,
        base: &str,
        body: &str,
        labels: &[String],
    ) -> Result<Opened, ForgeError> {
        let what = "opening the pull request";
        match self.provider {
            ForgeProvider::Gitlab => {
                let v = self
                    .call(
                        reqwest::Method::POST,
                        "/merge_requests",
                        Some(&json!({"source_branch": head, "target_branch": base,
                            "title": title, "description": body, "labels": labels.join(",")})),
                        what,
                    )
                    .await?;
                Ok(self.opened(&v))
            }
            _ => {
                let v = self
                    .call(
                        reqwest::Method::POST,
                        "/pulls",
                        Some(&json!({"title": title, "head": head, "base": base, "body": body})),
                        what,
                    )
                    .await?;
                let o = self.opened(&v);
                if !labels.is_empty() {
                    self.call(
                        reqwest::Method::POST,
                        &format!("/issues/{}/labels", o.number),
                        Some(&json!({ "labels": labels })),
                        "labelling the pull request",
                    )
                    .await?;
                }
                Ok(o)
            }
        }
    }

    /// Replaces pull request `number`'s title and body (a regression's fix).
    ///
    /// # Errors
    ///
    /// [`ForgeError`].
    pub async fn update_pull_request(
        &self,
        number: u64,
        title: &str,
        body: &str,
    ) -> Result<(), ForgeError> {
        let (method, path, payload) = match self.provider {
            ForgeProvider::Gitlab => (
                reqwest::Method::PUT,
                format!("/merge_requests/{number}"),
                json!({"title": title, "description": body}),
            ),
            _ => (
                reqwest::Method::PATCH,
                format!("/pulls/{number}"),
                json!({"title": title, "body": body}),
            ),
        };
        self.call(method, &path, Some(&payload), "updating the pull request")
            .await
            .map(|_| ())
    }

    /// Reads pull (merge) request `number`'s state: GitHub `GET /repos/{owner}/{repo}/pulls/{n}`
    /// (`state`, `merged_at`), GitLab `GET /projects/:id/merge_requests/:iid` (`state`).
    ///
    /// # Errors
    ///
    /// [`ForgeError`] when the forge cannot be asked or answers a state it does not document.
    pub async fn pull_request_state(&self, number: u64) -> Result<PullRequestState, ForgeError> {
        let what = "reading the pull request's state";
        let path = match self.provider {
            ForgeProvider::Gitlab => format!("/merge_requests/{number}"),
            _ => format!("/pulls/{number}"),
        };
        let v = self.call(reqwest::Method::GET, &path, None, what).await?;
        let state = v["state"].as_str().unwrap_or_default();
        let merged = !v["merged_at"].is_null();
        match (self.provider, state) {
            (ForgeProvider::Gitlab, "opened") => Ok(PullRequestState::Open),
            (ForgeProvider::Gitlab, "merged") => Ok(PullRequestState::Merged),
            (ForgeProvider::Gitlab, "closed") => Ok(PullRequestState::Closed),
            (ForgeProvider::Gitlab, _) => {
                Err(ForgeError(format!("{what}: unknown state {state:?}")))
            }
            (_, "open") => Ok(PullRequestState::Open),
            (_, "closed") if merged => Ok(PullRequestState::Merged),
            (_, "closed") => Ok(PullRequestState::Closed),
            _ => Err(ForgeError(format!("{what}: unknown state {state:?}"))),
        }
    }

    /// Comments on pull (merge) request `number`.
    ///
    /// # Errors
    ///
    /// [`ForgeError`].
    pub async fn comment_pull_request(&self, number: u64, body: &str) -> Result<(), ForgeError> {
        // GitHub: a pull request's conversation is its issue's.
        let path = match self.provider {
            ForgeProvider::Gitlab => format!("/merge_requests/{number}/notes"),
            _ => format!("/issues/{number}/comments"),
        };
        self.call(
            reqwest::Method::POST,
            &path,
            Some(&json!({ "body": body })),
            "commenting on the pull request",
        )
        .await
        .map(|_| ())
    }

    /// Opens an issue.
    ///
    /// # Errors
    ///
    /// [`ForgeError`].
    pub async fn open_issue(
        &self,
        title: &str,
        body: &str,
        labels: &[String],
    ) -> Result<Opened, ForgeError> {
        let payload = match self.provider {
            ForgeProvider::Gitlab => {
                json!({"title": title, "description": body, "labels": labels.join(",")})
            }
            _ => json!({"title": title, "body": body, "labels": labels}),
        };
        let v = self
            .call(
                reqwest::Method::POST,
                "/issues",
                Some(&payload),
                "opening the issue",
            )
            .await?;
        Ok(self.opened(&v))
    }

    /// Comments on issue `number`.
    ///
    /// # Errors
    ///
    /// [`ForgeError`].
    pub async fn comment_issue(&self, number: u64, body: &str) -> Result<(), ForgeError> {
        let path = match self.provider {
            ForgeProvider::Gitlab => format!("/issues/{number}/notes"),
            _ => format!("/issues/{number}/comments"),
        };
        self.call(
            reqwest::Method::POST,
            &path,
            Some(&json!({ "body": body })),
            "commenting on the issue",
        )
        .await
        .map(|_| ())
    }

    /// Closes issue `number`.
    ///
    /// # Errors
    ///
    /// [`ForgeError`].
    pub async fn close_issue(&self, number: u64) -> Result<(), ForgeError> {
        let (method, payload) = match self.provider {
            ForgeProvider::Gitlab => (reqwest::Method::PUT, json!({"state_event": "close"})),
            _ => (reqwest::Method::PATCH, json!({"state": "closed"})),
        };
        self.call(
            method,
            &format!("/issues/{number}"),
            Some(&payload),
            "closing the issue",
        )
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A forge answering `GET …/pulls/{n}` (GitHub) and `GET …/merge_requests/{n}` (GitLab)
    /// with `pulls[n]`, and 404 otherwise.
    async fn serve(pulls: Vec<Value>) -> String {
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let pulls = pulls.clone();
            async move {
                let n: usize = uri
                    .path()
                    .rsplit('/')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(usize::MAX);
                match pulls.get(n) {
                    Some(v) => (axum::http::StatusCode::OK, axum::Json(v.clone())),
                    None => (
                        axum::http::StatusCode::NOT_FOUND,
                        axum::Json(json!({"message": "Not Found"})),
                    ),
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn reads_a_pull_requests_state_on_github_and_gitlab() {
        use PullRequestState::{Closed, Merged, Open};
        let url = serve(vec![
            json!({"state": "open", "merged_at": null}),
            json!({"state": "closed", "merged_at": "2026-01-02T03:04:05Z"}),
            json!({"state": "closed", "merged_at": null}),
            json!({"state": "draft?"}),
        ])
        .await;
        let gh = ForgeApi::new(ForgeProvider::Github, Some(&url), "acme/app", "t").unwrap();
        for (n, want) in [(0, Open), (1, Merged), (2, Closed)] {
            assert_eq!(gh.pull_request_state(n).await.unwrap(), want, "{n}");
        }
        let e = gh.pull_request_state(3).await.unwrap_err().to_string();
        assert!(e.contains("unknown state \"draft?\""), "{e}");
        let e = gh.pull_request_state(9).await.unwrap_err().to_string();
        assert_eq!(
            e,
            "reading the pull request's state: HTTP 404 \"Not Found\""
        );
        let url = serve(vec![
            json!({"state": "opened"}),
            json!({"state": "merged"}),
            json!({"state": "closed"}),
            json!({"state": "locked"}),
        ])
        .await;
        let gl = ForgeApi::new(ForgeProvider::Gitlab, Some(&url), "acme/app", "t").unwrap();
        for (n, want) in [(0, Open), (1, Merged), (2, Closed)] {
            assert_eq!(gl.pull_request_state(n).await.unwrap(), want, "{n}");
        }
        // A merge under way is neither pushed onto nor replaced.
        assert!(gl.pull_request_state(3).await.is_err());
    }
}
