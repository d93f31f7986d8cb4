//! Fix results and the fix-job transitions, each in one transaction with the incident's
//! new state and the events it causes.
//!
//! | table | key | value |
//! |---|---|---|
//! | `fixes` | fix id | [`FixResult`], versioned JSON |
//! | `fixes_by_time` | (started µs, fix id) | () — newest-first listing |
//! | `incident_fixes` | (incident id, fix id) | () — an incident's fix attempts |
//! | `regression_watch` | fingerprint | fix generation — incidents whose fix was merged |
//!
//! A job moves `queued → running` ([`StoreTxn::start_job`], which also sets the incident
//! `remediating` and logs `fix_started`) and `running → succeeded | failed`
//! ([`StoreTxn::finish_fix`], which stores the result, sets the incident `resolved` or
//! `escalated`, and logs `fix_completed`/`fix_failed` plus the incident's event). A job
//! found `running` at start was cut off by a crash: [`StoreTxn::recover_jobs`] queues it
//! again once, and fails it the second time.

use std::collections::BTreeMap;

use jiff::Timestamp;
use redb::{ReadableTable, TableError};
use serde::{Deserialize, Serialize};

use super::schema::{FIXES, FIXES_BY_TIME, INCIDENT_FIXES, REGRESSION_WATCH};
use super::{
    EventKind, FIX_JOBS, FixJob, INCIDENT_IDS, Incident, IncidentStatus, JOBS_OPEN, JobState,
    NewEvent, Store, StoreError, StoreTxn, micros,
};

/// The format byte of encoded fix results.
pub const FIX_FORMAT: u8 = 1;

/// How many times a job cut off by a crash is started again before it fails.
pub const MAX_JOB_STARTS: u32 = 2;

/// A fix's state (the reference's `pending|running|success|failure`, plus the human gate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "daemon", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FixStatus {
    /// Not started.
    #[default]
    Pending,
    /// Being worked on.
    Running,
    /// Proven by the tests and committed on its branch.
    Success,
    /// No proven fix.
    Failure,
    /// Proven; waits for `approve` before it is committed or merged.
    AwaitingApproval,
    /// A human rejected it.
    Rejected,
}

impl FixStatus {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            FixStatus::Pending => "pending",
            FixStatus::Running => "running",
            FixStatus::Success => "success",
            FixStatus::Failure => "failure",
            FixStatus::AwaitingApproval => "awaiting_approval",
            FixStatus::Rejected => "rejected",
        }
    }
}

/// One fix: the reference's `FixResult` (SPEC §2) plus where it went and what it cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "daemon", derive(utoipa::ToSchema))]
#[serde(default)]
#[non_exhaustive]
pub struct FixResult {
    /// 12 hex characters.
    pub id: String,
    /// The incident.
    pub incident_id: String,
    /// The component.
    pub component_id: String,
    /// The incident's PACT key.
    pub pact_key: String,
    /// The first 200 characters of the incident's sample line (redacted).
    pub error_summary: String,
    /// State.
    pub status: FixStatus,
    /// The reproducer test edits, as a unified diff of the test files.
    pub reproducer_test: String,
    /// The fixed files: path (relative to the repository) → new contents.
    pub fixed_source: BTreeMap<String, String>,
    /// The tightened contract (JSON text), or empty.
    pub contract_change: String,
    /// Whether `contract_change` is set.
    pub contract_changed: bool,
    /// Where the contract went: `pact-cli`, `pact-api`, `proposed:<path>`, or empty.
    pub contract_push: String,
    /// The user's commit the fix was made from.
    pub git_snapshot_ref: String,
    /// The fix commit on `branch`.
    pub git_fix_ref: String,
    /// The fix branch (`sentinel/fix-<id>`).
    pub branch: String,
    /// The repository the branch is in.
    pub repo: String,
    /// Whether the user's branch was fast-forwarded to the fix.
    pub merged: bool,
    /// LLM attempts made.
    pub attempts: u32,
    /// Tokens sent.
    pub input_tokens: u64,
    /// Tokens received.
    pub output_tokens: u64,
    /// What the LLM calls cost, in micro-USD.
    pub spend_micro_usd: u64,
    /// The same in USD.
    pub spend_usd: f64,
    /// When it started.
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub completed_at: Option<Timestamp>,
    /// Wall time, milliseconds.
    pub duration_ms: u64,
    /// The tail of the last test run's output.
    pub test_output_tail: String,
    /// Why it failed.
    pub error: String,
    /// The fix generation of the incident (2 and up: a regression).
    pub generation: u32,
    /// Asked for by hand (`sentinel fix`, `POST /fix`), not by the threshold.
    pub manual: bool,
    /// Run in `fix.mode: shadow`: proven or not, nothing was kept, merged or pushed.
    pub shadow: bool,
    /// The guardrails that refused a proposal of this fix, in order.
    pub refusals: Vec<Refusal>,
    /// The committed change as a unified diff against the commit it was made from (`git
    /// diff`, fixed source, reproducer and contract together), cut at [`MAX_DIFF_BYTES`].
    pub diff: String,
}

/// The most of a fix's diff kept with it.
pub const MAX_DIFF_BYTES: usize = 256 << 10;

/// `diff` cut at [`MAX_DIFF_BYTES`] (at a line's end), saying so when it was cut.
pub fn clip_diff(mut diff: String) -> String {
    if diff.len() <= MAX_DIFF_BYTES {
        return diff;
    }
    let mut end = MAX_DIFF_BYTES;
    while !diff.is_char_boundary(end) {
        end -= 1;
    }
    let end = diff[..end].rfind('\n').map_or(end, |i| i + 1);
    let cut = diff.len() - end;
    diff.truncate(end);
    diff.push_str(&format!("[… {cut} more bytes of the diff not kept]\n"));
    diff
}

/// A guardrail's refusal (`fix.min_confidence`, `fix.max_files`, a freeze window, …).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "daemon", derive(utoipa::ToSchema))]
#[serde(default)]
#[non_exhaustive]
pub struct Refusal {
    /// Which guardrail: `paused`, `freeze`, `cooldown`, `min_confidence`,
    /// `max_changed_lines`, `max_files`, `flaky`.
    pub guardrail: String,
    /// Why, in words.
    pub reason: String,
}

impl Refusal {
    /// A refusal by `guardrail`.
    pub fn new(guardrail: &str, reason: impl Into<String>) -> Refusal {
        Refusal {
            guardrail: guardrail.to_string(),
            reason: reason.into(),
        }
    }
}

impl FixResult {
    /// The stored bytes.
    pub fn encode(&self) -> Vec<u8> {
        super::codec::encode(FIX_FORMAT, self)
    }

    /// Decodes stored bytes.
    ///
    /// # Errors
    ///
    /// A message when the value is from a newer format or is not valid.
    pub fn decode(b: &[u8]) -> Result<FixResult, String> {
        super::codec::decode(FIX_FORMAT, b).map_err(|e| e.to_string())
    }

    fn event(&self, kind: EventKind) -> NewEvent {
        NewEvent {
            kind,
            incident_id: self.incident_id.clone(),
            fix_id: self.id.clone(),
            component_id: self.component_id.clone(),
            data: serde_json::to_value(self).unwrap_or_default(),
            incident: None,
        }
    }
}

impl Store {
    /// The fix `id`.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors or an undecodable record.
    pub fn fix(&self, id: &str) -> Result<Option<FixResult>, StoreError> {
        let txn = self.begin_read()?;
        let Some(t) = self.read_table(&txn, FIXES)? else {
            return Ok(None);
        };
        let Some(v) = t.get(id).map_err(self.storage())? else {
            return Ok(None);
        };
        self.decode_fix(v.value()).map(Some)
    }

    /// Up to `limit` fixes, newest first.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors or an undecodable record.
    pub fn fixes(&self, limit: usize) -> Result<Vec<FixResult>, StoreError> {
        let txn = self.begin_read()?;
        let (by_time, fixes) = match (txn.open_table(FIXES_BY_TIME), txn.open_table(FIXES)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(TableError::TableDoesNotExist(_)), _)
            | (_, Err(TableError::TableDoesNotExist(_))) => return Ok(Vec::new()),
            (Err(e), _) | (_, Err(e)) => return Err(self.storage()(e)),
        };
        let mut out = Vec::new();
        for row in by_time.iter().map_err(self.storage())?.rev().take(limit) {
            let (k, _) = row.map_err(self.storage())?;
            let (_, id) = k.value();
            if let Some(v) = fixes.get(id).map_err(self.storage())? {
                out.push(self.decode_fix(v.value())?);
            }
        }
        Ok(out)
    }

    /// The fixes of incident `id`, oldest first.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors or an undecodable record.
    pub fn fixes_of(&self, incident_id: &str) -> Result<Vec<FixResult>, StoreError> {
        let txn = self.begin_read()?;
        let (index, fixes) = match (txn.open_table(INCIDENT_FIXES), txn.open_table(FIXES)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(TableError::TableDoesNotExist(_)), _)
            | (_, Err(TableError::TableDoesNotExist(_))) => return Ok(Vec::new()),
            (Err(e), _) | (_, Err(e)) => return Err(self.storage()(e)),
        };
        let mut out = Vec::new();
        let range = index
            .range((incident_id, "")..=(incident_id, "\u{10ffff}"))
            .map_err(self.storage())?;
        for row in range {
            let (k, _) = row.map_err(self.storage())?;
            let (_, id) = k.value();
            if let Some(v) = fixes.get(id).map_err(self.storage())? {
                out.push(self.decode_fix(v.value())?);
            }
        }
        out.sort_by_key(|f| f.started_at);
        Ok(out)
    }

    /// Fix counts and spend over every stored fix: (attempted, succeeded, failed,
    /// micro-USD). A fix awaiting approval counts as attempted only.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn fix_totals(&self) -> Result<(u64, u64, u64, u64), StoreError> {
        let txn = self.begin_read()?;
        let mut t = (0, 0, 0, 0);
        let fixes = match txn.open_table(FIXES) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(t),
            Err(e) => return Err(self.storage()(e)),
        };
        for row in fixes.iter().map_err(self.storage())? {
            let (_, v) = row.map_err(self.storage())?;
            let Ok(f) = FixResult::decode(v.value()) else {
                continue;
            };
            t.0 += 1;
            match f.status {
                FixStatus::Success => t.1 += 1,
                FixStatus::Failure | FixStatus::Rejected => t.2 += 1,
                _ => {}
            }
            t.3 += f.spend_micro_usd;
        }
        // Fixes removed by retention still count (see `retention`).
        if let Ok(meta) = txn.open_table(super::META) {
            let retired = super::retention::META_RETIRED_FIXES
                .map(|name| meta.get(name).ok().flatten().map_or(0, |v| v.value()));
            t = (
                t.0 + retired[0],
                t.1 + retired[1],
                t.2 + retired[2],
                t.3 + retired[3],
            );
        }
        Ok(t)
    }

    fn decode_fix(&self, b: &[u8]) -> Result<FixResult, StoreError> {
        FixResult::decode(b).map_err(|detail| StoreError::Corrupt {
            path: self.path.clone(),
            detail,
        })
    }
}

impl StoreTxn<'_> {
    fn fix_status(&mut self, id: &str) -> Result<Option<FixStatus>, StoreError> {
        let st = self.store;
        let fixes = self.txn.open_table(FIXES).map_err(st.storage())?;
        let Some(v) = fixes.get(id).map_err(st.storage())? else {
            return Ok(None);
        };
        Ok(FixResult::decode(v.value()).ok().map(|f| f.status))
    }

    /// Stores (or replaces) a fix result.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn put_fix(&mut self, fix: &FixResult) -> Result<(), StoreError> {
        let st = self.store;
        let mut fixes = self.txn.open_table(FIXES).map_err(st.storage())?;
        let mut by_time = self.txn.open_table(FIXES_BY_TIME).map_err(st.storage())?;
        let mut index = self.txn.open_table(INCIDENT_FIXES).map_err(st.storage())?;
        let started = fix.started_at.map_or(0, micros);
        let previous = fixes
            .insert(fix.id.as_str(), fix.encode().as_slice())
            .map_err(st.storage())?
            .and_then(|v| FixResult::decode(v.value()).ok());
        // The listing is keyed by start time, which a fix gets when it starts: move its row.
        if let Some(prev) = previous {
            let was = prev.started_at.map_or(0, micros);
            if was != started {
                by_time
                    .remove((was, fix.id.as_str()))
                    .map_err(st.storage())?;
            }
        }
        by_time
            .insert((started, fix.id.as_str()), ())
            .map_err(st.storage())?;
        index
            .insert((fix.incident_id.as_str(), fix.id.as_str()), ())
            .map_err(st.storage())?;
        Ok(())
    }

    /// A fix's pull request was seen merged on the forge (merged by a person, not by
    /// Sentinel): the fix is marked merged and, while its incident is resolved, the incident
    /// is watched for a regression as one whose fix Sentinel merged is (see `record_fix`):
    /// its next occurrence reopens it. Returns whether the watch was armed.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors or an undecodable record.
    pub fn merged_on_forge(&mut self, fix_id: &str) -> Result<bool, StoreError> {
        let st = self.store;
        let mut fix = {
            let fixes = self.txn.open_table(FIXES).map_err(st.storage())?;
            let v = fixes.get(fix_id).map_err(st.storage())?;
            match v {
                Some(v) => st.decode_fix(v.value())?,
                None => return Ok(false),
            }
        };
        if !fix.merged {
            fix.merged = true;
            self.put_fix(&fix)?;
        }
        let Some(inc) = self.incident(&fix.incident_id)? else {
            return Ok(false);
        };
        if inc.status != IncidentStatus::Resolved {
            return Ok(false);
        }
        self.watch_for_regression(&inc, &fix)?;
        Ok(true)
    }

    /// Puts `inc`, whose `fix` is merged, under regression watch: seen again, it reopens.
    fn watch_for_regression(&mut self, inc: &Incident, fix: &FixResult) -> Result<(), StoreError> {
        let st = self.store;
        let mut watch = self
            .txn
            .open_table(REGRESSION_WATCH)
            .map_err(st.storage())?;
        watch
            .insert(inc.fingerprint.0, fix.generation.max(1))
            .map_err(st.storage())?;
        Ok(())
    }

    /// The incident `id` (with its current count), for update in this transaction.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors or an undecodable record.
    pub fn incident(&mut self, id: &str) -> Result<Option<Incident>, StoreError> {
        let st = self.store;
        let fp = {
            let ids = self.txn.open_table(INCIDENT_IDS).map_err(st.storage())?;
            ids.get(id).map_err(st.storage())?.map(|v| v.value())
        };
        match fp {
            Some(fp) => self.incident_by_fingerprint(fp),
            None => Ok(None),
        }
    }

    /// The incident with fingerprint `fp` (with its current count).
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors or an undecodable record.
    pub fn incident_by_fingerprint(&mut self, fp: u64) -> Result<Option<Incident>, StoreError> {
        let st = self.store;
        let incidents = super::records::Records::open(st, &self.txn)?;
        let counts = self
            .txn
            .open_table(super::schema::STATE)
            .map_err(st.storage())?;
        st.load(&incidents, &counts, fp)
    }

    /// Names the fix that job `seq` will produce.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn set_job_fix_id(&mut self, seq: u64, fix_id: &str) -> Result<(), StoreError> {
        if let Some(mut job) = self.job(seq)? {
            job.fix_id = fix_id.to_string();
            self.put_job(&job)?;
        }
        Ok(())
    }

    /// The queued or running job of incident `id`, if any: (sequence, state, fix id).
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn active_job(&mut self, id: &str) -> Result<Option<(u64, JobState, String)>, StoreError> {
        let st = self.store;
        let jobs = self.txn.open_table(FIX_JOBS).map_err(st.storage())?;
        for row in jobs.iter().map_err(st.storage())?.rev() {
            let (_, v) = row.map_err(st.storage())?;
            let Ok(job) = FixJob::decode(v.value()) else {
                continue;
            };
            if job.incident_id != id {
                continue;
            }
            return Ok(match job.state {
                JobState::Queued | JobState::Running => Some((job.seq, job.state, job.fix_id)),
                _ => None,
            });
        }
        Ok(None)
    }

    /// Stores `inc`'s lifecycle fields (status, resolution), moves it in the secondary
    /// indexes and tallies, and logs `kind` for it.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn update_incident(
        &mut self,
        inc: &Incident,
        kind: EventKind,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let st = self.store;
        {
            let fp = inc.fingerprint.0;
            let mut incidents = super::records::Records::open(st, &self.txn)?;
            incidents
                .insert(fp, inc.encode().as_slice())
                .map_err(st.storage())?;
            // The indexes and tallies follow its status (in this transaction).
            super::index::Indexer::open(st, &self.txn)?.update(fp, inc)?;
        }
        self.emit(NewEvent::incident(kind, inc), now)?;
        Ok(())
    }

    /// Queues a fix job for incident `inc` by hand (whatever the threshold and
    /// `auto_remediate` say); returns its sequence number.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn queue_job(
        &mut self,
        inc: &Incident,
        fix_id: &str,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let st = self.store;
        let mut jobs = self.txn.open_table(FIX_JOBS).map_err(st.storage())?;
        let seq = jobs
            .last()
            .map_err(st.storage())?
            .map_or(1, |(k, _)| k.value() + 1);
        let job = FixJob::queued(seq, inc, fix_id, now);
        jobs.insert(seq, job.encode().as_slice())
            .map_err(st.storage())?;
        drop(jobs);
        let mut open = self.txn.open_table(JOBS_OPEN).map_err(st.storage())?;
        open.insert(seq, ()).map_err(st.storage())?;
        Ok(seq)
    }

    fn job(&mut self, seq: u64) -> Result<Option<FixJob>, StoreError> {
        let st = self.store;
        let jobs = self.txn.open_table(FIX_JOBS).map_err(st.storage())?;
        let Some(v) = jobs.get(seq).map_err(st.storage())? else {
            return Ok(None);
        };
        FixJob::decode(v.value())
            .map(Some)
            .map_err(|detail| StoreError::Corrupt {
                path: st.path.clone(),
                detail,
            })
    }

    fn put_job(&mut self, job: &FixJob) -> Result<(), StoreError> {
        let st = self.store;
        let mut jobs = self.txn.open_table(FIX_JOBS).map_err(st.storage())?;
        jobs.insert(job.seq, job.encode().as_slice())
            .map_err(st.storage())?;
        let mut open = self.txn.open_table(JOBS_OPEN).map_err(st.storage())?;
        if matches!(job.state, JobState::Queued | JobState::Running) {
            open.insert(job.seq, ()).map_err(st.storage())?;
        } else {
            open.remove(job.seq).map_err(st.storage())?;
        }
        Ok(())
    }

    /// Takes queued job `seq` for fix `fix`: the job becomes `running`, the incident
    /// `remediating`, the fix `running` (stored), and `fix_started` is logged. Returns the
    /// job, or `None` when it is not queued (taken already, or gone).
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn start_job(
        &mut self,
        seq: u64,
        fix: &mut FixResult,
        now: Timestamp,
    ) -> Result<Option<FixJob>, StoreError> {
        let Some(mut job) = self.job(seq)? else {
            return Ok(None);
        };
        if job.state != JobState::Queued {
            return Ok(None);
        }
        job.state = JobState::Running;
        job.attempts += 1;
        job.updated_at = now;
        self.put_job(&job)?;
        if let Some(mut inc) = self.incident(&job.incident_id)? {
            inc.status = IncidentStatus::Remediating;
            inc.resolution.clear();
            self.update_incident(&inc, EventKind::IncidentUpdated, now)?;
        }
        fix.status = FixStatus::Running;
        fix.started_at = Some(now);
        self.put_fix(fix)?;
        self.emit(fix.event(EventKind::FixStarted), now)?;
        Ok(Some(job))
    }

    /// Records a finished fix: stores it, ends job `seq` (if any), moves the incident to
    /// `resolved` (success) or `escalated` with `resolution` and logs the events. A merged
    /// fix puts the incident under regression watch.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn finish_fix(
        &mut self,
        seq: Option<u64>,
        fix: &FixResult,
        resolution: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let ok = matches!(fix.status, FixStatus::Success | FixStatus::AwaitingApproval);
        if let Some(seq) = seq
            && let Some(mut job) = self.job(seq)?
        {
            job.state = if ok {
                JobState::Succeeded
            } else {
                JobState::Failed
            };
            job.updated_at = now;
            self.put_job(&job)?;
        }
        // An approved fix was announced when it was proven: no second fix_completed.
        let approved = fix.status == FixStatus::Success
            && self.fix_status(&fix.id)? == Some(FixStatus::AwaitingApproval);
        self.put_fix(fix)?;
        let kind = if ok {
            EventKind::FixCompleted
        } else {
            EventKind::FixFailed
        };
        if !approved {
            self.emit(fix.event(kind), now)?;
        }
        if let Some(mut inc) = self.incident(&fix.incident_id)? {
            let (status, event) = match fix.status {
                // Shadow mode proved a fix but kept nothing: a person still has to act.
                FixStatus::Success if fix.shadow => {
                    (IncidentStatus::Escalated, EventKind::IncidentEscalated)
                }
                FixStatus::Success => (IncidentStatus::Resolved, EventKind::IncidentResolved),
                FixStatus::AwaitingApproval => {
                    (IncidentStatus::Verifying, EventKind::IncidentUpdated)
                }
                _ => (IncidentStatus::Escalated, EventKind::IncidentEscalated),
            };
            inc.status = status;
            inc.resolution = resolution.to_string();
            self.update_incident(&inc, event, now)?;
            if fix.merged {
                self.watch_for_regression(&inc, fix)?;
            }
        }
        Ok(())
    }

    /// At start, after a crash: jobs left `running` are queued again (started fewer than
    /// [`MAX_JOB_STARTS`] times) or failed (their incident escalated, resolution
    /// `fix_interrupted`); their fix records are marked failed. Returns (requeued, failed,
    /// the fixes marked failed — their worktrees and branches are the caller's to clean).
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn recover_jobs(
        &mut self,
        now: Timestamp,
    ) -> Result<(usize, usize, Vec<FixResult>), StoreError> {
        let st = self.store;
        // Also rebuilds the open-jobs index (stores written before it existed).
        let running: Vec<FixJob> = {
            let jobs = self.txn.open_table(FIX_JOBS).map_err(st.storage())?;
            let mut open = self.txn.open_table(JOBS_OPEN).map_err(st.storage())?;
            let mut out = Vec::new();
            for row in jobs.iter().map_err(st.storage())? {
                let (_, v) = row.map_err(st.storage())?;
                let Ok(job) = FixJob::decode(v.value()) else {
                    continue;
                };
                if matches!(job.state, JobState::Queued | JobState::Running) {
                    open.insert(job.seq, ()).map_err(st.storage())?;
                }
                if job.state == JobState::Running {
                    out.push(job);
                }
            }
            out
        };
        let interrupted: Vec<FixResult> = {
            let fixes = match self.txn.open_table(FIXES) {
                Ok(t) => Some(t),
                Err(TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(st.storage()(e)),
            };
            let mut out = Vec::new();
            if let Some(fixes) = fixes {
                for row in fixes.iter().map_err(st.storage())? {
                    let (_, v) = row.map_err(st.storage())?;
                    if let Ok(f) = FixResult::decode(v.value())
                        && f.status == FixStatus::Running
                    {
                        out.push(f);
                    }
                }
            }
            out
        };
        let mut cut = Vec::new();
        for mut f in interrupted {
            f.status = FixStatus::Failure;
            f.error = "interrupted: Sentinel stopped while this fix ran".into();
            f.completed_at = Some(now);
            self.put_fix(&f)?;
            self.emit(f.event(EventKind::FixFailed), now)?;
            cut.push(f);
        }
        let (mut requeued, mut failed) = (0, 0);
        for mut job in running {
            job.updated_at = now;
            if job.attempts < MAX_JOB_STARTS {
                job.state = JobState::Queued;
                requeued += 1;
                self.put_job(&job)?;
            } else {
                job.state = JobState::Failed;
                failed += 1;
                self.put_job(&job)?;
                if let Some(mut inc) = self.incident(&job.incident_id)? {
                    inc.status = IncidentStatus::Escalated;
                    inc.resolution = "fix_interrupted".into();
                    self.update_incident(&inc, EventKind::IncidentEscalated, now)?;
                }
            }
        }
        Ok((requeued, failed, cut))
    }
}
