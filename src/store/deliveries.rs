//! Webhook delivery ids: what lets a retried delivery be acknowledged without counting again.
//!
//! The ids themselves live in memory ([`crate::ingest::dedupe::DeliveryIds`]), as 64-bit
//! hashes ([`delivery_hash`]) — checking one is a hash-set probe, not a B-tree descent.
//! Here they are made durable: every commit that applies webhook events writes ONE row,
//! `(recorded at µs, ingest-log seq) → the 8-byte hashes it recorded`, so that the set can
//! be rebuilt at start. Forgetting (after [`crate::ingest::writer::DELIVERY_TTL`] or
//! beyond the remembered maximum) removes whole rows, oldest first.
//!
//! Before this table, ids were kept one row each in `deliveries` (string keys) and
//! `deliveries_by_time`; [`StoreTxn::migrate_legacy_deliveries`] turns such a store's ids
//! into one row of hashes and drops the old tables.

use redb::{ReadableTable, TableError};

use super::schema::{DELIVERY_LOG, LEGACY, LEGACY_BY_TIME};
use super::{Store, StoreError, StoreTxn};

/// The hash a webhook delivery id is remembered by: xxh3-64 of `scope \0 id`. Two different
/// ids are taken for one with a probability of n / 2^64 for n remembered ids (below 10^-12
/// per event at the 3.5 million remembered at most).
pub fn delivery_hash(scope: &str, id: &str) -> u64 {
    let n = scope.len() + 1 + id.len();
    let mut buf = [0u8; 256];
    if n <= buf.len() {
        buf[..scope.len()].copy_from_slice(scope.as_bytes());
        buf[scope.len() + 1..n].copy_from_slice(id.as_bytes());
        xxhash_rust::xxh3::xxh3_64(&buf[..n])
    } else {
        let mut v = Vec::with_capacity(n);
        v.extend_from_slice(scope.as_bytes());
        v.push(0);
        v.extend_from_slice(id.as_bytes());
        xxhash_rust::xxh3::xxh3_64(&v)
    }
}

fn encode(hashes: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hashes.len() * 8);
    for h in hashes {
        out.extend_from_slice(&h.to_le_bytes());
    }
    out
}

fn decode(b: &[u8]) -> impl Iterator<Item = u64> + '_ {
    b.chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
}

impl Store {
    /// Every remembered delivery hash, oldest row first: `(recorded at µs, hashes)`.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn delivery_rows(&self) -> Result<Vec<(u64, Vec<u64>)>, StoreError> {
        let txn = self.begin_read()?;
        let Some(t) = self.read_table(&txn, DELIVERY_LOG)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for e in t.iter().map_err(self.storage())? {
            let (k, v) = e.map_err(self.storage())?;
            out.push((k.value().0, decode(v.value()).collect()));
        }
        Ok(out)
    }

    /// Whether the webhook delivery `id` of `scope` is remembered durably (a linear scan:
    /// for tests and diagnostics; the daemon asks its in-memory set).
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn delivery_seen(&self, scope: &str, id: &str) -> Result<bool, StoreError> {
        let h = delivery_hash(scope, id);
        Ok(self.delivery_rows()?.iter().any(|(_, hs)| hs.contains(&h)))
    }
}

impl StoreTxn<'_> {
    /// Remembers `hashes` (recorded at `at_us`, applied with ingest-log record `seq`).
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn record_delivery_hashes(
        &mut self,
        at_us: u64,
        seq: u64,
        hashes: &[u64],
    ) -> Result<(), StoreError> {
        if hashes.is_empty() {
            return Ok(());
        }
        let st = self.store;
        let mut t = self.txn.open_table(DELIVERY_LOG).map_err(st.storage())?;
        let bytes = encode(hashes);
        t.insert((at_us, seq), bytes.as_slice())
            .map_err(st.storage())?;
        Ok(())
    }

    /// Forgets remembered rows, oldest first, while the oldest was recorded before
    /// `cutoff_us` or `too_many` says so; each forgotten row's hashes go to `forget` (which
    /// returns whether still too many are remembered). At most `max_rows` rows; returns how
    /// many hashes were forgotten.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn prune_delivery_rows(
        &mut self,
        cutoff_us: u64,
        max_rows: usize,
        mut too_many: bool,
        mut forget: impl FnMut(&mut dyn Iterator<Item = u64>) -> bool,
    ) -> Result<usize, StoreError> {
        let st = self.store;
        let mut t = self.txn.open_table(DELIVERY_LOG).map_err(st.storage())?;
        let mut n = 0;
        for _ in 0..max_rows {
            let Some(first) = t.first().map_err(st.storage())? else {
                break;
            };
            let (key, hashes) = (first.0.value(), first.1.value().to_vec());
            if key.0 >= cutoff_us && !too_many {
                break;
            }
            drop(first);
            t.remove(key).map_err(st.storage())?;
            n += hashes.len() / 8;
            too_many = forget(&mut decode(&hashes));
        }
        Ok(n)
    }

    /// Turns the ids an older Sentinel kept one row each (`deliveries`) into one row of
    /// hashes and drops the old tables; returns how many ids moved.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn migrate_legacy_deliveries(&mut self) -> Result<usize, StoreError> {
        let st = self.store;
        let mut hashes = Vec::new();
        let mut newest = 0u64;
        {
            let t = match self.txn.open_table(LEGACY) {
                Ok(t) => t,
                Err(TableError::TableDoesNotExist(_)) => return Ok(0),
                Err(e) => return Err(st.storage()(e)),
            };
            for e in t.iter().map_err(st.storage())? {
                let (k, v) = e.map_err(st.storage())?;
                let key = k.value();
                let (scope, id) = key.split_once('\0').unwrap_or(("", key));
                hashes.push(delivery_hash(scope, id));
                newest = newest.max(v.value());
            }
        }
        self.txn.delete_table(LEGACY).map_err(st.storage())?;
        self.txn
            .delete_table(LEGACY_BY_TIME)
            .map_err(st.storage())?;
        self.record_delivery_hashes(newest, 0, &hashes)?;
        Ok(hashes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_come_back_oldest_first_and_prune_by_age_or_count() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let (a, b, c) = (
            delivery_hash("hook", "a"),
            delivery_hash("hook", "b"),
            delivery_hash("other", "a"),
        );
        assert_ne!(a, c, "the scope is part of the hash");
        let mut txn = store.begin_write().unwrap();
        txn.record_delivery_hashes(20, 2, &[c]).unwrap();
        txn.record_delivery_hashes(10, 1, &[a, b]).unwrap();
        txn.record_delivery_hashes(30, 3, &[]).unwrap();
        txn.commit().unwrap();
        assert_eq!(
            store.delivery_rows().unwrap(),
            [(10, vec![a, b]), (20, vec![c])]
        );
        assert!(store.delivery_seen("hook", "b").unwrap());
        assert!(!store.delivery_seen("hook", "c").unwrap());
        // By age: only the row before the cutoff.
        let mut gone = Vec::new();
        let mut txn = store.begin_write().unwrap();
        let n = txn
            .prune_delivery_rows(15, 10, false, |hs| {
                gone.extend(hs);
                false
            })
            .unwrap();
        txn.commit().unwrap();
        assert_eq!((n, gone), (2, vec![a, b]));
        // By count: rows go while the callback says too many.
        let mut txn = store.begin_write().unwrap();
        txn.record_delivery_hashes(40, 4, &[a]).unwrap();
        let n = txn.prune_delivery_rows(0, 10, true, |_| false).unwrap();
        txn.commit().unwrap();
        assert_eq!(n, 1);
        assert_eq!(store.delivery_rows().unwrap(), [(40, vec![a])]);
    }

    #[test]
    fn ids_of_an_older_sentinel_become_one_row_of_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let txn = store.begin_write().unwrap();
        {
            let mut t = txn.txn.open_table(LEGACY).unwrap();
            t.insert("hook\0e1", 5).unwrap();
            t.insert("hook\0e2", 7).unwrap();
            let mut by = txn.txn.open_table(LEGACY_BY_TIME).unwrap();
            by.insert((5, "hook\0e1"), ()).unwrap();
        }
        txn.commit().unwrap();
        let mut txn = store.begin_write().unwrap();
        assert_eq!(txn.migrate_legacy_deliveries().unwrap(), 2);
        txn.commit().unwrap();
        assert!(store.delivery_seen("hook", "e1").unwrap());
        assert!(store.delivery_seen("hook", "e2").unwrap());
        assert_eq!(store.delivery_rows().unwrap().len(), 1);
        // Done once: nothing left to move.
        let mut txn = store.begin_write().unwrap();
        assert_eq!(txn.migrate_legacy_deliveries().unwrap(), 0);
        txn.commit().unwrap();
    }
}
