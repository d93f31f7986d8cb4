//! The per-file lag ([`crate::metrics::FileLag`]) as the shards report it: a file read in
//! turns is behind while its turns wait (here: the writer takes nothing until the test
//! lets it), and caught up once read to its end.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::bounded;

use super::{DEFAULT_ROTATE_WAIT, FileSources, FileSpec, Options};
use crate::attribute::{LiveRules, Rules};
use crate::config::{LogFormat, StartAt};
use crate::ingest::writer::Writer;
use crate::metrics::Metrics;
use crate::scan::Scanner;
use crate::scan::matcher::DEFAULT_ERROR_PATTERNS;
use crate::store::Store;

fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_file_is_behind_while_its_reads_wait_and_caught_up_after() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let path = logs.join("app.log");
    // 3 MiB: more than a turn reads (2 MiB), less than a mapped catch-up (4 MiB).
    let mut w = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let line = format!("{:<127}\n", "INFO all good");
    let mut size = 0u64;
    for i in 0..(3 << 20) / 128 {
        if i % 1000 == 0 {
            writeln!(w, "{:<127}", "ERROR [PACT:lag:read] failed").unwrap();
        } else {
            w.write_all(line.as_bytes()).unwrap();
        }
        size += 128;
    }
    drop(w);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size);

    let store = Arc::new(Store::open(&dir.path().join("sentinel.redb")).unwrap());
    let rules = LiveRules::new(Rules::default());
    let metrics = Arc::new(Metrics::new());
    let (writer, handle) = Writer::start(store, rules.clone(), metrics.clone(), None).unwrap();
    // The batches come here, and nobody takes them yet: the shard's first turn reads 2 MiB
    // and then waits to hand them over, as the start waits to record itself (it runs on a
    // thread of its own for that).
    let (tx, rx) = bounded(0);
    let spec = FileSpec {
        name: "app".into(),
        pattern: logs.join("*.log").to_string_lossy().into_owned(),
        format: LogFormat::Text,
        start_at: StartAt::Beginning,
        follow_symlinks: false,
        scanner: Scanner::new(DEFAULT_ERROR_PATTERNS).unwrap(),
    };
    let options = Options {
        shards: 1,
        rotate_wait: DEFAULT_ROTATE_WAIT,
        exclude: Vec::new(),
        max_open_files: None,
    };
    let files = handle.redirect_files(tx);
    drop(handle);
    let m = metrics.clone();
    let start = std::thread::spawn(move || {
        FileSources::start(vec![spec], options, HashMap::new(), 0, rules, files, m)
            .unwrap()
            .0
    });

    let behind = until("the file to be behind", || {
        let s = metrics.file_lag.summary(Some("app"), 10);
        (s.files_behind == 1).then_some(s)
    });
    let first = &behind.most_behind[0];
    assert_eq!(first.path, path.to_string_lossy());
    assert_eq!(first.source, "app");
    // One turn read 2 MiB (whole lines): the rest is behind.
    assert_eq!(first.bytes_behind, size - (2 << 20), "{behind:?}");
    assert_eq!(behind.bytes_behind, first.bytes_behind);
    let gauge = || metrics.file_lag.bytes("app");
    assert_eq!(gauge(), first.bytes_behind as i64);
    let text = metrics.render();
    assert!(
        text.contains(&format!(
            "sentinel_file_lag_bytes{{source=\"app\"}} {}",
            first.bytes_behind
        )),
        "{text}"
    );
    // Another source's view, and the all-sources view.
    assert_eq!(metrics.file_lag.summary(Some("web"), 10).files_behind, 0);
    assert_eq!(
        metrics.file_lag.summary(None, 10).bytes_behind,
        first.bytes_behind
    );

    // The writer takes the batches again: the file is read to its end.
    let drain = std::thread::spawn(move || rx.iter().count());
    let sources = start.join().unwrap();
    until("the file to catch up", || {
        (metrics.file_lag.summary(None, 10).files_behind == 0).then_some(())
    });
    assert_eq!(gauge(), 0);
    sources.stop();
    assert!(drain.join().unwrap() >= 2);
    writer.join();
}
