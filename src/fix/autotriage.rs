//! The daemon's LLM triage of incidents without a PACT key (reference/SPEC.md §5.3, §7.3
//! step 7; `triage: {enabled, max_per_hour}`).
//!
//! An incident whose lines carry no key turns actionable as `triaging` in the ingest
//! transaction (the store's fix policy, [`super::policy::FixPolicy::triage`]), so the
//! waiting set is durable and each distinct incident is triaged once, across restarts.
//! This task follows the event log's head; when incidents wait, it asks the LLM about
//! each (its sample line and the manifest), within the fixer's budget (the call is charged
//! to the incident, as a fix is) and at most `max_per_hour` calls in any hour (the times of
//! past answers are read back from the store at start, so a restart does not reset the
//! limit). [`crate::store::StoreTxn::settle_triage`] stores the answer and moves the
//! incident on in one transaction: attributed at confidence ≥ 0.3 (then queued for a fix
//! or escalated as any incident of that component would be), escalated otherwise.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::watch;

use super::triage::Budgeted;
use crate::attribute::LiveRules;
use crate::store::triage::{TriageOutcome, TriageRecord};
use crate::store::{Action, Incident, Store};

/// How many waiting incidents one look takes.
const BATCH: usize = 16;

const HOUR: Duration = Duration::from_secs(3600);

/// The daemon's triage of unkeyed incidents.
pub struct AutoTriage {
    /// The store.
    pub store: Arc<Store>,
    /// The live manifest.
    pub rules: Arc<LiveRules>,
    /// The LLM and the budget it spends from (the fixer's).
    pub desk: Arc<crate::api::triage::TriageDesk>,
    /// The `llm` section (prices).
    pub llm: crate::config::LlmConfig,
    /// `triage.max_per_hour`.
    pub max_per_hour: u64,
    /// `auto_remediate`: what an attributed incident then becomes.
    pub auto_remediate: bool,
}

impl std::fmt::Debug for AutoTriage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AutoTriage")
            .field("max_per_hour", &self.max_per_hour)
            .finish_non_exhaustive()
    }
}

impl AutoTriage {
    /// Runs until `stop` resolves or the event log's `heads` sender is gone.
    pub async fn run(
        self,
        mut heads: watch::Receiver<u64>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        let since = Timestamp::now()
            .checked_sub(jiff::SignedDuration::from_hours(1))
            .unwrap_or(Timestamp::UNIX_EPOCH);
        let mut calls: VecDeque<Timestamp> = {
            let store = self.store.clone();
            tokio::task::spawn_blocking(move || store.triage_times_since(since))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default()
                .into()
        };
        loop {
            // `None`: nothing waits; `Some(d)`: incidents wait for the rate limit, `d` long.
            // A stop ends a call in flight (its reservation is released; the incident
            // still waits and is asked about after the restart).
            let wait = tokio::select! {
                () = &mut stop => return,
                wait = self.round(&mut calls) => wait,
            };
            tokio::select! {
                () = &mut stop => return,
                changed = heads.changed() => if changed.is_err() { return },
                () = sleep_or_forever(wait) => {}
            }
        }
    }

    /// Triages what waits, within the rate limit; returns how long until the limit frees a
    /// call when incidents are still waiting.
    async fn round(&self, calls: &mut VecDeque<Timestamp>) -> Option<Duration> {
        loop {
            let store = self.store.clone();
            let waiting =
                match tokio::task::spawn_blocking(move || store.awaiting_triage(BATCH)).await {
                    Ok(Ok(w)) => w,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "triage: cannot read the waiting incidents");
                        return Some(Duration::from_secs(5));
                    }
                    Err(_) => return None,
                };
            if waiting.is_empty() {
                return None;
            }
            for inc in waiting {
                let now = Timestamp::now();
                while calls
                    .front()
                    .is_some_and(|t| now.duration_since(*t).unsigned_abs() >= HOUR)
                {
                    calls.pop_front();
                }
                if calls.len() as u64 >= self.max_per_hour {
                    let oldest = calls.front().copied().unwrap_or(now);
                    let free_in = HOUR.saturating_sub(now.duration_since(oldest).unsigned_abs());
                    tracing::debug!(
                        waiting_at_least = 1,
                        free_in_s = free_in.as_secs(),
                        "triage: max_per_hour reached"
                    );
                    return Some(free_in.max(Duration::from_millis(100)));
                }
                let record = self.ask(&inc).await;
                if record.outcome != TriageOutcome::Unavailable {
                    calls.push_back(record.at);
                }
                self.settle(inc, record).await;
            }
        }
    }

    /// One LLM call about `inc`, as a record.
    async fn ask(&self, inc: &Incident) -> TriageRecord {
        let manifest = self.rules.snapshot().manifest.clone();
        if manifest.is_empty() {
            return TriageRecord::new(
                TriageOutcome::NoMatch,
                "",
                0.0,
                "no components registered",
                Timestamp::now(),
            );
        }
        let outcome = super::triage::within_budget(
            &self.desk.llm,
            &self.desk.budget,
            &self.llm,
            &inc.id,
            &inc.sample,
            &manifest,
        )
        .await;
        let now = Timestamp::now();
        match outcome {
            Budgeted::Matched {
                component_id,
                confidence,
                reasoning,
            } => TriageRecord::new(
                TriageOutcome::Attributed,
                &component_id,
                confidence,
                &reasoning,
                now,
            ),
            Budgeted::NoMatch => TriageRecord::new(
                TriageOutcome::NoMatch,
                "",
                0.0,
                "the model named no registered component with confidence >= 0.3",
                now,
            ),
            Budgeted::Unavailable(why) => {
                TriageRecord::new(TriageOutcome::Unavailable, "", 0.0, &why, now)
            }
        }
    }

    async fn settle(&self, inc: Incident, record: TriageRecord) {
        let store = self.store.clone();
        let auto_remediate = self.auto_remediate;
        let fp = inc.fingerprint;
        let r = record.clone();
        let done = tokio::task::spawn_blocking(move || {
            let mut txn = store.begin_write()?;
            let moved = txn.settle_triage(fp, &r, auto_remediate, Timestamp::now())?;
            txn.commit()?;
            Ok::<_, crate::store::StoreError>(moved)
        })
        .await;
        match done {
            Ok(Ok(Some((inc, action)))) => match action {
                Action::Queued(_) => tracing::info!(
                    incident = %inc.id,
                    component = %inc.component_id,
                    confidence = record.confidence,
                    "triage attributed the incident; fix queued"
                ),
                Action::Escalated(why) => tracing::info!(
                    incident = %inc.id,
                    component = %inc.component_id,
                    resolution = why,
                    reasoning = %record.reasoning,
                    "triage: escalated"
                ),
                _ => {}
            },
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                // The answer is lost with the transaction; the incident still waits and is
                // asked about again (the store refused: a full disk, say).
                tracing::warn!(incident = %inc.id, error = %e, "triage: cannot store the answer");
            }
            Err(_) => {}
        }
    }
}

async fn sleep_or_forever(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}
