//! Shared helpers: a temp workspace with a config file, and running the binary in it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_sentinel");

/// A temp dir with a `sentinel.yaml` whose `state_dir` is `state/`.
pub(crate) struct Workspace {
    pub(crate) dir: tempfile::TempDir,
}

impl Workspace {
    pub(crate) fn new() -> Workspace {
        Workspace::with_config("state_dir: state\n")
    }

    pub(crate) fn with_config(yaml: &str) -> Workspace {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("sentinel.yaml"), yaml).expect("write config");
        Workspace { dir }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn file(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.dir.path().join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, contents).expect("write");
        p
    }

    /// Runs `sentinel <args>` in the workspace with its config.
    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }

    /// As [`Workspace::run`], with extra environment variables (which may replace `HOME`).
    pub(crate) fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(BIN)
            .current_dir(self.dir.path())
            .env_remove("SENTINEL_CONFIG")
            .env("HOME", self.dir.path())
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .args(args)
            .output()
            .expect("run sentinel")
    }

    /// Runs `sentinel scan --json <args>` and parses the JSON it prints.
    pub(crate) fn scan_json(&self, args: &[&str]) -> (Output, serde_json::Value) {
        let mut all = vec!["scan", "--json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "scan --json printed no JSON ({e}); stdout: {} stderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out, v)
    }
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A daemon (`watch`/`serve`) started by a test; killed on drop if still running.
pub(crate) struct Daemon {
    pub(crate) child: std::process::Child,
    pub(crate) log: PathBuf,
    state_dir: PathBuf,
}

/// What a ready daemon reported in `state/daemon.json`.
#[derive(Debug, Clone, serde::Deserialize)]
pub(crate) struct DaemonInfo {
    pub(crate) pid: u32,
    pub(crate) api: Option<String>,
    pub(crate) webhooks: Vec<(String, String)>,
}

impl DaemonInfo {
    /// `http://<addr>` of the webhook source `name`.
    pub(crate) fn webhook_url(&self, name: &str) -> String {
        let (_, addr) = self
            .webhooks
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no webhook {name:?} in {:?}", self.webhooks));
        format!("http://{addr}")
    }

    /// `http://<api addr><path>`.
    pub(crate) fn api_url(&self, path: &str) -> String {
        format!(
            "http://{}{path}",
            self.api.as_deref().expect("the API runs")
        )
    }
}

/// A loopback port that was free a moment ago (bind port 0, read it, close): for daemons
/// that must come back on the same port after a restart.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A blocking HTTP client with a generous overall timeout (a failure guard, never a
/// synchronisation).
pub(crate) fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("http client")
}

/// The peak resident set (`VmHWM`) of a process, in KiB.
pub(crate) fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

impl Workspace {
    /// Starts `sentinel <args>` in the background; stderr goes to a log file in the
    /// workspace (shown when a test fails).
    pub(crate) fn spawn(&self, args: &[&str]) -> Daemon {
        self.spawn_env(args, &[])
    }

    /// As [`Workspace::spawn`], with extra environment variables.
    pub(crate) fn spawn_env(&self, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        self.spawn_cmd(Command::new(BIN), args, env)
    }

    /// As [`Workspace::spawn`], run by `prefix`: a command line that runs its arguments (the
    /// binary and `args`) with `exec`, so that the daemon's pid is the child's, e.g.
    /// `["sh", "-c", "ulimit -n 256 && exec \"$0\" \"$@\""]`.
    pub(crate) fn spawn_under(&self, prefix: &[&str], args: &[&str]) -> Daemon {
        let mut cmd = Command::new(prefix[0]);
        cmd.args(&prefix[1..]).arg(BIN);
        self.spawn_cmd(cmd, args, &[])
    }

    fn spawn_cmd(&self, mut cmd: Command, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = self.dir.path().join(format!("daemon-{n}.log"));
        let err = std::fs::File::create(&log).expect("log file");
        let child = cmd
            .current_dir(self.dir.path())
            .env_remove("SENTINEL_CONFIG")
            .env("HOME", self.dir.path())
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "sentinel=debug")
            .envs(env.iter().copied())
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn sentinel");
        Daemon {
            child,
            log,
            state_dir: self.dir.path().join("state"),
        }
    }

    /// The store, opened read-only (works while a daemon writes it).
    pub(crate) fn store(&self) -> Option<sentinel::store::Store> {
        sentinel::store::Store::open_read_only(&self.dir.path().join("state/sentinel.redb"))
            .expect("open store")
    }
}

impl Daemon {
    /// Waits until the daemon wrote its `daemon.json` (sources and listeners started).
    pub(crate) fn ready(&mut self) -> DaemonInfo {
        let pid = self.child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("daemon exited early ({status}):\n{}", self.log_text());
            }
            if let Ok(text) = std::fs::read_to_string(self.state_dir.join("daemon.json"))
                && let Ok(info) = serde_json::from_str::<DaemonInfo>(&text)
                && info.pid == pid
            {
                return info;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "daemon not ready in 20 s:\n{}",
                self.log_text()
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, and reap.
    pub(crate) fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM; waits (≤ `within`) for the exit and returns its status.
    pub(crate) fn term(mut self, within: std::time::Duration) -> std::process::ExitStatus {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "daemon did not exit within {within:?} of SIGTERM:\n{}",
                self.log_text()
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `f` until it returns `Some` or `within` passes.
pub(crate) fn eventually<T>(
    within: std::time::Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A small deterministic PRNG (xorshift64*), seeded per test and printed for replay.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A seed from `SENTINEL_TEST_SEED` or the clock, printed so a failure can be replayed.
pub(crate) fn seed(test: &str) -> u64 {
    let seed = std::env::var("SENTINEL_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("{test}: SENTINEL_TEST_SEED={seed}");
    seed
}
