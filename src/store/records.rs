//! Incident records by insertion sequence (schema version 7): `incident_records` (sequence →
//! encoded [`super::Incident`]) and `incident_seqs` (fingerprint → sequence).
//!
//! Up to version 6 the records were keyed by fingerprint in `incidents`. Fingerprints are
//! hashes, so a scan creating thousands of incidents inserted its records all over that
//! table: every leaf took new records until the end, leaves were half full, and once the
//! transaction's dirty pages passed redb's write buffer (half its cache) the leaves went to
//! the file and were read back for the next insert. On the 1 GiB corpus (28,638 new
//! incidents) the first scan wrote 34,948 pages and read back 23,551 for a store of 11,398.
//! A record is the largest row of an incident (about 700 bytes), written once when the
//! incident is created and seldom after (a status change, a fix); keyed by a sequence taken
//! in creation order, new records append to the table's last leaf (redb packs an
//! ascending load), a filled leaf is never touched again, and only the small
//! fingerprint → sequence table takes random inserts.
//!
//! Everything that reads or writes a record by fingerprint goes through [`Records`] (a write
//! transaction) or [`ReadRecords`] (a read transaction, which also reads an older store's
//! `incidents` as it is: a read-only handle never migrates).

use redb::{AccessGuard, ReadableTable, ReadableTableMetadata, StorageError, TableDefinition};

use super::{Store, StoreError};

/// Sequence → encoded incident record (version 7).
pub(crate) const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("incident_records");
/// Fingerprint → the sequence of its record in [`RECORDS`] (version 7).
pub(crate) const SEQS: TableDefinition<u64, u64> = TableDefinition::new("incident_seqs");

/// The record of `fp` through `seqs` and `records`.
fn get_in<'r>(
    seqs: &impl ReadableTable<u64, u64>,
    records: &'r impl ReadableTable<u64, &'static [u8]>,
    fp: u64,
) -> Result<Option<AccessGuard<'r, &'static [u8]>>, StorageError> {
    match seqs.get(fp)? {
        Some(seq) => records.get(seq.value()),
        None => Ok(None),
    }
}

/// The incident records of a write transaction (always this version's: a writer migrates).
pub(crate) struct Records<'t> {
    seqs: redb::Table<'t, u64, u64>,
    records: redb::Table<'t, u64, &'static [u8]>,
    /// The next sequence, once known.
    next: Option<u64>,
}

impl<'t> Records<'t> {
    pub(crate) fn open(st: &Store, txn: &'t redb::WriteTransaction) -> Result<Self, StoreError> {
        Ok(Records {
            seqs: txn.open_table(SEQS).map_err(st.storage())?,
            records: txn.open_table(RECORDS).map_err(st.storage())?,
            next: None,
        })
    }

    /// The record of incident `fp`.
    pub(crate) fn get(
        &self,
        fp: u64,
    ) -> Result<Option<AccessGuard<'_, &'static [u8]>>, StorageError> {
        get_in(&self.seqs, &self.records, fp)
    }

    /// Writes the record of incident `fp`: in its place when it has one, else appended.
    pub(crate) fn insert(&mut self, fp: u64, record: &[u8]) -> Result<(), StorageError> {
        let seq = self.seqs.get(fp)?.map(|s| s.value());
        match seq {
            Some(seq) => {
                self.records.insert(seq, record)?;
                Ok(())
            }
            None => self.insert_new(fp, record),
        }
    }

    /// Appends the record of an incident that has none (the caller knows: its state row
    /// was just found missing), without looking for one.
    pub(crate) fn insert_new(&mut self, fp: u64, record: &[u8]) -> Result<(), StorageError> {
        let seq = match self.next {
            Some(s) => s,
            None => self.records.last()?.map_or(0, |(k, _)| k.value() + 1),
        };
        self.next = Some(seq + 1);
        self.seqs.insert(fp, seq)?;
        self.records.insert(seq, record)?;
        Ok(())
    }

    /// Removes the record of incident `fp`; returns it.
    pub(crate) fn remove(&mut self, fp: u64) -> Result<Option<Vec<u8>>, StorageError> {
        let seq = self.seqs.remove(fp)?.map(|s| s.value());
        match seq {
            Some(seq) => Ok(self.records.remove(seq)?.map(|v| v.value().to_vec())),
            None => Ok(None),
        }
    }

    /// Every record, in creation order (the fingerprint is in each record).
    pub(crate) fn iter(&self) -> Result<redb::Range<'_, u64, &'static [u8]>, StorageError> {
        self.records.iter()
    }
}

/// The incident records of a read transaction: this version's tables, an older store's
/// `incidents` (read as it is by a read-only handle), or none yet.
pub(crate) enum ReadRecords {
    Seq {
        seqs: redb::ReadOnlyTable<u64, u64>,
        records: redb::ReadOnlyTable<u64, &'static [u8]>,
    },
    Legacy(redb::ReadOnlyTable<u64, &'static [u8]>),
    Empty,
}

impl ReadRecords {
    pub(crate) fn open(st: &Store, txn: &redb::ReadTransaction) -> Result<Self, StoreError> {
        if let (Some(seqs), Some(records)) =
            (st.read_table(txn, SEQS)?, st.read_table(txn, RECORDS)?)
        {
            return Ok(ReadRecords::Seq { seqs, records });
        }
        Ok(match st.read_table(txn, super::schema::INCIDENTS)? {
            Some(t) => ReadRecords::Legacy(t),
            None => ReadRecords::Empty,
        })
    }

    /// The record of incident `fp`.
    pub(crate) fn get(
        &self,
        fp: u64,
    ) -> Result<Option<AccessGuard<'_, &'static [u8]>>, StorageError> {
        match self {
            ReadRecords::Seq { seqs, records } => get_in(seqs, records, fp),
            ReadRecords::Legacy(t) => t.get(fp),
            ReadRecords::Empty => Ok(None),
        }
    }

    /// Whether incident `fp` has a record (without reading it).
    pub(crate) fn contains(&self, fp: u64) -> Result<bool, StorageError> {
        Ok(match self {
            ReadRecords::Seq { seqs, .. } => seqs.get(fp)?.is_some(),
            ReadRecords::Legacy(t) => t.get(fp)?.is_some(),
            ReadRecords::Empty => false,
        })
    }

    /// The number of incidents.
    pub(crate) fn len(&self) -> Result<u64, StorageError> {
        match self {
            ReadRecords::Seq { seqs, .. } => seqs.len(),
            ReadRecords::Legacy(t) => t.len(),
            ReadRecords::Empty => Ok(0),
        }
    }

    /// Every record (the fingerprint is in each), in creation order (this version) or
    /// fingerprint order (an older store).
    pub(crate) fn iter(
        &self,
    ) -> Result<Option<redb::Range<'static, u64, &'static [u8]>>, StorageError> {
        match self {
            ReadRecords::Seq { records, .. } => records.range::<u64>(..).map(Some),
            ReadRecords::Legacy(t) => t.range::<u64>(..).map(Some),
            ReadRecords::Empty => Ok(None),
        }
    }
}

/// Where [`Store::load`] finds a record: either kind of transaction.
pub(crate) trait RecordOf {
    /// The record of incident `fp`.
    fn record(&self, fp: u64) -> Result<Option<AccessGuard<'_, &'static [u8]>>, StorageError>;
}

impl RecordOf for Records<'_> {
    fn record(&self, fp: u64) -> Result<Option<AccessGuard<'_, &'static [u8]>>, StorageError> {
        self.get(fp)
    }
}

impl RecordOf for ReadRecords {
    fn record(&self, fp: u64) -> Result<Option<AccessGuard<'_, &'static [u8]>>, StorageError> {
        self.get(fp)
    }
}

/// Version 6 → 7: moves every record of `incidents` (fingerprint order) to
/// `incident_records` under a new sequence and deletes `incidents`; returns how many.
pub(super) fn sequence(st: &Store, txn: &redb::WriteTransaction) -> Result<u64, StoreError> {
    let mut moved = 0;
    {
        let old = txn
            .open_table(super::schema::INCIDENTS)
            .map_err(st.storage())?;
        let mut new = Records::open(st, txn)?;
        for row in old.iter().map_err(st.storage())? {
            let (k, v) = row.map_err(st.storage())?;
            new.insert_new(k.value(), v.value()).map_err(st.storage())?;
            moved += 1;
        }
    }
    txn.delete_table(super::schema::INCIDENTS)
        .map_err(st.storage())?;
    Ok(moved)
}

/// Moves every record back to `incidents` by fingerprint (what a store older than version 7
/// holds), for the tests that make an older store out of a new one.
#[cfg(test)]
pub(crate) fn unsequence(txn: &redb::WriteTransaction) {
    {
        let records = txn.open_table(RECORDS).unwrap();
        let mut old = txn.open_table(super::schema::INCIDENTS).unwrap();
        for row in records.iter().unwrap() {
            let (_, v) = row.unwrap();
            let inc = super::Incident::decode(v.value()).unwrap();
            old.insert(inc.fingerprint.0, v.value()).unwrap();
        }
    }
    assert!(txn.delete_table(RECORDS).unwrap());
    assert!(txn.delete_table(SEQS).unwrap());
}
