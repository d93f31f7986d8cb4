//! The storage lifecycle around the store: retention runs (the daemon's and `sentinel gc`'s),
//! the postmortem files of removed incidents, compaction in the daemon, and what `/metrics`,
//! `/status` and `sentinel status` show of it.
//!
//! The daemon runs retention every `retention.interval_seconds` (the first run one interval
//! after it starts) on a blocking thread, in transactions of `retention.rows_per_transaction`
//! rows (see `store/retention.rs`), then measures the file's free space. With
//! `retention.compact_window` set, it also compacts the file when, inside that window (UTC),
//! at least `compact_free_percent` of the file is free and no ingest commit happened for
//! `compact_idle_seconds`: a short exclusive window in which this process's reads and writes
//! wait (see `store/space.rs`); a transaction in progress makes it try again at the next
//! tick. Without a window, only `sentinel gc` compacts, when no daemon runs.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde::Serialize;

use crate::config::RetentionConfig;
use crate::store::retention::{META_FIXES_TOTAL, META_INCIDENTS_TOTAL, RetentionReport};
use crate::store::space::{Compacted, META_COMPACTED_US, META_FREE_MEASURED_US};
use crate::store::{Store, StoreError};

/// What the store's lifecycle looks like now (`/status`'s `storage`, `sentinel status`).
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct StoreFacts {
    /// The file's size.
    pub store_bytes: u64,
    /// Its free bytes, as last measured (0 before the first measurement).
    pub store_free_bytes: u64,
    /// When they were measured.
    pub free_measured_at: Option<String>,
    /// When the file was last compacted.
    pub compacted_at: Option<String>,
    /// Incidents removed by retention since the store was created.
    pub incidents_removed_total: u64,
    /// Fixes removed by retention since the store was created.
    pub fixes_removed_total: u64,
    /// The last retention run, if any.
    pub last_retention: Option<LastRun>,
}

/// The last retention run.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct LastRun {
    /// When it ended (RFC 3339).
    pub at: String,
    /// What it removed.
    #[serde(flatten)]
    pub removed: RetentionReport,
}

fn rfc3339(us: Option<u64>) -> Option<String> {
    us.and_then(|us| Timestamp::from_microsecond(us as i64).ok())
        .map(|t| t.to_string())
}

/// Reads the lifecycle figures (a few `meta` rows and the file's size; works read-only).
///
/// # Errors
///
/// [`StoreError`] on storage errors.
pub fn store_facts(store: &Store) -> Result<StoreFacts, StoreError> {
    let space = store.space()?;
    let last = store.last_retention()?.map(|(at, removed)| LastRun {
        at: at.to_string(),
        removed,
    });
    Ok(StoreFacts {
        store_bytes: space.file_bytes,
        store_free_bytes: space.free_bytes,
        free_measured_at: rfc3339(store.meta_value(META_FREE_MEASURED_US)?),
        compacted_at: rfc3339(store.meta_value(META_COMPACTED_US)?),
        incidents_removed_total: store.meta_value(META_INCIDENTS_TOTAL)?.unwrap_or(0),
        fixes_removed_total: store.meta_value(META_FIXES_TOTAL)?.unwrap_or(0),
        last_retention: last,
    })
}

/// The Prometheus families of [`store_facts`] (empty when the store cannot be read).
pub fn render_metrics(store: &Store) -> String {
    let Ok(f) = store_facts(store) else {
        return String::new();
    };
    let mut out = String::new();
    let last = f.last_retention.as_ref();
    let last_at = store
        .last_retention()
        .ok()
        .flatten()
        .map_or(0.0, |(at, _)| at.as_millisecond() as f64 / 1000.0);
    let families: [(&str, &str, &str, String); 8] = [
        (
            "sentinel_store_bytes",
            "gauge",
            "Size of the store's file.",
            f.store_bytes.to_string(),
        ),
        (
            "sentinel_store_free_bytes",
            "gauge",
            "Bytes of the store's file no live page uses, as last measured.",
            f.store_free_bytes.to_string(),
        ),
        (
            "sentinel_retention_last_run_timestamp_seconds",
            "gauge",
            "When the last retention run ended (0: never).",
            last_at.to_string(),
        ),
        (
            "sentinel_retention_last_removed_incidents",
            "gauge",
            "Incidents the last retention run removed.",
            last.map_or(0, |l| l.removed.incidents).to_string(),
        ),
        (
            "sentinel_retention_last_removed_fixes",
            "gauge",
            "Fix results the last retention run removed.",
            last.map_or(0, |l| l.removed.fixes).to_string(),
        ),
        (
            "sentinel_retention_last_folded_spend_rows",
            "gauge",
            "Spend-log rows the last retention run folded away.",
            last.map_or(0, |l| l.removed.spend_rows).to_string(),
        ),
        (
            "sentinel_retention_removed_incidents_total",
            "counter",
            "Incidents removed by retention since the store was created.",
            f.incidents_removed_total.to_string(),
        ),
        (
            "sentinel_retention_removed_fixes_total",
            "counter",
            "Fix results removed by retention since the store was created.",
            f.fixes_removed_total.to_string(),
        ),
    ];
    for (name, kind, help, value) in families {
        use std::fmt::Write;
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    }
    out
}

/// Removes the postmortems of removed incidents from `reports`; returns how many there were.
pub fn remove_reports(reports: &Path, ids: &[String]) -> usize {
    ids.iter()
        .filter(|id| std::fs::remove_file(reports.join(format!("{id}.md"))).is_ok())
        .count()
}

/// One retention run: the store's, then the removed incidents' postmortems, then a fresh
/// measurement of the free space.
///
/// # Errors
///
/// [`StoreError`] when the store cannot be written.
pub fn run_retention(
    store: &Store,
    config: &RetentionConfig,
    reports: &Path,
    now: Timestamp,
) -> Result<RetentionReport, StoreError> {
    let report = store.retain(&config.policy(), now, false)?;
    remove_reports(reports, &report.incident_ids);
    store.measure_space()?;
    Ok(report)
}

/// The daemon's lifecycle thread: retention every interval and compaction in its window
/// (see the module docs). Stops within a second of `stop` being set.
pub fn spawn(
    store: Arc<Store>,
    config: RetentionConfig,
    reports: std::path::PathBuf,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("sentinel-lifecycle".into())
        .spawn(move || {
            let interval = Duration::from_secs(config.interval_seconds);
            let idle_for = Duration::from_secs(config.compact_idle_seconds);
            let mut next_run = Instant::now() + interval;
            let mut commits = None;
            let mut active_at = Instant::now();
            let mut compacted_at: Option<Instant> = None;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                // A stop is noticed within one tick; nothing waits on this thread otherwise.
                std::thread::park_timeout(Duration::from_secs(1));
                let seen = store
                    .meta_value(crate::store::health::COMMITS)
                    .ok()
                    .flatten();
                if seen != commits {
                    commits = seen;
                    active_at = Instant::now();
                }
                if Instant::now() >= next_run {
                    next_run = Instant::now() + interval;
                    match run_retention(&store, &config, &reports, Timestamp::now()) {
                        Ok(r) => tracing::info!(
                            incidents = r.incidents,
                            fixes = r.fixes,
                            jobs = r.jobs,
                            spend_rows = r.spend_rows,
                            trend_incidents = r.trend_incidents,
                            transactions = r.transactions,
                            "retention run"
                        ),
                        Err(e) => tracing::warn!("retention run failed: {e}"),
                    }
                }
                let minute = {
                    let t = Timestamp::now().as_second().rem_euclid(86_400);
                    (t / 60) as u32
                };
                let recently = compacted_at.is_some_and(|t| t.elapsed() < interval);
                if config.in_compact_window(minute) && active_at.elapsed() >= idle_for && !recently
                {
                    let free = store.space().map(|s| s.free_percent()).unwrap_or(0);
                    if free >= config.compact_free_percent {
                        match store.compact() {
                            Ok(Compacted::Done { before, after }) => {
                                compacted_at = Some(Instant::now());
                                let _ = store.measure_space();
                                tracing::info!(before, after, "store compacted");
                            }
                            Ok(Compacted::Busy) => {}
                            Err(e) => {
                                compacted_at = Some(Instant::now());
                                tracing::warn!("compaction failed: {e}");
                            }
                        }
                    }
                }
            }
        })
}
