//! The cardinality guard: at most `grouping.max_new_incidents_per_key` new incidents per
//! key per window; past it, the key's new fingerprints fold into ONE overflow incident.
//!
//! Real logs carry user names, paths and words the normaliser does not know, and a key whose
//! every line is different would otherwise open an incident per line: a store 40 times the
//! size of the logs, one event and one fixer candidate per line. The guard keeps the count
//! per key in the store (`cardinality_windows`: key → (window start µs, new incidents in
//! it)), written in the transaction that creates the incidents, so it survives restarts and
//! a crash never double-counts. A window starts at the first new incident after the previous
//! one ended.
//!
//! The overflow incident of a key has the fingerprint of `<key>\0<overflow>` (deterministic,
//! and no normalised line contains a NUL followed by that token by accident, as lines with
//! NUL bytes are rare and the token is Sentinel's), the key's attribution, an exact line count, the first few
//! lines that overflowed, and [`Overflow`] with a hint. It is never actionable: the fixer
//! sees no fix job for it, nor for the fingerprints it absorbed. `overflow_incidents` (overflow
//! fingerprint → (key, folded fingerprints)) lists them for `sentinel_incidents_overflow_total`.
//!
//! An incident that existed before its key overflowed keeps counting as itself: only
//! fingerprints unknown to the store fold.

use redb::{ReadableTable, Table, TableDefinition};

use super::NewIncident;
use super::incident::{Incident, IncidentStatus, Overflow, lossy_prefix};
use crate::scan::Fingerprint;

/// `cardinality_windows`: PACT key (`""`: unattributed) → (window start µs, new incidents
/// opened in the window).
pub(crate) const GUARD_WINDOWS: TableDefinition<&str, (u64, u64)> =
    TableDefinition::new("cardinality_windows");

/// `overflow_incidents`: overflow fingerprint → (key, new fingerprints folded).
pub(crate) const OVERFLOWS: TableDefinition<u64, (&str, u64)> =
    TableDefinition::new("overflow_incidents");

/// Lines kept in an overflow incident's [`Overflow::samples`].
pub const OVERFLOW_SAMPLES: usize = 5;

/// The longest overflow sample kept, in bytes.
pub const OVERFLOW_SAMPLE_BYTES: usize = 512;

/// The guard's settings (`grouping.max_new_incidents_per_key`, `grouping.window_seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CardinalityGuard {
    /// New incidents a key may open per window.
    pub max_new_per_key: u64,
    /// The window, in µs.
    pub window_us: u64,
}

impl Default for CardinalityGuard {
    fn default() -> Self {
        CardinalityGuard::new(
            crate::config::DEFAULT_MAX_NEW_INCIDENTS_PER_KEY,
            crate::config::DEFAULT_GROUPING_WINDOW_SECONDS,
        )
    }
}

impl CardinalityGuard {
    /// `max_new_per_key` new incidents per `window_seconds`.
    pub fn new(max_new_per_key: u64, window_seconds: u64) -> CardinalityGuard {
        CardinalityGuard {
            max_new_per_key,
            window_us: window_seconds.saturating_mul(1_000_000),
        }
    }

    /// The guard of a config's `grouping` section.
    pub fn from_config(g: &crate::config::GroupingConfig) -> CardinalityGuard {
        CardinalityGuard::new(g.max_new_incidents_per_key, g.window_seconds)
    }

    /// Whether `key` may open one more incident at `now_us`; if so, counts it (in
    /// `windows`, written back by [`Windows::store`]).
    pub(crate) fn admit(
        &self,
        windows: &mut Windows<'_>,
        key: &str,
        now_us: u64,
    ) -> Result<bool, redb::StorageError> {
        let slot = match windows.read.get_mut(key) {
            Some(slot) => slot,
            None => {
                let stored = windows.table.get(key)?.map(|v| v.value());
                windows.read.entry(key.to_string()).or_insert(stored)
            }
        };
        let (start, n) = match *slot {
            Some((start, n)) if now_us.saturating_sub(start) < self.window_us => (start, n),
            _ => (now_us, 0),
        };
        if n >= self.max_new_per_key {
            return Ok(false);
        }
        *slot = Some((start, n + 1));
        windows.dirty.insert(key.to_string());
        Ok(true)
    }
}

/// The keys' windows as one transaction reads and moves them: each key's row is read once
/// and written once ([`Windows::store`]), not at every new incident.
pub(crate) struct Windows<'t> {
    table: Table<'t, &'static str, (u64, u64)>,
    read: std::collections::HashMap<String, Option<(u64, u64)>>,
    dirty: std::collections::HashSet<String>,
}

impl<'t> Windows<'t> {
    /// The windows of `txn`.
    pub(crate) fn open(txn: &'t redb::WriteTransaction) -> Result<Self, redb::TableError> {
        Ok(Windows {
            table: txn.open_table(GUARD_WINDOWS)?,
            read: std::collections::HashMap::new(),
            dirty: std::collections::HashSet::new(),
        })
    }

    /// Writes back the windows that moved.
    pub(crate) fn store(mut self) -> Result<(), redb::StorageError> {
        for key in &self.dirty {
            if let Some(Some(w)) = self.read.get(key) {
                self.table.insert(key.as_str(), *w)?;
            }
        }
        Ok(())
    }
}

/// The fingerprint of `key`'s overflow incident.
pub fn overflow_fingerprint(key: &str) -> Fingerprint {
    Fingerprint(xxhash_rust::xxh3::xxh3_64(overflow_text(key).as_bytes()))
}

/// The normalised text of `key`'s overflow incident (as its identity is hashed).
fn overflow_text(key: &str) -> String {
    format!("{key}\0<overflow>")
}

/// What one transaction folds into one key's overflow incident.
#[derive(Debug)]
pub(crate) struct Fold {
    /// The overflow incident's fingerprint.
    pub fp: u64,
    /// Lines folded.
    pub lines: u64,
    /// New fingerprints folded.
    pub fingerprints: u64,
    /// The first folded lines.
    pub samples: Vec<String>,
    /// The first folded line's description (the overflow incident is created from it);
    /// `None` when every fingerprint folded came without one ([`Folds::add_undescribed`]).
    pub first: Option<NewIncident>,
}

/// The folds of one transaction, by key, in the order keys first overflowed.
#[derive(Debug, Default)]
pub(crate) struct Folds {
    pub by_key: Vec<(String, Fold)>,
}

impl Folds {
    /// Folds a new fingerprint's `lines` into its key's overflow incident; returns the
    /// overflow fingerprint.
    pub(crate) fn add(&mut self, new: &NewIncident, lines: u64) -> Fingerprint {
        let fold = self.fold(new.pact_key(), lines, 1);
        if fold.first.is_none() {
            fold.first = Some(new.clone());
        }
        if fold.samples.len() < OVERFLOW_SAMPLES {
            fold.samples
                .push(lossy_prefix(new.sample().as_bytes(), OVERFLOW_SAMPLE_BYTES));
        }
        Fingerprint(fold.fp)
    }

    /// Folds `lines` lines of `fingerprints` new fingerprints of `key` that came without a
    /// description (see [`super::Undescribed`]): counted, with no sample.
    pub(crate) fn add_undescribed(&mut self, key: &str, lines: u64, fingerprints: u64) {
        self.fold(key, lines, fingerprints);
    }

    /// `key`'s fold, with `fingerprints` more fingerprints of `lines` lines.
    fn fold(&mut self, key: &str, lines: u64, fingerprints: u64) -> &mut Fold {
        let i = match self.by_key.iter().position(|(k, _)| k == key) {
            Some(i) => i,
            None => {
                self.by_key.push((
                    key.to_string(),
                    Fold {
                        fp: overflow_fingerprint(key).0,
                        lines: 0,
                        fingerprints: 0,
                        samples: Vec::new(),
                        first: None,
                    },
                ));
                self.by_key.len() - 1
            }
        };
        let fold = &mut self.by_key[i].1;
        fold.lines += lines;
        fold.fingerprints += fingerprints;
        fold
    }
}

/// The hint an overflow incident carries.
pub fn overflow_hint(key: &str, guard: &CardinalityGuard) -> String {
    let who = if key.is_empty() {
        "unattributed lines".to_string()
    } else {
        format!("key {key}")
    };
    format!(
        "{who} opened more than {} new incidents within {} s: its messages carry variable \
         parts the normaliser keeps (names, paths, words). Add a `grouping.rules` replacement \
         for them; until then its new fingerprints are counted here",
        guard.max_new_per_key,
        guard.window_us / 1_000_000
    )
}

/// A new overflow incident for `key`, created from its first folded line.
pub(crate) fn new_overflow_incident(
    id: String,
    key: &str,
    fold: &Fold,
    guard: &CardinalityGuard,
    now: jiff::Timestamp,
) -> Incident {
    // A key is said to be over its budget only after a transaction folded a described
    // fingerprint of it, which created its overflow incident: a fold without any
    // description finds it unless it went in between (then it is recreated from the key).
    let (attribution, severity, component, method, sample, source) = match &fold.first {
        Some(f) => (
            f.attribution,
            f.severity,
            f.component_id(),
            f.method(),
            f.sample(),
            &*f.source,
        ),
        None => {
            let mut parts = key.strip_prefix("PACT:").unwrap_or("").splitn(2, ':');
            (
                if key.is_empty() {
                    crate::attribute::AttributionStatus::Unattributed
                } else {
                    crate::attribute::AttributionStatus::Unregistered
                },
                crate::attribute::Severity::Medium,
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
                "",
                "",
            )
        }
    };
    Incident {
        id,
        fingerprint: Fingerprint(fold.fp),
        normalized: lossy_prefix(
            overflow_text(key).as_bytes(),
            crate::scan::fingerprint::NORMALIZED_KEEP_BYTES,
        ),
        count: fold.lines,
        first_seen: now,
        last_seen: now,
        attribution,
        component_id: component.to_string(),
        method: method.to_string(),
        pact_key: key.to_string(),
        severity,
        status: IncidentStatus::Detected,
        sample: sample.to_string(),
        source: source.to_string(),
        resolution: String::new(),
        overflow: Some(Overflow {
            key: key.to_string(),
            high_cardinality: true,
            folded_fingerprints: fold.fingerprints,
            samples: fold.samples.clone(),
            hint: overflow_hint(key, guard),
        }),
    }
}

/// Adds `fold` to an existing overflow incident's record.
pub(crate) fn extend_overflow(
    inc: &mut Incident,
    key: &str,
    fold: &Fold,
    guard: &CardinalityGuard,
) {
    let o = inc.overflow.get_or_insert_with(|| Overflow {
        key: key.to_string(),
        high_cardinality: true,
        ..Overflow::default()
    });
    o.folded_fingerprints += fold.fingerprints;
    for s in &fold.samples {
        if o.samples.len() >= OVERFLOW_SAMPLES {
            break;
        }
        o.samples.push(s.clone());
    }
    o.hint = overflow_hint(key, guard);
}

/// Every overflowing key with its folded fingerprints, by key.
pub(crate) fn read_overflows(
    t: &impl ReadableTable<u64, (&'static str, u64)>,
) -> Result<Vec<(String, u64)>, redb::StorageError> {
    let mut out = Vec::new();
    for row in t.iter()? {
        let (_, v) = row?;
        let (key, n) = v.value();
        out.push((key.to_string(), n));
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::{AttributionStatus, Severity};
    use crate::store::{IncidentDelta, IngestBatch, Store};

    fn new_line(fp: u64, key: &str, line: &str) -> IncidentDelta {
        let mut d = IncidentDelta::new(
            Fingerprint(fp),
            1,
            line,
            AttributionStatus::Registered,
            Severity::Medium,
        );
        if let Some(n) = d.new.as_mut() {
            n.set_pact_key(key);
        }
        d
    }

    fn batch(deltas: impl IntoIterator<Item = IncidentDelta>) -> IngestBatch {
        let mut b = IngestBatch::new();
        for d in deltas {
            b.incidents.insert(d.fingerprint, d);
        }
        b
    }

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn past_the_budget_new_fingerprints_fold_and_the_window_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = Store::open(&path).unwrap();
        store.set_cardinality_guard(CardinalityGuard::new(3, 3600));
        store.set_fix_policy(crate::store::FixPolicy::new(
            &crate::config::ErrorThreshold::default(),
            true,
        ));
        let t0 = ts("2026-12-06T10:00:00Z");
        // Five new fingerprints of one key, one of another: the first key opens three.
        let o = store
            .apply(
                &batch(
                    (1..=5)
                        .map(|i| new_line(i, "PACT:a:b", &format!("a {i}")))
                        .chain([new_line(99, "PACT:c:d", "c")]),
                ),
                t0,
            )
            .unwrap();
        assert_eq!(o.folded.len(), 2);
        let over = overflow_fingerprint("PACT:a:b");
        assert!(o.folded.iter().all(|(_, to)| *to == over));
        // Three of a:b, one of c:d, and the overflow incident.
        assert_eq!(o.created.len(), 5);
        assert_eq!(store.incident_count().unwrap(), 5);
        let id = &o.created_ids[o.created.iter().position(|f| *f == over).unwrap()];
        let inc = store.incident(id).unwrap().unwrap();
        assert_eq!(inc.count, 2);
        let ov = inc.overflow.as_ref().unwrap();
        assert!(ov.high_cardinality);
        assert_eq!(ov.folded_fingerprints, 2);
        assert_eq!(ov.samples, ["a 4", "a 5"]);
        assert!(ov.hint.contains("grouping.rules"), "{}", ov.hint);
        assert_eq!(inc.pact_key, "PACT:a:b");
        // No fix job for the overflow incident, whatever the threshold.
        let jobs = store.fix_jobs().unwrap();
        assert_eq!(jobs.len(), 4, "one per admitted incident: {jobs:?}");
        assert!(jobs.iter().all(|j| j.incident_id != *id), "{jobs:?}");
        assert_eq!(inc.status, IncidentStatus::Detected);
        drop(store);

        // After a restart, within the hour: the key is still full; an existing incident of
        // it keeps counting as itself.
        let store = Store::open(&path).unwrap();
        store.set_cardinality_guard(CardinalityGuard::new(3, 3600));
        store.set_fix_policy(crate::store::FixPolicy::new(
            &crate::config::ErrorThreshold::default(),
            true,
        ));
        let t1 = ts("2026-12-06T10:30:00Z");
        let o = store
            .apply(
                &batch([
                    new_line(1, "PACT:a:b", "a 1"),
                    new_line(6, "PACT:a:b", "a 6"),
                ]),
                t1,
            )
            .unwrap();
        assert_eq!(o.folded, [(Fingerprint(6), over)]);
        assert!(o.created.is_empty());
        let inc = store.incident(id).unwrap().unwrap();
        assert_eq!(inc.count, 3);
        assert_eq!(inc.overflow.as_ref().unwrap().folded_fingerprints, 3);
        assert!(!store.contains(Fingerprint(6)).unwrap());
        assert_eq!(store.overflows().unwrap(), [("PACT:a:b".to_string(), 3)]);
        // A count alone for the overflow incident adds to it and queues nothing.
        store
            .apply(&batch([IncidentDelta::count_only(over, 10)]), t1)
            .unwrap();
        assert_eq!(store.incident(id).unwrap().unwrap().count, 13);
        assert!(
            store
                .fix_jobs()
                .unwrap()
                .iter()
                .all(|j| j.incident_id != *id)
        );

        // A new window: the key may open incidents again.
        let t2 = ts("2026-12-06T11:00:01Z");
        let o = store
            .apply(&batch([new_line(7, "PACT:a:b", "a 7")]), t2)
            .unwrap();
        assert_eq!(o.created, [Fingerprint(7)]);
        assert!(o.folded.is_empty());
    }

    /// Lines of a full key sent without descriptions ([`crate::store::Undescribed`]): a
    /// fingerprint the store knows counts as itself, the others fold, with exact counts.
    #[test]
    fn undescribed_lines_fold_unless_their_fingerprint_is_known() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        store.set_cardinality_guard(CardinalityGuard::new(3, 3600));
        let t0 = ts("2026-12-06T10:00:00Z");
        let o = store
            .apply(
                &batch((1..=5).map(|i| new_line(i << 32, "PACT:a:b", &format!("a {i}")))),
                t0,
            )
            .unwrap();
        assert_eq!(o.overflowing, ["PACT:a:b"]);
        let over = overflow_fingerprint("PACT:a:b");
        let mut b = batch([new_line(20 << 32, "PACT:a:b", "a 20")]);
        let key: std::sync::Arc<str> = std::sync::Arc::from("PACT:a:b");
        for fp in [1, 8, 1, 9, 8, 8, 3] {
            crate::store::Undescribed::push(&mut b.undescribed, &key, Fingerprint(fp << 32));
        }
        let o = store.apply(&b, t0).unwrap();
        assert_eq!(
            o.folded,
            [(Fingerprint(20 << 32), over)],
            "the described one"
        );
        assert_eq!(o.folded_undescribed, 2, "8 and 9");
        assert!(o.created.is_empty());
        // (Ids are the fingerprint's top 48 bits.)
        let count = |fp: u64| {
            let id = format!("{:012x}", (fp << 32) >> 16);
            store.incident(&id).unwrap().map(|i| i.count)
        };
        assert_eq!(count(1), Some(3));
        assert_eq!(count(3), Some(2));
        assert!(!store.contains(Fingerprint(8 << 32)).unwrap());
        let inc = store
            .incident(&format!("{:012x}", over.0 >> 16))
            .unwrap()
            .unwrap();
        assert_eq!(inc.count, 2 + 1 + 4, "a 4, a 5; a 20; 8 ×3 and 9");
        let ov = inc.overflow.unwrap();
        assert_eq!(ov.folded_fingerprints, 2 + 1 + 2);
        assert_eq!(ov.samples, ["a 4", "a 5", "a 20"]);
        assert_eq!(store.overflows().unwrap(), [("PACT:a:b".to_string(), 5)]);

        // Checked absent by the producer: folded without a look-up.
        let mut b = IngestBatch::new();
        for fp in [30, 31, 30] {
            crate::store::Undescribed::push(&mut b.undescribed, &key, Fingerprint(fp << 32));
        }
        b.undescribed[0].absent = true;
        let o = store.apply(&b, t0).unwrap();
        assert_eq!(o.folded_undescribed, 2);
        let inc = store
            .incident(&format!("{:012x}", over.0 >> 16))
            .unwrap()
            .unwrap();
        assert_eq!(inc.count, 7 + 3);
        assert_eq!(inc.overflow.unwrap().folded_fingerprints, 5 + 2);
    }

    /// Undescribed lines of a key whose overflow incident is gone recreate it from the key.
    #[test]
    fn undescribed_lines_alone_make_an_overflow_incident_from_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let mut b = IngestBatch::new();
        let key: std::sync::Arc<str> = std::sync::Arc::from("PACT:noisy:emit");
        for fp in [5, 6, 5] {
            crate::store::Undescribed::push(&mut b.undescribed, &key, Fingerprint(fp));
        }
        let o = store.apply(&b, ts("2026-12-06T10:00:00Z")).unwrap();
        let over = overflow_fingerprint("PACT:noisy:emit");
        assert_eq!(o.created, [over]);
        let inc = store.incident(&o.created_ids[0]).unwrap().unwrap();
        assert_eq!(inc.count, 3);
        assert_eq!(
            (inc.component_id.as_str(), inc.method.as_str()),
            ("noisy", "emit")
        );
        assert_eq!(inc.pact_key, "PACT:noisy:emit");
        assert_eq!(inc.overflow.unwrap().folded_fingerprints, 2);
    }

    #[test]
    fn overflow_fingerprints_are_per_key_and_stable() {
        assert_eq!(
            overflow_fingerprint("PACT:a:b"),
            overflow_fingerprint("PACT:a:b")
        );
        assert_ne!(
            overflow_fingerprint("PACT:a:b"),
            overflow_fingerprint("PACT:a:c")
        );
        assert_ne!(overflow_fingerprint(""), overflow_fingerprint("PACT:a:b"));
    }
}
