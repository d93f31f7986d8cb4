//! `sentinel import-reference DIR`: brings the Python reference's state directory (its
//! `.sentinel/`, SPEC §2) into this store — for users coming from it.
//!
//! | reference file | becomes |
//! |---|---|
//! | `manifest.json` | components added to ours (an id we already have keeps ours) |
//! | `monitoring/incidents.json` | incidents: the representative line goes through the same fingerprinting and attribution as a scanned line, with the reference's count, first and last seen, status and resolution |
//! | `monitoring/budget.json` `spend_log` | spend log entries (time, incident, amount) |
//!
//! Every file is read and checked before anything is written; a malformed one is named (with
//! serde's line and column) and nothing is imported. The store is written in one transaction.
//! Idempotent: each imported incident and spend entry leaves a mark (a source position
//! `import-reference:…`) in that same transaction, and a second run skips what is marked.
//! The store must not be in use by a daemon (stop it first: the import is one-off).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, anyhow};
use serde::Deserialize;

use super::CliError;
use crate::aggregate::LineAggregator;
use crate::attribute::{LiveRules, Manifest};
use crate::config::Config;
use crate::store::events::EventKind;
use crate::store::{IncidentStatus, Store, StoreError};

/// The prefix of the marks an import leaves in the source positions.
const MARK: &str = "import-reference:";

/// `sentinel import-reference`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The reference's state directory (its `.sentinel/`, holding `manifest.json` and
    /// `monitoring/`).
    dir: PathBuf,
    /// Print what was imported as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Deserialize)]
struct RefIncidents {
    incidents: BTreeMap<String, RefIncident>,
}

#[derive(Debug, Deserialize)]
struct RefIncident {
    id: String,
    status: String,
    #[serde(default)]
    resolution: String,
    fingerprint: RefFingerprint,
}

#[derive(Debug, Deserialize)]
struct RefFingerprint {
    first_seen: String,
    last_seen: String,
    count: u64,
    representative: RefSignal,
}

#[derive(Debug, Deserialize)]
struct RefSignal {
    raw_text: String,
    #[serde(default)]
    source: String,
}

#[derive(Debug, Deserialize)]
struct RefBudget {
    #[serde(default)]
    spend_log: Vec<RefSpend>,
}

#[derive(Debug, Deserialize)]
struct RefSpend {
    timestamp: String,
    incident_id: String,
    amount: f64,
}

/// What an import did.
#[derive(Debug, Default, serde::Serialize)]
struct Imported {
    components_added: usize,
    components_kept: usize,
    incidents_imported: usize,
    incidents_skipped: usize,
    spend_entries_imported: usize,
    spend_usd_imported: f64,
}

/// The reference's timestamps are naive ISO 8601 (`2026-12-06T04:45:26.743209`, its local
/// time, in practice UTC on servers); RFC 3339 with an offset is taken as well.
fn timestamp(s: &str, file: &Path, what: &str) -> Result<jiff::Timestamp, CliError> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    s.parse::<jiff::civil::DateTime>()
        .ok()
        .and_then(|dt| jiff::tz::TimeZone::UTC.to_timestamp(dt).ok())
        .ok_or_else(|| {
            CliError::Other(anyhow!(
                "{}: {what}: {s:?} is not a timestamp",
                file.display()
            ))
        })
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, CliError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CliError::Other(anyhow!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        CliError::Other(anyhow!(
            "{}: not the reference's shape: {e}",
            path.display()
        ))
    })
}

/// Runs `sentinel import-reference`.
///
/// # Errors
///
/// [`CliError`]: a missing directory (usage), a malformed file (named), a store in use.
pub fn run(config: &Config, args: ImportArgs) -> Result<u8, CliError> {
    let dir = &args.dir;
    if !dir.is_dir() {
        return Err(CliError::Usage(format!(
            "import-reference: {} is not a directory (the reference's .sentinel/)",
            dir.display()
        )));
    }
    // Read and check everything first: nothing is half-imported.
    let manifest_path = dir.join("manifest.json");
    let theirs = if manifest_path.exists() {
        Some(Manifest::load(&manifest_path)?)
    } else {
        None
    };
    let incidents_path = dir.join("monitoring/incidents.json");
    let incidents: Vec<RefIncident> = read_json::<RefIncidents>(&incidents_path)?
        .map(|r| r.incidents.into_values().collect())
        .unwrap_or_default();
    let budget_path = dir.join("monitoring/budget.json");
    let spend = read_json::<RefBudget>(&budget_path)?
        .map(|b| b.spend_log)
        .unwrap_or_default();
    if theirs.is_none() && incidents.is_empty() && spend.is_empty() {
        return Err(CliError::Usage(format!(
            "import-reference: {} holds no manifest.json nor monitoring/ files",
            dir.display()
        )));
    }
    let mut parsed = Vec::with_capacity(incidents.len());
    for inc in &incidents {
        let status: IncidentStatus = serde_json::from_value(serde_json::Value::String(
            inc.status.clone(),
        ))
        .map_err(|_| {
            CliError::Other(anyhow!(
                "{}: incident {}: unknown status {:?}",
                incidents_path.display(),
                inc.id,
                inc.status
            ))
        })?;
        let first = timestamp(&inc.fingerprint.first_seen, &incidents_path, "first_seen")?;
        let last = timestamp(&inc.fingerprint.last_seen, &incidents_path, "last_seen")?;
        parsed.push((inc, status, first, last.max(first)));
    }
    let mut spend_rows = Vec::with_capacity(spend.len());
    for (n, s) in spend.iter().enumerate() {
        if !s.amount.is_finite() || s.amount < 0.0 {
            return Err(CliError::Other(anyhow!(
                "{}: spend_log[{n}]: amount {} is not a non-negative number",
                budget_path.display(),
                s.amount
            )));
        }
        let at = timestamp(&s.timestamp, &budget_path, "spend_log timestamp")?;
        spend_rows.push((n, s, at));
    }

    config.state().create()?;
    let mut done = Imported::default();
    // The manifest (under its lock): theirs adds to ours.
    if let Some(theirs) = &theirs {
        Manifest::update(&config.manifest_path(), |ours| {
            for (id, entry) in &theirs.components {
                if ours.get(id).is_some() {
                    done.components_kept += 1;
                } else {
                    ours.insert(entry.clone());
                    done.components_added += 1;
                }
            }
            Ok::<_, std::convert::Infallible>(())
        })?
        .unwrap_or_else(|never| match never {});
    }
    let store = Store::open(&config.db_path()).map_err(|e| match e {
        e @ StoreError::InUse { .. } => CliError::Other(anyhow!(
            "{e}\nStop the daemon for the import (it is one-off), then start it again."
        )),
        e => CliError::Other(e.into()),
    })?;
    let (rules, warnings) = crate::attribute::ledger::load_rules(config)?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let rules = LiveRules::new(rules);
    rules.set_grouping_rules(
        crate::scan::rules::Rules::new(&config.grouping.rules).map_err(anyhow::Error::msg)?,
    );
    let marks: std::collections::HashMap<String, Vec<u8>> =
        store.source_positions(MARK)?.into_iter().collect();
    let mut ids: BTreeMap<String, String> = marks
        .iter()
        .filter_map(|(k, v)| {
            let theirs = k.strip_prefix(MARK)?.strip_prefix("incident:")?;
            Some((theirs.to_string(), String::from_utf8_lossy(v).into_owned()))
        })
        .collect();
    let mut txn = store.begin_write()?;
    // The marks, committed with what they mark (written last, by one more batch).
    let mut marked = crate::store::IngestBatch::new();
    let source: Arc<str> = Arc::from("import-reference");
    for (inc, status, first, last) in parsed {
        let mark = format!("{MARK}incident:{}", inc.id);
        if marks.contains_key(&mark) {
            done.incidents_skipped += 1;
            continue;
        }
        let mut agg = LineAggregator::new(&rules, source.clone());
        agg.add_text(inc.fingerprint.representative.raw_text.as_bytes(), None);
        let mut batch = agg.take_batch();
        let count = inc.fingerprint.count.max(1);
        for d in batch.incidents.values_mut() {
            d.count = count;
        }
        for n in batch.key_counts.values_mut() {
            *n = count;
        }
        batch.totals.clear();
        let Some(fp) = batch.incidents.keys().next().copied() else {
            continue;
        };
        // Applied as of its last sighting (the store keeps last-seen with the count); the
        // first sighting goes into the record below.
        txn.apply(&batch, last)?;
        let Some(mut stored) = txn.incident_by_fingerprint(fp.0)? else {
            continue;
        };
        stored.first_seen = stored.first_seen.min(first);
        stored.status = status;
        stored.resolution = inc.resolution.clone();
        if !inc.fingerprint.representative.source.is_empty() {
            stored.source = format!(
                "import-reference ({})",
                inc.fingerprint.representative.source
            );
        }
        let kind = match status {
            IncidentStatus::Resolved => EventKind::IncidentResolved,
            IncidentStatus::Escalated => EventKind::IncidentEscalated,
            _ => EventKind::IncidentUpdated,
        };
        txn.update_incident(&stored, kind, last)?;
        marked
            .source_positions
            .insert(mark, stored.id.as_bytes().to_vec());
        ids.insert(inc.id.clone(), stored.id.clone());
        done.incidents_imported += 1;
    }
    for (n, s, at) in spend_rows {
        let mark = format!("{MARK}spend:{n}:{}", s.timestamp);
        if marks.contains_key(&mark) {
            continue;
        }
        let ours = ids
            .get(&s.incident_id)
            .cloned()
            .unwrap_or_else(|| s.incident_id.clone());
        txn.record_spend(&ours, crate::fix::budget::micro_usd(s.amount), at)?;
        marked.source_positions.insert(mark, b"1".to_vec());
        done.spend_entries_imported += 1;
        done.spend_usd_imported += s.amount;
    }
    if !marked.is_empty() {
        txn.apply(&marked, jiff::Timestamp::now())?;
    }
    txn.commit()?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&done).context("JSON")?
        )
        .context("stdout")?;
    } else {
        writeln!(
            out,
            "Imported from {}: {} component(s) added ({} already registered), {} incident(s) \
             ({} imported before), {} spend entr{} (${:.2})",
            dir.display(),
            done.components_added,
            done.components_kept,
            done.incidents_imported,
            done.incidents_skipped,
            done.spend_entries_imported,
            if done.spend_entries_imported == 1 {
                "y"
            } else {
                "ies"
            },
            done.spend_usd_imported
        )
        .context("stdout")?;
    }
    Ok(0)
}
