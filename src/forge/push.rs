//! Pushing a fix branch: `git push --force <remote> <branch>:refs/heads/<target>`.
//!
//! The token never appears in a URL, an argument or a log: for an HTTPS remote, git gets it
//! through its environment (`GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_0`/`GIT_CONFIG_VALUE_0`, the
//! documented way to pass configuration to one git process) as an
//! `http.extraHeader: Authorization: Basic …` (`x-access-token:<token>` for GitHub,
//! `oauth2:<token>` for GitLab). A remote that is a path (tests: a bare repository) needs
//! none. Git never prompts (`GIT_TERMINAL_PROMPT=0`), gives up on a stalled transfer, and
//! the whole push is killed after [`PUSH_TIMEOUT`].

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::ForgeProvider;

/// The longest a push may take.
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a push failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// git could not be run, or said no (its last lines).
    #[error("git push failed: {0}")]
    Git(String),
    /// It took longer than [`PUSH_TIMEOUT`].
    #[error("git push took longer than {0:?} and was stopped")]
    Timeout(Duration),
}

/// Pushes local branch `branch` of the repository at `repo` to `target` on `remote`
/// (forced: a regression's fix replaces the pull request's commits). Blocking.
///
/// # Errors
///
/// [`PushError`].
pub fn push(
    repo: &Path,
    remote: &str,
    branch: &str,
    target: &str,
    token: &str,
    provider: ForgeProvider,
) -> Result<(), PushError> {
    let mut cmd = Command::new("git");
    cmd.current_dir(repo)
        .args([
            "-c",
            "http.lowSpeedLimit=1000",
            "-c",
            "http.lowSpeedTime=30",
            "push",
            "--force",
            "--quiet",
            "--no-verify",
            remote,
            &format!("refs/heads/{branch}:refs/heads/{target}"),
        ])
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if remote.starts_with("https://") || remote.starts_with("http://") {
        let user = match provider {
            ForgeProvider::Gitlab => "oauth2",
            _ => "x-access-token",
        };
        let basic = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{user}:{token}"),
        );
        cmd.env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "http.extraHeader")
            .env(
                "GIT_CONFIG_VALUE_0",
                format!("Authorization: Basic {basic}"),
            );
    }
    let mut child = cmd.spawn().map_err(|e| PushError::Git(e.to_string()))?;
    let mut stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = stderr.as_mut() {
            let _ = e.take(64 << 10).read_to_string(&mut s);
        }
        s
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if started.elapsed() > PUSH_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(PushError::Timeout(PUSH_TIMEOUT));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(PushError::Git(e.to_string())),
        }
    };
    let err = reader.join().unwrap_or_default();
    if status.success() {
        Ok(())
    } else {
        let tail: Vec<&str> = err.lines().rev().take(3).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Err(PushError::Git(tail.join(" / ").replace(token, "***")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) {
        let ok = Command::new("git")
            .current_dir(dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
            .args(args)
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    }

    #[test]
    fn pushes_to_a_bare_repository_and_reports_a_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let (work, bare) = (dir.path().join("w"), dir.path().join("b.git"));
        std::fs::create_dir_all(&work).unwrap();
        git(dir.path(), &["init", "--quiet", "--bare", "b.git"]);
        git(&work, &["init", "--quiet", "--initial-branch=main"]);
        std::fs::write(work.join("f"), "x").unwrap();
        git(&work, &["add", "f"]);
        git(&work, &["commit", "--quiet", "-m", "c"]);
        git(&work, &["branch", "sentinel/fix-1"]);
        let remote = bare.to_string_lossy();
        push(
            &work,
            &remote,
            "sentinel/fix-1",
            "sentinel/fix-1",
            "t0k",
            ForgeProvider::Github,
        )
        .unwrap();
        assert!(
            bare.join("refs/heads/sentinel/fix-1").exists() || {
                let out = Command::new("git")
                    .current_dir(&bare)
                    .args(["show-ref"])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).contains("sentinel/fix-1")
            }
        );
        let e = push(
            &work,
            "/nonexistent/x.git",
            "sentinel/fix-1",
            "x",
            "t0k",
            ForgeProvider::Github,
        )
        .unwrap_err();
        assert!(!e.to_string().contains("t0k"), "{e}");
    }
}
