//! `sentinel backup DEST` and `sentinel restore SRC`.
//!
//! `backup` writes a consistent copy of the store into the directory DEST (created; it must
//! not hold a store already): `DEST/sentinel.redb`, copied from ONE read transaction (see
//! `store/backup.rs`), so it works while a daemon writes, and the manifest beside it. The
//! copy is a state directory: `report`, `status` and `serve` read it with `--state DEST`,
//! read-only.
//!
//! `restore SRC` (a backup directory, or a backup's `sentinel.redb`) replaces the store of
//! the configured state directory with a copy of it, keeping the replaced file as
//! `sentinel.redb.pre-restore`; it is refused while a daemon runs. The ingest log is left
//! as it is: records acknowledged after the backup's transaction that it still holds are
//! applied to the restored store at the next start.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::CliError;
use crate::config::Config;
use crate::state_dir::StateDir;
use crate::store::Store;

/// `sentinel backup`.
#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// The directory to write the copy into (created).
    dest: PathBuf,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
}

/// `sentinel restore`.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The backup: a directory written by `sentinel backup`, or its `sentinel.redb`.
    src: PathBuf,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
}

/// Runs `sentinel backup`.
///
/// # Errors
///
/// [`CliError`] when there is no store, DEST holds one already, or a file cannot be written.
pub fn run_backup(config: &Config, args: BackupArgs) -> Result<u8, CliError> {
    let db = config.db_path();
    let Some(store) = Store::open_read_only(&db)? else {
        return Err(CliError::Usage(format!(
            "no store at {}: nothing to back up",
            db.display()
        )));
    };
    let dest = StateDir::new(&args.dest);
    if dest.store().exists() {
        return Err(CliError::Usage(format!(
            "{} already holds a store: a backup never overwrites one",
            dest.store().display()
        )));
    }
    std::fs::create_dir_all(&args.dest)
        .with_context(|| format!("cannot create {}", args.dest.display()))?;
    let summary = store.backup(&dest.store())?;
    // The manifest names the components the incidents are attributed to.
    let manifest = config.manifest_path();
    if manifest.exists() {
        std::fs::copy(&manifest, dest.manifest())
            .with_context(|| format!("cannot copy {}", manifest.display()))?;
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{:#}", serde_json::json!(summary)).context("stdout")?;
    } else {
        writeln!(
            out,
            "backed up {} rows ({} incidents) to {} ({} bytes)",
            summary.rows,
            summary.incidents(),
            summary.path.display(),
            summary.bytes
        )
        .context("stdout")?;
    }
    Ok(0)
}

/// Runs `sentinel restore`.
///
/// # Errors
///
/// [`CliError`] while a daemon runs, when SRC is not a readable backup, or a file cannot be
/// written.
pub fn run_restore(config: &Config, args: RestoreArgs) -> Result<u8, CliError> {
    let src = if args.src.is_dir() {
        StateDir::new(&args.src).store()
    } else {
        args.src.clone()
    };
    if !src.exists() {
        return Err(CliError::Usage(format!("no backup at {}", src.display())));
    }
    let state = config.state();
    if same_file(&src, &state.store()) {
        return Err(CliError::Usage(format!(
            "{} is the store itself",
            src.display()
        )));
    }
    state.create()?;
    // The store is held open exclusively while it is replaced: a daemon running on it (or
    // any other writer) makes this fail with its name.
    let summary = crate::store::backup::restore(&src, &state.store())?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{:#}", serde_json::json!(summary)).context("stdout")?;
    } else {
        writeln!(
            out,
            "restored {} rows ({} incidents) from {} into {}",
            summary.rows,
            summary.incidents(),
            src.display(),
            summary.path.display()
        )
        .context("stdout")?;
    }
    Ok(0)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The storage figures `status` shows (None when there is no store or it cannot be read).
pub(crate) fn storage_facts(config: &Config) -> Option<crate::lifecycle::StoreFacts> {
    let store = Store::open_read_only(&config.db_path()).ok()??;
    crate::lifecycle::store_facts(&store).ok()
}

/// Writes the `store` lines of `status`.
pub(crate) fn write_storage(
    out: &mut impl Write,
    facts: &Option<crate::lifecycle::StoreFacts>,
) -> std::io::Result<()> {
    let Some(f) = facts else {
        return writeln!(out, "store      none");
    };
    writeln!(
        out,
        "store      {} bytes, {} free{}",
        f.store_bytes,
        f.store_free_bytes,
        f.free_measured_at
            .as_ref()
            .map_or(String::new(), |at| format!(" (measured {at})"))
    )?;
    match &f.last_retention {
        Some(l) => writeln!(
            out,
            "retention  last run {}: {} incidents, {} fixes, {} jobs removed, {} spend rows folded",
            l.at, l.removed.incidents, l.removed.fixes, l.removed.jobs, l.removed.spend_rows
        ),
        None => writeln!(out, "retention  never run"),
    }
}
