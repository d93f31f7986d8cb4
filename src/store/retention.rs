//! Retention: what a store running for months forgets, and what it never does.
//!
//! [`Store::retain`] applies a [`RetentionPolicy`] in small write transactions (at most
//! [`RetentionPolicy::per_txn`] rows examined by each step), so that the ingest writer, which
//! shares the one writer slot, waits for one short transaction at a time and never for a
//! whole sweep. What goes:
//!
//! - **Incidents** that are `resolved` or `escalated` and were last seen before the cutoff
//!   (`retention.incidents_days`), walked oldest first along the recency index. Never one
//!   that is still active (detected, triaging, diagnosing, remediating, verifying — a fix
//!   awaiting approval leaves its incident `verifying`), one under regression watch, one with
//!   a queued or running fix job, or one with a fix that is pending, running or awaiting
//!   approval. An incident goes from every table that knows it in the same transaction:
//!   `incidents`, `incident_state`, `incident_ids`, the secondary indexes and
//!   tallies (`index.rs`), its occurrence window and actioned mark, its trend rows and its
//!   event index. Per-key counters (`key_counts`) and `totals` are never touched, so
//!   `scan --json`'s figures and the `/metrics` counters never go backwards; the number
//!   pruned is added to the `meta` counter `retention_incidents_total`. Seen again later,
//!   the same line makes a new incident (ids derive from the fingerprint: the same id, unless
//!   another incident took it meanwhile).
//! - **Fix results** that ended (success, failure, rejected) and started before the cutoff
//!   (`retention.fixes_days`), with their listing rows; their counts and spend move into
//!   `meta` counters (`retired_fixes_*`) that [`Store::fix_totals`] adds, so the totals of
//!   `/metrics.json` stay exact. Finished fix jobs last updated before the same cutoff go
//!   too (never the newest job: its sequence number is the queue's next one).
//! - **The spend log** beyond the longest budget window ([`SPEND_KEEP_SECS`], 30 days plus a
//!   day): its entries are folded into one entry per incident (one for all incidents that
//!   are gone, under the empty id), so every incident's spend, and the total, stay exact.
//! - **Trend rows** beyond their spans ([`StoreTxn::prune_trend`]).
//! - **Events** older than `retention.events_days`, and beyond the newest
//!   [`super::events::EVENTS_KEEP`] (the ingest writer's bound, applied here too so that a
//!   store without a daemon is bounded as well); never one a configured sink has not
//!   delivered yet (up to the outbox's hard cap, see `cursors.rs`). The event log is the
//!   largest table of a busy store: its rows carry the incident's fields.
//!
//! The postmortem files of removed incidents are the caller's to delete (the store does not
//! know the state directory): [`RetentionReport::incident_ids`] names them.
//!
//! Each run's outcome is kept in `meta` (`retention_last_*`), so `/status`, `/metrics` and
//! `sentinel status --state` show it from any process.

use std::collections::{BTreeMap, HashSet};

use jiff::Timestamp;
use redb::{ReadableTable, TableError};
use serde::Serialize;

use super::schema::{
    BY_SEVERITY, CURSORS, EVENTS, FIX_JOBS, FIXES, FIXES_BY_TIME, HOURS, INCIDENT_EVENTS,
    INCIDENT_FIXES, INCIDENT_IDS, JOBS_OPEN, META, MINUTES, REGRESSION_WATCH, SPEND, STATE,
    WINDOWS,
};
use super::{FixJob, FixResult, FixStatus, IncidentStatus, Store, StoreError, StoreTxn, micros};

/// How long the spend log keeps its entries one by one: the longest budget window (the
/// monthly cap's 30 days) and a day of margin. Older entries are folded (see the module docs).
pub const SPEND_KEEP_SECS: u64 = 31 * 86_400;

/// `meta`: when the last retention run ended (µs).
pub const META_LAST_RUN_US: &str = "retention_last_run_us";
/// `meta`: incidents the last run removed.
pub const META_LAST_INCIDENTS: &str = "retention_last_incidents";
/// `meta`: fix results the last run removed.
pub const META_LAST_FIXES: &str = "retention_last_fixes";
/// `meta`: fix jobs the last run removed.
pub const META_LAST_JOBS: &str = "retention_last_jobs";
/// `meta`: spend-log rows the last run folded away.
pub const META_LAST_SPEND_ROWS: &str = "retention_last_spend_rows";
/// `meta`: events the last run removed.
pub const META_LAST_EVENTS: &str = "retention_last_events";
/// `meta`: incidents whose trend rows the last run swept.
pub const META_LAST_TREND: &str = "retention_last_trend_incidents";
/// `meta`: incidents removed by retention since the store was created.
pub const META_INCIDENTS_TOTAL: &str = "retention_incidents_total";
/// `meta`: fixes removed (their counts and spend are kept in the `retired_fixes_*` rows).
pub const META_FIXES_TOTAL: &str = "retention_fixes_total";
/// `meta`: the retired fixes' (attempted, succeeded, failed, micro-USD), for
/// [`Store::fix_totals`].
pub const META_RETIRED_FIXES: [&str; 4] = [
    "retired_fixes_attempted",
    "retired_fixes_succeeded",
    "retired_fixes_failed",
    "retired_fixes_micro_usd",
];

const DAY_US: u64 = 86_400_000_000;

/// What retention removes (see the module docs). `None`: kept forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetentionPolicy {
    /// Resolved and escalated incidents not seen for this many days go.
    pub incidents_days: Option<u64>,
    /// Ended fixes (and finished jobs) older than this many days go.
    pub fixes_days: Option<u64>,
    /// Events older than this many days go (those a sink still needs stay).
    pub events_days: Option<u64>,
    /// Fold the spend log beyond [`SPEND_KEEP_SECS`].
    pub compact_spend: bool,
    /// Rows examined per write transaction (at least 1).
    pub per_txn: usize,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy {
            incidents_days: Some(90),
            fixes_days: Some(90),
            events_days: Some(30),
            compact_spend: true,
            per_txn: 500,
        }
    }
}

impl RetentionPolicy {
    /// A policy with these limits.
    pub fn new(incidents_days: Option<u64>, fixes_days: Option<u64>, per_txn: usize) -> Self {
        RetentionPolicy {
            incidents_days,
            fixes_days,
            events_days: Some(30),
            compact_spend: true,
            per_txn: per_txn.max(1),
        }
    }

    /// The same, with events kept `days` days (`None`: only the count bound applies).
    pub fn with_events_days(mut self, days: Option<u64>) -> Self {
        self.events_days = days;
        self
    }
}

/// What one retention run removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RetentionReport {
    /// Incidents removed.
    pub incidents: u64,
    /// Their ids (their postmortem files are the caller's to remove).
    pub incident_ids: Vec<String>,
    /// Fix results removed.
    pub fixes: u64,
    /// Finished fix jobs removed.
    pub jobs: u64,
    /// Spend-log rows folded away (net: rows before minus rows after).
    pub spend_rows: u64,
    /// Incidents whose aged trend rows were swept.
    pub trend_incidents: u64,
    /// Events removed from the event log.
    pub events: u64,
    /// Write transactions used.
    pub transactions: u64,
}

/// Where a run is: each phase walks its table from a key after the last one examined.
#[derive(Debug, Default)]
struct Cursor {
    phase: u8,
    recent: (u64, u64),
    fixes: (u64, String),
    jobs: u64,
    done: bool,
}

impl Store {
    /// Applies `policy` at `now` in transactions of at most `policy.per_txn` rows each;
    /// returns what was removed. With `dry_run`, everything happens in ONE transaction that
    /// is then dropped: the report says exactly what a real run would remove, and nothing
    /// changes.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors; what earlier transactions removed stays removed.
    pub fn retain(
        &self,
        policy: &RetentionPolicy,
        now: Timestamp,
        dry_run: bool,
    ) -> Result<RetentionReport, StoreError> {
        let mut report = RetentionReport::default();
        let mut cursor = Cursor::default();
        if dry_run {
            let mut txn = self.begin_write()?;
            while !cursor.done {
                txn.retain_step(policy, now, &mut cursor, &mut report)?;
            }
            report.transactions = 0;
            // Dropped, not committed.
            return Ok(report);
        }
        while !cursor.done {
            let mut txn = self.begin_write()?;
            txn.retain_step(policy, now, &mut cursor, &mut report)?;
            if cursor.done {
                txn.record_retention(&report, now)?;
            }
            txn.commit()?;
            report.transactions += 1;
        }
        Ok(report)
    }

    /// The last retention run, as kept in `meta`: (ended at, report); `None` before the first.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn last_retention(&self) -> Result<Option<(Timestamp, RetentionReport)>, StoreError> {
        let Some(at) = self.meta_value(META_LAST_RUN_US)? else {
            return Ok(None);
        };
        let get = |name| Ok::<_, StoreError>(self.meta_value(name)?.unwrap_or(0));
        let report = RetentionReport {
            incidents: get(META_LAST_INCIDENTS)?,
            fixes: get(META_LAST_FIXES)?,
            jobs: get(META_LAST_JOBS)?,
            spend_rows: get(META_LAST_SPEND_ROWS)?,
            trend_incidents: get(META_LAST_TREND)?,
            events: get(META_LAST_EVENTS)?,
            ..RetentionReport::default()
        };
        let at = Timestamp::from_microsecond(at as i64).unwrap_or(Timestamp::UNIX_EPOCH);
        Ok(Some((at, report)))
    }
}

impl StoreTxn<'_> {
    /// One step of a run: examines at most `policy.per_txn` rows of the current phase.
    fn retain_step(
        &mut self,
        policy: &RetentionPolicy,
        now: Timestamp,
        cursor: &mut Cursor,
        report: &mut RetentionReport,
    ) -> Result<(), StoreError> {
        let now_us = micros(now);
        let max = policy.per_txn.max(1);
        let more = match cursor.phase {
            0 => match policy.incidents_days {
                Some(days) => {
                    let cutoff = now_us.saturating_sub(days.saturating_mul(DAY_US));
                    self.retain_incidents(cutoff, max, cursor, report)?
                }
                None => false,
            },
            1 => match policy.fixes_days {
                Some(days) => {
                    let cutoff = now_us.saturating_sub(days.saturating_mul(DAY_US));
                    self.retain_fixes(cutoff, max, cursor, report)?
                }
                None => false,
            },
            2 => match policy.fixes_days {
                Some(days) => {
                    let cutoff = now_us.saturating_sub(days.saturating_mul(DAY_US));
                    self.retain_jobs(cutoff, max, cursor, report)?
                }
                None => false,
            },
            3 => {
                if policy.compact_spend {
                    let cutoff = now_us.saturating_sub(SPEND_KEEP_SECS * 1_000_000);
                    report.spend_rows += self.fold_spend(cutoff)?;
                }
                false
            }
            4 => {
                let n = self.prune_trend(now, max)?;
                report.trend_incidents += n as u64;
                n >= max
            }
            5 => {
                let cutoff = policy
                    .events_days
                    .map(|days| now_us.saturating_sub(days.saturating_mul(DAY_US)));
                let n = self.retain_events(cutoff, max)?;
                report.events += n as u64;
                n >= max
            }
            _ => {
                cursor.done = true;
                return Ok(());
            }
        };
        if !more {
            cursor.phase += 1;
        }
        Ok(())
    }

    /// Removes the prunable incidents among up to `max` recency-index rows older than
    /// `cutoff_us`; true when more rows may remain.
    fn retain_incidents(
        &mut self,
        cutoff_us: u64,
        max: usize,
        cursor: &mut Cursor,
        report: &mut RetentionReport,
    ) -> Result<bool, StoreError> {
        let st = self.store;
        let txn = &self.txn;
        let rows: Vec<(u64, u64)> = {
            let by_severity = txn.open_table(BY_SEVERITY).map_err(st.storage())?;
            super::index::oldest_keys(st, &by_severity, cursor.recent, (cutoff_us, 0), max)?
        };
        let Some(&last) = rows.last() else {
            return Ok(false);
        };
        cursor.recent = match last.1.checked_add(1) {
            Some(fp) => (last.0, fp),
            None => (last.0 + 1, 0),
        };
        let busy = self.incidents_with_open_jobs()?;
        let txn = &self.txn;
        let rows_state = txn.open_table(STATE).map_err(st.storage())?;
        let watch = txn.open_table(REGRESSION_WATCH).map_err(st.storage())?;
        let mut doomed = Vec::new();
        for &(_, fp) in &rows {
            let Some(a) = rows_state.get(fp).map_err(st.storage())? else {
                continue;
            };
            let (status, _, _) =
                super::state::names(a.value()).map_err(|_| super::index::bad_row(st, fp))?;
            drop(a);
            let ended = matches!(
                IncidentStatus::from_name(status),
                Some(IncidentStatus::Resolved | IncidentStatus::Escalated)
            );
            if !ended || busy.contains(&fp) {
                continue;
            }
            if watch.get(fp).map_err(st.storage())?.is_some() {
                continue;
            }
            doomed.push(fp);
        }
        drop((rows_state, watch));
        for fp in doomed {
            if let Some(id) = self.remove_incident(fp)? {
                report.incidents += 1;
                report.incident_ids.push(id);
            }
        }
        Ok(rows.len() >= max)
    }

    /// Removes up to `max` of the oldest events that are beyond the count bound or older
    /// than `cutoff_us`, never one a sink still needs; returns how many went.
    fn retain_events(&mut self, cutoff_us: Option<u64>, max: usize) -> Result<usize, StoreError> {
        let st = self.store;
        let head = {
            let t = self.txn.open_table(EVENTS).map_err(st.storage())?;
            t.last()
                .map_err(st.storage())?
                .map_or(0, |(k, _)| k.value())
        };
        let keep_from = self.events_keep_from(head)?;
        // The first event a sink has not delivered: never removed by age.
        let undelivered = {
            let t = self.txn.open_table(CURSORS).map_err(st.storage())?;
            let mut min: Option<u64> = None;
            for row in t.iter().map_err(st.storage())? {
                let (_, v) = row.map_err(st.storage())?;
                min = Some(min.map_or(v.value(), |m| m.min(v.value())));
            }
            min.map_or(u64::MAX, |c| c.saturating_add(1))
        };
        let mut before = keep_from;
        if let Some(cutoff) = cutoff_us {
            // Events are logged in time order: the first young one ends the aged ones.
            let t = self.txn.open_table(EVENTS).map_err(st.storage())?;
            let mut aged_to = None;
            for row in t.range(keep_from..).map_err(st.storage())?.take(max) {
                let (k, v) = row.map_err(st.storage())?;
                match super::Event::decode(v.value()) {
                    Ok(ev) if micros(ev.at) >= cutoff => break,
                    _ => aged_to = Some(k.value() + 1),
                }
            }
            if let Some(to) = aged_to {
                before = before.max(to.min(undelivered));
            }
        }
        self.prune_events(before, max)
    }

    /// The fingerprints of incidents with a queued or running job.
    fn incidents_with_open_jobs(&mut self) -> Result<HashSet<u64>, StoreError> {
        let st = self.store;
        let open = self.txn.open_table(JOBS_OPEN).map_err(st.storage())?;
        let jobs = self.txn.open_table(FIX_JOBS).map_err(st.storage())?;
        let mut out = HashSet::new();
        for row in open.iter().map_err(st.storage())? {
            let (k, _) = row.map_err(st.storage())?;
            if let Some(v) = jobs.get(k.value()).map_err(st.storage())?
                && let Ok(job) = FixJob::decode(v.value())
            {
                out.insert(job.fingerprint);
            }
        }
        Ok(out)
    }

    /// Removes incident `fp` from every table that knows it, unless a fix of it has not
    /// ended; returns its id when it was removed.
    fn remove_incident(&mut self, fp: u64) -> Result<Option<String>, StoreError> {
        let st = self.store;
        let txn = &self.txn;
        let mut incidents = super::records::Records::open(st, txn)?;
        let Some(bytes) = incidents
            .get(fp)
            .map_err(st.storage())?
            .map(|v| v.value().to_vec())
        else {
            return Ok(None);
        };
        let inc = st.decode(fp, &bytes)?;
        // A fix still in the works (pending, running, awaiting approval) keeps its incident.
        {
            let index = txn.open_table(INCIDENT_FIXES).map_err(st.storage())?;
            let fixes = txn.open_table(FIXES).map_err(st.storage())?;
            let id = inc.id.as_str();
            for row in index.range((id, "")..).map_err(st.storage())? {
                let (k, _) = row.map_err(st.storage())?;
                let (of, fix_id) = k.value();
                if of != id {
                    break;
                }
                if let Some(v) = fixes.get(fix_id).map_err(st.storage())?
                    && let Ok(f) = FixResult::decode(v.value())
                    && !fix_ended(f.status)
                {
                    return Ok(None);
                }
            }
        }
        incidents.remove(fp).map_err(st.storage())?;
        drop(incidents);
        {
            let mut ids = txn.open_table(INCIDENT_IDS).map_err(st.storage())?;
            // Only when the id is still this incident's (ids are never reassigned, but a
            // broken store must not lose another incident's id).
            let ours = ids
                .get(inc.id.as_str())
                .map_err(st.storage())?
                .is_some_and(|v| v.value() == fp);
            if ours {
                ids.remove(inc.id.as_str()).map_err(st.storage())?;
            }
        }
        super::index::Indexer::open(st, txn)?.remove(fp)?;
        txn.open_table(WINDOWS)
            .map_err(st.storage())?
            .remove(fp)
            .map_err(st.storage())?;
        txn.open_table(super::triage::TRIAGE)
            .map_err(st.storage())?
            .remove(fp)
            .map_err(st.storage())?;
        for table in [super::ci::CI_INCIDENTS, super::ci::FORGE_LINKS] {
            txn.open_table(table)
                .map_err(st.storage())?
                .remove(fp)
                .map_err(st.storage())?;
        }
        for table in [MINUTES, HOURS] {
            txn.open_table(table)
                .map_err(st.storage())?
                .retain_in((fp, 0)..=(fp, u64::MAX), |_, _| false)
                .map_err(st.storage())?;
        }
        let id = inc.id.as_str();
        txn.open_table(INCIDENT_EVENTS)
            .map_err(st.storage())?
            .retain_in((id, 0)..=(id, u64::MAX), |_, _| false)
            .map_err(st.storage())?;
        Ok(Some(inc.id))
    }

    /// Removes the ended fixes among up to `max` listing rows started before `cutoff_us`;
    /// their figures move into the `retired_fixes_*` counters. True when more may remain.
    fn retain_fixes(
        &mut self,
        cutoff_us: u64,
        max: usize,
        cursor: &mut Cursor,
        report: &mut RetentionReport,
    ) -> Result<bool, StoreError> {
        let st = self.store;
        let txn = &self.txn;
        let mut by_time = txn.open_table(FIXES_BY_TIME).map_err(st.storage())?;
        let rows: Vec<(u64, String)> = by_time
            .range((cursor.fixes.0, cursor.fixes.1.as_str())..(cutoff_us, ""))
            .map_err(st.storage())?
            .take(max)
            .map(|r| r.map(|(k, _)| (k.value().0, k.value().1.to_string())))
            .collect::<Result<_, _>>()
            .map_err(st.storage())?;
        let Some(last) = rows.last() else {
            return Ok(false);
        };
        // The smallest key after the last one examined.
        cursor.fixes = (last.0, format!("{}\0", last.1));
        let mut fixes = txn.open_table(FIXES).map_err(st.storage())?;
        let mut index = txn.open_table(INCIDENT_FIXES).map_err(st.storage())?;
        let mut retired = [0u64; 4];
        for (started, id) in &rows {
            let fix = match fixes.get(id.as_str()).map_err(st.storage())? {
                Some(v) => FixResult::decode(v.value()).ok(),
                None => None,
            };
            let Some(fix) = fix else {
                // A listing row without its fix: stale, drop it.
                by_time
                    .remove((*started, id.as_str()))
                    .map_err(st.storage())?;
                continue;
            };
            if !fix_ended(fix.status) {
                continue;
            }
            fixes.remove(id.as_str()).map_err(st.storage())?;
            by_time
                .remove((*started, id.as_str()))
                .map_err(st.storage())?;
            index
                .remove((fix.incident_id.as_str(), id.as_str()))
                .map_err(st.storage())?;
            // As `Store::fix_totals` counts them.
            retired[0] += 1;
            match fix.status {
                FixStatus::Success => retired[1] += 1,
                FixStatus::Failure | FixStatus::Rejected => retired[2] += 1,
                _ => {}
            }
            retired[3] += fix.spend_micro_usd;
            report.fixes += 1;
        }
        drop((fixes, index, by_time));
        let mut meta = txn.open_table(META).map_err(st.storage())?;
        for (name, n) in META_RETIRED_FIXES.into_iter().zip(retired) {
            if n > 0 {
                let old = meta
                    .get(name)
                    .map_err(st.storage())?
                    .map_or(0, |v| v.value());
                meta.insert(name, old + n).map_err(st.storage())?;
            }
        }
        Ok(rows.len() >= max)
    }

    /// Removes finished jobs last updated before `cutoff_us` among up to `max` jobs (never
    /// the newest: its sequence number is where the queue continues). True when more may
    /// remain.
    fn retain_jobs(
        &mut self,
        cutoff_us: u64,
        max: usize,
        cursor: &mut Cursor,
        report: &mut RetentionReport,
    ) -> Result<bool, StoreError> {
        let st = self.store;
        let txn = &self.txn;
        let mut jobs = txn.open_table(FIX_JOBS).map_err(st.storage())?;
        let open = txn.open_table(JOBS_OPEN).map_err(st.storage())?;
        let Some(newest) = jobs.last().map_err(st.storage())?.map(|(k, _)| k.value()) else {
            return Ok(false);
        };
        let rows: Vec<(u64, Vec<u8>)> = jobs
            .range(cursor.jobs..newest)
            .map_err(st.storage())?
            .take(max)
            .map(|r| r.map(|(k, v)| (k.value(), v.value().to_vec())))
            .collect::<Result<_, _>>()
            .map_err(st.storage())?;
        let Some(&(last, _)) = rows.last() else {
            return Ok(false);
        };
        cursor.jobs = last + 1;
        for (seq, bytes) in &rows {
            if open.get(*seq).map_err(st.storage())?.is_some() {
                continue;
            }
            let Ok(job) = FixJob::decode(bytes) else {
                continue;
            };
            if micros(job.updated_at) < cutoff_us {
                jobs.remove(*seq).map_err(st.storage())?;
                report.jobs += 1;
            }
        }
        Ok(rows.len() >= max)
    }

    /// Folds the spend entries before `cutoff_us` into one per incident (one for every
    /// incident that is gone, under the empty id), each at the time of the newest entry it
    /// folds; returns how many rows fewer the log has.
    fn fold_spend(&mut self, cutoff_us: u64) -> Result<u64, StoreError> {
        let st = self.store;
        let txn = &self.txn;
        let mut spend = match txn.open_table(SPEND) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(e) => return Err(st.storage()(e)),
        };
        let ids = txn.open_table(INCIDENT_IDS).map_err(st.storage())?;
        // incident (or "" when gone) → (rows, micro-USD, newest time).
        let mut groups: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
        let mut rows = 0u64;
        for row in spend.range(..(cutoff_us, 0)).map_err(st.storage())? {
            let (k, v) = row.map_err(st.storage())?;
            let (incident, amount) = v.value();
            let key = if incident.is_empty() || ids.get(incident).map_err(st.storage())?.is_none() {
                String::new()
            } else {
                incident.to_string()
            };
            let g = groups.entry(key).or_default();
            g.0 += 1;
            g.1 += amount;
            g.2 = g.2.max(k.value().0);
            rows += 1;
        }
        if groups.values().all(|g| g.0 == 1) {
            // Already one row per group: nothing to fold.
            return Ok(0);
        }
        spend
            .retain_in(..(cutoff_us, 0), |_, _| false)
            .map_err(st.storage())?;
        for (incident, (_, amount, at)) in &groups {
            let seq = spend
                .range((*at, 0)..=(*at, u64::MAX))
                .map_err(st.storage())?
                .next_back()
                .transpose()
                .map_err(st.storage())?
                .map_or(0, |(k, _)| k.value().1 + 1);
            spend
                .insert((*at, seq), (incident.as_str(), *amount))
                .map_err(st.storage())?;
        }
        Ok(rows - groups.len() as u64)
    }

    /// Keeps the outcome of a run in `meta` (see [`Store::last_retention`]).
    fn record_retention(
        &mut self,
        report: &RetentionReport,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let st = self.store;
        let mut meta = self.txn.open_table(META).map_err(st.storage())?;
        let add = |meta: &mut redb::Table<&str, u64>, name: &str, n: u64| {
            let old = meta.get(name)?.map_or(0, |v| v.value());
            meta.insert(name, old + n).map(|_| ())
        };
        add(&mut meta, META_INCIDENTS_TOTAL, report.incidents).map_err(st.storage())?;
        add(&mut meta, META_FIXES_TOTAL, report.fixes).map_err(st.storage())?;
        for (name, n) in [
            (META_LAST_RUN_US, micros(now)),
            (META_LAST_INCIDENTS, report.incidents),
            (META_LAST_FIXES, report.fixes),
            (META_LAST_JOBS, report.jobs),
            (META_LAST_SPEND_ROWS, report.spend_rows),
            (META_LAST_TREND, report.trend_incidents),
            (META_LAST_EVENTS, report.events),
        ] {
            meta.insert(name, n).map_err(st.storage())?;
        }
        Ok(())
    }
}

/// Whether a fix is over (a pending, running or awaiting-approval one is not).
fn fix_ended(status: FixStatus) -> bool {
    matches!(
        status,
        FixStatus::Success | FixStatus::Failure | FixStatus::Rejected
    )
}

/// The number of rows in `table`, 0 when it does not exist.
#[cfg(test)]
fn table_len<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &redb::ReadTransaction,
    table: redb::TableDefinition<K, V>,
) -> Result<u64, redb::Error> {
    use redb::ReadableTableMetadata;
    match txn.open_table(table) {
        Ok(t) => Ok(t.len()?),
        Err(TableError::TableDoesNotExist(_)) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::{AttributionStatus, Severity};
    use crate::scan::Fingerprint;
    use crate::store::{EventKind, IncidentDelta, IncidentFilter, IngestBatch, StatusFilter};
    use jiff::SignedDuration;

    const DAY: i64 = 86_400;

    fn batch(fps: impl IntoIterator<Item = u64>) -> IngestBatch {
        let mut b = IngestBatch::new();
        for fp in fps {
            let line = format!("PACT:svc:get error {fp}");
            let sev = if fp % 2 == 0 {
                Severity::High
            } else {
                Severity::Low
            };
            b.incidents.insert(
                Fingerprint(fp),
                IncidentDelta::new(
                    Fingerprint(fp),
                    3,
                    &line,
                    AttributionStatus::Unattributed,
                    sev,
                ),
            );
            *b.key_counts
                .entry(format!("PACT:svc{}:get", fp % 3))
                .or_default() += 3;
            *b.totals.entry("error_lines").or_default() += 3;
        }
        b
    }

    fn id_of(store: &Store, fp: u64) -> String {
        let txn = store.begin_read().unwrap();
        let ids = txn.open_table(INCIDENT_IDS).unwrap();
        for row in ids.iter().unwrap() {
            let (k, v) = row.unwrap();
            if v.value() == fp {
                return k.value().to_string();
            }
        }
        panic!("no incident {fp}");
    }

    fn spend_rows(store: &Store) -> u64 {
        let txn = store.begin_read().unwrap();
        table_len(&txn, SPEND).unwrap()
    }

    fn total_spend(store: &Store) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (_, id, m) in store.spend_since(Timestamp::UNIX_EPOCH).unwrap() {
            *out.entry(id).or_default() += m;
        }
        out
    }

    #[test]
    fn retention_prunes_only_ended_incidents_and_keeps_every_total_exact() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("sentinel.redb")).unwrap();
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        // Default policy: every new incident is escalated (auto_remediate off).
        store.apply(&batch(1..=10), t0).unwrap();
        let later = t0 + SignedDuration::from_secs(100 * DAY);
        let (id3, id4, id5, id6, id1) = (
            id_of(&store, 3),
            id_of(&store, 4),
            id_of(&store, 5),
            id_of(&store, 6),
            id_of(&store, 1),
        );
        let mut txn = store.begin_write().unwrap();
        // 3: under regression watch.
        txn.txn
            .open_table(REGRESSION_WATCH)
            .unwrap()
            .insert(3, 1)
            .unwrap();
        // 4: a fix awaiting approval (its incident escalated all the same, to be strict).
        let mut waiting = FixResult {
            id: "fix000000004".into(),
            incident_id: id4.clone(),
            status: FixStatus::AwaitingApproval,
            started_at: Some(t0),
            ..FixResult::default()
        };
        waiting.spend_micro_usd = 5;
        txn.put_fix(&waiting).unwrap();
        // 5: open again.
        let mut inc = txn.incident(&id5).unwrap().unwrap();
        inc.status = IncidentStatus::Detected;
        txn.update_incident(&inc, EventKind::IncidentUpdated, t0)
            .unwrap();
        // 6: an old fix that ended, and spend.
        let done = FixResult {
            id: "fix000000006".into(),
            incident_id: id6.clone(),
            status: FixStatus::Success,
            started_at: Some(t0),
            spend_micro_usd: 7,
            ..FixResult::default()
        };
        txn.put_fix(&done).unwrap();
        for i in 0..4 {
            txn.record_spend(&id6, 10 + i, t0).unwrap();
            txn.record_spend(&id3, 100, t0 + SignedDuration::from_secs(i as i64))
                .unwrap();
        }
        txn.record_spend(&id1, 1000, later).unwrap();
        txn.commit().unwrap();
        // 11, 12: recent.
        store.apply(&batch(11..=12), later).unwrap();

        let (keys, totals, fixes) = (
            store.key_counts().unwrap(),
            store.totals().unwrap(),
            store.fix_totals().unwrap(),
        );
        let spend = total_spend(&store);
        let policy = RetentionPolicy::new(Some(30), Some(30), 3);
        let dry = store.retain(&policy, later, true).unwrap();
        assert_eq!(
            store.incident_count().unwrap(),
            12,
            "a dry run changes nothing"
        );
        let real = store.retain(&policy, later, false).unwrap();
        assert_eq!(dry.incidents, 7);
        assert_eq!(
            (dry.incidents, dry.fixes, dry.spend_rows),
            (real.incidents, real.fixes, real.spend_rows)
        );
        assert!(real.transactions > 3, "small transactions: {real:?}");
        assert_eq!(real.fixes, 1);
        // 3 (watched), 4 (fix awaiting approval), 5 (open), 11 and 12 (recent) stay.
        let mut left: Vec<u64> = store
            .recent_incidents(100)
            .unwrap()
            .iter()
            .map(|i| i.fingerprint.0)
            .collect();
        left.sort_unstable();
        assert_eq!(left, vec![3, 4, 5, 11, 12]);
        assert!(store.incident(&id6).unwrap().is_none());
        // Counters, totals, fix totals and every incident's spend are exact.
        assert_eq!(store.key_counts().unwrap(), keys);
        assert_eq!(store.totals().unwrap(), totals);
        assert_eq!(store.fix_totals().unwrap(), fixes);
        let after = total_spend(&store);
        assert_eq!(after.values().sum::<u64>(), spend.values().sum::<u64>());
        assert_eq!(after[&id3], spend[&id3]);
        assert_eq!(
            after[""], spend[&id6],
            "a removed incident's spend is kept, unnamed"
        );
        assert_eq!(
            spend_rows(&store),
            3,
            "one row for 3, one for the removed, one recent"
        );
        // Tallies and indexes agree with the incidents left.
        assert_eq!(
            store.incident_tallies(true).unwrap(),
            store.recount_tallies().unwrap()
        );
        let filter = IncidentFilter {
            status: Some(StatusFilter::Is(IncidentStatus::Escalated)),
            ..IncidentFilter::default()
        };
        let found: Vec<u64> = store
            .find_incidents(&filter, 100)
            .unwrap()
            .iter()
            .map(|i| i.fingerprint.0)
            .collect();
        assert_eq!(found.len(), 4, "{found:?}");
        let (at, last) = store.last_retention().unwrap().unwrap();
        assert_eq!(at, later);
        assert_eq!((last.incidents, last.fixes), (7, 1));
        // Nothing more to do; seen again, a removed line is a new incident.
        let again = store.retain(&policy, later, false).unwrap();
        assert_eq!((again.incidents, again.fixes, again.spend_rows), (0, 0, 0));
        store.apply(&batch([6]), later).unwrap();
        let back = store.recent_incidents(10).unwrap();
        let back = back.iter().find(|i| i.fingerprint.0 == 6).unwrap();
        assert_eq!(back.count, 3);
        assert_eq!(store.meta_value(META_INCIDENTS_TOTAL).unwrap(), Some(7));
    }
}
