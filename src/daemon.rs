//! The daemon behind `sentinel watch` and `sentinel serve`: opens the store, starts the
//! ingest writer, the file sources, the webhook listeners and the HTTP API, and stops them
//! in order on SIGINT/SIGTERM (sources first, then the writer commits what they read).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::api::ApiState;
use crate::attribute::{LiveRules, ManifestFollower};
use crate::config::Config;
use crate::ingest::writer::{NewIncidentNote, Writer, WriterHandle};
use crate::metrics::Metrics;
use crate::source::{Stopper, webhook};
use crate::store::{self, Store};

/// The file, in `state_dir`, in which a running daemon lists its pid and addresses.
pub use crate::state_dir::DAEMON_FILE;

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Where the API listens; `None` runs without it (`watch --no-api`).
    pub api: Option<SocketAddr>,
    /// The command, for the pid file and messages (`sentinel watch`).
    pub command: &'static str,
    /// How long a rotated-away file stays open after its last data.
    pub rotate_wait: Duration,
}

/// What a running daemon writes to [`DAEMON_FILE`].
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct DaemonInfo {
    /// Process id.
    pub pid: u32,
    /// The API's address, if it runs.
    pub api: Option<String>,
    /// Webhook listeners: source name and address.
    pub webhooks: Vec<(String, String)>,
    /// When it started (RFC 3339).
    pub started_at: String,
}

/// Runs the daemon until SIGINT or SIGTERM.
///
/// # Errors
///
/// Start-up failures (store in use, port taken, bad webhook auth settings ...), with
/// context naming what failed.
pub fn run(config: Config, options: DaemonOptions) -> anyhow::Result<()> {
    let started = Instant::now();
    let started_at = jiff::Timestamp::now();
    let config = Arc::new(config);
    config.state().create()?;
    let db = config.db_path();
    let store = Arc::new(Store::open(&db)?);
    // Unkeyed incidents wait for the daemon's LLM triage only where it can run.
    let triage_runs = config.triage.enabled
        && matches!(
            crate::fix::service::DaemonLlm::new(&config.llm),
            crate::fix::service::DaemonLlm::Client(_)
        );
    store.set_fix_policy(
        crate::fix::policy::FixPolicy::new(&config.error_threshold, config.auto_remediate)
            .with_triage(triage_runs),
    );
    store.set_cardinality_guard(store::CardinalityGuard::from_config(&config.grouping));
    store.set_templates(config.grouping.templates);
    store::write_owner(&db, options.command);
    let (rules, warnings, severity) = crate::attribute::ledger::load_rules_and_loader(&config)?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    if !rules.severity.mappings().is_empty() {
        tracing::info!(
            mappings = rules.severity.mappings().len(),
            "severity overrides loaded"
        );
    }
    let rules = LiveRules::new(rules);
    rules.set_grouping_rules(
        crate::scan::rules::Rules::new(&config.grouping.rules).map_err(anyhow::Error::msg)?,
    );
    let follower = ManifestFollower::start(config.manifest_path(), rules.clone())
        .context("cannot start following the manifest")?;
    let ledger = crate::attribute::ledger::LedgerFollower::start(severity, rules.clone())
        .context("cannot start following Ledger")?;
    let metrics = Arc::new(Metrics::new());
    let _ = metrics.render(); // fixes the process start time

    // One line per new incident while they trickle in; a flood of distinct errors gets a
    // summary every 10 s instead (see `episode::Burst`).
    let burst = std::sync::Mutex::new(crate::episode::Burst::new());
    let on_new = Box::new(move |n: &NewIncidentNote| {
        let admit = burst
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .admit();
        let summary = |n: u64| {
            tracing::info!(
                new_incidents = n,
                "{n} new incidents not logged one by one (over {} a second); `sentinel report` and \
                 GET /incidents list them",
                crate::episode::Burst::PER_SECOND
            );
        };
        match admit {
            crate::episode::Admit::Quiet => return,
            crate::episode::Admit::Summary(k) => return summary(k),
            crate::episode::Admit::Line { suppressed } if suppressed > 0 => summary(suppressed),
            crate::episode::Admit::Line { .. } => {}
        }
        // Never the line itself: Sentinel's own log may be tailed, and a logged error
        // line would be counted again (a feedback loop).
        tracing::info!(
            id = %n.id,
            component = %n.component,
            method = %n.method,
            severity = %n.severity,
            attribution = %n.attribution,
            source = %n.source,
            "new incident"
        );
    });
    // The integrations outbox: cursors first (a new sink starts at the head as of now,
    // before anything is ingested), then ONE watch of the event log's head, fed by the
    // store's commit hook. Everything that follows the log (the outbox tasks; the API's
    // event stream) subscribes to this channel: the store takes a single hook.
    let sinks = crate::integrations::Sink::enabled(crate::integrations::Peers::of(&config));
    crate::integrations::init_cursors(
        &store,
        &sinks,
        config.fix.pull_request.is_some() || config.issues.is_some(),
    )
    .context("cannot set up the integrations outbox")?;
    let (event_tx, events) = tokio::sync::watch::channel(store.event_head());
    store.set_event_hook(Arc::new(move |head| {
        event_tx.send_if_modified(|h| {
            let newer = head > *h;
            *h = (*h).max(head);
            newer
        });
    }));
    let (writer, handle) =
        Writer::start(store.clone(), rules.clone(), metrics.clone(), Some(on_new))
            .context("cannot start the ingest writer")?;
    // Retention and compaction (see `lifecycle`), on their own thread.
    let lifecycle_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lifecycle = crate::lifecycle::spawn(
        store.clone(),
        config.retention.clone(),
        config.state().reports(),
        lifecycle_stop.clone(),
    )
    .context("cannot start the retention thread")?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("sentinel-io")
        .build()
        .context("cannot start the async runtime")?;

    let result = runtime.block_on(serve_all(
        config.clone(),
        options.clone(),
        store.clone(),
        rules,
        metrics,
        handle,
        started_at,
        sinks,
        events,
    ));
    // Whatever happened, the sources are stopped now and every handle to the writer is
    // dropped: it drains its queue, commits and stops.
    runtime.shutdown_timeout(Duration::from_secs(2));
    lifecycle_stop.store(true, std::sync::atomic::Ordering::Release);
    lifecycle.thread().unpark();
    let _ = lifecycle.join();
    writer.join();
    follower.stop();
    if let Some(l) = ledger {
        l.stop();
    }
    store::remove_owner(&db);
    let _ = std::fs::remove_file(config.state().daemon_file());
    let summary = result?;
    tracing::info!(uptime_s = started.elapsed().as_secs(), "{summary}; stopped");
    Ok(())
}

// Each argument is a piece the caller built before the runtime; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
async fn serve_all(
    config: Arc<Config>,
    options: DaemonOptions,
    store: Arc<Store>,
    rules: Arc<LiveRules>,
    metrics: Arc<Metrics>,
    handle: WriterHandle,
    started_at: jiff::Timestamp,
    sinks: Vec<crate::integrations::Sink>,
    events: tokio::sync::watch::Receiver<u64>,
) -> anyhow::Result<String> {
    // Handlers first: once daemon.json says we are up, SIGTERM must mean a clean stop.
    let signals = Signals::install();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let api_events = events.clone();
    let outbox = {
        for s in &sinks {
            tracing::info!(sink = s.name, url = %s.url, "integration enabled");
        }
        crate::integrations::Outbox::start(
            sinks,
            store.clone(),
            metrics.clone(),
            events,
            stop_rx.clone(),
        )
        .context("cannot start the integrations outbox")?
    };
    let stop_streams = stop_rx.clone();
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut servers = Vec::new();
    // The API's fallible steps (auth settings, the listen address) come before any source
    // starts: a refusal then leaves nothing running behind it.
    let api = match options.api {
        Some(addr) => {
            let mut api_config = config.api.clone();
            api_config.listen = addr;
            let auth = crate::api::ApiAuth::from_config(&api_config, |v| std::env::var(v).ok())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("api.listen: cannot listen on {addr}"))?;
            Some((auth, listener))
        }
        None => None,
    };
    let board = Arc::new(crate::source::SourceBoard::new());
    let shutdown = handle.shutdown_flag();
    // An edge: file batches go through the forwarder, which publishes their error lines
    // before their positions reach the writer.
    let (forwarder, handle) = match &config.forward {
        Some(f) => {
            let (fw, h) = crate::forward::Forwarder::start(
                f.clone(),
                handle,
                tokio::runtime::Handle::current(),
                stop_streams.clone(),
                board.clone(),
            )?;
            // Webhook requests: 2xx once JetStream acknowledged their events, 503 while
            // it cannot.
            let events = crate::forward::EventForwarder::connect(f.clone(), rules.clone()).await?;
            (Some(fw), h.redirect_events(events))
        }
        None => (None, handle),
    };
    // The cluster (`cluster` set): answers the other nodes from this store from now on.
    let cluster = match &config.cluster {
        Some(c) => Some(
            crate::cluster::Cluster::start(
                c,
                crate::cluster::Local {
                    store: store.clone(),
                    rules: rules.clone(),
                    config: config.clone(),
                },
                stop_streams.clone(),
            )
            .await?,
        ),
        None => None,
    };
    let cx = crate::source::SourceContext {
        cluster: cluster.clone(),
        board: board.clone(),
        ingest: handle,
        rules: rules.clone(),
        metrics: metrics.clone(),
        store: store.clone(),
        stop: stop_streams.clone(),
        budget: Arc::new(
            webhook::IngestBudget::new(webhook::DEFAULT_INGEST_BUDGET)
                .with_gauge(metrics.queue_bytes.clone()),
        ),
        defaults: crate::source::SourceDefaults {
            error_patterns: config.error_patterns.clone(),
            max_line_bytes: config.max_line_bytes,
            base_dir: config.base_dir.clone(),
            shards: config.shards,
            rotate_wait: options.rotate_wait,
            exclude: vec![config.state_dir.clone()],
            max_open_files: config.max_open_files,
        },
    };
    let sources = crate::source::start_all(&config.sources, &cx)?;
    // Only the sources hold the writer now: once they stop, it drains and stops.
    drop(cx);
    let mut infos = sources.infos;
    if let Some(f) = &config.forward {
        // The forwarder's live state (`ok`, `waiting` while NATS does not acknowledge).
        infos.push(crate::source::SourceInfo {
            name: crate::forward::BOARD_NAME.into(),
            kind: "forward".into(),
            detail: format!(
                "{} {} {}.<0..{}>",
                f.url, f.stream, f.subject_prefix, f.partitions
            ),
        });
    }
    let webhooks = sources.listening;

    // The fixer: takes jobs from the durable queue (and POST /fix). Triage (POST /triage)
    // spends from the same budget, so their reservations never overlap.
    let budget = Arc::new(crate::fix::budget::Budget::new(
        store.clone(),
        crate::fix::budget::Caps::new(&config.budget, config.llm.budget_per_fix),
    ));
    let triage_desk = Arc::new(crate::api::triage::TriageDesk {
        llm: crate::fix::service::DaemonLlm::new(&config.llm),
        budget: budget.clone(),
    });
    let service = crate::fix::service::FixService::new(
        store.clone(),
        rules.clone(),
        crate::fix::engine::Fixer::new(
            crate::fix::service::DaemonLlm::new(&config.llm),
            crate::fix::engine::FixerEnv {
                config: config.clone(),
                budget,
            },
        ),
        config.llm.max_concurrent_fixes,
    )
    .with_metrics(metrics.clone());
    let fix_handle = service.handle();
    let fixer_task = tokio::spawn(service.run(stopped()));
    // Postmortems: rewritten from the store whenever the event log says an incident's
    // state moved (whoever moved it: the fixer, a review, the ingest writer's regression).
    let postmortems_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let postmortems = {
        let mut heads = api_events.clone();
        let store = store.clone();
        let reports = config.state().reports();
        let mut follower = crate::fix::postmortem::Follower::new(&store, postmortems_stop.clone());
        tokio::spawn(async move {
            while heads.changed().await.is_ok() {
                let (store, reports) = (store.clone(), reports.clone());
                follower = match tokio::task::spawn_blocking(move || {
                    follower.catch_up(&store, &reports);
                    follower
                })
                .await
                {
                    Ok(f) => f,
                    Err(_) => return,
                };
            }
        })
    };

    // The daemon's triage of incidents without a PACT key (when an LLM is configured).
    let triage_runs = config.triage.enabled
        && matches!(triage_desk.llm, crate::fix::service::DaemonLlm::Client(_));
    let autotriage = triage_runs.then(|| {
        let t = crate::fix::autotriage::AutoTriage {
            store: store.clone(),
            rules: rules.clone(),
            desk: triage_desk.clone(),
            llm: config.llm.clone(),
            max_per_hour: config.triage.max_per_hour,
            auto_remediate: config.auto_remediate,
        };
        tokio::spawn(t.run(api_events.clone(), stopped()))
    });

    // Pull requests of proven fixes, issues of escalated incidents (issue 19).
    let forge = crate::forge::Forge::new(
        store.clone(),
        config.fix.pull_request.as_ref(),
        config.issues.as_ref(),
    )?
    .map(|f| tokio::spawn(f.run(api_events.clone(), stopped())));

    // The API.
    let mut api_addr = None;
    if let Some((auth, listener)) = api {
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        api_addr = Some(local.to_string());
        let mut state = ApiState::new(
            store.clone(),
            metrics.clone(),
            config.clone(),
            rules.clone(),
            infos.clone(),
            started_at,
        );
        if let Some(c) = &cluster {
            state = state.with_cluster(c.clone());
        }
        let state = Arc::new(
            state
                .with_auth(auth)
                .with_board(board.clone())
                .with_fixer(fix_handle.clone())
                .with_triage(triage_desk)
                .with_stop(stop_streams),
        );
        // The store takes one hook (the outbox's channel): forward its moves to the streams.
        let hook = state.event_hook();
        let mut heads = api_events;
        tokio::spawn(async move {
            while heads.changed().await.is_ok() {
                let head = *heads.borrow_and_update();
                hook(head);
            }
        });
        let router = crate::http::harden(crate::api::router(state), crate::http::REQUEST_TIMEOUT);
        servers.push(tokio::spawn(crate::http::serve(
            listener,
            router,
            stopped(),
        )));
    }

    let info = DaemonInfo {
        pid: std::process::id(),
        api: api_addr.clone(),
        webhooks: webhooks.clone(),
        started_at: started_at.to_string(),
    };
    write_daemon_file(&config.state_dir, &info).await;
    tracing::info!(
        sources = config.sources.len(),
        listening = webhooks.len(),
        components = rules.snapshot().manifest.len(),
        api = api_addr.as_deref().unwrap_or("off"),
        store = %config.db_path().display(),
        open_files_limit = %crate::limits::open_files_limit_text(),
        "sentinel running (pid {})",
        std::process::id()
    );
    for (name, addr) in &webhooks {
        tracing::info!(source = %name, "webhook listening on http://{addr}");
    }
    if let Some(a) = &api_addr {
        tracing::info!("API on http://{a} (GET /status /metrics /incidents)");
    }

    let signal = signals.wait().await;
    tracing::info!("{signal}: stopping");
    // Sources blocked on a degraded store give up their unsent batches from now on.
    shutdown.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = stop_tx.send(true);
    for stopper in sources.stoppers {
        match stopper {
            Stopper::Threads(stop) => {
                if let Err(e) = tokio::task::spawn_blocking(stop).await {
                    tracing::error!(error = %e, "a source failed while stopping");
                }
            }
            Stopper::Task(task) => servers.push(task),
        }
    }
    // The listeners let in-flight requests finish for up to SHUTDOWN_GRACE.
    let deadline =
        tokio::time::Instant::now() + crate::http::SHUTDOWN_GRACE + Duration::from_secs(1);
    for s in servers {
        match tokio::time::timeout_at(deadline, s).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "a listener failed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "a listener task failed"),
            Err(_) => tracing::warn!("a listener did not stop in time"),
        }
    }
    if let Some(fw) = forwarder {
        // Its input closed with the sources: it hands on (or drops) what it holds and ends.
        let _ = tokio::task::spawn_blocking(move || fw.join()).await;
    }
    match tokio::time::timeout(Duration::from_secs(2), fixer_task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the fixer failed"),
        Ok(Err(e)) => tracing::warn!(error = %e, "the fixer task failed"),
        Err(_) => tracing::warn!("the fixer did not stop in time"),
    }
    if let Some(t) = autotriage {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    if let Some(t) = forge {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    // The postmortem writer stops between two reads and lets go of the store.
    postmortems_stop.store(true, std::sync::atomic::Ordering::Release);
    postmortems.abort();
    let _ = postmortems.await;
    // The outbox tasks abandon a request in flight and commit their cursors.
    outbox.join(Duration::from_secs(2)).await;
    Ok(format!("{signal} received"))
}

/// SIGINT and SIGTERM handlers, installed before the daemon announces itself.
struct Signals {
    handlers: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        let handlers = match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(int), Ok(term)) => Some((int, term)),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "cannot install signal handlers; stop with SIGKILL");
                None
            }
        };
        Signals { handlers }
    }

    async fn wait(self) -> &'static str {
        let Some((mut int, mut term)) = self.handlers else {
            std::future::pending::<()>().await;
            return "signal";
        };
        tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        }
    }
}

/// Writes `daemon.json` (atomically: a temporary file, then a rename). A refused descriptor
/// (EMFILE / ENFILE: the file source may hold the rest while it shrinks its open set) is
/// retried for up to 10 s; any other failure, or a refusal that outlasts that, is logged:
/// the daemon runs on, but `sentinel status` and the tests cannot find it.
async fn write_daemon_file(state_dir: &Path, info: &DaemonInfo) {
    let path = crate::state_dir::StateDir::new(state_dir).daemon_file();
    let tmp: PathBuf = state_dir.join(format!(".{DAEMON_FILE}.{}", std::process::id()));
    let text = match serde_json::to_string_pretty(info) {
        Ok(t) => t,
        Err(e) => return tracing::error!(error = %e, "cannot encode daemon.json"),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut pause = Duration::from_millis(5);
    loop {
        let written = std::fs::write(&tmp, &text).and_then(|()| std::fs::rename(&tmp, &path));
        let Err(e) = written else { return };
        if !crate::limits::is_descriptor_exhaustion(&e) || tokio::time::Instant::now() >= deadline {
            let _ = std::fs::remove_file(&tmp);
            return tracing::error!(
                path = %path.display(),
                error = %e,
                "cannot write daemon.json: `sentinel status` will not find this daemon"
            );
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Reads a running daemon's [`DaemonInfo`] from `state_dir` (None when absent).
pub fn read_daemon_file(state_dir: &Path) -> Option<DaemonInfo> {
    let text =
        std::fs::read_to_string(crate::state_dir::StateDir::new(state_dir).daemon_file()).ok()?;
    serde_json::from_str(&text).ok()
}
