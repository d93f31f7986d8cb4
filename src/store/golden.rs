//! Format compatibility: a store written by an older schema version is migrated by the
//! first writer that opens it, and one written by this version stays readable (redb's own
//! `backward_compatibility.rs` idea). `store-v1.redb`, `store-v2.redb` and
//! `store-v2-all-tables.redb` were written by schema versions 1 and 2,
//! `store-v3-all-tables.redb` to `store-v6-all-tables.redb` by versions 3 to 6, and can no
//! longer be regenerated; each is migrated to this version here.
//! `store-v7-all-tables.redb` holds a row in every table of version 7 (incidents, the
//! tallies and secondary indexes, counters, windows, fix jobs, fixes, spend, file
//! positions, deliveries, cursors, the event log, trend counters, pull-source positions);
//! regenerate it only on purpose, with `SENTINEL_REGENERATE_GOLDEN=1 cargo test --lib
//! golden`.

use super::*;
use crate::scan::Fingerprinter;

const GOLDEN_V1: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/golden/store-v1.redb");
const GOLDEN_V2: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/golden/store-v2.redb");

/// A copy of the golden store `golden` in a new temporary directory: (the directory, the
/// copy's path).
fn copy_of(golden: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    std::fs::copy(golden, &path).unwrap();
    (dir, path)
}

/// The fingerprint this version gives `line`.
fn fp_of(line: &str) -> Fingerprint {
    Fingerprinter::new().fingerprint(line.as_bytes())
}

#[test]
fn golden_v1_store_is_migrated_in_place() {
    let (dir, path) = copy_of(GOLDEN_V1);
    let store = Store::open(&path).unwrap();
    assert_eq!(
        store.meta_value("schema_version").unwrap(),
        Some(SCHEMA_VERSION)
    );
    // The old file is kept beside it, as it was.
    let backup = dir.path().join("store.redb.v1-backup");
    let old = Store::open_read_only(&backup).unwrap().unwrap();
    assert_eq!(old.meta_value("schema_version").unwrap(), Some(1));
    let old_auth = old.incident("111122223333").unwrap().unwrap();
    assert_eq!(old_auth.fingerprint, Fingerprint(0x1111_2222_3333_4444));
    drop(old);
    let incidents = store.recent_incidents(10).unwrap();
    assert_eq!(incidents.len(), 2);
    // The id is kept; the identity is re-derived from the sample.
    let auth = store.incident("111122223333").unwrap().unwrap();
    let sample = "ERROR [PACT:auth:login] login failed for user 42";
    assert_eq!(auth.fingerprint, fp_of(sample));
    assert_eq!(auth.count, 7);
    assert_eq!(auth.component_id, "auth");
    assert_eq!(auth.pact_key, "PACT:auth:login");
    assert_eq!(auth.severity, Severity::High);
    assert_eq!(auth.sample, sample);
    assert_eq!(
        auth.first_seen,
        "2026-11-23T12:00:00Z".parse::<Timestamp>().unwrap()
    );
    let fatal = store.incident("aaaabbbbcccc").unwrap().unwrap();
    assert_eq!(fatal.fingerprint, fp_of("FATAL no key here"));
    assert_eq!(fatal.count, 1);
    // Counters are never reset.
    assert_eq!(store.key_counts().unwrap()["PACT:auth:login"], 7);
    assert_eq!(store.totals().unwrap()["lines"], 100);
    // The same line again folds into the migrated incident.
    let mut b = IngestBatch::new();
    b.incidents
        .insert(fp_of(sample), IncidentDelta::count_only(fp_of(sample), 7));
    store
        .apply(&b, "2026-11-23T13:00:00Z".parse().unwrap())
        .unwrap();
    assert_eq!(store.incident("111122223333").unwrap().unwrap().count, 14);
    drop(store);
    // A second open finds version 2 and does nothing more.
    std::fs::remove_file(&backup).unwrap();
    let store = Store::open(&path).unwrap();
    assert!(!backup.exists());
    assert_eq!(store.incident("111122223333").unwrap().unwrap().count, 14);
}

fn golden_v2_batch() -> IngestBatch {
    let mut b = IngestBatch::new();
    for (key, count) in [("PACT:svc_v1:get", 5), ("PACT:svc_v2:get", 3)] {
        let sample = format!("ERROR [{key}] timeout after 30 ms");
        let normalized = format!("ERROR [{key}] timeout after <n> ms");
        let mut d = IncidentDelta::new(
            fp_of(&sample),
            count,
            &normalized,
            AttributionStatus::Registered,
            Severity::Medium,
        );
        let new = d.new.as_mut().unwrap();
        new.set_component_id(&key[5..11]);
        new.set_method("get");
        new.set_pact_key(key);
        new.set_sample(&sample);
        new.source = "/var/log/app.log".into();
        b.incidents.insert(d.fingerprint, d);
        b.key_counts.insert(key.into(), count);
    }
    b.totals.insert("lines", 100);
    b
}

/// The tallies a store keeps equal a recount, and a filtered page finds what a scan finds.
fn assert_tallies_exact(store: &Store) {
    let kept = store.incident_tallies(true).unwrap();
    assert_eq!(kept, store.recount_tallies().unwrap());
    for (component, n) in &kept.by_component {
        let filter = IncidentFilter {
            component: Some(component.clone()),
            ..IncidentFilter::default()
        };
        assert_eq!(store.find_incidents(&filter, 100).unwrap().len() as u64, *n);
    }
    for (status, n) in &kept.by_status {
        let filter = IncidentFilter {
            status: Some(StatusFilter::Is(*status)),
            ..IncidentFilter::default()
        };
        assert_eq!(store.find_incidents(&filter, 100).unwrap().len() as u64, *n);
    }
}

#[test]
fn golden_v2_store_is_migrated_to_v3() {
    let (dir, path) = copy_of(GOLDEN_V2);
    let store = Store::open(&path).unwrap();
    assert!(dir.path().join("store.redb.v2-backup").exists());
    assert_eq!(
        store.meta_value("schema_version").unwrap(),
        Some(SCHEMA_VERSION)
    );
    let tallies = store.incident_tallies(true).unwrap();
    assert_eq!(tallies.total(), 2);
    assert_eq!(tallies.by_component["svc_v1"], 1);
    assert_eq!(tallies.by_severity[&Severity::Medium], 2);
    assert_tallies_exact(&store);
    let incidents = store.recent_incidents(10).unwrap();
    assert_eq!(incidents.len(), 2);
    for (key, count) in [("PACT:svc_v1:get", 5), ("PACT:svc_v2:get", 3)] {
        let fp = fp_of(&format!("ERROR [{key}] timeout after 12 ms"));
        let inc = incidents.iter().find(|i| i.fingerprint == fp).unwrap();
        assert_eq!(inc.count, count);
        assert_eq!(inc.pact_key, key);
        assert_eq!(store.key_counts().unwrap()[key], count);
    }
    store
        .apply(&golden_v2_batch(), "2026-12-06T13:00:00Z".parse().unwrap())
        .unwrap();
    let again = store.recent_incidents(10).unwrap();
    assert_eq!(again.iter().map(|i| i.count).sum::<u64>(), 16);
    assert_tallies_exact(&store);
}

const GOLDEN_V2_ALL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/testdata/golden/store-v2-all-tables.redb"
);

const GOLDEN_V3_ALL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/testdata/golden/store-v3-all-tables.redb"
);

const T0: &str = "2026-12-06T12:00:00Z";

fn the_position() -> FilePosition {
    FilePosition {
        generation: 3,
        offset: 4096,
        head_len: 1024,
        head_hash: 0x0abc_def0_1234_5678,
        path: "/var/log/app.log".into(),
        updated: T0.parse().unwrap(),
        // Format 1 records (this golden store's) have none.
        prev: None,
    }
}

/// Writes a row into every table this version has.
fn fill_every_table(store: &Store) {
    let t0: Timestamp = T0.parse().unwrap();
    store.set_fix_policy(FixPolicy {
        threshold: 1,
        window_us: 60_000_000,
        auto_remediate: true,
        triage: false,
    });
    // incidents, incident_counts, incident_ids, the indexes, key_counts, totals,
    // incident_windows, incident_actioned, fix_jobs, fix_jobs_open, events, incident_events.
    store.apply(&golden_v2_batch(), t0).unwrap();
    let job = store.open_jobs().unwrap().remove(0);
    let mut txn = store.begin_write().unwrap();
    txn.set_file_position(FileKey { dev: 1, ino: 2 }, &the_position())
        .unwrap();
    txn.record_spend(&job.incident_id, 1234, t0).unwrap();
    txn.record_delivery_hashes(micros(t0), 7, &[deliveries::delivery_hash("hook", "e-1")])
        .unwrap();
    txn.set_meta("wal_applied_seq", 7).unwrap();
    // fixes, fixes_by_time, incident_fixes, regression_watch.
    let mut fix = FixResult {
        id: "f00000000001".into(),
        incident_id: job.incident_id.clone(),
        component_id: job.component_id.clone(),
        ..FixResult::default()
    };
    txn.start_job(job.seq, &mut fix, t0).unwrap();
    fix.status = FixStatus::Success;
    fix.merged = true;
    fix.branch = "sentinel/fix-f00000000001".into();
    txn.finish_fix(Some(job.seq), &fix, "fixed", t0).unwrap();
    txn.commit().unwrap();
    store.set_outbox_cursor("arbiter", 2).unwrap();
    // source_positions (a CloudWatch log group's cursor, committed with counts).
    let mut b = IngestBatch::new();
    b.source_positions
        .insert(THE_SOURCE_POSITION.0.into(), THE_SOURCE_POSITION.1.to_vec());
    b.totals.insert("lines", 1);
    store.apply(&b, t0).unwrap();
}

/// The pull-source position row of the all-tables store: (key, value).
const THE_SOURCE_POSITION: (&str, &[u8]) = (
    "cloudwatch\u{1f}cw\u{1f}/aws/lambda/api",
    &[
        1, 0x10, 0x27, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0,
    ],
);

/// Every table of schema version 2, written once and committed: migrated, each keeps
/// reading, and the tallies and indexes are built from it.
#[test]
fn golden_v2_every_table_is_migrated() {
    let (dir, path) = copy_of(GOLDEN_V2_ALL);
    let store = Store::open(&path).unwrap();
    assert!(dir.path().join("store.redb.v2-backup").exists());
    check_every_table(&store);
}

/// The names of the tables in `store`.
fn table_names(store: &Store) -> Vec<String> {
    let txn = store.begin_read().unwrap();
    txn.list_tables()
        .unwrap()
        .map(|t| redb::TableHandle::name(&t).to_string())
        .collect()
}

/// A copy of the golden store `golden` (schema version `from`): first read as it is by a
/// read-only reader (its two incidents, most recent first, returned; `old` looks further),
/// then migrated by a writer, which keeps a backup and drops the tables in `gone`.
fn migrated(
    golden: &str,
    from: u64,
    gone: &[&str],
    old: impl FnOnce(&Store),
) -> (tempfile::TempDir, Store, Vec<Incident>) {
    let (dir, path) = copy_of(golden);
    let reader = Store::open_read_only(&path).unwrap().unwrap();
    let before = reader.recent_incidents(10).unwrap();
    assert_eq!(before.len(), 2);
    old(&reader);
    drop(reader);
    let store = Store::open(&path).unwrap();
    assert!(
        dir.path()
            .join(format!("store.redb.v{from}-backup"))
            .exists()
    );
    let names = table_names(&store);
    for t in gone {
        assert!(!names.iter().any(|n| n == t), "{t} in {names:?}");
    }
    (dir, store, before)
}

/// Every table of schema version 3, written once and committed: migrated (its `recent`
/// table dropped), each keeps reading, and a reader of the old file still pages it.
#[test]
fn golden_v3_every_table_is_migrated() {
    let (_dir, store, _) = migrated(GOLDEN_V3_ALL, 3, &["recent"], |_| {});
    check_every_table(&store);
}

const GOLDEN_V4_ALL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/testdata/golden/store-v4-all-tables.redb"
);

/// Every table of schema version 4, written once and committed: migrated (its counts,
/// index names and actioned marks folded into `incident_state`), each keeps reading, and a
/// reader of the old file still reads it.
#[test]
fn golden_v4_every_table_is_migrated() {
    let gone = [
        "recent",
        "incident_counts",
        "incident_attrs",
        "incident_actioned",
    ];
    let (_dir, store, before) = migrated(GOLDEN_V4_ALL, 4, &gone, |_| {});
    // The same incidents, counts and recency as the old file said.
    let after = store.recent_incidents(10).unwrap();
    let key = |i: &Incident| (i.id.clone(), i.count, i.last_seen, i.status);
    assert_eq!(
        after.iter().map(key).collect::<Vec<_>>(),
        before.iter().map(key).collect::<Vec<_>>()
    );
    check_every_table(&store);
}

const GOLDEN_V5_ALL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/testdata/golden/store-v5-all-tables.redb"
);

/// Every table of schema version 5, written once and committed: migrated (its hour trend
/// rows give back what the minute rows hold), each keeps reading, with the same series.
#[test]
fn golden_v5_every_table_is_migrated() {
    let (dir, path) = copy_of(GOLDEN_V5_ALL);
    let store = Store::open(&path).unwrap();
    assert!(dir.path().join("store.redb.v5-backup").exists());
    {
        // Every occurrence of the golden store's one minute is in its minute rows now.
        let txn = store.begin_read().unwrap();
        let hours = txn.open_table(schema::HOURS).unwrap();
        assert_eq!(hours.iter().unwrap().count(), 0);
    }
    check_every_table(&store);
}

const GOLDEN_V6_ALL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/testdata/golden/store-v6-all-tables.redb"
);

/// Every table of schema version 6, written once and committed: migrated (its records moved
/// from `incidents` to `incident_records` by creation sequence), each keeps reading, and a
/// reader of the old file still reads it.
#[test]
fn golden_v6_every_table_is_migrated() {
    let (_dir, store, before) = migrated(GOLDEN_V6_ALL, 6, &["incidents"], |old| {
        let mut walked = 0;
        old.for_each_incident(|_| walked += 1).unwrap();
        assert_eq!(walked, 2);
    });
    // The same incidents, counts and recency as the old file said.
    let after = store.recent_incidents(10).unwrap();
    assert_eq!(after, before);
    check_every_table(&store);
}

const GOLDEN_V7_ALL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/testdata/golden/store-v7-all-tables.redb"
);

/// Every table of schema version 7, written once and committed: each must keep reading.
#[test]
fn golden_v7_every_table_still_reads() {
    if std::env::var_os("SENTINEL_REGENERATE_GOLDEN").is_some() {
        let _ = std::fs::remove_file(GOLDEN_V7_ALL);
        let store = Store::open(std::path::Path::new(GOLDEN_V7_ALL)).unwrap();
        fill_every_table(&store);
        drop(store);
        let mut db = Database::open(GOLDEN_V7_ALL).unwrap();
        db.compact().unwrap();
    }
    let (dir, path) = copy_of(GOLDEN_V7_ALL);
    let store = Store::open(&path).unwrap();
    assert!(!dir.path().join("store.redb.v7-backup").exists());
    // The version 7 tables as written: not rebuilt on open.
    let names = table_names(&store);
    for t in [
        "incident_records",
        "incident_seqs",
        "incident_state",
        "incidents_by_component",
        "incidents_by_severity",
        "incident_tallies",
    ] {
        assert!(names.iter().any(|n| n == t), "{t} in {names:?}");
    }
    for gone in ["recent", "incidents"] {
        assert!(!names.iter().any(|n| n == gone), "{gone} in {names:?}");
    }
    check_every_table(&store);
}

/// What [`fill_every_table`] wrote reads back (from a store of this version, or one
/// migrated to it).
fn check_every_table(store: &Store) {
    assert_eq!(
        store.meta_value("schema_version").unwrap(),
        Some(SCHEMA_VERSION)
    );
    assert_eq!(store.meta_value("wal_applied_seq").unwrap(), Some(7));
    // Incidents and their counters.
    let incidents = store.recent_incidents(10).unwrap();
    assert_eq!(incidents.len(), 2);
    assert_eq!(store.key_counts().unwrap()["PACT:svc_v1:get"], 5);
    assert_eq!(store.totals().unwrap()["lines"], 101);
    // The fix job, finished; its fix; the incident resolved by it.
    let jobs = store.fix_jobs().unwrap();
    assert_eq!(jobs.len(), 2, "one job per actionable incident");
    assert!(jobs.iter().any(|j| j.state == JobState::Succeeded));
    assert_eq!(store.open_jobs().unwrap().len(), 1);
    let fix = store.fix("f00000000001").unwrap().unwrap();
    assert_eq!(fix.status, FixStatus::Success);
    assert!(fix.merged);
    let fixed = store.incident(&fix.incident_id).unwrap().unwrap();
    assert_eq!(fixed.status, IncidentStatus::Resolved);
    assert_eq!(store.fixes_of(&fix.incident_id).unwrap().len(), 1);
    assert_eq!(store.fixes(10).unwrap().len(), 1);
    // Spend, positions, deliveries, cursors, the event log.
    let spend = store.spend_since(Timestamp::UNIX_EPOCH).unwrap();
    assert_eq!(spend.len(), 1);
    assert_eq!(spend[0].2, 1234);
    let positions = store.file_positions().unwrap();
    assert_eq!(positions[&FileKey { dev: 1, ino: 2 }], the_position());
    assert!(store.delivery_seen("hook", "e-1").unwrap());
    assert!(!store.delivery_seen("hook", "e-2").unwrap());
    assert_eq!(store.outbox_cursor("arbiter").unwrap(), Some(2));
    assert_eq!(
        store.source_positions("cloudwatch\u{1f}").unwrap(),
        vec![(
            THE_SOURCE_POSITION.0.to_string(),
            THE_SOURCE_POSITION.1.to_vec()
        )]
    );
    let events = store.events_after(0, 100).unwrap();
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert!(kinds.contains(&EventKind::IncidentDetected), "{kinds:?}");
    assert!(kinds.contains(&EventKind::FixCompleted), "{kinds:?}");
    assert!(
        !store
            .incident_events(&fix.incident_id, 10)
            .unwrap()
            .is_empty()
    );
    // The trend counters (written in the ingest transaction).
    let t0: Timestamp = T0.parse().unwrap();
    for bucket in [trend::Bucket::Minute, trend::Bucket::Hour] {
        let all: u64 = store
            .total_trend(bucket, t0)
            .unwrap()
            .iter()
            .map(|p| p.count)
            .sum();
        assert_eq!(all, 8, "{bucket:?}");
        let one = store
            .incident_trend(&fix.incident_id, bucket, t0)
            .unwrap()
            .unwrap();
        assert!(!one.is_empty(), "{bucket:?}");
    }
    // The tallies and secondary indexes: one incident resolved by its fix, one waiting.
    let tallies = store.incident_tallies(true).unwrap();
    assert_eq!(tallies.by_status[&IncidentStatus::Resolved], 1);
    assert_eq!(tallies.by_status[&IncidentStatus::Detected], 1);
    assert_eq!(tallies.by_severity[&Severity::Medium], 2);
    assert_eq!(tallies.by_component.len(), 2);
    assert_tallies_exact(store);
    let resolved = IncidentFilter {
        status: Some(StatusFilter::Is(IncidentStatus::Resolved)),
        severity: Some(Severity::Medium),
        ..IncidentFilter::default()
    };
    assert_eq!(store.find_incidents(&resolved, 10).unwrap()[0].id, fixed.id);
    // And it takes new counts (the merged fix's incident regresses, and is actionable
    // again: escalated under the default policy).
    store
        .apply(&golden_v2_batch(), "2026-12-06T13:00:00Z".parse().unwrap())
        .unwrap();
    assert_eq!(store.key_counts().unwrap()["PACT:svc_v1:get"], 10);
    let after = store.incident_tallies(false).unwrap();
    assert_eq!(after.by_status.get(&IncidentStatus::Resolved), None);
    assert_eq!(after.total(), 2);
    assert_tallies_exact(store);
}
