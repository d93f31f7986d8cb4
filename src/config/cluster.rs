//! `cluster`: one view of a scale-out cluster (see `crate::cluster`).

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// The default `cluster.subject_prefix`.
pub const DEFAULT_CLUSTER_SUBJECT_PREFIX: &str = "sentinel.cluster";
/// The default `cluster.timeout_ms`.
pub const DEFAULT_CLUSTER_TIMEOUT_MS: u64 = 2_000;

/// `cluster`: the daemon answers the cluster's questions over NATS request-reply, and its
/// API answers for every node.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// `nats`: the NATS server(s), comma-separated.
    pub nats: String,
    /// `node`: this daemon's name in the cluster (default: `forward.nats.edge`, else the
    /// host name).
    pub node: String,
    /// `timeout_ms` (default 2000): how long a question waits for the nodes' answers; a node
    /// that has not answered by then is named in `missing_nodes`.
    pub timeout: Duration,
    /// `nodes`: nodes that are expected to answer even before they were heard from (the
    /// nodes heard since start are expected too).
    pub nodes: Vec<String>,
    /// `subject_prefix` (default `sentinel.cluster`).
    pub subject_prefix: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawCluster {
    nats: String,
    node: String,
    timeout_ms: Option<u64>,
    nodes: Vec<String>,
    subject_prefix: String,
}

/// Checks `cluster`.
pub(super) fn resolve_cluster(
    raw: Option<&RawCluster>,
    default_node: impl FnOnce() -> String,
    invalid: &dyn Fn(String, Option<&serde_saphyr::Location>, String) -> ConfigError,
) -> Result<Option<ClusterConfig>, ConfigError> {
    let Some(c) = raw else {
        return Ok(None);
    };
    if c.nats.trim().is_empty() {
        return Err(invalid(
            "cluster.nats".into(),
            None,
            "the NATS server the cluster talks over (nats://host:4222)".into(),
        ));
    }
    let timeout_ms = c.timeout_ms.unwrap_or(DEFAULT_CLUSTER_TIMEOUT_MS);
    if !(10..=60_000).contains(&timeout_ms) {
        return Err(invalid(
            "cluster.timeout_ms".into(),
            None,
            format!("{timeout_ms} is out of range: expected 10..=60000"),
        ));
    }
    let ok_name = |n: &str| {
        !n.is_empty()
            && n.len() <= 128
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    };
    let node = match c.node.trim() {
        "" => default_node(),
        n => n.to_string(),
    };
    if !ok_name(&node) {
        return Err(invalid(
            "cluster.node".into(),
            None,
            format!("{node:?}: a node name is letters, digits and - _ . : (at most 128)"),
        ));
    }
    for (i, n) in c.nodes.iter().enumerate() {
        if !ok_name(n.trim()) {
            return Err(invalid(
                format!("cluster.nodes[{i}]"),
                None,
                format!("{n:?}: a node name is letters, digits and - _ . : (at most 128)"),
            ));
        }
    }
    let prefix = match c.subject_prefix.trim().trim_end_matches('.') {
        "" => DEFAULT_CLUSTER_SUBJECT_PREFIX.to_string(),
        p => p.to_string(),
    };
    Ok(Some(ClusterConfig {
        nats: c.nats.trim().to_string(),
        node,
        timeout: Duration::from_millis(timeout_ms),
        nodes: c.nodes.iter().map(|n| n.trim().to_string()).collect(),
        subject_prefix: prefix,
    }))
}
