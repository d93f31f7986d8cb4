//! Pull requests and issues (issue 19): what leaves Sentinel for a code forge.
//!
//! The [`Forge`] task follows the event log (its cursor `forge` is durable, so nothing is
//! missed across a restart and nothing is done twice):
//!
//! - **`fix_completed`** of a proven, kept fix (`fix.pull_request`; an approved fix at its
//!   `incident_resolved`): the fix's branch is
//!   pushed ([`push()`]: HTTPS credentials passed to git through its environment as an
//!   `http.extraHeader`, never in a URL, an argument or a log) and a pull (merge) request is
//!   opened with the postmortem as its body. At most `max_open` of Sentinel's pull requests
//!   (head branches `sentinel/…`) are open at once (counted on the forge). A push or API
//!   failure leaves the branch local and says so on the incident. Shadow fixes keep no
//!   branch: nothing is pushed.
//!
//!   **One open pull request per incident.** A newer proven fix of an incident that has one
//!   reaches here in three ways: a regression of a merged fix (`fix.merge`: the reopened
//!   incident's new fix ends in `fix_completed`), the same with `fix.require_approval` (at
//!   the approval's `incident_resolved`), and a fix requested by hand (`POST /fix`, `sentinel
//!   fix`) while the pull request is open. The stored state is only what Sentinel last saw,
//!   so the forge is asked first (GitHub `GET …/pulls/{n}`: `state`, `merged_at`; GitLab
//!   `GET …/merge_requests/{iid}`: `state`). Still open: the new fix is force-pushed onto the
//!   pull request's branch, its title and body replaced, and a comment says which fix
//!   replaced which. Merged or closed: that state is recorded on the old link (kept in
//!   `earlier_pull_requests`) and a new pull request is opened, counted against `max_open`
//!   — a merged pull request's branch is never rewritten. The state cannot be read: nothing
//!   is pushed, the fix stays on its local branch, and the incident says why.
//!
//!   **A recurrence while the pull request is open** (its fix not merged, so not deployed:
//!   the incident stays resolved, `fix_ready_for_review`, and only its count grows) does
//!   nothing on the forge but, at most once an hour per pull request ([`NOTE_EVERY`]), one
//!   comment: "Seen N more times since this pull request's fix was pushed". Its state is read
//!   first; one merged or closed meanwhile is recorded so, without a comment. One a person
//!   merged is deployed from then: its fix is marked merged and the incident watched for a
//!   regression (as when Sentinel merges). A merged fix's recurrence is a regression: it
//!   reopens the incident, and its new fix does the above.
//! - **`incident_escalated`** (`issues`): one issue per incident with its postmortem, at
//!   most `max_per_hour` opened in any hour (the rest wait and are retried, and the incident
//!   says it waits); the limit's state (when issues were opened, which wait) is kept in the
//!   store (`forge_state`), so a restart neither forgets the hour nor the waiting; an escalation
//!   or a recurrence (the incident's count grew) of an incident with an open issue comments
//!   on it. **`incident_resolved`** closes the issue with a comment.
//!
//! The numbers and URLs are kept in the store ([`crate::store::ci::ForgeLinks`]), shown by
//! the API, `sentinel incident` and `report`, and announced on the incident's timeline.

mod api;
mod push;

pub use api::{ForgeApi, ForgeError, Opened, PullRequestState};
pub use push::{PUSH_TIMEOUT, PushError, push};

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use crate::config::{IssuesConfig, PullRequestConfig};
use crate::store::ci::{ForgeLink, ForgeLinks, IssueLimit};
use crate::store::{EventKind, FixStatus, Incident, IncidentStatus, NewEvent, Store, StoreError};

/// The forge's cursor in the event log (kept among the outbox cursors).
pub const CURSOR: &str = "forge";
/// How often escalations waiting for the issue rate limit are retried.
const RETRY_EVERY: Duration = Duration::from_secs(30);
/// Events read per step.
const PAGE: usize = 256;
/// At most one comment per pull request in this time noting recurrences while it is open.
const NOTE_EVERY: jiff::SignedDuration = jiff::SignedDuration::from_hours(1);

/// What the forge works with.
#[derive(Debug)]
pub struct Forge {
    store: Arc<Store>,
    pull_request: Option<(PullRequestConfig, ForgeApi, String)>,
    issues: Option<(IssuesConfig, ForgeApi)>,
    /// When issues were opened in the last hour.
    opened: VecDeque<Timestamp>,
    /// Escalated incidents whose issue waits for the rate limit.
    waiting: BTreeSet<String>,
    /// Pull request number → when a recurrence was last to be noted on it (tried, whatever
    /// came of it: a forge that fails is not asked at every count).
    noting: HashMap<u64, Timestamp>,
}

/// Why the forge cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForgeSetupError {
    /// A token variable is unset.
    #[error(
        "{section}.token_env: the environment variable {var} is not set or empty (set it, or \
         remove `{section}`)"
    )]
    MissingToken {
        /// `fix.pull_request` or `issues`.
        section: &'static str,
        /// The variable.
        var: String,
    },
    /// The HTTP client cannot be built.
    #[error("{0}")]
    Client(String),
}

fn token(section: &'static str, var: &str) -> Result<String, ForgeSetupError> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(v),
        _ => Err(ForgeSetupError::MissingToken {
            section,
            var: var.to_string(),
        }),
    }
}

impl Forge {
    /// The forge of `fix.pull_request` and `issues` (None when neither is configured).
    ///
    /// # Errors
    ///
    /// [`ForgeSetupError`] when a token is missing.
    pub fn new(
        store: Arc<Store>,
        pull_request: Option<&PullRequestConfig>,
        issues: Option<&IssuesConfig>,
    ) -> Result<Option<Forge>, ForgeSetupError> {
        if pull_request.is_none() && issues.is_none() {
            return Ok(None);
        }
        let pull_request = match pull_request {
            Some(c) => {
                let t = token("fix.pull_request", &c.token_env)?;
                let api = ForgeApi::new(c.provider, c.api_url.as_deref(), &c.repo, &t)
                    .map_err(|e| ForgeSetupError::Client(e.to_string()))?;
                Some((c.clone(), api, t))
            }
            None => None,
        };
        let issues = match issues {
            Some(c) => {
                let t = token("issues", &c.token_env)?;
                let api = ForgeApi::new(c.provider, c.api_url.as_deref(), &c.repo, &t)
                    .map_err(|e| ForgeSetupError::Client(e.to_string()))?;
                Some((c.clone(), api))
            }
            None => None,
        };
        // The rate limit outlives the process: a restart does not reset the hour.
        let limit = match store.issue_limit() {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "forge: cannot read the issue rate limit's state; starting empty");
                IssueLimit::default()
            }
        };
        Ok(Some(Forge {
            store,
            pull_request,
            issues,
            opened: limit.opened.into_iter().collect(),
            waiting: limit.waiting.into_iter().collect(),
            noting: HashMap::new(),
        }))
    }

    /// Follows the event log until `stop`: `heads` changes when events are logged.
    pub async fn run(
        mut self,
        mut heads: tokio::sync::watch::Receiver<u64>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        let mut after = match self.store.outbox_cursor(CURSOR) {
            Ok(Some(c)) => c,
            _ => {
                let head = self.store.event_head();
                let _ = self.store.set_outbox_cursor(CURSOR, head);
                head
            }
        };
        loop {
            loop {
                let events = match self.store.events_after(after, PAGE) {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!(error = %e, "forge: cannot read the event log");
                        break;
                    }
                };
                let Some(last) = events.last().map(|e| e.seq) else {
                    break;
                };
                for e in events {
                    if let Err(err) = self.on_event(&e).await {
                        tracing::warn!(error = %err, incident = %e.incident_id, "forge: cannot record");
                    }
                }
                after = last;
                if let Err(e) = self.store.set_outbox_cursor(CURSOR, after) {
                    tracing::warn!(error = %e, "forge: cannot save its cursor");
                }
            }
            let waiting: Vec<String> = self.waiting.iter().cloned().collect();
            for id in waiting {
                if let Err(e) = self.escalated(&id).await {
                    tracing::warn!(error = %e, incident = %id, "forge: cannot record");
                }
            }
            tokio::select! {
                () = &mut stop => return,
                r = heads.changed() => if r.is_err() { return },
                () = tokio::time::sleep(RETRY_EVERY) => {}
            }
        }
    }

    async fn on_event(&mut self, e: &crate::store::Event) -> Result<(), StoreError> {
        if e.incident_id.is_empty() || e.data.get("forge").is_some() {
            return Ok(());
        }
        match e.kind {
            EventKind::FixCompleted if self.pull_request.is_some() => {
                self.fix_completed(&e.fix_id).await
            }
            EventKind::IncidentEscalated if self.issues.is_some() => {
                self.escalated(&e.incident_id).await
            }
            EventKind::IncidentResolved => {
                // An approved fix ends here (its fix_completed came when it was proven, before
                // the approval): its pull request is opened now. Done twice, it is a no-op.
                if self.pull_request.is_some() {
                    let approved = self
                        .store
                        .fixes_of(&e.incident_id)?
                        .into_iter()
                        .rev()
                        .find(|f| f.status == FixStatus::Success && !f.shadow);
                    if let Some(f) = approved {
                        self.fix_completed(&f.id).await?;
                    }
                }
                if self.issues.is_some() {
                    self.resolved(&e.incident_id).await?;
                }
                Ok(())
            }
            EventKind::IncidentUpdated | EventKind::IncidentRegressed => {
                if self.pull_request.is_some() {
                    self.pull_request_recurred(&e.incident_id).await?;
                }
                if self.issues.is_some() {
                    self.recurred(&e.incident_id, e.data.get("ci").is_some())
                        .await?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn links(&self, inc: &Incident) -> Result<ForgeLinks, StoreError> {
        Ok(self
            .store
            .forge_links(inc.fingerprint.0)?
            .unwrap_or_default())
    }

    /// Stores `links` and says what happened on the incident's timeline.
    fn save(&self, inc: &Incident, links: &ForgeLinks, note: &str) -> Result<(), StoreError> {
        let mut txn = self.store.begin_write()?;
        save_in(&mut txn, inc, links, note)?;
        txn.commit()
    }

    /// The incident's pull request was merged on the forge (by a person: Sentinel did not
    /// merge its fix). Recorded so, its fix marked merged, and, the incident being resolved,
    /// watched for a regression as when Sentinel merges a fix: a merged fix is deployed, so
    /// the error's next occurrence reopens the incident and asks for a new fix (which opens
    /// a new pull request: a merged one's branch is never rewritten).
    fn save_merged(
        &self,
        inc: &Incident,
        links: &ForgeLinks,
        pr: &ForgeLink,
    ) -> Result<(), StoreError> {
        let mut txn = self.store.begin_write()?;
        let note = if txn.merged_on_forge(&pr.fix_id)? {
            format!(
                "pull request {} was merged on the forge: the error's next occurrence reopens \
                 the incident as a regression",
                pr.url
            )
        } else {
            format!("pull request {} was merged on the forge", pr.url)
        };
        save_in(&mut txn, inc, links, &note)?;
        txn.commit()
    }

    fn report(&self, id: &str) -> Result<String, StoreError> {
        Ok(crate::fix::postmortem::Record::read(&self.store, id)?
            .map(|r| crate::fix::postmortem::render(&r))
            .unwrap_or_default())
    }

    async fn fix_completed(&mut self, fix_id: &str) -> Result<(), StoreError> {
        let Some((cfg, api, token)) = &self.pull_request else {
            return Ok(());
        };
        let Some(fix) = self.store.fix(fix_id)? else {
            return Ok(());
        };
        if fix.status != FixStatus::Success || fix.shadow || fix.branch.is_empty() {
            return Ok(());
        }
        let Some(inc) = self.store.incident(&fix.incident_id)? else {
            return Ok(());
        };
        let mut links = self.links(&inc)?;
        if links
            .pull_request
            .iter()
            .chain(&links.earlier_pull_requests)
            .any(|p| p.fix_id == fix.id)
        {
            return Ok(()); // done before (a restart, or an approved fix's incident_resolved)
        }
        let mut before = String::new();
        // The stored state is what Sentinel last saw; a person may have merged or closed the
        // pull request since. Ask before pushing onto its branch or replacing its body.
        let stored = links.pull_request.clone().filter(|p| p.state == "open");
        if let Some(p) = stored {
            match api.pull_request_state(p.number).await {
                Ok(PullRequestState::Open) => {}
                Ok(state) => {
                    before = format!(
                        "pull request {} was {} on the forge; ",
                        p.url,
                        state.as_str()
                    );
                    links.pull_request = Some(ForgeLink {
                        state: state.as_str().into(),
                        ..p
                    });
                }
                Err(e) => {
                    links.error = format!(
                        "the fix stays on its local branch {}: pull request #{}'s state could \
                         not be read ({e}), so it was neither updated nor replaced",
                        fix.branch, p.number
                    );
                    let note = links.error.clone();
                    return self.save(&inc, &links, &note);
                }
            }
        }
        let open = links.pull_request.clone().filter(|p| p.state == "open");
        let body = self.report(&inc.id)?;
        let title = format!(
            "sentinel: fix {} ({})",
            if inc.pact_key.is_empty() {
                &inc.id
            } else {
                &inc.pact_key
            },
            first_chars(&inc.normalized, 60)
        );
        let remote = cfg.remote.clone().unwrap_or_else(|| api.default_remote());
        if open.is_none() {
            match api.open_pull_requests().await {
                Ok(n) if n >= cfg.max_open as usize => {
                    links.error = format!(
                        "no pull request opened: {n} of Sentinel's are open (fix.pull_request.max_open \
                         {}); the fix stays on its local branch {}",
                        cfg.max_open, fix.branch
                    );
                    let note = format!("{before}{}", links.error);
                    return self.save(&inc, &links, &note);
                }
                Ok(_) => {}
                Err(e) => {
                    links.error = format!(
                        "no pull request opened: {e}; the fix stays on its local branch {}",
                        fix.branch
                    );
                    let note = format!("{before}{}", links.error);
                    return self.save(&inc, &links, &note);
                }
            }
        }
        // A newer fix of the incident goes onto its open pull request's branch.
        let target = open
            .as_ref()
            .map_or_else(|| fix.branch.clone(), |p| p.branch.clone());
        let pushed = {
            let (repo, local, target, remote, token, provider) = (
                std::path::PathBuf::from(&fix.repo),
                fix.branch.clone(),
                target.clone(),
                remote.clone(),
                token.clone(),
                cfg.provider,
            );
            tokio::task::spawn_blocking(move || {
                push(&repo, &remote, &local, &target, &token, provider)
            })
            .await
            .unwrap_or_else(|e| Err(PushError::Git(e.to_string())))
        };
        if let Err(e) = pushed {
            links.error = format!(
                "the fix branch was not pushed ({e}); it stays local: {}",
                fix.branch
            );
            let note = format!("{before}{}", links.error);
            return self.save(&inc, &links, &note);
        }
        let result = match &open {
            Some(p) => match api.update_pull_request(p.number, &title, &body).await {
                Ok(()) => {
                    let text = self.replaced_text(p, &fix)?;
                    if let Err(e) = api.comment_pull_request(p.number, &text).await {
                        tracing::warn!(error = %e, incident = %inc.id, "forge: the pull request was updated but not commented on");
                    }
                    Ok(Opened {
                        number: p.number,
                        url: p.url.clone(),
                    })
                }
                Err(e) => Err(e),
            },
            None => {
                api.open_pull_request(&title, &target, &cfg.base, &body, &cfg.labels)
                    .await
            }
        };
        match result {
            Ok(o) => {
                let updated = open.is_some();
                // A merged or closed one is kept, below the new one.
                if let Some(old) = links.pull_request.take().filter(|_| !updated) {
                    links.earlier_pull_requests.push(old);
                }
                links.pull_request = Some(ForgeLink {
                    number: o.number,
                    url: o.url.clone(),
                    state: "open".into(),
                    branch: target,
                    fix_id: fix.id.clone(),
                    count: inc.count,
                    noted_at: open.as_ref().and_then(|p| p.noted_at),
                    noted_count: open.as_ref().map_or(0, |p| p.noted_count),
                });
                links.error.clear();
                tracing::info!(incident = %inc.id, pull_request = o.number, "fix pushed, pull request {}", if updated { "updated" } else { "opened" });
                let note = format!(
                    "{before}pull request {} {}",
                    o.url,
                    if updated {
                        "updated: it carries the newer fix"
                    } else {
                        "opened"
                    }
                );
                self.save(&inc, &links, &note)
            }
            Err(e) => {
                links.error = match &open {
                    Some(p) => format!(
                        "the branch {target} was pushed but pull request #{} was not updated: {e}",
                        p.number
                    ),
                    None => format!(
                        "the branch {target} was pushed but no pull request was opened: {e}"
                    ),
                };
                let note = format!("{before}{}", links.error);
                self.save(&inc, &links, &note)
            }
        }
    }

    /// The comment on a pull request whose fix was replaced by `fix`.
    fn replaced_text(
        &self,
        pr: &ForgeLink,
        fix: &crate::store::FixResult,
    ) -> Result<String, StoreError> {
        let merged = self.store.fix(&pr.fix_id)?.is_some_and(|f| f.merged);
        Ok(format!(
            "Sentinel replaced this pull request's fix with a newer proven one: fix `{}` \
             (commit `{}`) replaces fix `{}`{}. The description is the incident's postmortem, \
             updated.",
            fix.id,
            first_chars(&fix.git_fix_ref, 12),
            pr.fix_id,
            if merged {
                ": the error came back after that fix was merged (a regression)"
            } else {
                ""
            }
        ))
    }

    /// A recurrence of an incident whose pull request is open and whose fix is not merged
    /// (it is not deployed yet: a recurrence is expected, not a regression). Nothing is
    /// pushed or opened; at most once an hour per pull request ([`NOTE_EVERY`]), a comment
    /// says how often the error was seen since the fix was pushed. The pull request's state
    /// is read first: one merged or closed meanwhile is recorded so, without a comment.
    async fn pull_request_recurred(&mut self, id: &str) -> Result<(), StoreError> {
        let Some(inc) = self.store.incident(id)? else {
            return Ok(());
        };
        if inc.status != IncidentStatus::Resolved {
            return Ok(()); // reopened (a regression): a new fix answers it
        }
        let mut links = self.links(&inc)?;
        let Some(mut pr) = links.pull_request.clone() else {
            return Ok(());
        };
        if pr.state != "open" || inc.count <= pr.count.max(pr.noted_count) {
            return Ok(());
        }
        let now = Timestamp::now();
        let recent = |t: Option<&Timestamp>| t.is_some_and(|t| now < *t + NOTE_EVERY);
        if recent(pr.noted_at.as_ref()) || recent(self.noting.get(&pr.number)) {
            return Ok(());
        }
        if self.store.fix(&pr.fix_id)?.is_none_or(|f| f.merged) {
            return Ok(());
        }
        self.noting.retain(|_, t| now < *t + NOTE_EVERY);
        self.noting.insert(pr.number, now);
        let Some((_, api, _)) = &self.pull_request else {
            return Ok(());
        };
        match api.pull_request_state(pr.number).await {
            Ok(PullRequestState::Open) => {}
            Ok(state) => {
                pr.state = state.as_str().into();
                links.pull_request = Some(pr.clone());
                if state == PullRequestState::Merged {
                    return self.save_merged(&inc, &links, &pr);
                }
                let note = format!("pull request {} was {} on the forge", pr.url, pr.state);
                return self.save(&inc, &links, &note);
            }
            Err(e) => {
                tracing::warn!(error = %e, incident = %inc.id, "forge: a recurrence was not noted on the pull request");
                return Ok(());
            }
        }
        let more = inc.count - pr.count;
        let text = format!(
            "Seen {more} more time{} since this pull request's fix was pushed ({} occurrences \
             in all, the latest at {}). The fix is not deployed yet: Sentinel opens no other \
             pull request for it.",
            if more == 1 { "" } else { "s" },
            inc.count,
            inc.last_seen
        );
        match api.comment_pull_request(pr.number, &text).await {
            Ok(()) => {
                pr.noted_at = Some(now);
                pr.noted_count = inc.count;
                let note = format!("pull request {}: the recurrence noted on it", pr.url);
                links.pull_request = Some(pr);
                self.save(&inc, &links, &note)
            }
            Err(e) => {
                tracing::warn!(error = %e, incident = %inc.id, "forge: a recurrence was not noted on the pull request");
                Ok(())
            }
        }
    }

    /// Saves the issue rate limit's state (when issues were opened, which wait).
    fn save_limit(&self) {
        let limit = IssueLimit {
            opened: self.opened.iter().copied().collect(),
            waiting: self.waiting.iter().cloned().collect(),
        };
        let saved = self.store.begin_write().and_then(|mut txn| {
            txn.put_issue_limit(&limit)?;
            txn.commit()
        });
        if let Err(e) = saved {
            tracing::warn!(error = %e, "forge: cannot save the issue rate limit's state");
        }
    }

    /// Stops waiting for `id` (saved when it was waiting).
    fn unwait(&mut self, id: &str) {
        if self.waiting.remove(id) {
            self.save_limit();
        }
    }

    fn may_open_issue(&mut self, per_hour: u32) -> bool {
        let now = Timestamp::now();
        let hour_ago = now - jiff::SignedDuration::from_hours(1);
        while self.opened.front().is_some_and(|t| *t < hour_ago) {
            self.opened.pop_front();
        }
        self.opened.len() < per_hour as usize
    }

    async fn escalated(&mut self, id: &str) -> Result<(), StoreError> {
        let Some(inc) = self.store.incident(id)? else {
            self.unwait(id);
            return Ok(());
        };
        if inc.status != crate::store::IncidentStatus::Escalated {
            self.unwait(id);
            return Ok(());
        }
        let Some((cfg, _)) = &self.issues else {
            return Ok(());
        };
        let per_hour = cfg.max_per_hour;
        let mut links = self.links(&inc)?;
        if let Some(issue) = links.issue.clone() {
            self.unwait(id);
            if issue.state != "open" {
                return Ok(());
            }
            let text = format!(
                "Escalated again ({}): {} occurrence{} now.",
                inc.resolution,
                inc.count,
                if inc.count == 1 { "" } else { "s" }
            );
            return self.comment(&inc, links, issue, &text, false).await;
        }
        if !self.may_open_issue(per_hour) {
            if self.waiting.insert(id.to_string()) {
                self.save_limit();
                tracing::info!(incident = %id, "issue waits: issues.max_per_hour reached");
                links.error = format!(
                    "rate-limited: no issue opened yet, issues.max_per_hour ({per_hour}) were \
                     opened in the last hour; it opens when the hour allows"
                );
                let note = links.error.clone();
                return self.save(&inc, &links, &note);
            }
            return Ok(());
        }
        self.unwait(id);
        let body = self.report(id)?;
        let title = format!(
            "Sentinel: {} ({}): {}",
            if inc.pact_key.is_empty() {
                &inc.id
            } else {
                &inc.pact_key
            },
            inc.resolution,
            first_chars(&inc.normalized, 80)
        );
        let Some((cfg, api)) = &self.issues else {
            return Ok(());
        };
        match api.open_issue(&title, &body, &cfg.labels).await {
            Ok(o) => {
                self.opened.push_back(Timestamp::now());
                self.save_limit();
                links.issue = Some(ForgeLink {
                    number: o.number,
                    url: o.url.clone(),
                    state: "open".into(),
                    count: inc.count,
                    ..ForgeLink::default()
                });
                links.error.clear();
                self.save(&inc, &links, &format!("issue {} opened", o.url))
            }
            Err(e) => {
                links.error = format!("no issue opened: {e}");
                if self.waiting.insert(id.to_string()) {
                    self.save_limit();
                }
                let note = links.error.clone();
                self.save(&inc, &links, &note)
            }
        }
    }

    /// `from_ci`: the event announces a CI occurrence (a CI incident's recurrence is commented
    /// on from that one, which names the commit, not from the count's update before it).
    async fn recurred(&mut self, id: &str, from_ci: bool) -> Result<(), StoreError> {
        let Some(inc) = self.store.incident(id)? else {
            return Ok(());
        };
        let ci = self.store.ci_record(inc.fingerprint.0)?;
        if ci.is_some() && !from_ci {
            return Ok(());
        }
        let links = self.links(&inc)?;
        let Some(issue) = links.issue.clone() else {
            return Ok(());
        };
        if issue.state != "open" || inc.count <= issue.count {
            return Ok(());
        }
        let mut text = format!(
            "It happened again: {} occurrence{} now (was {} when last noted), last seen {}.",
            inc.count,
            if inc.count == 1 { "" } else { "s" },
            issue.count,
            inc.last_seen
        );
        if let Some(ci) = ci
            && let Some(o) = ci.occurrences.last()
        {
            text.push_str(&format!(
                "\n\nLatest CI failure: commit `{}` on `{}`, attempt {}: {}",
                o.commit, o.branch, o.attempt, o.run_url
            ));
        }
        self.comment(&inc, links, issue, &text, false).await
    }

    async fn resolved(&mut self, id: &str) -> Result<(), StoreError> {
        self.unwait(id);
        let Some(inc) = self.store.incident(id)? else {
            return Ok(());
        };
        let links = self.links(&inc)?;
        let Some(issue) = links.issue.clone() else {
            return Ok(());
        };
        if issue.state != "open" {
            return Ok(());
        }
        let mut text = format!("Resolved by Sentinel ({}).", inc.resolution);
        if let Some(pr) = &links.pull_request {
            text.push_str(&format!(" The fix: {}", pr.url));
        }
        self.comment(&inc, links, issue, &text, true).await
    }

    async fn comment(
        &mut self,
        inc: &Incident,
        mut links: ForgeLinks,
        mut issue: ForgeLink,
        text: &str,
        close: bool,
    ) -> Result<(), StoreError> {
        let Some((_, api)) = &self.issues else {
            return Ok(());
        };
        let mut r = api.comment_issue(issue.number, text).await;
        if close && r.is_ok() {
            r = api.close_issue(issue.number).await;
        }
        match r {
            Ok(()) => {
                issue.count = inc.count;
                if close {
                    issue.state = "closed".into();
                }
                let note = format!(
                    "issue {} {}",
                    issue.url,
                    if close { "closed" } else { "commented on" }
                );
                links.issue = Some(issue);
                links.error.clear();
                self.save(inc, &links, &note)
            }
            Err(e) => {
                links.error = format!("issue #{} not updated: {e}", issue.number);
                let note = links.error.clone();
                self.save(inc, &links, &note)
            }
        }
    }
}

fn first_chars(s: &str, n: usize) -> String {
    let t: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(n)
        .collect();
    t.trim().to_string()
}

/// Saves `links` and announces them on the incident's timeline with `note`, in `txn`.
fn save_in(
    txn: &mut crate::store::StoreTxn<'_>,
    inc: &Incident,
    links: &ForgeLinks,
    note: &str,
) -> Result<(), StoreError> {
    let mut ev = NewEvent::incident(EventKind::IncidentUpdated, inc);
    if let serde_json::Value::Object(m) = &mut ev.data {
        m.insert(
            "forge".into(),
            serde_json::json!({"note": note, "links": links}),
        );
    }
    txn.put_forge_links(inc.fingerprint.0, links)?;
    txn.emit(ev, Timestamp::now())?;
    Ok(())
}
