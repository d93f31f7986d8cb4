//! `sentinel gc [--dry-run]`: applies the `retention:` limits to the store now, prints what
//! it removes, then compacts the file when at least `retention.compact_free_percent` of it
//! is free. It opens the store for writing, so it is refused while a daemon runs (the
//! daemon applies retention itself every `retention.interval_seconds`). `--dry-run` does
//! the whole run in one transaction that is dropped: it prints exactly what would go and
//! changes nothing.

use std::io::Write;

use anyhow::Context;

use super::CliError;
use crate::config::Config;
use crate::store::Store;
use crate::store::space::Compacted;

/// `sentinel gc`.
#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// Print what would be removed; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
    /// Do not compact the file, whatever is free.
    #[arg(long)]
    no_compact: bool,
    /// The time retention is applied at (RFC 3339; default now): for tests and rehearsals.
    #[arg(long, value_name = "TIME", hide = true)]
    now: Option<jiff::Timestamp>,
}

/// Runs `sentinel gc`.
///
/// # Errors
///
/// [`CliError`] when the store cannot be opened (in use by a daemon, corrupt) or written.
pub fn run(config: &Config, args: GcArgs) -> Result<u8, CliError> {
    let db = config.db_path();
    if !db.exists() {
        return Err(CliError::Usage(format!(
            "no store at {}: nothing to collect",
            db.display()
        )));
    }
    let store = Store::open(&db)?;
    let now = args.now.unwrap_or_else(jiff::Timestamp::now);
    let reports = config.state().reports();
    let report = if args.dry_run {
        store.retain(&config.retention.policy(), now, true)?
    } else {
        crate::lifecycle::run_retention(&store, &config.retention, &reports, now)?
    };
    let space = if args.dry_run {
        store.space()?
    } else {
        store.measure_space()?
    };
    let due = space.free_percent() >= config.retention.compact_free_percent;
    let compacted = if !args.dry_run && !args.no_compact && due {
        Some(store.compact()?)
    } else {
        None
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        let doc = serde_json::json!({
            "dry_run": args.dry_run,
            "removed": report,
            "store_bytes": space.file_bytes,
            "store_free_bytes": space.free_bytes,
            "compacted": compacted,
            "store_bytes_after": store.file_bytes(),
        });
        writeln!(out, "{doc:#}").context("stdout")?;
        return Ok(0);
    }
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for id in &report.incident_ids {
        writeln!(out, "{verb} incident {id}").context("stdout")?;
    }
    writeln!(
        out,
        "{verb} {} incidents, {} fixes, {} fix jobs, {} events; {} spend-log rows folded; trend \
         rows of {} incidents swept",
        report.incidents,
        report.fixes,
        report.jobs,
        report.events,
        report.spend_rows,
        report.trend_incidents
    )
    .context("stdout")?;
    writeln!(
        out,
        "store {} bytes, {} free ({}%{})",
        space.file_bytes,
        space.free_bytes,
        space.free_percent(),
        if args.dry_run {
            ", as last measured"
        } else {
            ""
        }
    )
    .context("stdout")?;
    match compacted {
        Some(Compacted::Done { before, after }) => {
            writeln!(out, "compacted: {before} → {after} bytes").context("stdout")?;
        }
        Some(Compacted::Busy) => {
            writeln!(out, "not compacted: a transaction was in progress").context("stdout")?;
        }
        None if !args.dry_run && !args.no_compact => writeln!(
            out,
            "not compacted: less than {}% free",
            config.retention.compact_free_percent
        )
        .context("stdout")?,
        None => {}
    }
    Ok(0)
}
