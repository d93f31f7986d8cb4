//! `fix.pull_request` and `issues`: where proven fixes go as pull (merge) requests, and where
//! escalated incidents are filed as issues (GitHub or GitLab; see [`crate::forge`]).

use serde::Deserialize;

use super::ConfigError;

/// A code forge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ForgeProvider {
    /// GitHub (pull requests, issues; `api_url` default `https://api.github.com`).
    #[default]
    Github,
    /// GitLab (merge requests, issues; `api_url` default `https://gitlab.com/api/v4`).
    Gitlab,
}

impl ForgeProvider {
    /// The public API's base URL.
    pub fn default_api_url(self) -> &'static str {
        match self {
            ForgeProvider::Github => "https://api.github.com",
            ForgeProvider::Gitlab => "https://gitlab.com/api/v4",
        }
    }

    /// `github` or `gitlab`.
    pub fn as_str(self) -> &'static str {
        match self {
            ForgeProvider::Github => "github",
            ForgeProvider::Gitlab => "gitlab",
        }
    }
}

/// `fix.pull_request`: a proven fix's branch is pushed and a pull request opened.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct PullRequestConfig {
    /// `provider`: `github` (default) or `gitlab`.
    pub provider: ForgeProvider,
    /// `repo`: `owner/name` (GitLab: the project's path, or its numeric id).
    pub repo: String,
    /// `base`: the branch the pull request targets (default `main`).
    pub base: String,
    /// `token_env`: the environment variable holding the API (and push) token.
    pub token_env: String,
    /// `api_url`: the API's base URL (default: the public one).
    pub api_url: Option<String>,
    /// `labels` put on each pull request.
    pub labels: Vec<String>,
    /// `max_open` (default 5): pull requests of Sentinel's open at once at most.
    pub max_open: u32,
    /// `remote`: where branches are pushed (default `https://github.com/<repo>.git` or
    /// `https://gitlab.com/<repo>.git`; any git remote URL or a path).
    pub remote: Option<String>,
}

/// `issues`: an escalated incident opens one issue (a recurrence comments on it), closed when
/// the incident is resolved.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct IssuesConfig {
    /// `provider`: `github` (default) or `gitlab`.
    pub provider: ForgeProvider,
    /// `repo`: `owner/name` (GitLab: the project's path, or its numeric id).
    pub repo: String,
    /// `token_env`: the environment variable holding the API token.
    pub token_env: String,
    /// `api_url`: the API's base URL (default: the public one).
    pub api_url: Option<String>,
    /// `labels` put on each issue.
    pub labels: Vec<String>,
    /// `max_per_hour` (default 10): issues opened in any hour at most (comments and closes
    /// are not limited); the rest wait for a free slot.
    pub max_per_hour: u32,
}

/// The default of `fix.pull_request.max_open`.
pub const DEFAULT_MAX_OPEN: u32 = 5;
/// The default of `issues.max_per_hour`.
pub const DEFAULT_ISSUES_PER_HOUR: u32 = 10;

type Invalid<'a> = &'a dyn Fn(String, Option<&serde_saphyr::Location>, String) -> ConfigError;

fn check_common(
    section: &str,
    repo: &str,
    token_env: &str,
    api_url: Option<&str>,
    invalid: Invalid,
) -> Result<(), ConfigError> {
    if repo.trim().is_empty() || repo.contains(char::is_whitespace) {
        return Err(invalid(
            format!("{section}.repo"),
            None,
            "name the repository: `owner/name` (GitLab: the project path or id)".into(),
        ));
    }
    if token_env.trim().is_empty() {
        return Err(invalid(
            format!("{section}.token_env"),
            None,
            "name the environment variable holding the API token".into(),
        ));
    }
    if let Some(u) = api_url
        && !(u.starts_with("http://") || u.starts_with("https://"))
    {
        return Err(invalid(
            format!("{section}.api_url"),
            None,
            format!("{u:?} is not an http(s) URL"),
        ));
    }
    Ok(())
}

/// Checks `fix.pull_request` and fills its defaults.
pub(super) fn resolve_pull_request(
    pr: Option<PullRequestConfig>,
    invalid: Invalid,
) -> Result<Option<PullRequestConfig>, ConfigError> {
    let Some(mut pr) = pr else { return Ok(None) };
    check_common(
        "fix.pull_request",
        &pr.repo,
        &pr.token_env,
        pr.api_url.as_deref(),
        invalid,
    )?;
    if pr.base.trim().is_empty() {
        pr.base = "main".into();
    }
    if pr.max_open == 0 {
        pr.max_open = DEFAULT_MAX_OPEN;
    }
    Ok(Some(pr))
}

/// Checks `issues` and fills its defaults.
pub(super) fn resolve_issues(
    issues: Option<IssuesConfig>,
    invalid: Invalid,
) -> Result<Option<IssuesConfig>, ConfigError> {
    let Some(mut i) = issues else { return Ok(None) };
    check_common(
        "issues",
        &i.repo,
        &i.token_env,
        i.api_url.as_deref(),
        invalid,
    )?;
    if i.max_per_hour == 0 {
        i.max_per_hour = DEFAULT_ISSUES_PER_HOUR;
    }
    Ok(Some(i))
}
