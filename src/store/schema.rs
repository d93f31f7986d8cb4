//! The store's schema: its version and every table (key and value types). See the table
//! in the module docs of [`crate::store`].

use redb::TableDefinition;

/// The schema version this Sentinel writes and understands. Version 2: incident identity
/// keeps PACT keys verbatim. Version 3: incident tallies and secondary indexes
/// (`store/index.rs`). Version 4: no `recent` table (the severity index is the recency
/// index). Version 5: an incident's count, last seen, actioned mark and index names in
/// one row (`incident_state`). Version 6: a count goes into its minute's trend row only
/// (hours read minutes and folded rows, see [`super::trend`]). Version 7: incident records
/// keyed by creation sequence (see [`super::records`]). [`super::migrate`] moves an older
/// store on.
pub const SCHEMA_VERSION: u64 = 7;

pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Fingerprint → encoded incident record in versions 1 to 6; version 7 keeps records by
/// sequence ([`super::records`]). Read only from older stores (a read-only handle, the
/// migrations, a backup's copy).
pub(crate) const INCIDENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("incidents");
/// Everything a batch reads and writes of an incident it has seen before (version 5):
/// fingerprint → count, last seen, actioned, and the status, severity and component its
/// index entries are under (see [`super::state`]).
pub(crate) const STATE: TableDefinition<u64, &[u8]> = TableDefinition::new("incident_state");
/// The hot part of an incident in versions 1 to 4, (count, last_seen µs); version 5 keeps
/// it in [`STATE`]. Read only from older stores.
pub(crate) const COUNTS: TableDefinition<u64, (u64, u64)> = TableDefinition::new("incident_counts");
pub(crate) const INCIDENT_IDS: TableDefinition<&str, u64> = TableDefinition::new("incident_ids");
/// The recency index of versions 1 to 3: (last_seen µs, fingerprint) → (). Version 4
/// dropped it (`incidents_by_severity` holds the same keys, see `store/index.rs`); read only
/// from older stores (a read-only handle, the migrations, a backup's copy).
pub(crate) const RECENT: TableDefinition<(u64, u64), ()> = TableDefinition::new("recent");
pub(crate) const KEY_COUNTS: TableDefinition<&str, u64> = TableDefinition::new("key_counts");
pub(crate) const TOTALS: TableDefinition<&str, u64> = TableDefinition::new("totals");
/// Pull-source positions (a CloudWatch log group's cursor): source-defined key and bytes,
/// written with the counts (see `IngestBatch::source_positions`).
pub(crate) const SOURCE_POSITIONS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("source_positions");
/// File positions by (device, inode); see [`super::FilePosition`].
pub(crate) const FILES: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("files");
/// Occurrence windows of incidents not yet actionable: fingerprint → (window start µs, count).
pub(crate) const WINDOWS: TableDefinition<u64, (u64, u64)> =
    TableDefinition::new("incident_windows");
/// Incidents that turned actionable in versions 1 to 4: fingerprint → fix job sequence (0:
/// escalated instead); version 5 keeps it in [`STATE`]. Read only from older stores.
pub(crate) const ACTIONED: TableDefinition<u64, u64> = TableDefinition::new("incident_actioned");
/// The fix-job queue: sequence → encoded [`super::FixJob`].
pub(crate) const FIX_JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("fix_jobs");
/// The jobs still queued or running: sequence → () (so the fixer never scans them all).
pub(crate) const JOBS_OPEN: TableDefinition<u64, ()> = TableDefinition::new("fix_jobs_open");
/// The fixer's spend log: (time in µs, sequence) → (incident id, micro-USD). Never pruned
/// within the 30-day window the caps look at (older entries may be dropped).
pub(crate) const SPEND: TableDefinition<(u64, u64), (&str, u64)> =
    TableDefinition::new("spend_log");
/// The event log: sequence → encoded [`super::Event`] (see [`super::events`]).
pub(crate) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// (incident id, event seq): each incident's events, for its timeline.
pub(crate) const INCIDENT_EVENTS: TableDefinition<(&str, u64), ()> =
    TableDefinition::new("incident_events");

/// `outbox_cursors`: sink name → newest event sequence number delivered (or skipped).
pub(crate) const CURSORS: TableDefinition<&str, u64> = TableDefinition::new("outbox_cursors");
/// Events each sink accepted, by component: (sink, component) → count; written with the
/// sink's cursor, so the figure moves with the cursor.
pub(crate) const DELIVERED: TableDefinition<(&str, &str), u64> =
    TableDefinition::new("outbox_delivered");

/// (recorded at µs, ingest-log seq) → hashes, 8 bytes each, little-endian.
pub(crate) const DELIVERY_LOG: TableDefinition<(u64, u64), &[u8]> =
    TableDefinition::new("delivery_log");

/// The string-keyed ids of an older Sentinel: `scope \0 id` → recorded at (µs).
pub(crate) const LEGACY: TableDefinition<&str, u64> = TableDefinition::new("deliveries");

/// Their index by time.
pub(crate) const LEGACY_BY_TIME: TableDefinition<(u64, &str), ()> =
    TableDefinition::new("deliveries_by_time");

pub(crate) const FIXES: TableDefinition<&str, &[u8]> = TableDefinition::new("fixes");

pub(crate) const FIXES_BY_TIME: TableDefinition<(u64, &str), ()> =
    TableDefinition::new("fixes_by_time");

pub(crate) const INCIDENT_FIXES: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("incident_fixes");

pub(crate) const REGRESSION_WATCH: TableDefinition<u64, u32> =
    TableDefinition::new("regression_watch");

/// Occurrences per incident per minute: (fingerprint, minute) → count (the last 24 h).
pub(crate) const MINUTES: TableDefinition<(u64, u64), u64> = TableDefinition::new("trend_minutes");
/// Occurrences per incident per hour: (fingerprint, hour) → count (the last 30 days).
pub(crate) const HOURS: TableDefinition<(u64, u64), u64> = TableDefinition::new("trend_hours");
/// Occurrences of all incidents per minute.
pub(crate) const ALL_MINUTES: TableDefinition<u64, u64> = TableDefinition::new("trend_all_minutes");
/// Occurrences of all incidents per hour.
pub(crate) const ALL_HOURS: TableDefinition<u64, u64> = TableDefinition::new("trend_all_hours");

/// What the secondary indexes know of an incident (versions 3 and 4): fingerprint →
/// (status, severity, component), the names as `as_str` spells them; version 5 keeps them
/// in [`STATE`]. Read only from older stores.
pub(crate) const ATTRS: TableDefinition<u64, (&str, &str, &str)> =
    TableDefinition::new("incident_attrs");
/// (component, severity, status, last_seen µs, fingerprint) → (): every incident, by
/// component, then severity and status, newest last within each (version 3).
pub(crate) const BY_COMPONENT: TableDefinition<(&str, &str, &str, u64, u64), ()> =
    TableDefinition::new("incidents_by_component");
/// (severity, status, last_seen µs, fingerprint) → (): every incident, by severity and
/// status, newest last within each (version 3).
pub(crate) const BY_SEVERITY: TableDefinition<(&str, &str, u64, u64), ()> =
    TableDefinition::new("incidents_by_severity");
/// (dimension, value) → incidents: the number of incidents per `status`, `severity` and
/// `component` value, kept in the transactions that change them (version 3). A value with
/// no incident has no row.
pub(crate) const TALLIES: TableDefinition<(&str, &str), u64> =
    TableDefinition::new("incident_tallies");
