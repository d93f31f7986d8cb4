//! The incident store: `state_dir/sentinel.redb`.
//!
//! One process writes (the aggregator of `watch`, or `scan`); any number of processes read
//! (`report`, `status`, the API), following the writer's commits through redb's
//! `SingleWriter` concurrency mode. A second writer is refused with
//! [`StoreError::InUse`], which names the file.
//!
//! Writes come in batches: [`Store::apply`] folds a whole [`IngestBatch`] — incident deltas,
//! per-key counters and totals — into ONE write transaction, so a crash leaves either all of
//! a batch or none of it, and the cost of a commit (an fsync) is shared by every line of the
//! batch. Never one commit per line.
//!
//! Tables (keys → values; every definition is in `schema.rs`, and `golden.rs` keeps a store
//! with a row in each, written by this schema version, readable):
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | name | u64 (`schema_version`, `wal_applied_seq`: see [`crate::ingest::wal`]) |
//! | `incidents` | fingerprint (u64) | [`Incident`] as created, versioned encoding |
//! | `incident_state` | fingerprint | count, last_seen µs (authoritative), actioned mark, id, and the status, severity and component its index entries are under: everything a batch touches, in one row (version 5, see `store/state.rs`) |
//! | `incident_ids` | incident id | fingerprint |
//! | `incidents_by_component`, `incidents_by_severity` | see `store/index.rs` | the secondary indexes (version 3): a filtered page costs what an unfiltered one does; since version 4 they are the only recency index (`recent`, a `(last_seen µs, fingerprint)` table, is gone) |
//! | `incident_tallies` | (`status`/`severity`/`component`, value) | incidents (version 3, see [`counts`]): kept in the transactions that change them |
//! | `key_counts` | PACT key | error lines carrying it |
//! | `totals` | counter name | u64 |
//! | `files` | (device, inode) | [`FilePosition`]: generation, offset, head fingerprint, path |
//! | `delivery_log` | (recorded at µs, ingest-log seq) | webhook delivery id hashes (see [`deliveries`]) |
//! | `events` | sequence | [`Event`]: the durable event log (see [`events`]) |
//! | `outbox_cursors` | sink name | newest event delivered to it (see [`cursors`]) |
//! | `source_positions` | source-defined key | source-defined bytes: where a pull source (CloudWatch) stopped, committed with its counts (see [`IngestBatch::source_positions`]) |
//! | `trend_*` | (fingerprint,) minute or hour | occurrences (see [`trend`]) |
//! | `incident_triage` | fingerprint | the daemon's LLM triage answer (see [`triage`]) |
//!
//! The last four were added after schema version 1 without changing it: they are created
//! on first use, and readers treat a missing one as empty.
//!
//! The cardinality guard's two tables were added in schema version 3 the same way (created
//! by the first transaction that needs them; a reader treats a missing one as empty):
//!
//! | table | key | value |
//! |---|---|---|
//! | `cardinality_windows` | PACT key | (window start µs, new incidents in it): the cardinality guard (see [`guard`]) |
//! | `overflow_incidents` | overflow fingerprint | (key, new fingerprints folded) (see [`guard`]) |
//!
//! The template miner's three tables (`grouping.templates`) were added the same way:
//! `templates`, `template_members` and `template_keys` (see [`templates`]).
//!
//! A database written by a newer Sentinel (schema version or value format) or a corrupt file
//! is an error naming the file; it is never silently reset.

pub mod backup;
pub mod ci;
mod codec;
pub mod counts;
pub mod cursors;
pub mod deliveries;
pub mod events;
pub mod fixes;
#[cfg(test)]
mod golden;
pub mod guard;
pub mod health;
pub mod incident;
mod index;
pub mod jobs;
pub mod migrate;
mod owner;
mod positions;
#[cfg(test)]
mod read_tests;
mod records;
pub mod retention;
mod scan_all;
mod schema;
pub mod space;
mod state;
pub mod templates;
pub mod trend;
pub mod triage;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use redb::{
    Builder, ConcurrencyMode, Database, Durability, ReadOnlyDatabase, ReadTransaction,
    ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableError,
};

pub use crate::fix::policy::FixPolicy;
pub use codec::DecodeError;
pub use counts::IncidentTallies;
pub use events::{Event, EventHook, EventKind, NewEvent};
pub use fixes::{FixResult, FixStatus, Refusal};
pub use guard::CardinalityGuard;
pub use health::{Degraded, Health};
pub use incident::{Incident, IncidentStatus, Overflow, SAMPLE_MAX_BYTES};
pub use jobs::{Action, FixJob, JobState};
use owner::read_owner;
pub use owner::{OWNER_FILE, remove_owner, write_owner};
pub use positions::{EndedGeneration, FileKey, FilePosition};
pub use schema::SCHEMA_VERSION;
use schema::*;

use crate::attribute::{AttributionStatus, Severity};
use crate::scan::Fingerprint;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process has the database open for writing.
    #[error(
        "the store {path} is in use by another Sentinel process ({}); \
         stop it or use its HTTP API",
        owner.as_deref().unwrap_or("is `sentinel watch` running?")
    )]
    InUse {
        /// The database file.
        path: PathBuf,
        /// Who holds it, from the daemon's pid file ([`OWNER_FILE`]) when there is one.
        owner: Option<String>,
    },
    /// The file is not a readable Sentinel database.
    #[error("the store {path} is corrupt or not a Sentinel database: {detail}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What was found.
        detail: String,
    },
    /// The file was written by a newer Sentinel.
    #[error(
        "the store {path} has schema version {found}, newer than this Sentinel's ({SCHEMA_VERSION}); \
         upgrade Sentinel"
    )]
    Newer {
        /// The database file.
        path: PathBuf,
        /// The version found.
        found: u64,
    },
    /// The store is being reopened after a storage error (see [`health`]).
    #[error("store {path} is unavailable: {reason}")]
    Unavailable {
        /// The database file.
        path: PathBuf,
        /// The error that made it unavailable.
        reason: String,
    },
    /// An I/O or storage error.
    #[error("store {path}: {source}")]
    Storage {
        /// The database file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: redb::Error,
    },
}

/// The change one batch of error lines makes to one incident.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct IncidentDelta {
    /// The fingerprint.
    pub fingerprint: Fingerprint,
    /// Error lines in this batch.
    pub count: u64,
    /// What a new incident is created from; `None` when the producer knows another batch
    /// carries it (a count-only delta). See [`ApplyOutcome::deferred`].
    pub new: Option<Box<NewIncident>>,
}

/// Lines of new fingerprints of one key that the producer met while the key was over the
/// cardinality guard's budget ([`ApplyOutcome::overflowing`]), sent without descriptions:
/// a fingerprint per line, 8 bytes. Those no incident has fold into the key's overflow
/// incident (see [`guard`]), the others count as themselves. A scan of a million distinct
/// errors thus builds, hands between threads and frees no million descriptions, and holds
/// no map entry per fingerprint.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Undescribed {
    /// The key.
    pub key: std::sync::Arc<str>,
    /// A fingerprint per line (repeated when lines repeat).
    pub lines: Vec<Fingerprint>,
    /// The producer checked that no incident has any of these fingerprints (against
    /// [`StoreTxn::fingerprints`], taken after the key went over its budget): they fold
    /// without a look-up each.
    pub absent: bool,
}

impl Undescribed {
    /// Adds a line of fingerprint `fp` of `key` to `list`.
    pub fn push(list: &mut Vec<Undescribed>, key: &std::sync::Arc<str>, fp: Fingerprint) {
        match list.iter_mut().find(|u| u.key == *key) {
            Some(u) => u.lines.push(fp),
            None => list.push(Undescribed {
                key: key.clone(),
                lines: vec![fp],
                absent: false,
            }),
        }
    }
}

/// The fields an incident is created with, taken from its first line.
///
/// The five texts live back to back in ONE allocation (a new fingerprint used to cost six
/// strings, allocated by a scan worker and freed by the store thread; with a million
/// distinct errors that traffic was most of the scan's CPU), and the source label is shared.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NewIncident {
    /// The normalised text, the sample, the component, the method and the key, back to back.
    text: Box<str>,
    /// Where the first four of them end in `text`.
    ends: [u32; 4],
    /// Attribution of that line.
    pub attribution: AttributionStatus,
    /// Severity of that line.
    pub severity: Severity,
    /// Where it came from.
    pub source: std::sync::Arc<str>,
}

impl NewIncident {
    /// A description: the normalised text (at most 512 bytes), the first line (at most
    /// [`SAMPLE_MAX_BYTES`]), its attribution, component, method and key, its severity and
    /// where it came from.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        normalized: &str,
        sample: &str,
        attribution: AttributionStatus,
        component_id: &str,
        method: &str,
        pact_key: &str,
        severity: Severity,
        source: std::sync::Arc<str>,
    ) -> NewIncident {
        let parts = [normalized, sample, component_id, method, pact_key];
        let mut text = String::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut ends = [0u32; 4];
        for (i, p) in parts.iter().enumerate() {
            text.push_str(p);
            if i < 4 {
                ends[i] = text.len() as u32;
            }
        }
        NewIncident {
            text: text.into_boxed_str(),
            ends,
            attribution,
            severity,
            source,
        }
    }

    fn part(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        let end = if i == 4 {
            self.text.len()
        } else {
            self.ends[i] as usize
        };
        &self.text[start..end]
    }

    /// The normalised text, at most 512 bytes.
    pub fn normalized(&self) -> &str {
        self.part(0)
    }

    /// The first line, at most [`SAMPLE_MAX_BYTES`].
    pub fn sample(&self) -> &str {
        self.part(1)
    }

    /// Its component.
    pub fn component_id(&self) -> &str {
        self.part(2)
    }

    /// Its method.
    pub fn method(&self) -> &str {
        self.part(3)
    }

    /// Its key.
    pub fn pact_key(&self) -> &str {
        self.part(4)
    }

    fn set(&mut self, i: usize, value: &str) {
        let mut p: [&str; 5] = std::array::from_fn(|j| self.part(j));
        p[i] = value;
        let source = self.source.clone();
        *self = NewIncident::new(
            p[0],
            p[1],
            self.attribution,
            p[2],
            p[3],
            p[4],
            self.severity,
            source,
        );
    }

    /// Replaces the normalised text (a template's, see [`templates`]).
    pub fn set_normalized(&mut self, v: &str) {
        self.set(0, v);
    }

    /// Replaces the sample.
    pub fn set_sample(&mut self, v: &str) {
        self.set(1, v);
    }

    /// Replaces the component.
    pub fn set_component_id(&mut self, v: &str) {
        self.set(2, v);
    }

    /// Replaces the method.
    pub fn set_method(&mut self, v: &str) {
        self.set(3, v);
    }

    /// Replaces the key.
    pub fn set_pact_key(&mut self, v: &str) {
        self.set(4, v);
    }

    /// The approximate heap bytes this holds.
    pub fn heap_bytes(&self) -> usize {
        self.text.len()
    }
}

impl IncidentDelta {
    /// A delta of `count` lines like `line`, with no component and an empty source (for
    /// tests and benches; the aggregator fills every field).
    pub fn new(
        fingerprint: Fingerprint,
        count: u64,
        line: &str,
        attribution: AttributionStatus,
        severity: Severity,
    ) -> IncidentDelta {
        IncidentDelta {
            fingerprint,
            count,
            new: Some(Box::new(NewIncident::new(
                line,
                line,
                attribution,
                "",
                "",
                "",
                severity,
                std::sync::Arc::from(""),
            ))),
        }
    }

    /// A count-only delta.
    pub fn count_only(fingerprint: Fingerprint, count: u64) -> IncidentDelta {
        IncidentDelta {
            fingerprint,
            count,
            new: None,
        }
    }

    /// Folds `other` (same fingerprint) into `self`, keeping the first creation fields.
    pub fn merge(&mut self, other: IncidentDelta) {
        debug_assert_eq!(self.fingerprint, other.fingerprint);
        self.count += other.count;
        if self.new.is_none() {
            self.new = other.new;
        }
    }
}

/// Everything one write transaction applies.
#[derive(Debug, Default, Clone)]
#[non_exhaustive]
pub struct IngestBatch {
    /// Incident deltas by fingerprint.
    pub incidents: HashMap<Fingerprint, IncidentDelta>,
    /// Error lines per PACT key.
    pub key_counts: HashMap<String, u64>,
    /// Named totals to add (`lines`, `bytes`, `error_lines`, ...).
    pub totals: BTreeMap<&'static str, u64>,
    /// The approximate memory the batch holds, as its producer counted it (merging adds).
    pub approx_bytes: usize,
    /// Positions of pull sources (a CloudWatch log group's last timestamp and the event ids
    /// seen at it), keyed and encoded by the source: written in the same transaction as the
    /// counts of the events before them, so that a restart resumes exactly after the last
    /// counted event. Merging keeps the later batch's value of a key.
    pub source_positions: BTreeMap<String, Vec<u8>>,
    /// Lines of new fingerprints of keys over their budget, by key (see [`Undescribed`]).
    pub undescribed: Vec<Undescribed>,
}

impl IngestBatch {
    /// An empty batch.
    pub fn new() -> IngestBatch {
        IngestBatch::default()
    }

    /// Whether nothing would change.
    pub fn is_empty(&self) -> bool {
        self.incidents.is_empty()
            && self.key_counts.is_empty()
            && self.totals.is_empty()
            && self.source_positions.is_empty()
            && self.undescribed.is_empty()
    }

    /// Lines held in [`IngestBatch::undescribed`].
    pub fn undescribed_lines(&self) -> usize {
        self.undescribed.iter().map(|u| u.lines.len()).sum()
    }

    fn merge_undescribed(&mut self, other: Vec<Undescribed>) {
        for u in other {
            match self
                .undescribed
                .iter_mut()
                .find(|m| m.key == u.key && m.absent == u.absent)
            {
                Some(m) if m.lines.len() >= u.lines.len() => m.lines.extend(u.lines),
                Some(m) => {
                    let mut lines = u.lines;
                    lines.append(&mut m.lines);
                    m.lines = lines;
                }
                None => self.undescribed.push(u),
            }
        }
    }

    /// Folds `earlier`, a batch from before `self`, into `self`: the same result as
    /// `earlier.merge(self)` (the earlier batch keeps its samples; `self`'s source positions
    /// win), but walking `earlier`, for when it is the smaller of the two.
    pub fn merge_earlier(&mut self, earlier: IngestBatch) {
        for (fp, d) in earlier.incidents {
            match self.incidents.entry(fp) {
                std::collections::hash_map::Entry::Occupied(mut e) => {
                    let later = e.get_mut();
                    later.count += d.count;
                    if d.new.is_some() {
                        later.new = d.new;
                    }
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(d);
                }
            }
        }
        for (k, n) in earlier.key_counts {
            *self.key_counts.entry(k).or_default() += n;
        }
        for (k, n) in earlier.totals {
            *self.totals.entry(k).or_default() += n;
        }
        for (k, v) in earlier.source_positions {
            self.source_positions.entry(k).or_insert(v);
        }
        self.merge_undescribed(earlier.undescribed);
        self.approx_bytes += earlier.approx_bytes;
    }

    /// Folds `other` into `self` (the earlier batch keeps its samples).
    pub fn merge(&mut self, other: IngestBatch) {
        for (fp, d) in other.incidents {
            match self.incidents.entry(fp) {
                std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().merge(d),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(d);
                }
            }
        }
        for (k, n) in other.key_counts {
            *self.key_counts.entry(k).or_default() += n;
        }
        for (k, n) in other.totals {
            *self.totals.entry(k).or_default() += n;
        }
        self.source_positions.extend(other.source_positions);
        self.merge_undescribed(other.undescribed);
        self.approx_bytes += other.approx_bytes;
    }
}

/// What [`Store::apply`] did.
#[derive(Debug, Default, Clone)]
#[non_exhaustive]
pub struct ApplyOutcome {
    /// Fingerprints of incidents created by this batch.
    pub created: Vec<Fingerprint>,
    /// The ids of those incidents, in the same order.
    pub created_ids: Vec<String>,
    /// Fingerprints of existing incidents this batch updated.
    pub updated: Vec<Fingerprint>,
    /// Count-only deltas of incidents that do not exist yet: nothing of them was applied.
    /// The caller keeps them until a delta with creation fields arrives.
    pub deferred: Vec<IncidentDelta>,
    /// Incidents that turned actionable in this batch: (id, what was done).
    pub actions: Vec<(String, Action)>,
    /// New fingerprints the cardinality guard folded, with the overflow incident each went
    /// to (see [`guard`]).
    pub folded: Vec<(Fingerprint, Fingerprint)>,
    /// The keys whose new fingerprints this batch folded: over their budget for the rest of
    /// the window, so a producer may send their new fingerprints without a description
    /// ([`Undescribed`]). Empty with `grouping.templates`, whose miner may still
    /// match a new fingerprint to a known template.
    pub overflowing: Vec<String>,
    /// New fingerprints folded that came without a description ([`Undescribed`]): not in
    /// [`ApplyOutcome::folded`].
    pub folded_undescribed: u64,
}

/// What [`StoreTxn::apply`] applies to one fingerprint.
#[derive(Clone, Copy)]
enum Item<'a> {
    Delta(&'a IncidentDelta),
    /// Lines of a fingerprint of `batch.undescribed[group]`.
    Undescribed {
        count: u64,
        group: usize,
    },
}

impl<'a> Item<'a> {
    /// The delta (a count-only one for undescribed lines).
    fn delta(self, fp: u64) -> std::borrow::Cow<'a, IncidentDelta> {
        match self {
            Item::Delta(d) => std::borrow::Cow::Borrowed(d),
            Item::Undescribed { count, .. } => {
                std::borrow::Cow::Owned(IncidentDelta::count_only(Fingerprint(fp), count))
            }
        }
    }
}

enum Handle {
    Rw(Database),
    Ro(ReadOnlyDatabase),
}

/// A handle known to be writable.
struct RwDb(std::sync::Arc<Handle>);

impl std::ops::Deref for RwDb {
    type Target = Database;
    fn deref(&self) -> &Database {
        match &*self.0 {
            Handle::Rw(db) => db,
            Handle::Ro(_) => unreachable!("checked by Store::writer"),
        }
    }
}

/// The incident store. See the module docs.
pub struct Store {
    /// None while a reopen is under way (see [`health`]).
    handle: std::sync::RwLock<Option<std::sync::Arc<Handle>>>,
    /// How to open the file again (None: read-only).
    opener: Option<health::Opener>,
    health: std::sync::Arc<Health>,
    path: PathBuf,
    policy: std::sync::RwLock<FixPolicy>,
    /// The newest committed event's sequence number.
    event_head: std::sync::atomic::AtomicU64,
    event_hook: std::sync::RwLock<Option<EventHook>>,
    throttle: std::sync::Mutex<events::UpdateThrottle>,
    guard: std::sync::RwLock<CardinalityGuard>,
    /// `grouping.templates` (see [`templates`]).
    templates: std::sync::RwLock<Option<crate::scan::templates::TemplateSettings>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("writable", &self.opener.is_some())
            .finish()
    }
}

impl Store {
    /// Opens (or creates) the database at `path` for writing. The parent directory must exist.
    ///
    /// # Errors
    ///
    /// [`StoreError::InUse`] when another process writes it, [`StoreError::Corrupt`] or
    /// [`StoreError::Newer`] when it cannot be used, [`StoreError::Storage`] on I/O errors.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open = || {
            let db = builder().create(path).map_err(|e| open_error(path, e))?;
            Ok::<_, StoreError>(Store::with_handle(
                Handle::Rw(db),
                path,
                Some(Store::file_opener(path)),
            ))
        };
        let mut store = open()?;
        if let Some(from) = store.schema_version()?.filter(|&v| v < SCHEMA_VERSION) {
            // Closed first, so the copy is a clean file that opens as it is.
            drop(store);
            let backup = migrate::backup(path, from)?;
            store = open()?;
            let done = store.migrate(from, backup)?;
            // The user must learn that their file changed and where the old one is (the
            // log goes to stderr, as text or JSON).
            tracing::warn!(path = %path.display(), "{done}");
        }
        store.init_schema()?;
        store.load_event_head()?;
        Ok(store)
    }

    /// Opens an existing database read-only; works while another process writes it.
    /// Returns `Ok(None)` when the file does not exist.
    ///
    /// # Errors
    ///
    /// As [`Store::open`], except that a writer elsewhere is not an error.
    pub fn open_read_only(path: &Path) -> Result<Option<Store>, StoreError> {
        if !path.exists() {
            return Ok(None);
        }
        let db = builder()
            .open_read_only(path)
            .map_err(|e| open_error(path, e))?;
        let store = Store::with_handle(Handle::Ro(db), path, None);
        store.check_schema()?;
        store.load_event_head()?;
        Ok(Some(store))
    }

    fn with_handle(handle: Handle, path: &Path, opener: Option<health::Opener>) -> Store {
        Store {
            handle: std::sync::RwLock::new(Some(std::sync::Arc::new(handle))),
            opener,
            health: std::sync::Arc::new(Health::default()),
            path: path.to_path_buf(),
            policy: std::sync::RwLock::new(FixPolicy::default()),
            event_head: std::sync::atomic::AtomicU64::new(0),
            event_hook: std::sync::RwLock::new(None),
            throttle: std::sync::Mutex::new(events::UpdateThrottle::default()),
            guard: std::sync::RwLock::new(CardinalityGuard::default()),
            templates: std::sync::RwLock::new(None),
        }
    }

    fn load_event_head(&self) -> Result<(), StoreError> {
        let txn = self.begin_read()?;
        let head = match txn.open_table(EVENTS) {
            Ok(t) => t
                .last()
                .map_err(self.storage())?
                .map_or(0, |(k, _)| k.value()),
            Err(TableError::TableDoesNotExist(_)) => 0,
            Err(e) => return Err(self.storage()(e)),
        };
        self.event_head
            .store(head, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// The sequence number of the newest committed event (0: none yet). In a read-only
    /// store this is as of opening; see [`Store::refresh_event_head`].
    pub fn event_head(&self) -> u64 {
        self.event_head.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Re-reads the newest event's sequence number (for a read-only store following
    /// another process's writes); returns it.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn refresh_event_head(&self) -> Result<u64, StoreError> {
        self.load_event_head()?;
        Ok(self.event_head())
    }

    /// Calls `hook` with the newest sequence number after every commit that logged events
    /// (from the committing thread: keep it short, e.g. a channel send).
    pub fn set_event_hook(&self, hook: EventHook) {
        *self
            .event_hook
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(hook);
    }

    /// Up to `limit` events after sequence number `after`, oldest first.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors or an undecodable event.
    pub fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let txn = self.begin_read()?;
        let Some(t) = self.read_table(&txn, EVENTS)? else {
            return Ok(Vec::new());
        };
        let incidents = self.open_incidents(&txn)?;
        let mut out = Vec::new();
        for row in t
            .range(after.saturating_add(1)..)
            .map_err(self.storage())?
            .take(limit)
        {
            let (_, v) = row.map_err(self.storage())?;
            out.push(self.read_event(&incidents, v.value())?);
        }
        Ok(out)
    }

    /// The newest `limit` events about incident `id` still in the log, oldest first.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors or an undecodable event.
    pub fn incident_events(&self, id: &str, limit: usize) -> Result<Vec<Event>, StoreError> {
        let txn = self.begin_read()?;
        let (index, events) = match (txn.open_table(INCIDENT_EVENTS), txn.open_table(EVENTS)) {
            (Ok(i), Ok(e)) => (i, e),
            (Err(TableError::TableDoesNotExist(_)), _)
            | (_, Err(TableError::TableDoesNotExist(_))) => {
                return Ok(Vec::new());
            }
            (Err(e), _) | (_, Err(e)) => return Err(self.storage()(e)),
        };
        let incidents = self.open_incidents(&txn)?;
        let mut out = Vec::new();
        for row in index
            .range((id, 0)..=(id, u64::MAX))
            .map_err(self.storage())?
            .rev()
            .take(limit)
        {
            let (k, _) = row.map_err(self.storage())?;
            let seq = k.value().1;
            if let Some(v) = events.get(seq).map_err(self.storage())? {
                out.push(self.read_event(&incidents, v.value())?);
            }
        }
        out.reverse();
        Ok(out)
    }

    /// The incident records of `txn`.
    fn open_incidents(&self, txn: &ReadTransaction) -> Result<records::ReadRecords, StoreError> {
        records::ReadRecords::open(self, txn)
    }

    /// Decodes a logged event; an incident event's summary is built from the incident's
    /// record (see [`events::IncidentState`]).
    fn read_event(
        &self,
        incidents: &records::ReadRecords,
        bytes: &[u8],
    ) -> Result<Event, StoreError> {
        let corrupt = |detail| StoreError::Corrupt {
            path: self.path.clone(),
            detail,
        };
        let stored = Event::decode_stored(bytes).map_err(corrupt)?;
        let record = match &stored.incident {
            Some(state) => {
                let fp = state.fingerprint.0;
                match incidents.get(fp).map_err(self.storage())? {
                    Some(v) => Some(self.decode(fp, v.value())?),
                    None => None,
                }
            }
            None => None,
        };
        Ok(stored.complete(record.as_ref()))
    }

    /// The sequence number of the oldest event still logged (0: none).
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn event_tail(&self) -> Result<u64, StoreError> {
        let txn = self.begin_read()?;
        match txn.open_table(EVENTS) {
            Ok(t) => Ok(t
                .first()
                .map_err(self.storage())?
                .map_or(0, |(k, _)| k.value())),
            Err(TableError::TableDoesNotExist(_)) => Ok(0),
            Err(e) => Err(self.storage()(e)),
        }
    }

    /// Sets when incidents become actionable and what is done then (see [`jobs`]).
    pub fn set_fix_policy(&self, policy: FixPolicy) {
        *self
            .policy
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = policy;
    }

    /// Sets the cardinality guard (see [`guard`]).
    pub fn set_cardinality_guard(&self, g: CardinalityGuard) {
        *self
            .guard
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = g;
    }

    fn cardinality_guard(&self) -> CardinalityGuard {
        *self
            .guard
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every key whose new fingerprints overflowed, with how many it folded (see [`guard`]).
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn overflows(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let txn = self.begin_read()?;
        match txn.open_table(guard::OVERFLOWS) {
            Ok(t) => guard::read_overflows(&t).map_err(self.storage()),
            Err(TableError::TableDoesNotExist(_)) => Ok(Vec::new()),
            Err(e) => Err(self.storage()(e)),
        }
    }

    fn fix_policy(&self) -> FixPolicy {
        *self
            .policy
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The fix jobs, in queue order.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors or an undecodable job.
    pub fn fix_jobs(&self) -> Result<Vec<FixJob>, StoreError> {
        let txn = self.begin_read()?;
        let Some(t) = self.read_table(&txn, FIX_JOBS)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for row in t.iter().map_err(self.storage())? {
            let (_, v) = row.map_err(self.storage())?;
            out.push(
                FixJob::decode(v.value()).map_err(|detail| StoreError::Corrupt {
                    path: self.path.clone(),
                    detail,
                })?,
            );
        }
        Ok(out)
    }

    /// The jobs still queued or running, in queue order.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors or an undecodable job.
    pub fn open_jobs(&self) -> Result<Vec<FixJob>, StoreError> {
        let txn = self.begin_read()?;
        let (open, jobs) = match (txn.open_table(JOBS_OPEN), txn.open_table(FIX_JOBS)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(TableError::TableDoesNotExist(_)), _)
            | (_, Err(TableError::TableDoesNotExist(_))) => return Ok(Vec::new()),
            (Err(e), _) | (_, Err(e)) => return Err(self.storage()(e)),
        };
        let mut out = Vec::new();
        for row in open.iter().map_err(self.storage())? {
            let (k, _) = row.map_err(self.storage())?;
            if let Some(v) = jobs.get(k.value()).map_err(self.storage())? {
                out.push(
                    FixJob::decode(v.value()).map_err(|detail| StoreError::Corrupt {
                        path: self.path.clone(),
                        detail,
                    })?,
                );
            }
        }
        Ok(out)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn storage<E: Into<redb::Error>>(&self) -> impl Fn(E) -> StoreError + '_ {
        |e| {
            let e: redb::Error = e.into();
            match e {
                redb::Error::Corrupted(detail) => StoreError::Corrupt {
                    path: self.path.clone(),
                    detail,
                },
                source => {
                    if matches!(source, redb::Error::PreviousIo | redb::Error::Io(_)) {
                        // The handle is unusable until reopened (see `health`).
                        self.health.set_degraded(&source.to_string());
                    }
                    StoreError::Storage {
                        path: self.path.clone(),
                        source,
                    }
                }
            }
        }
    }

    /// The open handle (none while a reopen is under way).
    fn handle(&self) -> Result<std::sync::Arc<Handle>, StoreError> {
        self.handle
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or_else(|| StoreError::Unavailable {
                path: self.path.clone(),
                reason: self
                    .health
                    .degraded()
                    .map_or_else(|| "reopening".to_string(), |d| d.reason),
            })
    }

    /// `def` in the read transaction `txn`; `None` when no write has created it yet (a
    /// store that never held such rows reads as empty).
    fn read_table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        txn: &ReadTransaction,
        def: TableDefinition<K, V>,
    ) -> Result<Option<redb::ReadOnlyTable<K, V>>, StoreError> {
        match txn.open_table(def) {
            Ok(t) => Ok(Some(t)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(self.storage()(e)),
        }
    }

    fn begin_read(&self) -> Result<ReadTransaction, StoreError> {
        match &*self.handle()? {
            Handle::Rw(db) => db.begin_read(),
            Handle::Ro(db) => db.begin_read(),
        }
        .map_err(self.storage())
    }

    fn writer(&self) -> Result<RwDb, StoreError> {
        let h = self.handle()?;
        match &*h {
            Handle::Rw(_) => Ok(RwDb(h)),
            Handle::Ro(_) => Err(StoreError::Storage {
                path: self.path.clone(),
                source: redb::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "store opened read-only",
                )),
            }),
        }
    }

    fn init_schema(&self) -> Result<(), StoreError> {
        match self.schema_version()? {
            Some(v) if v > SCHEMA_VERSION => Err(StoreError::Newer {
                path: self.path.clone(),
                found: v,
            }),
            Some(_) => Ok(()),
            None => {
                let db = self.writer()?;
                let txn = db.begin_write().map_err(self.storage())?;
                {
                    let has_tables = txn.list_tables().map_err(self.storage())?.next().is_some();
                    if has_tables {
                        return Err(StoreError::Corrupt {
                            path: self.path.clone(),
                            detail: "tables without a schema version".into(),
                        });
                    }
                    let mut meta = txn.open_table(META).map_err(self.storage())?;
                    meta.insert("schema_version", SCHEMA_VERSION)
                        .map_err(self.storage())?;
                    records::Records::open(self, &txn)?;
                    txn.open_table(schema::STATE).map_err(self.storage())?;
                    txn.open_table(INCIDENT_IDS).map_err(self.storage())?;
                    txn.open_table(KEY_COUNTS).map_err(self.storage())?;
                    txn.open_table(TOTALS).map_err(self.storage())?;
                    index::Indexer::open(self, &txn)?;
                }
                txn.commit().map_err(self.storage())
            }
        }
    }

    fn check_schema(&self) -> Result<(), StoreError> {
        match self.schema_version()? {
            Some(v) if v > SCHEMA_VERSION => Err(StoreError::Newer {
                path: self.path.clone(),
                found: v,
            }),
            Some(_) => Ok(()),
            None => Err(StoreError::Corrupt {
                path: self.path.clone(),
                detail: "no schema version".into(),
            }),
        }
    }

    fn schema_version(&self) -> Result<Option<u64>, StoreError> {
        self.meta_value("schema_version")
    }

    /// A counter kept in `meta` (e.g. `wal_applied_seq`); None when never set.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn meta_value(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let txn = self.begin_read()?;
        let meta = match txn.open_table(META) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.storage()(e)),
        };
        Ok(meta.get(name).map_err(self.storage())?.map(|v| v.value()))
    }

    /// Applies a batch in one durable write transaction.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the transaction cannot be committed; then nothing of the batch
    /// was applied.
    pub fn apply(&self, batch: &IngestBatch, now: Timestamp) -> Result<ApplyOutcome, StoreError> {
        let mut txn = self.begin_write()?;
        let outcome = txn.apply(batch, now)?;
        txn.commit()?;
        Ok(outcome)
    }

    /// Starts a durable write transaction: everything done through it commits together or
    /// not at all (see [`StoreTxn`]).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store is read-only or the transaction cannot start.
    pub fn begin_write(&self) -> Result<StoreTxn<'_>, StoreError> {
        let db = self.writer()?;
        let mut txn = db.begin_write().map_err(self.storage())?;
        txn.set_durability(Durability::Immediate)
            .map_err(self.storage())?;
        Ok(StoreTxn {
            store: self,
            txn,
            next_event: None,
        })
    }

    /// Every persisted file position (see [`FilePosition`]).
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors or an undecodable record.
    pub fn file_positions(&self) -> Result<HashMap<FileKey, FilePosition>, StoreError> {
        let txn = self.begin_read()?;
        let Some(t) = self.read_table(&txn, FILES)? else {
            return Ok(HashMap::new());
        };
        let mut out = HashMap::new();
        for e in t.iter().map_err(self.storage())? {
            let (k, v) = e.map_err(self.storage())?;
            let (dev, ino) = k.value();
            let pos = FilePosition::decode(v.value()).map_err(|detail| StoreError::Corrupt {
                path: self.path.clone(),
                detail: format!("file position ({dev}, {ino}): {detail}"),
            })?;
            out.insert(FileKey { dev, ino }, pos);
        }
        Ok(out)
    }

    /// The pull-source positions whose key starts with `prefix` (see
    /// [`IngestBatch::source_positions`]), in key order.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn source_positions(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.begin_read()?;
        let Some(t) = self.read_table(&txn, schema::SOURCE_POSITIONS)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for e in t.range(prefix..).map_err(self.storage())? {
            let (k, v) = e.map_err(self.storage())?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Whether an incident with this fingerprint exists.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn contains(&self, fp: Fingerprint) -> Result<bool, StoreError> {
        let txn = self.begin_read()?;
        let t = records::ReadRecords::open(self, &txn)?;
        t.contains(fp.0).map_err(self.storage())
    }

    /// Those of `fps` that have an incident, in one read transaction.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn existing_of<'a>(
        &self,
        fps: impl IntoIterator<Item = &'a Fingerprint>,
    ) -> Result<Vec<Fingerprint>, StoreError> {
        let txn = self.begin_read()?;
        let t = records::ReadRecords::open(self, &txn)?;
        let mut out = Vec::new();
        for fp in fps {
            if t.contains(fp.0).map_err(self.storage())? {
                out.push(*fp);
            }
        }
        Ok(out)
    }

    /// The number of incidents.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn incident_count(&self) -> Result<u64, StoreError> {
        let txn = self.begin_read()?;
        let t = records::ReadRecords::open(self, &txn)?;
        t.len().map_err(self.storage())
    }

    /// Up to `limit` incidents, most recently seen first.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors or an undecodable record.
    pub fn recent_incidents(&self, limit: usize) -> Result<Vec<Incident>, StoreError> {
        Ok(self
            .incidents_page(&IncidentFilter::default(), None, None, limit)?
            .0)
    }

    /// Up to `limit` incidents matching `filter`, most recently seen first (the first page
    /// of [`Store::incidents_page`]).
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors or an undecodable record.
    pub fn find_incidents(
        &self,
        filter: &IncidentFilter,
        limit: usize,
    ) -> Result<Vec<Incident>, StoreError> {
        Ok(self.incidents_page(filter, None, None, limit)?.0)
    }

    /// One page of incidents matching `filter`, most recently seen first: those strictly
    /// older than `before` (a recency key, `(last_seen µs, fingerprint)`; from
    /// the newest when `None`) and last seen at or after `since`. Returns the page and,
    /// when more may follow, the key to pass as `before` for the next page.
    ///
    /// The position is a key, not an offset: incidents that arrive or move while a client
    /// pages sort before the position and do not shift the pages behind it (no duplicates).
    ///
    /// The page merges the ranges of the secondary indexes (`store/index.rs`) the filter
    /// admits (without one, all 35 of the severity index): a page costs about `limit` index
    /// reads and record loads, whether many, few or no incidents match, and for any
    /// combination of filters.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors or an undecodable record.
    pub fn incidents_page(
        &self,
        filter: &IncidentFilter,
        since: Option<Timestamp>,
        before: Option<RecentKey>,
        limit: usize,
    ) -> Result<(Vec<Incident>, Option<RecentKey>), StoreError> {
        let txn = self.begin_read()?;
        let since_us = since.map_or(0, micros);
        if limit == 0 {
            return Ok((Vec::new(), None));
        }
        let Some((keys, next)) = self.indexed_page(&txn, filter, since_us, before, limit)? else {
            // A store without indexes (an older schema, read as it is).
            return self.recent_page(&txn, filter, since_us, before, limit);
        };
        let incidents = records::ReadRecords::open(self, &txn)?;
        let counts = state::ReadCounts::open(self, &txn)?;
        let mut out = Vec::with_capacity(keys.len());
        for (_, fp) in keys {
            if let Some(inc) = self.load(&incidents, &counts, fp)? {
                debug_assert!(filter.matches(&inc), "index out of step for {fp:016x}");
                out.push(inc);
            }
        }
        Ok((out, next))
    }

    /// [`Store::incidents_page`] along the recency index of a store older than version 3
    /// (read as it is by a read-only handle), testing each incident against `filter`.
    fn recent_page(
        &self,
        txn: &ReadTransaction,
        filter: &IncidentFilter,
        since_us: u64,
        before: Option<RecentKey>,
        limit: usize,
    ) -> Result<(Vec<Incident>, Option<RecentKey>), StoreError> {
        let Some(recent) = self.read_table(txn, RECENT)? else {
            return Ok((Vec::new(), None));
        };
        let incidents = records::ReadRecords::open(self, txn)?;
        let counts = state::ReadCounts::open(self, txn)?;
        let rows = match before {
            Some(b) => recent.range(..b),
            None => recent.range::<(u64, u64)>(..),
        }
        .map_err(self.storage())?;
        let mut out = Vec::new();
        let mut last_key = None;
        for entry in rows.rev() {
            let (k, _) = entry.map_err(self.storage())?;
            let key = k.value();
            if key.0 < since_us {
                return Ok((out, None));
            }
            if out.len() >= limit {
                return Ok((out, last_key));
            }
            if let Some(inc) = self.load(&incidents, &counts, key.1)?
                && filter.matches(&inc)
            {
                out.push(inc);
                last_key = Some(key);
            }
        }
        Ok((out, None))
    }

    /// The number of incidents in each status (statuses without incidents are absent), as
    /// kept (see [`counts`]).
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn status_counts(&self) -> Result<BTreeMap<IncidentStatus, u64>, StoreError> {
        Ok(self.incident_tallies(false)?.by_status)
    }

    /// The spend entries at or after `since`: (time, incident id, micro-USD), oldest first.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn spend_since(
        &self,
        since: Timestamp,
    ) -> Result<Vec<(Timestamp, String, u64)>, StoreError> {
        let txn = self.begin_read()?;
        let Some(t) = self.read_table(&txn, SPEND)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for row in t.range((micros(since), 0)..).map_err(self.storage())? {
            let (k, v) = row.map_err(self.storage())?;
            let (incident, amount) = v.value();
            let at = Timestamp::from_microsecond(k.value().0 as i64).unwrap_or(since);
            out.push((at, incident.to_string(), amount));
        }
        Ok(out)
    }

    /// The incident with this id.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors or an undecodable record.
    pub fn incident(&self, id: &str) -> Result<Option<Incident>, StoreError> {
        let txn = self.begin_read()?;
        let ids = txn.open_table(INCIDENT_IDS).map_err(self.storage())?;
        let Some(fp) = ids.get(id).map_err(self.storage())?.map(|v| v.value()) else {
            return Ok(None);
        };
        let incidents = records::ReadRecords::open(self, &txn)?;
        let counts = state::ReadCounts::open(self, &txn)?;
        self.load(&incidents, &counts, fp)
    }

    /// Error lines per PACT key.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn key_counts(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        self.read_counters(KEY_COUNTS)
    }

    /// The named totals.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn totals(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        self.read_counters(TOTALS)
    }

    fn read_counters(
        &self,
        table: TableDefinition<&str, u64>,
    ) -> Result<BTreeMap<String, u64>, StoreError> {
        let txn = self.begin_read()?;
        let t = txn.open_table(table).map_err(self.storage())?;
        let mut out = BTreeMap::new();
        for e in t.iter().map_err(self.storage())? {
            let (k, v) = e.map_err(self.storage())?;
            out.insert(k.value().to_string(), v.value());
        }
        Ok(out)
    }

    /// An incident: its record with the authoritative hot fields.
    fn load(
        &self,
        incidents: &impl records::RecordOf,
        counts: &impl state::CountsOf,
        fp: u64,
    ) -> Result<Option<Incident>, StoreError> {
        let Some(v) = incidents.record(fp).map_err(self.storage())? else {
            return Ok(None);
        };
        let mut inc = self.decode(fp, v.value())?;
        if let Some((count, last_us)) = counts.counts_of(self, fp)? {
            inc.count = count;
            inc.last_seen = Timestamp::from_microsecond(last_us as i64).unwrap_or(inc.last_seen);
        }
        Ok(Some(inc))
    }

    fn decode(&self, fp: u64, bytes: &[u8]) -> Result<Incident, StoreError> {
        Incident::decode(bytes).map_err(|e| match e {
            DecodeError::Newer(v, _) => StoreError::Newer {
                path: self.path.clone(),
                found: v as u64,
            },
            e => StoreError::Corrupt {
                path: self.path.clone(),
                detail: format!("incident {fp:016x}: {e}"),
            },
        })
    }
}

/// A recency position: (last seen µs, fingerprint), the tail of every index key.
pub type RecentKey = (u64, u64);

/// Which incidents [`Store::find_incidents`] returns; every set field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IncidentFilter {
    /// The status.
    pub status: Option<StatusFilter>,
    /// The component id, exactly.
    pub component: Option<String>,
    /// The severity.
    pub severity: Option<Severity>,
}

/// A status condition of an [`IncidentFilter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StatusFilter {
    /// Exactly this status.
    Is(IncidentStatus),
    /// Any status that still needs attention ([`IncidentStatus::is_active`]).
    Active,
}

impl IncidentFilter {
    /// Whether no field is set (every incident passes).
    pub fn is_empty(&self) -> bool {
        self.status.is_none() && self.component.is_none() && self.severity.is_none()
    }

    /// Whether `inc` passes.
    pub fn matches(&self, inc: &Incident) -> bool {
        let status = match self.status {
            None => true,
            Some(StatusFilter::Is(s)) => inc.status == s,
            Some(StatusFilter::Active) => inc.status.is_active(),
        };
        status
            && self
                .component
                .as_ref()
                .is_none_or(|c| *c == inc.component_id)
            && self.severity.is_none_or(|s| s == inc.severity)
    }
}

/// A durable write transaction (see [`Store::begin_write`]). Dropping it without
/// [`StoreTxn::commit`] aborts it.
pub struct StoreTxn<'s> {
    store: &'s Store,
    txn: redb::WriteTransaction,
    /// The next event sequence number, once an event was logged in this transaction.
    next_event: Option<u64>,
}

impl std::fmt::Debug for StoreTxn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreTxn")
            .field("path", &self.store.path)
            .finish_non_exhaustive()
    }
}

impl StoreTxn<'_> {
    /// The fingerprints of every incident, in order, as this transaction sees them; `None`
    /// when there are more than `max`.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn fingerprints(&self, max: u64) -> Result<Option<Vec<u64>>, StoreError> {
        let st = self.store;
        let counts = self.txn.open_table(schema::STATE).map_err(st.storage())?;
        if counts.len().map_err(st.storage())? > max {
            return Ok(None);
        }
        let mut out = Vec::new();
        for row in counts.iter().map_err(st.storage())? {
            out.push(row.map_err(st.storage())?.0.value());
        }
        Ok(Some(out))
    }

    /// Folds a batch in: incident deltas, per-key counters and totals.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors; the transaction must then be dropped.
    pub fn apply(
        &mut self,
        batch: &IngestBatch,
        now: Timestamp,
    ) -> Result<ApplyOutcome, StoreError> {
        let st = self.store;
        let txn = &self.txn;
        // `grouping.templates`: new fingerprints mined into clusters first (see `templates`).
        let mined = match st.templates() {
            Some(t) => Some(templates::mine(
                st,
                txn,
                batch,
                &t,
                st.cardinality_guard().max_new_per_key,
            )?),
            None => None,
        };
        let batch = mined.as_ref().map_or(batch, |m| &m.batch);
        let mut outcome = ApplyOutcome::default();
        let mut incidents = records::Records::open(st, txn)?;
        let mut ids = txn.open_table(INCIDENT_IDS).map_err(st.storage())?;
        let mut idx = index::Indexer::open_batched(st, txn)?;
        let now_us = micros(now);
        let policy = st.fix_policy();
        let mut windows = txn.open_table(WINDOWS).map_err(st.storage())?;
        let mut jobs = txn.open_table(FIX_JOBS).map_err(st.storage())?;
        let mut open = txn.open_table(JOBS_OPEN).map_err(st.storage())?;
        let mut next_job = jobs
            .last()
            .map_err(st.storage())?
            .map_or(1, |(k, _)| k.value() + 1);
        let mut watch = txn
            .open_table(schema::REGRESSION_WATCH)
            .map_err(st.storage())?;
        let mut pending: Vec<NewEvent> = Vec::new();
        let guard = st.cardinality_guard();
        let mut guard_windows = guard::Windows::open(txn).map_err(st.storage())?;
        let mut overflows = txn.open_table(guard::OVERFLOWS).map_err(st.storage())?;
        let mut folds = guard::Folds::default();
        let mut throttle = st
            .throttle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Apply in fingerprint order: deterministic ids when two collide.
        // (Sorted with the key beside the reference: a million deltas sorted through their
        // references missed the cache at every comparison.)
        let mut deltas: Vec<(u64, Item<'_>)> = batch
            .incidents
            .iter()
            .map(|(fp, d)| (fp.0, Item::Delta(d)))
            .collect();
        // Undescribed lines: one item per fingerprint with its line count, unless the
        // producer knows none has an incident; (lines, fingerprints) folded per group.
        let mut group_folds = vec![(0u64, 0u64); batch.undescribed.len()];
        for (group, u) in batch.undescribed.iter().enumerate() {
            let mut lines: Vec<u64> = u.lines.iter().map(|fp| fp.0).collect();
            lines.sort_unstable();
            for run in lines.chunk_by(|a, b| a == b) {
                if u.absent {
                    group_folds[group].0 += run.len() as u64;
                    group_folds[group].1 += 1;
                } else {
                    deltas.push((
                        run[0],
                        Item::Undescribed {
                            count: run.len() as u64,
                            group,
                        },
                    ));
                }
            }
        }
        // A described delta before undescribed lines of the same fingerprint.
        deltas.sort_unstable_by_key(|&(fp, ref d)| (fp, matches!(d, Item::Undescribed { .. })));
        // What was counted, for the trend counters, with when the incident was last seen
        // before (`None`: new here).
        let mut counted: Vec<(u64, u64, Option<u64>)> = Vec::with_capacity(deltas.len());
        for (fp, item) in deltas {
            let d = item.delta(fp);
            let existing = idx.hot(fp)?;
            if existing.is_some() || d.new.is_some() {
                counted.push((fp, d.count, existing.map(|h| h.last_us)));
            }
            match existing {
                Some(was) => {
                    let count = was.count;
                    let last = was.last_us.max(now_us);
                    // Seen again after its fix was merged: reopened as a regression, and
                    // actionable again (a new fix generation).
                    let regressed = watch.remove(fp).map_err(st.storage())?.is_some();
                    let is = state::Hot {
                        count: count + d.count,
                        last_us: last,
                        actioned: if regressed { None } else { was.actioned },
                    };
                    // One write: the count, the recency (its index entries move with it)
                    // and, for a regression, the actioned mark.
                    idx.set_hot(fp, was, is)?;
                    outcome.updated.push(d.fingerprint);
                    if regressed {
                        windows.remove(fp).map_err(st.storage())?;
                        let v = incidents
                            .get(fp)
                            .map_err(st.storage())?
                            .map(|v| v.value().to_vec());
                        let reopened = match v {
                            Some(v) => {
                                let mut inc = st.decode(fp, &v)?;
                                inc.status = IncidentStatus::Detected;
                                inc.resolution = "regression".into();
                                Some(inc)
                            }
                            None => None,
                        };
                        if let Some(mut inc) = reopened {
                            incidents
                                .insert(fp, inc.encode().as_slice())
                                .map_err(st.storage())?;
                            idx.update(fp, &inc)?;
                            inc.count = count + d.count;
                            pending.push(NewEvent::incident(EventKind::IncidentRegressed, &inc));
                        }
                    }
                    // An overflow incident is never actionable (see `guard`).
                    let due = is.actioned.is_none()
                        && overflows.get(fp).map_err(st.storage())?.is_none()
                        && window_reached(&mut windows, fp, d.count, now_us, &policy)
                            .map_err(st.storage())?;
                    let stored = if due {
                        let v = incidents.get(fp).map_err(st.storage())?;
                        v.map(|v| v.value().to_vec())
                    } else {
                        None
                    };
                    if let Some(bytes) = stored {
                        let mut inc = st.decode(fp, &bytes)?;
                        let action = act(
                            &mut inc,
                            &policy,
                            (&mut jobs, &mut open),
                            &mut next_job,
                            now,
                        )
                        .map_err(st.storage())?;
                        idx.set_actioned(fp, Some(action_seq(&action)))?;
                        incidents
                            .insert(fp, inc.encode().as_slice())
                            .map_err(st.storage())?;
                        idx.update(fp, &inc)?;
                        inc.count = count + d.count;
                        inc.last_seen = Timestamp::from_microsecond(last as i64).unwrap_or(now);
                        throttle.due(fp, now_us);
                        pending.push(action_event(&inc, &action));
                        outcome.actions.push((inc.id.clone(), action));
                    } else if throttle.due(fp, now_us) {
                        // The count moved: logged from the row just written (its id and
                        // component), without reading (and decoding) the record (see
                        // `events::IncidentState`).
                        let (id, component) = idx.id_and_component(fp)?;
                        pending.push(NewEvent::count_moved(
                            id,
                            component,
                            d.fingerprint,
                            count + d.count,
                            Timestamp::from_microsecond(last as i64).unwrap_or(now),
                        ));
                    }
                }
                None => {
                    let Some(new) = &d.new else {
                        match item {
                            Item::Undescribed { group, .. } => {
                                group_folds[group].0 += d.count;
                                group_folds[group].1 += 1;
                            }
                            Item::Delta(d) => outcome.deferred.push(d.clone()),
                        }
                        continue;
                    };
                    // A key refused once stays refused for the rest of the batch: no
                    // look-up per folded fingerprint.
                    let refused = folds.by_key.iter().any(|(k, _)| *k == new.pact_key())
                        || !guard
                            .admit(&mut guard_windows, new.pact_key(), now_us)
                            .map_err(st.storage())?;
                    if refused {
                        // Past the key's budget: counted in its overflow incident instead.
                        counted.pop();
                        let to = folds.add(new, d.count);
                        outcome.folded.push((d.fingerprint, to));
                        continue;
                    }
                    let id = claim_id(&mut ids, d.fingerprint).map_err(st.storage())?;
                    outcome.created_ids.push(id.clone());
                    let mut incident = Incident {
                        id,
                        fingerprint: d.fingerprint,
                        normalized: new.normalized().to_string(),
                        count: d.count,
                        first_seen: now,
                        last_seen: now,
                        attribution: new.attribution,
                        component_id: new.component_id().to_string(),
                        method: new.method().to_string(),
                        pact_key: new.pact_key().to_string(),
                        severity: new.severity,
                        status: IncidentStatus::Detected,
                        sample: new.sample().to_string(),
                        source: new.source.to_string(),
                        resolution: String::new(),
                        overflow: None,
                    };
                    let mut actioned = None;
                    if window_reached(&mut windows, fp, d.count, now_us, &policy)
                        .map_err(st.storage())?
                    {
                        let action = act(
                            &mut incident,
                            &policy,
                            (&mut jobs, &mut open),
                            &mut next_job,
                            now,
                        )
                        .map_err(st.storage())?;
                        actioned = Some(action_seq(&action));
                        pending.push(NewEvent::incident(EventKind::IncidentDetected, &incident));
                        if matches!(action, Action::Escalated(_)) {
                            pending.push(action_event(&incident, &action));
                        }
                        outcome.actions.push((incident.id.clone(), action));
                    } else {
                        pending.push(NewEvent::incident(EventKind::IncidentDetected, &incident));
                    }
                    throttle.due(fp, now_us);
                    // No state row, so no record either (they are written together).
                    incidents
                        .insert_new(fp, incident.encode().as_slice())
                        .map_err(st.storage())?;
                    let hot = state::Hot {
                        count: d.count,
                        last_us: now_us,
                        actioned,
                    };
                    idx.add(fp, hot, &incident)?;
                    outcome.created.push(d.fingerprint);
                }
            }
        }
        for (u, &(lines, fps)) in batch.undescribed.iter().zip(&group_folds) {
            if fps > 0 {
                folds.add_undescribed(&u.key, lines, fps);
                outcome.folded_undescribed += fps;
            }
        }
        for (key, fold) in &folds.by_key {
            let fp = fold.fp;
            let v = incidents
                .get(fp)
                .map_err(st.storage())?
                .map(|v| v.value().to_vec());
            let existing = idx.hot(fp)?;
            counted.push((fp, fold.lines, existing.map(|h| h.last_us)));
            let total = match (v, existing) {
                (Some(v), Some(was)) => {
                    let mut inc = st.decode(fp, &v)?;
                    guard::extend_overflow(&mut inc, key, fold, &guard);
                    incidents
                        .insert(fp, inc.encode().as_slice())
                        .map_err(st.storage())?;
                    let count = was.count;
                    let last = was.last_us.max(now_us);
                    let is = state::Hot {
                        count: count + fold.lines,
                        last_us: last,
                        ..was
                    };
                    idx.set_hot(fp, was, is)?;
                    outcome.updated.push(Fingerprint(fp));
                    inc.count = count + fold.lines;
                    inc.last_seen = Timestamp::from_microsecond(last as i64).unwrap_or(now);
                    if throttle.due(fp, now_us) {
                        pending.push(NewEvent::incident(EventKind::IncidentUpdated, &inc));
                    }
                    inc_folded(&overflows, fp).map_err(st.storage())?
                }
                _ => {
                    let id = claim_id(&mut ids, Fingerprint(fp)).map_err(st.storage())?;
                    outcome.created_ids.push(id.clone());
                    let inc = guard::new_overflow_incident(id, key, fold, &guard, now);
                    incidents
                        .insert(fp, inc.encode().as_slice())
                        .map_err(st.storage())?;
                    let hot = state::Hot {
                        count: fold.lines,
                        last_us: now_us,
                        actioned: None,
                    };
                    idx.add(fp, hot, &inc)?;
                    throttle.due(fp, now_us);
                    outcome.created.push(Fingerprint(fp));
                    pending.push(NewEvent::incident(EventKind::IncidentDetected, &inc));
                    0
                }
            };
            overflows
                .insert(fp, (key.as_str(), total + fold.fingerprints))
                .map_err(st.storage())?;
        }
        guard_windows.store().map_err(st.storage())?;
        drop(overflows);
        if mined.is_none() {
            outcome.overflowing = folds.by_key.iter().map(|(k, _)| k.clone()).collect();
        }
        let mut keys = txn.open_table(KEY_COUNTS).map_err(st.storage())?;
        for (k, n) in &batch.key_counts {
            let old = keys
                .get(k.as_str())
                .map_err(st.storage())?
                .map(|v| v.value());
            keys.insert(k.as_str(), old.unwrap_or(0) + n)
                .map_err(st.storage())?;
        }
        let mut totals = txn.open_table(TOTALS).map_err(st.storage())?;
        for (k, n) in &batch.totals {
            let old = totals.get(*k).map_err(st.storage())?.map(|v| v.value());
            totals
                .insert(*k, old.unwrap_or(0) + n)
                .map_err(st.storage())?;
        }
        idx.finish()?;
        drop((incidents, ids, windows, jobs, keys, totals, watch, open));
        drop(throttle);
        if !batch.source_positions.is_empty() {
            let mut t = txn
                .open_table(schema::SOURCE_POSITIONS)
                .map_err(st.storage())?;
            for (k, v) in &batch.source_positions {
                t.insert(k.as_str(), v.as_slice()).map_err(st.storage())?;
            }
        }
        self.record_trend(&counted, now_us)?;
        self.emit_all(pending, now)?;
        if let Some(m) = &mined {
            templates::settle(st, &self.txn, m, &outcome)?;
        }
        Ok(outcome)
    }

    /// Re-attributes the stored `unregistered` incidents whose key now names a component of
    /// `manifest` (registered after they were first seen); returns how many changed.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn reattribute(
        &mut self,
        manifest: &crate::attribute::Manifest,
    ) -> Result<usize, StoreError> {
        use crate::attribute::{AttributionStatus, attribute};
        let st = self.store;
        let mut incidents = records::Records::open(st, &self.txn)?;
        let mut changed = Vec::new();
        for row in incidents.iter().map_err(st.storage())? {
            let (_, v) = row.map_err(st.storage())?;
            let Ok(mut inc) = Incident::decode(v.value()) else {
                continue;
            };
            if inc.attribution != AttributionStatus::Unregistered {
                continue;
            }
            let key = crate::scan::PactKeys::new(inc.pact_key.as_bytes()).next();
            let a = attribute(key, manifest);
            if a.status == AttributionStatus::Registered {
                inc.attribution = a.status;
                inc.component_id = String::from_utf8_lossy(a.component).into_owned();
                inc.method = String::from_utf8_lossy(a.method).into_owned();
                changed.push((inc.fingerprint.0, inc));
            }
        }
        for (k, inc) in &changed {
            incidents
                .insert(*k, inc.encode().as_slice())
                .map_err(st.storage())?;
        }
        drop(incidents);
        if !changed.is_empty() {
            let mut idx = index::Indexer::open(st, &self.txn)?;
            for (k, inc) in &changed {
                idx.update(*k, inc)?;
            }
        }
        let now = Timestamp::now();
        for (_, inc) in &changed {
            self.emit(NewEvent::incident(EventKind::IncidentUpdated, inc), now)?;
        }
        Ok(changed.len())
    }

    /// Appends a spend entry (micro-USD charged to `incident` at `now`).
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn record_spend(
        &mut self,
        incident: &str,
        micro_usd: u64,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let st = self.store;
        let mut t = self.txn.open_table(SPEND).map_err(st.storage())?;
        let at = micros(now);
        // The next sequence number at this microsecond (entries are never overwritten).
        let seq = t
            .range((at, 0)..=(at, u64::MAX))
            .map_err(st.storage())?
            .next_back()
            .transpose()
            .map_err(st.storage())?
            .map_or(0, |(k, _)| k.value().1 + 1);
        t.insert((at, seq), (incident, micro_usd))
            .map_err(st.storage())?;
        Ok(())
    }

    /// Records the position of a file: it commits with the counts its lines produced.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn set_file_position(
        &mut self,
        key: FileKey,
        pos: &FilePosition,
    ) -> Result<(), StoreError> {
        let st = self.store;
        let mut t = self.txn.open_table(FILES).map_err(st.storage())?;
        t.insert((key.dev, key.ino), pos.encode().as_slice())
            .map_err(st.storage())?;
        Ok(())
    }

    /// Forgets the position of a file.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn remove_file_position(&mut self, key: FileKey) -> Result<(), StoreError> {
        let st = self.store;
        let mut t = self.txn.open_table(FILES).map_err(st.storage())?;
        t.remove((key.dev, key.ino)).map_err(st.storage())?;
        Ok(())
    }

    /// Sets a counter kept in `meta` (see [`Store::meta_value`]).
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn set_meta(&mut self, name: &str, value: u64) -> Result<(), StoreError> {
        let st = self.store;
        let mut meta = self.txn.open_table(META).map_err(st.storage())?;
        meta.insert(name, value).map_err(st.storage())?;
        Ok(())
    }

    /// Commits durably (fsync). Nothing done through this transaction is visible or
    /// persisted before this returns `Ok`.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the commit failed; then nothing of it was applied.
    pub fn commit(self) -> Result<(), StoreError> {
        let st = self.store;
        self.txn.commit().map_err(st.storage())?;
        if let Some(next) = self.next_event {
            let head = next - 1;
            st.event_head
                .fetch_max(head, std::sync::atomic::Ordering::AcqRel);
            let hook = st
                .event_hook
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            if let Some(hook) = hook {
                hook(head);
            }
        }
        Ok(())
    }

    /// Logs an event; it is visible (and its hook called) only once this transaction
    /// commits. Returns its sequence number.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn emit(&mut self, ev: NewEvent, now: Timestamp) -> Result<u64, StoreError> {
        let seq = self.emit_all(vec![ev], now)?;
        Ok(seq)
    }

    /// Logs `evs` in order (see [`StoreTxn::emit`]), opening the log's tables once; returns
    /// the sequence number of the last (0: none).
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn emit_all(&mut self, evs: Vec<NewEvent>, now: Timestamp) -> Result<u64, StoreError> {
        if evs.is_empty() {
            return Ok(0);
        }
        let st = self.store;
        let mut t = self.txn.open_table(EVENTS).map_err(st.storage())?;
        let mut by_incident = self.txn.open_table(INCIDENT_EVENTS).map_err(st.storage())?;
        let mut seq = match self.next_event {
            Some(n) => n,
            None => t
                .last()
                .map_err(st.storage())?
                .map_or(1, |(k, _)| k.value() + 1),
        };
        for ev in &evs {
            t.insert(seq, events::encode(seq, now, ev).as_slice())
                .map_err(st.storage())?;
            if !ev.incident_id.is_empty() {
                by_incident
                    .insert((ev.incident_id.as_str(), seq), ())
                    .map_err(st.storage())?;
            }
            seq += 1;
        }
        self.next_event = Some(seq);
        Ok(seq - 1)
    }

    /// Drops up to `max` events with sequence numbers below `before`; returns how many.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors.
    pub fn prune_events(&mut self, before: u64, max: usize) -> Result<usize, StoreError> {
        let st = self.store;
        let mut t = self.txn.open_table(EVENTS).map_err(st.storage())?;
        let old: Vec<u64> = t
            .range(..before)
            .map_err(st.storage())?
            .take(max)
            .map(|r| r.map(|(k, _)| k.value()))
            .collect::<Result<_, _>>()
            .map_err(st.storage())?;
        let mut by_incident = self.txn.open_table(INCIDENT_EVENTS).map_err(st.storage())?;
        for k in &old {
            if let Some(v) = t.remove(*k).map_err(st.storage())?
                && let Ok(ev) = Event::decode(v.value())
                && !ev.incident_id.is_empty()
            {
                by_incident
                    .remove((ev.incident_id.as_str(), *k))
                    .map_err(st.storage())?;
            }
        }
        Ok(old.len())
    }
}

/// redb's page cache, capped: the default (1 GiB) would let the cache, not the data,
/// decide how much memory a scan takes.
pub const CACHE_BYTES: usize = 32 << 20;

/// Counts `n` occurrences into the incident's window; true when the threshold is reached
/// (the window is then forgotten: the incident is actioned once).
fn window_reached(
    windows: &mut redb::Table<'_, u64, (u64, u64)>,
    fp: u64,
    n: u64,
    now_us: u64,
    policy: &FixPolicy,
) -> Result<bool, redb::StorageError> {
    if n >= policy.threshold {
        if policy.threshold > 1 {
            windows.remove(fp)?;
        }
        return Ok(true);
    }
    let (start, seen) = windows.get(fp)?.map_or((now_us, 0), |v| v.value());
    let (start, seen) = if now_us.saturating_sub(start) > policy.window_us {
        (now_us, n)
    } else {
        (start, seen + n)
    };
    if seen >= policy.threshold {
        windows.remove(fp)?;
        Ok(true)
    } else {
        windows.insert(fp, (start, seen))?;
        Ok(false)
    }
}

/// What happens to an incident that turned actionable (see [`jobs`]).
fn act(
    inc: &mut Incident,
    policy: &FixPolicy,
    (jobs, open): (
        &mut redb::Table<'_, u64, &[u8]>,
        &mut redb::Table<'_, u64, ()>,
    ),
    next_job: &mut u64,
    now: Timestamp,
) -> Result<Action, redb::StorageError> {
    if policy.triage && inc.attribution == AttributionStatus::Unattributed {
        inc.status = IncidentStatus::Triaging;
        return Ok(Action::Triage);
    }
    if !policy.auto_remediate {
        inc.status = IncidentStatus::Escalated;
        inc.resolution = "auto_remediate_disabled".into();
        return Ok(Action::Escalated("auto_remediate_disabled"));
    }
    if inc.attribution != AttributionStatus::Registered {
        inc.status = IncidentStatus::Escalated;
        inc.resolution = "component_not_registered".into();
        return Ok(Action::Escalated("component_not_registered"));
    }
    let seq = *next_job;
    *next_job += 1;
    let job = FixJob::queued(seq, inc, "", now);
    jobs.insert(seq, job.encode().as_slice())?;
    open.insert(seq, ())?;
    Ok(Action::Queued(seq))
}

/// The event of an incident that turned actionable: a queued job is still `detected` (an
/// update: it is now waiting for a fixer); otherwise it was escalated.
fn action_event(inc: &Incident, action: &Action) -> NewEvent {
    match action {
        Action::Queued(_) | Action::Triage => NewEvent::incident(EventKind::IncidentUpdated, inc),
        Action::Escalated(_) => NewEvent::incident(EventKind::IncidentEscalated, inc),
    }
}

fn action_seq(a: &Action) -> u64 {
    match a {
        Action::Queued(seq) => *seq,
        Action::Escalated(_) | Action::Triage => 0,
    }
}

fn builder() -> Builder {
    let mut b = Builder::new();
    b.set_concurrency_mode(ConcurrencyMode::SingleWriter);
    b.set_cache_size(CACHE_BYTES);
    b
}

fn open_error(path: &Path, e: redb::DatabaseError) -> StoreError {
    use redb::DatabaseError as D;
    match e {
        D::DatabaseAlreadyOpen | D::LockProtocolMismatch => StoreError::InUse {
            path: path.to_path_buf(),
            owner: read_owner(path),
        },
        D::UpgradeRequired(v) => StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("old redb file format {v}"),
        },
        D::Storage(redb::StorageError::Corrupted(detail)) => StoreError::Corrupt {
            path: path.to_path_buf(),
            detail,
        },
        D::Storage(redb::StorageError::Io(io)) if io.kind() == std::io::ErrorKind::InvalidData => {
            StoreError::Corrupt {
                path: path.to_path_buf(),
                detail: io.to_string(),
            }
        }
        other => StoreError::Storage {
            path: path.to_path_buf(),
            source: other.into(),
        },
    }
}

/// The folded fingerprints `overflow_incidents` holds for `fp` (0 when none).
fn inc_folded(t: &redb::Table<u64, (&str, u64)>, fp: u64) -> Result<u64, redb::StorageError> {
    Ok(t.get(fp)?.map_or(0, |v| v.value().1))
}

pub(crate) fn micros(t: Timestamp) -> u64 {
    u64::try_from(t.as_microsecond()).unwrap_or(0)
}

/// The id of a new incident: the first 12 hex characters of its fingerprint, or (in the
/// astronomically rare case that another fingerprint has them) the next free 48-bit value.
///
/// Claims the id of the new incident `fp` by that rule in `ids`, with one insert
/// where no other incident has it (a look-up first would cost a second B-tree descent per
/// new incident): a displaced owner is put back and the next value tried.
fn claim_id(
    ids: &mut redb::Table<&str, u64>,
    fp: Fingerprint,
) -> Result<String, redb::StorageError> {
    let mut candidate = fp.0 >> 16;
    loop {
        let id = format!("{candidate:012x}");
        let owner = ids.insert(id.as_str(), fp.0)?.map(|v| v.value());
        match owner {
            Some(other) if other != fp.0 => {
                ids.insert(id.as_str(), other)?;
                candidate = (candidate + 1) & 0xffff_ffff_ffff;
            }
            _ => return Ok(id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(fp: u64, count: u64) -> IncidentDelta {
        IncidentDelta::new(
            Fingerprint(fp),
            count,
            &format!("ERROR <n> {fp}"),
            AttributionStatus::Unattributed,
            Severity::Medium,
        )
    }

    fn batch(deltas: &[(u64, u64)]) -> IngestBatch {
        let mut b = IngestBatch::new();
        for &(fp, n) in deltas {
            b.incidents.insert(Fingerprint(fp), delta(fp, n));
        }
        b.key_counts.insert("PACT:a:b".into(), 2);
        b.totals.insert("lines", 10);
        b
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn apply_creates_then_updates_and_orders_by_recency() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let out = store
            .apply(&batch(&[(1, 2), (2, 1)]), ts("2026-01-01T00:00:00Z"))
            .unwrap();
        assert_eq!(out.created.len(), 2);
        assert!(out.updated.is_empty());
        let out = store
            .apply(&batch(&[(2, 5), (3, 1)]), ts("2026-01-01T00:00:05Z"))
            .unwrap();
        assert_eq!(out.created, vec![Fingerprint(3)]);
        assert_eq!(out.updated, vec![Fingerprint(2)]);
        assert_eq!(store.incident_count().unwrap(), 3);
        let recent = store.recent_incidents(10).unwrap();
        let fps: Vec<u64> = recent.iter().map(|i| i.fingerprint.0).collect();
        assert_eq!(fps, vec![3, 2, 1]);
        assert_eq!(recent[1].count, 6);
        assert_eq!(recent[1].first_seen, ts("2026-01-01T00:00:00Z"));
        assert_eq!(store.key_counts().unwrap()["PACT:a:b"], 4);
        assert_eq!(store.totals().unwrap()["lines"], 20);
        let id = recent[0].id.clone();
        assert_eq!(id.len(), 12);
        assert_eq!(
            store.incident(&id).unwrap().unwrap().fingerprint,
            Fingerprint(3)
        );
        assert!(store.incident("ffffffffffff").unwrap().is_none());
    }

    #[test]
    fn find_incidents_filters_newest_first_and_status_counts_cover_all() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        // Never actionable: every incident stays `detected`.
        store.set_fix_policy(FixPolicy {
            threshold: u64::MAX,
            ..FixPolicy::default()
        });
        let mut at = ts("2026-01-01T00:00:00Z");
        for (fp, component, severity) in [
            (1, "auth", Severity::High),
            (2, "pay", Severity::Medium),
            (3, "auth", Severity::Medium),
            (4, "", Severity::Critical),
        ] {
            let mut d = delta(fp, 1);
            let new = d.new.as_mut().unwrap();
            new.set_component_id(component);
            new.severity = severity;
            let mut b = IngestBatch::new();
            b.incidents.insert(Fingerprint(fp), d);
            store.apply(&b, at).unwrap();
            at = at.checked_add(jiff::SignedDuration::from_secs(1)).unwrap();
        }
        let ids = |f: &IncidentFilter, limit| -> Vec<u64> {
            store
                .find_incidents(f, limit)
                .unwrap()
                .iter()
                .map(|i| i.fingerprint.0)
                .collect()
        };
        assert_eq!(ids(&IncidentFilter::default(), 100), vec![4, 3, 2, 1]);
        assert_eq!(ids(&IncidentFilter::default(), 2), vec![4, 3]);
        let auth = IncidentFilter {
            component: Some("auth".into()),
            ..IncidentFilter::default()
        };
        assert_eq!(ids(&auth, 100), vec![3, 1]);
        assert_eq!(ids(&auth, 1), vec![3]);
        let medium_auth = IncidentFilter {
            severity: Some(Severity::Medium),
            ..auth.clone()
        };
        assert_eq!(ids(&medium_auth, 100), vec![3]);
        let active = IncidentFilter {
            status: Some(StatusFilter::Active),
            ..IncidentFilter::default()
        };
        assert_eq!(ids(&active, 100).len(), 4);
        let resolved = IncidentFilter {
            status: Some(StatusFilter::Is(IncidentStatus::Resolved)),
            ..IncidentFilter::default()
        };
        assert!(ids(&resolved, 100).is_empty());
        let counts = store.status_counts().unwrap();
        assert_eq!(counts.get(&IncidentStatus::Detected), Some(&4));
        assert_eq!(counts.len(), 1);
        // An update moves an incident to the front.
        let mut b = IngestBatch::new();
        b.incidents.insert(Fingerprint(1), delta(1, 1));
        store.apply(&b, at).unwrap();
        assert_eq!(ids(&auth, 100), vec![1, 3]);
    }

    #[test]
    fn state_survives_reopen_and_readers_follow_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = Store::open(&path).unwrap();
        store
            .apply(&batch(&[(7, 1)]), ts("2026-01-01T00:00:00Z"))
            .unwrap();
        // A second writer is refused while the first is open.
        assert!(matches!(Store::open(&path), Err(StoreError::InUse { .. })));
        let reader = Store::open_read_only(&path).unwrap().unwrap();
        assert_eq!(reader.incident_count().unwrap(), 1);
        store
            .apply(&batch(&[(8, 1)]), ts("2026-01-01T00:00:01Z"))
            .unwrap();
        assert_eq!(reader.incident_count().unwrap(), 2);
        drop(reader);
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.incident_count().unwrap(), 2);
    }

    #[test]
    fn count_only_deltas_of_unknown_incidents_are_deferred() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let mut b = IngestBatch::new();
        b.incidents
            .insert(Fingerprint(1), IncidentDelta::count_only(Fingerprint(1), 3));
        let out = store.apply(&b, ts("2026-01-01T00:00:00Z")).unwrap();
        assert_eq!(out.deferred.len(), 1);
        assert_eq!(store.incident_count().unwrap(), 0);
        // Merged with the delta that carries the creation fields, it lands whole.
        let mut d = out.deferred.into_iter().next().unwrap();
        d.merge(delta(1, 2));
        let mut b = IngestBatch::new();
        b.incidents.insert(Fingerprint(1), d);
        let out = store.apply(&b, ts("2026-01-01T00:00:01Z")).unwrap();
        assert!(out.deferred.is_empty());
        assert_eq!(store.recent_incidents(1).unwrap()[0].count, 5);
        // Once it exists, count-only deltas update it.
        let mut b = IngestBatch::new();
        b.incidents
            .insert(Fingerprint(1), IncidentDelta::count_only(Fingerprint(1), 1));
        assert_eq!(
            store
                .apply(&b, ts("2026-01-01T00:00:02Z"))
                .unwrap()
                .updated
                .len(),
            1
        );
        assert_eq!(store.recent_incidents(1).unwrap()[0].count, 6);
    }

    #[test]
    fn colliding_ids_get_distinct_values() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let (a, b) = (0xabcd_ef01_2345_0001, 0xabcd_ef01_2345_0002);
        store
            .apply(&batch(&[(a, 1), (b, 1)]), ts("2026-01-01T00:00:00Z"))
            .unwrap();
        let ids: Vec<String> = store
            .recent_incidents(10)
            .unwrap()
            .into_iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(ids.len(), 2);
        assert_ne!(ids[0], ids[1]);
        assert!(ids.contains(&"abcdef012345".to_string()));
        assert!(ids.contains(&"abcdef012346".to_string()));
    }

    #[test]
    fn corrupt_and_foreign_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        std::fs::write(
            &path,
            b"this is not a database, just some text\n".repeat(200),
        )
        .unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(err.to_string().contains("s.redb"), "{err}");
        assert!(
            matches!(err, StoreError::Corrupt { .. } | StoreError::Storage { .. }),
            "{err:?}"
        );
        // The file was not reset.
        assert!(
            std::fs::read(&path)
                .unwrap()
                .starts_with(b"this is not a database")
        );
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("schema_version", SCHEMA_VERSION + 1)
                .unwrap();
            txn.commit().unwrap();
        }
        assert!(
            matches!(Store::open(&path), Err(StoreError::Newer { found, .. }) if found == SCHEMA_VERSION + 1)
        );
        assert!(matches!(
            Store::open_read_only(&path),
            Err(StoreError::Newer { .. })
        ));
    }

    fn registered(fp: u64, count: u64) -> IngestBatch {
        let mut d = delta(fp, count);
        let new = d.new.as_mut().unwrap();
        new.set_component_id("auth");
        new.attribution = AttributionStatus::Registered;
        let mut b = IngestBatch::new();
        b.incidents.insert(Fingerprint(fp), d);
        b
    }

    fn counts_only(fp: u64, count: u64) -> IngestBatch {
        let mut b = IngestBatch::new();
        b.incidents.insert(
            Fingerprint(fp),
            IncidentDelta::count_only(Fingerprint(fp), count),
        );
        b
    }

    #[test]
    fn ten_thousand_repeats_queue_exactly_one_fix_job() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        store.set_fix_policy(FixPolicy {
            threshold: 1,
            window_us: 300_000_000,
            auto_remediate: true,
            triage: false,
        });
        let now = ts("2026-01-01T00:00:00Z");
        let out = store.apply(&registered(7, 1), now).unwrap();
        assert!(
            matches!(out.actions[..], [(_, Action::Queued(1))]),
            "{:?}",
            out.actions
        );
        for _ in 0..100 {
            let out = store.apply(&counts_only(7, 100), now).unwrap();
            assert!(out.actions.is_empty());
        }
        let jobs = store.fix_jobs().unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].component_id, "auth");
        assert_eq!(jobs[0].state, JobState::Queued);
        let inc = store.incident(&jobs[0].incident_id).unwrap().unwrap();
        assert_eq!(inc.count, 10_001);
        assert_eq!(inc.status, IncidentStatus::Detected, "waits for a fixer");
        // 50 distinct errors: 50 jobs, in order.
        for fp in 100..150 {
            store.apply(&registered(fp, 1), now).unwrap();
        }
        let seqs: Vec<u64> = store.fix_jobs().unwrap().iter().map(|j| j.seq).collect();
        assert_eq!(seqs, (1..=51).collect::<Vec<_>>());
        // Unregistered: escalated, no job.
        let out = store.apply(&batch(&[(9, 1)]), now).unwrap();
        assert!(matches!(
            out.actions[..],
            [(_, Action::Escalated("component_not_registered"))]
        ));
        assert_eq!(store.fix_jobs().unwrap().len(), 51);
    }

    #[test]
    fn the_threshold_counts_occurrences_within_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        store.set_fix_policy(FixPolicy {
            threshold: 3,
            window_us: 60_000_000,
            auto_remediate: false,
            triage: false,
        });
        let t0 = ts("2026-01-01T00:00:00Z");
        let at = |s: i64| t0.checked_add(jiff::SignedDuration::from_secs(s)).unwrap();
        let acts = |b: IngestBatch, t| store.apply(&b, t).unwrap().actions;
        assert!(acts(registered(5, 1), at(0)).is_empty());
        assert!(acts(counts_only(5, 1), at(30)).is_empty());
        // The window expired: counting restarts at 1 here.
        assert!(acts(counts_only(5, 1), at(100)).is_empty());
        assert!(acts(counts_only(5, 1), at(110)).is_empty());
        let out = store.apply(&counts_only(5, 1), at(120)).unwrap();
        assert!(
            matches!(
                out.actions[..],
                [(_, Action::Escalated("auto_remediate_disabled"))]
            ),
            "{:?}",
            out.actions
        );
        let inc = &store.recent_incidents(1).unwrap()[0];
        assert_eq!(inc.status, IncidentStatus::Escalated);
        assert_eq!(inc.resolution, "auto_remediate_disabled");
        assert!(acts(counts_only(5, 10), at(130)).is_empty());
        assert!(store.fix_jobs().unwrap().is_empty());
    }

    #[test]
    fn events_are_logged_with_their_changes_and_updates_are_coalesced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = Store::open(&path).unwrap();
        store.set_fix_policy(FixPolicy {
            threshold: 4,
            window_us: 60_000_000,
            auto_remediate: false,
            triage: false,
        });
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let s2 = seen.clone();
        store.set_event_hook(std::sync::Arc::new(move |h| {
            s2.store(h, std::sync::atomic::Ordering::SeqCst);
        }));
        let t0 = ts("2026-01-01T00:00:00Z");
        let at = |ms: i64| {
            t0.checked_add(jiff::SignedDuration::from_millis(ms))
                .unwrap()
        };
        store.apply(&batch(&[(1, 1)]), at(0)).unwrap();
        // Within a second: no update event.
        store.apply(&counts_only(1, 1), at(100)).unwrap();
        // A second later: one update.
        store.apply(&counts_only(1, 1), at(1_500)).unwrap();
        // An aborted transaction logs nothing.
        {
            let mut txn = store.begin_write().unwrap();
            txn.apply(&batch(&[(2, 1)]), at(1_600)).unwrap();
        }
        // Threshold reached (4 within the window): escalated.
        store.apply(&counts_only(1, 1), at(1_700)).unwrap();
        let evs = store.events_after(0, 100).unwrap();
        let kinds: Vec<EventKind> = evs.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                EventKind::IncidentDetected,
                EventKind::IncidentUpdated,
                EventKind::IncidentEscalated
            ]
        );
        assert_eq!(evs.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(evs[1].data["count"], 3);
        assert_eq!(evs[2].data["count"], 4);
        assert_eq!(evs[2].data["status"], "escalated");
        assert_eq!(store.event_head(), 3);
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert_eq!(store.events_after(2, 100).unwrap().len(), 1);
        // Pruning and reopening keep the numbering.
        {
            let mut txn = store.begin_write().unwrap();
            assert_eq!(txn.prune_events(3, 10).unwrap(), 2);
            txn.commit().unwrap();
        }
        assert_eq!(store.event_tail().unwrap(), 3);
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.event_head(), 3);
        store.apply(&batch(&[(7, 1)]), at(5_000)).unwrap();
        assert_eq!(store.events_after(3, 10).unwrap()[0].seq, 4);
    }
}
