//! Live file ingestion: throughput, append → commit latency, and memory, measured on the
//! real daemon binary.
//!
//! ```text
//! cargo build --release && cargo run --release --example watch_bench -- [TOTAL [FILES]]
//! ```
//!
//! 1. **Throughput.** Starts `sentinel watch --no-api` on a temp dir and appends TOTAL
//!    (default 2 GiB) of generated log text (the corpus of `sentinel gen-corpus`) to FILES
//!    (default 4) files as fast as it can. Ingest rate = TOTAL / (time from the first append
//!    until the store's committed `bytes` total reaches TOTAL). The committed error-line
//!    count is checked against the corpus truth. For scale, `rg -c ERROR` runs on the same
//!    bytes in the same go (when ripgrep is installed): the figure to quote is the ratio.
//! 2. **Latency.** With the daemon idle, and again while another file takes ~100 MB/s of
//!    appends, appends one uniquely keyed error line at a time and polls the store until the
//!    incident is committed: append → durable incident, p50/p99/max over 200 probes.
//! 3. **Memory.** A daemon tailing 100 files that keep growing: peak RSS (VmHWM).
#![allow(clippy::print_stdout)] // A command-line report is the point of this example.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sentinel::scan::Fingerprinter;
use sentinel::store::Store;
use sentinel_corpus::{CorpusSpec, generate};

fn bin() -> PathBuf {
    std::env::var_os("SENTINEL_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/sentinel"),
        PathBuf::from,
    )
}

struct Daemon {
    child: Child,
    dir: PathBuf,
}

impl Daemon {
    fn start(dir: &Path, config: &str) -> Daemon {
        std::fs::write(dir.join("sentinel.yaml"), config).expect("config");
        let child = Command::new(bin())
            .current_dir(dir)
            .args(["watch", "--no-api"])
            .env("RUST_LOG", "sentinel=warn")
            .stdout(Stdio::null())
            .stderr(File::create(dir.join("daemon.log")).expect("log"))
            .spawn()
            .expect("start the daemon (build it with cargo build --release)");
        let d = Daemon {
            child,
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !d.dir.join("state/daemon.json").exists() {
            assert!(Instant::now() < deadline, "daemon not ready");
            std::thread::sleep(Duration::from_millis(5));
        }
        d
    }

    fn store(&self) -> Store {
        Store::open_read_only(&self.dir.join("state/sentinel.redb"))
            .expect("open store")
            .expect("store exists")
    }

    fn status(&self, key: &str) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = s.lines().find(|l| l.starts_with(key))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn append(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open")
}

fn total(store: &Store, name: &str) -> u64 {
    store
        .totals()
        .ok()
        .and_then(|t| t.get(name).copied())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let total_bytes: u64 = args
        .first()
        .and_then(|s| s.trim_end_matches(['G', 'g']).parse::<u64>().ok())
        .map_or(2 << 30, |g| g << 30);
    let files: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(4);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("logs")).expect("mkdir");

    // The data: one 64 MiB chunk of corpus, appended over and over.
    let spec = CorpusSpec::new(11, 64 << 20);
    let mut chunk = Vec::with_capacity(70 << 20);
    let truth = generate(&spec, &mut chunk).expect("corpus");
    let chunk_errors = truth.error_lines;
    let repeats = (total_bytes / chunk.len() as u64).max(1);
    let total_bytes = repeats * chunk.len() as u64;

    // 1. Throughput.
    let config = "state_dir: state\nsources:\n  - type: file\n    path: logs/*.log\n";
    let d = Daemon::start(dir, config);
    let store = d.store();
    let mut outs: Vec<File> = (0..files)
        .map(|i| append(&dir.join(format!("logs/bulk{i}.log"))))
        .collect();
    let t0 = Instant::now();
    for r in 0..repeats {
        outs[r as usize % files].write_all(&chunk).expect("append");
    }
    let written = t0.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    while total(&store, "bytes") < total_bytes {
        assert!(Instant::now() < deadline, "ingest did not finish");
        std::thread::sleep(Duration::from_millis(2));
    }
    let ingested = t0.elapsed();
    let errors = total(&store, "error_lines");
    assert_eq!(errors, chunk_errors * repeats, "committed error lines");
    let rss_bulk = d.status("VmHWM:");
    let mb = total_bytes as f64 / 1e6;
    println!(
        "throughput: {mb:.0} MB in {files} files; appended in {:.2} s ({:.0} MB/s), committed in {:.2} s: {:.0} MB/s; {errors} error lines (exact); peak RSS {} MiB",
        written.as_secs_f64(),
        mb / written.as_secs_f64(),
        ingested.as_secs_f64(),
        mb / ingested.as_secs_f64(),
        rss_bulk.unwrap_or(0) >> 20
    );
    // The same bytes through ripgrep, for scale (page cache warm, like the daemon's reads).
    let rg_start = Instant::now();
    let rg = Command::new("rg")
        .arg("-c")
        .arg("PACT:[a-zA-Z0-9_]+:[a-zA-Z0-9_]+")
        .args((0..files).map(|i| dir.join(format!("logs/bulk{i}.log"))))
        .stdout(Stdio::null())
        .status();
    if let Ok(s) = rg
        && s.success()
    {
        let t = rg_start.elapsed();
        println!(
            "reference: rg -c 'PACT:[a-zA-Z0-9_]+:[a-zA-Z0-9_]+' on the same files: {:.2} s ({:.0} MB/s); daemon/rg throughput ratio {:.2}",
            t.as_secs_f64(),
            mb / t.as_secs_f64(),
            t.as_secs_f64() / ingested.as_secs_f64()
        );
    }

    // 1b. Catch-up: the same volume already on disk when the daemon starts (what a restart
    // after downtime, or a burst bigger than the appender, looks like).
    drop(store);
    d.stop();
    let tmp_c = tempfile::tempdir().expect("tempdir");
    let dir_c = tmp_c.path();
    std::fs::create_dir_all(dir_c.join("logs")).expect("mkdir");
    for i in 0..files {
        std::fs::rename(
            dir.join(format!("logs/bulk{i}.log")),
            dir_c.join(format!("logs/bulk{i}.log")),
        )
        .expect("move");
    }
    let t0 = Instant::now();
    let dc = Daemon::start(dir_c, config);
    let store_c = dc.store();
    while total(&store_c, "bytes") < total_bytes {
        assert!(Instant::now() < deadline, "catch-up did not finish");
        std::thread::sleep(Duration::from_millis(2));
    }
    let caught = t0.elapsed();
    assert_eq!(total(&store_c, "error_lines"), chunk_errors * repeats);
    println!(
        "catch-up: {mb:.0} MB on disk at start, committed in {:.2} s (daemon start included): {:.0} MB/s; peak RSS {} MiB",
        caught.as_secs_f64(),
        mb / caught.as_secs_f64(),
        dc.status("VmHWM:").unwrap_or(0) >> 20
    );
    drop(store_c);
    dc.stop();
    let d = Daemon::start(dir, config);
    let store = d.store();

    // 2. Latency, idle and under load.
    for load in [false, true] {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let bg = load.then(|| {
            let stop = stop.clone();
            let path = dir.join("logs/load.log");
            let chunk = chunk[..8 << 20].to_vec();
            std::thread::spawn(move || {
                let mut f = append(&path);
                let start = Instant::now();
                let mut sent = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // ~100 MB/s: 8 MiB every ~84 ms.
                    let due = Duration::from_secs_f64(sent as f64 / 100e6);
                    if start.elapsed() < due {
                        std::thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                    f.write_all(&chunk).expect("append");
                    sent += chunk.len() as u64;
                }
                sent
            })
        });
        let mut probe = append(&dir.join("logs/probe.log"));
        let mut fp = Fingerprinter::new();
        let mut lat = Vec::new();
        for i in 0..200 {
            // Letters, not digits: numbers are normalised away by the fingerprint.
            let word: String = (0..4)
                .map(|k| char::from(b'a' + ((i / 26usize.pow(k)) % 26) as u8))
                .collect();
            let line = format!(
                "ERROR [PACT:latency:probe] probe {} {word}",
                if load { "loaded" } else { "idle" }
            );
            let want = fp.fingerprint(line.as_bytes());
            let t = Instant::now();
            probe
                .write_all(format!("{line}\n").as_bytes())
                .expect("append");
            let deadline = t + Duration::from_secs(10);
            while !store.contains(want).unwrap_or(false) {
                assert!(Instant::now() < deadline, "probe {i} never committed");
                std::thread::sleep(Duration::from_micros(200));
            }
            lat.push(t.elapsed());
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let bg_bytes = bg.map(|h| h.join().unwrap_or(0));
        lat.sort();
        println!(
            "latency append -> committed incident ({}): p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            match bg_bytes {
                Some(b) => format!("with {:.0} MB of background appends", b as f64 / 1e6),
                None => "idle".into(),
            },
            percentile(&lat, 0.5).as_secs_f64() * 1e3,
            percentile(&lat, 0.9).as_secs_f64() * 1e3,
            percentile(&lat, 0.99).as_secs_f64() * 1e3,
            lat[lat.len() - 1].as_secs_f64() * 1e3,
        );
    }
    drop(store);
    d.stop();

    // 3. Memory tailing 100 growing files.
    let tmp2 = tempfile::tempdir().expect("tempdir");
    let dir2 = tmp2.path();
    std::fs::create_dir_all(dir2.join("logs")).expect("mkdir");
    let d = Daemon::start(dir2, config);
    let mut outs: Vec<File> = (0..100)
        .map(|i| append(&dir2.join(format!("logs/f{i:03}.log"))))
        .collect();
    // Whole lines only: a partial last line is (rightly) not counted until completed.
    let cut = memchr::memrchr(b'\n', &chunk[..1 << 20]).map_or(0, |i| i + 1);
    let piece = &chunk[..cut];
    for _round in 0..10 {
        for f in &mut outs {
            f.write_all(piece).expect("append");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let store = d.store();
    let want = 100 * 10 * piece.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while total(&store, "bytes") < want {
        assert!(Instant::now() < deadline, "100-file ingest did not finish");
        std::thread::sleep(Duration::from_millis(5));
    }
    println!(
        "memory: 100 files, {} MB appended: peak RSS {} MiB, now {} MiB",
        want / 1_000_000,
        d.status("VmHWM:").unwrap_or(0) >> 20,
        d.status("VmRSS:").unwrap_or(0) >> 20,
    );
    drop(store);
    d.stop();
}
