//! Secondary indexes of incidents (schema version 3): filtered pages in the time of an
//! unfiltered one.
//!
//! | table | key | value |
//! |---|---|---|
//! | `incident_state` | fingerprint | (status, severity, component) as indexed, with the hot fields (see `store/state.rs`) |
//! | `incidents_by_component` | (component, severity, status, last_seen µs, fingerprint) | () |
//! | `incidents_by_severity` | (severity, status, last_seen µs, fingerprint) | () |
//! | `incident_tallies` | (`status` / `severity` / `component`, value) | incidents (see [`super::counts`]) |
//!
//! Why two composite indexes and not one per field: every filter of `GET /incidents` is then
//! a union of *exact* key ranges, never a scan that skips non-matching rows. A filter names
//! a component or not, at most one severity (else all 5) and a status, `active` (5) or none
//! (7): a component filter reads `incidents_by_component` in the ranges `{component} ×
//! severities × statuses`, any other filter `incidents_by_severity` in `severities ×
//! statuses`: at most 35 ranges, each already in recency order. A page merges their newest
//! entries ([`merge`]: a heap, one key read per row returned plus one range seek per
//! range), so it costs `O(ranges · log n + limit · log ranges)` whatever the filter, how
//! many incidents match it (none included) and however they are combined. Two indexes, not
//! three, so that the ingest writer moves two entries when an incident is seen again.
//!
//! The recency key inside each range is `(last_seen µs, fingerprint)`, so a page's cursor
//! is a [`RecentKey`] and keeps its promise: incidents that arrive or move while a client
//! pages sort before it. Since version 4 there is no recency index apart: the empty filter
//! reads all 35 ranges of `incidents_by_severity` (every incident is in it once), and the
//! sweeps that walk incidents oldest first (retention, the trend counters) merge the same
//! ranges upwards ([`oldest_keys`]). A separate `recent` table cost every new incident an
//! insert and every recency move a removal and an insert, for pages that cost about the
//! same either way.
//!
//! Every write that creates an incident, moves its `last_seen` or changes its status,
//! severity or component goes through an [`Indexer`] opened in the same write transaction:
//! the ingest writer ([`super::StoreTxn::apply`]: creation, recency, escalation,
//! regressions), the fixer's and the approvals' transitions
//! ([`super::StoreTxn::update_incident`]), re-attribution
//! ([`super::StoreTxn::reattribute`]) and the migrations ([`build`], [`fold_state`]). An
//! incident's `incident_state` row names what the index holds for it, so moving its entries
//! needs no decoding of its record; the ingest writer reads that row anyway for the count.

use std::collections::BinaryHeap;
use std::ops::Bound;

use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use super::counts::{COMPONENT, SEVERITY, STATUS};
use super::schema::{ACTIONED, ATTRS, BY_COMPONENT, BY_SEVERITY, COUNTS, INCIDENTS, TALLIES};
use super::{Incident, IncidentFilter, IncidentStatus, RecentKey, StatusFilter, Store, StoreError};
use crate::attribute::Severity;

use super::state::{self, Hot, Names};

fn names(inc: &Incident) -> Names<'_> {
    (
        inc.status.as_str(),
        inc.severity.as_str(),
        inc.component_id.as_str(),
    )
}

/// The index tables of one write transaction, with `incident_state` (the row that says
/// where an incident's entries are). See the module docs.
pub(crate) struct Indexer<'s, 't> {
    st: &'s Store,
    state: redb::Table<'t, u64, &'static [u8]>,
    entries: Entries<'t>,
    tallies: redb::Table<'t, (&'static str, &'static str), u64>,
    /// Tally changes held until [`Indexer::finish`] (an indexer opened with
    /// [`Indexer::open_batched`]); `None`: each change is written at once.
    /// Per dimension, then per value (looked up by `&str`: no allocation per incident).
    held: Option<std::collections::HashMap<&'static str, std::collections::HashMap<String, i64>>>,
    /// The row being read or written (reused: no allocation per incident).
    row: Vec<u8>,
    /// Whose row `row` is, as stored (None: not known to be anyone's).
    row_of: Option<u64>,
}

/// The two secondary indexes (apart from `incident_state`, so that an entry can be moved
/// while the row it is read from is held).
struct Entries<'t> {
    by_component: redb::Table<'t, (&'static str, &'static str, &'static str, u64, u64), ()>,
    by_severity: redb::Table<'t, (&'static str, &'static str, u64, u64), ()>,
}

impl Entries<'_> {
    fn put(&mut self, st: &Store, fp: u64, last_us: u64, n: Names<'_>) -> Result<(), StoreError> {
        let (status, sev, c) = n;
        self.by_component
            .insert((c, sev, status, last_us, fp), ())
            .map_err(st.storage())?;
        self.by_severity
            .insert((sev, status, last_us, fp), ())
            .map_err(st.storage())?;
        Ok(())
    }

    fn take(&mut self, st: &Store, fp: u64, last_us: u64, n: Names<'_>) -> Result<(), StoreError> {
        let (status, sev, c) = n;
        let a = self
            .by_component
            .remove((c, sev, status, last_us, fp))
            .map_err(st.storage())?
            .is_some();
        let b = self
            .by_severity
            .remove((sev, status, last_us, fp))
            .map_err(st.storage())?
            .is_some();
        if a && b {
            Ok(())
        } else {
            debug_assert!(false, "incident {fp:016x} is not where the index says");
            Err(StoreError::Corrupt {
                path: st.path.clone(),
                detail: format!("incident {fp:016x} is missing from its index entries"),
            })
        }
    }
}

/// A stored incident without a row in `incident_state` is a broken invariant: an error (and
/// a panic in debug builds), never a silently wrong index.
fn not_indexed(st: &Store, fp: u64) -> StoreError {
    debug_assert!(false, "incident {fp:016x} is not indexed");
    StoreError::Corrupt {
        path: st.path.clone(),
        detail: format!("incident {fp:016x} has no row in incident_state"),
    }
}

/// A row of `incident_state` this version cannot read (or a name it cannot write).
pub(super) fn bad_row(st: &Store, fp: u64) -> StoreError {
    StoreError::Corrupt {
        path: st.path.clone(),
        detail: format!("incident {fp:016x}: unreadable incident_state row"),
    }
}

impl<'s, 't> Indexer<'s, 't> {
    /// Opens (creating them if need be) the index tables in `txn`.
    pub(crate) fn open(st: &'s Store, txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        Ok(Indexer {
            st,
            state: txn.open_table(super::schema::STATE).map_err(st.storage())?,
            entries: Entries {
                by_component: txn.open_table(BY_COMPONENT).map_err(st.storage())?,
                by_severity: txn.open_table(BY_SEVERITY).map_err(st.storage())?,
            },
            tallies: txn.open_table(TALLIES).map_err(st.storage())?,
            held: None,
            row: Vec::with_capacity(64),
            row_of: None,
        })
    }

    /// Like [`Indexer::open`], but the tallies are summed in memory and written by
    /// [`Indexer::finish`], once per value instead of once per incident: for the ingest
    /// writer, which creates thousands of incidents of a few components per transaction.
    /// `finish` must be called before the transaction commits (tests check the tallies); one
    /// dropped without it on an error path loses nothing, since its transaction is dropped
    /// (rolled back) too. (A debug assertion in `Drop` said so, and fired on exactly that
    /// error path when a storage fault struck between an incident and `finish`.)
    pub(crate) fn open_batched(
        st: &'s Store,
        txn: &'t WriteTransaction,
    ) -> Result<Self, StoreError> {
        let mut idx = Indexer::open(st, txn)?;
        idx.held = Some(std::collections::HashMap::new());
        Ok(idx)
    }

    /// Writes the tallies held (see [`Indexer::open_batched`]).
    pub(crate) fn finish(mut self) -> Result<(), StoreError> {
        let held = self.held.take().unwrap_or_default();
        for (dim, values) in held {
            for (value, delta) in values {
                if delta != 0 {
                    self.write_tally(dim, &value, delta)?;
                }
            }
        }
        Ok(())
    }

    /// Reads `fp`'s row into `self.row`; false when it has none.
    fn read(&mut self, fp: u64) -> Result<bool, StoreError> {
        self.row_of = None;
        match self.state.get(fp).map_err(self.st.storage())? {
            Some(v) => {
                self.row.clear();
                self.row.extend_from_slice(v.value());
                self.row_of = Some(fp);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Writes `self.row` as `fp`'s row.
    fn write(&mut self, fp: u64) -> Result<(), StoreError> {
        self.row_of = None;
        self.state
            .insert(fp, self.row.as_slice())
            .map_err(self.st.storage())?;
        self.row_of = Some(fp);
        Ok(())
    }

    /// A new incident, with its hot fields: its row written, indexed and counted.
    pub(crate) fn add(&mut self, fp: u64, hot: Hot, inc: &Incident) -> Result<(), StoreError> {
        let n = names(inc);
        state::encode(&mut self.row, hot, n, &inc.id).map_err(|_| bad_row(self.st, fp))?;
        self.write(fp)?;
        self.entries.put(self.st, fp, hot.last_us, n)?;
        self.tally(STATUS, n.0, 1)?;
        self.tally(SEVERITY, n.1, 1)?;
        self.tally(COMPONENT, n.2, 1)
    }

    /// The hot fields of incident `fp` (None: no such incident).
    pub(crate) fn hot(&mut self, fp: u64) -> Result<Option<Hot>, StoreError> {
        if !self.read(fp)? {
            return Ok(None);
        }
        state::hot(&self.row)
            .map(Some)
            .map_err(|_| bad_row(self.st, fp))
    }

    /// Incident `fp`, read by the last [`Indexer::hot`], gets `to` as its hot fields: its
    /// entries move when its last seen did (the ingest writer's hot path: one write, no
    /// decoding, no allocation).
    pub(crate) fn set_hot(&mut self, fp: u64, from: Hot, to: Hot) -> Result<(), StoreError> {
        debug_assert_eq!(state::hot(&self.row).ok(), Some(from), "{fp:016x} not read");
        if from.last_us != to.last_us {
            let st = self.st;
            let n = state::names(&self.row).map_err(|_| bad_row(st, fp))?;
            self.entries.take(st, fp, from.last_us, n)?;
            self.entries.put(st, fp, to.last_us, n)?;
        }
        state::set_hot(&mut self.row, to);
        self.write(fp)
    }

    /// Sets the actioned mark of incident `fp` (None: actionable again).
    pub(crate) fn set_actioned(
        &mut self,
        fp: u64,
        actioned: Option<u64>,
    ) -> Result<(), StoreError> {
        let Some(hot) = self.hot(fp)? else {
            return Err(not_indexed(self.st, fp));
        };
        if hot.actioned != actioned {
            let to = Hot { actioned, ..hot };
            self.set_hot(fp, hot, to)?;
        }
        Ok(())
    }

    /// The id of incident `fp` and the component it is indexed under, from its row (read
    /// again only when the last row read or written was another incident's).
    pub(crate) fn id_and_component(&mut self, fp: u64) -> Result<(String, String), StoreError> {
        if self.row_of != Some(fp) && !self.read(fp)? {
            return Err(not_indexed(self.st, fp));
        }
        match (state::id(&self.row), state::names(&self.row)) {
            (Ok(id), Ok(n)) => Ok((id.to_string(), n.2.to_string())),
            _ => Err(bad_row(self.st, fp)),
        }
    }

    /// `inc` is stored with its status, severity and component as they are now: its row,
    /// entries and tallies follow what changed.
    pub(crate) fn update(&mut self, fp: u64, inc: &Incident) -> Result<(), StoreError> {
        let st = self.st;
        let (hot, old) = self.current(fp)?;
        let new = names(inc);
        let was = (old.0, old.1, old.2.as_str());
        if was == new {
            return Ok(());
        }
        self.entries.take(st, fp, hot.last_us, was)?;
        self.entries.put(st, fp, hot.last_us, new)?;
        let id = state::id(&self.row)
            .map_err(|_| bad_row(st, fp))?
            .to_string();
        state::encode(&mut self.row, hot, new, &id).map_err(|_| bad_row(st, fp))?;
        self.write(fp)?;
        for (dim, was, is) in [
            (STATUS, was.0, new.0),
            (SEVERITY, was.1, new.1),
            (COMPONENT, was.2, new.2),
        ] {
            if was != is {
                self.tally(dim, was, -1)?;
                self.tally(dim, is, 1)?;
            }
        }
        Ok(())
    }

    /// Incident `fp` is removed (retention): its row and entries go and its tallies count
    /// one fewer. Returns its hot fields.
    pub(crate) fn remove(&mut self, fp: u64) -> Result<Hot, StoreError> {
        let (hot, n) = self.current(fp)?;
        let n = (n.0, n.1, n.2.as_str());
        self.entries.take(self.st, fp, hot.last_us, n)?;
        self.row_of = None;
        self.state.remove(fp).map_err(self.st.storage())?;
        self.tally(STATUS, n.0, -1)?;
        self.tally(SEVERITY, n.1, -1)?;
        self.tally(COMPONENT, n.2, -1)?;
        Ok(hot)
    }

    /// The row of `fp`: hot fields and names (see [`not_indexed`]).
    #[allow(clippy::type_complexity)]
    fn current(
        &mut self,
        fp: u64,
    ) -> Result<(Hot, (&'static str, &'static str, String)), StoreError> {
        if !self.read(fp)? {
            return Err(not_indexed(self.st, fp));
        }
        let bad = |_| bad_row(self.st, fp);
        let hot = state::hot(&self.row).map_err(bad)?;
        let (status, severity, component) = state::names(&self.row).map_err(bad)?;
        Ok((hot, (status, severity, component.to_string())))
    }

    /// Adds `delta` to the tally of `(dim, value)` (or holds it: [`Indexer::open_batched`]).
    fn tally(&mut self, dim: &'static str, value: &str, delta: i64) -> Result<(), StoreError> {
        match &mut self.held {
            Some(held) => {
                let values = held.entry(dim).or_default();
                match values.get_mut(value) {
                    Some(d) => *d += delta,
                    None => {
                        values.insert(value.to_string(), delta);
                    }
                }
                Ok(())
            }
            None => self.write_tally(dim, value, delta),
        }
    }

    /// Adds `delta` to the stored tally of `(dim, value)`; a tally that reaches 0 is removed.
    fn write_tally(&mut self, dim: &str, value: &str, delta: i64) -> Result<(), StoreError> {
        let old = self
            .tallies
            .get((dim, value))
            .map_err(self.st.storage())?
            .map_or(0, |v| v.value());
        let new = old.checked_add_signed(delta).unwrap_or_else(|| {
            debug_assert!(false, "tally ({dim}, {value}) below zero");
            0
        });
        if new == 0 {
            self.tallies
                .remove((dim, value))
                .map_err(self.st.storage())?;
        } else {
            self.tallies
                .insert((dim, value), new)
                .map_err(self.st.storage())?;
        }
        Ok(())
    }
}

/// Indexes and counts every incident of a store that has none yet (the migration from
/// version 2 or older): one pass over the incidents in `txn`, each given its
/// `incident_state` row from the old `incident_counts` and `incident_actioned`. Returns how
/// many were indexed.
pub(super) fn build(st: &Store, txn: &WriteTransaction) -> Result<u64, StoreError> {
    let incidents = txn.open_table(INCIDENTS).map_err(st.storage())?;
    let counts = txn.open_table(COUNTS).map_err(st.storage())?;
    let actioned = txn.open_table(ACTIONED).map_err(st.storage())?;
    let mut idx = Indexer::open(st, txn)?;
    let mut n = 0;
    for row in incidents.iter().map_err(st.storage())? {
        let (k, v) = row.map_err(st.storage())?;
        let fp = k.value();
        let inc = st.decode(fp, v.value())?;
        let (count, last_us) = counts
            .get(fp)
            .map_err(st.storage())?
            .map_or_else(|| (inc.count, super::micros(inc.last_seen)), |c| c.value());
        let actioned = actioned.get(fp).map_err(st.storage())?.map(|a| a.value());
        let hot = Hot {
            count,
            last_us,
            actioned,
        };
        idx.add(fp, hot, &inc)?;
        n += 1;
    }
    Ok(n)
}

/// The migration from version 3 or 4: every incident's `incident_counts`, `incident_attrs`
/// and `incident_actioned` rows folded into one `incident_state` row (the index entries
/// stay as they are). Returns how many rows were written.
pub(super) fn fold_state(st: &Store, txn: &WriteTransaction) -> Result<u64, StoreError> {
    let incidents = txn.open_table(INCIDENTS).map_err(st.storage())?;
    let counts = txn.open_table(COUNTS).map_err(st.storage())?;
    let attrs = txn.open_table(ATTRS).map_err(st.storage())?;
    let actioned = txn.open_table(ACTIONED).map_err(st.storage())?;
    let mut state = txn.open_table(super::schema::STATE).map_err(st.storage())?;
    let mut row = Vec::with_capacity(64);
    let mut n = 0;
    for r in counts.iter().map_err(st.storage())? {
        let (k, v) = r.map_err(st.storage())?;
        let fp = k.value();
        let (count, last_us) = v.value();
        let Some(a) = attrs.get(fp).map_err(st.storage())? else {
            return Err(not_indexed(st, fp));
        };
        // The id, from the record (this once).
        let Some(record) = incidents.get(fp).map_err(st.storage())? else {
            continue;
        };
        let id = st.decode(fp, record.value())?.id;
        let hot = Hot {
            count,
            last_us,
            actioned: actioned.get(fp).map_err(st.storage())?.map(|a| a.value()),
        };
        state::encode(&mut row, hot, a.value(), &id).map_err(|_| bad_row(st, fp))?;
        state.insert(fp, row.as_slice()).map_err(st.storage())?;
        n += 1;
    }
    Ok(n)
}

/// A page of recency keys, and the key to continue after when more follow.
type KeyPage = (Vec<RecentKey>, Option<RecentKey>);

/// The recency keys of one range, newest first (or, wrapped in `Reverse`, oldest first).
type Keys<'a, K = RecentKey> = Box<dyn Iterator<Item = Result<K, redb::StorageError>> + 'a>;

/// The `limit` greatest keys of the union of `ranges` (each greatest first, disjoint), and
/// the key to continue after when more follow.
fn merge<K: Ord + Copy>(
    mut ranges: Vec<Keys<'_, K>>,
    limit: usize,
) -> Result<(Vec<K>, Option<K>), redb::StorageError> {
    let mut heads = BinaryHeap::with_capacity(ranges.len());
    for (i, r) in ranges.iter_mut().enumerate() {
        if let Some(k) = r.next().transpose()? {
            heads.push((k, i));
        }
    }
    let mut out: Vec<K> = Vec::with_capacity(limit.min(1024));
    while let Some((k, i)) = heads.pop() {
        if out.len() >= limit {
            let next = out.last().copied();
            return Ok((out, next));
        }
        out.push(k);
        if let Some(next) = ranges[i].next().transpose()? {
            heads.push((next, i));
        }
    }
    Ok((out, None))
}

/// The upper bound of a range: `hi` itself when `inclusive`.
fn upper<T>(hi: T, inclusive: bool) -> Bound<T> {
    if inclusive {
        Bound::Included(hi)
    } else {
        Bound::Excluded(hi)
    }
}

/// The severities a filter admits.
fn severities(filter: &IncidentFilter) -> Vec<&'static str> {
    match filter.severity {
        Some(s) => vec![s.as_str()],
        None => Severity::ALL.iter().map(|s| s.as_str()).collect(),
    }
}

/// The statuses a filter admits.
fn statuses(filter: &IncidentFilter) -> Vec<&'static str> {
    IncidentStatus::ALL
        .into_iter()
        .filter(|s| match filter.status {
            None => true,
            Some(StatusFilter::Is(want)) => *s == want,
            Some(StatusFilter::Active) => s.is_active(),
        })
        .map(IncidentStatus::as_str)
        .collect()
}

/// Every incident's recency key in `[from, below)`, oldest first, at most `max` of them:
/// the 35 (severity, status) ranges of `incidents_by_severity` merged. Version 4 keeps no
/// recency index of its own (it cost every new incident an insert and every recency move
/// two): the severity index holds every incident once, at its `(last_seen µs,
/// fingerprint)`. For the sweeps that walk incidents oldest first (retention, the trend
/// counters), with a cursor.
pub(super) fn oldest_keys<T>(
    st: &Store,
    t: &T,
    from: RecentKey,
    below: RecentKey,
    max: usize,
) -> Result<Vec<RecentKey>, StoreError>
where
    T: ReadableTable<(&'static str, &'static str, u64, u64), ()>,
{
    if from >= below {
        return Ok(Vec::new());
    }
    let all = IncidentFilter::default();
    let mut ranges: Vec<Keys<'_, std::cmp::Reverse<RecentKey>>> = Vec::with_capacity(35);
    for sev in severities(&all) {
        for status in statuses(&all) {
            let r = t
                .range((sev, status, from.0, from.1)..(sev, status, below.0, below.1))
                .map_err(st.storage())?;
            ranges.push(Box::new(r.map(|e| {
                e.map(|(k, _)| {
                    let k = k.value();
                    std::cmp::Reverse((k.2, k.3))
                })
            })));
        }
    }
    let (keys, _) = merge(ranges, max).map_err(st.storage())?;
    Ok(keys.into_iter().map(|k| k.0).collect())
}

impl Store {
    /// The recency keys of one page of incidents matching `filter` (any filter, the empty
    /// one included: every incident is in `incidents_by_severity`), read from the
    /// secondary indexes: those last seen at or after `since_us` and strictly before
    /// `before`. `None` when the store has no indexes (an older schema, read as it is by a
    /// read-only handle).
    pub(super) fn indexed_page(
        &self,
        txn: &ReadTransaction,
        filter: &IncidentFilter,
        since_us: u64,
        before: Option<RecentKey>,
        limit: usize,
    ) -> Result<Option<KeyPage>, StoreError> {
        let sevs = severities(filter);
        let stats = statuses(filter);
        let (upper_us, upper_fp, upper_incl) = match before {
            Some((us, fp)) => (us, fp, false),
            None => (u64::MAX, u64::MAX, true),
        };
        if let Some(c) = filter.component.as_deref() {
            let Some(t) = self.read_table(txn, BY_COMPONENT)? else {
                return Ok(None);
            };
            let mut ranges: Vec<Keys<'_>> = Vec::with_capacity(sevs.len() * stats.len());
            for &sev in &sevs {
                for &st in &stats {
                    let lo = Bound::Included((c, sev, st, since_us, 0u64));
                    let hi = upper((c, sev, st, upper_us, upper_fp), upper_incl);
                    let r = t.range((lo, hi)).map_err(self.storage())?;
                    ranges.push(Box::new(r.rev().map(|e| {
                        e.map(|(k, _)| {
                            let k = k.value();
                            (k.3, k.4)
                        })
                    })));
                }
            }
            merge(ranges, limit).map(Some).map_err(self.storage())
        } else {
            let Some(t) = self.read_table(txn, BY_SEVERITY)? else {
                return Ok(None);
            };
            let mut ranges: Vec<Keys<'_>> = Vec::with_capacity(sevs.len() * stats.len());
            for &sev in &sevs {
                for &st in &stats {
                    let lo = Bound::Included((sev, st, since_us, 0u64));
                    let hi = upper((sev, st, upper_us, upper_fp), upper_incl);
                    let r = t.range((lo, hi)).map_err(self.storage())?;
                    ranges.push(Box::new(r.rev().map(|e| {
                        e.map(|(k, _)| {
                            let k = k.value();
                            (k.2, k.3)
                        })
                    })));
                }
            }
            merge(ranges, limit).map(Some).map_err(self.storage())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(v: &[u64]) -> Keys<'static> {
        let v: Vec<_> = v.iter().rev().map(|&us| Ok((us, us))).collect();
        Box::new(v.into_iter())
    }

    #[test]
    fn merge_takes_the_newest_across_ranges_and_says_when_more_follow() {
        let (page, next) = merge(vec![keys(&[1, 4, 6]), keys(&[2, 3]), keys(&[])], 3).unwrap();
        assert_eq!(page, vec![(6, 6), (4, 4), (3, 3)]);
        assert_eq!(next, Some((3, 3)));
        let (page, next) = merge(vec![keys(&[1, 4]), keys(&[2])], 3).unwrap();
        assert_eq!(page, vec![(4, 4), (2, 2), (1, 1)]);
        assert_eq!(next, None, "exactly the limit, nothing more");
        let (page, next) = merge(vec![keys(&[])], 3).unwrap();
        assert!(page.is_empty() && next.is_none());
    }
}
