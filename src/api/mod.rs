//! The daemon's HTTP API: health, status, metrics, incidents, the manifest and registration.
//!
//! | route | answer |
//! |---|---|
//! | `GET /health` | `{"status": "ok"}`: the process serves requests (liveness) |
//! | `GET /status` | the reference's `/status` object (SPEC §11) plus `uptime_seconds`, `incidents`, `incidents_by_status`, `incidents_by_severity` (both read from the store's tallies: O(1), see [`crate::store::counts`]), `source_details` (`[{name, type, detail}]`, plus the live fields a source publishes: `state` (`ok`, `failing`, `running`, `exited` ...) and `error`; a process's `pid`, `restarts`, `last_exit`; a CloudWatch source's `log_groups` and `lag_seconds`; a file source's `files_behind`, `lag_bytes` and its ten files furthest behind, `most_behind`: `[{source, path, bytes_behind, behind_seconds}]`), `files_open` and `files_waiting_for_descriptor` (file sources' descriptors held, and tailed files waiting for one); `version` is the real one and `started_at` is RFC 3339 UTC |
//! | `GET /metrics` | Prometheus text format 0.0.4 ([`crate::metrics::CONTENT_TYPE`]), with the gauges `sentinel_incidents{status}` and `sentinel_incidents_by_severity{severity}` from the store's tallies |
//! | `GET /metrics.json` | the reference's JSON metrics (its `/metrics`), `total_incidents` uncapped |
//! | `GET /incidents` | `{"incidents": [...], "next_cursor": "..." or null}`, most recently seen first; `status` (a status name or `active`), `component`, `severity`, `since` (RFC 3339: last seen at or after), `limit` (default 100, 1..=1000), `cursor` (a previous answer's `next_cursor`; stable while new incidents arrive). Filters, alone or combined, read the store's secondary indexes: a page costs what an unfiltered one does, matches or none (see `store::index`) |
//! | `GET /incidents/{id}` | one incident with `timeline` (its events, oldest first) and `fix_attempts`, or 404 |
//! | `GET /incidents/{id}/trend` | its occurrences per minute (`?bucket=1m`, last 24 h) or hour (`1h`, last 30 days), see [`trend`] |
//! | `GET /trend` | the same over all incidents |
//! | `GET /events` | the event log as Server-Sent Events, live, resumable with `Last-Event-ID` (see [`events`]) |
//! | `GET /openapi.json` | the OpenAPI 3 document, generated from the handlers' `#[utoipa::path]` annotations |
//! | `GET /manifest` | the registered components, `{"components": {...}}` |
//! | `POST /register` | registers a component or a Pact project (see [`register`]) |
//!
//! Every error, unknown routes (404) and wrong methods (405) included, is JSON:
//! `{"error": {"code": "...", "message": "..."}}` ([`ApiError`]). A bad query value is 400,
//! an unknown query parameter too (a typo must not silently widen the answer).
//!
//! Handlers never block the async workers: store reads (redb read transactions, which never
//! wait for the writer) run on the blocking pool.
//!
//! Compatibility note: the reference's `/status` has `"sources": <count>`; it is kept, and
//! the list of sources is `source_details`.

mod auth;
pub(crate) use auth::Scope;

pub mod events;
mod fixes;
mod postmortem;
mod register;
pub mod schema;
mod trend;
pub mod triage;

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Value, json};

pub use crate::http::ApiError;
pub use auth::ApiAuth;

use crate::attribute::{LiveRules, Severity};
use crate::config::Config;
use crate::metrics::{self, Metrics};
use crate::store::{
    IncidentFilter, IncidentStatus, IncidentTallies, StatusFilter, Store, StoreError,
};

/// The default number of incidents `GET /incidents` returns.
pub const DEFAULT_INCIDENT_LIMIT: usize = 100;
/// The most incidents one `GET /incidents` returns.
pub const MAX_INCIDENT_LIMIT: usize = 1000;

pub use crate::source::SourceInfo;

/// Shared state of the API handlers.
#[derive(Debug)]
pub struct ApiState {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    config: Arc<Config>,
    rules: Arc<LiveRules>,
    sources: Vec<SourceInfo>,
    board: Arc<crate::source::SourceBoard>,
    started_at: Timestamp,
    started: Instant,
    auth: Arc<ApiAuth>,
    fixer: Option<crate::fix::service::FixHandle>,
    triage: Option<Arc<triage::TriageDesk>>,
    feed: events::EventFeed,
    cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl ApiState {
    /// The state of a daemon that started at `started_at` (wall clock, for `/status`);
    /// uptime is measured from this call.
    pub fn new(
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        config: Arc<Config>,
        rules: Arc<LiveRules>,
        sources: Vec<SourceInfo>,
        started_at: Timestamp,
    ) -> ApiState {
        let feed = events::EventFeed::new(store.event_head());
        ApiState {
            feed,
            store,
            metrics,
            config,
            rules,
            sources,
            board: Arc::new(crate::source::SourceBoard::new()),
            started_at,
            started: Instant::now(),
            auth: Arc::new(ApiAuth::open(std::net::SocketAddr::from((
                [127, 0, 0, 1],
                0,
            )))),
            fixer: None,
            triage: None,
            cluster: None,
        }
    }

    /// Answers `GET /incidents`, `/incidents/{id}` and `/metrics.json` for every node of
    /// the cluster (see [`crate::cluster`]).
    pub fn with_cluster(mut self, cluster: Arc<crate::cluster::Cluster>) -> ApiState {
        self.cluster = Some(cluster);
        self
    }

    /// Sets the access rules (the default: no tokens, loopback `Host` names only).
    pub fn with_auth(mut self, auth: ApiAuth) -> ApiState {
        self.auth = Arc::new(auth);
        self
    }

    /// Serves `POST /fix` through the daemon's fixer.
    pub fn with_fixer(mut self, fixer: crate::fix::service::FixHandle) -> ApiState {
        self.fixer = Some(fixer);
        self
    }
    /// Serves `POST /triage`'s LLM path with the daemon's client and budget.
    pub fn with_triage(mut self, desk: Arc<triage::TriageDesk>) -> ApiState {
        self.triage = Some(desk);
        self
    }

    /// Shows the sources' live state (see [`crate::source::SourceBoard`]) in `/status`.
    pub fn with_board(mut self, board: Arc<crate::source::SourceBoard>) -> ApiState {
        self.board = board;
        self
    }

    /// Ends the `GET /events` streams when `stop` turns true (the daemon stopping), so
    /// that shutdown does not wait for them.
    pub fn with_stop(mut self, stop: tokio::sync::watch::Receiver<bool>) -> ApiState {
        self.feed.set_stop(stop);
        self
    }

    /// The store (for the dashboard, [`crate::dashboard`]).
    pub(crate) fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The metrics.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The configuration.
    pub(crate) fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The live attribution rules (the manifest).
    pub(crate) fn rules(&self) -> &LiveRules {
        &self.rules
    }

    /// The configured sources.
    pub(crate) fn sources(&self) -> &[SourceInfo] {
        &self.sources
    }

    /// The access rules.
    pub(crate) fn auth(&self) -> &ApiAuth {
        &self.auth
    }

    /// The store hook that wakes the `GET /events` streams when events are committed:
    /// install it with [`Store::set_event_hook`].
    pub fn event_hook(&self) -> crate::store::events::EventHook {
        self.feed.hook()
    }
}

/// The API router (wrap it with [`crate::http::harden`]).
///
/// Every route is registered through [`utoipa_axum::router::OpenApiRouter::routes`], so a
/// route is in `GET /openapi.json` exactly when it is served: adding a route is one
/// `#[utoipa::path]` annotation on its handler and one `.routes(routes!(handler))` here.
pub fn router(state: Arc<ApiState>) -> Router {
    let (router, doc) = api_routes().split_for_parts();
    let _ = OPENAPI.set(doc.to_json().unwrap_or_else(|_| "{}".into()));
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.auth.clone(),
            auth::guard,
        ))
        .with_state(state.clone())
        // The dashboard's pages check the Host and their session themselves.
        .merge(crate::dashboard::router(state))
}

/// The OpenAPI document's head.
#[derive(utoipa::OpenApi)]
#[openapi(info(
    title = "Sentinel",
    description = "Sentinel's HTTP API: incidents, events, metrics, registration."
))]
struct ApiDoc;

fn api_routes() -> utoipa_axum::router::OpenApiRouter<Arc<ApiState>> {
    use utoipa::OpenApi;
    use utoipa_axum::routes;
    utoipa_axum::router::OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(status))
        .routes(routes!(prometheus))
        .routes(routes!(metrics_json))
        .routes(routes!(incidents))
        .routes(routes!(incident))
        .routes(routes!(trend::incident_trend))
        .routes(routes!(postmortem::report))
        .routes(routes!(trend::total_trend))
        .routes(routes!(events::events))
        .routes(routes!(register::manifest))
        .routes(routes!(register::register))
        .routes(routes!(fixes::post_fix))
        .routes(routes!(fixes::list))
        .routes(routes!(fixes::get_fix))
        .routes(routes!(fixes::approve))
        .routes(routes!(fixes::reject))
        .routes(routes!(fixes::pause))
        .routes(routes!(fixes::resume))
        .routes(routes!(triage::triage))
        .routes(routes!(openapi))
}

static OPENAPI: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The OpenAPI 3 document of this API.
#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "this API's OpenAPI 3.1 document")))]
async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        OPENAPI.get().cloned().unwrap_or_else(|| "{}".into()),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see GET /status, /metrics, /incidents")
}

async fn method_not_allowed(uri: axum::http::Uri) -> ApiError {
    let p = uri.path();
    if matches!(p, "/register" | "/fix") || p.ends_with("/approve") || p.ends_with("/reject") {
        ApiError::method_not_allowed("POST")
    } else {
        ApiError::method_not_allowed("GET, HEAD")
    }
}

/// Incidents per status and severity, as the store keeps them (a read of a dozen rows,
/// whatever the number of incidents).
async fn incident_totals(s: &ApiState) -> Result<IncidentTallies, ApiError> {
    let store = s.store.clone();
    blocking(move || store.incident_tallies(false)).await
}

#[utoipa::path(get, path = "/health", responses((status = 200, description = "alive: `{\"status\": \"ok\"}`", body = crate::api::schema::Health), (status = 503, description = "the store cannot commit: `{\"status\": \"degraded\", \"reason\", \"since\"}`", body = crate::api::schema::Health)))]
async fn health(State(s): State<Arc<ApiState>>) -> Response {
    match s.store.health().degraded() {
        None => Json(json!({ "status": "ok" })).into_response(),
        Some(d) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            Json(json!({ "status": "degraded", "reason": d.reason, "since": d.since })),
        )
            .into_response(),
    }
}

/// The store's health as `/status` shows it.
fn store_health(s: &ApiState) -> Value {
    match s.store.health().degraded() {
        None => json!({ "status": "ok" }),
        Some(d) => json!({ "status": "degraded", "reason": d.reason, "since": d.since }),
    }
}

#[utoipa::path(get, path = "/status", responses((status = 200, description = "the daemon's status", body = crate::api::schema::StatusDoc)))]
async fn status(State(s): State<Arc<ApiState>>) -> Result<Json<Value>, ApiError> {
    // Both reads, then one decision: the store may degrade (or be reopening) between them.
    let read = match incident_totals(&s).await {
        Ok(t) => fix_totals(&s).await.map(|f| (t, f.0)),
        Err(e) => Err(e),
    };
    let (tallies, total_fixes) = match read {
        Ok(t) => t,
        // A degraded store still gets a status: what it is, and why.
        Err(_) if s.store.health().is_degraded() => {
            return Ok(Json(json!({
                "version": env!("CARGO_PKG_VERSION"),
                "started_at": s.started_at.to_string(),
                "uptime_seconds": s.started.elapsed().as_secs(),
                "sources": s.sources.len(),
                "store": store_health(&s),
                "incidents": null,
                "source_details": s.sources,
            })));
        }
        Err(e) => return Err(e),
    };
    let by_status: serde_json::Map<String, Value> = IncidentStatus::ALL
        .iter()
        .map(|st| {
            (
                st.as_str().to_string(),
                json!(tallies.by_status.get(st).copied().unwrap_or(0)),
            )
        })
        .collect();
    let by_severity: serde_json::Map<String, Value> = Severity::ALL
        .iter()
        .map(|sev| {
            (
                sev.as_str().to_string(),
                json!(tallies.by_severity.get(sev).copied().unwrap_or(0)),
            )
        })
        .collect();
    let c = &s.config;
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "started_at": s.started_at.to_string(),
        "uptime_seconds": s.started.elapsed().as_secs(),
        "sources": s.sources.len(),
        "components": s.rules.snapshot().manifest.len(),
        "active_incidents": tallies.active(),
        "total_fixes": total_fixes,
        "arbiter_configured": c.arbiter.api_endpoint.is_some(),
        "stigmergy_configured": c.stigmergy.endpoint.is_some(),
        "ledger_configured": c.ledger.ledger_api.is_some(),
        "pact_configured": c.pact.project_dir.is_some() || c.pact.api_endpoint.is_some(),
        "incidents": tallies.total(),
        "incidents_by_status": by_status,
        "incidents_by_severity": by_severity,
        "source_details": source_details(&s),
        "files_open": s.metrics.files_open.get(),
        "files_waiting_for_descriptor": s.metrics.files_waiting.get(),
        "store": store_health(&s),
        "storage": crate::lifecycle::store_facts(&s.store).ok(),
    })))
}

/// How many of a file source's files furthest behind `/status` lists.
const STATUS_FILES_BEHIND: usize = 10;

/// The sources with their live fields; a file source also with its lag (`files_behind`,
/// `lag_bytes`, `most_behind`: see [`crate::metrics::FileLag`]).
fn source_details(s: &ApiState) -> Value {
    let mut details = s.board.details(&s.sources);
    if let Value::Array(items) = &mut details {
        for (item, info) in items.iter_mut().zip(&s.sources) {
            if info.kind != "file" {
                continue;
            }
            let lag = s
                .metrics
                .file_lag
                .summary(Some(&info.name), STATUS_FILES_BEHIND);
            if let Value::Object(m) = item {
                m.insert("files_behind".into(), json!(lag.files_behind));
                m.insert("lag_bytes".into(), json!(lag.bytes_behind));
                m.insert("most_behind".into(), json!(lag.most_behind));
            }
        }
    }
    details
}

async fn fix_totals(s: &ApiState) -> Result<(u64, u64, u64, u64), ApiError> {
    let store = s.store.clone();
    blocking(move || store.fix_totals()).await
}

#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format 0.0.4")))]
async fn prometheus(State(s): State<Arc<ApiState>>) -> Response {
    let mut text = s.metrics.render();
    // The incident gauges come from the store's tallies (O(1)); a store that cannot be read
    // leaves them out rather than failing the scrape (`sentinel_store_degraded` says why).
    if let Ok(t) = incident_totals(&s).await {
        let by_status: Vec<(&str, u64)> = IncidentStatus::ALL
            .iter()
            .map(|st| (st.as_str(), t.by_status.get(st).copied().unwrap_or(0)))
            .collect();
        let by_severity: Vec<(&str, u64)> = Severity::ALL
            .iter()
            .map(|sev| (sev.as_str(), t.by_severity.get(sev).copied().unwrap_or(0)))
            .collect();
        metrics::render_gauge(
            &mut text,
            "sentinel_incidents",
            "Incidents in the store, by status.",
            "status",
            &by_status,
        );
        metrics::render_gauge(
            &mut text,
            "sentinel_incidents_by_severity",
            "Incidents in the store, by severity.",
            "severity",
            &by_severity,
        );
    }
    let store = s.store.clone();
    if let Ok(overflows) = blocking(move || store.overflows()).await {
        render_overflows(&mut text, &overflows);
    }
    // The store's size, free space and last retention run (a few `meta` rows).
    let store = s.store.clone();
    if let Ok(lifecycle) = blocking(move || Ok(crate::lifecycle::render_metrics(&store))).await {
        text.push_str(&lifecycle);
    }
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
}

/// `sentinel_incidents_overflow_total{key}`: new fingerprints the cardinality guard folded
/// into each key's overflow incident (read from the store at scrape time, so it survives
/// restarts; one series per key that ever overflowed).
fn render_overflows(out: &mut String, overflows: &[(String, u64)]) {
    use std::fmt::Write;
    let name = "sentinel_incidents_overflow_total";
    let _ = writeln!(
        out,
        "# HELP {name} New fingerprints folded into the key's overflow incident by \
         grouping.max_new_incidents_per_key."
    );
    let _ = writeln!(out, "# TYPE {name} counter");
    for (key, n) in overflows {
        // PACT keys are [A-Za-z0-9_:]; the unattributed lines have the empty key.
        let key = if key.is_empty() { "unattributed" } else { key };
        let _ = writeln!(out, "{name}{{key=\"{key}\"}} {n}");
    }
}

#[utoipa::path(get, path = "/metrics.json", responses((status = 200, description = "the reference's JSON metrics; with `cluster` set, the figures summed over the nodes that answered, plus `node` (this one), `nodes` (each node's own figures) and `missing_nodes` (the nodes that did not answer within `cluster.timeout_ms`)", body = crate::api::schema::MetricsDoc)))]
async fn metrics_json(State(s): State<Arc<ApiState>>) -> Result<Json<Value>, ApiError> {
    let Some(cluster) = &s.cluster else {
        return Ok(Json(
            local_metrics(&s.store, &s.rules).await.map_err(refused)?,
        ));
    };
    let (local, asked) = tokio::join!(
        local_metrics(&s.store, &s.rules),
        cluster.ask("metrics", json!({}), &[])
    );
    let local = local.map_err(refused)?;
    let mut nodes = serde_json::Map::new();
    nodes.insert(cluster.node().to_string(), local);
    let mut missing = asked.missing;
    for (node, answer) in asked.answers {
        match answer {
            Ok(v) => {
                nodes.insert(node, v);
            }
            Err(e) => {
                tracing::warn!(%node, code = %e.code, "cluster: {}", e.message);
                missing.push(node);
            }
        }
    }
    missing.sort();
    let mut totals = serde_json::Map::new();
    for v in nodes.values() {
        for (k, x) in v.as_object().into_iter().flatten() {
            let sum = match (totals.get(k).and_then(Value::as_f64), x.as_f64()) {
                (_, None) => continue,
                (None, Some(b)) => b,
                // Every node reads the same manifest: the most any node has.
                (Some(a), Some(b)) if k == "components_registered" => a.max(b),
                (Some(a), Some(b)) => a + b,
            };
            let sum = if x.is_u64() || x.is_i64() {
                json!(sum as u64)
            } else {
                json!((sum * 100.0).round() / 100.0)
            };
            totals.insert(k.clone(), sum);
        }
    }
    totals.insert("node".into(), json!(cluster.node()));
    totals.insert("nodes".into(), Value::Object(nodes));
    totals.insert("missing_nodes".into(), json!(missing));
    Ok(Json(Value::Object(totals)))
}

/// A node's refusal as this API's error.
fn refused(e: crate::cluster::Refused) -> ApiError {
    let status = match e.code.as_str() {
        "invalid_query" | "invalid_path" => axum::http::StatusCode::BAD_REQUEST,
        "not_found" => axum::http::StatusCode::NOT_FOUND,
        _ => axum::http::StatusCode::SERVICE_UNAVAILABLE,
    };
    let code: &'static str = match e.code.as_str() {
        "invalid_query" => "invalid_query",
        "invalid_path" => "invalid_path",
        "not_found" => "not_found",
        _ => "store_unavailable",
    };
    let err = ApiError::new(status, code, e.message);
    if status == axum::http::StatusCode::SERVICE_UNAVAILABLE {
        err.with_retry_after(1)
    } else {
        err
    }
}

fn refusal(e: &ApiError) -> crate::cluster::Refused {
    crate::cluster::Refused {
        code: e.code().to_string(),
        message: e.message().to_string(),
    }
}

/// This node's `/metrics.json` (also its answer to the cluster's `metrics`).
pub(crate) async fn local_metrics(
    store: &Arc<Store>,
    rules: &LiveRules,
) -> Result<Value, crate::cluster::Refused> {
    let st = store.clone();
    let tallies = blocking(move || st.incident_tallies(false))
        .await
        .map_err(|e| refusal(&e))?;
    let (total, active) = (tallies.total(), tallies.active());
    let st = store.clone();
    let (attempted, succeeded, failed, micro) = blocking(move || st.fix_totals())
        .await
        .map_err(|e| refusal(&e))?;
    Ok(json!({
        "total_incidents": total,
        "active_incidents": active,
        "total_fixes_attempted": attempted,
        "fixes_succeeded": succeeded,
        "fixes_failed": failed,
        "total_spend_usd": (crate::fix::budget::usd(micro) * 100.0).round() / 100.0,
        "components_registered": rules.snapshot().manifest.len(),
    }))
}

#[utoipa::path(get, path = "/incidents", operation_id = "list_incidents", params(("status" = Option<String>, Query, description = "a status (`detected`, `triaging`, …, `resolved`, `escalated`) or `active`"), ("component" = Option<String>, Query, description = "a component id, exactly"), ("severity" = Option<String>, Query, description = "a severity (`low` … `critical`)"), ("since" = Option<String>, Query, description = "last seen at or after this time (RFC 3339)"), ("cursor" = Option<String>, Query, description = "the previous page's `next_cursor` (with `cluster` set: a position per node, opaque)"), ("limit" = Option<usize>, Query, description = "at most this many (default 100, at most 1000)")), responses((status = 200, description = "`{\"incidents\": [...], \"next_cursor\"}`, most recently seen first; with `cluster` set, the pages of every node merged by last seen, each incident with its `node`, plus `nodes` (those that answered) and `missing_nodes` (those that did not answer within `cluster.timeout_ms`)", body = IncidentPage), (status = 400, description = "bad query: `{\"error\": {\"code\", \"message\"}}`", body = crate::api::schema::ErrorBody), (status = 401, description = "no or wrong token", body = crate::api::schema::ErrorBody)))]
async fn incidents(
    State(s): State<Arc<ApiState>>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    if let Some(cluster) = &s.cluster {
        return cluster_incidents(&s, cluster, params).await;
    }
    let q = incident_query(&params)?;
    let store = s.store.clone();
    let (found, next) =
        blocking(move || store.incidents_page(&q.filter, q.since, q.cursor, q.limit)).await?;
    Ok(Json(IncidentPage {
        incidents: found
            .into_iter()
            .map(|incident| PagedIncident {
                incident,
                node: None,
            })
            .collect(),
        next_cursor: next.map(encode_cursor),
        nodes: None,
        missing_nodes: None,
    })
    .into_response())
}

/// This node's page of incidents as JSON (also its answer to the cluster's `incidents`).
pub(crate) async fn local_incidents(
    store: &Arc<Store>,
    params: &[(String, String)],
) -> Result<Value, crate::cluster::Refused> {
    let q = incident_query(params).map_err(|e| refusal(&e))?;
    let store = store.clone();
    let (found, next) =
        blocking(move || store.incidents_page(&q.filter, q.since, q.cursor, q.limit))
            .await
            .map_err(|e| refusal(&e))?;
    Ok(json!({"incidents": found, "next_cursor": next.map(encode_cursor)}))
}

/// `GET /incidents` for the cluster: this node's page and every other node's, merged by
/// last seen; the cursor keeps a position per node.
async fn cluster_incidents(
    s: &ApiState,
    cluster: &crate::cluster::Cluster,
    params: Vec<(String, String)>,
) -> Result<Response, ApiError> {
    use crate::cluster::END;
    let bad = |m: String| ApiError::bad_request("invalid_query", m);
    let mut cursors = std::collections::BTreeMap::new();
    let mut base = Vec::with_capacity(params.len());
    for (k, v) in params {
        if k == "cursor" {
            cursors = crate::cluster::decode_cursor(&v).ok_or_else(|| {
                bad(format!(
                    "cursor {:?} is not a cursor from a previous answer's next_cursor",
                    clip(&v)
                ))
            })?;
        } else {
            base.push((k, v));
        }
    }
    let limit = incident_query(&base)?.limit;
    let me = cluster.node().to_string();
    let local = async {
        match cursors.get(&me).map(String::as_str) {
            Some(END) => Ok(json!({"incidents": [], "next_cursor": null})),
            Some(c) => {
                let mut p = base.clone();
                p.push(("cursor".into(), c.to_string()));
                local_incidents(&s.store, &p).await
            }
            None => local_incidents(&s.store, &base).await,
        }
    };
    let also: Vec<String> = cursors.keys().cloned().collect();
    let (local, asked) = tokio::join!(
        local,
        cluster.ask(
            "incidents",
            json!({"params": base, "cursors": cursors}),
            &also
        )
    );
    let mut pages = vec![(me.clone(), local.map_err(refused)?)];
    let mut missing = asked.missing;
    for (node, answer) in asked.answers {
        match answer {
            Ok(v) => pages.push((node, v)),
            Err(e) => {
                tracing::warn!(%node, code = %e.code, "cluster: {}", e.message);
                missing.push(node);
            }
        }
    }
    missing.sort();
    // Every answered page, by (last seen, fingerprint) descending as each store pages.
    let mut all: Vec<(crate::store::RecentKey, String, crate::store::Incident)> = Vec::new();
    let mut more: std::collections::BTreeMap<String, bool> = Default::default();
    let mut nodes = Vec::new();
    for (node, page) in pages {
        let found: Vec<crate::store::Incident> = serde_json::from_value(page["incidents"].clone())
            .map_err(|e| {
                ApiError::internal(format!(
                    "node {node:?} answered a page that does not parse: {e}"
                ))
            })?;
        more.insert(node.clone(), !page["next_cursor"].is_null());
        for inc in found {
            all.push((
                (crate::store::micros(inc.last_seen), inc.fingerprint.0),
                node.clone(),
                inc,
            ));
        }
        nodes.push(node);
    }
    all.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let returned: std::collections::BTreeMap<String, usize> =
        all.iter().fold(Default::default(), |mut m, (_, n, _)| {
            *m.entry(n.clone()).or_default() += 1;
            m
        });
    all.truncate(limit);
    let mut taken: std::collections::BTreeMap<String, (usize, crate::store::RecentKey)> =
        Default::default();
    for (key, node, _) in &all {
        let e = taken.entry(node.clone()).or_insert((0, *key));
        e.0 += 1;
        e.1 = *key;
    }
    // The next position of each node that answered; a missing node keeps its own.
    let mut next = cursors.clone();
    for node in &nodes {
        let got = returned.get(node).copied().unwrap_or(0);
        let has_more = more.get(node).copied().unwrap_or(false);
        match taken.get(node) {
            Some((n, _)) if *n == got && !has_more => {
                next.insert(node.clone(), END.into());
            }
            Some((_, key)) => {
                next.insert(node.clone(), encode_cursor(*key));
            }
            None if got == 0 && !has_more => {
                next.insert(node.clone(), END.into());
            }
            None => {}
        }
    }
    let done = nodes
        .iter()
        .all(|n| next.get(n).map(String::as_str) == Some(END));
    Ok(Json(IncidentPage {
        incidents: all
            .into_iter()
            .map(|(_, node, incident)| PagedIncident {
                incident,
                node: Some(node),
            })
            .collect(),
        next_cursor: (!done).then(|| crate::cluster::encode_cursor(&next)),
        nodes: Some(nodes),
        missing_nodes: Some(missing),
    })
    .into_response())
}

/// The answer of `GET /incidents`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct IncidentPage {
    /// Most recently seen first.
    incidents: Vec<PagedIncident>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
    /// With `cluster` set: the nodes that answered (this one first).
    #[serde(skip_serializing_if = "Option::is_none")]
    nodes: Option<Vec<String>>,
    /// With `cluster` set: the nodes that did not answer within `cluster.timeout_ms` (their
    /// incidents are not in this page; the cursor keeps their position).
    #[serde(skip_serializing_if = "Option::is_none")]
    missing_nodes: Option<Vec<String>>,
}

/// An incident in a page.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct PagedIncident {
    #[serde(flatten)]
    incident: crate::store::Incident,
    /// With `cluster` set: the node whose store holds it.
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<String>,
}

/// A parsed `GET /incidents` query.
#[derive(Debug)]
struct IncidentQuery {
    filter: IncidentFilter,
    since: Option<Timestamp>,
    cursor: Option<(u64, u64)>,
    limit: usize,
}

/// The opaque cursor: a position in the recency index (`c1` + 32 hex digits).
fn encode_cursor((us, fp): (u64, u64)) -> String {
    format!("c1{us:016x}{fp:016x}")
}

fn decode_cursor(c: &str) -> Option<(u64, u64)> {
    let hex = c.strip_prefix("c1").filter(|h| h.len() == 32)?;
    let us = u64::from_str_radix(hex.get(..16)?, 16).ok()?;
    let fp = u64::from_str_radix(hex.get(16..)?, 16).ok()?;
    Some((us, fp))
}

/// Parses the query of `GET /incidents`.
fn incident_query(params: &[(String, String)]) -> Result<IncidentQuery, ApiError> {
    let bad = |m: String| ApiError::bad_request("invalid_query", m);
    let mut filter = IncidentFilter::default();
    let mut limit = DEFAULT_INCIDENT_LIMIT;
    let mut since = None;
    let mut cursor = None;
    for (k, v) in params {
        match k.as_str() {
            "status" => {
                filter.status = Some(if v == "active" {
                    StatusFilter::Active
                } else {
                    StatusFilter::Is(IncidentStatus::from_name(v).ok_or_else(|| {
                        let names: Vec<&str> =
                            IncidentStatus::ALL.iter().map(|s| s.as_str()).collect();
                        bad(format!(
                            "status {:?} is not one of active, {}",
                            clip(v),
                            names.join(", ")
                        ))
                    })?)
                });
            }
            "component" => {
                if v.is_empty() {
                    return Err(bad("component must not be empty".into()));
                }
                filter.component = Some(v.clone());
            }
            "severity" => {
                filter.severity = Some(v.parse::<Severity>().map_err(|_| {
                    bad(format!(
                        "severity {:?} is not one of low, medium, high, critical, compliance",
                        clip(v)
                    ))
                })?);
            }
            "since" => {
                since = Some(v.parse::<Timestamp>().map_err(|_| {
                    bad(format!(
                        "since {:?} is not an RFC 3339 time (e.g. 2026-01-31T12:00:00Z)",
                        clip(v)
                    ))
                })?);
            }
            "cursor" => {
                cursor = Some(decode_cursor(v).ok_or_else(|| {
                    bad(format!(
                        "cursor {:?} is not a cursor from a previous answer's next_cursor",
                        clip(v)
                    ))
                })?);
            }
            "limit" => {
                limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_INCIDENT_LIMIT).contains(n))
                    .ok_or_else(|| {
                        bad(format!(
                            "limit {:?} is not a number in 1..={MAX_INCIDENT_LIMIT}",
                            clip(v)
                        ))
                    })?;
            }
            other => {
                return Err(bad(format!(
                    "unknown query parameter {:?}; use status, component, severity, since, \
                     cursor, limit",
                    clip(other)
                )));
            }
        }
    }
    Ok(IncidentQuery {
        filter,
        since,
        cursor,
        limit,
    })
}

/// The most timeline events `GET /incidents/{id}` returns (the newest).
pub const MAX_TIMELINE: usize = 1000;

/// The answer of `GET /incidents/{id}`: the incident's fields, its timeline and its fix
/// attempts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct IncidentDetail {
    #[serde(flatten)]
    incident: crate::store::Incident,
    /// Its events still in the log, oldest first (at most [`MAX_TIMELINE`], the newest).
    timeline: Vec<crate::store::Event>,
    /// Its fix attempts, oldest first.
    fix_attempts: Vec<crate::store::FixResult>,
    /// The daemon's LLM triage answer, for an incident without a PACT key that was triaged.
    #[serde(skip_serializing_if = "Option::is_none")]
    triage: Option<crate::store::triage::TriageRecord>,
    /// With `cluster` set: the node whose store holds it.
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<String>,
    /// With `cluster` set: the nodes that did not answer within `cluster.timeout_ms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    missing_nodes: Option<Vec<String>>,
    /// A CI failure's repository, workflow, job, step, occurrences and flaky mark.
    #[serde(skip_serializing_if = "Option::is_none")]
    ci: Option<crate::store::ci::CiRecord>,
    /// The pull request and issue opened for it (`fix.pull_request`, `issues`).
    #[serde(skip_serializing_if = "Option::is_none")]
    forge: Option<crate::store::ci::ForgeLinks>,
}

#[utoipa::path(get, path = "/incidents/{id}", operation_id = "get_incident", params(("id" = String, Path, description = "incident id")), responses((status = 200, description = "the incident with its timeline, fix attempts and (when the daemon triaged it) its triage answer; with `cluster` set, asked of every node, the one that has it answers, with its `node` and the `missing_nodes`", body = IncidentDetail), (status = 404, description = "no such incident (with `cluster` set: on no node that answered; the message names the nodes that did not)", body = crate::api::schema::ErrorBody)))]
async fn incident(
    State(s): State<Arc<ApiState>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))?;
    let found = local_detail(&s.store, &id).await?;
    let Some(cluster) = &s.cluster else {
        return match found {
            Some(detail) => Ok(Json(detail).into_response()),
            None => Err(ApiError::not_found(format!(
                "no incident with id {:?}",
                clip(&id)
            ))),
        };
    };
    if let Some(mut detail) = found {
        detail.node = Some(cluster.node().to_string());
        detail.missing_nodes = Some(Vec::new());
        return Ok(Json(detail).into_response());
    }
    let asked = cluster.ask("incident", json!({"id": id}), &[]).await;
    let mut missing = asked.missing;
    let mut best: Option<(String, Value)> = None;
    for (node, answer) in asked.answers {
        match answer {
            Ok(Value::Null) => {}
            Ok(v) => {
                let newer = best
                    .as_ref()
                    .is_none_or(|(_, b)| v["last_seen"].as_str() > b["last_seen"].as_str());
                if newer {
                    best = Some((node, v));
                }
            }
            Err(e) => {
                tracing::warn!(%node, code = %e.code, "cluster: {}", e.message);
                missing.push(node);
            }
        }
    }
    missing.sort();
    match best {
        Some((node, mut v)) => {
            v["node"] = json!(node);
            v["missing_nodes"] = json!(missing);
            Ok(Json(v).into_response())
        }
        None if missing.is_empty() => Err(ApiError::not_found(format!(
            "no incident with id {:?} on any node",
            clip(&id)
        ))),
        None => Err(ApiError::not_found(format!(
            "no incident with id {:?} on the nodes that answered; missing_nodes (no answer \
             within the timeout): {}",
            clip(&id),
            missing.join(", ")
        ))),
    }
}

/// This node's incident with its timeline (also its answer to the cluster's `incident`:
/// `null` when it has none).
pub(crate) async fn local_incident(
    store: &Arc<Store>,
    id: &str,
) -> Result<Value, crate::cluster::Refused> {
    match local_detail(store, id).await.map_err(|e| refusal(&e))? {
        Some(d) => serde_json::to_value(d).map_err(|e| crate::cluster::Refused {
            code: "internal".into(),
            message: e.to_string(),
        }),
        None => Ok(Value::Null),
    }
}

async fn local_detail(store: &Arc<Store>, id: &str) -> Result<Option<IncidentDetail>, ApiError> {
    let store = store.clone();
    let key = id.to_string();
    blocking(move || {
        let Some(inc) = store.incident(&key)? else {
            return Ok(None);
        };
        let timeline = store.incident_events(&key, MAX_TIMELINE)?;
        let fix_attempts = store.fixes_of(&key)?;
        let triage = store.triage_of(inc.fingerprint)?;
        let ci = store.ci_record(inc.fingerprint.0)?;
        let forge = store.forge_links(inc.fingerprint.0)?;
        Ok(Some(IncidentDetail {
            incident: inc,
            timeline,
            fix_attempts,
            triage,
            node: None,
            missing_nodes: None,
            ci,
            forge,
        }))
    })
    .await
}

/// Runs a store read on the blocking pool. Store errors are logged (they name the file)
/// and answered 503 without the detail.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    static FAILING: crate::episode::SharedEpisode =
        crate::episode::SharedEpisode::new("API: reading the store fails");
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => {
            FAILING.ended();
            Ok(v)
        }
        Ok(Err(e)) => {
            FAILING.failed(&e);
            Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the store could not be read; see Sentinel's log",
            )
            .with_retry_after(1))
        }
        Err(_) => Err(ApiError::internal("reading the store failed")),
    }
}

/// At most 64 bytes of a client-supplied value, to quote it back.
fn clip(v: &str) -> &str {
    let mut end = v.len().min(64);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    &v[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    fn state(dir: &std::path::Path) -> Arc<ApiState> {
        let store = Arc::new(Store::open(&dir.join("s.redb")).unwrap());
        let config = Arc::new(Config::defaults(dir, None));
        Arc::new(ApiState::new(
            store,
            Arc::new(Metrics::new()),
            config,
            crate::attribute::LiveRules::with_manifest(crate::attribute::Manifest::default()),
            vec![SourceInfo {
                name: "hook".into(),
                kind: "webhook".into(),
                detail: "127.0.0.1:1".into(),
            }],
            Timestamp::UNIX_EPOCH,
        ))
    }

    async fn get(app: &Router, uri: &str) -> (StatusCode, Value) {
        let resp = app
            .clone()
            .oneshot(
                Request::get(uri)
                    .header("host", "localhost")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn routes_answer_json_and_errors_have_one_shape() {
        let dir = tempfile::tempdir().unwrap();
        let app = router(state(dir.path()));
        let (st, v) = get(&app, "/health").await;
        assert_eq!((st, v), (StatusCode::OK, json!({"status": "ok"})));
        let (st, v) = get(&app, "/status").await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(v["sources"], 1);
        assert_eq!(v["source_details"][0]["type"], "webhook");
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(v["started_at"], "1970-01-01T00:00:00Z");
        let (st, v) = get(&app, "/incidents").await;
        assert_eq!(
            (st, v),
            (
                StatusCode::OK,
                json!({"incidents": [], "next_cursor": null})
            )
        );
        let (st, v) = get(&app, "/nope").await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        assert_eq!(v["error"]["code"], "not_found");
        let (st, v) = get(&app, "/incidents/abc").await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        assert_eq!(v["error"]["code"], "not_found");
        for bad in [
            "/incidents?limit=0",
            "/incidents?limit=1001",
            "/incidents?limit=x",
            "/incidents?status=open",
            "/incidents?severity=urgent",
            "/incidents?colour=red",
            "/incidents?since=yesterday",
            "/incidents?cursor=abc",
            "/incidents?cursor=c1zz",
        ] {
            let (st, v) = get(&app, bad).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}");
            assert_eq!(v["error"]["code"], "invalid_query", "{bad}");
        }
        let resp = app
            .clone()
            .oneshot(
                Request::post("/status")
                    .header("host", "localhost")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert!(resp.headers().contains_key(header::ALLOW));
    }

    #[test]
    fn incident_query_parses_every_filter() {
        let p = |s: &[(&str, &str)]| {
            s.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let cursor = encode_cursor((1_700_000_000_000_000, u64::MAX - 1));
        let q = incident_query(&p(&[
            ("status", "active"),
            ("component", "auth"),
            ("severity", "HIGH"),
            ("limit", "5"),
            ("since", "2026-01-31T12:00:00Z"),
            ("cursor", &cursor),
        ]))
        .unwrap();
        assert_eq!(q.filter.status, Some(StatusFilter::Active));
        assert_eq!(q.filter.component.as_deref(), Some("auth"));
        assert_eq!(q.filter.severity, Some(Severity::High));
        assert_eq!(q.limit, 5);
        assert_eq!(q.since, Some("2026-01-31T12:00:00Z".parse().unwrap()));
        assert_eq!(q.cursor, Some((1_700_000_000_000_000, u64::MAX - 1)));
        let q = incident_query(&p(&[("status", "escalated")])).unwrap();
        assert_eq!(
            q.filter.status,
            Some(StatusFilter::Is(IncidentStatus::Escalated))
        );
        assert_eq!(q.limit, DEFAULT_INCIDENT_LIMIT);
    }
}
