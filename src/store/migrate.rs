//! Schema migrations, applied in place by the first writer that opens an older store.
//!
//! Before it changes anything the writer copies the file beside itself
//! (`sentinel.redb.v<old>-backup`) and says so on stderr; the migration is then ONE write
//! transaction, so a crash leaves the old store whole (and the next writer migrates again).
//! Readers ([`Store::open_read_only`]) read an older store as it is and never migrate.
//!
//! # Version 1 → 2: incident identity keeps PACT keys verbatim
//!
//! Version 1 fingerprinted an error line with every digit run replaced, the ones inside PACT
//! keys included, so `PACT:svc_v1:get` and `PACT:svc_v2:get` lines with the same text shared
//! one incident. Version 2 keeps every key verbatim (see [`crate::scan::fingerprint`]) and
//! puts a key given beside a line (a webhook event's `log_key`) into its identity.
//!
//! Each incident's identity is re-derived from what it stored: its sample (the first line it
//! counted) and, when the sample carries no key, its `pact_key`. An incident whose identity
//! changes moves to its new fingerprint with everything keyed by it (counts, the recency
//! index, its threshold window, its actioned mark, its regression watch, its fix jobs) and
//! KEEPS ITS ID, so its events, fixes and links stay valid. Two old incidents that meet at
//! one new fingerprint are merged: counts added, the newest `last_seen` kept, both ids
//! pointing at the one incident. Nothing is counted again and nothing is reset: per-key
//! counters and totals are untouched. What an old incident had already folded together (two
//! sibling components' lines) stays counted in it; lines from now on fold apart.
//!
//! A sample that cannot stand for its line (cut at [`SAMPLE_MAX_BYTES`] or holding
//! replacement characters, so not the line's bytes) keeps its old fingerprint: the same line
//! seen again may then open a second incident, which is the safe side.
//!
//! # Version 2 → 3: incident tallies and secondary indexes
//!
//! Every incident is read once and entered into `incident_attrs`, `incidents_by_component`,
//! `incidents_by_severity` and `incident_tallies` (see `store/index.rs`), at its
//! authoritative `last_seen`. From then on they are kept by the transactions that change
//! incidents. A version 1 store takes both steps in the same transaction (re-keyed first,
//! then indexed). Nothing else changes. With a million incidents this takes a while once,
//! on the first writer's start.
//!
//! # Version 3 → 4: no `recent` table
//!
//! `incidents_by_severity` holds every incident once at the same `(last_seen µs,
//! fingerprint)` as `recent` did, so unfiltered pages and the oldest-first sweeps
//! (retention, the trend counters) merge its 35 ranges instead (`index::oldest_keys`), and
//! `recent` is deleted: one insert fewer for every new incident, two for every recency move.
//! Nothing else changes.
//!
//! # Version 4 → 5: one row per incident for what every batch touches
//!
//! `incident_counts` (count, last seen), `incident_attrs` (the status, severity and
//! component its index entries are under) and `incident_actioned` (its fix job) become one
//! `incident_state` row (see `store/state.rs`), and the three tables are deleted: a new
//! incident costs two inserts fewer, an incident seen again two look-ups fewer. A store
//! older than version 3 gets its rows while it is indexed. Nothing else changes.
//!
//! # Version 5 → 6: a count goes into its minute trend row only
//!
//! Versions up to 5 wrote every count into the incident's minute row and its hour row; an
//! hour now reads as its row plus the minute rows of that hour, and minute rows are folded
//! into hour rows when they leave the minute span (see `store/trend.rs`). The migration
//! takes from each hour row what the minute rows still hold of it (`trend::split_hours`):
//! the series read the same before and after.
//!
//! # Version 6 → 7: incident records by creation sequence
//!
//! The records move from `incidents` (fingerprint → record) to `incident_records`
//! (sequence → record, new ones appended) with `incident_seqs` (fingerprint → sequence), in
//! fingerprint order, and `incidents` is deleted (see `store/records.rs`). Nothing else
//! changes: everything else is still keyed by fingerprint.

use std::path::{Path, PathBuf};

use redb::ReadableTable;

use super::{
    ACTIONED, COUNTS, FIX_JOBS, FixJob, INCIDENT_IDS, INCIDENTS, META, RECENT, SAMPLE_MAX_BYTES,
    Store, StoreError, WINDOWS, schema::ATTRS, schema::REGRESSION_WATCH,
};
use crate::scan::fingerprint::{Fingerprinter, NORMALIZED_KEEP_BYTES};
use crate::scan::keys;
use crate::store::incident::lossy_prefix;

/// What a migration did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Migration {
    /// The version found.
    pub from: u64,
    /// The version written.
    pub to: u64,
    /// The copy of the file taken before the migration.
    pub backup: PathBuf,
    /// Incidents looked at.
    pub incidents: u64,
    /// Incidents moved to a new fingerprint.
    pub rekeyed: u64,
    /// Incidents merged into another one.
    pub merged: u64,
    /// Incidents entered into the tallies and secondary indexes (version 3).
    pub indexed: u64,
    /// The `recent` table was dropped (version 4).
    pub recent_dropped: bool,
    /// Incidents whose count, index names and actioned mark were folded into one
    /// `incident_state` row (version 5, from version 3 or 4).
    pub folded: u64,
    /// Hour trend rows that gave their still-kept minutes back to the minute rows
    /// (version 6).
    pub hours_split: u64,
    /// Incident records moved from `incidents` (by fingerprint) to `incident_records` (by
    /// creation sequence) (version 7).
    pub sequenced: u64,
}

impl std::fmt::Display for Migration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "migrated the store from schema version {} to {}: ",
            self.from, self.to
        )?;
        if self.from < 2 {
            write!(
                f,
                "{} incidents, {} re-keyed (identity now keeps PACT keys verbatim), {} merged; ",
                self.incidents, self.rekeyed, self.merged
            )?;
        }
        if self.from < 3 {
            write!(
                f,
                "{} incidents indexed and counted by status, severity and component; ",
                self.indexed
            )?;
        }
        if self.recent_dropped {
            write!(
                f,
                "the recency index folded into the severity index (one write fewer per \
                 incident); "
            )?;
        }
        if self.folded > 0 {
            write!(
                f,
                "{} incidents' counts, index names and actioned marks folded into one row each; ",
                self.folded
            )?;
        }
        if self.hours_split > 0 {
            write!(
                f,
                "{} hour trend rows now count only what their minute rows do not; ",
                self.hours_split
            )?;
        }
        if self.sequenced > 0 {
            write!(
                f,
                "{} incident records keyed by creation order; ",
                self.sequenced
            )?;
        }
        write!(f, "the old file is kept at {}", self.backup.display())
    }
}

/// The identity version 2 gives an incident stored by version 1, from its sample and key;
/// None when the sample cannot stand for its line.
fn v2_identity(fp: &mut Fingerprinter, sample: &str, pact_key: &str) -> Option<(u64, String)> {
    if sample.len() + 4 > SAMPLE_MAX_BYTES || sample.contains('\u{FFFD}') {
        return None;
    }
    let line = sample.as_bytes();
    let beside =
        (keys::first_key(line).is_none() && !pact_key.is_empty()).then_some(pact_key.as_bytes());
    let new = fp.fingerprint_keyed(line, beside);
    Some((new.0, lossy_prefix(fp.normalized(), NORMALIZED_KEEP_BYTES)))
}

/// Copies the store at `path` to `<path>.v<from>-backup` (overwriting an earlier copy: the
/// store is still at version `from`, or it would not be migrated again).
pub(super) fn backup(path: &Path, from: u64) -> Result<PathBuf, StoreError> {
    let mut backup = path.to_path_buf().into_os_string();
    backup.push(format!(".v{from}-backup"));
    let backup = PathBuf::from(backup);
    std::fs::copy(path, &backup)
        .and_then(|_| std::fs::File::open(&backup)?.sync_all())
        .map_err(|e| StoreError::Storage {
            path: backup.clone(),
            source: redb::Error::Io(e),
        })?;
    Ok(backup)
}

impl Store {
    /// Migrates the store from version `from` to the current one in one transaction; the
    /// caller took `backup` first.
    pub(super) fn migrate(&self, from: u64, backup: PathBuf) -> Result<Migration, StoreError> {
        let mut report = Migration {
            from,
            to: super::SCHEMA_VERSION,
            backup,
            ..Migration::default()
        };
        let db = self.writer()?;
        let txn = db.begin_write().map_err(self.storage())?;
        if from < 2 {
            self.rekey_v2(&txn, &mut report)?;
        }
        if from < 3 {
            // Writes `incident_state` rows too (from `incident_counts` and `incident_actioned`).
            report.indexed = super::index::build(self, &txn)?;
        } else if from < 5 {
            report.folded = super::index::fold_state(self, &txn)?;
        }
        if from < 4 {
            report.recent_dropped = txn.delete_table(RECENT).map_err(self.storage())?;
        }
        if from < 6 {
            report.hours_split = super::trend::split_hours(self, &txn)?;
        }
        if from < 7 {
            report.sequenced = super::records::sequence(self, &txn)?;
        }
        if from < 5 {
            txn.delete_table(COUNTS).map_err(self.storage())?;
            txn.delete_table(ACTIONED).map_err(self.storage())?;
            txn.delete_table(ATTRS).map_err(self.storage())?;
        }
        {
            let mut meta = txn.open_table(META).map_err(self.storage())?;
            meta.insert("schema_version", super::SCHEMA_VERSION)
                .map_err(self.storage())?;
        }
        txn.commit().map_err(self.storage())?;
        Ok(report)
    }

    /// Version 1 → 2 (see the module docs), in `txn`.
    fn rekey_v2(
        &self,
        txn: &redb::WriteTransaction,
        report: &mut Migration,
    ) -> Result<(), StoreError> {
        {
            let mut incidents = txn.open_table(INCIDENTS).map_err(self.storage())?;
            let mut counts = txn.open_table(COUNTS).map_err(self.storage())?;
            let mut ids = txn.open_table(INCIDENT_IDS).map_err(self.storage())?;
            let mut recent = txn.open_table(RECENT).map_err(self.storage())?;
            let mut windows = txn.open_table(WINDOWS).map_err(self.storage())?;
            let mut actioned = txn.open_table(ACTIONED).map_err(self.storage())?;
            let mut watch = txn.open_table(REGRESSION_WATCH).map_err(self.storage())?;
            let mut jobs = txn.open_table(FIX_JOBS).map_err(self.storage())?;

            // Only the incidents whose identity changes are held in memory.
            let mut fingerprinter = Fingerprinter::new();
            let mut moves = Vec::new();
            for entry in incidents.iter().map_err(self.storage())? {
                let (k, v) = entry.map_err(self.storage())?;
                report.incidents += 1;
                let old = k.value();
                let inc = self.decode(old, v.value())?;
                if let Some((new, normalized)) =
                    v2_identity(&mut fingerprinter, &inc.sample, &inc.pact_key)
                    && new != old
                {
                    moves.push((old, new, normalized));
                }
            }

            let mut job_moves = std::collections::HashMap::new();
            for (old, new, normalized) in moves {
                let Some(v) = incidents.remove(old).map_err(self.storage())? else {
                    continue;
                };
                let mut inc = self.decode(old, v.value())?;
                drop(v);
                let (count, last_us) = counts
                    .remove(old)
                    .map_err(self.storage())?
                    .map_or((inc.count, 0), |c| c.value());
                recent.remove((last_us, old)).map_err(self.storage())?;
                let window = windows
                    .remove(old)
                    .map_err(self.storage())?
                    .map(|w| w.value());
                let action = actioned
                    .remove(old)
                    .map_err(self.storage())?
                    .map(|a| a.value());
                let watched = watch
                    .remove(old)
                    .map_err(self.storage())?
                    .map(|w| w.value());
                job_moves.insert(old, new);
                ids.insert(inc.id.as_str(), new).map_err(self.storage())?;

                let existing = counts.get(new).map_err(self.storage())?.map(|c| c.value());
                if let Some((other_count, other_last)) = existing {
                    // Two old incidents meet at one identity: one incident, counts added.
                    report.merged += 1;
                    let last = other_last.max(last_us);
                    counts
                        .insert(new, (other_count + count, last))
                        .map_err(self.storage())?;
                    recent.remove((other_last, new)).map_err(self.storage())?;
                    recent.insert((last, new), ()).map_err(self.storage())?;
                    continue;
                }
                report.rekeyed += 1;
                inc.fingerprint = crate::scan::Fingerprint(new);
                inc.normalized = normalized;
                incidents
                    .insert(new, inc.encode().as_slice())
                    .map_err(self.storage())?;
                counts
                    .insert(new, (count, last_us))
                    .map_err(self.storage())?;
                recent.insert((last_us, new), ()).map_err(self.storage())?;
                if let Some(w) = window {
                    windows.insert(new, w).map_err(self.storage())?;
                }
                if let Some(a) = action {
                    actioned.insert(new, a).map_err(self.storage())?;
                }
                if let Some(w) = watched {
                    watch.insert(new, w).map_err(self.storage())?;
                }
            }

            if !job_moves.is_empty() {
                let mut changed = Vec::new();
                for entry in jobs.iter().map_err(self.storage())? {
                    let (k, v) = entry.map_err(self.storage())?;
                    let mut job =
                        FixJob::decode(v.value()).map_err(|detail| StoreError::Corrupt {
                            path: self.path.clone(),
                            detail: format!("fix job {}: {detail}", k.value()),
                        })?;
                    if let Some(&new) = job_moves.get(&job.fingerprint) {
                        job.fingerprint = new;
                        changed.push((k.value(), job));
                    }
                }
                for (seq, job) in changed {
                    jobs.insert(seq, job.encode().as_slice())
                        .map_err(self.storage())?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::{AttributionStatus, Severity};
    use crate::scan::Fingerprint;
    use crate::store::{IncidentDelta, IngestBatch};

    /// A version 1 store holding what version 1 did to sibling components: one incident
    /// for `PACT:svc_v1:get` and `PACT:svc_v2:get` lines with the same text.
    fn v1_store(path: &std::path::Path) {
        let old_fp = Fingerprint(xxhash_rust::xxh3::xxh3_64(
            b"ERROR [PACT:svc_v<n>:get] timeout after <n> ms",
        ));
        let store = Store::open(path).unwrap();
        let mut b = IngestBatch::new();
        let mut d = IncidentDelta::new(
            old_fp,
            10,
            "ERROR [PACT:svc_v<n>:get] timeout after <n> ms",
            AttributionStatus::Registered,
            Severity::Medium,
        );
        let new = d.new.as_mut().unwrap();
        new.set_component_id("svc_v1");
        new.set_method("get");
        new.set_pact_key("PACT:svc_v1:get");
        new.set_sample("ERROR [PACT:svc_v1:get] timeout after 30 ms");
        b.incidents.insert(old_fp, d);
        // A webhook event whose key came beside its text.
        let hook_fp = Fingerprint(xxhash_rust::xxh3::xxh3_64(b"charge failed"));
        let mut d = IncidentDelta::new(
            hook_fp,
            2,
            "charge failed",
            AttributionStatus::Registered,
            Severity::Medium,
        );
        let new = d.new.as_mut().unwrap();
        new.set_component_id("pay");
        new.set_pact_key("PACT:pay:charge");
        new.set_sample("charge failed");
        b.incidents.insert(hook_fp, d);
        b.key_counts.insert("PACT:svc_v1:get".into(), 6);
        b.key_counts.insert("PACT:svc_v2:get".into(), 4);
        b.key_counts.insert("PACT:pay:charge".into(), 2);
        b.totals.insert("error_lines", 12);
        store
            .apply(&b, "2026-12-01T00:00:00Z".parse().unwrap())
            .unwrap();
        drop(store);
        let db = redb::Database::open(path).unwrap();
        let txn = db.begin_write().unwrap();
        super::super::records::unsequence(&txn);
        txn.open_table(META)
            .unwrap()
            .insert("schema_version", 1)
            .unwrap();
        txn.commit().unwrap();
    }

    #[test]
    fn a_v1_store_is_rekeyed_without_losing_a_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sentinel.redb");
        v1_store(&path);
        let before: Vec<_> = Store::open_read_only(&path)
            .unwrap()
            .unwrap()
            .recent_incidents(10)
            .unwrap();
        let store = Store::open(&path).unwrap();
        assert!(dir.path().join("sentinel.redb.v1-backup").exists());
        let after = store.recent_incidents(10).unwrap();
        assert_eq!(after.len(), 2);
        for old in &before {
            let new = store.incident(&old.id).unwrap().unwrap();
            assert_eq!(new.count, old.count, "{}", old.id);
            assert_eq!(new.first_seen, old.first_seen);
            assert_eq!(new.pact_key, old.pact_key);
            let mut fp = Fingerprinter::new();
            let want = fp.fingerprint_keyed(
                old.sample.as_bytes(),
                keys::first_key(old.sample.as_bytes())
                    .is_none()
                    .then_some(old.pact_key.as_bytes()),
            );
            assert_eq!(new.fingerprint, want);
            assert_eq!(new.normalized.as_bytes(), fp.normalized());
        }
        let keys = store.key_counts().unwrap();
        assert_eq!(keys["PACT:svc_v1:get"], 6);
        assert_eq!(keys["PACT:svc_v2:get"], 4);
        assert_eq!(store.totals().unwrap()["error_lines"], 12);
    }

    #[test]
    fn a_sample_that_is_not_its_line_keeps_its_identity() {
        let mut fp = Fingerprinter::new();
        assert!(v2_identity(&mut fp, "x \u{FFFD} PACT:a1:b", "PACT:a1:b").is_none());
        assert!(v2_identity(&mut fp, &"y".repeat(SAMPLE_MAX_BYTES), "").is_none());
        assert!(v2_identity(&mut fp, "PACT:a1:b 1", "PACT:a1:b").is_some());
    }
}
