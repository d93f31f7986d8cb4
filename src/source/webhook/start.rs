//! Starting the `type: webhook` sources: one listener each.

use anyhow::Context;

use crate::config::{SourceConfig, WebhookSourceConfig};
use crate::source::{Running, SourceContext, SourceInfo, Stopper};

use super::{WebhookAuth, router};

/// Binds and serves each webhook source (registered in [`crate::source::SOURCE_TYPES`]).
///
/// # Errors
///
/// A missing secret, bad patterns, or an address that cannot be bound, naming the source.
pub fn start(sources: &[&SourceConfig], cx: &SourceContext) -> anyhow::Result<Running> {
    let mut running = Running {
        infos: Vec::new(),
        listening: Vec::new(),
        stoppers: Vec::new(),
    };
    for src in sources {
        let SourceConfig::Webhook(src) = src else {
            continue;
        };
        let (info, addr, task) = serve(src, cx)?;
        running.infos.push(info);
        running.listening.push((src.common.name.clone(), addr));
        running.stoppers.push(Stopper::Task(task));
    }
    Ok(running)
}

type Served = (
    SourceInfo,
    String,
    tokio::task::JoinHandle<std::io::Result<()>>,
);

fn serve(src: &WebhookSourceConfig, cx: &SourceContext) -> anyhow::Result<Served> {
    let name = &src.common.name;
    let auth = WebhookAuth::from_env(src)?;
    if !src.is_loopback() && !auth.is_required() {
        tracing::warn!(
            source = %name,
            host = %src.host,
            "webhook listens beyond loopback without token_env or hmac_secret_env: \
             anyone who can reach it can post events"
        );
    }
    let router = router(
        src,
        auth,
        cx.defaults.max_line_bytes,
        cx.ingest.clone(),
        cx.metrics.clone(),
        cx.budget.clone(),
    )?;
    let router = crate::http::harden(router, crate::http::REQUEST_TIMEOUT);
    let addr = format!("{}:{}", src.host, src.port);
    let listener = std::net::TcpListener::bind(&addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(tokio::net::TcpListener::from_std)
        .with_context(|| format!("source {name:?}: cannot listen on {addr}"))?;
    let local = listener.local_addr()?.to_string();
    cx.metrics.touch_source(name);
    let info = SourceInfo {
        name: name.clone(),
        kind: "webhook".into(),
        detail: local.clone(),
    };
    let task = tokio::spawn(crate::http::serve(listener, router, cx.stopped()));
    Ok((info, local, task))
}
