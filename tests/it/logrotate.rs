//! Rotation by the real `logrotate` (issue 15), run as a child process again and again while
//! a writer appends uniquely keyed error lines and the daemon watches: every mode (create,
//! copytruncate, compress + delaycompress, dateext) under the globs `*.log` and `*.log*`
//! (the latter matches the rotated names: copies and compressed files must not be counted
//! again). The store's counts are compared with what the files hold, exactly.
//!
//! `logrotate` is Debian's package (`.ci/run` installs it); without it these tests say so
//! and pass.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::harness::{Workspace, eventually};

/// `logrotate`, on PATH or where Debian puts it.
fn logrotate_bin() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join("logrotate"))
        .find(|p| p.is_file())
}

fn skip_without_logrotate(test: &str) -> Option<PathBuf> {
    let bin = logrotate_bin();
    if bin.is_none() {
        eprintln!(
            "SKIPPED {test}: `logrotate` is not installed (apt-get install logrotate; .ci/run does)"
        );
    }
    bin
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Create,
    CopyTruncate,
    DelayCompress,
    DateExt,
}

impl Mode {
    fn directives(self) -> &'static str {
        match self {
            Mode::Create => "    create\n",
            Mode::CopyTruncate => "    copytruncate\n",
            Mode::DelayCompress => "    create\n    compress\n    delaycompress\n",
            // Seconds in the name: logrotate skips a rotation whose name exists.
            Mode::DateExt => "    create\n    dateext\n    dateformat -%Y%m%d-%H%M%S\n",
        }
    }

    /// How often logrotate runs (pacing, not synchronisation), and how many times.
    fn schedule(self) -> (Duration, usize) {
        match self {
            Mode::DateExt => (Duration::from_millis(1100), 5),
            _ => (Duration::from_millis(400), 10),
        }
    }
}

fn append(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open for append")
}

fn key(seq: u64) -> String {
    format!("PACT:lr:m{seq}")
}

/// Appends keyed error lines (and INFO lines between them) to `app` until `stop`; a
/// rename-based mode's writer reopens the path when it leads to another file (as an
/// application told by `postrotate` would). Returns how many error lines it wrote.
fn write_lines(app: PathBuf, stop: Arc<AtomicBool>, reopen: bool) -> u64 {
    let mut out = append(&app);
    let mut ino = out.metadata().expect("stat").ino();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..20 {
            let line = format!(
                "2026-12-06T12:00:00.{:06}Z ERROR [{}] request failed seq={seq}\n\
                 2026-12-06T12:00:00.{:06}Z INFO request ok after={seq}\n",
                seq % 1_000_000,
                key(seq),
                seq % 1_000_000
            );
            out.write_all(line.as_bytes()).expect("write");
            seq += 1;
        }
        // Only once logrotate created the new file: a writer that created it itself in the
        // moment between logrotate's rename and its create would have its lines replaced.
        if reopen
            && std::fs::metadata(&app).is_ok_and(|m| m.ino() != ino)
            && let Ok(f) = OpenOptions::new().append(true).open(&app)
        {
            out = f;
            ino = out.metadata().expect("stat").ino();
        }
        // Pacing the writer (about 5,000 error lines a second); not a wait.
        std::thread::sleep(Duration::from_millis(4));
    }
    seq
}

/// How many times each key occurs in complete lines of the files under `dir` (compressed
/// ones decompressed), and the files (name, size) that are not compressed.
fn keys_on_disk(dir: &Path) -> (BTreeMap<String, u64>, Vec<(PathBuf, u64)>) {
    let mut keys = BTreeMap::new();
    let mut plain = Vec::new();
    for e in std::fs::read_dir(dir).expect("list logs").flatten() {
        let path = e.path();
        let mut bytes = Vec::new();
        if path.extension().is_some_and(|x| x == "gz") {
            flate2::read::GzDecoder::new(File::open(&path).expect("open gz"))
                .read_to_end(&mut bytes)
                .expect("gunzip");
        } else {
            bytes = std::fs::read(&path).expect("read");
            plain.push((path, bytes.len() as u64));
        }
        let complete = bytes
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(&bytes[..0], |i| &bytes[..=i]);
        for line in String::from_utf8_lossy(complete).lines() {
            if let Some(rest) = line.split("[PACT:lr:").nth(1)
                && let Some(k) = rest.split(']').next()
            {
                *keys.entry(format!("PACT:lr:{k}")).or_default() += 1;
            }
        }
    }
    (keys, plain)
}

fn logrotate_case(mode: Mode, glob: &str, test: &str) {
    let Some(bin) = skip_without_logrotate(test) else {
        return;
    };
    let ws = Workspace::with_config(&format!(
        "state_dir: state\nmax_line_bytes: 4096\nsources:\n  - type: file\n    path: logs/{glob}\n"
    ));
    let logs = ws.path().join("logs");
    std::fs::create_dir_all(&logs).expect("mkdir");
    let app = logs.join("app.log");
    File::create(&app).expect("create");
    let conf = ws.path().join("logrotate.conf");
    std::fs::write(
        &conf,
        format!(
            "{} {{\n    rotate 1000\n    missingok\n{}}}\n",
            app.display(),
            mode.directives()
        ),
    )
    .expect("write logrotate.conf");
    let status = ws.path().join("logrotate.status");
    let mut d = ws.spawn(&["watch", "--no-api", "--rotate-wait-ms", "300"]);
    d.ready();

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (app, stop) = (app.clone(), stop.clone());
        std::thread::spawn(move || write_lines(app, stop, mode != Mode::CopyTruncate))
    };
    let (every, times) = mode.schedule();
    for _ in 0..times {
        // Pacing the rotations while the writer writes; not a wait.
        std::thread::sleep(every);
        let out = std::process::Command::new(&bin)
            .arg("-f")
            .arg("-s")
            .arg(&status)
            .arg(&conf)
            .output()
            .expect("run logrotate");
        assert!(
            out.status.success(),
            "logrotate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Pacing: the writer goes on a little past the last rotation; not a wait.
    std::thread::sleep(every / 2);
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().expect("writer");

    let (on_disk, plain) = keys_on_disk(&logs);
    let rotated = std::fs::read_dir(&logs).expect("list").count() - 1;
    assert!(
        rotated + 1 >= times,
        "{mode:?}: logrotate made {rotated} rotated files in {times} runs"
    );
    if mode == Mode::DelayCompress {
        let gz = std::fs::read_dir(&logs)
            .expect("list")
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "gz"))
            .count();
        assert!(gz + 2 >= times, "{mode:?}: only {gz} compressed files");
    }
    // Settled: every line a file holds is counted, and every file that is not empty has a
    // committed position at (or, for a copy of what was read already, past) its end.
    let settled = eventually(Duration::from_secs(60), || {
        let store = ws.store()?;
        let counts = store.key_counts().ok()?;
        let positions = store.file_positions().ok()?;
        let all_counted = on_disk.keys().all(|k| counts.contains_key(k));
        let all_read = plain.iter().all(|(p, size)| {
            let ino = std::fs::metadata(p).map_or(0, |m| m.ino());
            *size == 0
                || positions
                    .iter()
                    .any(|(k, pos)| k.ino == ino && pos.offset >= *size)
        });
        (all_counted && all_read).then_some(())
    });
    let log = d.log_text();
    let exit = d.term(Duration::from_secs(5));
    assert!(exit.success(), "exit {exit}:\n{log}");
    assert!(!log.contains("panicked"), "{log}");
    if settled.is_none() {
        let positions = ws
            .store()
            .and_then(|s| s.file_positions().ok())
            .unwrap_or_default();
        let files: Vec<String> = plain
            .iter()
            .map(|(p, size)| {
                let ino = std::fs::metadata(p).map_or(0, |m| m.ino());
                let pos = positions.iter().find(|(k, _)| k.ino == ino);
                format!(
                    "{} ino {ino} size {size}: {:?}",
                    p.display(),
                    pos.map(|(_, p)| p)
                )
            })
            .collect();
        panic!(
            "{mode:?} {glob}: not everything read within 60 s\n{}\n{log}",
            files.join("\n")
        );
    }

    let counts: BTreeMap<String, u64> = ws
        .store()
        .expect("store")
        .key_counts()
        .expect("key counts")
        .into_iter()
        .filter(|(k, _)| k.starts_with("PACT:lr:"))
        .collect();
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{mode:?} {glob}: {} lines counted more than once, e.g. {:?}\n{log}",
        twice.len(),
        twice.iter().take(5).collect::<Vec<_>>()
    );
    let duplicated_on_disk = on_disk.values().filter(|n| **n > 1).count();
    assert_eq!(duplicated_on_disk, 0, "{mode:?}: a line in two files");
    let missed: Vec<_> = on_disk
        .keys()
        .filter(|k| !counts.contains_key(*k))
        .collect();
    assert!(
        missed.is_empty(),
        "{mode:?} {glob}: {} lines the files hold never counted, e.g. {:?}\n{log}",
        missed.len(),
        missed.iter().take(5).collect::<Vec<_>>()
    );
    // Lines no file holds: logrotate's own copytruncate window (appended after its copy,
    // before its truncate). Counted (once) only if Sentinel read them from the original in
    // time; every other mode loses none.
    let gone: Vec<String> = (0..written)
        .map(key)
        .filter(|k| !on_disk.contains_key(k))
        .collect();
    let gone_counted = gone.iter().filter(|k| counts.contains_key(*k)).count();
    let unknown = counts
        .keys()
        .filter(|k| {
            k.strip_prefix("PACT:lr:m")
                .and_then(|n| n.parse::<u64>().ok())
                .is_none_or(|n| n >= written)
        })
        .count();
    assert_eq!(unknown, 0, "{mode:?}: counted keys nobody wrote");
    eprintln!(
        "{mode:?} {glob}: {written} error lines written, {} in files, all counted once; \
         {rotated} rotated files; {} lines in no file (logrotate's copy→truncate window), \
         {gone_counted} of them read in time",
        on_disk.len(),
        gone.len()
    );
    if mode != Mode::CopyTruncate {
        assert!(gone.is_empty(), "{mode:?}: logrotate lost lines?");
    }
}

#[test]
fn logrotate_create_with_glob_log() {
    logrotate_case(Mode::Create, "*.log", "logrotate_create_with_glob_log");
}

#[test]
fn logrotate_create_with_glob_log_star() {
    logrotate_case(
        Mode::Create,
        "*.log*",
        "logrotate_create_with_glob_log_star",
    );
}

#[test]
fn logrotate_copytruncate_with_glob_log() {
    logrotate_case(
        Mode::CopyTruncate,
        "*.log",
        "logrotate_copytruncate_with_glob_log",
    );
}

#[test]
fn logrotate_copytruncate_with_glob_log_star() {
    logrotate_case(
        Mode::CopyTruncate,
        "*.log*",
        "logrotate_copytruncate_with_glob_log_star",
    );
}

#[test]
fn logrotate_compress_delaycompress_with_glob_log() {
    logrotate_case(
        Mode::DelayCompress,
        "*.log",
        "logrotate_compress_delaycompress_with_glob_log",
    );
}

#[test]
fn logrotate_compress_delaycompress_with_glob_log_star() {
    logrotate_case(
        Mode::DelayCompress,
        "*.log*",
        "logrotate_compress_delaycompress_with_glob_log_star",
    );
}

#[test]
fn logrotate_dateext_with_glob_log() {
    logrotate_case(Mode::DateExt, "*.log", "logrotate_dateext_with_glob_log");
}

#[test]
fn logrotate_dateext_with_glob_log_star() {
    logrotate_case(
        Mode::DateExt,
        "*.log*",
        "logrotate_dateext_with_glob_log_star",
    );
}

/// `count` keyed error lines `PACT:cp:m{from}` … appended to `path`.
fn append_keyed(path: &Path, from: u64, count: u64) {
    let mut out = append(path);
    let mut text = String::new();
    for seq in from..from + count {
        text.push_str(&format!(
            "2026-12-06T12:00:00Z ERROR [PACT:cp:m{seq}] copied seq={seq}\n"
        ));
    }
    out.write_all(text.as_bytes()).expect("write");
}

fn cp_counts(ws: &Workspace) -> BTreeMap<String, u64> {
    ws.store()
        .and_then(|s| s.key_counts().ok())
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k.starts_with("PACT:cp:"))
        .collect()
}

/// Runs the daemon until the keys `PACT:cp:m0` … `m{n-1}` are counted and every file under
/// `logs` that is not empty has a committed position at (or past) its end; stops it.
fn watch_until_read(ws: &Workspace, n: u64) {
    let mut d = ws.spawn(&["watch", "--no-api", "--rotate-wait-ms", "300"]);
    d.ready();
    let logs = ws.path().join("logs");
    let done = eventually(Duration::from_secs(30), || {
        let counts = cp_counts(ws);
        let positions = ws.store()?.file_positions().ok()?;
        let all = (0..n).all(|s| counts.contains_key(&format!("PACT:cp:m{s}")));
        let read = std::fs::read_dir(&logs).ok()?.flatten().all(|e| {
            let m = e.metadata().expect("stat");
            m.len() == 0
                || positions
                    .iter()
                    .any(|(k, p)| k.ino == m.ino() && p.offset >= m.len())
        });
        (all && read).then_some(())
    });
    let log = d.log_text();
    let exit = d.term(Duration::from_secs(5));
    assert!(exit.success(), "exit {exit}:\n{log}");
    assert!(done.is_some(), "not everything read in 30 s:\n{log}");
}

/// copytruncate while Sentinel is stopped: the original is truncated below its committed
/// position, the copy (a new inode) holds what was committed and what was not read yet.
/// At the restart the copy continues the generation from the committed offset: nothing
/// counted twice, nothing lost.
fn copytruncate_while_stopped(glob: &str) {
    let ws = Workspace::with_config(&format!(
        "state_dir: state\nsources:\n  - type: file\n    path: logs/{glob}\n"
    ));
    let logs = ws.path().join("logs");
    std::fs::create_dir_all(&logs).expect("mkdir");
    let app = logs.join("app.log");
    append_keyed(&app, 0, 2000);
    watch_until_read(&ws, 2000);
    // Stopped: more lines, then logrotate's copytruncate, then lines to the new generation.
    append_keyed(&app, 2000, 500);
    std::fs::copy(&app, logs.join("app.log.1")).expect("copy");
    OpenOptions::new()
        .write(true)
        .open(&app)
        .expect("open")
        .set_len(0)
        .expect("truncate");
    append_keyed(&app, 2500, 300);
    watch_until_read(&ws, 2800);
    let counts = cp_counts(&ws);
    let wrong: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        wrong.is_empty(),
        "{glob}: counted more than once: {wrong:?}"
    );
    assert_eq!(counts.len(), 2800, "{glob}");
}

#[test]
fn copytruncate_while_stopped_continues_from_the_committed_offset_glob_log() {
    copytruncate_while_stopped("*.log");
}

#[test]
fn copytruncate_while_stopped_continues_from_the_committed_offset_glob_log_star() {
    copytruncate_while_stopped("*.log*");
}

/// `cp` of a log being read, to a name the glob matches: the copy is not read (its lines
/// are the original's), the original goes on being read.
#[test]
fn a_copy_of_a_file_being_read_is_not_read_again() {
    let ws = Workspace::with_config(
        "state_dir: state\nsources:\n  - type: file\n    path: logs/*.log\n",
    );
    let logs = ws.path().join("logs");
    std::fs::create_dir_all(&logs).expect("mkdir");
    let app = logs.join("app.log");
    append_keyed(&app, 0, 2000);
    let mut d = ws.spawn(&["watch", "--no-api"]);
    d.ready();
    let counted = |n: u64| {
        eventually(Duration::from_secs(30), || {
            let c = cp_counts(&ws);
            (0..n)
                .all(|s| c.contains_key(&format!("PACT:cp:m{s}")))
                .then_some(())
        })
    };
    assert!(counted(2000).is_some(), "{}", d.log_text());
    std::fs::copy(&app, logs.join("backup.log")).expect("cp");
    append_keyed(&app, 2000, 100);
    // A file created after the copy: once its line is counted, the copy was seen too.
    append_keyed(&logs.join("later.log"), 2100, 1);
    let all = counted(2101);
    let log = d.log_text();
    let exit = d.term(Duration::from_secs(5));
    assert!(exit.success(), "exit {exit}:\n{log}");
    assert!(all.is_some(), "{log}");
    let counts = cp_counts(&ws);
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "the copy was read: {twice:?}\n{log}");
    assert_eq!(counts.len(), 2101);
}
