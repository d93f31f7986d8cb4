//! The API's store reads: incident pages by recency cursor, and incident timelines.

use super::*;

fn batch(fps: &[u64]) -> IngestBatch {
    let mut b = IngestBatch::new();
    for &fp in fps {
        b.incidents.insert(
            Fingerprint(fp),
            IncidentDelta::new(
                Fingerprint(fp),
                1,
                &format!("ERROR <n> {fp}"),
                AttributionStatus::Unattributed,
                Severity::Medium,
            ),
        );
    }
    b
}

fn at(s: u64) -> Timestamp {
    Timestamp::from_second(1_767_225_600 + s as i64).unwrap()
}

#[test]
fn pages_walk_every_incident_once_while_new_ones_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.redb")).unwrap();
    for fp in 1..=25u64 {
        store.apply(&batch(&[fp]), at(fp)).unwrap();
    }
    let all = IncidentFilter::default();
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut next_new = 100;
    loop {
        let (page, next) = store.incidents_page(&all, None, cursor, 10).unwrap();
        seen.extend(page.iter().map(|i| i.fingerprint.0));
        // New incidents arrive between pages.
        store.apply(&batch(&[next_new]), at(next_new)).unwrap();
        next_new += 1;
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, (1..=25).rev().collect::<Vec<_>>());
    // `since`: last seen at or after.
    let (page, next) = store.incidents_page(&all, Some(at(20)), None, 100).unwrap();
    let fps: Vec<u64> = page.iter().map(|i| i.fingerprint.0).collect();
    assert_eq!(fps[fps.len() - 6..], [25, 24, 23, 22, 21, 20]);
    assert_eq!(next, None);
    // Exactly `limit` left: no cursor once nothing follows.
    let (page, next) = store.incidents_page(&all, Some(at(100)), None, 3).unwrap();
    assert_eq!(page.len(), 3);
    assert_eq!(next, None);
}

#[test]
fn timeline_lists_an_incidents_events_oldest_first_and_pruning_drops_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.redb")).unwrap();
    store.set_fix_policy(FixPolicy {
        threshold: 1000,
        window_us: 60_000_000,
        auto_remediate: false,
        triage: false,
    });
    store.apply(&batch(&[1]), at(0)).unwrap();
    store.apply(&batch(&[2]), at(1)).unwrap();
    store.apply(&batch(&[1]), at(5)).unwrap(); // an incident_updated for 1
    let recent = store.recent_incidents(10).unwrap();
    let id_of = |fp: u64| {
        recent
            .iter()
            .find(|i| i.fingerprint.0 == fp)
            .unwrap()
            .id
            .clone()
    };
    let (id, id1) = (id_of(2), id_of(1));
    let kinds = |id: &str| -> Vec<(u64, EventKind)> {
        store
            .incident_events(id, 100)
            .unwrap()
            .iter()
            .map(|e| (e.seq, e.kind))
            .collect()
    };
    assert_eq!(kinds(&id), [(2, EventKind::IncidentDetected)]);
    assert_eq!(
        kinds(&id1),
        [
            (1, EventKind::IncidentDetected),
            (3, EventKind::IncidentUpdated)
        ]
    );
    assert_eq!(
        store.incident_events(&id1, 1).unwrap()[0].seq,
        3,
        "the newest"
    );
    assert!(kinds("nope").is_empty());
    let mut txn = store.begin_write().unwrap();
    txn.prune_events(2, 10).unwrap();
    txn.commit().unwrap();
    assert_eq!(kinds(&id1), [(3, EventKind::IncidentUpdated)]);
}
