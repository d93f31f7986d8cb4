//! The shape every source type has in the daemon: a context in, a [`Running`] out.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use crate::attribute::LiveRules;
use crate::config::{SourceConfig, SourceKind};
use crate::ingest::writer::WriterHandle;
use crate::metrics::Metrics;
use crate::source::webhook::IngestBudget;
use crate::store::Store;

/// What sources inherit from the top level of `sentinel.yaml`.
#[derive(Debug, Clone)]
pub struct SourceDefaults {
    /// `error_patterns`: a source without its own list uses these.
    pub error_patterns: Vec<String>,
    /// `max_line_bytes`.
    pub max_line_bytes: usize,
    /// Relative paths in the config are relative to this (the config file's directory).
    pub base_dir: PathBuf,
    /// `shards`: threads tailing files.
    pub shards: usize,
    /// How long a rotated-away file stays open after its last data.
    pub rotate_wait: std::time::Duration,
    /// Paths never read as logs (Sentinel's own state).
    pub exclude: Vec<PathBuf>,
    /// `max_open_files`: descriptors the file sources hold at most (None: the default).
    pub max_open_files: Option<usize>,
}

/// What a source runs with.
#[derive(Debug, Clone)]
pub struct SourceContext {
    /// Where counts and events go (the durable ingest writer).
    pub ingest: WriterHandle,
    /// The registered components and severity rules, live.
    pub rules: Arc<LiveRules>,
    /// The process's metrics.
    pub metrics: Arc<Metrics>,
    /// The store: a source's positions live in it (committed with the counts by the writer).
    pub store: Arc<Store>,
    /// Turns true when the daemon stops.
    pub stop: tokio::sync::watch::Receiver<bool>,
    /// The bytes accepted but not yet committed, shared by every push source.
    pub budget: Arc<IngestBudget>,
    /// The top-level settings sources inherit.
    pub defaults: SourceDefaults,
    /// Where sources publish their live state for `/status` (failing, a child's pid ...).
    pub board: Arc<SourceBoard>,
    /// The cluster (`cluster` set): NATS sources ask it where a partition they take over
    /// was left (see `crate::source::nats`).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl SourceContext {
    /// A future that completes when the daemon stops.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }
}

/// A configured source as `/status` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct SourceInfo {
    /// Name.
    pub name: String,
    /// Type (`file`, `webhook`, `cloudwatch`, `process`, `stdin`, `nats`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Glob or listen address.
    pub detail: String,
}

/// The live state of the sources, shown in `/status` next to their [`SourceInfo`]: each
/// source that publishes one has a JSON object of fields (`state`, `error`, and its own:
/// a process's `pid`, a CloudWatch source's log groups ...). Cheap to share; a source
/// replaces its fields whenever they change.
#[derive(Debug, Default)]
pub struct SourceBoard {
    entries: std::sync::Mutex<
        std::collections::BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
    >,
}

impl SourceBoard {
    /// An empty board.
    pub fn new() -> SourceBoard {
        SourceBoard::default()
    }

    /// Sets `fields` of source `name` (other fields are kept).
    pub fn set(&self, name: &str, fields: serde_json::Value) {
        let mut e = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = e.entry(name.to_string()).or_default();
        if let serde_json::Value::Object(m) = fields {
            entry.extend(m);
        }
    }

    /// The fields of source `name` (empty when it published none).
    pub fn get(&self, name: &str) -> serde_json::Map<String, serde_json::Value> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    /// `infos` as JSON, each with its live fields.
    pub fn details(&self, infos: &[SourceInfo]) -> serde_json::Value {
        serde_json::Value::Array(
            infos
                .iter()
                .map(|i| {
                    let mut v = serde_json::to_value(i).unwrap_or_default();
                    if let serde_json::Value::Object(m) = &mut v {
                        m.extend(self.get(&i.name));
                    }
                    v
                })
                .collect(),
        )
    }
}

/// How a started source is stopped.
pub enum Stopper {
    /// A task that ends by itself once [`SourceContext::stop`] turns true (a listener lets
    /// requests in flight finish first).
    Task(tokio::task::JoinHandle<std::io::Result<()>>),
    /// Threads, stopped and joined by this call.
    Threads(Box<dyn FnOnce() + Send>),
}

impl Stopper {
    /// Stops at once, without the grace a listener gives requests in flight (a start-up
    /// that failed: nothing was announced yet).
    pub fn abort(self) {
        match self {
            Stopper::Task(t) => t.abort(),
            Stopper::Threads(stop) => stop(),
        }
    }
}

impl std::fmt::Debug for Stopper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stopper::Task(_) => "Stopper::Task",
            Stopper::Threads(_) => "Stopper::Threads",
        })
    }
}

/// What starting the sources of one type left running.
#[derive(Debug)]
pub struct Running {
    /// One entry per source, for `/status`.
    pub infos: Vec<SourceInfo>,
    /// Addresses sources listen on: (source name, address), for `daemon.json` and the log.
    pub listening: Vec<(String, String)>,
    /// How to stop them.
    pub stoppers: Vec<Stopper>,
}

/// Starts every configured source of one type. Called inside the daemon's async runtime.
pub type StartFn = fn(&[&SourceConfig], &SourceContext) -> anyhow::Result<Running>;

/// Every source type the daemon starts: adding one is its module and a line here.
pub const SOURCE_TYPES: &[(SourceKind, StartFn)] = &[
    (SourceKind::Webhook, crate::source::webhook::start),
    (SourceKind::File, crate::source::file::start),
    (SourceKind::Cloudwatch, crate::source::cloudwatch::start),
    (SourceKind::Process, crate::source::process::start),
    (SourceKind::Stdin, crate::source::process::start_stdin),
    (SourceKind::Nats, crate::source::nats::start),
    (SourceKind::Github, crate::source::ci::start),
    (SourceKind::Gitlab, crate::source::ci::start),
];

/// Starts every configured source whose type is registered, in [`SOURCE_TYPES`] order;
/// the others are reported and skipped.
///
/// # Errors
///
/// The first source that cannot start (a port taken, a missing secret, a bad glob ...).
pub fn start_all(sources: &[SourceConfig], cx: &SourceContext) -> anyhow::Result<Running> {
    let mut all = Running {
        infos: Vec::new(),
        listening: Vec::new(),
        stoppers: Vec::new(),
    };
    for (kind, start) in SOURCE_TYPES {
        let mine: Vec<&SourceConfig> = sources.iter().filter(|s| s.kind() == *kind).collect();
        if mine.is_empty() {
            continue;
        }
        let running = match start(&mine, cx) {
            Ok(r) => r,
            Err(e) => {
                // What had started must not outlive the failed start-up (file threads would
                // hold the writer, and the process would never exit).
                for s in all.stoppers {
                    s.abort();
                }
                return Err(e);
            }
        };
        all.infos.extend(running.infos);
        all.listening.extend(running.listening);
        all.stoppers.extend(running.stoppers);
    }
    for s in sources {
        if !SOURCE_TYPES.iter().any(|(k, _)| *k == s.kind()) {
            tracing::warn!(
                source = %s.name(),
                "sources of type {:?} are not supported yet; skipped",
                s.kind()
            );
        }
    }
    Ok(all)
}
