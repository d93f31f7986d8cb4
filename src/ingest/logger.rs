//! The ingest logger: the thread between webhook requests and the store writer.
//!
//! It takes whatever requests are queued (a group), drops the events whose delivery id was
//! seen before ([`DeliveryIds`]), folds the others into incident deltas, appends them to the
//! ingest log ([`Wal`], one `fdatasync` for the whole group) and only then answers the
//! requests: a 2xx means the events are durable. The folded group goes on to the writer as a
//! [`LogChunk`], which a later redb commit applies together with the log's sequence number;
//! after a crash the records the store does not hold yet are read back from the log
//! ([`replay`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender};
use jiff::Timestamp;

use super::dedupe::DeliveryIds;
use super::message::{EventAck, EventBatch, WriteError};
use super::wal::{Record, Wal};
use crate::aggregate::LineAggregator;
use crate::attribute::LiveRules;
use crate::metrics::Metrics;
use crate::store::IngestBatch;
use crate::store::deliveries::delivery_hash;

/// A group stops growing once it holds this many bytes (approximately): its log record, a
/// copy of its events, is about as big...
pub(super) const GROUP_MAX_BYTES: usize = 4 << 20;
/// ... or this many requests.
pub(super) const GROUP_MAX_MESSAGES: usize = 512;

/// The events of one ingest-log record, on their way to the writer, which folds them.
#[derive(Debug)]
pub struct Logged {
    /// The record's sequence number.
    pub seq: u64,
    /// The events logged (duplicates left out), per request, with the request's memory
    /// hold (released once the writer took them in).
    pub batches: Vec<(Arc<str>, Payload, Option<super::writer::Hold>)>,
    /// Their delivery hashes.
    pub hashes: Vec<u64>,
    /// When they were logged.
    pub at: Timestamp,
}

/// The events of one request as the writer gets them.
#[derive(Debug)]
pub enum Payload {
    /// Folded where the request was decoded.
    Folded(IngestBatch),
    /// Not folded yet (small requests, and those with duplicates left out).
    Raw(Vec<crate::aggregate::Event>),
}

/// Logged events on their way to the store, folded: what one or more ingest-log records add.
#[derive(Debug, Default)]
pub struct LogChunk {
    /// The highest ingest-log sequence number it holds.
    pub seq: u64,
    /// Incident deltas, key counts and totals, per source.
    pub per_source: HashMap<Arc<str>, IngestBatch>,
    /// The delivery hashes it recorded.
    pub hashes: Vec<u64>,
    /// The events it holds.
    pub events: u64,
    /// When its newest events were logged.
    pub at: Option<Timestamp>,
}

impl LogChunk {
    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.seq == 0 && self.per_source.is_empty() && self.hashes.is_empty()
    }

    /// The memory it holds, approximately.
    pub fn approx_bytes(&self) -> usize {
        self.per_source
            .values()
            .map(|b| b.approx_bytes)
            .sum::<usize>()
            + self.hashes.len() * 8
    }
}

/// Folds webhook events per source; each batch carries the totals webhook events count in.
#[derive(Default)]
pub(super) struct Fold {
    aggs: HashMap<Arc<str>, LineAggregator>,
}

impl Fold {
    pub(super) fn new() -> Fold {
        Fold {
            aggs: HashMap::new(),
        }
    }

    pub(super) fn agg(&mut self, rules: &Arc<LiveRules>, source: &Arc<str>) -> &mut LineAggregator {
        self.aggs
            .entry(source.clone())
            .or_insert_with(|| LineAggregator::new(rules, source.clone()))
    }

    /// Bytes the aggregators hold, approximately.
    pub(super) fn held_bytes(&self) -> usize {
        self.aggs.values().map(LineAggregator::held_bytes).sum()
    }

    /// The folded batches (totals `error_lines`, `keyed_lines`, `webhook_events` set).
    pub(super) fn finish(self) -> HashMap<Arc<str>, IngestBatch> {
        self.aggs
            .into_iter()
            .map(|(source, mut agg)| {
                let mut b = agg.take_batch();
                let c = agg.counts();
                let errors = c.keyed_lines + c.unattributed_lines;
                b.totals.insert("error_lines", errors);
                b.totals.insert("keyed_lines", c.keyed_lines);
                b.totals.insert("webhook_events", errors);
                (source, b)
            })
            .collect()
    }
}

/// Folds `events` of `source` into a batch carrying the totals webhook events count in
/// (`error_lines`, `keyed_lines`, `webhook_events`).
pub fn fold_events(
    rules: &Arc<LiveRules>,
    source: &Arc<str>,
    events: &[crate::aggregate::Event],
) -> IngestBatch {
    let mut fold = Fold::new();
    let agg = fold.agg(rules, source);
    for e in events {
        agg.add_text(&e.line, e.key.as_deref());
    }
    fold.finish().into_values().next().unwrap_or_default()
}

/// Record bodies: `at µs: u64 | batches: u32 | per batch: source | events: u32 | per event:
/// line | key (len u32::MAX: none) | has id: u8 [| hash: u64]`, strings as `len: u32 | bytes`,
/// integers little-endian.
struct Body(Vec<u8>);

impl Body {
    fn new(at: Timestamp, capacity: usize) -> Body {
        let mut b = Vec::with_capacity(capacity);
        b.extend_from_slice(&(at.as_microsecond().max(0) as u64).to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        Body(b)
    }

    fn bytes(&mut self, s: &[u8]) {
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s);
    }

    /// Starts a batch; returns where its event count goes.
    fn batch(&mut self, source: &str) -> usize {
        let n = u32::from_le_bytes(self.0[8..12].try_into().unwrap_or_default()) + 1;
        self.0[8..12].copy_from_slice(&n.to_le_bytes());
        self.bytes(source.as_bytes());
        let at = self.0.len();
        self.0.extend_from_slice(&0u32.to_le_bytes());
        at
    }

    fn event(&mut self, count_at: usize, line: &[u8], key: Option<&[u8]>, hash: Option<u64>) {
        let n = u32::from_le_bytes(
            self.0[count_at..count_at + 4]
                .try_into()
                .unwrap_or_default(),
        );
        self.0[count_at..count_at + 4].copy_from_slice(&(n + 1).to_le_bytes());
        self.bytes(line);
        match key {
            Some(k) => self.bytes(k),
            None => self.0.extend_from_slice(&u32::MAX.to_le_bytes()),
        }
        match hash {
            Some(h) => {
                self.0.push(1);
                self.0.extend_from_slice(&h.to_le_bytes());
            }
            None => self.0.push(0),
        }
    }
}

/// Reads a body back: calls `event(source, line, key, hash)` for every event; returns the
/// time it was logged, or None when it is malformed (then some events may have been seen).
fn read_body(
    b: &[u8],
    mut event: impl FnMut(&str, &[u8], Option<&[u8]>, Option<u64>),
) -> Option<Timestamp> {
    struct R<'a>(&'a [u8]);
    impl<'a> R<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            if self.0.len() < n {
                return None;
            }
            let (a, b) = self.0.split_at(n);
            self.0 = b;
            Some(a)
        }
        fn u32(&mut self) -> Option<u32> {
            Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
        }
        fn u64(&mut self) -> Option<u64> {
            Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
        }
        fn bytes(&mut self) -> Option<Option<&'a [u8]>> {
            match self.u32()? {
                u32::MAX => Some(None),
                n => Some(Some(self.take(n as usize)?)),
            }
        }
    }
    let mut r = R(b);
    let at = Timestamp::from_microsecond(i64::try_from(r.u64()?).ok()?).ok()?;
    for _ in 0..r.u32()? {
        let source = std::str::from_utf8(r.bytes()??).ok()?;
        for _ in 0..r.u32()? {
            let line = r.bytes()??;
            let key = r.bytes()?;
            let hash = match r.take(1)?[0] {
                0 => None,
                _ => Some(r.u64()?),
            };
            event(source, line, key, hash);
        }
    }
    r.0.is_empty().then_some(at)
}

/// Folds the records the store does not hold yet back into one chunk (at start, before any
/// request is taken). A malformed body (which its CRC let through: a bug, not a tear) is
/// logged and skipped.
pub fn replay(records: &[Record], rules: &Arc<LiveRules>) -> LogChunk {
    let mut fold = Fold::new();
    let mut chunk = LogChunk::default();
    let mut sources: HashMap<String, Arc<str>> = HashMap::new();
    for r in records {
        let mut events = Vec::new();
        let at = read_body(&r.body, |source, line, key, hash| {
            events.push((
                source.to_string(),
                line.to_vec(),
                key.map(<[u8]>::to_vec),
                hash,
            ));
        });
        let Some(at) = at else {
            tracing::error!(
                seq = r.seq,
                "an ingest-log record could not be read; its events are skipped"
            );
            continue;
        };
        for (source, line, key, hash) in events {
            let source = sources
                .entry(source)
                .or_insert_with_key(|s| Arc::from(s.as_str()))
                .clone();
            fold.agg(rules, &source).add_text(&line, key.as_deref());
            chunk.hashes.extend(hash);
            chunk.events += 1;
        }
        chunk.seq = r.seq;
        chunk.at = Some(at);
    }
    chunk.per_source = fold.finish();
    chunk
}

/// The logger thread's state.
pub(super) struct Logger {
    pub events: Receiver<EventBatch>,
    pub wal: Arc<Mutex<Wal>>,
    pub ids: Arc<DeliveryIds>,
    pub metrics: Arc<Metrics>,
    pub chunks: Sender<Logged>,
    /// Failing appends (a full disk), logged as one episode.
    pub failing: crate::episode::Episode,
}

impl Logger {
    /// Runs until every sender of requests is gone and the queue is drained.
    pub(super) fn run(mut self) {
        let mut hashes = Vec::new();
        let mut fresh = Vec::new();
        while let Ok(first) = self.events.recv() {
            let mut bytes = request_bytes(&first);
            let mut group = vec![first];
            while group.len() < GROUP_MAX_MESSAGES && bytes < GROUP_MAX_BYTES {
                match self.events.try_recv() {
                    Ok(b) => {
                        bytes += request_bytes(&b);
                        group.push(b);
                    }
                    Err(_) => break,
                }
            }
            self.metrics.queue_depth.sub(group.len() as i64);
            self.log_group(group, &mut hashes, &mut fresh);
        }
    }

    fn log_group(&mut self, group: Vec<EventBatch>, hashes: &mut Vec<u64>, fresh: &mut Vec<bool>) {
        hashes.clear();
        for b in &group {
            for e in &b.events {
                if let Some(id) = &e.id {
                    hashes.push(delivery_hash(&b.source, id));
                }
            }
        }
        self.ids.insert_all(hashes, fresh);
        let now = Timestamp::now();
        // Exactly what the body takes when no event is a duplicate.
        let capacity = 12
            + group
                .iter()
                .map(|b| {
                    8 + b.source.len()
                        + b.events
                            .iter()
                            .map(|e| 17 + e.line.len() + e.key.as_ref().map_or(0, Vec::len))
                            .sum::<usize>()
                })
                .sum::<usize>();
        let mut body = Body::new(now, capacity);
        let mut acks = Vec::with_capacity(group.len());
        let mut logged = Vec::new();
        let mut keep = Vec::new();
        let mut next_id = hashes.iter().zip(fresh.iter());
        for b in &group {
            let mut ack = EventAck::default();
            let mut count_at = None;
            for e in &b.events {
                let hash = match &e.id {
                    Some(_) => match next_id.next() {
                        Some((h, true)) => Some(*h),
                        Some((_, false)) => {
                            ack.duplicates += 1;
                            keep.push(false);
                            continue;
                        }
                        None => None,
                    },
                    None => None,
                };
                keep.push(true);
                ack.accepted += 1;
                let at = *count_at.get_or_insert_with(|| body.batch(&b.source));
                body.event(at, &e.line, e.key.as_deref(), hash);
                logged.extend(hash);
            }
            acks.push(ack);
        }
        let accepted: usize = acks.iter().map(|a| a.accepted).sum();
        let seq = if accepted == 0 {
            // Only deliveries seen before: nothing to log.
            None
        } else {
            let appended = self
                .wal
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .append(&body.0);
            match appended {
                Ok(seq) => {
                    self.failing.ended();
                    Some(seq)
                }
                Err(e) => {
                    self.ids.remove_all(logged);
                    self.metrics.commit_errors.inc();
                    self.failing.failed(&e);
                    let msg = format!("the ingest log could not be written: {e}");
                    for b in group {
                        let _ = b.reply.send(Err(WriteError::Store(msg.clone())));
                    }
                    return;
                }
            }
        };
        drop(body);
        if seq.is_some() {
            // Before any answer: a client that saw its 2xx sees the lag include its events.
            self.metrics.log_unapplied.add(accepted as i64);
        }
        // Counted before any answer, per source rather than per request (a label look-up
        // hashes and locks).
        let mut by_source: Vec<(&Arc<str>, usize, usize)> = Vec::new();
        for (b, ack) in group.iter().zip(&acks) {
            match by_source.iter_mut().find(|(s, _, _)| **s == b.source) {
                Some((_, a, d)) => {
                    *a += ack.accepted;
                    *d += ack.duplicates;
                }
                None => by_source.push((&b.source, ack.accepted, ack.duplicates)),
            }
        }
        for (s, accepted, duplicates) in by_source {
            let m = &self.metrics.webhook_events;
            m.with_label_values(&[s, "accepted"])
                .inc_by(accepted as u64);
            m.with_label_values(&[s, "duplicate"])
                .inc_by(duplicates as u64);
        }
        let mut batches = Vec::with_capacity(group.len());
        let mut keep = keep.into_iter();
        for (b, ack) in group.into_iter().zip(acks) {
            let EventBatch {
                source,
                mut events,
                folded,
                reply,
                hold,
            } = b;
            let _ = reply.send(Ok(ack));
            events.retain(|_| keep.next().unwrap_or(false));
            if events.is_empty() {
                continue;
            }
            let payload = match folded {
                // Folded where it was decoded, and nothing was left out.
                Some(f) if ack.duplicates == 0 => Payload::Folded(f),
                // Duplicates left out (a retried delivery), or not folded: the writer folds.
                _ => Payload::Raw(events),
            };
            batches.push((source, payload, hold));
        }
        if let Some(seq) = seq {
            let logged = Logged {
                seq,
                batches,
                hashes: logged,
                at: now,
            };
            // Blocks while the writer is behind (the requests queue up, then get 429s). A
            // writer that is gone leaves the records to the replay of the next start.
            let _ = self.chunks.send(logged);
        }
    }
}

fn request_bytes(b: &EventBatch) -> usize {
    b.events.iter().map(|e| e.line.len() + 64).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::Manifest;
    use crate::ingest::writer::{WAL_APPLIED_SEQ, Writer};
    use crate::store::Store;

    #[test]
    fn logged_events_the_store_lacks_are_replayed_once_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = Arc::new(Store::open(&path).unwrap());
        // As a logger that acknowledged and then died before the writer committed.
        let (mut wal, _) = Wal::open(&path.with_extension("wal"), 0).unwrap();
        let mut body = Body::new(Timestamp::now(), 0);
        let c = body.batch("hook");
        let h = delivery_hash("hook", "e1");
        body.event(c, b"ERROR [PACT:a:b] boom", None, Some(h));
        body.event(c, b"ERROR [PACT:a:b] boom", None, None);
        assert_eq!(wal.append(&body.0).unwrap(), 1);
        drop(wal);
        for _ in 0..2 {
            let rules = LiveRules::with_manifest(Manifest::default());
            let metrics = Arc::new(Metrics::new());
            let (writer, handle) = Writer::start(store.clone(), rules, metrics, None).unwrap();
            drop(handle);
            writer.join();
            assert_eq!(store.key_counts().unwrap()["PACT:a:b"], 2);
            assert_eq!(store.totals().unwrap()["webhook_events"], 2);
            assert!(store.delivery_seen("hook", "e1").unwrap());
            assert_eq!(store.meta_value(WAL_APPLIED_SEQ).unwrap(), Some(1));
            let segments = std::fs::read_dir(path.with_extension("wal"))
                .unwrap()
                .count();
            assert_eq!(segments, 0, "applied segments are deleted");
        }
    }

    #[test]
    fn bodies_read_back_event_for_event() {
        let at = Timestamp::from_second(1_700_000_000).unwrap();
        let mut body = Body::new(at, 0);
        let c = body.batch("hook");
        body.event(c, b"ERROR one", None, Some(7));
        body.event(c, b"ERROR two", Some(b"PACT:a:b"), None);
        let c = body.batch("other");
        body.event(c, b"", Some(b""), Some(u64::MAX));
        let mut seen = Vec::new();
        let got = read_body(&body.0, |s, l, k, h| {
            seen.push((s.to_string(), l.to_vec(), k.map(<[u8]>::to_vec), h));
        });
        assert_eq!(got, Some(at));
        assert_eq!(
            seen,
            [
                ("hook".into(), b"ERROR one".to_vec(), None, Some(7)),
                (
                    "hook".into(),
                    b"ERROR two".to_vec(),
                    Some(b"PACT:a:b".to_vec()),
                    None
                ),
                ("other".into(), Vec::new(), Some(Vec::new()), Some(u64::MAX)),
            ]
        );
        // Cut anywhere: malformed, never a panic.
        for cut in 0..body.0.len() {
            assert_eq!(
                read_body(&body.0[..cut], |_, _, _, _| {}),
                None,
                "cut {cut}"
            );
        }
    }
}
