//! `sentinel report`: recent incidents from the store, newest first.
//!
//! The text format is the reference's (SPEC §10):
//! `  <mark> <id>  <component or unknown, padded to 20>  $<spend>  <status>  <first seen>`,
//! followed by the incident's severity (a column the reference did not have, added last so
//! scripts reading the reference's columns keep working),
//! with `[OK]` for resolved, `[!!]` for escalated and `[..]` otherwise. `<spend>` is what the
//! LLM really cost for the incident (fixes and triage, from the spend log). Under each
//! incident with fix attempts, one line per attempt (status, branch and commit); then a
//! **fix history** section: the newest fixes of any incident. `--json` prints the incidents
//! as a JSON array, each with its `spend_usd` and its `fixes` (id, status, branch, commit,
//! spend, when). The store is opened read-only, so this works while a daemon writes it.
//! `--status` (a status or `active`), `--component` and `--severity` filter, as
//! `GET /incidents` does, through the store's secondary indexes: a filtered report costs
//! what `--limit` incidents cost, whatever the store holds.

use std::collections::HashMap;
use std::io::Write;

use anyhow::Context;
use serde::Serialize;

use super::CliError;
use crate::attribute::Severity;
use crate::config::Config;
use crate::store::{FixResult, Incident, IncidentFilter, IncidentStatus, StatusFilter, Store};

/// `sentinel report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// How many incidents to show.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// How many fixes the fix history shows.
    #[arg(long, default_value_t = 10)]
    fixes: usize,
    /// Only incidents in this status (`active`: not resolved or escalated).
    #[arg(long, value_parser = parse_status)]
    status: Option<StatusFilter>,
    /// Only incidents of this component (its id, exactly).
    #[arg(long)]
    component: Option<String>,
    /// Only incidents of this severity.
    #[arg(long, value_parser = parse_severity)]
    severity: Option<Severity>,
    /// Read this state directory instead of the configured one (e.g. a `sentinel backup`).
    #[arg(long, value_name = "DIR")]
    state: Option<std::path::PathBuf>,
    /// Report for every node of the cluster (`cluster` set): asks the local daemon's API,
    /// which asks the other nodes over NATS; nodes that did not answer are named.
    #[arg(long, conflicts_with = "state")]
    cluster: bool,
}

fn parse_status(v: &str) -> Result<StatusFilter, String> {
    if v == "active" {
        return Ok(StatusFilter::Active);
    }
    IncidentStatus::from_name(v)
        .map(StatusFilter::Is)
        .ok_or_else(|| {
            let names: Vec<&str> = IncidentStatus::ALL.iter().map(|s| s.as_str()).collect();
            format!("not one of active, {}", names.join(", "))
        })
}

fn parse_severity(v: &str) -> Result<Severity, String> {
    v.parse()
        .map_err(|_| "not one of low, medium, high, critical, compliance".to_string())
}

/// One incident as `report --json` prints it: the incident's fields, its spend and its
/// fix attempts.
#[derive(Debug, Serialize)]
struct ReportRow<'a> {
    #[serde(flatten)]
    incident: &'a Incident,
    spend_usd: f64,
    fixes: Vec<FixSummary<'a>>,
    /// The guardrails' refusals on record (`fix_refused` events), oldest first.
    refusals: Vec<crate::store::Refusal>,
    /// A CI failure: `flaky`, and where it failed (repository, workflow, job, step, the
    /// latest occurrences).
    #[serde(skip_serializing_if = "Option::is_none")]
    ci: Option<crate::store::ci::CiRecord>,
    /// Whether it is a flaky CI failure (never sent to the fixer).
    flaky: bool,
    /// The pull request and issue opened for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    forge: Option<crate::store::ci::ForgeLinks>,
}

/// A fix attempt in a report.
#[derive(Debug, Serialize)]
struct FixSummary<'a> {
    id: &'a str,
    status: &'static str,
    branch: &'a str,
    commit: &'a str,
    merged: bool,
    shadow: bool,
    spend_usd: f64,
    started_at: Option<String>,
    error: &'a str,
}

impl<'a> FixSummary<'a> {
    fn of(f: &'a FixResult) -> FixSummary<'a> {
        FixSummary {
            id: &f.id,
            status: f.status.as_str(),
            branch: &f.branch,
            commit: &f.git_fix_ref,
            merged: f.merged,
            shadow: f.shadow,
            spend_usd: f.spend_usd,
            started_at: f.started_at.map(|t| t.to_string()),
            error: &f.error,
        }
    }
}

/// The guardrails' refusals of incident `id` on its timeline, oldest first (the timeline
/// keeps the newest events; a refusal repeated per held job is shown once).
fn refusals_of(store: &Store, id: &str) -> Result<Vec<crate::store::Refusal>, CliError> {
    let mut out: Vec<crate::store::Refusal> = Vec::new();
    for e in store.incident_events(id, 200).context("reading events")? {
        if e.kind != crate::store::EventKind::FixRefused {
            continue;
        }
        let field = |k: &str| e.data[k].as_str().unwrap_or_default().to_string();
        let r = crate::store::Refusal::new(&field("guardrail"), field("reason"));
        if !out.contains(&r) {
            out.push(r);
        }
    }
    Ok(out)
}

/// What the LLM cost per incident (micro-USD), summed over the whole spend log.
pub(crate) fn spend_by_incident(store: &Store) -> Result<HashMap<String, u64>, CliError> {
    let mut out: HashMap<String, u64> = HashMap::new();
    for (_, incident, micros) in store
        .spend_since(jiff::Timestamp::UNIX_EPOCH)
        .context("reading the spend log")?
    {
        *out.entry(incident).or_default() += micros;
    }
    Ok(out)
}

/// One fix in a line: id, status, component, spend, when, branch@commit.
pub(crate) fn fix_line(f: &FixResult) -> String {
    let when = f.started_at.map_or_else(
        || "-".into(),
        |t| t.strftime("%Y-%m-%dT%H:%M:%S").to_string(),
    );
    let commit = f.git_fix_ref.get(..12).unwrap_or(&f.git_fix_ref);
    let branch = match (f.branch.as_str(), commit) {
        ("", _) => String::new(),
        (b, "") => b.to_string(),
        (b, c) => format!("{b}@{c}"),
    };
    let component = if f.component_id.is_empty() {
        "unknown"
    } else {
        &f.component_id
    };
    format!(
        "{:<36}  {:<17}  {component:<20}  ${:.2}  {when}  {branch}",
        f.id,
        f.status.as_str(),
        f.spend_usd,
    )
}

pub(crate) fn run(config: &Config, args: ReportArgs) -> Result<u8, CliError> {
    if args.cluster {
        #[cfg(feature = "daemon")]
        return cluster_report(config, &args);
        #[cfg(not(feature = "daemon"))]
        return Err(CliError::Other(anyhow::anyhow!(
            "report --cluster needs the daemon feature"
        )));
    }
    let config = &super::with_state(config, args.state.as_deref());
    let store = Store::open_read_only(&config.db_path()).context("opening the store")?;
    let filter = IncidentFilter {
        status: args.status,
        component: args.component,
        severity: args.severity,
    };
    let (incidents, spend, fixes, history, refusals, extras) = match &store {
        Some(s) => {
            let incidents = s
                .find_incidents(&filter, args.limit)
                .context("reading incidents")?;
            let mut fixes = Vec::with_capacity(incidents.len());
            let mut refusals = Vec::with_capacity(incidents.len());
            let mut extras = Vec::with_capacity(incidents.len());
            for inc in &incidents {
                fixes.push(s.fixes_of(&inc.id).context("reading fixes")?);
                refusals.push(refusals_of(s, &inc.id)?);
                let fp = inc.fingerprint.0;
                extras.push((
                    s.ci_record(fp).context("reading CI records")?,
                    s.forge_links(fp).context("reading forge links")?,
                ));
            }
            let history = s.fixes(args.fixes).context("reading fixes")?;
            (
                incidents,
                spend_by_incident(s)?,
                fixes,
                history,
                refusals,
                extras,
            )
        }
        None => Default::default(),
    };
    let spend_of = |inc: &Incident| spend.get(&inc.id).copied().unwrap_or(0) as f64 / 1e6;
    let mut out = std::io::stdout().lock();
    if args.json {
        let rows: Vec<ReportRow<'_>> = incidents
            .iter()
            .zip(&fixes)
            .zip(&refusals)
            .zip(&extras)
            .map(|(((inc, fixes), refusals), (ci, forge))| ReportRow {
                incident: inc,
                spend_usd: spend_of(inc),
                fixes: fixes.iter().map(FixSummary::of).collect(),
                refusals: refusals.clone(),
                flaky: ci.as_ref().is_some_and(|c| c.flaky),
                ci: ci.clone(),
                forge: forge.clone(),
            })
            .collect();
        serde_json::to_writer_pretty(&mut out, &rows).context("writing JSON")?;
        writeln!(out).context("stdout")?;
        return Ok(0);
    }
    if incidents.is_empty() {
        let none = if filter.is_empty() {
            "No incidents recorded."
        } else {
            "No incident matches."
        };
        writeln!(out, "{none}").context("stdout")?;
        return Ok(0);
    }
    for (((inc, fixes), refusals), (ci, forge)) in
        incidents.iter().zip(&fixes).zip(&refusals).zip(&extras)
    {
        let mark = match inc.status {
            IncidentStatus::Resolved => "[OK]",
            IncidentStatus::Escalated => "[!!]",
            _ => "[..]",
        };
        let component = if inc.component_id.is_empty() {
            "unknown"
        } else {
            &inc.component_id
        };
        let first_seen = inc.first_seen.strftime("%Y-%m-%dT%H:%M:%S").to_string();
        writeln!(
            out,
            "  {mark} {}  {component:<20}  ${:.2}  {}  {first_seen}  {}",
            inc.id,
            spend_of(inc),
            inc.status.as_str(),
            inc.severity
        )
        .context("stdout")?;
        if let Some(o) = &inc.overflow {
            // A key's overflow incident: its count is exact, its fingerprints folded.
            writeln!(
                out,
                "        HIGH CARDINALITY: {} new fingerprints of {} folded here ({} lines); {}",
                o.folded_fingerprints,
                if o.key.is_empty() {
                    "unattributed lines"
                } else {
                    o.key.as_str()
                },
                inc.count,
                o.hint
            )
            .context("stdout")?;
        }
        for f in fixes {
            let commit = f.git_fix_ref.get(..12).unwrap_or(&f.git_fix_ref);
            let at = match (f.branch.as_str(), commit) {
                ("", _) => String::new(),
                (b, "") => format!("  {b}"),
                (b, c) => format!("  {b}@{c}"),
            };
            let shadow = if f.shadow { "  (shadow)" } else { "" };
            writeln!(
                out,
                "        fix {}  {}{at}{shadow}",
                f.id,
                f.status.as_str()
            )
            .context("stdout")?;
        }
        for r in refusals {
            writeln!(out, "        refused by {}: {}", r.guardrail, r.reason).context("stdout")?;
        }
        if let Some(c) = ci {
            writeln!(
                out,
                "        CI {}: {} · {} · {}{}",
                c.repository,
                c.workflow,
                c.job,
                c.step,
                if c.flaky {
                    format!("  FLAKY ({})", c.flaky_reason)
                } else {
                    String::new()
                }
            )
            .context("stdout")?;
            if let Some(o) = c.occurrences.last() {
                writeln!(
                    out,
                    "        last failed at {} on {} (attempt {}): {}",
                    o.commit.get(..12).unwrap_or(&o.commit),
                    o.branch,
                    o.attempt,
                    o.run_url
                )
                .context("stdout")?;
            }
            if !c.log_error.is_empty() {
                writeln!(out, "        log not read: {}", c.log_error).context("stdout")?;
            }
        }
        if let Some(f) = forge {
            if let Some(p) = &f.pull_request {
                writeln!(
                    out,
                    "        pull request #{} ({}): {}",
                    p.number, p.state, p.url
                )
                .context("stdout")?;
            }
            for p in f.earlier_pull_requests.iter().rev() {
                writeln!(
                    out,
                    "        earlier pull request #{} ({}): {}",
                    p.number, p.state, p.url
                )
                .context("stdout")?;
            }
            if let Some(i) = &f.issue {
                writeln!(out, "        issue #{} ({}): {}", i.number, i.state, i.url)
                    .context("stdout")?;
            }
            if !f.error.is_empty() {
                writeln!(out, "        forge: {}", f.error).context("stdout")?;
            }
        }
    }
    if !history.is_empty() {
        writeln!(out, "\nFix history (newest first)").context("stdout")?;
        for f in &history {
            writeln!(out, "  {}", fix_line(f)).context("stdout")?;
        }
    }
    Ok(0)
}

/// `report --cluster`: the incidents of every node through the local daemon's API (which
/// merges the nodes' pages by last seen), a line per node that did not answer.
#[cfg(feature = "daemon")]
fn cluster_report(config: &Config, args: &ReportArgs) -> Result<u8, CliError> {
    if config.cluster.is_none() {
        return Err(CliError::Other(anyhow::anyhow!(
            "report --cluster: this configuration has no `cluster` section (cluster: {{nats: URL}})"
        )));
    }
    let Some(client) = super::client::DaemonClient::find(config)? else {
        return Err(CliError::Other(anyhow::anyhow!(
            "report --cluster asks the local daemon's API, and no daemon runs for {}",
            config.state_dir.display()
        )));
    };
    let mut query = vec![format!("limit={}", args.limit.clamp(1, 1000))];
    if let Some(s) = &args.status {
        query.push(format!(
            "status={}",
            match s {
                StatusFilter::Active => "active",
                StatusFilter::Is(st) => st.as_str(),
            }
        ));
    }
    if let Some(c) = &args.component {
        query.push(format!("component={c}"));
    }
    if let Some(s) = &args.severity {
        query.push(format!("severity={}", s.as_str()));
    }
    let page = client.get(&format!("/incidents?{}", query.join("&")))?;
    let metrics = client.get("/metrics.json")?;
    let mut missing: Vec<String> = Vec::new();
    for v in [&page["missing_nodes"], &metrics["missing_nodes"]] {
        for n in v
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_str())
        {
            if !missing.iter().any(|m| m == n) {
                missing.push(n.to_string());
            }
        }
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        let doc = serde_json::json!({
            "incidents": page["incidents"],
            "nodes": page["nodes"],
            "missing_nodes": missing,
            "metrics": metrics,
        });
        serde_json::to_writer_pretty(&mut out, &doc).context("writing JSON")?;
        writeln!(out).context("stdout")?;
        return Ok(if missing.is_empty() { 0 } else { 3 });
    }
    let nodes: Vec<&str> = page["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str())
        .collect();
    writeln!(
        out,
        "Cluster: {} node(s) answered ({}); {} incidents in all",
        nodes.len(),
        nodes.join(", "),
        metrics["total_incidents"]
    )
    .context("stdout")?;
    for n in &missing {
        writeln!(
            out,
            "  MISSING: node {n} did not answer within the timeout; its incidents are not shown"
        )
        .context("stdout")?;
    }
    let incidents: Vec<(Incident, String)> = page["incidents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| {
            let inc: Incident = serde_json::from_value(v.clone()).ok()?;
            Some((inc, v["node"].as_str().unwrap_or_default().to_string()))
        })
        .collect();
    if incidents.is_empty() {
        writeln!(out, "No incidents recorded.").context("stdout")?;
    }
    for (inc, node) in &incidents {
        let mark = match inc.status {
            IncidentStatus::Resolved => "[OK]",
            IncidentStatus::Escalated => "[!!]",
            _ => "[..]",
        };
        let component = if inc.component_id.is_empty() {
            "unknown"
        } else {
            &inc.component_id
        };
        let first_seen = inc.first_seen.strftime("%Y-%m-%dT%H:%M:%S").to_string();
        writeln!(
            out,
            "  {mark} {}  {component:<20}  {:>8}  {}  {first_seen}  {}  node={node}",
            inc.id,
            inc.count,
            inc.status.as_str(),
            inc.severity
        )
        .context("stdout")?;
    }
    // A partial view is not a clean answer: exit 3 names it to scripts.
    Ok(if missing.is_empty() { 0 } else { 3 })
}
