//! The daemon's triage answers (reference/SPEC.md §5.3): an incident whose lines carry no
//! PACT key turns actionable as `triaging` (see [`super::Action::Triage`]); the daemon asks
//! the LLM which registered component produced it, and [`StoreTxn::settle_triage`] stores
//! the answer beside the incident and moves it on in the same transaction: attributed (then
//! queued or escalated exactly as a keyed incident would be) or escalated.
//!
//! `incident_triage`: fingerprint → [`TriageRecord`] (versioned JSON, see `codec`). Added
//! after schema version 3 without changing it: created on first use, read as empty when
//! missing. One record per incident: triage runs once per distinct incident.

use jiff::Timestamp;
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::codec;
use super::{
    Action, EventKind, Incident, IncidentFilter, IncidentStatus, StatusFilter, Store, StoreError,
    StoreTxn,
};
use crate::attribute::AttributionStatus;
use crate::scan::Fingerprint;

pub(crate) const TRIAGE: TableDefinition<u64, &[u8]> = TableDefinition::new("incident_triage");

const TRIAGE_FORMAT: u8 = 1;

/// What the triage of one incident concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "daemon", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TriageOutcome {
    /// A registered component, with confidence ≥ the acceptance threshold (0.3).
    Attributed,
    /// The model named no registered component (or was not confident enough).
    NoMatch,
    /// No answer: the budget refused the call, or the call failed.
    Unavailable,
}

/// One incident's triage answer, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "daemon", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub struct TriageRecord {
    /// What it concluded.
    pub outcome: TriageOutcome,
    /// The component (empty unless attributed).
    pub component_id: String,
    /// The model's confidence (0 when there was no answer).
    pub confidence: f64,
    /// The model's reasoning, or why there was no answer.
    pub reasoning: String,
    /// When the answer came.
    pub at: Timestamp,
}

impl TriageRecord {
    /// A record of `outcome`.
    pub fn new(
        outcome: TriageOutcome,
        component_id: &str,
        confidence: f64,
        reasoning: &str,
        at: Timestamp,
    ) -> TriageRecord {
        TriageRecord {
            outcome,
            component_id: component_id.to_string(),
            confidence,
            reasoning: reasoning.to_string(),
            at,
        }
    }
}

impl Store {
    /// The triage answer stored for `fp`, if it was triaged.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors or an undecodable record.
    pub fn triage_of(&self, fp: Fingerprint) -> Result<Option<TriageRecord>, StoreError> {
        let txn = self.begin_read()?;
        let Some(t) = self.read_table(&txn, TRIAGE)? else {
            return Ok(None);
        };
        let Some(v) = t.get(fp.0).map_err(self.storage())? else {
            return Ok(None);
        };
        codec::decode(TRIAGE_FORMAT, v.value())
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                path: self.path.clone(),
                detail: format!("triage record {:016x}: {e}", fp.0),
            })
    }

    /// When the answers given at or after `since` came, oldest first: the daemon's rate
    /// limit survives a restart. (Reads every record: one per triaged incident.)
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn triage_times_since(&self, since: Timestamp) -> Result<Vec<Timestamp>, StoreError> {
        let txn = self.begin_read()?;
        let Some(t) = self.read_table(&txn, TRIAGE)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for row in t.iter().map_err(self.storage())? {
            let (_, v) = row.map_err(self.storage())?;
            if let Ok(r) = codec::decode::<TriageRecord>(TRIAGE_FORMAT, v.value())
                && r.at >= since
                && r.outcome != TriageOutcome::Unavailable
            {
                out.push(r.at);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Incidents waiting for triage (status `triaging`), the longest-waiting first, at most
    /// `limit` (through the status index: the cost does not grow with the store).
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn awaiting_triage(&self, limit: usize) -> Result<Vec<Incident>, StoreError> {
        let filter = IncidentFilter {
            status: Some(StatusFilter::Is(IncidentStatus::Triaging)),
            ..IncidentFilter::default()
        };
        // The index pages newest first; the page holds every waiting incident while fewer
        // than `limit` wait, which the rate limit keeps the usual case.
        let mut page = self.find_incidents(&filter, limit)?;
        page.sort_by_key(|i| i.first_seen);
        Ok(page)
    }
}

impl StoreTxn<'_> {
    /// Stores `record` as incident `fp`'s triage answer and, if the incident still waits
    /// for it (status `triaging`), moves it on: attributed to the component (registered),
    /// then queued for a fix with `auto_remediate`, escalated (`auto_remediate_disabled`)
    /// without — as a keyed incident of that component would have been; not attributed,
    /// escalated as `component_not_registered`. Returns the incident as it now is and what
    /// was done, or `None` when it no longer waited (someone resolved it meanwhile).
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn settle_triage(
        &mut self,
        fp: Fingerprint,
        record: &TriageRecord,
        auto_remediate: bool,
        now: Timestamp,
    ) -> Result<Option<(Incident, Action)>, StoreError> {
        let st = self.store;
        {
            let mut t = self.txn.open_table(TRIAGE).map_err(st.storage())?;
            t.insert(fp.0, codec::encode(TRIAGE_FORMAT, record).as_slice())
                .map_err(st.storage())?;
        }
        let stored = {
            let incidents = super::records::Records::open(st, &self.txn)?;
            let v = incidents.get(fp.0).map_err(st.storage())?;
            v.map(|v| v.value().to_vec())
        };
        let Some(bytes) = stored else {
            return Ok(None);
        };
        let mut inc = st.decode(fp.0, &bytes)?;
        if inc.status != IncidentStatus::Triaging {
            return Ok(None);
        }
        let action = if record.outcome == TriageOutcome::Attributed {
            inc.attribution = AttributionStatus::Registered;
            inc.component_id = record.component_id.clone();
            if auto_remediate {
                inc.status = IncidentStatus::Detected;
                Action::Queued(self.queue_job(&inc, "", now)?)
            } else {
                inc.status = IncidentStatus::Escalated;
                inc.resolution = "auto_remediate_disabled".into();
                Action::Escalated("auto_remediate_disabled")
            }
        } else {
            inc.status = IncidentStatus::Escalated;
            inc.resolution = "component_not_registered".into();
            Action::Escalated("component_not_registered")
        };
        let kind = match action {
            Action::Escalated(_) => EventKind::IncidentEscalated,
            _ => EventKind::IncidentUpdated,
        };
        // The queued job's sequence is the actioned mark `incident_state` keeps for a queued
        // incident (0 for an escalated one, as the ingest path does).
        if let Action::Queued(seq) = action {
            super::index::Indexer::open(st, &self.txn)?.set_actioned(fp.0, Some(seq))?;
        }
        self.update_incident(&inc, kind, now)?;
        Ok(Some((inc, action)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::Severity;
    use crate::store::{FixPolicy, IncidentDelta, IngestBatch};

    fn unkeyed(store: &Store, fp: u64, at: Timestamp) -> crate::store::ApplyOutcome {
        let mut b = IngestBatch::new();
        let d = IncidentDelta::new(
            Fingerprint(fp),
            1,
            &format!("ERROR no key {fp}"),
            AttributionStatus::Unattributed,
            Severity::High,
        );
        b.incidents.insert(Fingerprint(fp), d);
        store.apply(&b, at).unwrap()
    }

    #[test]
    fn an_unkeyed_incident_waits_for_triage_and_its_answer_moves_it_on_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        store.set_fix_policy(FixPolicy::new(&Default::default(), true).with_triage(true));
        let t0: Timestamp = "2026-12-06T12:00:00Z".parse().unwrap();
        // Actionable at once (threshold 1): it waits for triage instead of being escalated.
        let out = unkeyed(&store, 1, t0);
        assert_eq!(out.actions[0].1, Action::Triage);
        let out = unkeyed(&store, 2, t0);
        assert_eq!(out.actions[0].1, Action::Triage);
        let waiting = store.awaiting_triage(16).unwrap();
        assert_eq!(waiting.len(), 2);
        assert!(store.open_jobs().unwrap().is_empty());
        // A repeat neither acts nor waits twice.
        assert!(unkeyed(&store, 1, t0).actions.is_empty());

        // Attributed: registered, its component, and a fix queued as for a keyed incident.
        let yes = TriageRecord::new(TriageOutcome::Attributed, "auth", 0.9, "tokens", t0);
        let mut txn = store.begin_write().unwrap();
        let (inc, action) = txn
            .settle_triage(Fingerprint(1), &yes, true, t0)
            .unwrap()
            .unwrap();
        txn.commit().unwrap();
        assert!(matches!(action, Action::Queued(_)), "{action:?}");
        assert_eq!(inc.component_id, "auth");
        assert_eq!(inc.attribution, AttributionStatus::Registered);
        assert_eq!(inc.status, IncidentStatus::Detected);
        let jobs = store.open_jobs().unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].component_id, "auth");
        // The filtered views follow it (indexes and tallies in the same transaction).
        let by_component = store
            .find_incidents(
                &IncidentFilter {
                    component: Some("auth".into()),
                    ..IncidentFilter::default()
                },
                10,
            )
            .unwrap();
        assert_eq!(by_component.len(), 1);
        assert_eq!(store.status_counts().unwrap()[&IncidentStatus::Triaging], 1);

        // Not attributed: escalated as unregistered.
        let no = TriageRecord::new(TriageOutcome::NoMatch, "", 0.0, "unknown", t0);
        let mut txn = store.begin_write().unwrap();
        let (inc, action) = txn
            .settle_triage(Fingerprint(2), &no, true, t0)
            .unwrap()
            .unwrap();
        txn.commit().unwrap();
        assert_eq!(action, Action::Escalated("component_not_registered"));
        assert_eq!(inc.status, IncidentStatus::Escalated);
        assert!(store.awaiting_triage(16).unwrap().is_empty());

        // A second answer for a settled incident changes nothing more.
        let mut txn = store.begin_write().unwrap();
        assert!(
            txn.settle_triage(Fingerprint(1), &yes, true, t0)
                .unwrap()
                .is_none()
        );
        txn.commit().unwrap();
        assert_eq!(store.open_jobs().unwrap().len(), 1);

        // The answers are kept, and their times drive the hourly limit after a restart.
        assert_eq!(store.triage_of(Fingerprint(1)).unwrap().unwrap(), yes);
        // (One record per incident: the later answer replaced the first.)
        assert_eq!(store.triage_times_since(t0).unwrap(), vec![t0, t0]);
        let later = t0.checked_add(jiff::SignedDuration::from_secs(1)).unwrap();
        assert!(store.triage_times_since(later).unwrap().is_empty());
    }

    #[test]
    fn without_triage_an_unkeyed_incident_is_escalated_at_once_as_before() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        store.set_fix_policy(FixPolicy::new(&Default::default(), true));
        let t0: Timestamp = "2026-12-06T12:00:00Z".parse().unwrap();
        let out = unkeyed(&store, 1, t0);
        assert_eq!(
            out.actions[0].1,
            Action::Escalated("component_not_registered")
        );
        assert!(store.awaiting_triage(16).unwrap().is_empty());
    }
}
