//! `sentinel watch` on files: exactly-once counting across kill -9, rotation, new files,
//! shutdown.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::{Rng, Workspace, eventually, seed};

const FILE_SOURCE: &str = "state_dir: state
max_line_bytes: 4096
sources:
  - type: file
    path: logs/*.log
";

fn append(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open for append")
}

fn key_counts(ws: &Workspace) -> BTreeMap<String, u64> {
    ws.store()
        .map(|s| s.key_counts().expect("key counts"))
        .unwrap_or_default()
}

/// The writer of the crash test: what it wrote, as the store must count it.
#[derive(Default)]
struct Truth {
    keys: BTreeMap<String, u64>,
    long_lines: u64,
}

#[test]
fn kill_9_at_random_moments_loses_and_duplicates_nothing() {
    let mut rng = Rng(seed("kill_9"));
    let ws = Workspace::with_config(FILE_SOURCE);
    std::fs::create_dir_all(ws.path().join("logs")).expect("mkdir");
    let paths: Vec<_> = (0..4)
        .map(|i| ws.path().join(format!("logs/app{i}.log")))
        .collect();
    for p in &paths {
        File::create(p).expect("create");
    }

    // The writer: 20 000 lines over four files, in bursts, while the daemon is killed.
    let writer_paths = paths.clone();
    let mut wrng = Rng(rng.next() | 1);
    let writer = std::thread::spawn(move || {
        let mut files: Vec<File> = writer_paths.iter().map(|p| append(p)).collect();
        let mut pending: Vec<Option<String>> = vec![None; files.len()];
        let mut truth = Truth::default();
        for seq in 0..20_000u64 {
            let f = wrng.below(files.len() as u64) as usize;
            if let Some(rest) = pending[f].take() {
                files[f].write_all(rest.as_bytes()).expect("write");
            }
            let roll = wrng.below(100);
            let line = if roll < 70 {
                format!("INFO request ok seq={seq}\n")
            } else if roll < 97 {
                let key = format!("PACT:comp{}:m{}", wrng.below(5), wrng.below(3));
                *truth.keys.entry(key.clone()).or_default() += 1;
                format!("2026-11-23T10:00:00Z ERROR [{key}] failed seq={seq}\n")
            } else {
                truth.long_lines += 1;
                format!(
                    "ERROR [PACT:long:x] {}\n",
                    "x".repeat(5000 + seq as usize % 7000)
                )
            };
            if wrng.below(20) == 0 {
                // Half now, the rest (with the newline) later: a line caught mid-write.
                let cut = line.len() / 2;
                files[f].write_all(&line.as_bytes()[..cut]).expect("write");
                pending[f] = Some(line[cut..].to_string());
            } else {
                files[f].write_all(line.as_bytes()).expect("write");
            }
            if seq % 100 == 99 {
                // Pacing the writer (spreads the appends over the crash rounds); not a wait.
                std::thread::sleep(Duration::from_millis(8));
            }
        }
        for (f, rest) in pending.iter_mut().enumerate() {
            if let Some(rest) = rest.take() {
                files[f].write_all(rest.as_bytes()).expect("write");
            }
        }
        truth
    });

    for round in 0..12 {
        let mut d = ws.spawn(&["watch", "--no-api"]);
        d.ready();
        // Not synchronisation: the random moment of the crash.
        std::thread::sleep(Duration::from_millis(rng.below(250) + 10));
        eprintln!("kill -9, round {round}");
        d.kill9();
    }
    let truth = writer.join().expect("writer");
    let expected_errors: u64 = truth.keys.values().sum();

    let mut d = ws.spawn(&["watch", "--no-api"]);
    d.ready();
    let done = eventually(Duration::from_secs(60), || {
        let counts = key_counts(&ws);
        let got: u64 = counts
            .iter()
            .filter(|(k, _)| k.starts_with("PACT:comp"))
            .map(|(_, v)| v)
            .sum();
        (got >= expected_errors).then_some(())
    });
    let log = d.log_text();
    let status = d.term(Duration::from_secs(5));
    assert!(status.success(), "exit {status}:\n{log}");
    assert!(done.is_some(), "not everything counted in 60 s:\n{log}");
    assert!(!log.contains("panicked"), "{log}");

    let store = ws.store().expect("store");
    let counts = store.key_counts().expect("key counts");
    let got: BTreeMap<String, u64> = counts
        .into_iter()
        .filter(|(k, _)| k.starts_with("PACT:comp"))
        .collect();
    assert_eq!(
        got, truth.keys,
        "per-key counts differ from the writer's truth"
    );
    // The incidents themselves, summed per key: `comp0` … `comp4` lines share their text
    // and differ only in the digit of the component id, and are never folded together.
    let mut per_incident_key: BTreeMap<String, u64> = BTreeMap::new();
    for inc in store.recent_incidents(100_000).expect("incidents") {
        if inc.pact_key.starts_with("PACT:comp") {
            assert_eq!(inc.component_id, inc.pact_key.split(':').nth(1).unwrap());
            *per_incident_key.entry(inc.pact_key.clone()).or_default() += inc.count;
        }
    }
    assert_eq!(
        per_incident_key, truth.keys,
        "incidents summed per key differ from the writer's truth"
    );
    let totals = store.totals().expect("totals");
    assert_eq!(totals.get("error_lines").copied(), Some(expected_errors));
    assert_eq!(totals.get("long_lines").copied(), Some(truth.long_lines));
    let sizes: u64 = paths
        .iter()
        .map(|p| std::fs::metadata(p).expect("stat").len())
        .sum();
    assert_eq!(
        totals.get("bytes").copied(),
        Some(sizes),
        "bytes read once each"
    );
    let positions = store.file_positions().expect("positions");
    for p in &paths {
        let len = std::fs::metadata(p).expect("stat").len();
        let pos = positions
            .values()
            .find(|pos| Path::new(&pos.path) == p)
            .expect("a position per file");
        assert_eq!(pos.offset, len, "{} read to its end", p.display());
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rotation {
    RenameCreate,
    DeleteRecreate,
    CopyTruncate,
    NewFiles,
}

/// Writes uniquely keyed error lines while rotating `app.log` every 300 lines; returns the
/// keys of lines written inside copytruncate's copy→truncate windows.
fn write_and_rotate(dir: &Path, mode: Rotation, lines: u64) -> Vec<String> {
    let app = dir.join("app.log");
    let mut out = append(&app);
    let mut window = Vec::new();
    let mut extra: Option<File> = None;
    let line = |seq: u64| format!("ERROR [PACT:rot:m{seq}] rotated seq={seq}\n");
    for seq in 0..lines {
        if seq > 0 && seq % 300 == 0 {
            let r = seq / 300;
            match mode {
                Rotation::RenameCreate => {
                    std::fs::rename(&app, dir.join(format!("app.log.{r}"))).expect("rename");
                    // A writer that has not reopened yet still writes to the old file.
                    out.write_all(b"INFO late line to the renamed file\n")
                        .expect("write");
                    out = append(&app);
                }
                Rotation::DeleteRecreate => {
                    std::fs::remove_file(&app).expect("delete");
                    out.write_all(b"INFO late line to the deleted file\n")
                        .expect("write");
                    out = append(&app);
                }
                Rotation::CopyTruncate => {
                    // Right after a write: the tailer has not read the last lines yet; the
                    // copy holds them, and they are read from it (the glob does not match
                    // `app.log.N`: the copy is found beside the truncated file).
                    std::fs::copy(&app, dir.join(format!("app.log.{r}"))).expect("copy");
                    // Lines between the copy and the truncate are in no file any more: lost
                    // by the rotation itself unless the tailer read them in time.
                    for w in 0..3 {
                        let s = 1_000_000 + r * 10 + w;
                        out.write_all(line(s).as_bytes()).expect("write");
                        window.push(format!("PACT:rot:m{s}"));
                    }
                    OpenOptions::new()
                        .write(true)
                        .open(&app)
                        .expect("open")
                        .set_len(0)
                        .expect("truncate");
                }
                Rotation::NewFiles => {
                    extra = Some(append(&dir.join(format!("new-{r}.log"))));
                }
            }
        }
        let target = match (&mut extra, seq % 2) {
            (Some(f), 1) => f,
            _ => &mut out,
        };
        target.write_all(line(seq).as_bytes()).expect("write");
        if seq % 50 == 49 {
            // Pacing the writer so rotations land mid-stream; not a wait.
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    window
}

fn rotation_case(mode: Rotation) {
    let ws = Workspace::with_config(FILE_SOURCE);
    let logs = ws.path().join("logs");
    std::fs::create_dir_all(&logs).expect("mkdir");
    File::create(logs.join("app.log")).expect("create");
    let mut d = ws.spawn(&["watch", "--no-api", "--rotate-wait-ms", "300"]);
    d.ready();
    let lines = 1500;
    let window = write_and_rotate(&logs, mode, lines);
    let expected: Vec<String> = (0..lines).map(|s| format!("PACT:rot:m{s}")).collect();
    let settled = eventually(Duration::from_secs(30), || {
        let c = key_counts(&ws);
        expected.iter().all(|k| c.contains_key(k)).then_some(())
    });
    let log = d.log_text();
    let status = d.term(Duration::from_secs(5));
    assert!(status.success(), "exit {status}:\n{log}");
    let counts = key_counts(&ws);
    let dups: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        dups.is_empty(),
        "{mode:?}: duplicated lines {dups:?}\n{log}"
    );
    let lost: Vec<_> = expected
        .iter()
        .filter(|k| !counts.contains_key(*k))
        .collect();
    assert!(
        lost.is_empty() && settled.is_some(),
        "{mode:?}: lost {} lines, e.g. {:?}\n{log}",
        lost.len(),
        lost.iter().take(5).collect::<Vec<_>>()
    );
    let window_lost = window.iter().filter(|k| !counts.contains_key(*k)).count();
    if mode == Rotation::CopyTruncate {
        // Every line written before a copy was counted once (above), read from the original
        // or from its copy; only those written between copy and truncate can be missing.
        eprintln!(
            "copytruncate: {window_lost} of {} lines written between copy and truncate lost",
            window.len()
        );
    }
}

#[test]
fn rotation_rename_and_create_loses_nothing() {
    rotation_case(Rotation::RenameCreate);
}

#[test]
fn rotation_delete_and_recreate_loses_nothing() {
    rotation_case(Rotation::DeleteRecreate);
}

#[test]
fn rotation_copytruncate_counts_every_copied_line_once() {
    rotation_case(Rotation::CopyTruncate);
}

#[test]
fn new_files_matched_by_the_glob_are_read_from_the_start() {
    rotation_case(Rotation::NewFiles);
}

#[test]
fn watch_without_sources_says_so_and_exits_1() {
    let ws = Workspace::new();
    let out = ws.run(&["watch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        crate::harness::stderr(&out)
            .contains("No sources configured in sentinel.yaml. Add sources and retry."),
        "{}",
        crate::harness::stderr(&out)
    );
}

#[test]
fn a_second_writer_is_told_a_daemon_owns_the_store() {
    let ws = Workspace::with_config(FILE_SOURCE);
    ws.file("logs/a.log", "ERROR [PACT:a:b] x\n");
    let mut d = ws.spawn(&["watch", "--no-api"]);
    d.ready();
    let out = ws.run(&["scan", "logs"]);
    assert_ne!(out.status.code(), Some(0));
    let err = crate::harness::stderr(&out);
    assert!(
        err.contains("in use by another Sentinel process (pid ") && err.contains("sentinel watch"),
        "{err}"
    );
    // Readers keep working while the daemon writes.
    let out = ws.run(&["report"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        crate::harness::stderr(&out)
    );
    let status = d.term(Duration::from_secs(5));
    assert!(status.success());
}

#[test]
fn start_at_end_skips_what_existed_at_the_first_start_only() {
    let ws = Workspace::with_config(
        "state_dir: state
sources:
  - type: file
    path: logs/*.log
    start_at: end
",
    );
    ws.file(
        "logs/old.log",
        "ERROR [PACT:old:x] before\nERROR [PACT:old:y] partial",
    );
    let mut d = ws.spawn(&["watch", "--no-api"]);
    d.ready();
    let mut old = append(&ws.path().join("logs/old.log"));
    old.write_all(b" completed\nERROR [PACT:old:z] after\n")
        .expect("write");
    ws.file(
        "logs/new.log",
        "ERROR [PACT:new:x] in a file created later\n",
    );
    let got = eventually(Duration::from_secs(20), || {
        let c = key_counts(&ws);
        (c.contains_key("PACT:old:z") && c.contains_key("PACT:new:x")).then_some(c)
    });
    assert!(d.term(Duration::from_secs(5)).success());
    let c = got.expect("lines appended after the start are counted");
    assert!(!c.contains_key("PACT:old:x"), "{c:?}");
    assert_eq!(
        c.get("PACT:old:y"),
        Some(&1),
        "the line being written is read whole"
    );
    // A restart is not a first start: lines written while stopped are read.
    old.write_all(b"ERROR [PACT:old:w] while stopped\n")
        .expect("write");
    let mut d = ws.spawn(&["watch", "--no-api"]);
    d.ready();
    let got = eventually(Duration::from_secs(20), || {
        key_counts(&ws).contains_key("PACT:old:w").then_some(())
    });
    assert!(d.term(Duration::from_secs(5)).success());
    assert!(got.is_some());
}

#[test]
fn metrics_follow_appended_lines_and_sigterm_exits_0() {
    let ws = Workspace::with_config(
        "state_dir: state
api:
  listen: 127.0.0.1:0
sources:
  - type: file
    path: logs/*.log
",
    );
    ws.file("logs/a.log", "");
    let mut d = ws.spawn(&["watch"]);
    let info = d.ready();
    let url = format!("http://{}/metrics", info.api.expect("api address"));
    let mut f = append(&ws.path().join("logs/a.log"));
    f.write_all(b"INFO fine\nERROR [PACT:auth:login] denied\n")
        .expect("write");
    let client = reqwest::blocking::Client::new();
    let text = eventually(Duration::from_secs(10), || {
        let r = client.get(&url).send().ok()?;
        let t = r.text().ok()?;
        t.contains("sentinel_error_lines_total{source=\"logs/*.log\"} 1")
            .then_some(t)
    });
    let status = d.term(Duration::from_secs(5));
    assert!(status.success(), "exit {status}");
    let text = text.expect("the error line shows in /metrics");
    assert!(
        text.contains("sentinel_lines_total{source=\"logs/*.log\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("sentinel_files_tracked{source=\"logs/*.log\"} 1"),
        "{text}"
    );
}

/// Runs a daemon on `ws` until `key` is counted (or 20 s pass), stops it, returns the counts.
fn watch_until(ws: &Workspace, key: &str) -> BTreeMap<String, u64> {
    let mut d = ws.spawn(&["watch", "--no-api"]);
    d.ready();
    let got = eventually(Duration::from_secs(20), || {
        let c = key_counts(ws);
        c.contains_key(key).then_some(c)
    });
    let log = d.log_text();
    assert!(d.term(Duration::from_secs(5)).success(), "{log}");
    got.unwrap_or_else(|| panic!("{key} not counted in 20 s:\n{log}"))
}

#[test]
fn jsonl_records_use_their_pact_key_field_when_the_message_has_none() {
    let ws = Workspace::with_config(
        "state_dir: state
sources:
  - type: file
    path: logs/*.jsonl
    format: jsonl
    error_patterns: ['\"level\":\"error\"']
",
    );
    ws.file(
        "logs/app.jsonl",
        concat!(
            r#"{"level":"error","msg":"card declined","pact_key":"pay:charge"}"#,
            "\n",
            r#"{"level":"error","msg":"[PACT:auth:login] denied","pact_key":"pay:charge"}"#,
            "\n",
            r#"{"level":"info","msg":"ok","pact_key":"PACT:pay:refund"}"#,
            "\n",
            r#"{"level":"error","msg":"no key at all"}"#,
            "\n",
            r#"{"level":"error","log_key":"ship:send","msg":"lost"}"#,
            "\n",
        ),
    );
    let c = watch_until(&ws, "PACT:ship:send");
    assert_eq!(c.get("PACT:pay:charge"), Some(&1), "{c:?}");
    assert_eq!(
        c.get("PACT:auth:login"),
        Some(&1),
        "the message's own key wins: {c:?}"
    );
    assert_eq!(c.get("PACT:pay:refund"), None, "not an error line: {c:?}");
    let totals = ws.store().expect("store").totals().expect("totals");
    assert_eq!(totals.get("error_lines"), Some(&4));
}

#[test]
fn symlinks_are_skipped_unless_followed() {
    for follow in [false, true] {
        let ws = Workspace::with_config(&format!(
            "state_dir: state
sources:
  - type: file
    path: logs/*.log
    follow_symlinks: {follow}
"
        ));
        ws.file("secret/keys.txt", "ERROR [PACT:secret:leak] do not read\n");
        ws.file("logs/real.log", "ERROR [PACT:real:x] fine\n");
        std::os::unix::fs::symlink(
            ws.path().join("secret/keys.txt"),
            ws.path().join("logs/link.log"),
        )
        .expect("symlink");
        let c = watch_until(&ws, "PACT:real:x");
        if follow {
            let c = if c.contains_key("PACT:secret:leak") {
                c
            } else {
                watch_until(&ws, "PACT:secret:leak")
            };
            assert_eq!(c.get("PACT:secret:leak"), Some(&1));
        } else {
            assert!(!c.contains_key("PACT:secret:leak"), "{c:?}");
        }
    }
}

/// The CPU time (utime + stime) process `pid` used so far, in seconds (`/proc/PID/stat`
/// fields 14 and 15, in USER_HZ ticks: 100 a second on every Linux ABI).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // The command name (field 2) may hold spaces; the fields after it follow the last ')'.
    let after = &stat[stat.rfind(')').expect("a stat line") + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields[i].parse::<u64>().expect("a tick count");
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// The idle window: long enough that a few 10 ms ticks of start-up noise do not matter.
const IDLE_WINDOW: Duration = Duration::from_secs(10);

/// The share of one core process `pid` used over `window` of wall time.
fn cpu_share(pid: u32, window: Duration) -> f64 {
    let (c0, t0) = (cpu_seconds(pid), Instant::now());
    // A measurement window over wall time, not a synchronisation: nothing here waits for
    // the daemon to do anything.
    std::thread::sleep(window);
    let (c1, t1) = (cpu_seconds(pid), Instant::now());
    (c1 - c0) / (t1 - t0).as_secs_f64()
}

/// The value of the series `series` (name and labels, as rendered) in a scrape.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Starts `watch` on `files` idle files (one error line each), waits until their first
/// reading is committed, measures the daemon's CPU share over [`IDLE_WINDOW`], then
/// appends an error line to one of them and requires it counted (durably, in the store)
/// within a second. With `webhook`, the API and an idle webhook source run too, and the
/// counters show the glob expanded at most once a second and files polled about once a
/// second.
fn idle_case(files: usize, webhook: bool, max_share: f64) {
    let (api, hook) = if webhook {
        (
            "api:\n  listen: 127.0.0.1:0\n",
            "  - type: webhook\n    name: hook\n    port: 0\n",
        )
    } else {
        ("", "")
    };
    let ws = Workspace::with_config(&format!(
        "state_dir: state\n{api}sources:\n  - type: file\n    path: logs/*.log\n{hook}"
    ));
    for i in 0..files {
        ws.file(
            &format!("logs/f{i:04}.log"),
            "INFO boot\nERROR [PACT:idle:boot] ready\n",
        );
    }
    let mut d = ws.spawn(if webhook {
        &["watch"][..]
    } else {
        &["watch", "--no-api"][..]
    });
    let info = d.ready();
    // Start-up has settled once the first reading of every file is committed.
    let settled = eventually(Duration::from_secs(60), || {
        (key_counts(&ws).get("PACT:idle:boot") == Some(&(files as u64))).then_some(())
    });
    assert!(
        settled.is_some(),
        "start-up not committed:\n{}",
        d.log_text()
    );
    // A fresh connection per scrape: the server closes a keep-alive connection idle for
    // its header-read timeout (10 s, the length of the window), and a pooled one reused at
    // that moment would race the close.
    let client = reqwest::blocking::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let scrape = || {
        let url = info.api_url("/metrics");
        client
            .get(url)
            .send()
            .and_then(|r| r.text())
            .expect("GET /metrics")
    };
    let before = webhook.then(scrape);
    let share = cpu_share(info.pid, IDLE_WINDOW);
    let after = webhook.then(scrape);
    eprintln!(
        "idle: {files} file(s), webhook {webhook}: {:.2}% of a core",
        share * 100.0
    );

    let path = ws.path().join(format!("logs/f{:04}.log", files / 2));
    let appended = Instant::now();
    append(&path)
        .write_all(b"ERROR [PACT:idle:append] after the idle window\n")
        .expect("append");
    let counted = eventually(Duration::from_secs(1), || {
        (key_counts(&ws).get("PACT:idle:append") == Some(&1)).then(|| appended.elapsed())
    });
    let log = d.log_text();
    let status = d.term(Duration::from_secs(5));
    assert!(status.success(), "exit {status}:\n{log}");
    assert!(
        share <= max_share,
        "an idle daemon on {files} file(s) used {:.2}% of a core over {IDLE_WINDOW:?} (at most \
         {:.0}%): something spins",
        share * 100.0,
        max_share * 100.0
    );
    let counted =
        counted.unwrap_or_else(|| panic!("the append was not counted within 1 s:\n{log}"));
    eprintln!("idle: append counted after {counted:?}");
    if let (Some(before), Some(after)) = (before, after) {
        let delta = |series: &str| {
            metric(&after, series).unwrap_or_else(|| panic!("{series} missing:\n{after}"))
                - metric(&before, series).unwrap_or(0.0)
        };
        let expansions = delta(r#"sentinel_glob_expansions_total{source="logs/*.log"}"#);
        let polls = delta(r#"sentinel_file_polls_total{source="logs/*.log"}"#);
        let secs = IDLE_WINDOW.as_secs_f64();
        // The window plus the two scrapes around it: at most once a second.
        assert!(
            expansions <= secs + 2.0,
            "{expansions} glob expansions in {secs} s"
        );
        // A file read in the last 10 s is polled every 250 ms, then every second: at most
        // four a second (a spin would be thousands).
        assert!(
            polls <= (4.0 * secs + 8.0) * files as f64,
            "{polls} polls of {files} idle file(s) in {secs} s"
        );
        assert!(
            metric(&after, r#"sentinel_inotify_events_total{kind="access"}"#).is_some(),
            "{after}"
        );
    }
}

#[test]
fn idle_watch_on_one_file_uses_at_most_2_percent_of_a_core() {
    idle_case(1, false, 0.02);
}

#[test]
fn idle_watch_on_1000_files_uses_at_most_5_percent_of_a_core() {
    idle_case(1000, false, 0.05);
}

#[test]
fn idle_watch_with_the_api_and_a_webhook_uses_at_most_2_percent_of_a_core() {
    idle_case(1, true, 0.02);
}
