//! CI failures as a source (issue 19): `type: github` and `type: gitlab`.
//!
//! A listener per source (`host`, default 127.0.0.1, `port`, any path) takes the forge's
//! webhooks:
//!
//! 1. **Auth** over the raw body: GitHub's `X-Hub-Signature-256` (HMAC-SHA256 with the secret
//!    from `secret_env`); GitLab's `X-Gitlab-Token`, or its signed form (`webhook-id`,
//!    `webhook-timestamp`, `webhook-signature`). Constant-time compares; 401 otherwise.
//! 2. **Limits**: a body over [`MAX_BODY_BYTES`] is 413, one that is not JSON is 400 naming
//!    the line and column.
//! 3. **Events** ([`payload`]): GitHub `workflow_job`, `workflow_run`, `check_run`; GitLab Job
//!    and Pipeline Hooks. `ping` is 200; other events are acknowledged (200) and ignored. A
//!    redelivered delivery id (`X-GitHub-Delivery`, `X-Gitlab-Event-UUID`) is acknowledged
//!    and not acted on again.
//! 4. **The queue**: a failed job is written to the durable queue (redb `ci_queue`, in the
//!    transaction that remembers the delivery id) and only then answered 202; bounded:
//!    [`QUEUE_CAPACITY`] rows per source, past it 503 with `Retry-After` (nothing is
//!    acknowledged that is not kept). ONE worker per source resumes the rows it finds at
//!    start (with their retry state: attempts spent, next attempt not before), then takes
//!    new ones; it reads the job's log through the API, retrying with backoff ([`fetch`];
//!    each failed attempt rewrites the row), finds the failing step and its error lines
//!    ([`log`], then the same [`crate::scan::Scanner`] as every source: PACT keys attribute
//!    them) and hands the first error line to the ingest writer as one event whose id is
//!    the job's (`provider:repo:job id:attempt`): the writer's durable delivery ids make a
//!    redelivery, or the same job reported by `workflow_job` and `check_run`, count once.
//!    A log that cannot be read still makes an incident ([`LOG_UNREAD`]) that says why.
//!    The row is removed in the transaction that records the CI occurrence: a stop before
//!    it means a fetch again at start, which the job's id keeps from counting twice.
//!    A `workflow_run` lists the run's jobs (`GET …/actions/runs/{run_id}/jobs`) and its row
//!    becomes one row per failed job (or passed rerun); a `check_run` names its job by its
//!    `details_url` (else its id) and the job is read from the API first.
//! 5. **Identity**: the event's line is the first error line followed by
//!    `[ci repository · workflow · job · step]`, so the incident is that failure of that
//!    step (the same failure on every commit is one incident). Each occurrence's commit,
//!    branch, run URL and attempt are kept beside it ([`crate::store::ci`]).
//! 6. **Flaky**: a rerun of the same commit that passes (a higher attempt) marks the
//!    incident flaky; the fixer refuses flaky incidents (guardrail `flaky`).
//!
//! One worker per source keeps the order: a failure is recorded before a later rerun's
//! pass is examined. A pass that arrives before the failure's log was read (two sources,
//! or a redelivery out of order) is not matched.

#[cfg(feature = "daemon")]
mod fetch;
#[cfg(feature = "daemon")]
mod hook;
pub mod log;
#[cfg(feature = "daemon")]
mod payload;

#[cfg(feature = "daemon")]
pub(crate) use fetch::segment;
#[cfg(feature = "daemon")]
pub use fetch::{ATTEMPTS, BACKOFF, MAX_LOG_BYTES};
#[cfg(feature = "daemon")]
pub use hook::{
    LOG_UNREAD, MAX_BODY_BYTES, QUEUE_CAPACITY, RECENT_DELIVERIES, SIGNATURE_TOLERANCE_SECS,
};

#[cfg(feature = "daemon")]
pub use start::start;

#[cfg(feature = "daemon")]
mod start {
    use anyhow::Context;

    use super::fetch::Api;
    use super::hook::{QUEUE_CAPACITY, Secret, Worker, router};
    use crate::config::{CiSourceConfig, SourceConfig};
    use crate::scan::ScannerBuilder;
    use crate::source::{Running, SourceContext, SourceInfo, Stopper};

    fn env(name: &str, key: &str, var: &Option<String>) -> anyhow::Result<Option<String>> {
        let Some(var) = var else { return Ok(None) };
        match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(Some(v)),
            _ => anyhow::bail!(
                "source {name:?}: {key}: the environment variable {var} is not set or empty \
                 (set it, or remove `{key}`)"
            ),
        }
    }

    /// Binds and serves each `type: github` / `type: gitlab` source, with its log queue
    /// (registered in [`crate::source::SOURCE_TYPES`]).
    ///
    /// # Errors
    ///
    /// A missing secret or token, bad patterns, or an address that cannot be bound.
    pub fn start(sources: &[&SourceConfig], cx: &SourceContext) -> anyhow::Result<Running> {
        let mut running = Running {
            infos: Vec::new(),
            listening: Vec::new(),
            stoppers: Vec::new(),
        };
        for src in sources {
            let SourceConfig::Ci(src) = src else { continue };
            let (info, addr, tasks) = serve(src, cx)?;
            running.infos.push(info);
            running.listening.push((src.common.name.clone(), addr));
            running
                .stoppers
                .extend(tasks.into_iter().map(Stopper::Task));
        }
        Ok(running)
    }

    type Served = (
        SourceInfo,
        String,
        Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
    );

    fn serve(src: &CiSourceConfig, cx: &SourceContext) -> anyhow::Result<Served> {
        let name = &src.common.name;
        let secret = env(name, "secret_env", &src.secret_env)?;
        let token = env(name, "token_env", &src.token_env)?;
        if secret.is_none() && !src.is_loopback() {
            tracing::warn!(
                source = %name,
                host = %src.host,
                "a CI source listens beyond loopback without secret_env: anyone who can \
                 reach it can post events"
            );
        }
        let patterns = src
            .common
            .error_patterns
            .clone()
            .unwrap_or_else(|| cx.defaults.error_patterns.clone());
        let scanner = ScannerBuilder::new()
            .max_line_bytes(cx.defaults.max_line_bytes)
            .build(&patterns)
            .with_context(|| format!("source {name:?}: error_patterns"))?;
        let api = Api::new(src.provider, &src.api_url, token)
            .with_context(|| format!("source {name:?}: cannot build the HTTP client"))?;
        let backlog = super::hook::backlog(&cx.store, name)
            .with_context(|| format!("source {name:?}: cannot read its queued log fetches"))?;
        let (tx, rx) = tokio::sync::mpsc::channel(QUEUE_CAPACITY);
        let router = router(
            name,
            src.provider,
            Secret::new(secret.as_deref()),
            tx,
            cx.metrics.clone(),
            cx.store.clone(),
            &backlog,
        );
        let router = crate::http::harden(router, crate::http::REQUEST_TIMEOUT);
        let addr = format!("{}:{}", src.host, src.port);
        let listener = std::net::TcpListener::bind(&addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(tokio::net::TcpListener::from_std)
            .with_context(|| format!("source {name:?}: cannot listen on {addr}"))?;
        let local = listener.local_addr()?.to_string();
        cx.metrics.touch_source(name);
        let worker = Worker {
            name: std::sync::Arc::from(name.as_str()),
            provider: src.provider,
            api,
            scanner,
            writer: cx.ingest.clone(),
            store: cx.store.clone(),
            max_line_bytes: cx.defaults.max_line_bytes,
        };
        let stopped = cx.stopped();
        let work = tokio::spawn(async move {
            worker.run(rx, backlog.rows, backlog.pending, stopped).await;
            Ok(())
        });
        let info = SourceInfo {
            name: name.clone(),
            kind: src.provider.as_str().into(),
            detail: local.clone(),
        };
        let task = tokio::spawn(crate::http::serve(listener, router, cx.stopped()));
        Ok((info, local, vec![task, work]))
    }
}
