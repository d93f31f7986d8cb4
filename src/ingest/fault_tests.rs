//! Fault injection, the way SQLite and redb test themselves: the store runs on a storage
//! backend that fails the Nth write, sync or resize ([`Faulty`]), and a sweep moves N across
//! a workload of webhook events and tailed-file batches. After every recovery: each
//! acknowledged event and each line before the committed file offset counted exactly once,
//! nothing twice, no panic, no hang — and again after a restart that replays the ingest log.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{EventBatch, FileBatch, SubmitError, Writer};
use crate::aggregate::{Event, LineAggregator};
use crate::attribute::LiveRules;
use crate::metrics::Metrics;
use crate::store::health::faulty::{Faulty, Plan};
use crate::store::{FileKey, FilePosition, Store};

const FILE_KEY: &str = "PACT:sweep:file";
const EVENT_KEY: &str = "PACT:sweep:event";
/// Every file line has this length, so a position says how many lines precede it.
const LINE: &str = "ERROR [PACT:sweep:file] read failed\n";
const ROUNDS: u64 = 40;

/// What one run acknowledged and where the file stood.
#[derive(Debug)]
struct Outcome {
    acked: u64,
    refused: u64,
    injected: u64,
}

fn open(path: &Path, plan: &Arc<Plan>) -> Arc<Store> {
    let p = path.to_path_buf();
    let plan = plan.clone();
    Arc::new(Store::open_with_backend(path, move || Faulty::open(&p, plan.clone())).expect("open"))
}

/// Where faults are injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The store's storage backend.
    Store,
    /// The ingest log's files.
    Log,
}

/// Runs the workload with a plan armed at `fail_at` (0: no fault) on `target`, clearing the
/// fault once it has refused something (or half-way).
fn workload(path: &Path, fail_at: u64, eio: bool, target: Target) -> (Outcome, u64) {
    let store_plan = Arc::new(Plan::default());
    let log_plan = Arc::new(Plan::default());
    let store = open(path, &store_plan);
    let rules = LiveRules::with_manifest(Default::default());
    super::wal::faults::set(Some(log_plan.clone()));
    let (writer, handle) =
        Writer::start(store.clone(), rules.clone(), Arc::new(Metrics::new()), None)
            .expect("writer");
    super::wal::faults::set(None);
    let plan = match target {
        Target::Store => store_plan,
        Target::Log => log_plan,
    };
    plan.ops.store(0, Ordering::SeqCst);
    plan.eio.store(eio, Ordering::SeqCst);
    // ENOSPC lasts until space is freed; EIO is one failed operation.
    plan.persistent.store(!eio, Ordering::SeqCst);
    plan.fail_at.store(fail_at, Ordering::SeqCst);
    let source: Arc<str> = Arc::from("sweep");
    let key = FileKey { dev: 1, ino: 42 };
    let mut offset = 0u64;
    let mut out = Outcome {
        acked: 0,
        refused: 0,
        injected: 0,
    };
    for round in 0..ROUNDS {
        // A webhook request of 5 events.
        let events = (0..5)
            .map(|i| Event {
                line: format!("ERROR [{EVENT_KEY}] request {round} {i} failed").into_bytes(),
                key: None,
                id: Some(format!("r{round}-{i}")),
            })
            .collect();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let batch = EventBatch {
            source: source.clone(),
            events,
            folded: None,
            reply: tx,
            hold: None,
        };
        match handle.try_send_events(batch) {
            Ok(()) => match rx.blocking_recv() {
                Ok(Ok(ack)) => out.acked += ack.accepted as u64,
                Ok(Err(_)) | Err(_) => out.refused += 5,
            },
            Err(SubmitError::Degraded(..)) => out.refused += 5,
            Err(e) => panic!("{e:?}"),
        }
        // A shard's turn: 3 lines and the position after them.
        let mut agg = LineAggregator::new(&rules, source.clone());
        for _ in 0..3 {
            agg.add_text(LINE.trim_end().as_bytes(), None);
        }
        offset += 3 * LINE.len() as u64;
        let fb = FileBatch {
            source: source.clone(),
            batch: agg.take_batch(),
            positions: vec![(
                key,
                FilePosition {
                    generation: 0,
                    offset,
                    head_len: 0,
                    head_hash: 0,
                    path: "sweep.log".into(),
                    updated: jiff::Timestamp::now(),
                    prev: None,
                },
            )],
            forget: Vec::new(),
            forward: Vec::new(),
        };
        handle.send_files(fb).expect("writer alive");
        // Space freed once the fault has shown.
        if out.refused > 0 || round == ROUNDS / 2 {
            plan.fail_at.store(0, Ordering::SeqCst);
        }
    }
    plan.fail_at.store(0, Ordering::SeqCst);
    // Recovery by itself, no restart.
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.health().is_degraded() {
        assert!(
            Instant::now() < deadline,
            "no recovery at fail_at {fail_at}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(handle);
    writer.join();
    out.injected = plan.injected.load(Ordering::SeqCst);
    let ops = plan.ops.load(Ordering::SeqCst);
    check(&store, &out, fail_at, "before the restart");
    drop(store);
    // A restart (the ingest log replayed) changes nothing.
    let plan = Arc::new(Plan::default());
    let store = open(path, &plan);
    let (writer, handle) =
        Writer::start(store.clone(), rules, Arc::new(Metrics::new()), None).expect("restart");
    drop(handle);
    writer.join();
    check(&store, &out, fail_at, "after the restart");
    (out, ops)
}

fn check(store: &Store, out: &Outcome, fail_at: u64, phase: &str) {
    let counts = store.key_counts().expect("key counts");
    let events = counts.get(EVENT_KEY).copied().unwrap_or(0);
    assert_eq!(
        events, out.acked,
        "{phase}, fail_at {fail_at}: {events} events counted, {} acknowledged ({out:?})",
        out.acked
    );
    let lines = counts.get(FILE_KEY).copied().unwrap_or(0);
    let offset = store
        .file_positions()
        .expect("positions")
        .get(&FileKey { dev: 1, ino: 42 })
        .map_or(0, |p| p.offset);
    assert_eq!(
        lines * LINE.len() as u64,
        offset,
        "fail_at {fail_at}: {lines} file lines counted, the position says {}",
        offset / LINE.len() as u64
    );
    assert_eq!(
        offset,
        ROUNDS * 3 * LINE.len() as u64,
        "fail_at {fail_at}: every batch committed"
    );
}

#[test]
fn a_fault_at_every_point_of_the_store_loses_and_duplicates_nothing() {
    sweep(Target::Store);
}

#[test]
fn a_fault_at_every_point_of_the_ingest_log_loses_and_duplicates_nothing() {
    sweep(Target::Log);
}

fn sweep(target: Target) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (clean, ops) = workload(&dir.path().join("clean.redb"), 0, false, target);
    assert_eq!(clean.acked, ROUNDS * 5);
    assert!(ops > 10, "the workload wrote {ops} times");
    // How many I/O operations a run does depends on how its events group into commits
    // (timing: a loaded machine groups more), so a run with a late fault point may end
    // before it; 80 points leave enough that meet one.
    let step = (ops / 80).max(1);
    if let Ok(n) = std::env::var("SWEEP_ONLY") {
        let n: u64 = n.parse().expect("SWEEP_ONLY=n");
        workload(&dir.path().join("only.redb"), n, true, target);
        return;
    }
    let mut injected_runs = 0;
    let mut n = 1;
    while n <= ops {
        for eio in [false, true] {
            let path = dir.path().join(format!("n{n}-{eio}.redb"));
            let (out, _) = workload(&path, n, eio, target);
            if out.injected > 0 {
                injected_runs += 1;
            }
        }
        n += step;
    }
    eprintln!(
        "fault sweep ({target:?}): {ops} I/O operations in the workload, {injected_runs} runs met \
         a fault"
    );
    assert!(injected_runs >= 20, "only {injected_runs} runs met a fault");
}
