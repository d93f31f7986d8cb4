//! Durable delivery cursors of the integrations outbox (`outbox_cursors`: sink name → the
//! sequence number of the newest event the sink has accepted or that was skipped for it).
//!
//! The outbox (`crate::integrations`) follows the event log once per sink and moves its
//! cursor only after the sink accepted the event; a restart resumes after the cursor.
//!
//! Pruning respects the slowest cursor: the log normally keeps the newest
//! [`super::events::EVENTS_KEEP`] events, but never drops an event a configured sink has not
//! reached yet — up to [`EVENTS_HARD_CAP`] events, beyond which the oldest undelivered ones
//! go anyway (the outbox counts them in `sentinel_outbox_dropped_total`), so a sink that is
//! down for weeks cannot fill the disk.

use redb::{ReadableTable, TableError};

use std::collections::BTreeMap;

use super::schema::{CURSORS, DELIVERED};
use super::{Store, StoreError, StoreTxn};

/// The most events the log keeps for a sink that lags behind (about 5 KiB each at worst).
pub const EVENTS_HARD_CAP: u64 = 500_000;

impl Store {
    /// Every sink's cursor.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn outbox_cursors(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let txn = self.begin_read()?;
        let Some(t) = self.read_table(&txn, CURSORS)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for row in t.iter().map_err(self.storage())? {
            let (k, v) = row.map_err(self.storage())?;
            out.push((k.value().to_string(), v.value()));
        }
        Ok(out)
    }

    /// The cursor of `sink`, if it has one.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn outbox_cursor(&self, sink: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .outbox_cursors()?
            .into_iter()
            .find(|(k, _)| k == sink)
            .map(|(_, v)| v))
    }

    /// Sets the cursor of `sink` to `seq` (durably, in its own transaction).
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors or when the store is read-only.
    pub fn set_outbox_cursor(&self, sink: &str, seq: u64) -> Result<(), StoreError> {
        self.commit_outbox(sink, seq, &BTreeMap::new())
    }

    /// Sets the cursor of `sink` to `seq` and adds `delivered` (events accepted since the last
    /// commit, by component) to the sink's per-component counts, in one transaction: the
    /// counts move with the cursor, so a restart that repeats events repeats their counting
    /// only as far as it repeats their delivery.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors or when the store is read-only.
    pub fn commit_outbox(
        &self,
        sink: &str,
        seq: u64,
        delivered: &BTreeMap<String, u64>,
    ) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        {
            let mut t = txn.txn.open_table(CURSORS).map_err(self.storage())?;
            t.insert(sink, seq).map_err(self.storage())?;
        }
        if !delivered.is_empty() {
            let mut t = txn.txn.open_table(DELIVERED).map_err(self.storage())?;
            for (component, n) in delivered {
                let before = t
                    .get((sink, component.as_str()))
                    .map_err(self.storage())?
                    .map_or(0, |v| v.value());
                t.insert((sink, component.as_str()), before.saturating_add(*n))
                    .map_err(self.storage())?;
            }
        }
        txn.commit()
    }

    /// Events `sink` accepted, by component (components with none are absent).
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn delivered_by_component(&self, sink: &str) -> Result<BTreeMap<String, u64>, StoreError> {
        let txn = self.begin_read()?;
        let Some(t) = self.read_table(&txn, DELIVERED)? else {
            return Ok(BTreeMap::new());
        };
        let mut out = BTreeMap::new();
        for row in t.range((sink, "")..).map_err(self.storage())? {
            let (k, v) = row.map_err(self.storage())?;
            let (s, component) = k.value();
            if s != sink {
                break;
            }
            out.insert(component.to_string(), v.value());
        }
        Ok(out)
    }

    /// Forgets the cursors of every sink not in `keep` (sinks no longer configured, so that
    /// they do not hold back pruning).
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors or when the store is read-only.
    pub fn retain_outbox_cursors(&self, keep: &[&str]) -> Result<(), StoreError> {
        let stale: Vec<String> = self
            .outbox_cursors()?
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| !keep.contains(&k.as_str()))
            .collect();
        if stale.is_empty() {
            return Ok(());
        }
        let txn = self.begin_write()?;
        {
            let mut t = txn.txn.open_table(CURSORS).map_err(self.storage())?;
            for k in &stale {
                t.remove(k.as_str()).map_err(self.storage())?;
            }
        }
        txn.commit()
    }
}

impl StoreTxn<'_> {
    /// The oldest sequence number the log must keep when its newest is `head`: the newest
    /// [`super::events::EVENTS_KEEP`] events, and every event a sink has not reached yet up
    /// to [`EVENTS_HARD_CAP`] (see the module docs).
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn events_keep_from(&self, head: u64) -> Result<u64, StoreError> {
        let st = self.store;
        let normal = head.saturating_sub(super::events::EVENTS_KEEP);
        let slowest = match self.txn.open_table(CURSORS) {
            Ok(t) => {
                let mut min: Option<u64> = None;
                for row in t.iter().map_err(st.storage())? {
                    let (_, v) = row.map_err(st.storage())?;
                    min = Some(min.map_or(v.value(), |m| m.min(v.value())));
                }
                min
            }
            Err(TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(st.storage()(e)),
        };
        Ok(match slowest {
            // The first event the slowest sink still needs is `cursor + 1`.
            Some(c) => normal
                .min(c.saturating_add(1))
                .max(head.saturating_sub(EVENTS_HARD_CAP)),
            None => normal,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::store::{EventKind, NewEvent, Store};
    use std::collections::BTreeMap;

    fn emit(store: &Store, n: usize) {
        let mut txn = store.begin_write().unwrap();
        for _ in 0..n {
            txn.emit(
                NewEvent {
                    kind: EventKind::FixStarted,
                    incident_id: "i".into(),
                    fix_id: String::new(),
                    component_id: String::new(),
                    data: serde_json::Value::Null,
                    incident: None,
                },
                jiff::Timestamp::UNIX_EPOCH,
            )
            .unwrap();
        }
        txn.commit().unwrap();
    }

    #[test]
    fn cursors_persist_and_hold_back_pruning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.outbox_cursor("arbiter").unwrap(), None);
        emit(&store, 10);
        store.set_outbox_cursor("arbiter", 3).unwrap();
        store.set_outbox_cursor("notify", 8).unwrap();
        store.set_outbox_cursor("old", 1).unwrap();
        store.retain_outbox_cursors(&["arbiter", "notify"]).unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.outbox_cursor("arbiter").unwrap(), Some(3));
        assert_eq!(store.outbox_cursor("old").unwrap(), None);
        let txn = store.begin_write().unwrap();
        // The slowest sink (arbiter, at 3) still needs event 4.
        assert_eq!(txn.events_keep_from(10).unwrap(), 0);
        assert_eq!(txn.events_keep_from(200_000).unwrap(), 4);
        // Beyond the hard cap the oldest go anyway.
        assert_eq!(
            txn.events_keep_from(super::EVENTS_HARD_CAP + 100).unwrap(),
            100
        );
    }

    #[test]
    fn delivered_counts_move_with_the_cursor_per_sink_and_component() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = Store::open(&path).unwrap();
        assert!(store.delivered_by_component("arbiter").unwrap().is_empty());
        let batch = |pairs: &[(&str, u64)]| {
            pairs
                .iter()
                .map(|(c, n)| (c.to_string(), *n))
                .collect::<BTreeMap<_, _>>()
        };
        store
            .commit_outbox("arbiter", 2, &batch(&[("auth", 1), ("billing", 1)]))
            .unwrap();
        store
            .commit_outbox("arbiter", 3, &batch(&[("auth", 1)]))
            .unwrap();
        store
            .commit_outbox("arbitrary", 9, &batch(&[("auth", 5)]))
            .unwrap();
        store.set_outbox_cursor("arbiter", 4).unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.outbox_cursor("arbiter").unwrap(), Some(4));
        assert_eq!(
            store.delivered_by_component("arbiter").unwrap(),
            batch(&[("auth", 2), ("billing", 1)])
        );
        assert_eq!(
            store.delivered_by_component("arbitrary").unwrap(),
            batch(&[("auth", 5)])
        );
    }
}
