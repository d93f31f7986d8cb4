//! Running a component's tests for a fix: a default command per language, or a configured
//! one, in a minimal environment, in its own process group, with a timeout that kills the
//! whole group.
//!
//! What the reference got wrong (SPEC §13 item 11): its test environment dropped `PATH` and
//! inherited everything else. Here the child sees only `PATH`, `HOME` (a fresh temporary
//! directory, removed afterwards), `LANG=C.UTF-8`, `PYTHONDONTWRITEBYTECODE=1` (see
//! [`run_tests`]), where the language toolchains live (`RUSTUP_HOME`, `CARGO_HOME`, Go's
//! paths; see `toolchain_env`) and the variables the caller allow-lists;
//! credentials (`ANTHROPIC_API_KEY`, `OPENAI_API_KEY`, any `*_TOKEN`, `*_SECRET`, `*_API_KEY`,
//! `*_PASSWORD`) are never passed, even when allow-listed.
//!
//! A configured command string is run with `sh -c <string>` rather than split into words:
//! users write test commands the way they type them (`cd web && npm test`, `FOO=1 make
//! check`), the shell is always present, and the process-group kill takes care of everything
//! the shell starts. The default commands are argument vectors run directly.

use std::collections::VecDeque;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How much of the interleaved stdout and stderr a [`TestOutcome`] keeps.
pub const OUTPUT_TAIL: usize = 8 * 1024;

/// How long to wait for the output pipes to close once the test command has exited.
const PIPE_GRACE: Duration = Duration::from_secs(2);

/// Default test commands per language, and configured overrides.
#[derive(Debug, Clone, Copy)]
pub struct TestCommand;

impl TestCommand {
    /// The default command for `language` (`python`, `typescript`, `javascript`, `rust`,
    /// `go`), or `None` for another language. `test_dir` (relative to the working directory
    /// the tests run in) is used by the Python fallback: `python3 -m pytest -q` when `pytest`
    /// is importable, else `python3 -m unittest discover -s <test_dir> -p '*test*.py'`.
    pub fn for_language(language: &str, test_dir: &str) -> Option<Vec<String>> {
        let argv: &[&str] = match language.to_ascii_lowercase().as_str() {
            "python" => {
                if pytest_available() {
                    &["python3", "-m", "pytest", "-q"]
                } else {
                    let dir = if test_dir.is_empty() { "." } else { test_dir };
                    return Some(
                        [
                            "python3",
                            "-m",
                            "unittest",
                            "discover",
                            "-s",
                            dir,
                            "-p",
                            "*test*.py",
                        ]
                        .map(String::from)
                        .to_vec(),
                    );
                }
            }
            "typescript" | "javascript" => &["npm", "test", "--silent"],
            "rust" => &["cargo", "test"],
            "go" => &["go", "test", "./..."],
            _ => return None,
        };
        Some(argv.iter().map(|s| s.to_string()).collect())
    }

    /// A configured command string, run as `sh -c <command>`.
    pub fn shell(command: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), command.into()]
    }

    /// The configured command if there is one, else the language default.
    pub fn resolve(
        configured: Option<&str>,
        language: &str,
        test_dir: &str,
    ) -> Option<Vec<String>> {
        match configured.map(str::trim).filter(|c| !c.is_empty()) {
            Some(c) => Some(TestCommand::shell(c)),
            None => TestCommand::for_language(language, test_dir),
        }
    }
}

/// Whether `python3 -c 'import pytest'` succeeds in the minimal test environment.
fn pytest_available() -> bool {
    let argv = ["python3", "-c", "import pytest"].map(String::from);
    run_tests(&std::env::temp_dir(), &argv, Duration::from_secs(30), &[]).passed
}

/// The result of one test run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestOutcome {
    /// The command exited with status 0 in time.
    pub passed: bool,
    /// Its exit code (`None` when killed by a signal, timed out or not started).
    pub exit: Option<i32>,
    /// The timeout elapsed and the process group was killed.
    pub timed_out: bool,
    /// Wall time until it exited or was killed.
    pub duration: Duration,
    /// The last [`OUTPUT_TAIL`] bytes of stdout and stderr, interleaved as read (or why the
    /// command could not be started).
    pub output_tail: String,
}

/// Whether an environment variable name looks like a credential; such variables are never
/// passed to tests.
pub fn is_secret_var(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    upper == "ANTHROPIC_API_KEY"
        || upper == "OPENAI_API_KEY"
        || upper.ends_with("_TOKEN")
        || upper.ends_with("_SECRET")
        || upper.ends_with("_API_KEY")
        || upper.ends_with("_PASSWORD")
        || upper.contains("SECRET")
}

/// A bounded byte tail shared by the two pipe readers.
#[derive(Debug, Default)]
struct Tail {
    buf: VecDeque<u8>,
}

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        let bytes = &bytes[bytes.len().saturating_sub(OUTPUT_TAIL)..];
        let overflow = (self.buf.len() + bytes.len()).saturating_sub(OUTPUT_TAIL);
        self.buf.drain(..overflow);
        self.buf.extend(bytes);
    }
}

fn reader(
    mut pipe: impl Read + Send + 'static,
    tail: Arc<Mutex<Tail>>,
    done: std::sync::mpsc::Sender<()>,
) {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => tail
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(&chunk[..n]),
            }
        }
        let _ = done.send(());
    });
}

/// SIGKILL to the process group `pgid`. The group exists while any member lives, so its id
/// cannot have been reused.
fn kill_group(pgid: u32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pgid as i32) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// A fresh, private temporary directory for the child's `HOME`.
fn temp_home() -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "sentinel-test-home-{}-{:016x}",
        std::process::id(),
        super::random_u64()
    ));
    std::fs::create_dir(&dir)?;
    Ok(dir)
}

/// Where the language toolchains live, for tests run with a temporary `HOME`: rustup and
/// cargo (`RUSTUP_HOME`, `CARGO_HOME`, `RUSTUP_TOOLCHAIN`) and Go (`GOPATH`, `GOCACHE`,
/// `GOMODCACHE`, `GOFLAGS`), as set in this process or at their defaults under the real
/// `HOME` when those exist. Locations, never credentials.
fn toolchain_env() -> Vec<(&'static str, std::ffi::OsString)> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let mut out = Vec::new();
    for (name, default) in [
        ("RUSTUP_HOME", Some(".rustup")),
        ("CARGO_HOME", Some(".cargo")),
        ("RUSTUP_TOOLCHAIN", None),
        ("GOPATH", Some("go")),
        ("GOCACHE", Some(".cache/go-build")),
        ("GOMODCACHE", Some("go/pkg/mod")),
        ("GOFLAGS", None),
    ] {
        if let Some(v) = std::env::var_os(name) {
            out.push((name, v));
        } else if let (Some(home), Some(rel)) = (&home, default) {
            let p = home.join(rel);
            if p.exists() {
                out.push((name, p.into_os_string()));
            }
        }
    }
    out
}

/// Runs `command` (an argument vector) in `cwd` with a minimal environment (see the module
/// docs; `env_allow` names extra variables to pass from this process's environment, secrets
/// excepted), stdin null, in its own process group. On timeout the whole group gets SIGKILL
/// and the child is reaped. Output is read by two threads into a bounded tail.
pub fn run_tests(
    cwd: &Path,
    command: &[String],
    timeout: Duration,
    env_allow: &[&str],
) -> TestOutcome {
    let started = Instant::now();
    let failed = |msg: String| TestOutcome {
        passed: false,
        exit: None,
        timed_out: false,
        duration: started.elapsed(),
        output_tail: msg,
    };
    let Some((program, args)) = command.split_first() else {
        return failed("empty test command".into());
    };
    let home = match temp_home() {
        Ok(h) => h,
        Err(e) => return failed(format!("cannot create a temporary HOME: {e}")),
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(cwd)
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
        )
        .env("HOME", &home)
        .env("LANG", "C.UTF-8")
        // Python validates cached bytecode by source mtime (whole seconds) and size: a fix
        // that keeps the size, tested again within the same second, would run the stale
        // `.pyc`. Writing none also keeps the worktree free of `__pycache__`.
        .env("PYTHONDONTWRITEBYTECODE", "1");
    for (name, value) in toolchain_env() {
        cmd.env(name, value);
    }
    for name in env_allow {
        if is_secret_var(name) || matches!(*name, "PATH" | "HOME") {
            continue;
        }
        if let Some(v) = std::env::var_os(name) {
            cmd.env(name, v);
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&home);
            return failed(format!("cannot run `{}`: {e}", command.join(" ")));
        }
    };
    let pgid = child.id();
    let tail = Arc::new(Mutex::new(Tail::default()));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    if let Some(out) = child.stdout.take() {
        reader(out, Arc::clone(&tail), done_tx.clone());
    }
    if let Some(err) = child.stderr.take() {
        reader(err, Arc::clone(&tail), done_tx.clone());
    }
    drop(done_tx);

    let deadline = started + timeout;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(_) => break None,
        }
        let now = Instant::now();
        if now >= deadline {
            // The child is not reaped yet, so its pid (the group id) cannot be reused.
            timed_out = true;
            kill_group(pgid);
            let _ = child.kill();
            break child.wait().ok();
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(20)));
    };
    let duration = started.elapsed();

    // Wait for both readers; if a leftover member of the group still holds a pipe, kill it.
    let grace = Instant::now() + PIPE_GRACE;
    let mut closed = 0;
    while closed < 2 {
        let left = grace.saturating_duration_since(Instant::now());
        match done_rx.recv_timeout(left) {
            Ok(()) => closed += 1,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                kill_group(pgid);
                // The pipes close once the group is gone; wait a little more, then give up
                // (the reader threads end whenever the pipes close).
                while closed < 2 && done_rx.recv_timeout(PIPE_GRACE).is_ok() {
                    closed += 1;
                }
                break;
            }
        }
    }
    let _ = std::fs::remove_dir_all(&home);

    let bytes: Vec<u8> = {
        let t = tail.lock().unwrap_or_else(|p| p.into_inner());
        t.buf.iter().copied().collect()
    };
    let exit = if timed_out {
        None
    } else {
        status.and_then(|s| s.code())
    };
    TestOutcome {
        passed: !timed_out && exit == Some(0),
        exit,
        timed_out,
        duration,
        output_tail: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        TestCommand::shell(script)
    }

    #[test]
    fn pass_fail_and_exit_codes() {
        let dir = tempfile::tempdir().unwrap();
        let ok = run_tests(
            dir.path(),
            &sh("echo out; echo err >&2"),
            Duration::from_secs(20),
            &[],
        );
        assert!(ok.passed && ok.exit == Some(0) && !ok.timed_out, "{ok:?}");
        assert!(
            ok.output_tail.contains("out") && ok.output_tail.contains("err"),
            "{ok:?}"
        );
        let bad = run_tests(dir.path(), &sh("exit 3"), Duration::from_secs(20), &[]);
        assert!(
            !bad.passed && bad.exit == Some(3) && !bad.timed_out,
            "{bad:?}"
        );
        // cwd is honoured and stdin is null.
        let cwd = run_tests(dir.path(), &sh("pwd; cat"), Duration::from_secs(20), &[]);
        assert!(cwd.passed, "{cwd:?}");
        let want = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(cwd.output_tail.trim(), want.to_string_lossy());
        let missing = run_tests(
            dir.path(),
            &["/nonexistent/bin".to_string()],
            Duration::from_secs(5),
            &[],
        );
        assert!(
            !missing.passed && missing.exit.is_none() && missing.output_tail.contains("cannot run")
        );
        assert!(!run_tests(dir.path(), &[], Duration::from_secs(5), &[]).passed);
    }

    #[test]
    fn output_tail_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        // ~1 MiB of output, the last line marked (on stdout too: the order between two
        // pipes is not defined).
        let out = run_tests(
            dir.path(),
            &sh(
                "i=0; while [ $i -lt 16384 ]; do echo 0123456789012345678901234567890123456789012345678901234567890; i=$((i+1)); done; echo END-MARK",
            ),
            Duration::from_secs(60),
            &[],
        );
        assert!(out.passed, "{out:?}");
        assert!(out.output_tail.len() <= OUTPUT_TAIL);
        assert!(out.output_tail.len() > OUTPUT_TAIL / 2);
        assert!(out.output_tail.trim_end().ends_with("END-MARK"));
    }

    fn alive(pid: u32) -> bool {
        // A zombie waiting for an init that does not reap counts as dead.
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => !stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z'),
            Err(_) => false,
        }
    }

    #[test]
    fn timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild.pid");
        let script = format!("sleep 1000 & echo $! > '{}'; wait", pidfile.display());
        let started = Instant::now();
        let out = run_tests(dir.path(), &sh(&script), Duration::from_millis(500), &[]);
        assert!(
            out.timed_out && !out.passed && out.exit.is_none(),
            "{out:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let pid: u32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let gone = Instant::now() + Duration::from_secs(5);
        while alive(pid) && Instant::now() < gone {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!alive(pid), "grandchild {pid} survived the timeout");
    }

    #[test]
    fn background_leftovers_do_not_hang_the_runner() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("bg.pid");
        // Exits at once, leaving a member of its group holding the output pipe.
        let script = format!("sleep 1000 & echo $! > '{}'; exit 0", pidfile.display());
        let started = Instant::now();
        let out = run_tests(dir.path(), &sh(&script), Duration::from_secs(30), &[]);
        assert!(out.passed, "{out:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let pid: u32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let gone = Instant::now() + Duration::from_secs(5);
        while alive(pid) && Instant::now() < gone {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!alive(pid), "background {pid} survived");
    }

    const PROBE_OUT: &str = "SENTINEL_TEST_PROBE_OUT";

    /// Run in a child test process (see below) whose environment holds a secret; records what
    /// a test command sees.
    #[test]
    fn env_probe_helper() {
        let Some(out) = std::env::var_os(PROBE_OUT) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let res = run_tests(
            dir.path(),
            &sh("env"),
            Duration::from_secs(20),
            &[
                "SENTINEL_TEST_ALLOWED",
                "SENTINEL_TEST_SECRET_TOKEN",
                "OPENAI_API_KEY",
                "HOME",
            ],
        );
        std::fs::write(out, format!("passed={}\n{}", res.passed, res.output_tail)).unwrap();
    }

    #[test]
    fn child_env_is_minimal_and_has_no_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let out_file = dir.path().join("env.txt");
        let status = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "fix::runner::tests::env_probe_helper",
                "--test-threads=1",
                "--quiet",
            ])
            .env(PROBE_OUT, &out_file)
            .env("SENTINEL_TEST_SECRET_TOKEN", "hunter2-token-value")
            .env("OPENAI_API_KEY", "sk-test-openai-value")
            .env("SENTINEL_TEST_ALLOWED", "allowed-value")
            .env("SENTINEL_TEST_NOT_ALLOWED", "not-allowed-value")
            .env("HOME", dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        let env = std::fs::read_to_string(&out_file).unwrap();
        assert!(env.starts_with("passed=true\n"), "{env}");
        assert!(env.contains("SENTINEL_TEST_ALLOWED=allowed-value"), "{env}");
        for leaked in [
            "hunter2-token-value",
            "sk-test-openai-value",
            "not-allowed-value",
            PROBE_OUT,
        ] {
            assert!(!env.contains(leaked), "{leaked} leaked: {env}");
        }
        assert!(env.lines().any(|l| l.starts_with("PATH=")), "{env}");
        assert!(env.contains("LANG=C.UTF-8"), "{env}");
        let home = env.lines().find_map(|l| l.strip_prefix("HOME=")).unwrap();
        assert_ne!(
            Path::new(home),
            dir.path(),
            "HOME is a fresh temp dir, not the caller's"
        );
        assert!(
            !Path::new(home).exists(),
            "the temp HOME is removed afterwards"
        );
    }

    #[test]
    fn secret_names() {
        for s in [
            "ANTHROPIC_API_KEY",
            "OPENAI_API_KEY",
            "GITHUB_TOKEN",
            "AWS_SECRET",
            "AWS_SECRET_ACCESS_KEY",
            "x_token",
            "DB_PASSWORD",
            "FOO_API_KEY",
        ] {
            assert!(is_secret_var(s), "{s}");
        }
        for s in [
            "PATH",
            "PYTHONPATH",
            "NODE_ENV",
            "GOFLAGS",
            "TOKENIZERS_PARALLELISM",
        ] {
            assert!(!is_secret_var(s), "{s}");
        }
    }

    #[test]
    fn commands_per_language() {
        let py = TestCommand::for_language("python", "tests/calc").unwrap();
        assert_eq!(py[0], "python3");
        assert!(
            py.ends_with(&["-q".into()])
                || py.ends_with(&[
                    "-s".into(),
                    "tests/calc".into(),
                    "-p".into(),
                    "*test*.py".into()
                ]),
            "{py:?}"
        );
        assert_eq!(
            TestCommand::for_language("go", "").unwrap(),
            ["go", "test", "./..."]
        );
        assert_eq!(
            TestCommand::for_language("rust", "").unwrap(),
            ["cargo", "test"]
        );
        assert_eq!(
            TestCommand::for_language("TypeScript", "").unwrap(),
            ["npm", "test", "--silent"]
        );
        assert_eq!(
            TestCommand::for_language("javascript", "").unwrap(),
            ["npm", "test", "--silent"]
        );
        assert!(TestCommand::for_language("cobol", "").is_none());
        assert_eq!(
            TestCommand::resolve(Some("make check"), "go", "").unwrap(),
            ["sh", "-c", "make check"]
        );
        assert_eq!(
            TestCommand::resolve(Some("  "), "go", "").unwrap(),
            ["go", "test", "./..."]
        );
    }
}
