//! The fixer inside the daemon: takes fix jobs from the durable queue and runs them.
//!
//! - At most `llm.max_concurrent_fixes` fixes run at once, and at most one per component
//!   (two fixes of one component would edit the same files).
//! - A job is taken in a transaction (`queued → running`, incident `remediating`,
//!   `fix_started` logged) and ended in another (result stored, incident `resolved` or
//!   `escalated`, events logged); a job cut off by a crash is queued again once at the next
//!   start, then failed (`store::fixes`), so it is never lost and never runs twice at once.
//! - Everything slow is off the ingest path: LLM calls are async on the runtime, git and test
//!   runs on the blocking pool. A hanging LLM holds a fix slot, never the writer.
//! - Fixes asked for by hand ([`FixHandle::request`]) get their id at once (`POST /fix`
//!   answers 202 with it); [`FixHandle::wait`] waits for one to end.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::{Notify, watch};

use super::engine::Fixer;
use super::guard::{Guards, Refusal};
use super::llm::Llm;
use crate::aggregate::LineAggregator;
use crate::attribute::LiveRules;
use crate::store::{FixResult, FixStatus, Incident, JobState, Store, StoreError};

/// How often the queue is looked at without a wake-up (jobs queued by the writer).
const POLL: Duration = Duration::from_millis(500);

/// A new fix id: 12 hex characters.
pub fn new_fix_id() -> String {
    format!("{:012x}", super::random_u64() & 0xffff_ffff_ffff)
}

/// Talks to the running fixer.
#[derive(Debug, Clone)]
pub struct FixHandle {
    store: Arc<Store>,
    rules: Arc<LiveRules>,
    wake: Arc<Notify>,
    done: watch::Receiver<u64>,
    guards: Arc<Guards>,
}

/// Why a fix could not be asked for.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The key names no registered component.
    #[error("component {0} is not in the manifest")]
    NotRegistered(String),
    /// The text is not usable.
    #[error("{0}")]
    BadInput(String),
    /// A fix of this incident is already queued or running.
    #[error("a fix of incident {incident} is already {state} (fix {fix_id})")]
    Busy {
        /// The incident.
        incident: String,
        /// queued or running.
        state: &'static str,
        /// That fix.
        fix_id: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl FixHandle {
    /// Queues a fix of the error `text` carrying `pact_key`: the line is counted as an
    /// incident (created if new), and a job is queued whatever `auto_remediate` says.
    /// Returns the fix (status `pending`).
    ///
    /// # Errors
    ///
    /// See [`RequestError`].
    pub fn request(&self, pact_key: &str, text: &str) -> Result<FixResult, RequestError> {
        request_fix(&self.store, &self.rules, pact_key, text, Timestamp::now()).inspect(|_| {
            self.wake.notify_one();
        })
    }

    /// The kill switch (`POST /fixes/pause`, `/resume`): held jobs start when it is released.
    pub fn pause_switch(&self) -> &super::guard::PauseSwitch {
        self.guards.pause_switch()
    }

    /// Wakes the fixer (after `resume`: held jobs start now, not at the next poll).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Waits until fix `id` has ended (success, failure or awaiting approval), or `timeout`.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Option<FixResult> {
        let mut done = self.done.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(f)) = self.store.fix(id)
                && !matches!(f.status, FixStatus::Pending | FixStatus::Running)
            {
                return Some(f);
            }
            if tokio::time::timeout_at(deadline, done.changed())
                .await
                .is_err()
            {
                return None;
            }
        }
    }
}

/// Counts `text` as an incident and queues a fix job for it (see [`FixHandle::request`]).
///
/// # Errors
///
/// See [`RequestError`].
pub fn request_fix(
    store: &Store,
    rules: &Arc<LiveRules>,
    pact_key: &str,
    text: &str,
    now: Timestamp,
) -> Result<FixResult, RequestError> {
    let key = crate::scan::PactKeys::new(pact_key.as_bytes())
        .next()
        .ok_or_else(|| RequestError::BadInput(format!("{pact_key:?} is not a PACT key")))?;
    let component = String::from_utf8_lossy(key.component()).into_owned();
    let snapshot = rules.snapshot();
    if snapshot.manifest.get(&component).is_none() {
        return Err(RequestError::NotRegistered(component));
    }
    if text.trim().is_empty() {
        return Err(RequestError::BadInput("the error text is empty".into()));
    }
    let line = if text.contains(pact_key) {
        text.to_string()
    } else {
        format!("{text} [{pact_key}]")
    };
    let mut agg = LineAggregator::new(rules, Arc::from("manual"));
    agg.add_text(line.as_bytes(), Some(pact_key.as_bytes()));
    let batch = agg.take_batch();
    let fp = *batch
        .incidents
        .keys()
        .next()
        .ok_or_else(|| RequestError::BadInput("the error text has no content".into()))?;
    let mut txn = store.begin_write()?;
    txn.apply(&batch, now)?;
    let inc = txn
        .incident_by_fingerprint(fp.0)?
        .ok_or_else(|| RequestError::BadInput("the incident was not stored".into()))?;
    let fix = FixResult {
        id: new_fix_id(),
        incident_id: inc.id.clone(),
        component_id: inc.component_id.clone(),
        pact_key: inc.pact_key.clone(),
        error_summary: summary(&inc),
        manual: true,
        ..FixResult::default()
    };
    match txn.active_job(&inc.id)? {
        // Queued by the threshold in this very transaction (or before) and not started:
        // this request takes it over, so the incident still gets exactly one fix.
        Some((seq, JobState::Queued, id)) if id.is_empty() => {
            txn.set_job_fix_id(seq, &fix.id)?;
        }
        Some((_, state, fix_id)) => {
            return Err(RequestError::Busy {
                incident: inc.id,
                state: if state == JobState::Queued {
                    "queued"
                } else {
                    "running"
                },
                fix_id,
            });
        }
        None => {
            txn.queue_job(&inc, &fix.id, now)?;
        }
    }
    txn.put_fix(&fix)?;
    txn.commit()?;
    Ok(fix)
}

fn summary(inc: &Incident) -> String {
    let (red, _) = super::redact::redact(&inc.sample);
    red.chars().take(200).collect()
}

/// The fixer service: start it once per daemon.
pub struct FixService<L> {
    store: Arc<Store>,
    rules: Arc<LiveRules>,
    fixer: Arc<Fixer<L>>,
    max_concurrent: usize,
    wake: Arc<Notify>,
    done: watch::Sender<u64>,
    active: Arc<Mutex<HashSet<String>>>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    guards: Arc<Guards>,
    /// Holds already recorded: (job seq, guardrail) — a job held for an hour is one
    /// `fix_refused` event, not one per poll.
    announced: Mutex<HashSet<(u64, String)>>,
}

impl<L> std::fmt::Debug for FixService<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FixService")
            .field("max_concurrent", &self.max_concurrent)
            .finish_non_exhaustive()
    }
}

/// The daemon's LLM: the configured client, or why there is none (every call then fails
/// with that reason, and fixes end `llm_unavailable`).
#[derive(Clone)]
pub enum DaemonLlm {
    /// The configured client.
    Client(super::llm::LlmClient),
    /// Why it could not be built (e.g. no API key).
    Unavailable(String),
}

impl std::fmt::Debug for DaemonLlm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DaemonLlm::Client(_) => f.write_str("DaemonLlm::Client"),
            DaemonLlm::Unavailable(why) => write!(f, "DaemonLlm::Unavailable({why})"),
        }
    }
}

impl Llm for DaemonLlm {
    async fn complete(
        &self,
        req: &super::llm::LlmRequest,
    ) -> Result<super::llm::LlmResponse, super::llm::LlmError> {
        match self {
            DaemonLlm::Client(c) => c.complete(req).await,
            DaemonLlm::Unavailable(why) => Err(super::llm::LlmError::Setup {
                message: why.clone(),
            }),
        }
    }
}

impl DaemonLlm {
    /// The client the `llm` section describes, reading the key from the environment.
    pub fn new(llm: &crate::config::LlmConfig) -> DaemonLlm {
        match super::llm::LlmClient::from_config(llm, |v| std::env::var(v).ok()) {
            Ok(c) => DaemonLlm::Client(c),
            Err(e) => DaemonLlm::Unavailable(e.to_string()),
        }
    }
}

impl<L: Llm + 'static> FixService<L> {
    /// A service running `fixer` over `store`'s queue.
    pub fn new(
        store: Arc<Store>,
        rules: Arc<LiveRules>,
        fixer: Fixer<L>,
        max_concurrent: usize,
    ) -> FixService<L> {
        let guards = Arc::new(fixer.guards());
        // The cooldown survives a restart: it starts from the fixes already on record.
        if let Ok(fixes) = store.fixes(1000) {
            for f in fixes {
                if let Some(at) = f.completed_at {
                    guards.ended(&f.component_id, at);
                }
            }
        }
        FixService {
            guards,
            announced: Mutex::new(HashSet::new()),
            store,
            rules,
            fixer: Arc::new(fixer),
            max_concurrent: max_concurrent.max(1),
            wake: Arc::new(Notify::new()),
            done: watch::channel(0).0,
            active: Arc::new(Mutex::new(HashSet::new())),
            metrics: None,
        }
    }

    /// Counts fixes in `metrics` (`sentinel_fixes_*`, `sentinel_llm_spend_usd_total`).
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> FixService<L> {
        metrics.fixes_running.set(0);
        for s in ["success", "failure", "awaiting_approval"] {
            metrics.fixes.with_label_values(&[s]);
        }
        for g in super::guard::guardrail::ALL {
            metrics.fix_refusals.with_label_values(&[g]);
        }
        self.metrics = Some(metrics);
        self
    }

    /// The handle for the API and the writer's wake-ups.
    pub fn handle(&self) -> FixHandle {
        FixHandle {
            store: self.store.clone(),
            rules: self.rules.clone(),
            wake: self.wake.clone(),
            done: self.done.subscribe(),
            guards: self.guards.clone(),
        }
    }

    /// Recovers jobs cut off by a crash, then runs until `stop` resolves; fixes in flight are
    /// abandoned at stop (their jobs are recovered at the next start).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the queue cannot be recovered.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) -> Result<(), StoreError> {
        {
            let mut txn = self.store.begin_write()?;
            let (requeued, failed, cut) = txn.recover_jobs(Timestamp::now())?;
            txn.commit()?;
            if requeued + failed > 0 {
                tracing::warn!(
                    requeued,
                    failed,
                    "fix jobs cut off by the last stop recovered"
                );
            }
            // What the cut fixes left in the user's repository: their worktrees, and their
            // branches while these still point at the commit they started from.
            for f in cut
                .into_iter()
                .filter(|f| !f.repo.is_empty() && !f.branch.is_empty())
            {
                let done = tokio::task::spawn_blocking(move || {
                    super::worktree::discard_abandoned(
                        std::path::Path::new(&f.repo),
                        &f.branch,
                        &f.git_snapshot_ref,
                    )
                })
                .await;
                if let Ok(Err(e)) = done {
                    tracing::warn!(error = %e, "cannot clean up an interrupted fix");
                }
            }
        }
        let this = Arc::new(self);
        let mut tasks = tokio::task::JoinSet::new();
        tokio::pin!(stop);
        let mut failing = crate::episode::Episode::new("the fixer cannot read its queue");
        loop {
            match this.dispatch(&mut tasks) {
                Ok(()) => {
                    failing.ended();
                }
                Err(e) => {
                    failing.failed(&e);
                }
            }
            tokio::select! {
                () = &mut stop => break,
                () = this.wake.notified() => {}
                Some(_) = tasks.join_next() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
        tasks.abort_all();
        Ok(())
    }

    /// Why `job` may not start now (recorded on its incident the first time), or None.
    fn held(&self, job: &crate::store::FixJob) -> Result<Option<Refusal>, StoreError> {
        if self.flaky(job)?.is_some() {
            return Ok(Some(Refusal::new(super::guard::guardrail::FLAKY, "ended")));
        }
        let hold = self.guards.hold(&job.component_id, Timestamp::now());
        if let Some(m) = &self.metrics {
            m.fixes_paused
                .set(i64::from(self.guards.pause_switch().state().paused));
        }
        let Some(r) = hold else {
            return Ok(None);
        };
        let first = self
            .announced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert((job.seq, r.guardrail.clone()));
        if first {
            tracing::info!(incident = %job.incident_id, guardrail = %r.guardrail, reason = %r.reason, "fix held");
            let mut txn = self.store.begin_write()?;
            txn.emit(refusal_event(job, &job.fix_id, &r, true), Timestamp::now())?;
            txn.commit()?;
            if let Some(m) = &self.metrics {
                m.fix_refusals.with_label_values(&[&r.guardrail]).inc();
            }
        }
        Ok(Some(r))
    }

    /// A flaky CI failure never goes to the fixer: its job ends at once, refused (the
    /// incident is escalated with resolution `flaky`).
    fn flaky(&self, job: &crate::store::FixJob) -> Result<Option<Refusal>, StoreError> {
        let Some(inc) = self.store.incident(&job.incident_id)? else {
            return Ok(None);
        };
        let Some(rec) = self.store.ci_record(inc.fingerprint.0)? else {
            return Ok(None);
        };
        if !rec.flaky {
            return Ok(None);
        }
        let r = Refusal::new(
            super::guard::guardrail::FLAKY,
            format!(
                "a flaky CI failure ({}): flaky failures are never sent to the fixer",
                rec.flaky_reason
            ),
        );
        let now = Timestamp::now();
        let mut fix = match self.store.fix(&job.fix_id)? {
            Some(f) if !job.fix_id.is_empty() => f,
            _ => FixResult {
                id: new_fix_id(),
                incident_id: inc.id.clone(),
                component_id: inc.component_id.clone(),
                pact_key: inc.pact_key.clone(),
                error_summary: summary(&inc),
                ..FixResult::default()
            },
        };
        fix.status = FixStatus::Failure;
        fix.error = r.reason.clone();
        fix.completed_at = Some(now);
        fix.refusals.push(r.clone());
        let mut txn = self.store.begin_write()?;
        txn.emit(refusal_event(job, &fix.id, &r, false), now)?;
        txn.finish_fix(Some(job.seq), &fix, "flaky", now)?;
        txn.commit()?;
        tracing::info!(incident = %inc.id, "a flaky CI failure: its fix job ended, refused");
        if let Some(m) = &self.metrics {
            m.fix_refusals.with_label_values(&[&r.guardrail]).inc();
        }
        Ok(Some(r))
    }

    fn dispatch(self: &Arc<Self>, tasks: &mut tokio::task::JoinSet<()>) -> Result<(), StoreError> {
        let jobs = self.store.open_jobs()?;
        for job in jobs.into_iter().filter(|j| j.state == JobState::Queued) {
            if self.held(&job)?.is_some() {
                continue;
            }
            {
                let mut active = self
                    .active
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if active.len() >= self.max_concurrent {
                    break;
                }
                if !active.insert(job.component_id.clone()) {
                    continue;
                }
            }
            let this = self.clone();
            tasks.spawn(async move {
                let component = job.component_id.clone();
                if let Err(e) = this.run_job(job).await {
                    tracing::error!(error = %e, "fix job failed to record");
                }
                this.active
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&component);
                this.done.send_modify(|n| *n += 1);
            });
        }
        Ok(())
    }

    /// Runs the queued job of fix `fix_id` now, in this task (`sentinel fix`); returns the
    /// stored result.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub async fn run_now(&self, fix_id: &str) -> Result<Option<FixResult>, StoreError> {
        let job = self
            .store
            .open_jobs()?
            .into_iter()
            .find(|j| j.fix_id == fix_id && j.state == JobState::Queued);
        if let Some(job) = job {
            // Held (paused, frozen, cooling down): recorded, and left queued for the daemon.
            if self.held(&job)?.is_none() {
                self.run_job(job).await?;
            }
        }
        self.store.fix(fix_id)
    }

    async fn run_job(&self, job: crate::store::FixJob) -> Result<(), StoreError> {
        let Some(incident) = self.store.incident(&job.incident_id)? else {
            return Ok(());
        };
        let mut fix = match self.store.fix(&job.fix_id)? {
            Some(f) if !job.fix_id.is_empty() => f,
            _ => FixResult {
                id: new_fix_id(),
                incident_id: incident.id.clone(),
                component_id: incident.component_id.clone(),
                pact_key: incident.pact_key.clone(),
                error_summary: summary(&incident),
                ..FixResult::default()
            },
        };
        fix.generation = 1 + self
            .store
            .fixes_of(&incident.id)?
            .iter()
            .filter(|f| f.status == FixStatus::Success && !f.shadow)
            .count() as u32;
        let entry = self
            .rules
            .snapshot()
            .manifest
            .get(&incident.component_id)
            .cloned();
        if let Some(e) = &entry {
            self.fixer.plan(&mut fix, e);
        }
        {
            let mut txn = self.store.begin_write()?;
            if txn
                .start_job(job.seq, &mut fix, Timestamp::now())?
                .is_none()
            {
                return Ok(());
            }
            txn.commit()?;
        }
        tracing::info!(fix = %fix.id, incident = %incident.id, component = %incident.component_id, "fix started");
        if let Some(m) = &self.metrics {
            m.fixes_running.inc();
        }
        let resolution = match entry {
            Some(entry) => self.fixer.run(&mut fix, &incident, &entry).await,
            None => {
                fix.status = FixStatus::Failure;
                fix.error = format!("component {} is not in the manifest", incident.component_id);
                fix.completed_at = Some(Timestamp::now());
                "component_not_registered".to_string()
            }
        };
        tracing::info!(
            fix = %fix.id,
            status = fix.status.as_str(),
            resolution = %resolution,
            spend_usd = fix.spend_usd,
            "fix ended"
        );
        if let Some(m) = &self.metrics {
            m.fixes_running.dec();
            m.fixes.with_label_values(&[fix.status.as_str()]).inc();
            m.fix_seconds.observe(fix.duration_ms as f64 / 1000.0);
            m.llm_spend_usd.inc_by(fix.spend_usd);
            for r in &fix.refusals {
                m.fix_refusals.with_label_values(&[&r.guardrail]).inc();
            }
        }
        self.guards.ended(
            &fix.component_id,
            fix.completed_at.unwrap_or_else(Timestamp::now),
        );
        let now = Timestamp::now();
        let mut txn = self.store.begin_write()?;
        // The proposals the guardrails refused, on the incident's timeline before the end.
        for r in &fix.refusals {
            txn.emit(refusal_event(&job, &fix.id, r, false), now)?;
        }
        txn.finish_fix(Some(job.seq), &fix, &resolution, now)?;
        txn.commit()?;
        Ok(())
    }
}

/// The `fix_refused` event of refusal `r` of `job` (`held`: the job waits, else the
/// proposal was refused).
fn refusal_event(
    job: &crate::store::FixJob,
    fix_id: &str,
    r: &Refusal,
    held: bool,
) -> crate::store::NewEvent {
    crate::store::NewEvent {
        kind: crate::store::EventKind::FixRefused,
        incident_id: job.incident_id.clone(),
        fix_id: fix_id.to_string(),
        component_id: job.component_id.clone(),
        data: serde_json::json!({"guardrail": r.guardrail, "reason": r.reason, "held": held}),
        incident: None,
    }
}

/// Why an approval or rejection was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReviewError {
    /// No such fix.
    #[error("no fix {0}")]
    NotFound(String),
    /// The fix is not waiting for approval.
    #[error("fix {id} is {status}, not awaiting_approval")]
    NotAwaiting {
        /// The fix.
        id: String,
        /// Its status.
        status: &'static str,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Approves (`true`) or rejects a fix that waits for approval (`fix.require_approval`).
/// Approved: with `fix.merge` the user's branch is fast-forwarded to the fix when their tree
/// is clean; the incident is resolved. Rejected: the fix branch is deleted, the incident
/// escalated (`fix_rejected`); the reviewer's `reason`, if given, is the fix's error.
/// Blocking (git).
///
/// # Errors
///
/// See [`ReviewError`].
pub fn review(
    store: &Store,
    config: &crate::config::Config,
    id: &str,
    approve: bool,
    reason: Option<&str>,
) -> Result<FixResult, ReviewError> {
    let mut fix = store
        .fix(id)?
        .ok_or_else(|| ReviewError::NotFound(id.to_string()))?;
    if fix.status != FixStatus::AwaitingApproval {
        return Err(ReviewError::NotAwaiting {
            id: id.to_string(),
            status: fix.status.as_str(),
        });
    }
    let repo = std::path::PathBuf::from(&fix.repo);
    let resolution = if approve {
        fix.status = FixStatus::Success;
        if config.fix.merge {
            match super::worktree::fast_forward_user_branch(&repo, &fix.branch) {
                Ok(m) => fix.merged = m,
                Err(e) => tracing::warn!(error = %e, "cannot fast-forward the user's branch"),
            }
        }
        if fix.merged {
            super::engine::resolution::AUTO_FIXED
        } else {
            super::engine::resolution::FIX_ON_BRANCH
        }
    } else {
        fix.status = FixStatus::Rejected;
        fix.error = match reason.map(str::trim) {
            Some(r) if !r.is_empty() => format!("rejected by a reviewer: {r}"),
            _ => "rejected by a reviewer".into(),
        };
        if let Err(e) = super::worktree::delete_branch(&repo, &fix.branch) {
            tracing::warn!(error = %e, branch = %fix.branch, "cannot delete the rejected fix's branch");
        }
        "fix_rejected"
    };
    let mut txn = store.begin_write()?;
    txn.finish_fix(None, &fix, resolution, Timestamp::now())?;
    txn.commit()?;
    Ok(fix)
}
