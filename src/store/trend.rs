//! Trend counters: how often each incident occurred, per minute for the last
//! [`Bucket::Minute`]'s span (24 h) and per hour for [`Bucket::Hour`]'s (30 days), plus the
//! same two series over all incidents.
//!
//! | table | key | value |
//! |---|---|---|
//! | `trend_minutes` | (fingerprint, minutes since the epoch) | occurrences in that minute |
//! | `trend_hours` | (fingerprint, hours since the epoch) | occurrences in that hour not in `trend_minutes` (version 6) |
//! | `trend_all_minutes` | minutes since the epoch | occurrences of every incident |
//! | `trend_all_hours` | hours since the epoch | occurrences of every incident |
//!
//! Written by [`StoreTxn::apply`] in the ingest transaction itself: the counters commit
//! with the counts, positions and events of the same lines, so they never disagree with the
//! incidents' counts after a crash. A line is counted in the bucket of the commit that
//! applied it (ingest time: log lines carry no timestamp Sentinel trusts).
//!
//! Bounded: rows older than their span are pruned. The rows of an incident are pruned when
//! the incident is counted again; the rows of incidents no longer seen are swept by
//! [`StoreTxn::prune_trend`], which walks the recency index once over the incidents whose
//! last occurrence fell out of a span (a cursor in `meta` remembers how far it got), so a
//! sweep costs what aged out since the previous one, never a scan of every incident. Keyed
//! by fingerprint first, one incident's series is one range read.
//!
//! Since schema version 6 a count is written once per incident, into its minute: an hour
//! reads as its `trend_hours` row plus the incident's minute rows in that hour, and minute
//! rows that fall out of the minute span are folded into their hour rows (when the
//! incident is counted in a new minute, or by the sweep), not dropped. Versions up to 5
//! wrote every count into both (one insert more per incident per batch); the migration
//! takes the minutes still kept out of the hour rows ([`split_hours`]).
//!
//! The tables were added without changing the schema version: created on first use,
//! readers treat a missing one as empty.

use jiff::Timestamp;
use redb::{ReadableTable, TableDefinition};

use super::{META, Store, StoreError, StoreTxn, micros};
use crate::scan::Fingerprint;

use super::schema::{ALL_HOURS, ALL_MINUTES, HOURS, MINUTES};

/// `meta` names of the sweep cursors: every key of the recency index before
/// (µs, fingerprint) was swept.
const SWEPT: [(&str, &str); 2] = [
    ("trend_minutes_swept_us", "trend_minutes_swept_fp"),
    ("trend_hours_swept_us", "trend_hours_swept_fp"),
];

/// A bucket width's tables: per incident, over all incidents, and its sweep cursor's names.
type Tables = (
    TableDefinition<'static, (u64, u64), u64>,
    TableDefinition<'static, u64, u64>,
    (&'static str, &'static str),
);

/// The width of a trend bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// One minute; the last 24 hours are kept.
    Minute,
    /// One hour; the last 30 days are kept.
    Hour,
}

impl Bucket {
    /// Both widths.
    pub const ALL: [Bucket; 2] = [Bucket::Minute, Bucket::Hour];

    /// Seconds per bucket.
    pub const fn seconds(self) -> u64 {
        match self {
            Bucket::Minute => 60,
            Bucket::Hour => 3600,
        }
    }

    /// How many buckets are kept (the newest, the current one included).
    pub const fn keep(self) -> u64 {
        match self {
            Bucket::Minute => 24 * 60,
            Bucket::Hour => 30 * 24,
        }
    }

    /// The name used in queries: `1m`, `1h`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Bucket::Minute => "1m",
            Bucket::Hour => "1h",
        }
    }

    /// The bucket named `1m` or `1h`.
    pub fn from_name(name: &str) -> Option<Bucket> {
        Bucket::ALL.into_iter().find(|b| b.as_str() == name)
    }

    /// The index of the bucket holding `us` (µs since the epoch).
    pub const fn index(self, us: u64) -> u64 {
        us / (self.seconds() * 1_000_000)
    }

    /// The start of bucket `index`.
    pub fn start(self, index: u64) -> Timestamp {
        let s = index.saturating_mul(self.seconds());
        Timestamp::from_second(i64::try_from(s).unwrap_or(i64::MAX)).unwrap_or(Timestamp::MAX)
    }

    /// The oldest bucket index kept at `now_us`.
    pub const fn oldest_kept(self, now_us: u64) -> u64 {
        self.index(now_us).saturating_sub(self.keep() - 1)
    }

    const fn tables(self) -> Tables {
        match self {
            Bucket::Minute => (MINUTES, ALL_MINUTES, SWEPT[0]),
            Bucket::Hour => (HOURS, ALL_HOURS, SWEPT[1]),
        }
    }
}

/// One bucket of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "daemon", derive(utoipa::ToSchema))]
pub struct TrendPoint {
    /// The bucket index (minutes or hours since the epoch).
    #[serde(skip)]
    pub index: u64,
    /// When the bucket starts (RFC 3339).
    pub start: Timestamp,
    /// Occurrences in it.
    pub count: u64,
}

impl Store {
    /// The series of the incident `id` kept at `now`: its non-empty buckets, oldest first,
    /// from [`Bucket::oldest_kept`] on. `None` when there is no such incident.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn incident_trend(
        &self,
        id: &str,
        bucket: Bucket,
        now: Timestamp,
    ) -> Result<Option<Vec<TrendPoint>>, StoreError> {
        let txn = self.begin_read()?;
        let ids = txn
            .open_table(super::INCIDENT_IDS)
            .map_err(self.storage())?;
        let Some(fp) = ids.get(id).map_err(self.storage())?.map(|v| v.value()) else {
            return Ok(None);
        };
        let mut out = self.trends_in(&txn, &[Fingerprint(fp)], bucket, micros(now))?;
        Ok(out.pop())
    }

    /// The series of each of `fps` (in that order), as [`Store::incident_trend`], in one
    /// read transaction: the overview's sparklines.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn trends(
        &self,
        fps: &[Fingerprint],
        bucket: Bucket,
        now: Timestamp,
    ) -> Result<Vec<Vec<TrendPoint>>, StoreError> {
        let txn = self.begin_read()?;
        self.trends_in(&txn, fps, bucket, micros(now))
    }

    fn trends_in(
        &self,
        txn: &redb::ReadTransaction,
        fps: &[Fingerprint],
        bucket: Bucket,
        now_us: u64,
    ) -> Result<Vec<Vec<TrendPoint>>, StoreError> {
        let (from, to) = (bucket.oldest_kept(now_us), bucket.index(now_us));
        let minutes = self.read_table(txn, MINUTES)?;
        let hours = match bucket {
            Bucket::Minute => None,
            Bucket::Hour => self.read_table(txn, HOURS)?,
        };
        let mut out = Vec::with_capacity(fps.len());
        for fp in fps {
            // Bucket index → occurrences. An hour is its folded row (minutes older than the
            // minute span) plus the minute rows still kept (see the module docs).
            let mut sums: std::collections::BTreeMap<u64, u64> = Default::default();
            if let Some(h) = &hours {
                for row in h.range((fp.0, from)..=(fp.0, to)).map_err(self.storage())? {
                    let (k, v) = row.map_err(self.storage())?;
                    *sums.entry(k.value().1).or_default() += v.value();
                }
            }
            if let Some(m) = &minutes {
                let per = bucket.seconds() / 60;
                let (lo, hi) = (from.saturating_mul(per), to.saturating_mul(per) + (per - 1));
                for row in m.range((fp.0, lo)..=(fp.0, hi)).map_err(self.storage())? {
                    let (k, v) = row.map_err(self.storage())?;
                    *sums.entry(k.value().1 / per).or_default() += v.value();
                }
            }
            out.push(
                sums.into_iter()
                    .map(|(index, count)| TrendPoint {
                        index,
                        start: bucket.start(index),
                        count,
                    })
                    .collect(),
            );
        }
        Ok(out)
    }

    /// The series of all incidents together kept at `now`, as [`Store::incident_trend`].
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn total_trend(
        &self,
        bucket: Bucket,
        now: Timestamp,
    ) -> Result<Vec<TrendPoint>, StoreError> {
        let txn = self.begin_read()?;
        let (_, all, _) = bucket.tables();
        let Some(t) = self.read_table(&txn, all)? else {
            return Ok(Vec::new());
        };
        let now_us = micros(now);
        let mut out = Vec::new();
        for row in t
            .range(bucket.oldest_kept(now_us)..=bucket.index(now_us))
            .map_err(self.storage())?
        {
            let (k, v) = row.map_err(self.storage())?;
            out.push(TrendPoint {
                index: k.value(),
                start: bucket.start(k.value()),
                count: v.value(),
            });
        }
        Ok(out)
    }
}

impl StoreTxn<'_> {
    /// Adds `counts` (fingerprint, occurrences, when it was last seen before: `None` when
    /// created in this transaction) to the buckets
    /// of `now_us` and prunes the counted incidents' buckets that fell out of their span.
    /// Called by [`StoreTxn::apply`].
    pub(super) fn record_trend(
        &mut self,
        counts: &[(u64, u64, Option<u64>)],
        now_us: u64,
    ) -> Result<(), StoreError> {
        if counts.is_empty() {
            return Ok(());
        }
        let st = self.store;
        let total: u64 = counts.iter().map(|(_, n, _)| n).sum();
        let minute = Bucket::Minute;
        let (at, oldest) = (minute.index(now_us), minute.oldest_kept(now_us));
        let oldest_hour = Bucket::Hour.oldest_kept(now_us);
        let mut t = self.txn.open_table(MINUTES).map_err(st.storage())?;
        let mut hours = self.txn.open_table(HOURS).map_err(st.storage())?;
        let mut folded = Vec::new();
        for &(fp, n, before) in counts {
            let Some(before_us) = before else {
                // An incident created in this transaction has no buckets yet (retention,
                // the only way an incident goes, takes its buckets with it).
                t.insert((fp, at), n).map_err(st.storage())?;
                continue;
            };
            // No bucket of an incident is newer than the one it was last seen in: when
            // that is older, this bucket is new (no look-up; a rescan's every incident).
            let old = if minute.index(before_us) < at {
                None
            } else {
                t.get((fp, at)).map_err(st.storage())?.map(|v| v.value())
            };
            t.insert((fp, at), old.unwrap_or(0) + n)
                .map_err(st.storage())?;
            // The incident's minutes older than the span are folded into its hours when a
            // new minute starts (the `oldest` of a minute is fixed): not again at every count.
            if old.is_none() {
                fold_minutes(&mut t, &mut hours, fp, oldest, oldest_hour, &mut folded)
                    .map_err(st.storage())?;
            }
        }
        drop((t, hours));
        for bucket in Bucket::ALL {
            let (_, all, _) = bucket.tables();
            let (at, oldest) = (bucket.index(now_us), bucket.oldest_kept(now_us));
            let mut t = self.txn.open_table(all).map_err(st.storage())?;
            let old = t.get(at).map_err(st.storage())?.map(|v| v.value());
            t.insert(at, old.unwrap_or(0) + total)
                .map_err(st.storage())?;
            t.retain_in(0..oldest, |_, _| false).map_err(st.storage())?;
        }
        Ok(())
    }

    /// Removes the buckets of up to `max` incidents (per bucket width) whose last
    /// occurrence fell out of the span at `now` since the previous sweep; returns how many
    /// incidents were swept. The writer calls it with its periodic pruning.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn prune_trend(&mut self, now: Timestamp, max: usize) -> Result<usize, StoreError> {
        let st = self.store;
        let now_us = micros(now);
        let mut swept = 0;
        for bucket in Bucket::ALL {
            let (per_incident, _, (us_name, fp_name)) = bucket.tables();
            let oldest = bucket.oldest_kept(now_us);
            // Incidents last seen before this had every bucket fall out of the span.
            let cutoff_us = oldest.saturating_mul(bucket.seconds() * 1_000_000);
            let mut meta = self.txn.open_table(META).map_err(st.storage())?;
            let get = |name: &str| -> Result<u64, StoreError> {
                Ok(meta
                    .get(name)
                    .map_err(st.storage())?
                    .map_or(0, |v| v.value()))
            };
            let from = (get(us_name)?, get(fp_name)?);
            if from.0 >= cutoff_us {
                continue;
            }
            let by_severity = self
                .txn
                .open_table(super::schema::BY_SEVERITY)
                .map_err(st.storage())?;
            let aged = super::index::oldest_keys(st, &by_severity, from, (cutoff_us, 0), max)?;
            drop(by_severity);
            let mut t = self.txn.open_table(per_incident).map_err(st.storage())?;
            match bucket {
                Bucket::Minute => {
                    // Folded into their hours, not dropped (see the module docs).
                    let mut hours = self.txn.open_table(HOURS).map_err(st.storage())?;
                    let oldest_hour = Bucket::Hour.oldest_kept(now_us);
                    let mut buf = Vec::new();
                    for &(_, fp) in &aged {
                        fold_minutes(&mut t, &mut hours, fp, oldest, oldest_hour, &mut buf)
                            .map_err(st.storage())?;
                    }
                }
                Bucket::Hour => {
                    for &(_, fp) in &aged {
                        t.retain_in((fp, 0)..(fp, oldest), |_, _| false)
                            .map_err(st.storage())?;
                    }
                }
            }
            // The cursor: every key before it was swept.
            let to = match aged.last() {
                Some(&(us, fp)) if aged.len() >= max => match fp.checked_add(1) {
                    Some(next) => (us, next),
                    None => (us + 1, 0),
                },
                // Nothing more below the cutoff.
                _ => (cutoff_us, 0),
            };
            meta.insert(us_name, to.0).map_err(st.storage())?;
            meta.insert(fp_name, to.1).map_err(st.storage())?;
            swept += aged.len();
        }
        Ok(swept)
    }
}

/// Folds incident `fp`'s minute rows older than `oldest` (a minute index) into its hour
/// rows (those older than `oldest_hour` are dropped, as are its hour rows out of that span
/// once it has any new one). `buf` is scratch space.
fn fold_minutes(
    minutes: &mut redb::Table<'_, (u64, u64), u64>,
    hours: &mut redb::Table<'_, (u64, u64), u64>,
    fp: u64,
    oldest: u64,
    oldest_hour: u64,
    buf: &mut Vec<(u64, u64)>,
) -> Result<(), redb::StorageError> {
    buf.clear();
    for row in minutes.extract_from_if((fp, 0)..(fp, oldest), |_, _| true)? {
        let (k, v) = row?;
        let hour = k.value().1 / 60;
        let n = v.value();
        match buf.last_mut() {
            Some((h, sum)) if *h == hour => *sum += n,
            _ => buf.push((hour, n)),
        }
    }
    let mut any = false;
    for &(hour, n) in buf.iter().filter(|(h, _)| *h >= oldest_hour) {
        let old = hours.get((fp, hour))?.map_or(0, |v| v.value());
        hours.insert((fp, hour), old + n)?;
        any = true;
    }
    if any {
        hours.retain_in((fp, 0)..(fp, oldest_hour), |_, _| false)?;
    }
    Ok(())
}

/// The migration to version 6: every hour row loses the occurrences still held in minute
/// rows of the same incident and hour (versions up to 5 wrote every count into both), so
/// that an hour reads as its row plus its minutes. One pass over the minute rows, in key
/// order. Returns the hour rows changed.
pub(super) fn split_hours(st: &Store, txn: &redb::WriteTransaction) -> Result<u64, StoreError> {
    let minutes = txn.open_table(MINUTES).map_err(st.storage())?;
    let mut hours = txn.open_table(HOURS).map_err(st.storage())?;
    let mut changed = 0;
    let mut settle = |key: Option<(u64, u64, u64)>| -> Result<(), StoreError> {
        if let Some((fp, hour, n)) = key {
            let old = hours
                .get((fp, hour))
                .map_err(st.storage())?
                .map_or(0, |v| v.value());
            let left = old.saturating_sub(n);
            if left == 0 {
                hours.remove((fp, hour)).map_err(st.storage())?;
            } else {
                hours.insert((fp, hour), left).map_err(st.storage())?;
            }
            changed += 1;
        }
        Ok(())
    };
    let mut run: Option<(u64, u64, u64)> = None;
    for row in minutes.iter().map_err(st.storage())? {
        let (k, v) = row.map_err(st.storage())?;
        let (fp, minute) = k.value();
        let hour = minute / 60;
        match &mut run {
            Some((f, h, n)) if *f == fp && *h == hour => *n += v.value(),
            _ => {
                settle(run.take())?;
                run = Some((fp, hour, v.value()));
            }
        }
    }
    settle(run)?;
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::{AttributionStatus, Severity};
    use crate::store::{IncidentDelta, IngestBatch};

    const MIN_US: u64 = 60_000_000;

    fn at(us: u64) -> Timestamp {
        Timestamp::from_microsecond(us as i64).unwrap()
    }

    fn batch(lines: &[(u64, u64)]) -> IngestBatch {
        let mut b = IngestBatch::new();
        for &(fp, n) in lines {
            b.incidents.insert(
                Fingerprint(fp),
                IncidentDelta::new(
                    Fingerprint(fp),
                    n,
                    &format!("ERROR line {fp}"),
                    AttributionStatus::Unattributed,
                    Severity::Medium,
                ),
            );
        }
        b
    }

    fn series(points: &[TrendPoint]) -> Vec<(u64, u64)> {
        points.iter().map(|p| (p.index, p.count)).collect()
    }

    #[test]
    fn counts_land_in_their_minute_and_hour_with_the_incident_counts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let t0 = 1_800_000_000 * 1_000_000u64; // a whole hour
        store.apply(&batch(&[(1, 3), (2, 1)]), at(t0)).unwrap();
        store.apply(&batch(&[(1, 2)]), at(t0 + 30_000_000)).unwrap();
        store.apply(&batch(&[(1, 5)]), at(t0 + 2 * MIN_US)).unwrap();
        let now = at(t0 + 3 * MIN_US);
        let id = store
            .recent_incidents(10)
            .unwrap()
            .into_iter()
            .find(|i| i.fingerprint.0 == 1)
            .unwrap()
            .id;
        let m = t0 / MIN_US;
        let minutes = store
            .incident_trend(&id, Bucket::Minute, now)
            .unwrap()
            .unwrap();
        assert_eq!(series(&minutes), vec![(m, 5), (m + 2, 5)]);
        assert_eq!(minutes[0].start, at(t0));
        let hours = store
            .incident_trend(&id, Bucket::Hour, now)
            .unwrap()
            .unwrap();
        assert_eq!(series(&hours), vec![(m / 60, 10)]);
        // The sum of the buckets is the incident's count.
        let inc = store.incident(&id).unwrap().unwrap();
        assert_eq!(hours.iter().map(|p| p.count).sum::<u64>(), inc.count);
        let all = store.total_trend(Bucket::Minute, now).unwrap();
        assert_eq!(series(&all), vec![(m, 6), (m + 2, 5)]);
        assert!(
            store
                .incident_trend("nope", Bucket::Minute, now)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn buckets_older_than_their_span_are_pruned_when_counted_again_and_by_the_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let t0 = 1_800_000_000 * 1_000_000u64;
        let day = 24 * 60 * MIN_US;
        store.apply(&batch(&[(1, 1), (2, 1)]), at(t0)).unwrap();
        // A day later incident 1 occurs again: its old minute goes; incident 2 stays
        // untouched until the sweep.
        let t1 = t0 + day;
        store.apply(&batch(&[(1, 1)]), at(t1)).unwrap();
        let raw_minutes = |fp: u64| -> usize {
            let txn = store.begin_read().unwrap();
            let t = txn.open_table(MINUTES).unwrap();
            t.range((fp, 0)..=(fp, u64::MAX)).unwrap().count()
        };
        assert_eq!(raw_minutes(1), 1);
        assert_eq!(raw_minutes(2), 1);
        let ids = store.recent_incidents(10).unwrap();
        let id_of = |fp: u64| {
            ids.iter()
                .find(|i| i.fingerprint.0 == fp)
                .unwrap()
                .id
                .clone()
        };
        let id2 = id_of(2);
        // Readers never show what is out of the span, swept or not.
        assert!(
            store
                .incident_trend(&id2, Bucket::Minute, at(t1))
                .unwrap()
                .unwrap()
                .is_empty()
        );
        let mut txn = store.begin_write().unwrap();
        // One incident per call: the cursor moves on.
        assert_eq!(txn.prune_trend(at(t1), 1).unwrap(), 1);
        txn.commit().unwrap();
        assert_eq!(raw_minutes(2), 0);
        // Hours are kept 30 days: the swept minute was folded into its hour, not lost.
        let hours = store
            .incident_trend(&id2, Bucket::Hour, at(t1))
            .unwrap()
            .unwrap();
        assert_eq!(series(&hours), vec![(t0 / (60 * MIN_US), 1)]);
        // Incident 1: its first minute folded when it was counted again, its second still a
        // minute row; the hours read both.
        let id1 = id_of(1);
        let hours = store
            .incident_trend(&id1, Bucket::Hour, at(t1))
            .unwrap()
            .unwrap();
        assert_eq!(
            series(&hours),
            vec![(t0 / (60 * MIN_US), 1), (t1 / (60 * MIN_US), 1)]
        );
        let mut txn = store.begin_write().unwrap();
        assert_eq!(
            txn.prune_trend(at(t1), 10).unwrap(),
            0,
            "nothing more aged out"
        );
        let t2 = t0 + 31 * day;
        assert_eq!(
            txn.prune_trend(at(t2), 10).unwrap(),
            3,
            "1 by minutes, 1 and 2 by hours"
        );
        txn.commit().unwrap();
        assert!(
            store
                .incident_trend(&id2, Bucket::Hour, at(t2))
                .unwrap()
                .unwrap()
                .is_empty()
        );
        let txn = store.begin_read().unwrap();
        assert_eq!(txn.open_table(HOURS).unwrap().iter().unwrap().count(), 0);
        assert_eq!(txn.open_table(MINUTES).unwrap().iter().unwrap().count(), 0);
    }

    #[test]
    fn bucket_names_round_trip() {
        for b in Bucket::ALL {
            assert_eq!(Bucket::from_name(b.as_str()), Some(b));
        }
        assert_eq!(Bucket::from_name("5m"), None);
        assert_eq!(Bucket::Minute.oldest_kept(0), 0);
        assert_eq!(Bucket::Hour.oldest_kept(1000 * 3_600_000_000), 1000 - 719);
    }
}
