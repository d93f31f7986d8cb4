//! One fix, end to end: from an incident to a commit on `sentinel/fix-<id>` that the
//! project's own tests proved, or to a failure that says why.
//!
//! 1. Locate the component in its git repository: the repository root, and the component's
//!    source and test paths relative to it (edits are confined to those two prefixes).
//! 2. Create an isolated worktree on a new branch from the user's `HEAD`
//!    ([`FixWorktree`]); the user's working tree and index are never touched.
//! 3. Per attempt (`fix.max_attempts`, default 2): reserve the worst-case cost of the call in
//!    the [`Budget`] (no call when a cap would be exceeded), ask the LLM for a structured
//!    proposal ([`prompt`]), settle the real cost; apply the reproducer alone — the tests must
//!    FAIL; apply the fix — the tests must PASS. Anything else is debriefed into the next
//!    attempt, and the worktree is reset.
//! 4. Success: commit the edited files on the fix branch; push a tightened contract (see
//!    [`crate::fix::contract`]); with `fix.merge` fast-forward the user's branch when their tree is clean.
//!
//! The caller stores the [`FixResult`] and moves the incident (see `store::fixes`); the
//! postmortem is written from the store once that is committed ([`super::postmortem`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;

use super::budget::{Budget, BudgetError, reservation, usd};
pub use super::layout::Layout;
use super::llm::{Llm, LlmRequest};
use super::prompt::{self, Artifacts, Debrief, ErrorInfo};
use super::runner::{TestCommand, TestOutcome, run_tests};
use super::worktree::{FixWorktree, fast_forward_user_branch};
use crate::attribute::manifest::ManifestEntry;
use crate::config::Config;
use crate::store::{FixResult, FixStatus, Incident};

/// Resolutions an incident gets from a fix.
pub mod resolution {
    /// The fix was merged into the user's branch.
    pub const AUTO_FIXED: &str = "auto_fixed";
    /// The fix is proven and committed on its branch, waiting for review.
    pub const FIX_ON_BRANCH: &str = "fix_ready_for_review";
    /// The fix is proven and waits for approval.
    pub const AWAITING_APPROVAL: &str = "awaiting_approval";
    /// A cap would have been exceeded: no call was made.
    pub const BUDGET_EXCEEDED: &str = "budget_exceeded";
    /// Every attempt failed.
    pub const FIX_FAILED: &str = "fix_failed";
    /// The LLM could not be used (unreachable, timing out, breaker open).
    pub const LLM_UNAVAILABLE: &str = "llm_unavailable";
    /// The component cannot be fixed here (no repository, no paths).
    pub const NOT_FIXABLE: &str = "not_fixable";
    /// Every proposal was refused by a guardrail (`fix.min_confidence`, `fix.max_files`,
    /// `fix.max_changed_lines`).
    pub const GUARDRAIL_REFUSED: &str = "guardrail_refused";
    /// `fix.mode: shadow`: the fix was proven and recorded, nothing was kept.
    pub const SHADOW: &str = "shadow_fix_proven";
}

/// How a debrief of a proposal refused by a guardrail starts.
const REFUSED: &str = "refused by fix.";

/// What the fixer needs besides the LLM.
#[derive(Debug, Clone)]
pub struct FixerEnv {
    /// The configuration (llm, pact, fix, state_dir).
    pub config: Arc<Config>,
    /// The budget over the store's spend log.
    pub budget: Arc<Budget>,
}

/// Runs fixes with one LLM.
pub struct Fixer<L> {
    llm: L,
    env: FixerEnv,
}

impl<L> std::fmt::Debug for Fixer<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixer").finish_non_exhaustive()
    }
}

/// How one attempt ended.
enum Attempt {
    /// Proven: the reproducer failed before the fix and everything passes after it.
    Proven {
        proposal: prompt::Proposal,
        after: TestOutcome,
    },
    /// Not proven; try again with this debrief.
    Failed(Debrief),
    /// Stop now with this resolution and error.
    Stop(&'static str, String),
}

impl<L: Llm> Fixer<L> {
    /// A fixer calling `llm`.
    pub fn new(llm: L, env: FixerEnv) -> Fixer<L> {
        Fixer { llm, env }
    }

    /// The guardrails that hold jobs back before they start (`fix.freeze`,
    /// `fix.cooldown_seconds`, the pause switch in the state directory).
    pub fn guards(&self) -> super::guard::Guards {
        super::guard::Guards::new(&self.env.config.fix, &self.env.config.state_dir)
    }

    /// Names where fix `fix` of `entry` will work — its branch and repository — before it
    /// starts, so that a fix cut off by a crash can be cleaned up.
    pub fn plan(&self, fix: &mut FixResult, entry: &ManifestEntry) {
        fix.branch = format!("sentinel/fix-{}", fix.id);
        if let Ok(layout) = Layout::locate(entry, &self.env.config) {
            fix.repo = layout.root.to_string_lossy().into_owned();
        }
    }

    /// Fixes `incident` of component `entry`, filling `fix` (whose `id` names the branch);
    /// returns the incident's resolution. Never panics on bad input: every failure is a
    /// `FixStatus::Failure` with `error` set.
    pub async fn run(
        &self,
        fix: &mut FixResult,
        incident: &Incident,
        entry: &ManifestEntry,
    ) -> String {
        let started = Instant::now();
        let res = self.run_inner(fix, incident, entry).await;
        fix.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        fix.completed_at = Some(Timestamp::now());
        fix.spend_usd = usd(fix.spend_micro_usd);
        match res {
            Ok(r) => r,
            Err((r, error)) => {
                fix.status = FixStatus::Failure;
                fix.error = error;
                if fix.git_fix_ref.is_empty() {
                    fix.branch.clear(); // never created, or deleted with the worktree
                }
                r.to_string()
            }
        }
    }

    async fn run_inner(
        &self,
        fix: &mut FixResult,
        incident: &Incident,
        entry: &ManifestEntry,
    ) -> Result<String, (&'static str, String)> {
        let config = self.env.config.clone();
        let layout = Layout::locate(entry, &config).map_err(|e| (resolution::NOT_FIXABLE, e))?;
        let test_dir = layout
            .tests
            .strip_prefix(&layout.project)
            .unwrap_or(&layout.tests)
            .to_string_lossy()
            .into_owned();
        let command = TestCommand::resolve(
            config.pact.test_command.as_deref(),
            &entry.language,
            &test_dir,
        )
        .ok_or_else(|| {
            (
                resolution::NOT_FIXABLE,
                format!(
                    "no test command for language {:?}: set pact.test_command",
                    entry.language
                ),
            )
        })?;
        fix.branch = format!("sentinel/fix-{}", fix.id);
        fix.repo = layout.root.to_string_lossy().into_owned();
        let base_dir = worktree_base(&config.state_dir, &layout.root);
        let allowed = vec![layout.source.clone(), layout.tests.clone()];
        let (root, branch) = (layout.root.clone(), fix.branch.clone());
        let wt = blocking(move || FixWorktree::create(&root, &branch, &base_dir, &allowed))
            .await
            .map_err(|e| (resolution::NOT_FIXABLE, e))?
            .map_err(|e| {
                (
                    resolution::NOT_FIXABLE,
                    format!("cannot create the fix worktree: {e}"),
                )
            })?;
        fix.git_snapshot_ref = wt.base_commit().to_string();
        let art = {
            let (p, l) = (wt.path().to_path_buf(), layout.clone());
            blocking(move || Artifacts::gather(&p, &l.source, &l.tests, l.contract.as_deref()))
                .await
                .map_err(|e| (resolution::NOT_FIXABLE, e))?
        };
        let info = ErrorInfo {
            component_id: entry.component_id.clone(),
            language: entry.language.clone(),
            pact_key: incident.pact_key.clone(),
            sample: incident.sample.clone(),
            source: incident.source.clone(),
            count: incident.count,
            test_prefix: layout.tests.to_string_lossy().into_owned(),
            source_prefix: layout.source.to_string_lossy().into_owned(),
            test_command: command.join(" "),
        };
        let mut wt = Some(wt);
        let mut debriefs: Vec<Debrief> = Vec::new();
        let mut llm_errors = 0u32;
        let timeout = Duration::from_secs(config.fix.test_timeout_seconds);
        for attempt in 1..=config.fix.max_attempts {
            fix.attempts = attempt;
            let outcome = self
                .attempt(
                    attempt, fix, incident, &info, &art, &debriefs, &layout, &command, timeout,
                    &mut wt,
                )
                .await;
            match outcome {
                Attempt::Proven { proposal, after } => {
                    fix.test_output_tail = after.output_tail.clone();
                    let wt = wt
                        .take()
                        .ok_or((resolution::FIX_FAILED, "worktree lost".to_string()))?;
                    return self.land(fix, incident, entry, &layout, wt, proposal).await;
                }
                Attempt::Failed(d) => {
                    if d.failure.starts_with("LLM error") {
                        llm_errors += 1;
                    }
                    fix.test_output_tail = d.test_output.clone();
                    debriefs.push(d);
                }
                Attempt::Stop(r, e) => {
                    discard_worktree(wt.take()).await;
                    fix.branch.clear();
                    return Err((r, e));
                }
            }
        }
        discard_worktree(wt.take()).await;
        fix.branch.clear();
        let summary = debriefs
            .iter()
            .map(|d| format!("attempt {}: {}", d.attempt, d.failure))
            .collect::<Vec<_>>()
            .join("; ");
        let refused = debriefs
            .iter()
            .filter(|d| d.failure.starts_with(REFUSED))
            .count();
        let r = if llm_errors == config.fix.max_attempts {
            resolution::LLM_UNAVAILABLE
        } else if refused == debriefs.len() && refused > 0 {
            resolution::GUARDRAIL_REFUSED
        } else {
            resolution::FIX_FAILED
        };
        Err((
            r,
            format!(
                "Failed after {} attempts: {summary}",
                config.fix.max_attempts
            ),
        ))
    }

    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        attempt: u32,
        fix: &mut FixResult,
        incident: &Incident,
        info: &ErrorInfo,
        art: &Artifacts,
        debriefs: &[Debrief],
        layout: &Layout,
        command: &[String],
        timeout: Duration,
        wt: &mut Option<FixWorktree>,
    ) -> Attempt {
        let config = &self.env.config;
        let failed = |failure: String, test_output: String| {
            Attempt::Failed(Debrief {
                attempt,
                failure,
                test_output,
            })
        };
        let req = LlmRequest {
            system: prompt::system_prompt(),
            user: prompt::user_prompt(info, art, debriefs),
            tool: prompt::fix_tool(),
            max_tokens: config.llm.max_tokens,
        };
        let pricing = super::llm::Pricing::from_usd_per_mtok(
            config.llm.provider,
            config.llm.price_input_per_mtok,
            config.llm.price_output_per_mtok,
        );
        let bytes =
            (req.system.len() + req.user.len() + req.tool.input_schema.to_string().len()) as u64;
        let amount = reservation(bytes, req.max_tokens, pricing.input, pricing.output);
        let hold = match self.env.budget.reserve(
            &incident.id,
            fix.spend_micro_usd,
            amount,
            Timestamp::now(),
        ) {
            Ok(h) => h,
            Err(BudgetError::Exceeded(e)) => {
                return Attempt::Stop(resolution::BUDGET_EXCEEDED, format!("budget exceeded: {e}"));
            }
            Err(e) => return Attempt::Stop(resolution::FIX_FAILED, e.to_string()),
        };
        let answer = self.llm.complete(&req).await;
        let spent = match &answer {
            Ok(r) => {
                fix.input_tokens += r.usage.input_tokens + r.usage.cache_read_tokens;
                fix.output_tokens += r.usage.output_tokens;
                r.cost_micro_usd
            }
            Err(e) => e.spent_micro_usd(),
        };
        if spent == 0 && answer.is_err() {
            self.env.budget.release(hold);
        } else {
            match self.env.budget.settle(hold, spent, Timestamp::now()) {
                Ok(a) => fix.spend_micro_usd += a,
                Err(e) => return Attempt::Stop(resolution::FIX_FAILED, e.to_string()),
            }
        }
        let answer = match answer {
            Ok(a) => a,
            Err(e) => return failed(format!("LLM error: {e}"), String::new()),
        };
        let proposal = match prompt::parse_proposal(&answer.output) {
            Ok(p) => p,
            Err(e) => return failed(format!("unusable answer: {e}"), String::new()),
        };
        for (edits, prefix, what) in [
            (&proposal.reproducer, &layout.tests, "reproducer"),
            (&proposal.fix, &layout.source, "fix"),
        ] {
            if let Some(bad) = edits.iter().find(|e| !e.path().starts_with(prefix)) {
                return failed(
                    format!(
                        "rejected: a {what} edit of {} is outside {} (nothing was applied)",
                        bad.path().display(),
                        prefix.display()
                    ),
                    String::new(),
                );
            }
        }
        // The guardrails on the proposal itself, before any test runs. Whole-file writes are
        // measured against the file as the fix started (the gathered artifacts).
        let edits: Vec<&super::worktree::Edit> =
            proposal.reproducer.iter().chain(&proposal.fix).collect();
        let before = |p: &Path| {
            let p = p.to_string_lossy();
            art.sources
                .iter()
                .chain(&art.tests)
                .find(|(path, _)| *path == p)
                .map(|(_, text)| text.clone())
        };
        if let Err(r) =
            super::guard::check_proposal(&edits, proposal.confidence, &config.fix, before)
        {
            let msg = format!("{REFUSED}{}: {} (no test was run)", r.guardrail, r.reason);
            fix.refusals.push(r);
            return failed(msg, String::new());
        }
        let Some(mut tree) = wt.take() else {
            return Attempt::Stop(resolution::FIX_FAILED, "worktree lost".into());
        };
        let (cwd_rel, cmd) = (layout.project.clone(), command.to_vec());
        let p = proposal.clone();
        let verdict = blocking(move || {
            let r = verify(&mut tree, &cwd_rel, &cmd, timeout, &p);
            (tree, r)
        })
        .await;
        let (tree, result) = match verdict {
            Ok(v) => v,
            Err(e) => return Attempt::Stop(resolution::FIX_FAILED, e),
        };
        *wt = Some(tree);
        match result {
            Ok(after) => Attempt::Proven { proposal, after },
            Err((msg, out)) => failed(msg, out),
        }
    }

    async fn land(
        &self,
        fix: &mut FixResult,
        incident: &Incident,
        entry: &ManifestEntry,
        layout: &Layout,
        mut wt: FixWorktree,
        proposal: prompt::Proposal,
    ) -> Result<String, (&'static str, String)> {
        let config = self.env.config.clone();
        for e in &proposal.reproducer {
            let path = e.path().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(wt.path().join(e.path())).unwrap_or_default();
            fix.reproducer_test
                .push_str(&format!("# --- {path} ---\n{text}\n"));
        }
        for e in &proposal.fix {
            let text = std::fs::read_to_string(wt.path().join(e.path())).unwrap_or_default();
            fix.fixed_source
                .insert(e.path().to_string_lossy().into_owned(), text);
        }
        let contract = proposal
            .contract_change
            .as_deref()
            .map(|text| super::contract::tighten(text, layout.contract.as_deref()));
        let mut contract_files: Option<PathBuf> = None;
        let shadow = config.fix.mode == crate::config::FixMode::Shadow;
        match contract {
            // Shadow mode pushes nothing anywhere, Pact included; the document is recorded.
            Some(Ok(doc)) if shadow => {
                fix.contract_changed = true;
                fix.contract_change = doc;
                fix.contract_push = "not pushed: fix.mode is shadow".into();
            }
            Some(Ok(doc)) => {
                fix.contract_changed = true;
                fix.contract_change = doc.clone();
                let pushed = {
                    let (cfg, e, l, wtp) = (
                        config.clone(),
                        entry.clone(),
                        layout.clone(),
                        wt.path().to_path_buf(),
                    );
                    let fid = fix.id.clone();
                    blocking(move || super::contract::push(&cfg, &e, &l, &wtp, &doc, &fid))
                        .await
                        .and_then(|r| r)
                };
                match pushed {
                    Ok(p) => {
                        fix.contract_push = p.how;
                        contract_files = p.commit_prefix;
                    }
                    Err(e) => fix.contract_push = format!("error: {e}"),
                }
            }
            Some(Err(e)) => fix.contract_push = format!("not pushed: {e}"),
            None => {}
        }
        let message = format!(
            "sentinel: fix {} ({})\n\nIncident {} ({} occurrences), fix {}.\nProven by the \
             project's tests: the reproducer failed before the fix and passes after it.\n\n{}",
            if incident.pact_key.is_empty() {
                &incident.id
            } else {
                &incident.pact_key
            },
            first_chars(&incident.normalized, 60),
            incident.id,
            incident.count,
            fix.id,
            first_chars(&proposal.explanation, 2000),
        );
        let (committed, wt) = blocking(move || {
            if let Some(prefix) = &contract_files {
                wt_include(&mut wt, prefix);
            }
            let r = wt.commit(&message);
            // What was committed, for people to read (the dashboard, `fixes show`).
            let diff = r.is_ok().then(|| wt.diff());
            ((r, diff), wt)
        })
        .await
        .map_err(|e| (resolution::FIX_FAILED, e))?;
        let (committed, diff) = committed;
        match diff {
            Some(Ok(d)) => fix.diff = crate::store::fixes::clip_diff(d),
            Some(Err(e)) => tracing::warn!(error = %e, "cannot read the fix's diff"),
            None => {}
        }
        let commit = committed.map_err(|e| {
            (
                resolution::FIX_FAILED,
                format!("cannot commit the fix: {e}"),
            )
        })?;
        fix.git_fix_ref = commit;
        let root = layout.root.clone();
        let branch = fix.branch.clone();
        drop_worktree(Some(wt)).await;
        if shadow {
            // Proven and recorded (sources, reproducer, test output, commit id); the branch
            // goes, so nothing of it is left to merge or push.
            fix.shadow = true;
            fix.status = FixStatus::Success;
            let deleted = blocking(move || super::worktree::delete_branch(&root, &branch)).await;
            match deleted {
                Ok(Ok(())) => fix.branch.clear(),
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot delete the shadow fix's branch"),
                Err(e) => tracing::warn!(error = %e, "cannot delete the shadow fix's branch"),
            }
            return Ok(resolution::SHADOW.to_string());
        }
        if config.fix.require_approval {
            fix.status = FixStatus::AwaitingApproval;
            return Ok(resolution::AWAITING_APPROVAL.to_string());
        }
        fix.status = FixStatus::Success;
        if config.fix.merge {
            let merged = blocking(move || fast_forward_user_branch(&root, &branch)).await;
            match merged {
                Ok(Ok(m)) => fix.merged = m,
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot fast-forward the user's branch"),
                Err(e) => tracing::warn!(error = %e, "cannot fast-forward the user's branch"),
            }
        }
        Ok(if fix.merged {
            resolution::AUTO_FIXED
        } else {
            resolution::FIX_ON_BRANCH
        }
        .to_string())
    }
}

/// Where fix worktrees go: `state_dir/worktrees`, unless the state directory is inside the
/// repository being fixed (then a worktree there would be a new untracked directory in the
/// user's tree): a directory under the system's temporary directory instead.
fn worktree_base(state_dir: &Path, root: &Path) -> PathBuf {
    let state = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    if state.starts_with(root) {
        std::env::temp_dir().join(format!("sentinel-worktrees-{}", std::process::id()))
    } else {
        crate::state_dir::StateDir::new(state_dir).worktrees()
    }
}

/// Adds Pact's rewritten contract files to the fix commit.
fn wt_include(wt: &mut FixWorktree, prefix: &Path) {
    if let Err(e) = wt.include(prefix) {
        tracing::warn!(error = %e, "cannot add the tightened contract to the fix commit");
    }
}

/// Applies the reproducer, runs the tests (must fail), applies the fix, runs them again
/// (must pass). Err: (what went wrong, test output).
fn verify(
    wt: &mut FixWorktree,
    cwd_rel: &Path,
    cmd: &[String],
    timeout: Duration,
    p: &prompt::Proposal,
) -> Result<TestOutcome, (String, String)> {
    if let Err(e) = wt.reset() {
        return Err((format!("cannot reset the worktree: {e}"), String::new()));
    }
    let cwd = wt.path().join(cwd_rel);
    if let Err(e) = wt.apply(&p.reproducer) {
        return Err((
            format!("the reproducer edits do not apply: {e}"),
            String::new(),
        ));
    }
    let before = run_tests(&cwd, cmd, timeout, &[]);
    if before.timed_out {
        return Err((
            format!(
                "the tests timed out after {}s with the reproducer",
                timeout.as_secs()
            ),
            before.output_tail,
        ));
    }
    if before.passed {
        return Err((
            "the reproducer passes on the current source: it does not reproduce the error".into(),
            before.output_tail,
        ));
    }
    if let Err(e) = wt.apply(&p.fix) {
        return Err((format!("the fix edits do not apply: {e}"), String::new()));
    }
    let after = run_tests(&cwd, cmd, timeout, &[]);
    if after.passed {
        Ok(after)
    } else if after.timed_out {
        Err((
            format!(
                "the tests timed out after {}s with the fix",
                timeout.as_secs()
            ),
            after.output_tail,
        ))
    } else {
        Err((
            format!("the tests fail with the fix (exit {:?})", after.exit),
            after.output_tail,
        ))
    }
}

async fn drop_worktree(wt: Option<FixWorktree>) {
    if let Some(wt) = wt {
        let _ = blocking(move || {
            if let Err(e) = wt.remove() {
                tracing::warn!(error = %e, "cannot remove the fix worktree");
            }
        })
        .await;
    }
}

/// Removes the worktree of a failed fix and its branch (still at the base commit).
async fn discard_worktree(wt: Option<FixWorktree>) {
    if let Some(wt) = wt {
        let _ = blocking(move || {
            if let Err(e) = wt.discard() {
                tracing::warn!(error = %e, "cannot remove the failed fix's worktree and branch");
            }
        })
        .await;
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("fix step failed: {e}"))
}

fn first_chars(s: &str, n: usize) -> String {
    let line = s.lines().next().unwrap_or_default();
    line.chars().take(n).collect()
}
