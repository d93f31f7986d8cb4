//! `forward`: where an edge (`sentinel watch` on a log host) sends its error lines instead
//! of counting them itself.

use serde::Deserialize;

use super::ConfigError;
use super::source::{DEFAULT_NATS_STREAM, DEFAULT_NATS_SUBJECT_PREFIX};

/// `forward.nats`: publish the error lines of the sources (files, CloudWatch, processes,
/// standard input, webhooks) to a JetStream stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ForwardNatsConfig {
    /// `url`: the NATS server(s), comma-separated.
    pub url: String,
    /// `stream` (default `SENTINEL`), created if missing.
    pub stream: String,
    /// `subject_prefix` (default `sentinel.errors`): a line goes to
    /// `<subject_prefix>.<fingerprint mod partitions>`.
    pub subject_prefix: String,
    /// `partitions` (default 16): the number of partitions (the same on every edge).
    pub partitions: u32,
    /// `edge`: this host's name in source identities (default: the host name).
    pub edge: String,
    /// `max_age_hours` of the stream when this edge creates it (default 168).
    pub max_age_hours: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawForward {
    nats: Option<RawForwardNats>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawForwardNats {
    url: String,
    stream: String,
    subject_prefix: String,
    partitions: Option<u32>,
    edge: String,
    max_age_hours: Option<u64>,
}

/// Checks `forward`.
pub(super) fn resolve_forward(
    raw: &RawForward,
    host: impl FnOnce() -> Option<String>,
    invalid: &dyn Fn(String, Option<&serde_saphyr::Location>, String) -> ConfigError,
) -> Result<Option<ForwardNatsConfig>, ConfigError> {
    let Some(n) = &raw.nats else {
        return Ok(None);
    };
    if n.url.trim().is_empty() {
        return Err(invalid(
            "forward.nats.url".into(),
            None,
            "the NATS server to forward to (nats://host:4222)".into(),
        ));
    }
    let partitions = n.partitions.unwrap_or(16);
    if !(1..=4096).contains(&partitions) {
        return Err(invalid(
            "forward.nats.partitions".into(),
            None,
            format!("{partitions} is out of range: expected 1..=4096"),
        ));
    }
    let edge = match n.edge.trim() {
        "" => host().unwrap_or_else(|| "edge".into()),
        e => e.to_string(),
    };
    let pick = |v: &str, d: &str| match v.trim().trim_end_matches('.') {
        "" => d.to_string(),
        v => v.to_string(),
    };
    Ok(Some(ForwardNatsConfig {
        url: n.url.trim().to_string(),
        stream: pick(&n.stream, DEFAULT_NATS_STREAM),
        subject_prefix: pick(&n.subject_prefix, DEFAULT_NATS_SUBJECT_PREFIX),
        partitions,
        edge,
        max_age_hours: n
            .max_age_hours
            .unwrap_or(super::source::DEFAULT_NATS_MAX_AGE_HOURS),
    }))
}
