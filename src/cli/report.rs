//! `sentinel report`: recent incidents from the store, newest first.
//!
//! The text format is the reference's (SPEC §10):
//! `  <mark> <id>  <component or unknown, padded to 20>  $<spend>  <status>  <first seen>`,
//! followed by the incident's severity (a column the reference did not have, added last so
//! scripts reading the reference's columns keep working),
//! with `[OK]` for resolved, `[!!]` for escalated and `[..]` otherwise. `--json` prints the
//! incidents as a JSON array. The store is opened read-only, so this works while a daemon
//! writes it. `--status` (a status or `active`), `--component` and `--severity` filter, as
//! `GET /incidents` does, through the store's secondary indexes: a filtered report costs
//! what `--limit` incidents cost, whatever the store holds.

use std::io::Write;

use anyhow::Context;

use super::CliError;
use crate::attribute::Severity;
use crate::config::Config;
use crate::store::{IncidentFilter, IncidentStatus, StatusFilter, Store};

/// `sentinel report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// How many incidents to show.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Only incidents in this status (`active`: not resolved or escalated).
    #[arg(long, value_parser = parse_status)]
    status: Option<StatusFilter>,
    /// Only incidents of this component (its id, exactly).
    #[arg(long)]
    component: Option<String>,
    /// Only incidents of this severity.
    #[arg(long, value_parser = parse_severity)]
    severity: Option<Severity>,
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

pub(crate) fn run(config: &Config, args: ReportArgs) -> Result<u8, CliError> {
    let store = Store::open_read_only(&config.db_path()).context("opening the store")?;
    let filter = IncidentFilter {
        status: args.status,
        component: args.component,
        severity: args.severity,
    };
    let incidents = match &store {
        Some(s) => s
            .find_incidents(&filter, args.limit)
            .context("reading incidents")?,
        None => Vec::new(),
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &incidents).context("writing JSON")?;
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
    for inc in &incidents {
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
            0.0,
            inc.status.as_str(),
            inc.severity
        )
        .context("stdout")?;
    }
    Ok(0)
}
