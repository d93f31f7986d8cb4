//! `sentinel serve --state DIR`: the HTTP API over a state directory opened read-only — a
//! `sentinel backup`, or a store another process owns. No source, no ingest writer, no fixer,
//! no outbox and no retention run; nothing is written into DIR (not even `daemon.json`: the
//! address is the one asked for, and logged). Every read route answers from the store as it
//! is; a route that writes fails with the store's "opened read-only" error.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;

use crate::api::ApiState;
use crate::attribute::{LiveRules, Manifest, Rules, SeverityRules};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Store;

/// Serves the API at `listen` over `config.state_dir`, read-only, until SIGINT or SIGTERM.
///
/// # Errors
///
/// No store in the state directory, an unreadable store or manifest, bad API auth
/// settings, or the address cannot be bound.
pub fn serve(config: Config, listen: SocketAddr) -> anyhow::Result<()> {
    let db = config.db_path();
    let store = Store::open_read_only(&db)?
        .with_context(|| format!("no store at {} to serve", db.display()))?;
    let store = Arc::new(store);
    let manifest = Manifest::load(&config.manifest_path())?;
    let rules = LiveRules::new(Rules {
        manifest,
        severity: SeverityRules::builtin(),
    });
    let mut api_config = config.api.clone();
    api_config.listen = listen;
    let auth = crate::api::ApiAuth::from_config(&api_config, |v| std::env::var(v).ok())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let metrics = Arc::new(Metrics::new());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("sentinel-io")
        .build()
        .context("cannot start the async runtime")?;
    let config = Arc::new(config);
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let local = listener.local_addr().unwrap_or(listen);
        let state = Arc::new(
            ApiState::new(
                store,
                metrics,
                config.clone(),
                rules,
                Vec::new(),
                jiff::Timestamp::now(),
            )
            .with_auth(auth),
        );
        let router = crate::http::harden(crate::api::router(state), crate::http::REQUEST_TIMEOUT);
        tracing::info!(
            store = %config.db_path().display(),
            "read-only API on http://{local} (GET /status /metrics /incidents)"
        );
        crate::http::serve(listener, router, stopped())
            .await
            .context("the API failed")
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn stopped() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}
