//! Format compatibility: a store written by an older schema version is migrated by the
//! first writer that opens it, and one written by this version stays readable (redb's own
//! `backward_compatibility.rs` idea). `store-v1.redb` was written by schema version 1 and
//! can no longer be regenerated; regenerate `store-v2.redb` only on purpose, with
//! `SENTINEL_REGENERATE_GOLDEN=1 cargo test --lib golden`.

use super::*;
use crate::scan::Fingerprinter;

const GOLDEN_V1: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/golden/store-v1.redb");
const GOLDEN_V2: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/golden/store-v2.redb");

/// The fingerprint this version gives `line`.
fn fp_of(line: &str) -> Fingerprint {
    Fingerprinter::new().fingerprint(line.as_bytes())
}

#[test]
fn golden_v1_store_is_migrated_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    std::fs::copy(GOLDEN_V1, &path).unwrap();
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
        new.component_id = key[5..11].into();
        new.method = "get".into();
        new.pact_key = key.into();
        new.sample = sample;
        new.source = "/var/log/app.log".into();
        b.incidents.insert(d.fingerprint, d);
        b.key_counts.insert(key.into(), count);
    }
    b.totals.insert("lines", 100);
    b
}

#[test]
fn golden_v2_store_still_reads() {
    if std::env::var_os("SENTINEL_REGENERATE_GOLDEN").is_some() {
        let _ = std::fs::remove_file(GOLDEN_V2);
        let store = Store::open(std::path::Path::new(GOLDEN_V2)).unwrap();
        store
            .apply(&golden_v2_batch(), "2026-12-06T12:00:00Z".parse().unwrap())
            .unwrap();
        drop(store);
        let mut db = Database::open(GOLDEN_V2).unwrap();
        db.compact().unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    std::fs::copy(GOLDEN_V2, &path).unwrap();
    let store = Store::open(&path).unwrap();
    assert!(!dir.path().join("store.redb.v2-backup").exists());
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
}
