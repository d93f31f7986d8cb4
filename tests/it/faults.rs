//! Faults on the real daemon: a full disk under the state directory (a real tmpfs), and
//! start-up failures with file sources configured.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Daemon, DaemonInfo, Workspace, eventually, http};

/// A tmpfs mounted for the test, unmounted when dropped (after the daemon using it).
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (mount's syntax: `3m`) at `dir`; None where mounting is not
    /// allowed (not root, in a container without the capability).
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).expect("mount point");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }

    /// Changes its size (`remount`): more space is a freed disk; a size just above what is
    /// used fills it again.
    fn resize(&self, size: &str) {
        assert!(
            self.try_resize(size),
            "remount {} to {size}",
            self.0.display()
        );
    }

    fn try_resize(&self, size: &str) -> bool {
        Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .expect("mount -o remount")
            .success()
    }

    /// Shrinks it to `margin_kib` above what is used. The daemon may write between `df`
    /// and the remount, and the kernel refuses a size below what is used: read it again and
    /// retry until it takes (10 s at most).
    fn fill_to(&self, margin_kib: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let size = format!("{}k", self.used_kib() + margin_kib);
            if self.try_resize(&size) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "remount {} to {size}",
                self.0.display()
            );
        }
    }

    /// KiB used.
    fn used_kib(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=used", "-k"])
            .arg(&self.0)
            .output()
            .expect("df");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df output")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Per-key counts in the store, `PACT:` keys only.
fn key_counts(ws: &Workspace) -> BTreeMap<String, u64> {
    ws.store()
        .map(|s| s.key_counts().expect("key counts"))
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k.starts_with("PACT:"))
        .collect()
}

/// A word no normaliser folds (letters only), different for every `n`.
fn word(mut n: u64) -> String {
    let mut w = String::new();
    loop {
        w.push(char::from(b'a' + (n % 26) as u8));
        n /= 26;
        if n == 0 {
            return w;
        }
    }
}

/// Posts distinct single events until `refusals` answers in a row were refused; returns
/// how many were acknowledged. Every answer must be a 2xx or a 503 with `Retry-After`.
fn post_until_refused(
    c: &reqwest::blocking::Client,
    url: &str,
    next: &mut u64,
    refusals: usize,
    limit: u64,
) -> (u64, Vec<String>) {
    let mut acked = 0;
    let mut in_a_row = 0;
    let mut codes = Vec::new();
    let start = *next;
    while in_a_row < refusals && *next - start < limit {
        let n = *next;
        *next += 1;
        let body = format!(
            "{{\"error\":\"ERROR [PACT:disk:full] request {} failed for {}\",\"event_id\":\"e{n}\"}}",
            word(n),
            word(n * 7919)
        );
        let r = c
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .expect("POST");
        let status = r.status().as_u16();
        if r.status().is_success() {
            acked += 1;
            in_a_row = 0;
            continue;
        }
        assert_eq!(status, 503, "a refusal is a 503");
        assert!(
            r.headers().get("retry-after").is_some(),
            "a 503 carries Retry-After"
        );
        let v: Value = r.json().expect("a JSON error");
        let code = v["error"]["code"].as_str().unwrap_or("?").to_string();
        if !codes.contains(&code) {
            codes.push(code);
        }
        in_a_row += 1;
    }
    (acked, codes)
}

fn health(c: &reqwest::blocking::Client, info: &DaemonInfo) -> (u16, Value) {
    let r = c.get(info.api_url("/health")).send().expect("GET /health");
    let s = r.status().as_u16();
    (s, r.json().unwrap_or(Value::Null))
}

fn append(path: &Path, from: u64, n: u64) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log");
    let mut text = String::new();
    for i in from..from + n {
        text.push_str(&format!("ERROR [PACT:disk:file] line {i}\n"));
    }
    f.write_all(text.as_bytes()).expect("append");
}

/// The scenario of issue 15, end to end: `state_dir` on a 3 MiB tmpfs, a stream of distinct
/// webhook events and a tailed file. Once the disk is full every request is refused (503),
/// never falsely acknowledged; `/health`, `/status` and the gauge say why. Space freed, the
/// daemon recovers by itself (no restart): new events are acknowledged and counted within
/// seconds, the file's lines too. Full again, SIGTERM stops it within 5 s; after a restart
/// every acknowledged event is in the store exactly once. The log stays short.
#[test]
fn a_full_disk_refuses_recovers_in_place_and_stops_on_sigterm() {
    let ws = Workspace::with_config(
        "state_dir: state\napi:\n  listen: 127.0.0.1:0\nsources:\n  - type: webhook\n    name: hook\n    port: 0\n  - type: file\n    path: logs/*.log\n",
    );
    let Some(disk) = Tmpfs::mount(&ws.path().join("state"), "3m") else {
        eprintln!(
            "SKIPPED: cannot mount a tmpfs here (needs root); the full-disk test did not run"
        );
        return;
    };
    let log_file = ws.file("logs/app.log", "");
    append(&log_file, 0, 10);
    // The log level users run with: the line budget is theirs.
    let mut d = ws.spawn_env(&["watch"], &[("RUST_LOG", "info")]);
    let log_path = d.log.clone();
    let info = d.ready();
    let c = http();
    let url = info.webhook_url("hook");
    let mut next = 0u64;
    let mut lines = 10u64;

    // Fill the disk.
    let (mut acked, codes) = post_until_refused(&c, &url, &mut next, 50, 20_000);
    assert!(!codes.is_empty(), "3 MiB never filled after {next} events");
    append(&log_file, lines, 100);
    lines += 100;
    let degraded = eventually(Duration::from_secs(20), || {
        // Commits fail once the ingest log's events or the file's lines need space.
        let (s, v) = health(&c, &info);
        (s == 503).then_some(v)
    });
    let degraded = degraded.unwrap_or_else(|| {
        panic!(
            "/health never said degraded (refusals: {codes:?}):\n{}",
            d.log_text()
        )
    });
    assert_eq!(degraded["status"], "degraded", "{degraded}");
    assert!(
        degraded["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{degraded}"
    );
    let status: Value = c
        .get(info.api_url("/status"))
        .send()
        .and_then(|r| r.json())
        .expect("GET /status");
    assert_eq!(status["store"]["status"], "degraded", "{status}");
    let metrics = c
        .get(info.api_url("/metrics"))
        .send()
        .and_then(|r| r.text())
        .expect("GET /metrics");
    assert!(
        metrics.lines().any(|l| l == "sentinel_store_degraded 1"),
        "{metrics}"
    );
    // Refusals go on while it lasts (no acknowledgement of what cannot be kept).
    let (more, _) = post_until_refused(&c, &url, &mut next, 20, 20);
    assert_eq!(more, 0, "acknowledged while degraded");

    // Free space: it recovers by itself.
    let freed = Instant::now();
    disk.resize("64m");
    let back = eventually(Duration::from_secs(30), || {
        (health(&c, &info).0 == 200).then(|| freed.elapsed())
    });
    let back = back.unwrap_or_else(|| {
        panic!(
            "no recovery within 30 s of freeing space:\n{}",
            d.log_text()
        )
    });
    eprintln!(
        "full disk: {acked} acknowledged before it filled; recovered {back:?} after space was freed"
    );
    let (after, codes) = post_until_refused(&c, &url, &mut next, 1, 200);
    assert_eq!(after, 200, "refused after recovery: {codes:?}");
    acked += after;
    let counted = eventually(Duration::from_secs(10), || {
        let k = key_counts(&ws);
        (k.get("PACT:disk:full") == Some(&acked) && k.get("PACT:disk:file") == Some(&lines))
            .then_some(())
    });
    assert!(
        counted.is_some(),
        "after recovery the store has {:?}, expected {acked} events and {lines} lines:\n{}",
        key_counts(&ws),
        d.log_text()
    );

    // Full again, then SIGTERM: out within 5 s.
    disk.fill_to(256);
    let (more, codes) = post_until_refused(&c, &url, &mut next, 50, 20_000);
    assert!(!codes.is_empty(), "the disk did not fill again");
    acked += more;
    append(&log_file, lines, 50);
    lines += 50;
    let _ = eventually(Duration::from_secs(20), || {
        (health(&c, &info).0 == 503).then_some(())
    });
    let stopped = Instant::now();
    let status = d.term(Duration::from_secs(5));
    eprintln!(
        "full disk: SIGTERM while degraded exited in {:?} ({status})",
        stopped.elapsed()
    );
    let log = std::fs::read_to_string(&log_path).expect("daemon log");
    let log_lines = log.lines().count();
    eprintln!("full disk: {log_lines} log lines");
    assert!(
        log_lines <= 200,
        "{log_lines} log lines for two episodes:\n{log}"
    );

    // Space again; a restart finds everything acknowledged, once.
    disk.resize("64m");
    let mut d = ws.spawn(&["watch"]);
    d.ready();
    let counted = eventually(Duration::from_secs(20), || {
        let k = key_counts(&ws);
        (k.get("PACT:disk:full") == Some(&acked) && k.get("PACT:disk:file") == Some(&lines))
            .then_some(())
    });
    assert!(
        counted.is_some(),
        "after the restart the store has {:?}, expected {acked} events and {lines} lines:\n{}",
        key_counts(&ws),
        d.log_text()
    );
    let status = d.term(Duration::from_secs(5));
    assert!(status.success());
    drop(disk);
}

/// Every start-up failure with file sources configured: an error naming the problem, a
/// non-zero exit, promptly (nothing left running holds the process), and the store free
/// for the next daemon.
#[test]
fn start_up_failures_exit_promptly_with_file_sources_configured() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let files = "  - type: file\n    path: logs/*.log\n";
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "port in use (API)",
            format!("state_dir: state\napi:\n  listen: 127.0.0.1:{port}\nsources:\n{files}"),
            "cannot listen",
        ),
        (
            "port in use (webhook)",
            format!(
                "state_dir: state\nsources:\n{files}  - type: webhook\n    name: hook\n    port: {port}\n"
            ),
            "hook",
        ),
        (
            "a bad listen address",
            format!("state_dir: state\napi:\n  listen: 127.0.0.1:99999\nsources:\n{files}"),
            "listen",
        ),
        (
            "non-loopback API without tokens",
            format!("state_dir: state\napi:\n  listen: 0.0.0.0:0\nsources:\n{files}"),
            "token",
        ),
    ];
    for (what, config, says) in cases {
        let ws = Workspace::with_config(&config);
        ws.file("logs/app.log", "ERROR [PACT:boot:x] one\n");
        let started = Instant::now();
        let out = ws.run(&["watch"]);
        let took = started.elapsed();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{what}: exit 0\n{err}");
        assert!(
            err.to_lowercase().contains(&says.to_lowercase()),
            "{what}: the error does not say {says:?}:\n{err}"
        );
        assert!(took < Duration::from_secs(10), "{what}: took {took:?}");
        if what == "a bad listen address" {
            // A configuration error: exit 2, naming the file, line and key.
            assert_eq!(out.status.code(), Some(2), "{what}: {err}");
            assert!(err.contains("sentinel.yaml:3:"), "{what}: {err}");
            continue;
        }
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        // Nothing holds the store: a scan can write it.
        let scan = ws.run(&["scan", "logs/app.log"]);
        assert!(
            scan.status.success(),
            "{what}: the store is still held:\n{}",
            String::from_utf8_lossy(&scan.stderr)
        );
    }
    // A second daemon on the same state directory.
    let ws = Workspace::with_config(&format!("state_dir: state\nsources:\n{files}"));
    ws.file("logs/app.log", "ERROR [PACT:boot:x] one\n");
    let mut first: Daemon = ws.spawn(&["watch", "--no-api"]);
    first.ready();
    let out = ws.run(&["watch", "--no-api"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(first.term(Duration::from_secs(5)).success());
    drop(taken);
}
