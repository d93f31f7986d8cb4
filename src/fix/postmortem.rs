//! Postmortems (issue 18): one markdown document per incident that ended — resolved or
//! escalated — at `state_dir/monitoring/reports/<incident id>.md`, and served by
//! `GET /incidents/{id}/report`.
//!
//! A postmortem is rendered from the store alone (the incident, its events, its fixes, its
//! spend), so it is always what the store says: the daemon rewrites the file whenever the
//! event log says the incident's state moved (a fix ended, an approval or a rejection, an
//! escalation, a regression: [`Follower`]), and the API renders it afresh on each request.
//! Sections: summary, timeline, root cause (what the fixer found or why it could not fix),
//! what was done, the change (branch, commit, the files the fix changed), next steps (from the
//! state it is in now).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::store::events::{Event, EventKind};
use crate::store::{FixResult, FixStatus, Incident, IncidentStatus, Store, StoreError};

/// The most timeline entries a postmortem lists (the newest; the event log is bounded too).
const TIMELINE_MAX: usize = 200;

/// What a postmortem is made of, read from the store in one go.
#[derive(Debug, Clone)]
pub struct Record {
    /// The incident.
    pub incident: Incident,
    /// Its events still in the log, oldest first.
    pub timeline: Vec<Event>,
    /// Its fix attempts, oldest first.
    pub fixes: Vec<FixResult>,
    /// What the LLM cost for it, in micro-USD.
    pub spend_micro_usd: u64,
    /// The daemon's triage answer (an incident without a PACT key).
    pub triage: Option<crate::store::triage::TriageRecord>,
}

impl Record {
    /// Reads incident `id`'s record (None: no such incident).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store cannot be read.
    pub fn read(store: &Store, id: &str) -> Result<Option<Record>, StoreError> {
        let Some(incident) = store.incident(id)? else {
            return Ok(None);
        };
        let mut timeline = store.incident_events(id, TIMELINE_MAX)?;
        timeline.sort_by_key(|e| e.seq);
        let fixes = store.fixes_of(id)?;
        let spend_micro_usd = store
            .spend_since(jiff::Timestamp::UNIX_EPOCH)?
            .into_iter()
            .filter(|(_, inc, _)| inc == id)
            .map(|(_, _, m)| m)
            .sum();
        let triage = store.triage_of(incident.fingerprint)?;
        Ok(Some(Record {
            triage,
            incident,
            timeline,
            fixes,
            spend_micro_usd,
        }))
    }

    /// Whether the incident has ended (a postmortem is due).
    pub fn ended(&self) -> bool {
        matches!(
            self.incident.status,
            IncidentStatus::Resolved | IncidentStatus::Escalated
        )
    }
}

/// The postmortem of `r`, as markdown.
pub fn render(r: &Record) -> String {
    let i = &r.incident;
    let component = if i.component_id.is_empty() {
        "unknown"
    } else {
        &i.component_id
    };
    let last_fix = r.fixes.last();
    let mut md = String::new();
    let state = match i.status {
        IncidentStatus::Resolved => "Resolved",
        IncidentStatus::Escalated => "Escalated",
        _ => "Open",
    };
    let _ = writeln!(md, "# Postmortem: incident {} ({state})\n", i.id);
    let _ = writeln!(md, "## Summary\n");
    let _ = writeln!(
        md,
        "`{}` in component **{component}**{}: {} occurrence{} between {} and {}; severity {}, \
         status {}{}.\n",
        one_line(&i.normalized, 200),
        if i.pact_key.is_empty() {
            String::new()
        } else {
            format!(" (`{}`)", i.pact_key)
        },
        i.count,
        if i.count == 1 { "" } else { "s" },
        i.first_seen,
        i.last_seen,
        i.severity.as_str(),
        i.status.as_str(),
        if i.resolution.is_empty() {
            String::new()
        } else {
            format!(" ({})", i.resolution)
        },
    );
    let _ = writeln!(md, "Sample line: `{}`\n", one_line(&i.sample, 300));
    let _ = writeln!(
        md,
        "LLM spend: ${:.4} over {} fix attempt{}.\n",
        r.spend_micro_usd as f64 / 1e6,
        r.fixes.len(),
        if r.fixes.len() == 1 { "" } else { "s" }
    );
    let _ = writeln!(md, "## Timeline\n");
    let _ = writeln!(md, "- {} first seen", i.first_seen);
    for e in &r.timeline {
        if e.kind == EventKind::IncidentUpdated {
            continue;
        }
        let fix = if e.fix_id.is_empty() {
            String::new()
        } else {
            format!(" (fix `{}`)", e.fix_id)
        };
        // A guardrail's refusal says which and why: that is what a reader needs from it.
        let why = match (
            e.kind,
            e.data["guardrail"].as_str(),
            e.data["reason"].as_str(),
        ) {
            (EventKind::FixRefused, Some(g), Some(r)) => format!(" by `{g}`: {}", one_line(r, 300)),
            _ => String::new(),
        };
        let _ = writeln!(
            md,
            "- {} {}{fix}{why}",
            e.at,
            e.kind.as_str().replace('_', " ")
        );
    }
    let _ = writeln!(md, "- {} last seen\n", i.last_seen);
    let _ = writeln!(md, "## Root cause\n");
    if let Some(t) = &r.triage {
        use crate::store::triage::TriageOutcome;
        let _ = match t.outcome {
            TriageOutcome::Attributed => writeln!(
                md,
                "The line carries no PACT key; LLM triage attributed it to **{}** \
                 (confidence {:.2}): {}\n",
                t.component_id,
                t.confidence,
                one_line(&t.reasoning, 500)
            ),
            TriageOutcome::NoMatch => writeln!(
                md,
                "The line carries no PACT key, and LLM triage named no registered component: \
                 {}\n",
                one_line(&t.reasoning, 500)
            ),
            _ => writeln!(
                md,
                "The line carries no PACT key, and LLM triage could not run: {}\n",
                one_line(&t.reasoning, 500)
            ),
        };
    }
    match last_fix {
        Some(f) if matches!(f.status, FixStatus::Success | FixStatus::AwaitingApproval) => {
            let _ = writeln!(
                md,
                "The fixer reproduced the error with a failing test and proved a fix of {} \
                 (its reproducer fails before the change and the project's tests pass after \
                 it).\n",
                files(f)
            );
        }
        Some(f) if !f.error.is_empty() => {
            let _ = writeln!(
                md,
                "Not established: the last fix attempt ended with: {}\n",
                one_line(&f.error, 500)
            );
        }
        _ => {
            let _ = writeln!(md, "Not established: no fix was attempted.\n");
        }
    }
    let _ = writeln!(md, "## What was done\n");
    if r.fixes.is_empty() {
        let _ = writeln!(md, "- No fix attempt.");
    }
    for f in &r.fixes {
        let _ = writeln!(
            md,
            "- Fix `{}` ({}{}): {}, {} attempt{}, ${:.4}{}",
            f.id,
            if f.manual { "requested" } else { "automatic" },
            f.started_at
                .map_or_else(String::new, |t| format!(", started {t}")),
            f.status.as_str(),
            f.attempts,
            if f.attempts == 1 { "" } else { "s" },
            f.spend_usd,
            if f.error.is_empty() {
                String::new()
            } else {
                format!(" — {}", one_line(&f.error, 300))
            }
        );
    }
    let _ = writeln!(md);
    let _ = writeln!(md, "## The change\n");
    match last_fix.filter(|f| !f.git_fix_ref.is_empty()) {
        Some(f) => {
            let _ = writeln!(
                md,
                "Branch `{}` at commit `{}` in `{}`{}; it changes {}.",
                f.branch,
                f.git_fix_ref,
                f.repo,
                if f.merged {
                    ", merged into the user's branch"
                } else {
                    ""
                },
                files(f)
            );
            if !f.contract_push.is_empty() {
                let _ = writeln!(md, "Contract: {}.", f.contract_push);
            }
            let _ = writeln!(md);
        }
        None => {
            let _ = writeln!(md, "No change was made.\n");
        }
    }
    let _ = writeln!(md, "## Next steps\n");
    let _ = writeln!(md, "{}", next_steps(r));
    md
}

fn next_steps(r: &Record) -> String {
    let i = &r.incident;
    let last = r.fixes.last();
    match (i.status, last.map(|f| f.status)) {
        (_, Some(FixStatus::AwaitingApproval)) => format!(
            "Review the fix: `sentinel fixes {id}`, then `sentinel approve {id}` or \
             `sentinel reject {id} --reason ...`.",
            id = last.map_or("", |f| f.id.as_str())
        ),
        (IncidentStatus::Resolved, Some(_)) if last.is_some_and(|f| f.merged) => {
            "The fix is merged. Sentinel watches for the error again: a recurrence reopens this \
             incident as a regression."
                .into()
        }
        (IncidentStatus::Resolved, Some(_)) => format!(
            "Review and merge branch `{}`; a recurrence after the merge reopens this incident.",
            last.map_or("", |f| f.branch.as_str())
        ),
        (IncidentStatus::Resolved, None) => "Resolved without a fix from Sentinel.".into(),
        (IncidentStatus::Escalated, _) => format!(
            "A person takes it from here ({}): reproduce it from the sample line, fix it, and \
             Sentinel will count any recurrence.",
            if i.resolution.is_empty() {
                "escalated"
            } else {
                &i.resolution
            }
        ),
        _ => "The incident is open again; this postmortem is rewritten when it ends.".into(),
    }
}

fn files(f: &FixResult) -> String {
    if f.fixed_source.is_empty() {
        return "the component's source".into();
    }
    let names: Vec<String> = f.fixed_source.keys().map(|p| format!("`{p}`")).collect();
    names.join(", ")
}

fn one_line(s: &str, max: usize) -> String {
    let line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    line.replace('`', "'")
}

/// Where incident `id`'s postmortem lives.
pub fn path(reports: &Path, id: &str) -> PathBuf {
    reports.join(format!("{id}.md"))
}

/// Writes (or rewrites) incident `id`'s postmortem when it has ended, or when one was written
/// before (it is then kept current: a regression reopens the incident). Returns the path
/// written, if any.
///
/// # Errors
///
/// The store cannot be read or the file cannot be written.
pub fn write(store: &Store, reports: &Path, id: &str) -> anyhow::Result<Option<PathBuf>> {
    let Some(record) = Record::read(store, id)? else {
        return Ok(None);
    };
    let path = path(reports, id);
    if !record.ended() && !path.exists() {
        return Ok(None);
    }
    std::fs::create_dir_all(reports)?;
    let tmp = reports.join(format!(".{id}.md.tmp"));
    std::fs::write(&tmp, render(&record))?;
    std::fs::rename(&tmp, &path)?;
    Ok(Some(path))
}

/// The daemon's postmortem writer: follows the event log and rewrites the postmortem of
/// every incident whose state moved (a fix ended, a review, an escalation, a resolution, a
/// regression). Blocking; run it on its own thread or with `spawn_blocking`.
#[derive(Debug)]
pub struct Follower {
    after: u64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Postmortems that could not be written (a full disk): tried again at the next call,
    /// at most [`RETRY_MAX`] of them.
    failed: std::collections::BTreeSet<String>,
    /// Whether writing fails: said once when it starts and once when it ends, not once per
    /// incident (a full disk under a flood of escalations would otherwise log a line each).
    failing: bool,
}

/// Postmortems kept to be tried again after a failed write.
const RETRY_MAX: usize = 10_000;

impl Follower {
    /// A follower from the log's head now (what ended before was written then); it gives up
    /// a catch-up between two reads once `stop` is set (the daemon stopping: the store must
    /// not be held by a blocking read the runtime's shutdown would leave behind, or the file
    /// is never closed cleanly).
    pub fn new(store: &Store, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Follower {
        Follower {
            after: store.event_head(),
            stop,
            failed: std::collections::BTreeSet::new(),
            failing: false,
        }
    }

    /// Writes the postmortems the events after the last call call for.
    pub fn catch_up(&mut self, store: &Store, reports: &Path) {
        let retry: Vec<String> = std::mem::take(&mut self.failed).into_iter().collect();
        self.write_all(store, reports, retry.iter().map(String::as_str));
        loop {
            if self.stop.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            let events = match store.events_after(self.after, 512) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %e, "postmortems: cannot read the event log");
                    return;
                }
            };
            let Some(last) = events.last() else { return };
            self.after = last.seq;
            let mut due: Vec<&str> = events
                .iter()
                .filter(|e| {
                    matches!(
                        e.kind,
                        EventKind::IncidentResolved
                            | EventKind::IncidentEscalated
                            | EventKind::IncidentRegressed
                            | EventKind::FixCompleted
                            | EventKind::FixFailed
                    ) && !e.incident_id.is_empty()
                })
                .map(|e| e.incident_id.as_str())
                .collect();
            due.sort_unstable();
            due.dedup();
            self.write_all(store, reports, due.into_iter());
        }
    }

    /// Writes the postmortems of `ids`, keeping those that fail for the next call.
    fn write_all<'a>(&mut self, store: &Store, reports: &Path, ids: impl Iterator<Item = &'a str>) {
        let mut first_error = None;
        let mut failed = 0usize;
        let mut written = 0usize;
        for id in ids {
            match write(store, reports, id) {
                Ok(_) => written += 1,
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert(e);
                    if self.failed.len() < RETRY_MAX {
                        self.failed.insert(id.to_string());
                    }
                }
            }
        }
        if let Some(e) = first_error
            && !self.failing
        {
            self.failing = true;
            tracing::warn!(
                postmortems = failed,
                error = %e,
                "cannot write postmortems; they are tried again as the event log moves"
            );
        } else if self.failing && failed == 0 && written > 0 && self.failed.is_empty() {
            self.failing = false;
            tracing::info!("postmortems are written again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::{AttributionStatus, Severity};
    use crate::scan::Fingerprint;
    use crate::store::{IncidentDelta, IngestBatch};

    /// A postmortem that cannot be written (the reports directory is not one: as good as a
    /// full disk) is kept and written at the next call once it can be.
    #[test]
    fn a_postmortem_that_fails_is_written_at_the_next_catch_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("sentinel.redb")).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut follower = Follower::new(&store, stop);
        let mut batch = IngestBatch::new();
        batch.incidents.insert(
            Fingerprint(0xabcdef0123456789),
            IncidentDelta::new(
                Fingerprint(0xabcdef0123456789),
                3,
                "ERROR boom",
                AttributionStatus::Unattributed,
                Severity::High,
            ),
        );
        let outcome = store.apply(&batch, jiff::Timestamp::now()).unwrap();
        let id = outcome.created_ids[0].clone();
        let escalated = store
            .events_after(0, 10)
            .unwrap()
            .iter()
            .any(|e| e.kind == EventKind::IncidentEscalated);
        assert!(escalated, "the default policy escalates a new incident");
        let reports = dir.path().join("reports");
        std::fs::write(&reports, "not a directory").unwrap();
        follower.catch_up(&store, &reports);
        assert!(follower.failing);
        assert!(follower.failed.contains(&id));
        std::fs::remove_file(&reports).unwrap();
        follower.catch_up(&store, &reports);
        assert!(path(&reports, &id).exists());
        assert!(!follower.failing && follower.failed.is_empty());
    }
}
