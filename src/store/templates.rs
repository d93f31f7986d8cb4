//! The template miner's clusters in redb (`grouping.templates`; the algorithm is in
//! [`crate::scan::templates`]).
//!
//! # Where it runs, and why that is deterministic
//!
//! Fingerprints are computed by parallel scan workers; a miner there would see lines in an
//! order that depends on the thread count and on how a file is cut into segments. So the
//! miner runs in the one writer, inside [`StoreTxn::apply`](super::StoreTxn::apply), before
//! the batch's deltas are applied: it sees each new fingerprint's normalised text once, and
//! takes them **in ascending fingerprint order** within a transaction, an order no thread
//! count changes. `sentinel scan` with templates on holds its new descriptions until the
//! end of the run (up to 8,192 distinct new messages, `TEMPLATE_DESCRIBED_PER_FLUSH` in
//! `ingest::batch`) and mines them in one transaction: the same input gives the same incidents,
//! whatever `--threads` and the segments. A run with more distinct new messages than that is
//! mined buffer by buffer, each in fingerprint order; the daemon mines each group commit in
//! fingerprint order. Their templates can then depend on which messages shared a buffer,
//! but only in a leaf where a message is similar to more than one cluster; every line's
//! count is exact either way.
//!
//! # Identity
//!
//! A cluster's id is assigned when it is created and persisted: the hash of its key, its
//! leaf (token count and prefix) and its ordinal in the leaf (`templates` below), so the
//! first cluster of a leaf has the same id whatever the order the leaf's messages came in.
//! The incident of a cluster has that id as its fingerprint, and its normalised text shows
//! the template as it is now (rewritten when the template generalises). A line's own
//! fingerprint (of its normalised text) is remembered as a member of its cluster
//! (`template_members`): later lines with that fingerprint go to the cluster by one look-up,
//! whatever the template has become, so an incident is never orphaned by a token turning
//! `<*>`, and a restart counts into the same incidents. A fingerprint the store already has
//! as an incident of its own (seen before templates were turned on) keeps counting there.
//!
//! # Bounds
//!
//! A key holds at most `grouping.max_new_incidents_per_key` clusters (the cardinality
//! guard's limit, for all time rather than per window); past it, a message no cluster takes
//! keeps its own fingerprint, and the guard folds it once the key's window is full. A
//! cluster whose incident the guard folded points at the key's overflow incident. The miner
//! holds no state between transactions: a leaf's clusters are read from redb when a new
//! fingerprint needs them, so memory does not grow with the clusters. `template_members`
//! grows by 16 bytes (plus redb's overhead) per distinct fingerprint of a templated key.
//!
//! | table | key | value |
//! |---|---|---|
//! | `templates` | (PACT key, leaf, ordinal) | version 1, cluster id (u64 LE), incident fingerprint (u64 LE), template text |
//! | `template_members` | fingerprint of a normalised text | the incident fingerprint its lines count into |
//! | `template_keys` | PACT key | clusters it holds |

use std::collections::HashMap;

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::schema::STATE;
use super::{ApplyOutcome, IncidentDelta, IngestBatch, Store, StoreError};
use crate::scan::Fingerprint;
use crate::scan::templates::{Choice, LeafIndex, TemplateSettings, leaf, text, tokens};

/// `templates`: (PACT key, leaf, ordinal) → encoded cluster (see the module docs).
pub(crate) const TEMPLATES: TableDefinition<(&str, &str, u64), &[u8]> =
    TableDefinition::new("templates");

/// `template_members`: fingerprint → the incident fingerprint its lines count into.
pub(crate) const TEMPLATE_MEMBERS: TableDefinition<u64, u64> =
    TableDefinition::new("template_members");

/// `template_keys`: PACT key → clusters.
pub(crate) const TEMPLATE_KEYS: TableDefinition<&str, u64> = TableDefinition::new("template_keys");

/// The encoding version of a `templates` value.
const CLUSTER_FORMAT: u8 = 1;

/// A cluster as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Its id (the fingerprint of its incident, unless the guard folded that).
    pub id: u64,
    /// Where its lines count: `id`, or the key's overflow incident.
    pub target: u64,
    /// Its template's tokens.
    pub template: Vec<String>,
}

impl Cluster {
    fn encode(&self) -> Vec<u8> {
        let text = text(&self.template);
        let mut out = Vec::with_capacity(17 + text.len());
        out.push(CLUSTER_FORMAT);
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&self.target.to_le_bytes());
        out.extend_from_slice(text.as_bytes());
        out
    }

    fn decode(b: &[u8]) -> Option<Cluster> {
        if b.len() < 17 || b[0] != CLUSTER_FORMAT {
            return None;
        }
        let id = u64::from_le_bytes(b[1..9].try_into().ok()?);
        let target = u64::from_le_bytes(b[9..17].try_into().ok()?);
        let text = std::str::from_utf8(&b[17..]).ok()?;
        Some(Cluster {
            id,
            target,
            template: tokens(text).into_iter().map(str::to_string).collect(),
        })
    }
}

/// The id of the `ordinal`th cluster of `leaf` under `key`.
pub fn cluster_id(key: &str, leaf: &str, ordinal: u64) -> Fingerprint {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(key.as_bytes());
    h.update(b"\0<template>\0");
    h.update(leaf.as_bytes());
    h.update(b"\0");
    h.update(&ordinal.to_le_bytes());
    Fingerprint(h.digest())
}

/// A leaf's clusters met in a transaction: (ordinal, id, target) by index, and their
/// templates.
struct Leaf {
    clusters: Vec<(u64, u64, u64)>,
    index: LeafIndex,
}

/// A cluster created by this transaction, with the fingerprints that joined it.
#[derive(Debug)]
struct Created {
    row: (String, String, u64),
    id: u64,
    members: Vec<u64>,
}

/// A batch with its new fingerprints mined into clusters.
#[derive(Debug)]
pub(crate) struct Mined {
    /// What [`super::StoreTxn::apply`] applies.
    pub batch: IngestBatch,
    created: Vec<Created>,
}

impl Store {
    /// Turns the template miner on (`Some`) or off (see the module docs).
    pub fn set_templates(&self, settings: Option<TemplateSettings>) {
        *self
            .templates
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = settings;
    }

    /// The template miner's settings, when it is on.
    pub fn templates(&self) -> Option<TemplateSettings> {
        *self
            .templates
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The clusters of `key`, by leaf and ordinal.
    ///
    /// # Errors
    ///
    /// [`StoreError`] on storage errors or a cluster this Sentinel cannot read.
    pub fn template_clusters(&self, key: &str) -> Result<Vec<Cluster>, StoreError> {
        let txn = self.begin_read()?;
        let Some(t) = self.read_table(&txn, TEMPLATES)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for row in t
            .range((key, "", 0)..=(key, "\u{10ffff}", u64::MAX))
            .map_err(self.storage())?
        {
            let (k, v) = row.map_err(self.storage())?;
            out.push(self.cluster(k.value(), v.value())?);
        }
        Ok(out)
    }

    fn cluster(&self, row: (&str, &str, u64), v: &[u8]) -> Result<Cluster, StoreError> {
        Cluster::decode(v).ok_or_else(|| StoreError::Corrupt {
            path: self.path.clone(),
            detail: format!("template cluster {row:?}: unreadable value"),
        })
    }
}

/// Mines the new fingerprints of `batch` (see the module docs); `cap` is the clusters a key
/// may hold.
pub(crate) fn mine(
    st: &Store,
    txn: &WriteTransaction,
    batch: &IngestBatch,
    settings: &TemplateSettings,
    cap: u64,
) -> Result<Mined, StoreError> {
    let mut out = IngestBatch {
        incidents: HashMap::with_capacity(batch.incidents.len()),
        key_counts: batch.key_counts.clone(),
        totals: batch.totals.clone(),
        approx_bytes: batch.approx_bytes,
        source_positions: batch.source_positions.clone(),
        // Never with templates (see `ApplyOutcome::overflowing`).
        undescribed: batch.undescribed.clone(),
    };
    let put = |out: &mut IngestBatch, d: IncidentDelta| match out.incidents.entry(d.fingerprint) {
        std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().merge(d),
        std::collections::hash_map::Entry::Vacant(e) => {
            e.insert(d);
        }
    };
    let counts = txn.open_table(STATE).map_err(st.storage())?;
    let mut members = txn.open_table(TEMPLATE_MEMBERS).map_err(st.storage())?;
    let mut clusters = txn.open_table(TEMPLATES).map_err(st.storage())?;
    let mut keys = txn.open_table(TEMPLATE_KEYS).map_err(st.storage())?;
    let mut created: Vec<Created> = Vec::new();
    // Where each cluster created here is in `created`.
    let mut created_at: HashMap<u64, usize> = HashMap::new();
    // Clusters whose template generalised: incident fingerprint → template text.
    let mut generalised: HashMap<u64, String> = HashMap::new();
    // The clusters of each leaf met in this transaction, read and decoded once: reading a
    // leaf of hundreds of clusters for every new fingerprint made a run of distinct
    // messages quadratic (10,000 lines took 16 s, 30,000 took 143 s).
    let mut leaves: HashMap<(String, String), Leaf> = HashMap::new();
    let mut deltas: Vec<&IncidentDelta> = batch.incidents.values().collect();
    deltas.sort_unstable_by_key(|d| d.fingerprint);
    for d in deltas {
        let fp = d.fingerprint.0;
        if counts.get(fp).map_err(st.storage())?.is_some() {
            put(&mut out, d.clone());
            continue;
        }
        if let Some(to) = members.get(fp).map_err(st.storage())?.map(|v| v.value()) {
            put(
                &mut out,
                IncidentDelta::count_only(Fingerprint(to), d.count),
            );
            continue;
        }
        let Some(new) = &d.new else {
            // Its description is on its way (deferred by `apply`).
            put(&mut out, d.clone());
            continue;
        };
        let msg = tokens(new.normalized());
        if msg.is_empty() {
            put(&mut out, d.clone());
            continue;
        }
        let key = new.pact_key();
        let leaf = leaf(&msg, settings.depth);
        let lf = match leaves.entry((key.to_string(), leaf.clone())) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let mut read = Leaf {
                    clusters: Vec::new(),
                    index: LeafIndex::new(),
                };
                for row in clusters
                    .range((key, leaf.as_str(), 0)..=(key, leaf.as_str(), u64::MAX))
                    .map_err(st.storage())?
                {
                    let (k, v) = row.map_err(st.storage())?;
                    let k = k.value();
                    let c = st.cluster(k, v.value())?;
                    read.index.push(&c.template);
                    read.clusters.push((k.2, c.id, c.target));
                }
                e.insert(read)
            }
        };
        let i = match lf.index.choose(&msg, settings.similarity) {
            Choice::Covered(i) => i,
            Choice::Similar(i) => {
                if lf.index.merge(i, &msg) {
                    let (ordinal, id, target) = lf.clusters[i];
                    let c = Cluster {
                        id,
                        target,
                        template: lf.index.template(i).into_iter().map(String::from).collect(),
                    };
                    clusters
                        .insert((key, leaf.as_str(), ordinal), c.encode().as_slice())
                        .map_err(st.storage())?;
                    if target == id {
                        generalised.insert(id, text(&c.template));
                    }
                }
                i
            }
            Choice::New => {
                let n = keys
                    .get(key)
                    .map_err(st.storage())?
                    .map_or(0, |v| v.value());
                if n >= cap {
                    // The key holds all the clusters it may: the line keeps its identity.
                    put(&mut out, d.clone());
                    continue;
                }
                let ordinal = lf.clusters.last().map_or(0, |(o, _, _)| o + 1);
                let id = cluster_id(key, &leaf, ordinal).0;
                let c = Cluster {
                    id,
                    target: id,
                    template: msg.iter().map(|t| t.to_string()).collect(),
                };
                clusters
                    .insert((key, leaf.as_str(), ordinal), c.encode().as_slice())
                    .map_err(st.storage())?;
                keys.insert(key, n + 1).map_err(st.storage())?;
                created_at.insert(id, created.len());
                created.push(Created {
                    row: (key.to_string(), leaf.clone(), ordinal),
                    id,
                    members: Vec::new(),
                });
                lf.clusters.push((ordinal, id, id));
                lf.index.push(&msg)
            }
        };
        let (_, id, target) = lf.clusters[i];
        members.insert(fp, target).map_err(st.storage())?;
        if let Some(&at) = created_at.get(&target) {
            created[at].members.push(fp);
        }
        let mut nd = IncidentDelta::count_only(Fingerprint(target), d.count);
        if target == id {
            // The description creates the cluster's incident (or recreates one retention
            // removed); shown with the template.
            let mut new = new.clone();
            new.set_normalized(&lf.index.text(i));
            nd.new = Some(new);
        }
        put(&mut out, nd);
    }
    drop((counts, members, clusters, keys));
    // Templates that generalised: the incidents show them.
    let mut incidents = super::records::Records::open(st, txn)?;
    for (fp, template) in generalised {
        if let Some(d) = out.incidents.get_mut(&Fingerprint(fp))
            && let Some(new) = d.new.as_mut()
        {
            new.set_normalized(&template);
        }
        let stored = incidents
            .get(fp)
            .map_err(st.storage())?
            .map(|v| v.value().to_vec());
        if let Some(bytes) = stored {
            let mut inc = st.decode(fp, &bytes)?;
            inc.normalized = template;
            incidents
                .insert(fp, inc.encode().as_slice())
                .map_err(st.storage())?;
        }
    }
    Ok(Mined {
        batch: out,
        created,
    })
}

/// After the batch was applied: a cluster created by it whose incident the guard folded
/// points at the overflow incident, and so do its members.
pub(crate) fn settle(
    st: &Store,
    txn: &WriteTransaction,
    mined: &Mined,
    outcome: &ApplyOutcome,
) -> Result<(), StoreError> {
    if mined.created.is_empty() || outcome.folded.is_empty() {
        return Ok(());
    }
    let mut members = txn.open_table(TEMPLATE_MEMBERS).map_err(st.storage())?;
    let mut clusters = txn.open_table(TEMPLATES).map_err(st.storage())?;
    for (from, to) in &outcome.folded {
        let Some(cr) = mined.created.iter().find(|c| c.id == from.0) else {
            continue;
        };
        let row = (cr.row.0.as_str(), cr.row.1.as_str(), cr.row.2);
        let v = clusters
            .get(row)
            .map_err(st.storage())?
            .map(|v| v.value().to_vec());
        if let Some(v) = v {
            let mut c = st.cluster(row, &v)?;
            c.target = to.0;
            clusters
                .insert(row, c.encode().as_slice())
                .map_err(st.storage())?;
        }
        for m in &cr.members {
            members.insert(*m, to.0).map_err(st.storage())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::{AttributionStatus, Severity};
    use crate::scan::templates::TemplateSettings;

    const KEY: &str = "PACT:auth:login";

    fn line(text: &str) -> IncidentDelta {
        let fp = Fingerprint(xxhash_rust::xxh3::xxh3_64(text.as_bytes()));
        let mut d =
            IncidentDelta::new(fp, 1, text, AttributionStatus::Registered, Severity::Medium);
        if let Some(n) = d.new.as_mut() {
            n.set_pact_key(KEY);
        }
        d
    }

    fn batch(lines: &[&str]) -> IngestBatch {
        let mut b = IngestBatch::new();
        for l in lines {
            let d = line(l);
            match b.incidents.entry(d.fingerprint) {
                std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().merge(d),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(d);
                }
            }
        }
        b
    }

    fn open(path: &std::path::Path) -> Store {
        let store = Store::open(path).unwrap();
        store.set_templates(Some(TemplateSettings::default()));
        store
    }

    fn all(store: &Store) -> Vec<(String, String, u64)> {
        let mut v: Vec<_> = store
            .recent_incidents(100)
            .unwrap()
            .into_iter()
            .map(|i| (i.id, i.normalized, i.count))
            .collect();
        v.sort();
        v
    }

    fn ts() -> jiff::Timestamp {
        "2026-12-06T10:00:00Z".parse().unwrap()
    }

    #[test]
    fn clusters_persist_and_an_incident_survives_its_template_generalising() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = open(&path);
        store
            .apply(
                &batch(&["user alice logged in", "user alice logged in"]),
                ts(),
            )
            .unwrap();
        let one = all(&store);
        assert_eq!(one.len(), 1);
        assert_eq!((one[0].1.as_str(), one[0].2), ("user alice logged in", 2));
        drop(store);
        // Reopened: bob generalises the template; the incident keeps its id.
        let store = open(&path);
        let o = store
            .apply(&batch(&["user bob logged in", "disk full"]), ts())
            .unwrap();
        assert_eq!(o.created.len(), 1, "only `disk full` is new");
        let two = all(&store);
        let login = two.iter().find(|r| r.0 == one[0].0).unwrap();
        assert_eq!((login.1.as_str(), login.2), ("user <*> logged in", 3));
        let clusters = store.template_clusters(KEY).unwrap();
        assert_eq!(clusters.len(), 2);
        // The first cluster of a leaf has the id of its leaf's first ordinal.
        let leaf = crate::scan::templates::leaf(&tokens("user alice logged in"), 4);
        assert!(clusters.iter().any(|c| c.id == cluster_id(KEY, &leaf, 0).0));
        // A count alone for a fingerprint that joined a cluster counts there.
        let alice = line("user alice logged in").fingerprint;
        let mut b = IngestBatch::new();
        b.incidents
            .insert(alice, IncidentDelta::count_only(alice, 10));
        let o = store.apply(&b, ts()).unwrap();
        assert!(o.deferred.is_empty());
        let three = all(&store);
        assert_eq!(three.iter().find(|r| r.0 == one[0].0).unwrap().2, 13);
        // Turned off: new messages are incidents of their own again.
        store.set_templates(None);
        store
            .apply(&batch(&["user carol logged in"]), ts())
            .unwrap();
        assert_eq!(all(&store).len(), 3);
    }

    #[test]
    fn a_batch_is_mined_in_fingerprint_order_whatever_its_arrival_order() {
        let msgs = [
            "alpha beta gamma delta",
            "alpha xray yank delta",
            "alpha beta gamma zulu",
            "alpha beta kilo delta",
        ];
        let mut results = Vec::new();
        for order in [[0, 1, 2, 3], [2, 0, 3, 1], [3, 2, 1, 0]] {
            let dir = tempfile::tempdir().unwrap();
            let store = open(&dir.path().join("s.redb"));
            let lines: Vec<&str> = order.iter().map(|&i| msgs[i]).collect();
            store.apply(&batch(&lines), ts()).unwrap();
            results.push(all(&store));
        }
        assert!(results[0].len() < 4, "{:?}", results[0]);
        assert_eq!(results[0], results[1]);
        assert_eq!(results[0], results[2]);
    }

    #[test]
    fn a_key_holds_at_most_the_guards_limit_of_clusters() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir.path().join("s.redb"));
        store.set_cardinality_guard(crate::store::CardinalityGuard::new(2, 3600));
        // Three templates of one key (different lengths never merge): two clusters, the
        // third message keeps its own fingerprint and the guard folds it.
        let o = store
            .apply(&batch(&["a", "a b", "a b c", "a b c"]), ts())
            .unwrap();
        assert_eq!(store.template_clusters(KEY).unwrap().len(), 2);
        assert_eq!(o.folded.len(), 1);
        let over = crate::store::guard::overflow_fingerprint(KEY);
        assert_eq!(o.folded[0].1, over);
        let total: u64 = all(&store).iter().map(|r| r.2).sum();
        assert_eq!(total, 4, "every line counted");
    }

    #[test]
    fn a_backup_copies_the_template_tables() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir.path().join("s.redb"));
        store
            .apply(
                &batch(&["user alice logged in", "user bob logged in"]),
                ts(),
            )
            .unwrap();
        let dest = dir.path().join("copy.redb");
        let summary = store.backup(&dest).unwrap();
        assert_eq!(summary.tables["templates"], 1);
        assert_eq!(summary.tables["template_members"], 2);
        assert_eq!(summary.tables["template_keys"], 1);
        drop(store);
        let copy = open(&dest);
        let before = all(&copy);
        copy.apply(&batch(&["user carol logged in"]), ts()).unwrap();
        let after = all(&copy);
        assert_eq!(after.len(), 1);
        assert_eq!((&after[0].0, after[0].2), (&before[0].0, 3));
    }
}
