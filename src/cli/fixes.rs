//! `sentinel fixes [ID]`, `sentinel approve ID`, `sentinel reject ID [--reason TEXT]`.
//!
//! `fixes` reads the store read-only (it works beside a running daemon): without an id the
//! newest fixes, one line each; with one, the whole fix (its diff, test output and error).
//! `approve` and `reject` review a fix awaiting approval (`fix.require_approval`): through
//! the daemon's API while one runs (it owns the store), else on the store directly — the
//! same review either way ([`crate::fix::service::review`]).
//!
//! Exit codes: 0 done; 1 no such fix, not awaiting approval, or the store failed; 2 usage.

use std::io::Write;

use anyhow::Context;

use super::CliError;
use super::client::{DaemonClient, refusal};
use crate::config::Config;
use crate::fix::service::ReviewError;
use crate::store::{FixResult, FixStatus, Store, StoreError};

/// `sentinel fixes`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct FixesArgs {
    /// Pull or release the kill switch.
    #[command(subcommand)]
    action: Option<FixesAction>,
    /// One fix, whole (its id, as `fixes` lists them).
    id: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// How many fixes to list.
    #[arg(long, default_value_t = 20)]
    limit: usize,
}

/// `sentinel fixes pause|resume`.
#[derive(Debug, clap::Subcommand)]
pub enum FixesAction {
    /// The kill switch: no fix starts until `resume` (queued ones wait; a running one
    /// finishes). Kept in the state directory, so it outlasts a restart.
    Pause {
        /// Why (shown with every held fix).
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Let fixes start again; held ones start now.
    Resume,
}

/// `sentinel approve`.
#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    /// The fix awaiting approval.
    id: String,
    /// Print the reviewed FixResult as JSON.
    #[arg(long)]
    json: bool,
}

/// `sentinel reject`.
#[derive(Debug, clap::Args)]
pub struct RejectArgs {
    /// The fix awaiting approval.
    id: String,
    /// Why (kept as the fix's error, shown in `report` and the API).
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// Print the reviewed FixResult as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `sentinel fixes`.
///
/// # Errors
///
/// [`CliError`] when the store cannot be read.
pub fn run_fixes(config: &Config, args: FixesArgs) -> Result<u8, CliError> {
    if let Some(action) = args.action {
        return run_switch(config, action);
    }
    let store = Store::open_read_only(&config.db_path()).context("opening the store")?;
    let mut out = std::io::stdout().lock();
    if let Some(id) = &args.id {
        let fix = match &store {
            Some(s) => s.fix(id).context("reading the fix")?,
            None => None,
        };
        let Some(fix) = fix else {
            return Err(CliError::Other(anyhow::anyhow!("no fix {id}")));
        };
        if args.json {
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&fix).context("JSON")?
            )
            .context("stdout")?;
        } else {
            write_fix(&mut out, &fix).context("stdout")?;
        }
        return Ok(0);
    }
    let fixes = match &store {
        Some(s) => s.fixes(args.limit.max(1)).context("reading fixes")?,
        None => Vec::new(),
    };
    if args.json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&fixes).context("JSON")?
        )
        .context("stdout")?;
        return Ok(0);
    }
    if fixes.is_empty() {
        writeln!(out, "No fixes recorded.").context("stdout")?;
    }
    for f in &fixes {
        writeln!(out, "  {}", super::report::fix_line(f)).context("stdout")?;
    }
    Ok(0)
}

/// `fixes pause|resume`: through the daemon while one runs (it wakes its fixer at once), else
/// on the switch file directly — the same file either way.
fn run_switch(config: &Config, action: FixesAction) -> Result<u8, CliError> {
    let (path, body, reason) = match &action {
        FixesAction::Pause { reason } => (
            "/fixes/pause",
            serde_json::json!({"reason": reason}),
            Some(reason.clone().unwrap_or_default()),
        ),
        FixesAction::Resume => ("/fixes/resume", serde_json::json!({}), None),
    };
    let state = match DaemonClient::find(config)? {
        Some(daemon) => daemon
            .post(path, &body)
            .and_then(|v| serde_json::from_value(v).context("the daemon's answer"))
            .map_err(|e| match refusal(&e) {
                Some(r) => CliError::Other(anyhow::anyhow!("{}", r.message)),
                None => CliError::Other(e),
            })?,
        None => {
            config.state().create()?;
            let sw = crate::fix::guard::PauseSwitch::new(&config.state_dir);
            match reason {
                Some(r) => sw.pause(&r, jiff::Timestamp::now()),
                None => sw.resume(),
            }
            .context("writing the pause switch")?
        }
    };
    let state: crate::fix::guard::PauseState = state;
    let mut out = std::io::stdout().lock();
    match state.since {
        Some(since) if state.paused => writeln!(out, "fixes paused since {since}"),
        _ if state.paused => writeln!(out, "fixes paused"),
        _ => writeln!(out, "fixes resumed"),
    }
    .context("stdout")?;
    Ok(0)
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

fn write_fix(out: &mut impl Write, f: &FixResult) -> std::io::Result<()> {
    writeln!(out, "fix        {}", f.id)?;
    writeln!(out, "status     {}", f.status.as_str())?;
    writeln!(out, "incident   {}", f.incident_id)?;
    writeln!(out, "key        {}", f.pact_key)?;
    writeln!(out, "error      {}", f.error_summary)?;
    writeln!(out, "attempts   {}", f.attempts)?;
    writeln!(
        out,
        "spend      ${:.4} ({} input + {} output tokens)",
        f.spend_usd, f.input_tokens, f.output_tokens
    )?;
    if let Some(t) = f.started_at {
        writeln!(out, "started    {t}")?;
    }
    if let Some(t) = f.completed_at {
        writeln!(out, "ended      {t} ({} ms)", f.duration_ms)?;
    }
    if !f.branch.is_empty() {
        writeln!(
            out,
            "branch     {} {}{}",
            f.branch,
            short(&f.git_fix_ref),
            if f.merged { " (merged)" } else { "" }
        )?;
    }
    if !f.error.is_empty() {
        writeln!(out, "why        {}", f.error)?;
    }
    if f.diff.is_empty() {
        // Fixes recorded before diffs were kept: the fixed files whole.
        for (path, text) in &f.fixed_source {
            writeln!(out, "\n--- fixed {path}\n{text}")?;
        }
    } else {
        writeln!(out, "\n--- change (unified diff)\n{}", f.diff.trim_end())?;
    }
    if !f.reproducer_test.is_empty() && f.diff.is_empty() {
        writeln!(out, "\n--- reproducer\n{}", f.reproducer_test)?;
    }
    if !f.test_output_tail.is_empty() {
        writeln!(out, "\n--- test output (tail)\n{}", f.test_output_tail)?;
    }
    Ok(())
}

/// Runs `sentinel approve`.
///
/// # Errors
///
/// [`CliError`]: no such fix, not awaiting approval, the daemon or the store failed.
pub fn run_approve(config: &Config, args: ApproveArgs) -> Result<u8, CliError> {
    review(config, &args.id, true, None, args.json)
}

/// Runs `sentinel reject`.
///
/// # Errors
///
/// As [`run_approve`].
pub fn run_reject(config: &Config, args: RejectArgs) -> Result<u8, CliError> {
    review(config, &args.id, false, args.reason.as_deref(), args.json)
}

fn review(
    config: &Config,
    id: &str,
    approve: bool,
    reason: Option<&str>,
    json: bool,
) -> Result<u8, CliError> {
    let fix = match DaemonClient::find(config)? {
        Some(daemon) => {
            let action = if approve { "approve" } else { "reject" };
            let body = match reason {
                Some(r) => serde_json::json!({ "reason": r }),
                None => serde_json::json!({}),
            };
            let path = format!("/fixes/{}/{action}", urlencode(id));
            match daemon.post(&path, &body) {
                Ok(doc) => serde_json::from_value::<FixResult>(doc)
                    .context("the daemon's answer is not a FixResult")?,
                Err(e) => {
                    return Err(match refusal(&e) {
                        Some(r) => CliError::Other(anyhow::anyhow!("{}", r.message)),
                        None => CliError::Other(e),
                    });
                }
            }
        }
        None => {
            if !config.db_path().exists() {
                return Err(CliError::Other(anyhow::anyhow!(
                    "no fix {id} (no store yet)"
                )));
            }
            let store = Store::open(&config.db_path()).map_err(|e| match e {
                e @ StoreError::InUse { .. } => CliError::Other(anyhow::anyhow!(
                    "{e}\nAnother process owns the store; retry when it has stopped."
                )),
                e => CliError::Other(e.into()),
            })?;
            let fix =
                crate::fix::service::review(&store, config, id, approve, reason).map_err(|e| {
                    match e {
                        ReviewError::Store(e) => CliError::Other(e.into()),
                        e => CliError::Other(anyhow::anyhow!("{e}")),
                    }
                })?;
            // No daemon follows the event log here: rewrite the postmortem now.
            if let Err(e) =
                crate::fix::postmortem::write(&store, &config.state().reports(), &fix.incident_id)
            {
                tracing::warn!(error = %e, "cannot write the postmortem");
            }
            fix
        }
    };
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&fix).context("JSON")?
        )
        .context("stdout")?;
        return Ok(0);
    }
    let said = match fix.status {
        FixStatus::Success if fix.merged => format!(
            "Approved fix {}: merged into your branch; incident {} resolved",
            fix.id, fix.incident_id
        ),
        FixStatus::Success => format!(
            "Approved fix {}: on branch {} ({}); incident {} resolved",
            fix.id,
            fix.branch,
            short(&fix.git_fix_ref),
            fix.incident_id
        ),
        _ => format!(
            "Rejected fix {}: branch {} deleted; incident {} escalated",
            fix.id, fix.branch, fix.incident_id
        ),
    };
    writeln!(out, "{said}").context("stdout")?;
    Ok(0)
}

/// Percent-encodes an id for a URL path segment (ids are UUIDs; anything else is escaped).
fn urlencode(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_escaped_for_a_path_segment() {
        assert_eq!(urlencode("0b5c-1f"), "0b5c-1f");
        assert_eq!(urlencode("a/../b c"), "a%2F..%2Fb%20c");
    }
}
