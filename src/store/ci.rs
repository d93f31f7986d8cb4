//! What CI sources and the forge (pull requests, issues) keep beside an incident.
//!
//! - `ci_incidents`: fingerprint → [`CiRecord`]: the repository, workflow, job and step of a
//!   CI failure, its recent occurrences (commit, branch, run URL, attempt; at most
//!   [`CI_OCCURRENCES_MAX`], newest kept), whether it proved flaky and whether its log could
//!   be read.
//! - `forge_links`: fingerprint → [`ForgeLinks`]: the pull request and the issue opened for
//!   the incident (numbers, URLs, states) and what went wrong with them, so that a restart
//!   never opens a second one.
//!
//! - `ci_queue`: sequence → [`PendingFetch`]: the durable log-fetch queue of the CI
//!   sources. A failed job's row is written in the same transaction as its webhook's
//!   delivery id (`ci_deliveries`), before the webhook is answered 202, and removed in the
//!   transaction that records the fetch's result; its retry state (`tries`, `not_before_ms`)
//!   is rewritten after each failed attempt, so a restart resumes where the last run stopped.
//! - `ci_deliveries`: (received at µs, xxh3 of `source \0 delivery id`) → (): the webhook
//!   delivery ids of the CI sources, oldest first, bounded by whoever writes them.
//! - `forge_state`: name → versioned JSON: the forge's own state that must outlive a
//!   process, today the issue rate limit ([`IssueLimit`]).
//!
//! The per-incident tables are versioned JSON (see `codec`), created on first use and read
//! as empty when missing (added after schema version 3 without changing it, as
//! `incident_triage`). Backups copy all five; retention removes the first two with their
//! incident.

use jiff::Timestamp;
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use super::codec;
use super::{EventKind, Incident, NewEvent, Store, StoreError, StoreTxn};

pub(crate) const CI_INCIDENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("ci_incidents");
pub(crate) const FORGE_LINKS: TableDefinition<u64, &[u8]> = TableDefinition::new("forge_links");
pub(crate) const CI_QUEUE: TableDefinition<u64, &[u8]> = TableDefinition::new("ci_queue");
pub(crate) const CI_DELIVERIES: TableDefinition<(u64, u64), ()> =
    TableDefinition::new("ci_deliveries");
pub(crate) const FORGE_STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("forge_state");

const QUEUE_FORMAT: u8 = 1;
const STATE_FORMAT: u8 = 1;
/// The `forge_state` key of [`IssueLimit`].
const ISSUE_LIMIT: &str = "issue_limit";

const CI_FORMAT: u8 = 1;
const FORGE_FORMAT: u8 = 1;

/// The most occurrences a [`CiRecord`] keeps (the newest).
pub const CI_OCCURRENCES_MAX: usize = 20;
/// The most error lines of the failing step a [`CiRecord`] keeps.
pub const CI_ERRORS_MAX: usize = 20;

/// One failed (or, for the flaky check, passed) run of a CI job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "daemon", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct CiOccurrence {
    /// The commit (`head_sha`, GitLab's `sha`).
    pub commit: String,
    /// The branch (or ref).
    pub branch: String,
    /// The run's (or job's) web page.
    pub run_url: String,
    /// The attempt: GitHub's `run_attempt`, GitLab's retries + 1.
    pub attempt: u64,
    /// The provider's job id.
    pub job_id: u64,
    /// When it was received.
    pub at: Timestamp,
    /// Whether the job's log was read (false: the incident is from the webhook alone).
    pub log_read: bool,
}

/// A CI failure's identity and history, beside its incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "daemon", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct CiRecord {
    /// `github` or `gitlab`.
    pub provider: String,
    /// `owner/name` (GitLab: the project's path with namespace).
    pub repository: String,
    /// The workflow (GitLab: the stage).
    pub workflow: String,
    /// The job.
    pub job: String,
    /// The failing step (GitLab: the section), empty when the log said none.
    pub step: String,
    /// The failing step's error lines, as the scanner found them (at most
    /// [`CI_ERRORS_MAX`]).
    pub errors: Vec<String>,
    /// The latest occurrences, oldest first (at most [`CI_OCCURRENCES_MAX`]).
    pub occurrences: Vec<CiOccurrence>,
    /// Failed, then passed on a rerun of the same commit: never sent to the fixer.
    pub flaky: bool,
    /// Why it is flaky (which commit, which attempts), when it is.
    #[serde(default)]
    pub flaky_reason: String,
    /// Set when the latest occurrence's log could not be fetched: why.
    #[serde(default)]
    pub log_error: String,
}

impl CiRecord {
    /// Adds `o`, keeping the newest [`CI_OCCURRENCES_MAX`].
    pub fn push(&mut self, o: CiOccurrence) {
        if self
            .occurrences
            .iter()
            .any(|p| p.job_id == o.job_id && p.attempt == o.attempt && o.job_id != 0)
        {
            return;
        }
        self.occurrences.push(o);
        let n = self.occurrences.len();
        if n > CI_OCCURRENCES_MAX {
            self.occurrences.drain(..n - CI_OCCURRENCES_MAX);
        }
    }
}

/// A pull request or an issue opened for an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "daemon", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct ForgeLink {
    /// The number (GitLab: the `iid`).
    pub number: u64,
    /// Its web page.
    pub url: String,
    /// `open`, `merged` (a pull request) or `closed`.
    pub state: String,
    /// The pull request's head branch (empty for an issue).
    #[serde(default)]
    pub branch: String,
    /// The fix it carries (a pull request), updated by a regression's fix.
    #[serde(default)]
    pub fix_id: String,
    /// The incident's count when it was opened or last commented on (an issue), or when
    /// its fix was pushed (a pull request).
    #[serde(default)]
    pub count: u64,
    /// A pull request: when a recurrence was last noted on it (at most one comment an hour).
    #[serde(default)]
    pub noted_at: Option<Timestamp>,
    /// A pull request: the incident's count when a recurrence was last noted on it.
    #[serde(default)]
    pub noted_count: u64,
}

/// What the forge did for an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "daemon", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct ForgeLinks {
    /// The pull (merge) request of its latest fix.
    pub pull_request: Option<ForgeLink>,
    /// Its earlier pull requests, oldest first: merged or closed on the forge before a
    /// regression's fix needed a new one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_pull_requests: Vec<ForgeLink>,
    /// The issue opened when it was escalated.
    pub issue: Option<ForgeLink>,
    /// The last thing that went wrong (a push refused, an API error), empty once it worked.
    #[serde(default)]
    pub error: String,
}

/// One job log (or run's job list) waiting to be read, in the durable queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub struct PendingFetch {
    /// The CI source's name.
    pub source: String,
    /// What to fetch, as the source wrote it (opaque to the store).
    pub work: serde_json::Value,
    /// Failed attempts so far.
    #[serde(default)]
    pub tries: u32,
    /// Not to be tried again before this (unix milliseconds; 0: at once).
    #[serde(default)]
    pub not_before_ms: u64,
}

impl PendingFetch {
    /// A fetch of `work` for `source`, not tried yet.
    pub fn new(source: &str, work: serde_json::Value) -> PendingFetch {
        PendingFetch {
            source: source.to_string(),
            work,
            tries: 0,
            not_before_ms: 0,
        }
    }
}

/// The issue rate limit's state (`issues.max_per_hour`), kept across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub struct IssueLimit {
    /// When issues were opened (the last hour's matter).
    pub opened: Vec<Timestamp>,
    /// Escalated incidents (ids) whose issue waits for the limit.
    pub waiting: Vec<String>,
}

impl Store {
    /// The durable CI log-fetch queue, in order: `(sequence, fetch)`.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors or an undecodable row.
    pub fn ci_pending(&self) -> Result<Vec<(u64, PendingFetch)>, StoreError> {
        let txn = self.begin_read()?;
        let Some(t) = self.read_table(&txn, CI_QUEUE)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for row in t.iter().map_err(self.storage())? {
            let (k, v) = row.map_err(self.storage())?;
            let p = codec::decode(QUEUE_FORMAT, v.value()).map_err(|e| StoreError::Corrupt {
                path: self.path.clone(),
                detail: format!("ci_queue {}: {e}", k.value()),
            })?;
            out.push((k.value(), p));
        }
        Ok(out)
    }

    /// The remembered CI webhook delivery hashes, oldest first.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn ci_deliveries(&self) -> Result<Vec<u64>, StoreError> {
        let txn = self.begin_read()?;
        let Some(t) = self.read_table(&txn, CI_DELIVERIES)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for row in t.iter().map_err(self.storage())? {
            let (k, _) = row.map_err(self.storage())?;
            out.push(k.value().1);
        }
        Ok(out)
    }

    /// The issue rate limit's state (empty when none was saved).
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors or an undecodable row.
    pub fn issue_limit(&self) -> Result<IssueLimit, StoreError> {
        let txn = self.begin_read()?;
        let Some(t) = self.read_table(&txn, FORGE_STATE)? else {
            return Ok(IssueLimit::default());
        };
        let Some(v) = t.get(ISSUE_LIMIT).map_err(self.storage())? else {
            return Ok(IssueLimit::default());
        };
        codec::decode(STATE_FORMAT, v.value()).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            detail: format!("forge_state {ISSUE_LIMIT}: {e}"),
        })
    }

    /// Every row of `table` that decodes: `(fingerprint, value)`; none when the table was
    /// never created. A row that does not decode is left out (these lists feed checks that
    /// read the one record again through [`Store::read_json`], which names the problem).
    fn read_all_decodable<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<u64, &[u8]>,
        format: u8,
    ) -> Result<Vec<(u64, T)>, StoreError> {
        let txn = self.begin_read()?;
        let Some(t) = self.read_table(&txn, table)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for row in t.iter().map_err(self.storage())? {
            let (k, v) = row.map_err(self.storage())?;
            if let Ok(r) = codec::decode::<T>(format, v.value()) {
                out.push((k.value(), r));
            }
        }
        Ok(out)
    }

    fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<u64, &[u8]>,
        format: u8,
        fp: u64,
    ) -> Result<Option<T>, StoreError> {
        let txn = self.begin_read()?;
        let Some(t) = self.read_table(&txn, table)? else {
            return Ok(None);
        };
        let Some(v) = t.get(fp).map_err(self.storage())? else {
            return Ok(None);
        };
        codec::decode(format, v.value())
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                path: self.path.clone(),
                detail: format!("{} {fp:016x}: {e}", redb::TableHandle::name(&table)),
            })
    }

    /// The CI record of the incident with fingerprint `fp`, if it came from CI.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors or an undecodable record.
    pub fn ci_record(&self, fp: u64) -> Result<Option<CiRecord>, StoreError> {
        self.read_json(CI_INCIDENTS, CI_FORMAT, fp)
    }

    /// Every CI record: `(fingerprint, record)` (one per CI incident; the flaky check).
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn ci_records(&self) -> Result<Vec<(u64, CiRecord)>, StoreError> {
        self.read_all_decodable(CI_INCIDENTS, CI_FORMAT)
    }

    /// What the forge did for the incident with fingerprint `fp`.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors or an undecodable record.
    pub fn forge_links(&self, fp: u64) -> Result<Option<ForgeLinks>, StoreError> {
        self.read_json(FORGE_LINKS, FORGE_FORMAT, fp)
    }

    /// Every incident's forge links (`max_open` counts the open pull requests).
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn all_forge_links(&self) -> Result<Vec<(u64, ForgeLinks)>, StoreError> {
        self.read_all_decodable(FORGE_LINKS, FORGE_FORMAT)
    }

    /// The incident with fingerprint `fp`.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn incident_of(&self, fp: u64) -> Result<Option<Incident>, StoreError> {
        let txn = self.begin_read()?;
        let incidents = super::records::ReadRecords::open(self, &txn)?;
        let counts = super::state::ReadCounts::open(self, &txn)?;
        self.load(&incidents, &counts, fp)
    }
}

impl StoreTxn<'_> {
    /// Stores `record` as the CI record of `fp`; with `note`, logs an `incident_updated`
    /// event carrying the incident and the record (a new occurrence, a flaky mark), so
    /// followers (the issue tracker, the streams) see it.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn put_ci_record(
        &mut self,
        fp: u64,
        record: &CiRecord,
        note: Option<&str>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let st = self.store;
        {
            let mut t = self.txn.open_table(CI_INCIDENTS).map_err(st.storage())?;
            t.insert(fp, codec::encode(CI_FORMAT, record).as_slice())
                .map_err(st.storage())?;
        }
        if let Some(note) = note
            && let Some(inc) = self.incident_by_fingerprint(fp)?
        {
            let mut ev = NewEvent::incident(EventKind::IncidentUpdated, &inc);
            if let serde_json::Value::Object(m) = &mut ev.data {
                m.insert(
                    "ci".into(),
                    serde_json::json!({"note": note, "record": record}),
                );
            }
            self.emit(ev, now)?;
        }
        Ok(())
    }

    /// Stores `links` as what the forge did for `fp`.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn put_forge_links(&mut self, fp: u64, links: &ForgeLinks) -> Result<(), StoreError> {
        let st = self.store;
        let mut t = self.txn.open_table(FORGE_LINKS).map_err(st.storage())?;
        t.insert(fp, codec::encode(FORGE_FORMAT, links).as_slice())
            .map_err(st.storage())?;
        Ok(())
    }

    /// Appends `fetches` to the durable CI queue and, with `delivery` (`(received at µs,
    /// hash)`), remembers the webhook delivery, keeping the newest `keep_deliveries`.
    /// Returns the fetches' sequence numbers.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn enqueue_ci_fetches(
        &mut self,
        delivery: Option<(u64, u64)>,
        keep_deliveries: usize,
        fetches: &[PendingFetch],
    ) -> Result<Vec<u64>, StoreError> {
        let st = self.store;
        if let Some(key) = delivery {
            let mut t = self.txn.open_table(CI_DELIVERIES).map_err(st.storage())?;
            t.insert(key, ()).map_err(st.storage())?;
            let mut n = t.len().map_err(st.storage())?;
            while n > keep_deliveries as u64 {
                t.pop_first().map_err(st.storage())?;
                n -= 1;
            }
        }
        let mut t = self.txn.open_table(CI_QUEUE).map_err(st.storage())?;
        let first = t
            .last()
            .map_err(st.storage())?
            .map_or(1, |(k, _)| k.value() + 1);
        let mut seqs = Vec::with_capacity(fetches.len());
        for (seq, f) in (first..).zip(fetches) {
            t.insert(seq, codec::encode(QUEUE_FORMAT, f).as_slice())
                .map_err(st.storage())?;
            seqs.push(seq);
        }
        Ok(seqs)
    }

    /// Rewrites the queued fetch `seq` (its retry state).
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn update_ci_fetch(&mut self, seq: u64, fetch: &PendingFetch) -> Result<(), StoreError> {
        let st = self.store;
        let mut t = self.txn.open_table(CI_QUEUE).map_err(st.storage())?;
        t.insert(seq, codec::encode(QUEUE_FORMAT, fetch).as_slice())
            .map_err(st.storage())?;
        Ok(())
    }

    /// Removes the queued fetch `seq` (its result is committed in this transaction).
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn remove_ci_fetch(&mut self, seq: u64) -> Result<(), StoreError> {
        let st = self.store;
        let mut t = self.txn.open_table(CI_QUEUE).map_err(st.storage())?;
        t.remove(seq).map_err(st.storage())?;
        Ok(())
    }

    /// Saves the issue rate limit's state.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn put_issue_limit(&mut self, limit: &IssueLimit) -> Result<(), StoreError> {
        let st = self.store;
        let mut t = self.txn.open_table(FORGE_STATE).map_err(st.storage())?;
        t.insert(ISSUE_LIMIT, codec::encode(STATE_FORMAT, limit).as_slice())
            .map_err(st.storage())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_occurrences_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        assert_eq!(store.ci_record(7).unwrap(), None);
        assert!(store.ci_records().unwrap().is_empty());
        let mut r = CiRecord {
            provider: "github".into(),
            repository: "acme/app".into(),
            ..CiRecord::default()
        };
        for i in 0..30 {
            r.push(CiOccurrence {
                commit: format!("c{i}"),
                attempt: 1,
                job_id: i + 1,
                ..CiOccurrence::default()
            });
        }
        // The same job and attempt again: kept once.
        r.push(CiOccurrence {
            commit: "c29".into(),
            attempt: 1,
            job_id: 30,
            ..CiOccurrence::default()
        });
        assert_eq!(r.occurrences.len(), CI_OCCURRENCES_MAX);
        assert_eq!(r.occurrences[0].commit, "c10");
        let links = ForgeLinks {
            issue: Some(ForgeLink {
                number: 3,
                state: "open".into(),
                ..ForgeLink::default()
            }),
            ..ForgeLinks::default()
        };
        let mut txn = store.begin_write().unwrap();
        txn.put_ci_record(7, &r, None, Timestamp::now()).unwrap();
        txn.put_forge_links(7, &links).unwrap();
        txn.commit().unwrap();
        assert_eq!(store.ci_record(7).unwrap(), Some(r.clone()));
        assert_eq!(store.ci_records().unwrap(), vec![(7, r)]);
        assert_eq!(store.forge_links(7).unwrap(), Some(links.clone()));
        assert_eq!(store.all_forge_links().unwrap(), vec![(7, links)]);
    }

    #[test]
    fn forge_links_written_before_earlier_pull_requests_still_read() {
        let mut bytes = vec![FORGE_FORMAT];
        bytes.extend_from_slice(
            br#"{"pull_request":{"number":1,"url":"u","state":"open","branch":"b","fix_id":"f","count":2},"issue":null,"error":""}"#,
        );
        let links: ForgeLinks = codec::decode(FORGE_FORMAT, &bytes).unwrap();
        let pr = links.pull_request.unwrap();
        assert_eq!(
            (pr.number, pr.count, pr.noted_at, pr.noted_count),
            (1, 2, None, 0)
        );
        assert!(links.earlier_pull_requests.is_empty());
    }

    #[test]
    fn the_fetch_queue_deliveries_and_issue_limit_persist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            let store = Store::open(&path).unwrap();
            assert!(store.ci_pending().unwrap().is_empty());
            let mut txn = store.begin_write().unwrap();
            let a = PendingFetch::new("gh", serde_json::json!({"job": 1}));
            let b = PendingFetch::new("gh", serde_json::json!({"job": 2}));
            let seqs = txn
                .enqueue_ci_fetches(Some((10, 77)), 2, &[a.clone(), b])
                .unwrap();
            assert_eq!(seqs, [1, 2]);
            txn.enqueue_ci_fetches(Some((11, 78)), 2, &[]).unwrap();
            txn.enqueue_ci_fetches(Some((12, 79)), 2, &[]).unwrap();
            let mut retried = a;
            retried.tries = 2;
            retried.not_before_ms = 1_700_000_000_000;
            txn.update_ci_fetch(1, &retried).unwrap();
            txn.remove_ci_fetch(2).unwrap();
            txn.put_issue_limit(&IssueLimit {
                opened: vec![Timestamp::from_second(1_700_000_000).unwrap()],
                waiting: vec!["inc-1".into()],
            })
            .unwrap();
            txn.commit().unwrap();
        }
        // Reopened: the retry state, the newest deliveries, the limit are there.
        let store = Store::open(&path).unwrap();
        let pending = store.ci_pending().unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!((pending[0].0, pending[0].1.tries), (1, 2));
        assert_eq!(pending[0].1.not_before_ms, 1_700_000_000_000);
        assert_eq!(store.ci_deliveries().unwrap(), [78, 79]);
        let limit = store.issue_limit().unwrap();
        assert_eq!(limit.waiting, ["inc-1"]);
        assert_eq!(limit.opened.len(), 1);
        // Sequence numbers keep growing after the last row.
        let mut txn = store.begin_write().unwrap();
        let seqs = txn
            .enqueue_ci_fetches(None, 2, &[PendingFetch::default()])
            .unwrap();
        txn.commit().unwrap();
        assert_eq!(seqs, [2]);
    }

    #[test]
    fn backups_copy_both_tables() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let r = CiRecord {
            flaky: true,
            ..CiRecord::default()
        };
        let links = ForgeLinks {
            error: "push refused".into(),
            ..ForgeLinks::default()
        };
        let mut txn = store.begin_write().unwrap();
        txn.put_ci_record(9, &r, Some("note"), Timestamp::now())
            .unwrap();
        txn.put_forge_links(9, &links).unwrap();
        txn.commit().unwrap();
        let dest = dir.path().join("copy.redb");
        let summary = store.backup(&dest).unwrap();
        assert_eq!(summary.tables["ci_incidents"], 1, "{summary:?}");
        assert_eq!(summary.tables["forge_links"], 1, "{summary:?}");
        let copy = Store::open_read_only(&dest).unwrap().unwrap();
        assert_eq!(copy.ci_record(9).unwrap(), Some(r));
        assert_eq!(copy.forge_links(9).unwrap(), Some(links));
    }
}
