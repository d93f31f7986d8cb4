//! The CLI's way to a running daemon (issue 18: one CLI, daemon or not).
//!
//! A daemon owns the store (redb takes one writer), so commands that change it — `fix`,
//! `triage`, `register`, `manifest add|remove`, `approve`, `reject` — go through the
//! daemon's HTTP API when one runs: its address comes from `state_dir/daemon.json`, the
//! bearer tokens from the variables `api.read_token_env` / `api.write_token_env` name (as
//! the daemon reads them). Read-only commands (`report`, `fixes`, `incident`) open the store
//! read-only instead, which works beside a writer.
//!
//! A `daemon.json` whose process is gone (a `kill -9`) is stale and ignored; a daemon
//! started with `--no-api` owns the store without an API, which is said plainly.

use std::time::Duration;

use anyhow::{Context, anyhow};
use serde_json::Value;

use super::CliError;
use crate::config::Config;

/// How long one request may take (a `fix` waits by polling, never in one request).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A running daemon's API, as the CLI reaches it.
#[derive(Debug)]
pub struct DaemonClient {
    /// The daemon's pid (for messages).
    pub pid: u32,
    base: String,
    read_token: Option<String>,
    write_token: Option<String>,
    http: reqwest::blocking::Client,
}

/// An answer of the API that is not a 2xx: its status and the error body's code and
/// message (`{"error": {"code", "message"}}`).
#[derive(Debug, thiserror::Error)]
#[error("the daemon answered {status}: {message}")]
pub struct ApiRefusal {
    /// The HTTP status.
    pub status: u16,
    /// The error code (`not_registered`, `fix_in_progress`, ...; empty when the body had none).
    pub code: String,
    /// What the daemon said.
    pub message: String,
}

impl DaemonClient {
    /// The running daemon of this configuration's state directory, if one runs.
    ///
    /// # Errors
    ///
    /// A daemon runs but serves no API (`--no-api`), or the HTTP client cannot be built.
    pub fn find(config: &Config) -> Result<Option<DaemonClient>, CliError> {
        Self::find_with(config, |v| std::env::var(v).ok())
    }

    /// [`DaemonClient::find`] with the environment given (tests).
    ///
    /// # Errors
    ///
    /// As [`DaemonClient::find`].
    pub fn find_with(
        config: &Config,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<DaemonClient>, CliError> {
        let Some(info) = crate::daemon::read_daemon_file(&config.state_dir) else {
            return Ok(None);
        };
        if !process_alive(info.pid) {
            return Ok(None);
        }
        let Some(api) = info.api else {
            return Err(CliError::Other(anyhow!(
                "a daemon (pid {}) owns the store and serves no API (started with --no-api): \
                 stop it, or restart it with the API, to run this command",
                info.pid
            )));
        };
        let token = |name: &Option<String>| {
            name.as_deref()
                .and_then(&env)
                .filter(|t| !t.trim().is_empty())
        };
        let http = reqwest::blocking::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .context("cannot build an HTTP client")?;
        Ok(Some(DaemonClient {
            pid: info.pid,
            base: format!("http://{api}"),
            read_token: token(&config.api.read_token_env),
            write_token: token(&config.api.write_token_env),
            http,
        }))
    }

    /// `GET path`: the JSON body of a 2xx answer.
    ///
    /// # Errors
    ///
    /// The daemon did not answer, or answered with an error ([`ApiRefusal`] inside).
    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        let token = self.read_token.as_ref().or(self.write_token.as_ref());
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        self.answer(req, path)
    }

    /// `POST path` with a JSON body: the JSON body of a 2xx answer.
    ///
    /// # Errors
    ///
    /// The daemon did not answer, or answered with an error ([`ApiRefusal`] inside).
    pub fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let mut req = self.http.post(format!("{}{path}", self.base)).json(body);
        if let Some(t) = &self.write_token {
            req = req.bearer_auth(t);
        }
        self.answer(req, path)
    }

    fn answer(&self, req: reqwest::blocking::RequestBuilder, path: &str) -> anyhow::Result<Value> {
        let resp = req.send().with_context(|| {
            format!(
                "the daemon (pid {}) did not answer {}{path}",
                self.pid, self.base
            )
        })?;
        let status = resp.status();
        let text = resp.text().unwrap_or_default();
        let doc: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(doc);
        }
        let field = |k: &str| doc["error"][k].as_str().unwrap_or_default().to_string();
        let message = match field("message") {
            m if m.is_empty() => text.trim().chars().take(300).collect(),
            m => m,
        };
        Err(ApiRefusal {
            status: status.as_u16(),
            code: field("code"),
            message,
        }
        .into())
    }
}

/// Whether a process with this pid exists (signal 0; a process of another user still counts).
fn process_alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e == rustix::io::Errno::PERM,
    }
}

/// The refusal inside an error from [`DaemonClient`], if the daemon answered one.
pub fn refusal(e: &anyhow::Error) -> Option<&ApiRefusal> {
    e.downcast_ref::<ApiRefusal>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_an_unused_pid_is_not() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(0));
        // The largest pid Linux hands out is below 2^22.
        assert!(!process_alive(4_000_000_000));
    }
}
