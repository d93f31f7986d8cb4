//! The daemon's metrics, exposed as Prometheus text (`GET /metrics`).
//!
//! One [`Metrics`] is shared (`Arc`) by the file shards, the webhook handlers, the writer and
//! the API. Counters are atomics inside the `prometheus` crate's types; hot paths add per
//! batch or per chunk (`inc_by`), never per line. Names follow Prometheus conventions:
//! `sentinel_` prefix, `_total` on counters, units in names (`_bytes`, `_seconds`). Per-source
//! series carry a `source` label whose values are the configured source names, so their
//! cardinality is the number of configured sources.

use std::sync::OnceLock;

mod lag;
pub use lag::{FileBehind, FileLag, LagSummary};

use prometheus::{
    Counter, Encoder, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The `kind` label values of `sentinel_inotify_events_total`: `create`, `modify` (data
/// written), `attrib`, `rename` (either side of a move), `remove`, `access` (open, close),
/// `other`, `rescan` (the kernel's queue overflowed: events were lost), `error`.
pub const INOTIFY_KINDS: [&str; 9] = [
    "create", "modify", "attrib", "rename", "remove", "access", "other", "rescan", "error",
];

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// All metrics of one daemon. See the module docs.
#[derive(Debug)]
#[non_exhaustive]
pub struct Metrics {
    registry: Registry,
    /// `sentinel_lines_total{source}`: lines read.
    pub lines: IntCounterVec,
    /// `sentinel_read_bytes_total{source}`: bytes read.
    pub bytes: IntCounterVec,
    /// `sentinel_error_lines_total{source}`: lines that matched an error pattern (webhook
    /// events counted as errors included).
    pub error_lines: IntCounterVec,
    /// `sentinel_keyed_lines_total{source}`: error lines with a PACT key.
    pub keyed_lines: IntCounterVec,
    /// `sentinel_incidents_created_total{source,severity}`.
    pub incidents_created: IntCounterVec,
    /// `sentinel_incidents_updated_total{source}`: commits that added to an existing
    /// incident (one per incident per commit).
    pub incidents_updated: IntCounterVec,
    /// `sentinel_long_lines_skipped_total{source}`: lines longer than `max_line_bytes`.
    pub long_lines: IntCounterVec,
    /// `sentinel_webhook_requests_total{source,code}`: webhook requests by status code.
    pub webhook_requests: IntCounterVec,
    /// `sentinel_webhook_events_total{source,outcome}`: events `accepted` (counted) or
    /// `duplicate` (an event id committed before).
    pub webhook_events: IntCounterVec,
    /// `sentinel_cloudwatch_requests_total{source,outcome}`: `FilterLogEvents` requests by
    /// outcome (`ok`, `throttled`, `error`: 5xx or network, `denied`: access, credentials,
    /// a missing group).
    pub cloudwatch_requests: IntCounterVec,
    /// `sentinel_cloudwatch_lag_seconds{source}`: how old the point is up to which every log
    /// group of the source was read completely (about `poll_interval` when caught up).
    pub cloudwatch_lag: GaugeVec,
    /// `sentinel_ingest_rejected_total{source,reason}`: requests turned away (`queue_full`
    /// answers 429, `store_unavailable` 503, ...).
    pub rejected: IntCounterVec,
    /// `sentinel_ingest_queue_depth`: batches waiting for the writer.
    pub queue_depth: IntGauge,
    /// `sentinel_ingest_queue_bytes`: approximate bytes of memory held by queued webhook
    /// requests (bounded by the ingest memory budget).
    pub queue_bytes: IntGauge,
    /// `sentinel_ingest_log_unapplied_events`: webhook events acknowledged (durable in the
    /// ingest log) and not yet committed to the store.
    pub log_unapplied: IntGauge,
    /// `sentinel_store_commit_duration_seconds`: durable commits of the writer.
    pub commit_seconds: Histogram,
    /// `sentinel_store_commit_errors_total`.
    pub commit_errors: IntCounter,
    /// `sentinel_store_degraded`: 1 while the store cannot commit and is being recovered.
    pub store_degraded: IntGauge,
    /// `sentinel_files_tracked{source}`: files tailed (their handle open or closed: see
    /// `sentinel_files_open`).
    pub files_tracked: IntGaugeVec,
    /// `sentinel_file_lag_bytes{source}`, and per file: how far reading is behind the
    /// tailed files' ends (see [`FileLag`]).
    pub file_lag: FileLag,
    /// `sentinel_files_open`: descriptors the file sources hold (bounded by
    /// `max_open_files`).
    pub files_open: IntGauge,
    /// `sentinel_files_waiting_for_descriptor`: tailed files that changed and wait for a
    /// descriptor (the open set is busy, or the system refused one: EMFILE / ENFILE).
    pub files_waiting: IntGauge,
    /// `sentinel_descriptor_refusals_total`: opens of tailed files refused with EMFILE or
    /// ENFILE (retried).
    pub descriptor_refusals: IntCounter,
    /// `sentinel_inotify_watch_limit_total`: directory watches refused because
    /// `fs.inotify.max_user_watches` was reached (those directories are polled).
    pub inotify_watch_limit: IntCounter,
    /// `sentinel_file_rotations_total{source,kind}`: `rename`, `delete`, `truncate`,
    /// `replaced` (inode reuse or rewritten head), `copy` (a copy continued a generation),
    /// `compressed` (a compressed file, not read).
    pub rotations: IntCounterVec,
    /// `sentinel_file_errors_total{source}`: I/O errors while reading files.
    pub file_errors: IntCounterVec,
    /// `sentinel_glob_expansions_total{source}`: expansions of a file source's glob (each
    /// lists the directories it covers and stats what matches).
    pub glob_expansions: IntCounterVec,
    /// `sentinel_file_polls_total{source}`: polls of tailed files (a `fstat`, and a read
    /// when the file grew).
    pub file_polls: IntCounterVec,
    /// `sentinel_inotify_events_total{kind}`: inotify events received, by kind (see
    /// [`INOTIFY_KINDS`]); only `create`, `modify`, `attrib`, `rename` and `remove` wake
    /// anything, `access` (opens and closes, Sentinel's own included) is ignored.
    pub inotify_events: IntCounterVec,
    /// `sentinel_outbox_delivered_total{sink}`: integration requests a sink accepted (2xx).
    pub outbox_delivered: IntCounterVec,
    /// `sentinel_outbox_failures_total{sink,kind}`: `transient` failed attempts (retried),
    /// `rejected` requests (a 4xx: logged and skipped).
    pub outbox_failures: IntCounterVec,
    /// `sentinel_outbox_lag_events{sink}`: events logged but not yet passed by the sink.
    pub outbox_lag: IntGaugeVec,
    /// `sentinel_outbox_dropped_total{sink}`: events pruned from the log before the sink got
    /// them (it was down beyond the log's hard cap).
    pub outbox_dropped: IntCounterVec,
    /// `sentinel_fixes_total{status}`: fixes ended, by status (`success`, `failure`,
    /// `awaiting_approval`).
    pub fixes: IntCounterVec,
    /// `sentinel_fixes_running`: fixes in progress.
    pub fixes_running: IntGauge,
    /// `sentinel_fix_refusals_total{guardrail}`: fixes held back or proposals refused by a
    /// guardrail (`paused`, `freeze`, `cooldown`, `min_confidence`, `max_files`,
    /// `max_changed_lines`, `flaky`).
    pub fix_refusals: IntCounterVec,
    /// `sentinel_fixes_paused`: 1 while the kill switch holds every fix.
    pub fixes_paused: IntGauge,
    /// `sentinel_fix_duration_seconds`: wall time of a fix.
    pub fix_seconds: Histogram,
    /// `sentinel_llm_spend_usd_total`: what the fixer's LLM calls cost.
    pub llm_spend_usd: Counter,
    /// `sentinel_sse_streams`: `GET /events` streams open.
    pub sse_streams: IntGauge,
    /// `sentinel_sse_lagging_streams`: streams reading behind the head of the event log
    /// (from the store, a batch at a time, at their reader's pace).
    pub sse_lagging: IntGauge,
    /// `sentinel_sse_closed_total{reason}`: streams ended, by reason (`client`, `stopped`,
    /// `store_error`).
    pub sse_closed: IntCounterVec,
}

impl Metrics {
    /// A fresh set, all zero.
    #[allow(clippy::expect_used)] // Names and label sets are static and valid.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let lines = counter("sentinel_lines_total", "Lines read.", &["source"]);
        let bytes = counter("sentinel_read_bytes_total", "Bytes read.", &["source"]);
        let error_lines = counter(
            "sentinel_error_lines_total",
            "Lines that matched an error pattern.",
            &["source"],
        );
        let keyed_lines = counter(
            "sentinel_keyed_lines_total",
            "Error lines carrying a PACT key.",
            &["source"],
        );
        let incidents_created = counter(
            "sentinel_incidents_created_total",
            "Incidents created, by the severity they were created with.",
            &["source", "severity"],
        );
        let incidents_updated = counter(
            "sentinel_incidents_updated_total",
            "Updates of existing incidents (one per incident per commit).",
            &["source"],
        );
        let long_lines = counter(
            "sentinel_long_lines_skipped_total",
            "Lines longer than max_line_bytes, skipped but counted.",
            &["source"],
        );
        let webhook_requests = counter(
            "sentinel_webhook_requests_total",
            "Webhook requests by HTTP status code.",
            &["source", "code"],
        );
        let webhook_events = counter(
            "sentinel_webhook_events_total",
            "Webhook events by outcome (accepted, duplicate).",
            &["source", "outcome"],
        );
        let cloudwatch_requests = counter(
            "sentinel_cloudwatch_requests_total",
            "CloudWatch Logs FilterLogEvents requests by outcome (ok, throttled, error, denied).",
            &["source", "outcome"],
        );
        let cloudwatch_lag = GaugeVec::new(
            Opts::new(
                "sentinel_cloudwatch_lag_seconds",
                "Age of the point up to which every log group of a CloudWatch source was read \
                 completely.",
            ),
            &["source"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(cloudwatch_lag.clone()))
            .expect("unique metric");
        let rejected = counter(
            "sentinel_ingest_rejected_total",
            "Requests turned away under load or on storage failure, by reason.",
            &["source", "reason"],
        );
        let rotations = counter(
            "sentinel_file_rotations_total",
            "File rotations seen, by kind (rename, delete, truncate, replaced, copy: a copy continued a generation, compressed: a compressed file not read).",
            &["source", "kind"],
        );
        let file_errors = counter(
            "sentinel_file_errors_total",
            "I/O errors while reading files.",
            &["source"],
        );
        let glob_expansions = counter(
            "sentinel_glob_expansions_total",
            "Expansions of a file source's glob (a directory listing plus a stat per match).",
            &["source"],
        );
        let file_polls = counter(
            "sentinel_file_polls_total",
            "Polls of tailed files (fstat, and a read when the file grew).",
            &["source"],
        );
        let inotify_events = counter(
            "sentinel_inotify_events_total",
            "inotify events received, by kind (create, modify, attrib, rename, remove wake \
             the file sources; access, other are ignored; rescan, error).",
            &["kind"],
        );
        let outbox_delivered = counter(
            "sentinel_outbox_delivered_total",
            "Integration requests accepted by their sink (2xx).",
            &["sink"],
        );
        let outbox_failures = counter(
            "sentinel_outbox_failures_total",
            "Integration delivery failures: transient attempts (retried), rejected requests \
             (skipped).",
            &["sink", "kind"],
        );
        let outbox_dropped = counter(
            "sentinel_outbox_dropped_total",
            "Events pruned from the event log before their sink received them.",
            &["sink"],
        );
        let outbox_lag = IntGaugeVec::new(
            Opts::new(
                "sentinel_outbox_lag_events",
                "Events logged but not yet passed by the sink (head - cursor).",
            ),
            &["sink"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(outbox_lag.clone()))
            .expect("unique metric");
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let queue_depth = gauge(
            "sentinel_ingest_queue_depth",
            "Batches waiting for the writer.",
        );
        let queue_bytes = gauge(
            "sentinel_ingest_queue_bytes",
            "Approximate bytes held by webhook requests waiting for their commit.",
        );
        let log_unapplied = gauge(
            "sentinel_ingest_log_unapplied_events",
            "Webhook events acknowledged (durable in the ingest log) and not yet in the store.",
        );
        let files_open = gauge(
            "sentinel_files_open",
            "Descriptors the file sources hold (bounded by max_open_files).",
        );
        let files_waiting = gauge(
            "sentinel_files_waiting_for_descriptor",
            "Tailed files that changed and wait for a descriptor (open set busy, or EMFILE / \
             ENFILE).",
        );
        let descriptor_refusals = IntCounter::new(
            "sentinel_descriptor_refusals_total",
            "Opens of tailed files refused with EMFILE or ENFILE (retried).",
        )
        .expect("valid metric");
        registry
            .register(Box::new(descriptor_refusals.clone()))
            .expect("unique metric");
        let inotify_watch_limit = IntCounter::new(
            "sentinel_inotify_watch_limit_total",
            "Directory watches refused because fs.inotify.max_user_watches was reached \
             (those directories are polled).",
        )
        .expect("valid metric");
        registry
            .register(Box::new(inotify_watch_limit.clone()))
            .expect("unique metric");
        let files_tracked = IntGaugeVec::new(
            Opts::new(
                "sentinel_files_tracked",
                "Files tailed (handle open or closed; see sentinel_files_open).",
            ),
            &["source"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(files_tracked.clone()))
            .expect("unique metric");
        let file_lag_bytes = IntGaugeVec::new(
            Opts::new(
                "sentinel_file_lag_bytes",
                "Bytes of tailed files not read yet (each file's size at its last poll minus \
                 the offset read), summed per source.",
            ),
            &["source"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(file_lag_bytes.clone()))
            .expect("unique metric");
        let file_lag = FileLag::new(file_lag_bytes);
        let commit_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "sentinel_store_commit_duration_seconds",
                "Durable redb commits of the ingest writer.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
        )
        .expect("valid metric");
        registry
            .register(Box::new(commit_seconds.clone()))
            .expect("unique metric");
        let commit_errors = IntCounter::new(
            "sentinel_store_commit_errors_total",
            "Failed commits (nothing of them was acknowledged).",
        )
        .expect("valid metric");
        registry
            .register(Box::new(commit_errors.clone()))
            .expect("unique metric");
        let store_degraded = gauge(
            "sentinel_store_degraded",
            "1 while the store cannot commit (full disk, I/O errors) and is being recovered.",
        );
        let fixes = counter(
            "sentinel_fixes_total",
            "Fixes ended, by status (success, failure, awaiting_approval).",
            &["status"],
        );
        let fix_refusals = counter(
            "sentinel_fix_refusals_total",
            "Fixes held back or proposals refused, by guardrail.",
            &["guardrail"],
        );
        let fixes_paused = IntGauge::new(
            "sentinel_fixes_paused",
            "1 while the kill switch holds every fix.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(fixes_paused.clone()))
            .expect("unique metric");
        let fixes_running =
            IntGauge::new("sentinel_fixes_running", "Fixes in progress.").expect("valid metric");
        registry
            .register(Box::new(fixes_running.clone()))
            .expect("unique metric");
        let fix_seconds = Histogram::with_opts(
            HistogramOpts::new("sentinel_fix_duration_seconds", "Wall time of a fix.").buckets(
                vec![1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0],
            ),
        )
        .expect("valid metric");
        registry
            .register(Box::new(fix_seconds.clone()))
            .expect("unique metric");
        let llm_spend_usd = Counter::new(
            "sentinel_llm_spend_usd_total",
            "What the fixer's LLM calls cost, in USD (usage × configured prices).",
        )
        .expect("valid metric");
        registry
            .register(Box::new(llm_spend_usd.clone()))
            .expect("unique metric");
        let sse_streams = gauge("sentinel_sse_streams", "GET /events streams open.");
        let sse_lagging = gauge(
            "sentinel_sse_lagging_streams",
            "GET /events streams reading behind the head of the event log.",
        );
        let sse_closed = counter(
            "sentinel_sse_closed_total",
            "GET /events streams ended, by reason (client, stopped, store_error).",
            &["reason"],
        );
        for reason in ["client", "stopped", "store_error"] {
            sse_closed.with_label_values(&[reason]);
        }
        Metrics {
            registry,
            sse_streams,
            sse_lagging,
            sse_closed,
            fixes,
            fixes_running,
            fix_refusals,
            fixes_paused,
            fix_seconds,
            llm_spend_usd,
            lines,
            bytes,
            error_lines,
            keyed_lines,
            incidents_created,
            incidents_updated,
            long_lines,
            webhook_requests,
            webhook_events,
            cloudwatch_requests,
            cloudwatch_lag,
            rejected,
            queue_depth,
            queue_bytes,
            log_unapplied,
            files_open,
            files_waiting,
            descriptor_refusals,
            inotify_watch_limit,
            commit_seconds,
            commit_errors,
            store_degraded,
            files_tracked,
            file_lag,
            rotations,
            file_errors,
            glob_expansions,
            file_polls,
            inotify_events,
            outbox_delivered,
            outbox_failures,
            outbox_lag,
            outbox_dropped,
        }
    }

    /// Creates the series of the outbox sink `sink` at zero.
    pub fn touch_outbox(&self, sink: &str) {
        self.outbox_delivered.with_label_values(&[sink]);
        self.outbox_dropped.with_label_values(&[sink]);
        self.outbox_lag.with_label_values(&[sink]);
        for kind in ["transient", "rejected"] {
            self.outbox_failures.with_label_values(&[sink, kind]);
        }
    }

    /// Creates the per-source series of `source` at zero, so that scrapes show them before
    /// the first event.
    pub fn touch_source(&self, source: &str) {
        for c in [
            &self.lines,
            &self.bytes,
            &self.error_lines,
            &self.keyed_lines,
            &self.incidents_updated,
            &self.long_lines,
        ] {
            c.with_label_values(&[source]);
        }
        for sev in crate::attribute::Severity::ALL {
            self.incidents_created
                .with_label_values(&[source, sev.as_str()]);
        }
    }

    /// Creates the file-source series of `source` (and the inotify kinds) at zero.
    pub fn touch_file_source(&self, source: &str) {
        self.glob_expansions.with_label_values(&[source]);
        self.file_polls.with_label_values(&[source]);
        self.file_lag.touch(source);
        for kind in INOTIFY_KINDS {
            self.inotify_events.with_label_values(&[kind]);
        }
    }

    /// The Prometheus text exposition (format 0.0.4; serve it with [`CONTENT_TYPE`]),
    /// process metrics included.
    pub fn render(&self) -> String {
        let mut families = self.registry.gather();
        families.extend(process_families());
        let mut out = Vec::with_capacity(8192);
        // Encoding into a Vec cannot fail for valid families.
        let _ = TextEncoder::new().encode(&families, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Appends one gauge family in the text format: `name{label="value"} n` per entry (for
/// figures read elsewhere at scrape time, such as the store's incident tallies).
pub fn render_gauge(out: &mut String, name: &str, help: &str, label: &str, values: &[(&str, u64)]) {
    use std::fmt::Write;
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    for (value, n) in values {
        // Label values here are fixed names (statuses, severities): nothing to escape.
        let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {n}");
    }
}

/// `process_resident_memory_bytes`, `process_open_fds`, `process_start_time_seconds` (Linux
/// `/proc`; absent elsewhere).
fn process_families() -> Vec<prometheus::proto::MetricFamily> {
    static START: OnceLock<Option<f64>> = OnceLock::new();
    let start = *START.get_or_init(process_start_time);
    let mut out = Vec::new();
    let mut gauge = |name: &str, help: &str, v: f64| {
        if let Ok(g) = prometheus::Gauge::new(name, help) {
            g.set(v);
            out.extend(prometheus::core::Collector::collect(&g));
        }
    };
    if let Some(rss) = resident_bytes() {
        gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            rss as f64,
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge(
            "process_open_fds",
            "Number of open file descriptors.",
            fds.count() as f64,
        );
    }
    if let Some(start) = start {
        gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            start,
        );
    }
    out
}

/// Boot time (`/proc/stat` `btime`) plus the process's start in clock ticks since boot
/// (`/proc/self/stat` field 22; the kernel's USER_HZ is 100 on every Linux ABI).
fn process_start_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces; fields after it follow the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    let ticks: f64 = after.split_whitespace().nth(19)?.parse().ok()?;
    let btime: f64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(btime + ticks / 100.0)
}

/// The resident set size, from `/proc/self/statm` (pages × page size).
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text_with_labels_and_process_metrics() {
        let m = Metrics::new();
        m.touch_source("app");
        m.lines.with_label_values(&["app"]).inc_by(42);
        m.webhook_requests.with_label_values(&["hook", "429"]).inc();
        m.commit_seconds.observe(0.003);
        let text = m.render();
        assert!(
            text.contains("# TYPE sentinel_lines_total counter"),
            "{text}"
        );
        assert!(
            text.contains("sentinel_lines_total{source=\"app\"} 42"),
            "{text}"
        );
        assert!(
            text.contains("sentinel_error_lines_total{source=\"app\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("sentinel_webhook_requests_total{code=\"429\",source=\"hook\"} 1"),
            "{text}"
        );
        assert!(text.contains("sentinel_store_commit_duration_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
    }
}
