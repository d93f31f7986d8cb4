//! `type: process` and `type: stdin` sources, with real child processes.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{BIN, Workspace, eventually, http};

fn key_count(ws: &Workspace, key: &str) -> u64 {
    // The store may be being created (a daemon not ready yet): nothing counted then.
    sentinel::store::Store::open_read_only(&ws.path().join("state/sentinel.redb"))
        .ok()
        .flatten()
        .and_then(|s| s.key_counts().ok())
        .and_then(|k| k.get(key).copied())
        .unwrap_or(0)
}

fn process_status(c: &reqwest::blocking::Client, url: &str, name: &str) -> Option<Value> {
    let v: Value = c.get(url).send().ok()?.json().ok()?;
    v["source_details"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)
        .cloned()
}

/// A child's error lines (stdout and stderr) are counted, and it is restarted when it
/// fails; its state is in `/status`.
#[test]
fn process_source_counts_error_lines_and_restarts_the_child() {
    let ws = Workspace::with_config(
        r#"state_dir: state
api:
  listen: 127.0.0.1:0
sources:
  - type: process
    name: job
    command: ["sh", "-c", "echo \"ERROR [PACT:proc:out] failed $RUN_TAG\"; echo fine; echo 'ERROR [PACT:proc:err] on stderr' >&2; printf 'ERROR [PACT:proc:tail] no newline'; exit 3"]
    env: {RUN_TAG: tagged}
    restart: on-failure
"#,
    );
    let mut d = ws.spawn(&["watch"]);
    let info = d.ready();
    let c = http();
    let url = info.api_url("/status");
    let restarted = eventually(Duration::from_secs(30), || {
        let s = process_status(&c, &url, "job")?;
        (s["restarts"].as_u64()? >= 2 && key_count(&ws, "PACT:proc:err") >= 3).then_some(s)
    });
    let s = restarted.unwrap_or_else(|| panic!("not restarted:\n{}", d.log_text()));
    assert_eq!(s["type"], "process");
    assert_eq!(s["last_exit"], "exit 3", "{s}");
    // Every run's three error lines, the unterminated last one included; `fine` is not one.
    let runs = key_count(&ws, "PACT:proc:out");
    assert!(runs >= 3, "{runs}");
    for k in ["PACT:proc:err", "PACT:proc:tail"] {
        let n = key_count(&ws, k);
        assert!(n + 1 >= runs && n <= runs + 1, "{k}: {n} vs {runs}");
    }
    let incidents = ws.store().unwrap().recent_incidents(10).unwrap();
    assert!(
        incidents.iter().any(|i| i.sample.contains("failed tagged")),
        "env reaches the child"
    );
    let status = d.term(Duration::from_secs(15));
    assert!(status.success(), "{status}");
}

/// A long-running child runs in its own process group and is stopped with the daemon; a
/// `restart: never` child that exited stays `exited`.
#[test]
fn process_children_are_stopped_with_the_daemon() {
    let ws = Workspace::with_config(
        r#"state_dir: state
api:
  listen: 127.0.0.1:0
sources:
  - type: process
    name: follower
    command: ["sh", "-c", "echo \"ERROR [PACT:proc:live] pid $$\"; sleep 1000 & wait"]
  - type: process
    name: once
    command: ["sh", "-c", "echo 'ERROR [PACT:proc:once] bye'"]
    restart: never
"#,
    );
    let mut d = ws.spawn(&["watch"]);
    let info = d.ready();
    let c = http();
    let url = info.api_url("/status");
    let states = eventually(Duration::from_secs(20), || {
        let f = process_status(&c, &url, "follower")?;
        let o = process_status(&c, &url, "once")?;
        (f["state"] == "running"
            && o["state"] == "exited"
            && key_count(&ws, "PACT:proc:live") == 1
            && key_count(&ws, "PACT:proc:once") == 1)
            .then_some((f, o))
    });
    let (f, o) = states.unwrap_or_else(|| panic!("states:\n{}", d.log_text()));
    assert_eq!(o["last_exit"], "exit 0");
    assert_eq!(o["restarts"], 0);
    let pid = f["pid"].as_u64().unwrap() as i32;
    // Its own group: the daemon's group is not the child's.
    let pgid = rustix::process::getpgid(rustix::process::Pid::from_raw(pid)).unwrap();
    assert_eq!(pgid.as_raw_nonzero().get(), pid);
    let status = d.term(Duration::from_secs(15));
    assert!(status.success(), "{status}");
    // The child and its own child (`sleep`) are gone.
    let gone = eventually(Duration::from_secs(5), || {
        (live_in_group(pid) == 0).then_some(())
    });
    assert!(gone.is_some(), "the child's group outlived the daemon");
}

/// `type: stdin` counts what is piped into `watch`; the reference's `type: stdout` is the
/// same, with a deprecation note.
#[test]
fn stdin_source_reads_what_is_piped_into_watch() {
    for (kind, note) in [("stdin", false), ("stdout", true)] {
        let ws = Workspace::with_config(&format!("state_dir: state\nsources:\n  - type: {kind}\n"));
        let log = ws.path().join("daemon.log");
        let mut child = KillOnDrop(
            Command::new(BIN)
                .current_dir(ws.path())
                .env_remove("SENTINEL_CONFIG")
                .env("HOME", ws.path())
                .args(["watch", "--no-api"])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap(),
        );
        let child = &mut child.0;
        {
            let mut stdin = child.stdin.take().unwrap();
            for i in 0..50 {
                writeln!(stdin, "ERROR [PACT:pipe:in] line {i}").unwrap();
                writeln!(stdin, "INFO fine {i}").unwrap();
            }
            write!(stdin, "ERROR [PACT:pipe:in] last, unterminated").unwrap();
        }
        let counted = eventually(Duration::from_secs(20), || {
            (key_count(&ws, "PACT:pipe:in") == 51).then_some(())
        });
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            counted.is_some(),
            "{kind}: {}\n{text}",
            key_count(&ws, "PACT:pipe:in")
        );
        assert_eq!(
            text.contains("`type: stdout` is deprecated"),
            note,
            "{kind}: {text}"
        );
        let pid = rustix::process::Pid::from_child(child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "{kind}: {status}\n{text}");
        let totals = ws.store().unwrap().totals().unwrap();
        assert_eq!(totals["lines"], 101, "{kind}");
    }
}

/// Processes of process group `pgid` that are alive (zombies waiting for a reaper that is
/// not there, in a container, do not count).
fn live_in_group(pgid: i32) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            // pid (comm) state ppid pgrp ...: comm may hold spaces; split after the `)`.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            f.len() > 2 && f[0] != "Z" && f[2].parse::<i32>() == Ok(pgid)
        })
        .count()
}

/// A child killed (and reaped) if the test fails before it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
