//! Aggregation: error lines -> incident deltas and per-key counters, ready for one store
//! transaction.
//!
//! [`LineAggregator`] is the [`Sink`] every reader hands its error lines to. It fingerprints
//! the line, attributes it, and folds it into an [`IngestBatch`] keyed by fingerprint. It
//! allocates only when it meets a fingerprint or a key it has not seen in the current batch;
//! an error line that repeats costs a hash of its normalised text and two map look-ups.
//! Memory is bounded by the caller: when [`LineAggregator::len`] passes its cap it takes the
//! batch ([`LineAggregator::take_batch`]) and commits it.

pub mod distinct;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::convert::Infallible;
use std::sync::Arc;

use serde::Serialize;

use crate::attribute::{AttributionStatus, LiveRules, RulesCache, attribute};
use crate::scan::fingerprint::NORMALIZED_KEEP_BYTES;
use crate::scan::keys::{self, PactKey};
use crate::scan::{ErrorLine, Fingerprinter, Sink};
use crate::store::{IncidentDelta, IngestBatch, NewIncident, SAMPLE_MAX_BYTES};

/// The default memory, in bytes, a batch may hold (samples, normalised texts, keys and map
/// overhead, approximately) before the caller should hand it on.
pub const DEFAULT_BATCH_BYTES: usize = 4 << 20;

/// Bytes of map and struct overhead counted per incident delta or key.
const ENTRY_OVERHEAD: usize = 64;

/// Bytes counted per undescribed line ([`crate::store::Undescribed`]): its fingerprint,
/// in a vector that may be twice its length.
const UNDESCRIBED_LINE_BYTES: usize = 16;

/// One event of a push source (a webhook), decoded: counted as one error line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The log line (no trailing newline).
    pub line: Vec<u8>,
    /// The key to use when the line carries none (`log_key` / `pact_key` fields).
    pub key: Option<Vec<u8>>,
    /// The sender's id for this event: a retried delivery with the same id is acknowledged
    /// without counting again.
    pub id: Option<String>,
}

/// Error lines by attribution.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LineCounts {
    /// Error lines with at least one PACT key.
    pub keyed_lines: u64,
    /// Error lines attributed to a registered component.
    pub registered_lines: u64,
    /// Error lines whose key names no registered component.
    pub unregistered_lines: u64,
    /// Error lines without a key.
    pub unattributed_lines: u64,
}

impl LineCounts {
    /// Adds `other`.
    pub fn add(&mut self, other: &LineCounts) {
        self.keyed_lines += other.keyed_lines;
        self.registered_lines += other.registered_lines;
        self.unregistered_lines += other.unregistered_lines;
        self.unattributed_lines += other.unattributed_lines;
    }
}

/// Folds error lines into a batch. See the module docs.
#[derive(Debug)]
pub struct LineAggregator {
    rules: RulesCache,
    source: Arc<str>,
    fingerprinter: Fingerprinter,
    incidents: HashMap<crate::scan::Fingerprint, IncidentDelta>,
    keys: HashMap<Vec<u8>, u64>,
    counts: LineCounts,
    /// The key spans of the current line (reused: no allocation once warm).
    line_keys: Vec<(usize, usize)>,
    /// Approximate bytes held by `incidents` and `keys`.
    held_bytes: usize,
    /// New incidents described in what is held.
    described: usize,
    /// Fingerprints already described by some aggregator of this run.
    shared: Option<Arc<SharedFingerprints>>,
    /// The shared keys over their budget as last read, and the list's version then.
    overflowing: (usize, Vec<Arc<str>>),
    /// Lines of new fingerprints of those keys (see [`crate::store::Undescribed`]).
    undescribed: Vec<crate::store::Undescribed>,
}

/// The fingerprints the aggregators of one run have already described.
///
/// Several aggregators (one per segment of a big file) meet the same fingerprints. Carrying
/// the creation fields (a sample of up to 4 KiB, the normalised text) in each of their
/// batches would multiply the memory by the number of segments, so only the first to meet a
/// fingerprint describes it and the rest send counts. The store defers a count for an
/// incident it does not know yet ([`crate::store::ApplyOutcome::deferred`]) until the
/// description arrives, which it always does: every aggregator hands over all it gathered.
///
/// The set holds at most [`SHARED_FINGERPRINTS_MAX`] fingerprints, so that a run of a
/// million distinct errors does not grow it without end: once full, a fingerprint it does
/// not hold is described by every aggregator that meets it (the store keeps the first
/// description), which costs batch space, never correctness. Only fingerprints in the set
/// ever travel as counts alone.
///
/// It also carries the keys the store has found over the cardinality guard's budget in this
/// run ([`SharedFingerprints::mark_overflowing`]): a new fingerprint of such a key travels
/// without a description ([`crate::store::Undescribed`]).
#[derive(Debug, Default)]
pub struct SharedFingerprints {
    shards: [std::sync::Mutex<std::collections::HashSet<crate::scan::Fingerprint>>; 16],
    /// Keys over their budget, and how many times the list changed (read without the lock
    /// by every new fingerprint: the aggregators keep a copy).
    overflowing: std::sync::RwLock<Vec<Arc<str>>>,
    overflowing_version: std::sync::atomic::AtomicUsize,
}

/// The most fingerprints [`SharedFingerprints`] holds (about 2 MiB).
pub const SHARED_FINGERPRINTS_MAX: usize = 1 << 17;

impl SharedFingerprints {
    /// An empty set.
    pub fn new() -> SharedFingerprints {
        SharedFingerprints::default()
    }

    fn shard(
        &self,
        fp: crate::scan::Fingerprint,
    ) -> std::sync::MutexGuard<'_, std::collections::HashSet<crate::scan::Fingerprint>> {
        // A poisoned shard only means another worker panicked mid-insert; the set is still
        // a valid set.
        self.shards[(fp.0 >> 60) as usize]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records `fp`; true the first time it is seen (and always when the set is full and
    /// does not hold it).
    pub fn first_sighting(&self, fp: crate::scan::Fingerprint) -> bool {
        let mut set = self.shard(fp);
        if set.len() >= SHARED_FINGERPRINTS_MAX / 16 {
            return !set.contains(&fp);
        }
        set.insert(fp)
    }

    /// Whether `fp` is held: only then may a count of it travel without its description.
    pub fn contains(&self, fp: crate::scan::Fingerprint) -> bool {
        self.shard(fp).contains(&fp)
    }

    /// The store folded new fingerprints of `key` (see
    /// [`crate::store::ApplyOutcome::overflowing`]): its new fingerprints may travel
    /// without a description from now on. True the first time.
    pub fn mark_overflowing(&self, key: &str) -> bool {
        let mut list = self
            .overflowing
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if list.iter().any(|k| &**k == key) {
            return false;
        }
        list.push(Arc::from(key));
        self.overflowing_version
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        true
    }

    /// Whether `key` is said to be over its budget.
    pub fn is_overflowing(&self, key: &str) -> bool {
        self.overflowing
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .any(|k| &**k == key)
    }

    /// The keys over their budget, when the list changed since `version` (and its new
    /// version).
    fn overflowing_since(&self, version: usize) -> Option<(usize, Vec<Arc<str>>)> {
        let now = self
            .overflowing_version
            .load(std::sync::atomic::Ordering::Acquire);
        if now == version {
            return None;
        }
        let list = self
            .overflowing
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Some((
            self.overflowing_version
                .load(std::sync::atomic::Ordering::Acquire),
            list.clone(),
        ))
    }
}

impl LineAggregator {
    /// An aggregator attributing through `rules` (the manifest and severity rules, followed
    /// as they are replaced), labelling new incidents with `source`.
    pub fn new(rules: &Arc<LiveRules>, source: Arc<str>) -> LineAggregator {
        LineAggregator {
            rules: rules.cache(),
            source,
            fingerprinter: Fingerprinter::new(),
            incidents: HashMap::new(),
            keys: HashMap::new(),
            counts: LineCounts::default(),
            line_keys: Vec::new(),
            held_bytes: 0,
            described: 0,
            shared: None,
            overflowing: (0, Vec::new()),
            undescribed: Vec::new(),
        }
    }

    /// Shares first sightings with the other aggregators of a run (see
    /// [`SharedFingerprints`]).
    pub fn with_shared(mut self, shared: Arc<SharedFingerprints>) -> LineAggregator {
        self.shared = Some(shared);
        self
    }

    /// Changes the source label of incidents created from now on.
    pub fn set_source(&mut self, source: Arc<str>) {
        self.source = source;
    }

    /// Folds one error line in; returns its fingerprint.
    pub fn add_line(&mut self, hit: &ErrorLine<'_>) -> crate::scan::Fingerprint {
        self.add_text(hit.line(), None)
    }

    /// Folds one error line in; `fallback_key` (e.g. the `pact_key` field of a JSON record
    /// or a webhook event) is the line's key when the line itself carries none. A fallback
    /// that is not a valid PACT key (with or without its `PACT:` prefix) is ignored. Returns
    /// the line's fingerprint.
    pub fn add_text(
        &mut self,
        line: &[u8],
        fallback_key: Option<&[u8]>,
    ) -> crate::scan::Fingerprint {
        let mut prefixed = Vec::new();
        let first = match keys::first_key(line) {
            Some(k) => Some(k),
            None => fallback_key.and_then(|fk| parse_fallback_key(fk, &mut prefixed)),
        };
        self.rules.refresh();
        let attr = attribute(first, &self.rules.rules.manifest);
        match attr.status {
            AttributionStatus::Registered => self.counts.registered_lines += 1,
            AttributionStatus::Unregistered => self.counts.unregistered_lines += 1,
            AttributionStatus::Unattributed => self.counts.unattributed_lines += 1,
        }
        // The fallback key, when the line has none of its own: part of its identity.
        let mut beside = None;
        if let Some(first) = first {
            self.counts.keyed_lines += 1;
            if first.as_bytes().as_ptr_range().start < line.as_ptr_range().start
                || first.as_bytes().as_ptr_range().end > line.as_ptr_range().end
            {
                beside = Some(first.as_bytes());
                self.count_key(first.as_bytes());
            } else {
                // Every distinct key of the line counts once. Lines carry few keys:
                // comparing with the earlier keys of the line beats a set, and the span list
                // is reused.
                self.line_keys.clear();
                let base = line.as_ptr() as usize;
                for key in keys::PactKeys::new(line) {
                    let k = key.as_bytes();
                    if self.line_keys.iter().any(|&(s, e)| &line[s..e] == k) {
                        continue;
                    }
                    let start = k.as_ptr() as usize - base;
                    self.line_keys.push((start, start + k.len()));
                    self.count_key(k);
                }
            }
        }
        // `grouping.rules` rewrite the line before the normalisation (see `scan::rules`).
        let fp = if self.rules.grouping.is_empty() {
            self.fingerprinter.fingerprint_keyed(line, beside)
        } else {
            let grouping = self.rules.grouping.clone();
            let text = grouping.apply(line);
            self.fingerprinter.fingerprint_keyed(&text, beside)
        };
        match self.incidents.entry(fp) {
            Entry::Occupied(mut e) => e.get_mut().count += 1,
            Entry::Vacant(e) => {
                if let Some(shared) = &self.shared {
                    if let Some(list) = shared.overflowing_since(self.overflowing.0) {
                        self.overflowing = list;
                    }
                    let key = attr.pact_key;
                    if let Some(k) = self.overflowing.1.iter().find(|k| k.as_bytes() == key) {
                        // Over its key's budget: a line, not described (nor in the map).
                        self.held_bytes += UNDESCRIBED_LINE_BYTES;
                        crate::store::Undescribed::push(&mut self.undescribed, k, fp);
                        return fp;
                    }
                }
                // Only the first aggregator of a run to meet a fingerprint carries the
                // creation fields; the others send counts (see `SharedFingerprints`).
                let describe = self.shared.as_ref().is_none_or(|s| s.first_sighting(fp));
                let new = describe.then(|| {
                    let text = String::from_utf8_lossy;
                    NewIncident::new(
                        &text(cut(self.fingerprinter.normalized(), NORMALIZED_KEEP_BYTES)),
                        &text(cut(line, SAMPLE_MAX_BYTES)),
                        attr.status,
                        &text(attr.component),
                        &text(attr.method),
                        &text(attr.pact_key),
                        self.rules.rules.severity.of_line(line),
                        self.source.clone(),
                    )
                });
                // Besides the text: its one allocation and the box (with the allocator's
                // own overhead), and the delta in the map.
                self.held_bytes +=
                    new.as_ref().map_or(0, |n| n.heap_bytes() + 160) + ENTRY_OVERHEAD;
                self.described += usize::from(new.is_some());
                let mut d = IncidentDelta::count_only(fp, 1);
                d.new = new.map(Box::new);
                e.insert(d);
            }
        }
        fp
    }

    fn count_key(&mut self, k: &[u8]) {
        match self.keys.get_mut(k) {
            Some(n) => *n += 1,
            None => {
                self.held_bytes += k.len() + ENTRY_OVERHEAD;
                self.keys.insert(k.to_vec(), 1);
            }
        }
    }

    /// Distinct fingerprints plus distinct keys held.
    pub fn len(&self) -> usize {
        self.incidents.len() + self.keys.len() + self.undescribed.len()
    }

    /// The approximate memory the batch takes, in bytes: compare with
    /// [`DEFAULT_BATCH_BYTES`] to decide when to hand it on.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// New incidents described in what is held (their creation fields travel with it).
    pub fn described(&self) -> usize {
        self.described
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.incidents.is_empty() && self.keys.is_empty() && self.undescribed.is_empty()
    }

    /// The line counts so far (not reset by [`LineAggregator::take_batch`]).
    pub fn counts(&self) -> LineCounts {
        self.counts
    }

    /// Takes the batch gathered so far, leaving the aggregator empty (counts are kept).
    pub fn take_batch(&mut self) -> IngestBatch {
        let mut batch = IngestBatch::new();
        batch.approx_bytes = std::mem::take(&mut self.held_bytes);
        self.described = 0;
        batch.incidents = std::mem::take(&mut self.incidents);
        batch.undescribed = std::mem::take(&mut self.undescribed);
        batch.key_counts = std::mem::take(&mut self.keys)
            .into_iter()
            .map(|(k, n)| (String::from_utf8_lossy(&k).into_owned(), n))
            .collect();
        batch
    }
}

/// `bytes` cut to at most `max` bytes, backing off over up to three UTF-8 continuation
/// bytes so a character is not split (as [`crate::store::incident::lossy_prefix`] does,
/// without its allocation: valid UTF-8 then borrows).
fn cut(bytes: &[u8], max: usize) -> &[u8] {
    if bytes.len() <= max {
        return bytes;
    }
    let mut end = max;
    while end > 0 && max - end < 3 && (bytes[end] & 0xC0) == 0x80 {
        end -= 1;
    }
    &bytes[..end]
}

/// A fallback key: the whole of `fk` must be one PACT key, `PACT:` prefix optional.
fn parse_fallback_key<'a>(fk: &'a [u8], prefixed: &'a mut Vec<u8>) -> Option<PactKey<'a>> {
    let fk = fk.trim_ascii();
    let candidate: &'a [u8] = if fk.starts_with(b"PACT:") {
        fk
    } else {
        prefixed.extend_from_slice(b"PACT:");
        prefixed.extend_from_slice(fk);
        prefixed
    };
    keys::first_key(candidate).filter(|k| k.as_bytes().len() == candidate.len())
}

impl Sink for LineAggregator {
    type Error = Infallible;

    fn error_line(&mut self, hit: &ErrorLine<'_>) -> Result<bool, Infallible> {
        self.add_line(hit);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::{Manifest, ManifestEntry, Severity};
    use crate::scan::Scanner;

    #[test]
    fn folds_repeats_and_counts_distinct_keys_once_per_line() {
        let mut m = Manifest::default();
        m.insert(ManifestEntry::new("auth"));
        let mut agg = LineAggregator::new(&LiveRules::with_manifest(m), Arc::from("t.log"));
        let scanner = Scanner::new(["ERROR"]).unwrap();
        let text = b"ERROR [PACT:auth:login] user 12 failed\n\
            INFO fine\n\
            ERROR [PACT:auth:login] user 13 failed\n\
            ERROR [PACT:ghost:x] PACT:ghost:x PACT:auth:login twice\n\
            ERROR no key gdpr_erasable\n";
        let stats = scanner.scan(text, &mut agg).unwrap();
        assert_eq!(stats.error_lines, 4);
        let counts = agg.counts();
        assert_eq!(counts.keyed_lines, 3);
        assert_eq!(counts.registered_lines, 2);
        assert_eq!(counts.unregistered_lines, 1);
        assert_eq!(counts.unattributed_lines, 1);
        let batch = agg.take_batch();
        assert_eq!(batch.key_counts["PACT:auth:login"], 3);
        assert_eq!(batch.key_counts["PACT:ghost:x"], 1);
        assert_eq!(batch.incidents.len(), 3);
        let login = batch.incidents.values().find(|d| d.count == 2).unwrap();
        let login = login.new.as_ref().unwrap();
        assert_eq!(login.component_id(), "auth");
        assert_eq!(login.method(), "login");
        assert_eq!(login.sample(), "ERROR [PACT:auth:login] user 12 failed");
        let gdpr = batch
            .incidents
            .values()
            .filter_map(|d| d.new.as_ref())
            .find(|d| d.pact_key().is_empty());
        let gdpr = gdpr.unwrap();
        assert_eq!(gdpr.severity, Severity::High);
        assert_eq!(gdpr.attribution, AttributionStatus::Unattributed);
        assert!(agg.is_empty());
    }

    #[test]
    fn a_fallback_key_counts_only_when_the_line_has_none() {
        let mut m = Manifest::default();
        m.insert(ManifestEntry::new("auth"));
        let mut agg = LineAggregator::new(&LiveRules::with_manifest(m), Arc::from("hook"));
        agg.add_text(b"login failed", Some(b"PACT:auth:login"));
        agg.add_text(b"boom", Some(b"auth:logout"));
        agg.add_text(b"ERROR [PACT:pay:charge] x", Some(b"PACT:auth:login"));
        agg.add_text(b"no key", Some(b"not a key!"));
        agg.add_text(b"no key either", Some(b"PACT:auth:login trailing"));
        let c = agg.counts();
        assert_eq!(c.keyed_lines, 3);
        assert_eq!(c.registered_lines, 2);
        assert_eq!(c.unregistered_lines, 1);
        assert_eq!(c.unattributed_lines, 2);
        let batch = agg.take_batch();
        assert_eq!(batch.key_counts["PACT:auth:login"], 1);
        assert_eq!(batch.key_counts["PACT:auth:logout"], 1);
        assert_eq!(batch.key_counts["PACT:pay:charge"], 1);
        assert_eq!(batch.key_counts.len(), 3);
        let login = batch
            .incidents
            .values()
            .filter_map(|d| d.new.as_ref())
            .find(|n| n.sample() == "login failed")
            .unwrap();
        assert_eq!(login.component_id(), "auth");
        assert_eq!(login.pact_key(), "PACT:auth:login");
    }

    #[test]
    fn only_the_first_sighting_in_a_run_carries_the_description() {
        let shared = Arc::new(SharedFingerprints::new());
        let m = LiveRules::with_manifest(Manifest::default());
        let scanner = Scanner::new(["ERROR"]).unwrap();
        let mut a = LineAggregator::new(&m, Arc::from("a")).with_shared(shared.clone());
        let mut b = LineAggregator::new(&m, Arc::from("b")).with_shared(shared);
        let _ = scanner.scan(b"ERROR x 1\nERROR y\n", &mut a);
        let _ = scanner.scan(b"ERROR x 2\nERROR z\n", &mut b);
        let (a, b) = (a.take_batch(), b.take_batch());
        assert!(a.incidents.values().all(|d| d.new.is_some()));
        let described = b.incidents.values().filter(|d| d.new.is_some()).count();
        assert_eq!(described, 1, "only `ERROR z` is new to b");
    }

    #[test]
    fn a_new_fingerprint_of_a_key_over_its_budget_travels_without_a_description() {
        let shared = Arc::new(SharedFingerprints::new());
        let m = LiveRules::with_manifest(Manifest::default());
        let mut a = LineAggregator::new(&m, Arc::from("a")).with_shared(shared.clone());
        // Described before the key overflowed: counted in the map as before.
        let known = a.add_text(b"ERROR [PACT:noisy:emit] alpha", None);
        shared.mark_overflowing("PACT:noisy:emit");
        shared.mark_overflowing("PACT:noisy:emit");
        a.add_text(b"ERROR [PACT:noisy:emit] alpha", None);
        let x = a.add_text(b"ERROR [PACT:noisy:emit] bravo", None);
        let y = a.add_text(b"ERROR [PACT:noisy:emit] charlie", None);
        a.add_text(b"ERROR [PACT:noisy:emit] bravo", None);
        // Another key is described as usual.
        a.add_text(b"ERROR [PACT:calm:emit] delta", None);
        let batch = a.take_batch();
        assert_eq!(batch.incidents[&known].count, 2);
        assert_eq!(batch.incidents.len(), 2, "alpha and delta");
        assert!(batch.incidents.values().all(|d| d.new.is_some()));
        assert_eq!(batch.undescribed.len(), 1);
        let u = &batch.undescribed[0];
        assert_eq!(&*u.key, "PACT:noisy:emit");
        assert_eq!(u.lines, [x, y, x], "a fingerprint per line");
        assert_eq!(batch.key_counts["PACT:noisy:emit"], 5);
        assert!(a.is_empty());
    }
}
