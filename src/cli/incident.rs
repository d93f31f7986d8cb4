//! `sentinel incident ID [--json]`: one incident, whole — what it is, its counts, its
//! timeline (the event log's entries for it, oldest first), its fix attempts and what it
//! cost. The store is opened read-only, so this works while a daemon writes it.
//!
//! Exit codes: 0 shown; 1 no such incident or the store failed.

use std::io::Write;

use anyhow::Context;
use serde::Serialize;

use super::CliError;
use crate::config::Config;
use crate::store::events::Event;
use crate::store::{FixResult, Incident, Store};

/// The most timeline entries shown (the event log itself is bounded too).
const TIMELINE_MAX: usize = 1000;

/// `sentinel incident`.
#[derive(Debug, clap::Args)]
pub struct IncidentArgs {
    /// The incident's id (as `report` lists it).
    id: String,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
}

/// What `incident --json` prints.
#[derive(Debug, Serialize)]
struct IncidentView {
    incident: Incident,
    /// Everything the LLM cost for it (fixes and triage), in USD.
    spend_usd: f64,
    timeline: Vec<Event>,
    fixes: Vec<FixResult>,
    /// The daemon's LLM triage answer (incidents without a PACT key).
    #[serde(skip_serializing_if = "Option::is_none")]
    triage: Option<crate::store::triage::TriageRecord>,
    /// A CI failure's repository, workflow, job, step, occurrences and flaky mark.
    #[serde(skip_serializing_if = "Option::is_none")]
    ci: Option<crate::store::ci::CiRecord>,
    /// The pull request and issue opened for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    forge: Option<crate::store::ci::ForgeLinks>,
}

/// Runs `sentinel incident`.
///
/// # Errors
///
/// [`CliError`] when there is no such incident or the store cannot be read.
pub fn run(config: &Config, args: IncidentArgs) -> Result<u8, CliError> {
    let store = Store::open_read_only(&config.db_path()).context("opening the store")?;
    let found = match &store {
        Some(s) => s.incident(&args.id).context("reading the incident")?,
        None => None,
    };
    let (Some(store), Some(incident)) = (store, found) else {
        return Err(CliError::Other(anyhow::anyhow!("no incident {}", args.id)));
    };
    let mut timeline = store
        .incident_events(&incident.id, TIMELINE_MAX)
        .context("reading the timeline")?;
    timeline.sort_by_key(|e| e.seq);
    let fixes = store.fixes_of(&incident.id).context("reading fixes")?;
    let spend = super::report::spend_by_incident(&store)?;
    let triage = store
        .triage_of(incident.fingerprint)
        .context("reading the triage answer")?;
    let ci = store
        .ci_record(incident.fingerprint.0)
        .context("reading the CI record")?;
    let forge = store
        .forge_links(incident.fingerprint.0)
        .context("reading the forge links")?;
    let view = IncidentView {
        ci,
        forge,
        triage,
        spend_usd: spend.get(&incident.id).copied().unwrap_or(0) as f64 / 1e6,
        incident,
        timeline,
        fixes,
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&view).context("JSON")?
        )
        .context("stdout")?;
        return Ok(0);
    }
    write_text(&mut out, &view).context("stdout")?;
    Ok(0)
}

fn write_text(out: &mut impl Write, v: &IncidentView) -> std::io::Result<()> {
    let i = &v.incident;
    writeln!(out, "incident   {}", i.id)?;
    writeln!(
        out,
        "component  {}",
        if i.component_id.is_empty() {
            "unknown"
        } else {
            &i.component_id
        }
    )?;
    if !i.pact_key.is_empty() {
        writeln!(out, "key        {}", i.pact_key)?;
    }
    writeln!(
        out,
        "status     {}  severity {}  attribution {}",
        i.status.as_str(),
        i.severity,
        i.attribution.as_str()
    )?;
    writeln!(out, "count      {}", i.count)?;
    writeln!(out, "first seen {}", i.first_seen)?;
    writeln!(out, "last seen  {}", i.last_seen)?;
    if !i.source.is_empty() {
        writeln!(out, "source     {}", i.source)?;
    }
    writeln!(out, "spend      ${:.4}", v.spend_usd)?;
    if !i.resolution.is_empty() {
        writeln!(out, "resolution {}", i.resolution)?;
    }
    if let Some(t) = &v.triage {
        let verdict = match t.outcome {
            crate::store::triage::TriageOutcome::Attributed => {
                format!("{} (confidence {:.2})", t.component_id, t.confidence)
            }
            crate::store::triage::TriageOutcome::NoMatch => "no registered component".into(),
            _ => "no answer".into(),
        };
        writeln!(out, "triage     {verdict} at {}: {}", t.at, t.reasoning)?;
    }
    if let Some(c) = &v.ci {
        writeln!(
            out,
            "ci         {} {} · {} · {} · {}{}",
            c.provider,
            c.repository,
            c.workflow,
            c.job,
            c.step,
            if c.flaky { "  FLAKY" } else { "" }
        )?;
        if c.flaky {
            writeln!(out, "flaky      {}", c.flaky_reason)?;
        }
        if !c.log_error.is_empty() {
            writeln!(out, "log        not read: {}", c.log_error)?;
        }
        for o in &c.occurrences {
            writeln!(
                out,
                "  failed   {} on {} attempt {} at {}: {}",
                o.commit.get(..12).unwrap_or(&o.commit),
                o.branch,
                o.attempt,
                o.at,
                o.run_url
            )?;
        }
    }
    if let Some(f) = &v.forge {
        if let Some(p) = &f.pull_request {
            writeln!(out, "pull req   #{} {} ({})", p.number, p.url, p.state)?;
        }
        for p in f.earlier_pull_requests.iter().rev() {
            writeln!(out, "earlier    #{} {} ({})", p.number, p.url, p.state)?;
        }
        if let Some(i) = &f.issue {
            writeln!(out, "issue      #{} {} ({})", i.number, i.url, i.state)?;
        }
        if !f.error.is_empty() {
            writeln!(out, "forge      {}", f.error)?;
        }
    }
    writeln!(out, "normalised {}", i.normalized)?;
    writeln!(out, "sample     {}", i.sample)?;
    writeln!(out, "\ntimeline")?;
    if v.timeline.is_empty() {
        writeln!(out, "  (no events kept)")?;
    }
    for e in &v.timeline {
        let fix = if e.fix_id.is_empty() {
            String::new()
        } else {
            format!("  fix {}", e.fix_id)
        };
        let why = match (e.data["guardrail"].as_str(), e.data["reason"].as_str()) {
            (Some(g), Some(r)) if e.kind == crate::store::EventKind::FixRefused => {
                format!("  {g}: {r}")
            }
            _ => String::new(),
        };
        writeln!(
            out,
            "  {}  {}{fix}{why}",
            e.at.strftime("%Y-%m-%dT%H:%M:%S"),
            e.kind.as_str()
        )?;
    }
    writeln!(out, "\nfixes")?;
    if v.fixes.is_empty() {
        writeln!(out, "  (none)")?;
    }
    for f in &v.fixes {
        writeln!(out, "  {}", super::report::fix_line(f))?;
        if !f.error.is_empty() {
            writeln!(out, "      {}", f.error)?;
        }
    }
    Ok(())
}
