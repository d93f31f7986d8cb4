//! The store's lifecycle: retention under a simulated month of churn (the clock injected
//! through the store's `now` arguments), what retention never removes, `sentinel gc`, the
//! daemon's retention runs in `/metrics` and `/status`, and a backup taken while a webhook
//! is flooded, read with `--state` and restored.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use sentinel::attribute::{AttributionStatus, Severity};
use sentinel::scan::Fingerprint;
use sentinel::store::retention::RetentionPolicy;
use sentinel::store::space::Compacted;
use sentinel::store::{
    EventKind, FixResult, FixStatus, IncidentDelta, IncidentStatus, IngestBatch, Store,
};
use serde_json::Value;

use crate::harness::{Workspace, eventually, http, stderr, stdout};

const MINUTE: i64 = 60;
const DAY: i64 = 86_400;

fn at(t0: Timestamp, secs: i64) -> Timestamp {
    t0 + SignedDuration::from_secs(secs)
}

/// One batch: `fps` new or repeated lines, 2 lines each, keyed by `PACT:churnN:get`.
fn batch(fps: &[u64], expect: &mut BTreeMap<String, u64>) -> IngestBatch {
    let mut b = IngestBatch::new();
    for &fp in fps {
        let line = format!("ERROR PACT:churn{}:get failed {fp:x}", fp % 7);
        b.incidents.insert(
            Fingerprint(fp),
            IncidentDelta::new(
                Fingerprint(fp),
                2,
                &line,
                AttributionStatus::Unregistered,
                Severity::Medium,
            ),
        );
        let key = format!("PACT:churn{}:get", fp % 7);
        *b.key_counts.entry(key.clone()).or_default() += 2;
        *expect.entry(key).or_default() += 2;
    }
    b.totals.insert("error_lines", 2 * fps.len() as u64);
    *expect.entry("error_lines".into()).or_default() += 2 * fps.len() as u64;
    b
}

fn id_of(store: &Store, fp: u64) -> String {
    // A write transaction only to look up by fingerprint: dropped, never committed.
    let mut txn = store.begin_write().unwrap();
    txn.incident_by_fingerprint(fp)
        .unwrap()
        .unwrap_or_else(|| panic!("no incident {fp:x}"))
        .id
}

/// `k` in letters (`a`, `b`, ... `ba` ...): digits would be normalised away.
fn letters(mut k: u64) -> String {
    let mut out = Vec::new();
    loop {
        out.push(b'a' + (k % 26) as u8);
        k /= 26;
        if k == 0 {
            break;
        }
    }
    String::from_utf8(out).unwrap()
}

fn fix(id: &str, incident: &str, status: FixStatus, started: Timestamp, spend: u64) -> FixResult {
    let mut f = FixResult::default();
    f.id = id.into();
    f.incident_id = incident.into();
    f.status = status;
    f.started_at = Some(started);
    f.spend_micro_usd = spend;
    f
}

#[test]
fn a_simulated_month_of_churn_keeps_the_store_bounded_and_every_total_exact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sentinel.redb");
    let store = Store::open(&path).unwrap();
    let t0: Timestamp = "2026-03-01T00:00:00Z".parse().unwrap();
    let mut expect: BTreeMap<String, u64> = BTreeMap::new();
    // Four incidents retention must never remove, first and last seen on day 0: one open,
    // one with a fix awaiting approval, one under regression watch, one with a queued job.
    let keep: [u64; 4] = [0xA1, 0xA2, 0xA3, 0xA4];
    store.apply(&batch(&keep, &mut expect), t0).unwrap();
    let ids: Vec<String> = keep.iter().map(|&fp| id_of(&store, fp)).collect();
    let mut txn = store.begin_write().unwrap();
    let mut open = txn.incident(&ids[0]).unwrap().unwrap();
    open.status = IncidentStatus::Detected;
    txn.update_incident(&open, EventKind::IncidentUpdated, t0)
        .unwrap();
    let waiting = fix("a2a2a2a2a2a2", &ids[1], FixStatus::AwaitingApproval, t0, 0);
    txn.finish_fix(None, &waiting, "fix_ready_for_review", t0)
        .unwrap();
    let mut merged = fix("a3a3a3a3a3a3", &ids[2], FixStatus::Success, t0, 0);
    merged.merged = true;
    txn.finish_fix(None, &merged, "auto_fixed", t0).unwrap();
    let queued = txn.incident(&ids[3]).unwrap().unwrap();
    txn.queue_job(&queued, "", t0).unwrap();
    txn.commit().unwrap();

    // A month: every 15 simulated minutes a batch with 15 new distinct incidents (one a
    // minute); every hour a fix that resolves one of them and its spend; retention every
    // hour with 2 days for incidents and fixes.
    let policy = RetentionPolicy::new(Some(2), Some(2), 500).with_events_days(Some(2));
    let mut next_fp = 0x1_0000u64;
    let (mut fixes, mut succeeded, mut spend) = (2u64, 1u64, 0u64);
    let mut daily_bytes = Vec::new();
    let mut removed = 0u64;
    let steps = 30 * 24 * 4;
    for step in 1..=steps {
        let now = at(t0, step * 15 * MINUTE);
        let fps: Vec<u64> = (0..15).map(|i| next_fp + i).collect();
        next_fp += 15;
        store.apply(&batch(&fps, &mut expect), now).unwrap();
        if step % 4 == 0 {
            let mut txn = store.begin_write().unwrap();
            let id = txn.incident_by_fingerprint(fps[0]).unwrap().unwrap().id;
            let f = fix(
                &format!("f{step:011x}"),
                &id,
                FixStatus::Success,
                now,
                1_000 + step as u64,
            );
            txn.record_spend(&id, 600 + step as u64, now).unwrap();
            txn.record_spend(&id, 400, now).unwrap();
            txn.finish_fix(None, &f, "fix_ready_for_review", now)
                .unwrap();
            txn.commit().unwrap();
            fixes += 1;
            succeeded += 1;
            spend += 1_000 + step as u64;
            let report = store.retain(&policy, now, false).unwrap();
            removed += report.incidents;
        }
        if step % (24 * 4) == 0 {
            daily_bytes.push(std::fs::metadata(&path).unwrap().len());
        }
    }
    let end = at(t0, steps * 15 * MINUTE);
    eprintln!("file bytes at the end of each simulated day: {daily_bytes:?}");

    // Bounded: 2 days of incidents, fixes and events live, freed pages reused. The file
    // grows in doubling steps while the first days fill it; after day 7 it grows at most
    // one more step (fragmentation), and not at all over the last 10 days.
    let week = daily_bytes[6];
    let most = *daily_bytes[7..].iter().max().unwrap();
    assert!(
        most <= 2 * week,
        "the file grew from {week} (day 7) to {most}: {daily_bytes:?}"
    );
    assert_eq!(
        daily_bytes[29], daily_bytes[19],
        "the file still grows: {daily_bytes:?}"
    );
    // About 2 days of incidents are left, plus the four kept ones.
    let live = store.incident_count().unwrap();
    assert!(live <= 2 * 24 * 60 + 60 + 4, "{live} incidents left");
    assert_eq!(removed + live, 4 + 15 * steps as u64);
    for id in &ids {
        assert!(store.incident(id).unwrap().is_some(), "{id} was removed");
    }
    // Every per-key counter and total is exact, and so are the fix totals and the spend.
    let mut counters = store.key_counts().unwrap();
    counters.extend(store.totals().unwrap());
    assert_eq!(counters, expect);
    let (attempted, ok, _, micro) = store.fix_totals().unwrap();
    assert_eq!((attempted, ok, micro), (fixes, succeeded, spend));
    let logged: u64 = store
        .spend_since(Timestamp::UNIX_EPOCH)
        .unwrap()
        .iter()
        .map(|(_, _, m)| m)
        .sum();
    let recorded: u64 = (1..=steps as u64)
        .filter(|s| s % 4 == 0)
        .map(|s| 1_000 + s)
        .sum();
    assert_eq!(logged, recorded);
    assert_eq!(
        store.incident_tallies(true).unwrap(),
        store.recount_tallies().unwrap()
    );

    // Retention with a longer horizon removed little since; a shorter one frees most of the
    // file, and compaction gives it back.
    let before = store.file_bytes();
    let short = RetentionPolicy::new(Some(1), Some(1), 500).with_events_days(Some(1));
    store.retain(&short, at(end, 3 * DAY), false).unwrap();
    // The spend log beyond 31 days (here: its first two days) is folded, every micro-USD kept.
    let log = store.spend_since(Timestamp::UNIX_EPOCH).unwrap();
    assert!(log.len() < 2 * 29 * 24 + 10, "{} spend rows", log.len());
    assert_eq!(log.iter().map(|(_, _, m)| m).sum::<u64>(), recorded);
    let space = store.measure_space().unwrap();
    assert!(space.free_bytes > 0, "{space:?}");
    match store.compact().unwrap() {
        Compacted::Done { before: b, after } => {
            eprintln!("compacted {b} -> {after} bytes (file was {before} before the last run)");
            assert!(
                after < b,
                "compaction did not shrink the file: {b} -> {after}"
            );
        }
        other => panic!("nothing else uses the store: {other:?}"),
    }
    // Still whole after compaction.
    for id in &ids {
        assert!(store.incident(id).unwrap().is_some());
    }
    let mut counters = store.key_counts().unwrap();
    counters.extend(store.totals().unwrap());
    assert_eq!(counters, expect);
}

/// Writes a store with `n` escalated incidents last seen 100 days ago and one recent one.
fn old_store(ws: &Workspace, n: u64) -> Vec<String> {
    std::fs::create_dir_all(ws.path().join("state/monitoring/reports")).unwrap();
    let store = Store::open(&ws.path().join("state/sentinel.redb")).unwrap();
    let mut expect = BTreeMap::new();
    let old = at(Timestamp::now(), -100 * DAY);
    let fps: Vec<u64> = (1..=n).collect();
    store.apply(&batch(&fps, &mut expect), old).unwrap();
    store
        .apply(&batch(&[0xFFFF], &mut expect), Timestamp::now())
        .unwrap();
    let ids: Vec<String> = fps.iter().map(|&fp| id_of(&store, fp)).collect();
    for id in &ids {
        ws.file(
            &format!("state/monitoring/reports/{id}.md"),
            "# postmortem\n",
        );
    }
    ids
}

#[test]
fn gc_prints_what_it_removes_and_a_dry_run_changes_nothing() {
    let ws = Workspace::with_config("state_dir: state\nretention:\n  incidents_days: 30\n");
    let ids = old_store(&ws, 5);
    let dry = ws.run(&["gc", "--dry-run"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    let text = stdout(&dry);
    for id in &ids {
        assert!(
            text.contains(&format!("would remove incident {id}")),
            "{text}"
        );
    }
    assert!(text.contains("would remove 5 incidents"), "{text}");
    assert_eq!(ws.store().unwrap().incident_count().unwrap(), 6);
    let out = ws.run(&["gc", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["removed"]["incidents"], 5, "{v}");
    assert_eq!(ws.store().unwrap().incident_count().unwrap(), 1);
    for id in &ids {
        assert!(
            !ws.path()
                .join(format!("state/monitoring/reports/{id}.md"))
                .exists()
        );
    }
    // A bad key is refused with its file, line and name.
    let bad = Workspace::with_config("state_dir: state\nretention:\n  compact_window: noon\n");
    let out = bad.run(&["gc"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("retention.compact_window") && err.contains(":3:"),
        "{err}"
    );
}

#[test]
fn the_daemon_applies_retention_and_shows_it_in_metrics_and_status() {
    let ws = Workspace::with_config(
        "state_dir: state\napi:\n  listen: 127.0.0.1:0\nretention:\n  incidents_days: 30\n  \
         interval_seconds: 1\nsources:\n  - type: webhook\n    name: hook\n    port: 0\n",
    );
    let ids = old_store(&ws, 7);
    let mut d = ws.spawn(&["watch"]);
    let info = d.ready();
    let c = http();
    let metrics = eventually(Duration::from_secs(20), || {
        let text = c.get(info.api_url("/metrics")).send().ok()?.text().ok()?;
        // The total: the next run (a second later) removes nothing and says so.
        text.contains("sentinel_retention_removed_incidents_total 7")
            .then_some(text)
    })
    .unwrap_or_else(|| panic!("no retention run in /metrics:\n{}", d.log_text()));
    assert!(metrics.contains("sentinel_store_bytes "), "{metrics}");
    assert!(metrics.contains("sentinel_store_free_bytes "), "{metrics}");
    assert!(
        metrics.contains("sentinel_retention_last_run_timestamp_seconds "),
        "{metrics}"
    );
    let status: Value = c
        .get(info.api_url("/status"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let storage = &status["storage"];
    assert!(storage["store_bytes"].as_u64().unwrap() > 0, "{status}");
    assert_eq!(storage["incidents_removed_total"], 7, "{status}");
    assert!(storage["last_retention"]["at"].is_string(), "{status}");
    assert_eq!(status["incidents"], 1, "{status}");
    for id in &ids {
        let r = c
            .get(info.api_url(&format!("/incidents/{id}")))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 404);
    }
    // `gc` and `restore` are refused while the daemon has the store.
    let out = ws.run(&["gc"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("in use"), "{}", stderr(&out));
    assert!(d.term(Duration::from_secs(10)).success());
}

#[test]
fn a_backup_taken_during_a_webhook_flood_is_consistent_readable_and_restores() {
    let ws = Workspace::with_config(
        "state_dir: state\napi:\n  listen: 127.0.0.1:0\nsources:\n  - type: webhook\n    \
         name: hook\n    port: 0\n",
    );
    let mut d = ws.spawn(&["watch"]);
    let info = d.ready();
    let url = info.webhook_url("hook");
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flood = {
        let (stop, sent, url) = (stop.clone(), sent.clone(), url.clone());
        std::thread::spawn(move || {
            let c = http();
            let mut n = 0u64;
            while !stop.load(Ordering::Acquire) {
                let body: String = (0..50)
                    .map(|i| {
                        let k = n + i;
                        format!(
                            "{{\"error\":\"ERROR [PACT:flood{}:m] distinct {}\"}}\n",
                            k % 5,
                            letters(k)
                        )
                    })
                    .collect();
                let r = c
                    .post(&url)
                    .header("content-type", "application/x-ndjson")
                    .body(body)
                    .send();
                if r.is_ok_and(|r| r.status().is_success()) {
                    n += 50;
                    sent.store(n, Ordering::Release);
                }
            }
        })
    };
    // Mid-flood: some events are in the store.
    eventually(Duration::from_secs(20), || {
        let s = ws.store()?;
        (s.totals().ok()?.get("error_lines").copied().unwrap_or(0) > 500).then_some(())
    })
    .expect("the flood reaches the store");
    let out = ws.run(&["backup", "bk", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    // The flood goes on after the backup's transaction.
    let after = sent.load(Ordering::Acquire);
    eventually(Duration::from_secs(20), || {
        (sent.load(Ordering::Acquire) > after + 500).then_some(())
    })
    .expect("the flood goes on");
    stop.store(true, Ordering::Release);
    flood.join().unwrap();

    // The backup opens read-only and agrees with itself as one transaction: every line
    // counted once in its incidents, its key counters and its totals; tallies exact.
    let backup = Store::open_read_only(&ws.path().join("bk/sentinel.redb"))
        .unwrap()
        .unwrap();
    let incidents = backup.recent_incidents(usize::MAX).unwrap();
    let lines: u64 = incidents.iter().map(|i| i.count).sum();
    let totals = backup.totals().unwrap();
    let keys: u64 = backup.key_counts().unwrap().values().sum();
    assert!(lines > 0);
    assert_eq!(totals["error_lines"], lines);
    assert_eq!(keys, lines);
    assert_eq!(
        backup.incident_tallies(true).unwrap(),
        backup.recount_tallies().unwrap()
    );
    assert_eq!(summary["tables"]["incident_seqs"], incidents.len() as u64);
    // ... and with the store as of its transaction: a prefix of what the store holds now.
    let live = eventually(Duration::from_secs(20), || {
        let s = ws.store()?;
        (s.totals().ok()?.get("error_lines").copied() == Some(sent.load(Ordering::Acquire)))
            .then_some(s)
    })
    .expect("every acknowledged line reaches the store");
    assert!(live.totals().unwrap()["error_lines"] > lines);
    for inc in &incidents {
        let now = live.incident(&inc.id).unwrap().expect("in the store");
        assert!(now.count >= inc.count && now.normalized == inc.normalized);
    }
    drop(live);

    // `report`, `status` read the backup with --state.
    let out = ws.run(&["report", "--state", "bk", "--json", "--limit", "100000"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), incidents.len());
    let out = ws.run(&["status", "--state", "bk", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["storage"]["store_bytes"].as_u64().unwrap() > 0, "{v}");

    // `serve --state` answers from the backup, read-only (nothing written into it).
    let port = crate::harness::free_port();
    let port_arg = port.to_string();
    let server = ws.spawn(&["serve", "--state", "bk", "--port", &port_arg]);
    let c = http();
    let status: Value = eventually(Duration::from_secs(20), || {
        c.get(format!("http://127.0.0.1:{port}/status"))
            .send()
            .ok()?
            .json()
            .ok()
    })
    .unwrap_or_else(|| panic!("serve --state did not answer:\n{}", server.log_text()));
    assert_eq!(status["incidents"], incidents.len() as u64, "{status}");
    assert!(!ws.path().join("bk/daemon.json").exists());
    assert!(server.term(Duration::from_secs(10)).success());

    // Restore is refused while the daemon runs, and round-trips once it stopped.
    let out = ws.run(&["restore", "bk"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("in use"), "{}", stderr(&out));
    assert!(d.term(Duration::from_secs(20)).success());
    let out = ws.run(&["restore", "bk"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(ws.path().join("state/sentinel.redb.pre-restore").exists());
    let restored = ws.store().unwrap();
    assert_eq!(restored.totals().unwrap(), totals);
    assert_eq!(restored.key_counts().unwrap(), backup.key_counts().unwrap());
    assert_eq!(
        restored.recent_incidents(usize::MAX).unwrap(),
        backup.recent_incidents(usize::MAX).unwrap()
    );
}

/// `retention.compact_window` as `"HH:MM-HH:MM"`, starting `from` minutes after now (UTC) and
/// lasting `len` minutes (wrapping past midnight as the config allows).
fn window_from_now(from: i64, len: i64) -> String {
    let now = Timestamp::now().as_second().rem_euclid(DAY) / MINUTE;
    let hm = |m: i64| {
        let m = m.rem_euclid(1440);
        format!("{:02}:{:02}", m / 60, m % 60)
    };
    format!("{}-{}", hm(now + from), hm(now + from + len))
}

/// `/status`'s `storage` object.
fn storage(c: &reqwest::blocking::Client, info: &crate::harness::DaemonInfo) -> Option<Value> {
    let status: Value = c.get(info.api_url("/status")).send().ok()?.json().ok()?;
    Some(status["storage"].clone())
}

#[test]
fn the_daemon_compacts_only_inside_its_window_and_keeps_ingesting() {
    const OLD: u64 = 5_000;
    let config = |window: &str| {
        format!(
            "state_dir: state\napi:\n  listen: 127.0.0.1:0\nretention:\n  incidents_days: 30\n  \
             interval_seconds: 1\n  compact_window: \"{window}\"\n  compact_idle_seconds: 1\n  \
             compact_free_percent: 25\nsources:\n  - type: webhook\n    name: hook\n    port: 0\n"
        )
    };
    // Outside the window: retention empties most of the file, but nothing compacts it.
    let ws = Workspace::with_config(&config(&window_from_now(120, 60)));
    let redb = ws.path().join("state/sentinel.redb");
    {
        std::fs::create_dir_all(ws.path().join("state")).unwrap();
        let store = Store::open(&redb).unwrap();
        let mut expect = BTreeMap::new();
        let old = at(Timestamp::now(), -100 * DAY);
        for chunk in (1..=OLD).collect::<Vec<_>>().chunks(1_000) {
            store.apply(&batch(chunk, &mut expect), old).unwrap();
        }
    }
    let full = std::fs::metadata(&redb).unwrap().len();
    let c = http();
    let mut d = ws.spawn(&["watch"]);
    let info = d.ready();
    let first = eventually(Duration::from_secs(120), || {
        let s = storage(&c, &info)?;
        (s["incidents_removed_total"] == OLD).then(|| s["last_retention"]["at"].clone())
    })
    .unwrap_or_else(|| panic!("no retention run:\n{}", d.log_text()));
    // Two more retention runs, each followed by the compaction check of the same tick.
    let mut seen = first;
    for _ in 0..2 {
        seen = eventually(Duration::from_secs(20), || {
            let at = storage(&c, &info)?["last_retention"]["at"].clone();
            (at != seen).then_some(at)
        })
        .expect("retention runs every second");
    }
    let s = storage(&c, &info).unwrap();
    assert!(
        s["compacted_at"].is_null(),
        "compacted outside its window: {s}"
    );
    assert!(
        s["store_free_bytes"].as_u64().unwrap() * 100 >= 25 * s["store_bytes"].as_u64().unwrap(),
        "retention should have freed most of the file: {s}"
    );
    assert!(d.term(Duration::from_secs(10)).success());
    // Removing rows writes pages too (copy on write): the file has not shrunk, it grew.
    let full = std::fs::metadata(&redb).unwrap().len().max(full);

    // Inside the window and idle: the daemon compacts the file, which shrinks on disk, and
    // goes on ingesting afterwards.
    ws.file("sentinel.yaml", config(&window_from_now(-1, 180)));
    let mut d = ws.spawn(&["watch"]);
    let info = d.ready();
    let s = eventually(Duration::from_secs(60), || {
        let s = storage(&c, &info)?;
        s["compacted_at"].is_string().then_some(s)
    })
    .unwrap_or_else(|| panic!("never compacted in its window:\n{}", d.log_text()));
    let after = std::fs::metadata(&redb).unwrap().len();
    assert!(
        after * 4 < full,
        "the file should shrink: {full} -> {after} bytes ({s})"
    );
    eventually(Duration::from_secs(10), || {
        d.log_text().contains("store compacted").then_some(())
    })
    .unwrap_or_else(|| panic!("no log line of the compaction:\n{}", d.log_text()));
    let url = info.webhook_url("hook");
    let r = c
        .post(&url)
        .header("content-type", "application/json")
        .body(r#"{"error":"ERROR [PACT:after_compaction:get] still ingesting"}"#)
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let found = eventually(Duration::from_secs(20), || {
        let list: Value = c.get(info.api_url("/incidents")).send().ok()?.json().ok()?;
        let text = list.to_string();
        text.contains("after_compaction").then_some(())
    });
    assert!(
        found.is_some(),
        "no incident after compaction:\n{}",
        d.log_text()
    );
    assert!(d.term(Duration::from_secs(10)).success());
}
