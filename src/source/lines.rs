//! Folding the lines of the sources that are not files (CloudWatch events, a command's
//! output, standard input) into batches for the ingest writer, with the same rules as file
//! sources: the source's `error_patterns` (else the top-level ones) pick the error lines,
//! `format` decides whether a line is JSON (whose `pact_key` / `log_key` field is the key
//! when the text carries none), and the per-source line counters move when a batch is
//! handed on.
//!
//! On an edge (`forward.nats`) a folder also records each error line it folds
//! ([`Folder::forward_unpositioned`]), for the forwarder to publish instead of counting
//! (see [`crate::forward`]).

use std::borrow::Cow;
use std::sync::Arc;

use crate::aggregate::LineAggregator;
use crate::attribute::LiveRules;
use crate::config::{LogFormat, SourceCommon};
use crate::ingest::{ForwardKind, ForwardLine};
use crate::metrics::Metrics;
use crate::scan::{ErrorLine, ScanStats, Scanner, ScannerBuilder, Sink};
use crate::store::IngestBatch;

use super::SourceDefaults;

/// The scanner of a source: its own `error_patterns`, else the top-level list.
///
/// # Errors
///
/// A pattern that does not build, naming the source.
pub(crate) fn scanner_of(
    common: &SourceCommon,
    defaults: &SourceDefaults,
) -> anyhow::Result<Scanner> {
    let patterns = common
        .error_patterns
        .as_ref()
        .unwrap_or(&defaults.error_patterns);
    ScannerBuilder::new()
        .max_line_bytes(defaults.max_line_bytes)
        .build(patterns)
        .map_err(|e| anyhow::anyhow!("source {:?}: error_patterns: {e}", common.name))
}

/// Scans lines and folds the error lines of one source. See the module docs.
#[derive(Debug)]
pub(crate) struct Folder {
    name: Arc<str>,
    scanner: Scanner,
    format: LogFormat,
    agg: LineAggregator,
    stats: ScanStats,
    bytes: u64,
    keyed_sent: u64,
    metrics: Arc<Metrics>,
    /// On an edge: the error lines folded since the last [`Folder::take_forward`].
    forward: Option<Recorder>,
}

/// Where a folder records its error lines on an edge.
#[derive(Debug)]
struct Recorder {
    origin: Arc<str>,
    lines: Vec<ForwardLine>,
    bytes: usize,
    /// The message id of the lines folded next (see [`Folder::set_event_id`]).
    event: Option<Arc<str>>,
}

impl Recorder {
    fn record(&mut self, line: &[u8], fingerprint: u64, key: Option<&[u8]>) {
        self.bytes += line.len() + 64;
        self.lines.push(ForwardLine {
            origin: self.origin.clone(),
            at: 0,
            fingerprint,
            line: line.to_vec(),
            kind: ForwardKind::Unpositioned {
                id: self.event.clone(),
                key: key.map(|k| String::from_utf8_lossy(k).into_owned()),
            },
        });
    }
}

impl Folder {
    pub(crate) fn new(
        name: &str,
        scanner: Scanner,
        format: LogFormat,
        rules: &Arc<LiveRules>,
        metrics: Arc<Metrics>,
    ) -> Folder {
        let name: Arc<str> = Arc::from(name);
        metrics.touch_source(&name);
        Folder {
            agg: LineAggregator::new(rules, name.clone()),
            name,
            scanner,
            format,
            stats: ScanStats::default(),
            bytes: 0,
            keyed_sent: 0,
            metrics,
            forward: None,
        }
    }

    /// On an edge (`yes`): records every error line folded from now on, to be published
    /// `unpositioned` ([`ForwardKind::Unpositioned`]) under the origin `origin`, and taken
    /// with [`Folder::take_forward`]. Off by default.
    pub(crate) fn forward_unpositioned(&mut self, yes: bool, origin: &str) {
        self.forward = yes.then(|| Recorder {
            origin: Arc::from(origin),
            lines: Vec::new(),
            bytes: 0,
            event: None,
        });
    }

    /// Whether error lines are recorded for an edge's forwarder.
    pub(crate) fn is_forwarding(&self) -> bool {
        self.forward.is_some()
    }

    /// The message id of the lines folded from now on (each then published alone under
    /// it): a CloudWatch event's identity. `None` (the default): ids unique to this run.
    pub(crate) fn set_event_id(&mut self, id: Option<Arc<str>>) {
        if let Some(r) = &mut self.forward {
            r.event = id;
        }
    }

    /// The error lines recorded since the last call (empty when not forwarding).
    pub(crate) fn take_forward(&mut self) -> Vec<ForwardLine> {
        match &mut self.forward {
            Some(r) => {
                r.bytes = 0;
                std::mem::take(&mut r.lines)
            }
            None => Vec::new(),
        }
    }

    /// The source's name (the batches' label).
    pub(crate) fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Scans `region`: complete lines, each ending with `\n`.
    pub(crate) fn scan_region(&mut self, region: &[u8]) {
        let mut sink = JsonAware {
            agg: &mut self.agg,
            format: self.format,
            forward: self.forward.as_mut(),
        };
        let Ok(s) = self.scanner.scan(region, &mut sink);
        self.stats.add(&s);
        self.bytes += region.len() as u64;
    }

    /// Counts lines longer than `max_line_bytes` that were dropped before scanning.
    pub(crate) fn add_long_lines(&mut self, n: u64) {
        self.stats.long_lines += n;
        self.stats.lines += n;
    }

    /// Counts `line` (no newline) as an error line without matching it against the
    /// patterns (a CloudWatch `filter_pattern` already chose it).
    pub(crate) fn add_error(&mut self, line: &[u8]) {
        let max = self.scanner.max_line_bytes();
        self.stats.lines += 1;
        self.bytes += line.len() as u64 + 1;
        if line.len() > max {
            self.stats.long_lines += 1;
            return;
        }
        self.stats.error_lines += 1;
        let key = if is_json(self.format, line) {
            json_key(line)
        } else {
            None
        };
        let key = key.as_deref().map(str::as_bytes);
        let fp = self.agg.add_text(line, key);
        if let Some(r) = &mut self.forward {
            r.record(line, fp.0, key);
        }
    }

    /// [`Folder::add_error`] with the key to use when the line carries none (a webhook
    /// event's key field).
    pub(crate) fn add_error_keyed(&mut self, line: &[u8], key: Option<&[u8]>) {
        let Some(key) = key else {
            return self.add_error(line);
        };
        self.stats.lines += 1;
        self.bytes += line.len() as u64 + 1;
        if line.len() > self.scanner.max_line_bytes() {
            self.stats.long_lines += 1;
            return;
        }
        self.stats.error_lines += 1;
        let fp = self.agg.add_text(line, Some(key));
        if let Some(r) = &mut self.forward {
            r.record(line, fp.0, Some(key));
        }
    }

    /// Approximate memory held by what was folded since the last [`Folder::take`].
    pub(crate) fn held_bytes(&self) -> usize {
        self.agg.held_bytes() + self.forward.as_ref().map_or(0, |r| r.bytes)
    }

    /// Whether anything was read since the last [`Folder::take`].
    pub(crate) fn is_empty(&self) -> bool {
        self.agg.is_empty() && self.stats.lines == 0
    }

    /// Takes what was folded as a batch (with the `lines`, `bytes`, `error_lines` and
    /// `long_lines` totals) and moves the source's counters.
    pub(crate) fn take(&mut self) -> IngestBatch {
        take_batch(
            &self.metrics,
            &self.name,
            &mut self.agg,
            &mut self.stats,
            &mut self.bytes,
            &mut self.keyed_sent,
        )
    }
}

/// Takes what `agg` folded as a batch, with the `lines`, `bytes`, `error_lines` and
/// `long_lines` totals of `stats` and `bytes`, and moves the source `name`'s counters (the
/// keyed lines since `keyed_sent`). Shared by every source that folds lines.
pub(crate) fn take_batch(
    m: &Metrics,
    name: &str,
    agg: &mut LineAggregator,
    stats: &mut ScanStats,
    bytes: &mut u64,
    keyed_sent: &mut u64,
) -> IngestBatch {
    let mut batch = agg.take_batch();
    let s = std::mem::take(stats);
    let bytes = std::mem::take(bytes);
    m.lines.with_label_values(&[name]).inc_by(s.lines);
    m.bytes.with_label_values(&[name]).inc_by(bytes);
    m.error_lines
        .with_label_values(&[name])
        .inc_by(s.error_lines);
    m.long_lines.with_label_values(&[name]).inc_by(s.long_lines);
    let keyed = agg.counts().keyed_lines;
    m.keyed_lines
        .with_label_values(&[name])
        .inc_by(keyed - *keyed_sent);
    *keyed_sent = keyed;
    for (k, v) in [
        ("lines", s.lines),
        ("bytes", bytes),
        ("error_lines", s.error_lines),
        ("long_lines", s.long_lines),
    ] {
        if v > 0 {
            batch.totals.insert(k, v);
        }
    }
    batch
}

fn is_json(format: LogFormat, line: &[u8]) -> bool {
    match format {
        LogFormat::Text => false,
        LogFormat::Jsonl => true,
        LogFormat::Auto => line.trim_ascii_start().starts_with(b"{"),
    }
}

#[derive(serde::Deserialize)]
struct KeyFields<'a> {
    #[serde(borrow, default)]
    pact_key: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    log_key: Option<Cow<'a, str>>,
}

fn json_key(line: &[u8]) -> Option<Cow<'_, str>> {
    let fields = serde_json::from_slice::<KeyFields<'_>>(line).ok()?;
    fields.pact_key.or(fields.log_key)
}

/// Folds error lines; for JSON lines without a key of their own, the record's `pact_key`
/// (or `log_key`) field is the key (the file sources' rule).
struct JsonAware<'a> {
    agg: &'a mut LineAggregator,
    format: LogFormat,
    /// On an edge: where each error line is also recorded.
    forward: Option<&'a mut Recorder>,
}

impl Sink for JsonAware<'_> {
    type Error = std::convert::Infallible;

    fn error_line(&mut self, hit: &ErrorLine<'_>) -> Result<bool, Self::Error> {
        let line = hit.line();
        let key = if is_json(self.format, line) && hit.first_key().is_none() {
            json_key(line)
        } else {
            None
        };
        let key = key.as_deref().map(str::as_bytes);
        let fp = match key {
            Some(_) => self.agg.add_text(line, key),
            None => self.agg.add_line(hit),
        };
        if let Some(r) = &mut self.forward {
            r.record(line, fp.0, key);
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(format: LogFormat) -> Folder {
        Folder::new(
            "t",
            Scanner::new(["ERROR"]).unwrap(),
            format,
            &LiveRules::with_manifest(Default::default()),
            Arc::new(Metrics::new()),
        )
    }

    #[test]
    fn json_lines_take_their_key_field_and_totals_are_counted() {
        let mut f = folder(LogFormat::Auto);
        f.scan_region(b"ERROR plain [PACT:a:b]\n{\"level\":\"ERROR\",\"pact_key\":\"c:d\"}\nok\n");
        f.add_error(br#"{"msg":"boom","log_key":"PACT:e:f"}"#);
        let b = f.take();
        assert_eq!(b.key_counts["PACT:a:b"], 1);
        assert_eq!(b.key_counts["PACT:c:d"], 1);
        assert_eq!(b.key_counts["PACT:e:f"], 1);
        assert_eq!(b.totals["lines"], 4);
        assert_eq!(b.totals["error_lines"], 3);
        assert!(f.is_empty());
    }
}
