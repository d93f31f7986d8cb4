//! Incident tallies: how many incidents there are per status, severity and component
//! (schema version 3), read in O(1) by `/status`, `/metrics.json`, the Prometheus gauges
//! and the dashboard's totals.
//!
//! The tallies live in `incident_tallies` ((dimension, value) → incidents) and are kept by
//! the secondary indexes' writer (`store/index.rs`) in the same write transaction as the change they
//! count (creation, a status, severity or component change), never recounted by a scan.
//! [`Store::recount_tallies`] is that scan, kept as the oracle the tests compare them with
//! and for a store without tallies (an older schema read as it is, read-only).

use std::collections::BTreeMap;

use redb::TableError;

use super::schema::TALLIES;
use super::{IncidentStatus, Store, StoreError};
use crate::attribute::Severity;

/// The dimension of the status tallies.
pub(crate) const STATUS: &str = "status";
/// The dimension of the severity tallies.
pub(crate) const SEVERITY: &str = "severity";
/// The dimension of the component tallies (the empty component: unattributed incidents).
pub(crate) const COMPONENT: &str = "component";

/// Incidents per status, severity and component (values without incidents are absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IncidentTallies {
    /// Per status.
    pub by_status: BTreeMap<IncidentStatus, u64>,
    /// Per severity.
    pub by_severity: BTreeMap<Severity, u64>,
    /// Per component id (`""`: unattributed); empty unless asked for.
    pub by_component: BTreeMap<String, u64>,
}

impl IncidentTallies {
    /// Every incident.
    pub fn total(&self) -> u64 {
        self.by_status.values().sum()
    }

    /// The incidents that still need attention ([`IncidentStatus::is_active`]).
    pub fn active(&self) -> u64 {
        self.by_status
            .iter()
            .filter(|(s, _)| s.is_active())
            .map(|(_, n)| n)
            .sum()
    }
}

impl Store {
    /// The incident tallies, read as kept (see the module docs); `by_component` is filled
    /// only when `components` is set (one row per component with incidents). A store
    /// without tallies (an older schema, read-only) is recounted instead.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors or an undecodable record.
    pub fn incident_tallies(&self, components: bool) -> Result<IncidentTallies, StoreError> {
        let txn = self.begin_read()?;
        let t = match txn.open_table(TALLIES) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => {
                drop(txn);
                let mut all = self.recount_tallies()?;
                if !components {
                    all.by_component.clear();
                }
                return Ok(all);
            }
            Err(e) => return Err(self.storage()(e)),
        };
        let mut out = IncidentTallies::default();
        let dims: &[&str] = if components {
            &[STATUS, SEVERITY, COMPONENT]
        } else {
            &[STATUS, SEVERITY]
        };
        for &dim in dims {
            for row in t.range((dim, "")..).map_err(self.storage())? {
                let (k, v) = row.map_err(self.storage())?;
                let (d, value) = k.value();
                if d != dim {
                    break;
                }
                let n = v.value();
                match dim {
                    STATUS => {
                        if let Some(s) = IncidentStatus::from_name(value) {
                            out.by_status.insert(s, n);
                        }
                    }
                    SEVERITY => {
                        if let Ok(s) = value.parse::<Severity>() {
                            out.by_severity.insert(s, n);
                        }
                    }
                    _ => {
                        out.by_component.insert(value.to_string(), n);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The tallies counted again from every incident (a scan: the oracle of the kept ones).
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors or an undecodable record.
    pub fn recount_tallies(&self) -> Result<IncidentTallies, StoreError> {
        let mut out = IncidentTallies::default();
        self.for_each_incident(|inc| {
            *out.by_status.entry(inc.status).or_default() += 1;
            *out.by_severity.entry(inc.severity).or_default() += 1;
            *out.by_component.entry(inc.component_id).or_default() += 1;
        })?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::{AttributionStatus, Manifest, ManifestEntry};
    use crate::scan::Fingerprint;
    use crate::store::{
        FixPolicy, FixResult, FixStatus, IncidentDelta, IncidentFilter, IngestBatch, RecentKey,
        StatusFilter,
    };
    use jiff::Timestamp;

    const COMPONENTS: [&str; 4] = ["c0", "c1", "c2", ""];

    /// Incidents `fps`: components c0, c1 (registered), c2 (unregistered) and none
    /// (unattributed), every severity.
    fn ingest(store: &Store, fps: std::ops::Range<u64>, at: Timestamp) {
        let mut b = IngestBatch::new();
        for fp in fps {
            let component = COMPONENTS[(fp % 4) as usize];
            let attribution = match component {
                "" => AttributionStatus::Unattributed,
                "c2" => AttributionStatus::Unregistered,
                _ => AttributionStatus::Registered,
            };
            let sev = Severity::ALL[(fp % 5) as usize];
            let mut d =
                IncidentDelta::new(Fingerprint(fp), 1, &format!("E {fp}"), attribution, sev);
            let new = d.new.as_mut().unwrap();
            new.set_component_id(component);
            if !component.is_empty() {
                new.set_pact_key(&format!("PACT:{component}:op"));
                new.set_method("op");
            }
            b.incidents.insert(Fingerprint(fp), d);
        }
        store.apply(&b, at).unwrap();
    }

    /// `n` more lines of each of `fps` (count-only: the incidents exist).
    fn repeat(store: &Store, fps: impl Iterator<Item = u64>, n: u64, at: Timestamp) {
        let mut b = IngestBatch::new();
        for fp in fps {
            b.incidents.insert(
                Fingerprint(fp),
                IncidentDelta::count_only(Fingerprint(fp), n),
            );
        }
        store.apply(&b, at).unwrap();
    }

    /// Every page of `filter` (`limit` at a time, following the cursors) through the
    /// indexes, and every matching incident by a scan of every incident sorted by recency:
    /// the same incidents in the same order.
    fn assert_pages_match_a_scan(store: &Store, filter: &IncidentFilter, limit: usize) {
        let mut paged = Vec::new();
        let mut before: Option<RecentKey> = None;
        loop {
            let (page, next) = store.incidents_page(filter, None, before, limit).unwrap();
            assert!(page.len() <= limit);
            paged.extend(page.iter().map(|i| i.fingerprint.0));
            match next {
                Some(k) => before = Some(k),
                None => break,
            }
        }
        let mut all = Vec::new();
        store
            .for_each_incident(|i| {
                if filter.matches(&i) {
                    all.push((crate::store::micros(i.last_seen), i.fingerprint.0));
                }
            })
            .unwrap();
        all.sort_unstable_by(|a, b| b.cmp(a));
        let scanned: Vec<u64> = all.iter().map(|&(_, fp)| fp).collect();
        assert_eq!(paged, scanned, "{filter:?}");
    }

    /// The kept tallies equal a full recount, and every filter's pages a scan's answer.
    fn assert_exact(store: &Store) {
        let kept = store.incident_tallies(true).unwrap();
        assert_eq!(kept, store.recount_tallies().unwrap());
        assert_eq!(kept.total(), store.incident_count().unwrap());
        assert_eq!(
            store.status_counts().unwrap(),
            store.recount_tallies().unwrap().by_status
        );
        let statuses = [
            None,
            Some(StatusFilter::Active),
            Some(StatusFilter::Is(IncidentStatus::Detected)),
            Some(StatusFilter::Is(IncidentStatus::Remediating)),
            Some(StatusFilter::Is(IncidentStatus::Resolved)),
            Some(StatusFilter::Is(IncidentStatus::Escalated)),
        ];
        let components = [None, Some("c0"), Some("c2"), Some(""), Some("nope")];
        let severities = [None, Some(Severity::Low), Some(Severity::Critical)];
        for status in statuses {
            for component in components {
                for severity in severities {
                    let f = IncidentFilter {
                        status,
                        component: component.map(str::to_string),
                        severity,
                    };
                    assert_pages_match_a_scan(store, &f, 7);
                }
            }
        }
    }

    /// Turns `store` into what schema version 2 wrote: no tallies, no secondary indexes,
    /// the recency index (`recent`), the counts (`incident_counts`) and the actioned marks
    /// (`incident_actioned`) instead of `incident_state`.
    fn downgrade_to_v2(path: &std::path::Path) {
        let db = redb::Database::open(path).unwrap();
        let txn = db.begin_write().unwrap();
        use crate::store::schema::{ACTIONED, BY_COMPONENT, BY_SEVERITY, COUNTS, RECENT, STATE};
        use redb::ReadableTable;
        {
            let rows = txn.open_table(STATE).unwrap();
            let mut recent = txn.open_table(RECENT).unwrap();
            let mut counts = txn.open_table(COUNTS).unwrap();
            let mut actioned = txn.open_table(ACTIONED).unwrap();
            for row in rows.iter().unwrap() {
                let (k, v) = row.unwrap();
                let fp = k.value();
                let hot = crate::store::state::hot(v.value()).unwrap();
                recent.insert((hot.last_us, fp), ()).unwrap();
                counts.insert(fp, (hot.count, hot.last_us)).unwrap();
                if let Some(a) = hot.actioned {
                    actioned.insert(fp, a).unwrap();
                }
            }
        }
        crate::store::records::unsequence(&txn);
        assert!(txn.delete_table(STATE).unwrap());
        assert!(txn.delete_table(BY_COMPONENT).unwrap());
        assert!(txn.delete_table(BY_SEVERITY).unwrap());
        assert!(txn.delete_table(TALLIES).unwrap());
        txn.open_table(crate::store::schema::META)
            .unwrap()
            .insert("schema_version", 2)
            .unwrap();
        txn.commit().unwrap();
    }

    #[test]
    fn tallies_and_indexes_stay_exact_through_a_mixed_workload_and_a_migration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sentinel.redb");
        let t0: Timestamp = "2026-12-06T12:00:00Z".parse().unwrap();
        let at = |s: i64| t0.checked_add(jiff::SignedDuration::from_secs(s)).unwrap();
        let store = Store::open(&path).unwrap();
        store.set_fix_policy(FixPolicy {
            threshold: 3,
            window_us: 600_000_000,
            auto_remediate: true,
            triage: false,
        });
        // New incidents, and repeats that move them in recency (some in the same batch
        // as new ones).
        ingest(&store, 0..120, at(0));
        repeat(&store, (0..120).step_by(7), 1, at(1));
        ingest(&store, 120..160, at(2));
        assert_exact(&store);
        // Over the threshold: registered ones get a fix job (still detected), the others
        // are escalated.
        repeat(&store, (0..160).step_by(3), 2, at(3));
        let jobs = store.open_jobs().unwrap();
        assert!(jobs.len() > 10, "{}", jobs.len());
        assert!(
            store.status_counts().unwrap()[&IncidentStatus::Escalated] > 0,
            "{:?}",
            store.status_counts()
        );
        assert_exact(&store);
        // The fixer: some running (remediating), some merged (resolved), some failed
        // (escalated), some awaiting approval (verifying).
        for (i, job) in jobs.iter().enumerate() {
            let mut txn = store.begin_write().unwrap();
            let mut fix = FixResult {
                id: format!("f{:011x}", job.seq),
                incident_id: job.incident_id.clone(),
                component_id: job.component_id.clone(),
                ..FixResult::default()
            };
            txn.start_job(job.seq, &mut fix, at(4)).unwrap();
            match i % 4 {
                0 => {}
                1 => {
                    fix.status = FixStatus::Success;
                    fix.merged = true;
                    txn.finish_fix(Some(job.seq), &fix, "fixed", at(4)).unwrap();
                }
                2 => {
                    fix.status = FixStatus::Failure;
                    txn.finish_fix(Some(job.seq), &fix, "no fix", at(4))
                        .unwrap();
                }
                _ => {
                    fix.status = FixStatus::AwaitingApproval;
                    txn.finish_fix(Some(job.seq), &fix, "proven", at(4))
                        .unwrap();
                }
            }
            txn.commit().unwrap();
        }
        assert_exact(&store);
        // Merged fixes seen again: regressions (detected again, actionable again).
        repeat(&store, (0..160).step_by(3), 1, at(5));
        assert_exact(&store);
        // The unregistered component is registered: re-attributed.
        let mut manifest = Manifest::default();
        for c in ["c0", "c1", "c2"] {
            manifest.insert(ManifestEntry::new(c));
        }
        let mut txn = store.begin_write().unwrap();
        assert!(txn.reattribute(&manifest).unwrap() > 0);
        txn.commit().unwrap();
        assert_exact(&store);
        let before = store.incident_tallies(true).unwrap();
        drop(store);

        // The same store as version 2 wrote it: migrated once, counted and indexed.
        downgrade_to_v2(&path);
        let old = Store::open_read_only(&path).unwrap().unwrap();
        // A reader of the old store recounts (it never migrates) and scans.
        assert_eq!(old.incident_tallies(true).unwrap(), before);
        let f = IncidentFilter {
            component: Some("c1".into()),
            ..IncidentFilter::default()
        };
        assert_eq!(old.find_incidents(&f, 5).unwrap().len(), 5);
        drop(old);
        let store = Store::open(&path).unwrap();
        assert!(dir.path().join("sentinel.redb.v2-backup").exists());
        assert_eq!(
            store.meta_value("schema_version").unwrap(),
            Some(crate::store::SCHEMA_VERSION)
        );
        assert_eq!(store.incident_tallies(true).unwrap(), before);
        assert_exact(&store);
        // And it keeps them from then on.
        store.set_fix_policy(FixPolicy {
            threshold: 2,
            window_us: 600_000_000,
            auto_remediate: false,
            triage: false,
        });
        ingest(&store, 160..200, at(6));
        repeat(&store, (100..200).step_by(2), 1, at(7));
        assert_exact(&store);
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_exact(&store);
    }
}
