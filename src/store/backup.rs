//! Backups and restores: a consistent copy of the store, taken while a daemon writes it.
//!
//! [`Store::backup`] copies every table of the schema (`schema.rs`) from ONE read
//! transaction into a fresh redb file: the copy is the store exactly as of that transaction
//! (redb's readers see a snapshot), whatever the writer commits meanwhile, and it is a clean,
//! compact file, never a byte copy of pages being written. It is written beside its
//! destination under a temporary name, synced, then renamed, so a half-written backup never
//! has the destination's name. A table the source has that this Sentinel does not know (a
//! newer Sentinel's) makes the backup fail instead of silently leaving it out.
//!
//! [`restore`] copies a backup the same way into a state directory's store, holding the
//! store open (exclusively) meanwhile, so it refuses while a daemon (or any other writer)
//! has it; the replaced file is kept as `sentinel.redb.pre-restore`.

use std::path::{Path, PathBuf};

use redb::{
    ReadTransaction, ReadableTable, TableDefinition, TableError, TableHandle, WriteTransaction,
};
use serde::Serialize;

use super::ci::{CI_DELIVERIES, CI_INCIDENTS, CI_QUEUE, FORGE_LINKS, FORGE_STATE};
use super::guard::{GUARD_WINDOWS, OVERFLOWS};
use super::records::{RECORDS, SEQS};
use super::schema::*;
use super::templates::{TEMPLATE_KEYS, TEMPLATE_MEMBERS, TEMPLATES};
use super::triage::TRIAGE;
use super::{Store, StoreError, builder, open_error};

/// What a backup or restore copied.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct CopySummary {
    /// The file written.
    pub path: PathBuf,
    /// Rows copied, per table (tables the source does not have are absent).
    pub tables: std::collections::BTreeMap<String, u64>,
    /// Every row copied.
    pub rows: u64,
    /// The size of the file written, in bytes.
    pub bytes: u64,
    /// The source's `wal_applied_seq` (the newest ingest-log entry its counts include).
    pub wal_applied_seq: u64,
}

impl CopySummary {
    /// The incidents copied: `incident_seqs` rows, or an older store's `incidents` rows.
    #[must_use]
    pub fn incidents(&self) -> u64 {
        let rows = |t: &str| self.tables.get(t).copied();
        rows(super::records::SEQS.name())
            .or_else(|| rows(INCIDENTS.name()))
            .unwrap_or(0)
    }
}

/// Copies `def` from `src` to `dst`; returns the rows copied (None: `src` has no such table).
fn copy<K: redb::Key + 'static, V: redb::Value + 'static>(
    src: &ReadTransaction,
    dst: &WriteTransaction,
    def: TableDefinition<K, V>,
) -> Result<Option<u64>, redb::Error> {
    let from = match src.open_table(def) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut to = dst.open_table(def)?;
    let mut n = 0;
    for row in from.iter()? {
        let (k, v) = row?;
        to.insert(k.value(), v.value())?;
        n += 1;
    }
    Ok(Some(n))
}

/// Copies every table of the schema from `src` into `dst`; fails on a table it does not know.
fn copy_all(
    src: &ReadTransaction,
    dst: &WriteTransaction,
    summary: &mut CopySummary,
) -> Result<(), redb::Error> {
    let mut known: Vec<String> = Vec::new();
    let mut note = |name: &str, n: Option<u64>| {
        known.push(name.to_string());
        if let Some(n) = n {
            summary.tables.insert(name.to_string(), n);
            summary.rows += n;
        }
    };
    macro_rules! each {
        ($($t:ident),* $(,)?) => {
            $( note($t.name(), copy(src, dst, $t)?); )*
        };
    }
    each!(
        META,
        INCIDENTS,
        RECORDS,
        SEQS,
        STATE,
        COUNTS,
        INCIDENT_IDS,
        RECENT,
        KEY_COUNTS,
        TOTALS,
        SOURCE_POSITIONS,
        FILES,
        WINDOWS,
        ACTIONED,
        FIX_JOBS,
        JOBS_OPEN,
        SPEND,
        EVENTS,
        INCIDENT_EVENTS,
        CURSORS,
        DELIVERED,
        DELIVERY_LOG,
        LEGACY,
        LEGACY_BY_TIME,
        FIXES,
        FIXES_BY_TIME,
        INCIDENT_FIXES,
        REGRESSION_WATCH,
        MINUTES,
        HOURS,
        ALL_MINUTES,
        ALL_HOURS,
        ATTRS,
        BY_COMPONENT,
        BY_SEVERITY,
        TALLIES,
        GUARD_WINDOWS,
        OVERFLOWS,
        TRIAGE,
        CI_INCIDENTS,
        FORGE_LINKS,
        CI_QUEUE,
        CI_DELIVERIES,
        FORGE_STATE,
        TEMPLATES,
        TEMPLATE_MEMBERS,
        TEMPLATE_KEYS,
    );
    for t in src.list_tables()? {
        let name = t.name().to_string();
        if !known.contains(&name) {
            return Err(redb::Error::Corrupted(format!(
                "table {name:?} is unknown to this Sentinel: a copy would leave it out"
            )));
        }
    }
    if src.list_multimap_tables()?.next().is_some() {
        return Err(redb::Error::Corrupted(
            "a multimap table is unknown to this Sentinel: a copy would leave it out".into(),
        ));
    }
    Ok(())
}

/// `path` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Writes the tables of `src` into a new file at `dest` (through a temporary name).
fn write_copy(
    src: &ReadTransaction,
    src_path: &Path,
    dest: &Path,
) -> Result<CopySummary, StoreError> {
    let tmp = with_suffix(dest, ".partial");
    let _ = std::fs::remove_file(&tmp);
    let storage = |e: redb::Error| StoreError::Storage {
        path: dest.to_path_buf(),
        source: e,
    };
    let mut summary = CopySummary {
        path: dest.to_path_buf(),
        ..CopySummary::default()
    };
    let result = (|| {
        let db = builder().create(&tmp).map_err(|e| open_error(&tmp, e))?;
        let txn = db.begin_write().map_err(|e| storage(e.into()))?;
        copy_all(src, &txn, &mut summary).map_err(|e| match e {
            redb::Error::Corrupted(detail) => StoreError::Corrupt {
                path: src_path.to_path_buf(),
                detail,
            },
            e => storage(e),
        })?;
        txn.commit().map_err(|e| storage(e.into()))?;
        drop(db);
        // The file's data is durable (redb synced it); its name must be too.
        std::fs::rename(&tmp, dest).map_err(|e| storage(e.into()))?;
        if let Some(dir) = dest.parent()
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    summary.bytes = std::fs::metadata(dest).map_or(0, |m| m.len());
    if let Ok(meta) = src.open_table(META) {
        summary.wal_applied_seq = meta
            .get("wal_applied_seq")
            .ok()
            .flatten()
            .map_or(0, |v| v.value());
    }
    Ok(summary)
}

impl Store {
    /// Writes a consistent copy of the store, as of one read transaction, to `dest` (a file
    /// that must not exist). Works on a read-only store and while another process writes.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when `dest` exists or cannot be written, or the store cannot be read.
    pub fn backup(&self, dest: &Path) -> Result<CopySummary, StoreError> {
        if dest.exists() {
            return Err(StoreError::Storage {
                path: dest.to_path_buf(),
                source: redb::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "already exists: a backup never overwrites a file",
                )),
            });
        }
        let txn = self.begin_read()?;
        write_copy(&txn, &self.path, dest)
    }
}

/// Replaces the store at `db` with a copy of the backup at `src`; the replaced file (if any)
/// is kept as `<db>.pre-restore`. Refused with [`StoreError::InUse`] while another process
/// has `db` open.
///
/// # Errors
///
/// [`StoreError`] when the backup cannot be read (a corrupt or newer file is named), the
/// store is in use, or a file cannot be written.
pub fn restore(src: &Path, db: &Path) -> Result<CopySummary, StoreError> {
    let Some(backup) = Store::open_read_only(src)? else {
        return Err(StoreError::Storage {
            path: src.to_path_buf(),
            source: redb::Error::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such backup",
            )),
        });
    };
    // Held (exclusively) until the new file is in place: no daemon can start meanwhile, and
    // one already running makes this fail with the owner's name.
    let held = if db.exists() {
        Some(builder().open(db).map_err(|e| open_error(db, e))?)
    } else {
        None
    };
    let txn = backup.begin_read()?;
    let tmp = with_suffix(db, ".restoring");
    let _ = std::fs::remove_file(&tmp);
    let mut summary = write_copy(&txn, src, &tmp)?;
    let io = |path: &Path, e: std::io::Error| StoreError::Storage {
        path: path.to_path_buf(),
        source: redb::Error::Io(e),
    };
    if held.is_some() {
        let kept = with_suffix(db, ".pre-restore");
        std::fs::rename(db, &kept).map_err(|e| io(db, e))?;
    }
    std::fs::rename(&tmp, db).map_err(|e| io(db, e))?;
    drop(held);
    summary.path = db.to_path_buf();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::{AttributionStatus, Severity};
    use crate::store::{IncidentDelta, IngestBatch};
    use jiff::Timestamp;

    fn batch(fps: std::ops::Range<u64>) -> IngestBatch {
        let mut b = IngestBatch::new();
        for fp in fps {
            let line = format!("PACT:svc:get error {fp}");
            b.incidents.insert(
                crate::scan::Fingerprint(fp),
                IncidentDelta::new(
                    crate::scan::Fingerprint(fp),
                    2,
                    &line,
                    AttributionStatus::Unregistered,
                    Severity::High,
                ),
            );
            *b.key_counts.entry("PACT:svc:get".into()).or_default() += 2;
        }
        b.totals.insert("error_lines", 2 * b.incidents.len() as u64);
        b
    }

    #[test]
    fn a_backup_of_a_store_with_a_row_in_every_table_copies_every_table() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("sentinel.redb");
        let golden = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/golden/store-v3-all-tables.redb"
        );
        std::fs::copy(golden, &db).unwrap();
        let store = Store::open_read_only(&db).unwrap().unwrap();
        let dest = dir.path().join("copy.redb");
        let summary = store.backup(&dest).unwrap();
        let tables = store.begin_read().unwrap().list_tables().unwrap().count();
        assert_eq!(summary.tables.len(), tables, "{summary:?}");
        // Every table with rows in it (the golden store's occurrence windows are empty).
        assert!(summary.tables.values().filter(|&&n| n > 0).count() >= tables - 1);
        let copy = Store::open_read_only(&dest).unwrap().unwrap();
        assert_eq!(copy.totals().unwrap(), store.totals().unwrap());
        assert_eq!(
            copy.recent_incidents(100).unwrap(),
            store.recent_incidents(100).unwrap()
        );
    }

    #[test]
    fn a_backup_is_the_store_as_of_its_transaction_and_restores() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("sentinel.redb");
        let store = Store::open(&db).unwrap();
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        store.apply(&batch(1..50), t0).unwrap();
        let dest = dir.path().join("copy.redb");
        let summary = store.backup(&dest).unwrap();
        assert!(summary.rows > 0 && summary.incidents() == 49);
        // Later writes are not in it.
        store.apply(&batch(50..60), t0).unwrap();
        // Never overwritten.
        assert!(store.backup(&dest).is_err());
        let copy = Store::open_read_only(&dest).unwrap().unwrap();
        assert_eq!(copy.incident_count().unwrap(), 49);
        assert_eq!(copy.totals().unwrap()["error_lines"], 98);
        assert_eq!(copy.key_counts().unwrap()["PACT:svc:get"], 98);
        assert_eq!(
            copy.incident_tallies(true).unwrap(),
            copy.recount_tallies().unwrap()
        );
        drop(copy);
        // Refused while the store is open elsewhere (here: by `store`).
        let err = restore(&dest, &db).unwrap_err();
        assert!(matches!(err, StoreError::InUse { .. }), "{err}");
        drop(store);
        restore(&dest, &db).unwrap();
        assert!(dir.path().join("sentinel.redb.pre-restore").exists());
        let back = Store::open(&db).unwrap();
        assert_eq!(back.incident_count().unwrap(), 49);
        assert_eq!(back.totals().unwrap()["error_lines"], 98);
    }
}
