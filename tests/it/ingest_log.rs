//! A torn or corrupt ingest log between runs (issue 15): acknowledged webhook events are
//! logged, the daemon is killed before they reach the store, the log is damaged, and the
//! restart must cut a torn tail (logged) or, for corruption in the middle, apply the valid
//! prefix, name the segment and offset, and keep the rest aside.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::{Workspace, eventually, http};

const CONFIG: &str = "state_dir: state\napi:\n  listen: 127.0.0.1:0\nsources:\n  - type: webhook\n    name: hook\n    port: 0\n";
/// Logged events wait a minute for the store: the kill comes before their commit.
const SLOW: [(&str, &str); 1] = [("SENTINEL_EVENT_COMMIT_INTERVAL_MS", "60000")];

/// Posts three requests (one event each, `PACT:wal:m0` … `m2`), each acknowledged before
/// the next (one log record each), then kill -9. Returns the one segment and the offsets
/// where its records start.
fn three_logged_records(ws: &Workspace) -> (PathBuf, Vec<usize>) {
    let mut d = ws.spawn_env(&["watch"], &SLOW);
    let url = d.ready().webhook_url("hook");
    let c = http();
    for i in 0..3 {
        let r = c
            .post(&url)
            .header("content-type", "application/json")
            .body(format!("{{\"error\":\"ERROR [PACT:wal:m{i}] logged\"}}"))
            .send()
            .expect("POST");
        assert_eq!(r.status().as_u16(), 200);
    }
    d.kill9();
    let wal = ws.path().join("state/sentinel.wal");
    let segs: Vec<PathBuf> = std::fs::read_dir(&wal)
        .expect("ingest log")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    assert_eq!(segs.len(), 1, "{segs:?}");
    let data = std::fs::read(&segs[0]).expect("segment");
    let mut starts = Vec::new();
    let mut at = 0;
    while at + 4 <= data.len() {
        starts.push(at);
        let len = u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes")) as usize;
        at += 8 + len;
    }
    assert_eq!(at, data.len(), "whole records");
    assert_eq!(starts.len(), 3, "one record per request");
    (segs[0].clone(), starts)
}

fn counts(ws: &Workspace) -> Vec<(String, u64)> {
    ws.store()
        .and_then(|s| s.key_counts().ok())
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k.starts_with("PACT:wal:"))
        .collect()
}

/// Restarts, waits until `n` keys are counted, stops; returns the log.
fn restart_until(ws: &Workspace, n: usize) -> String {
    let mut d = ws.spawn_env(&["watch"], &SLOW);
    d.ready();
    let got = eventually(Duration::from_secs(20), || {
        (counts(ws).len() >= n).then_some(())
    });
    let log = d.log_text();
    assert!(d.term(Duration::from_secs(10)).success(), "{log}");
    assert!(got.is_some(), "{n} keys not counted:\n{log}");
    log
}

fn key(i: usize) -> (String, u64) {
    (format!("PACT:wal:m{i}"), 1)
}

#[test]
fn a_torn_tail_is_cut_logged_and_every_acknowledged_event_kept() {
    let ws = Workspace::with_config(CONFIG);
    let (seg, _) = three_logged_records(&ws);
    let intact = std::fs::metadata(&seg).expect("stat").len();
    // A crash mid-append: a header promising 200 bytes, and 30 of them.
    let mut torn = std::fs::read(&seg).expect("read");
    torn.extend_from_slice(&200u32.to_le_bytes());
    torn.extend_from_slice(&[7u8; 34]);
    std::fs::write(&seg, &torn).expect("write");
    let log = restart_until(&ws, 3);
    assert_eq!(counts(&ws), [key(0), key(1), key(2)]);
    assert!(log.contains("torn record"), "{log}");
    assert!(log.contains(&format!("offset={intact}")), "{log}");
    assert!(log.contains(&seg.display().to_string()), "{log}");
    assert!(!log.contains("corrupt"), "{log}");
}

#[test]
fn corruption_in_the_middle_applies_the_prefix_and_keeps_the_rest_aside() {
    let ws = Workspace::with_config(CONFIG);
    let (seg, starts) = three_logged_records(&ws);
    let mut bad = std::fs::read(&seg).expect("read");
    // A flipped bit in the second record's body.
    bad[starts[1] + 20] ^= 0x04;
    std::fs::write(&seg, &bad).expect("write");
    let log = restart_until(&ws, 1);
    assert_eq!(counts(&ws), [key(0)], "{log}");
    assert!(log.contains("ERROR"), "{log}");
    assert!(log.contains("ingest log is corrupt"), "{log}");
    assert!(log.contains(&format!("offset={}", starts[1])), "{log}");
    assert!(log.contains(&seg.display().to_string()), "{log}");
    let aside = Path::new(&format!("{}.corrupt-at-{}", seg.display(), starts[1])).to_path_buf();
    assert_eq!(
        std::fs::read(&aside).expect("kept aside"),
        &bad[starts[1]..],
        "the rest, as it was"
    );
}
