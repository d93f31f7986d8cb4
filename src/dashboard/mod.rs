//! The dashboard: server-rendered pages on the API's listener.
//!
//! | route | page |
//! |---|---|
//! | `GET /` | overview: ingest per source (live rates), incidents by status and severity, the incident list (filters, sorting, cursor paging, 24 h sparklines), a live feed |
//! | `GET /ui/incidents/{id}` | one incident: sample, normalised text, occurrences (1 h / 24 h / 7 d / 30 d), timeline, fix attempts, report, approve / reject |
//! | `GET /ui/live` | the live feed (newest 200 rows) |
//! | `GET /ui/components` | registered components, their incidents and last error |
//! | `GET /ui/fixes` | queued, running and recent fixes; spend against each cap |
//! | `POST /ui/fixes/{id}/approve`, `/reject` | the review of a fix awaiting approval (write scope, CSRF token) |
//! | `GET`/`POST /ui/login`, `POST /ui/logout` | the token form (with API tokens configured) |
//! | `GET /ui/events` | `GET /events` for the pages (session instead of a bearer token) |
//! | `GET /ui/stats.json` | the overview's live ingest figures |
//! | `GET /ui/assets/app.js`, `app.css` | the script and style sheet, compiled into the binary |
//!
//! Decisions:
//!
//! - **Rendered on the server** with maud, which escapes every interpolated value: log lines
//!   are attacker-controlled text, and they can only ever be text here. Lists and details
//!   work without JavaScript; one small plain script ([`APP_JS`], no build step, nothing
//!   fetched from elsewhere) adds the live parts through `EventSource`, building rows with
//!   `textContent`, never HTML.
//! - **Strict headers** on every page ([`CSP`]): scripts and styles only from this origin,
//!   no inline script or style, no framing, no plugins; `nosniff`; `no-store`.
//! - **Sessions.** With API tokens configured, a page asks for a token once; the session it
//!   opens (a random id in an `HttpOnly`, `SameSite=Strict` cookie, kept in memory only,
//!   [`SESSION_TTL`]) has the token's scope. Without tokens (a loopback-only API) a session
//!   is opened on the first visit with the write scope, like the open API. Approve and reject
//!   need the write scope and are protected from cross-site requests twice: the `Origin`
//!   must be this origin, and the form must carry the session's CSRF token.
//! - **The `Host` check** of the API ([`crate::api::ApiAuth`]) applies to every page.
//! - **Reads** are the API's: redb read transactions on the blocking pool. The incident
//!   totals by status and severity are the store's tallies (kept by the transactions that
//!   change incidents, see [`crate::store::counts`]): read for every page, exact, in O(1)
//!   whatever the number of incidents; the list's filters read the store's secondary
//!   indexes.

mod pages;
mod session;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use jiff::Timestamp;
use serde::Deserialize;

use crate::api::{ApiState, Scope};
use crate::attribute::Severity;
use crate::store::{IncidentStatus, StoreError};
use session::{Sessions, Viewer};

/// The script of the live parts.
pub const APP_JS: &str = include_str!("assets/app.js");
/// The style sheet.
pub const APP_CSS: &str = include_str!("assets/app.css");

/// The Content-Security-Policy of every dashboard answer.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
    base-uri 'none'";

/// How long a dashboard session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// The most rows a list page shows.
pub const MAX_PAGE: usize = 200;

/// The dashboard's state.
#[derive(Debug)]
struct Dash {
    api: Arc<ApiState>,
    sessions: Sessions,
    rates: Mutex<RateSampler>,
}

/// Incidents by status and by severity.
#[derive(Debug, Default)]
struct Summary {
    by_status: BTreeMap<IncidentStatus, u64>,
    by_severity: BTreeMap<Severity, u64>,
    total: u64,
}

/// The dashboard's routes (merged into the API router by [`crate::api::router`]).
pub(crate) fn router(api: Arc<ApiState>) -> Router {
    let state = Arc::new(Dash {
        api,
        sessions: Sessions::default(),
        rates: Mutex::new(RateSampler::default()),
    });
    Router::new()
        .route("/", get(overview))
        .route("/ui/incidents/{id}", get(incident))
        .route("/ui/live", get(live))
        .route("/ui/components", get(components))
        .route("/ui/fixes", get(fixes))
        .route("/ui/fixes/{id}/{action}", post(review))
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/events", get(events))
        .route("/ui/stats.json", get(stats))
        .route("/ui/assets/app.js", get(js))
        .route("/ui/assets/app.css", get(css))
        .layer(axum::middleware::from_fn_with_state(state.clone(), gate))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(state)
}

/// Adds the security headers to every dashboard answer.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// The `Host` check, the session, and the `Origin` check of POSTs.
async fn gate(State(d): State<Arc<Dash>>, mut req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    let auth = d.api.auth();
    if !auth.host_passes(host.as_deref()) {
        return page_error(
            StatusCode::FORBIDDEN,
            "The Host header is not an allowed name (see api.allowed_hosts).",
        );
    }
    let path = req.uri().path().to_string();
    let is_post = req.method() == Method::POST;
    if is_post && !same_origin(req.headers(), host.as_deref()) {
        return page_error(
            StatusCode::FORBIDDEN,
            "This form was not sent from this dashboard (the Origin header does not match).",
        );
    }
    if path.starts_with("/ui/assets/") || path == "/ui/login" {
        return next.run(req).await;
    }
    let mut new_cookie = None;
    let viewer = match d.sessions.get(session::cookie(req.headers())) {
        Some(v) => v,
        None if !auth.has_tokens() => {
            let (v, cookie) = d.sessions.open(Scope::Write);
            new_cookie = Some(cookie);
            v
        }
        None => {
            return if req.method() == Method::GET && !path.starts_with("/ui/events") {
                let mut r = pages::login(None).into_response();
                *r.status_mut() = StatusCode::UNAUTHORIZED;
                r
            } else {
                page_error(
                    StatusCode::UNAUTHORIZED,
                    "Sign in first: open the dashboard and enter a token.",
                )
            };
        }
    };
    let mut viewer = viewer;
    viewer.signed_in = auth.has_tokens();
    req.extensions_mut().insert(viewer);
    let mut resp = next.run(req).await;
    if let Some(c) = new_cookie
        && let Ok(v) = HeaderValue::from_str(&c)
    {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// Whether the `Origin` of a POST is this dashboard's own (`http(s)://<Host>`).
fn same_origin(headers: &HeaderMap, host: Option<&str>) -> bool {
    let (Some(origin), Some(host)) = (
        headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()),
        host,
    ) else {
        return false;
    };
    let rest = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    rest.is_some_and(|r| r.eq_ignore_ascii_case(host))
}

/// An error answered as an HTML page.
#[derive(Debug)]
struct PageError(StatusCode, String);

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        page_error(self.0, &self.1)
    }
}

/// An HTML error page.
fn page_error(status: StatusCode, message: &str) -> Response {
    let mut r = pages::error(status, message).into_response();
    *r.status_mut() = status;
    r
}

/// Runs a store read on the blocking pool; a failure is a 503 page.
async fn read<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, PageError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "dashboard: reading the store failed");
            Err(PageError(
                StatusCode::SERVICE_UNAVAILABLE,
                "The store could not be read; see Sentinel's log.".into(),
            ))
        }
        Err(_) => Err(PageError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Reading the store failed.".into(),
        )),
    }
}

impl Dash {
    /// The totals by status and severity: the store's tallies (O(1), exact).
    async fn summary(&self) -> Result<Summary, PageError> {
        let store = self.api.store().clone();
        let t = read(move || store.incident_tallies(false)).await?;
        Ok(Summary {
            total: t.total(),
            by_status: t.by_status,
            by_severity: t.by_severity,
        })
    }
}

// ---- the overview ----

/// The overview's query: filters, sorting, window, paging.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ListQuery {
    status: Option<String>,
    component: Option<String>,
    severity: Option<Severity>,
    text: Option<String>,
    sort: Sort,
    window: Window,
    cursor: Option<String>,
    limit: usize,
}

/// The orders of the incident list.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sort {
    /// Most recently seen first (the store's recency index: paged by key).
    #[default]
    LastSeen,
    /// Most occurrences in the window first.
    Window,
    /// Most occurrences in all first.
    Count,
    /// Newest first.
    FirstSeen,
    /// Most severe first.
    Severity,
}

impl Sort {
    const ALL: [Sort; 5] = [
        Sort::LastSeen,
        Sort::Window,
        Sort::Count,
        Sort::FirstSeen,
        Sort::Severity,
    ];
    fn as_str(self) -> &'static str {
        match self {
            Sort::LastSeen => "last_seen",
            Sort::Window => "window",
            Sort::Count => "count",
            Sort::FirstSeen => "first_seen",
            Sort::Severity => "severity",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Sort::LastSeen => "last seen",
            Sort::Window => "count in window",
            Sort::Count => "count (all time)",
            Sort::FirstSeen => "first seen",
            Sort::Severity => "severity",
        }
    }
}

/// The time windows of counts and charts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Window {
    /// The last hour (per-minute buckets).
    Hour,
    /// The last 24 hours.
    #[default]
    Day,
    /// The last 7 days (per-hour buckets).
    Week,
    /// The last 30 days.
    Month,
}

impl Window {
    const ALL: [Window; 4] = [Window::Hour, Window::Day, Window::Week, Window::Month];
    fn as_str(self) -> &'static str {
        match self {
            Window::Hour => "1h",
            Window::Day => "24h",
            Window::Week => "7d",
            Window::Month => "30d",
        }
    }
    fn from_name(s: &str) -> Option<Window> {
        Window::ALL.into_iter().find(|w| w.as_str() == s)
    }
    /// The buckets the window is drawn with, and how many.
    fn buckets(self) -> (crate::store::trend::Bucket, u64) {
        use crate::store::trend::Bucket;
        match self {
            Window::Hour => (Bucket::Minute, 60),
            Window::Day => (Bucket::Minute, 24 * 60),
            Window::Week => (Bucket::Hour, 7 * 24),
            Window::Month => (Bucket::Hour, 30 * 24),
        }
    }
}

fn bad(message: String) -> PageError {
    PageError(StatusCode::BAD_REQUEST, message)
}

fn parse_list_query(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<ListQuery, PageError> {
    let Query(params) = query.map_err(|e| bad(e.body_text()))?;
    let mut q = ListQuery {
        limit: 50,
        ..ListQuery::default()
    };
    for (k, v) in params {
        let v = v.trim().to_string();
        if v.is_empty() {
            continue; // an empty form field: no filter
        }
        match k.as_str() {
            "status" => {
                if v != "active" && IncidentStatus::from_name(&v).is_none() {
                    return Err(bad(format!(
                        "status {:?} is not active or an incident status",
                        clip(&v)
                    )));
                }
                q.status = Some(v);
            }
            "component" => q.component = Some(v),
            "severity" => {
                q.severity = Some(v.parse().map_err(|_| {
                    bad(format!(
                        "severity {:?} is not one of low, medium, high, critical, compliance",
                        clip(&v)
                    ))
                })?);
            }
            "q" => q.text = Some(v),
            "sort" => {
                q.sort = Sort::ALL
                    .into_iter()
                    .find(|s| s.as_str() == v)
                    .ok_or_else(|| bad(format!("sort {:?} is not a known order", clip(&v))))?;
            }
            "window" => {
                q.window = Window::from_name(&v).ok_or_else(|| {
                    bad(format!(
                        "window {:?} is not one of 1h, 24h, 7d, 30d",
                        clip(&v)
                    ))
                })?;
            }
            "cursor" => q.cursor = Some(v),
            "limit" => {
                q.limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| bad(format!("limit {:?} is not in 1..={MAX_PAGE}", clip(&v))))?;
            }
            other => {
                return Err(bad(format!(
                    "unknown query parameter {:?}; use status, component, severity, q, sort, \
                     window, cursor, limit",
                    clip(other)
                )));
            }
        }
    }
    Ok(q)
}

/// At most 64 bytes of a client-supplied value, to quote it back.
fn clip(v: &str) -> &str {
    let mut end = v.len().min(64);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    &v[..end]
}

/// One row of the incident list.
#[derive(Debug)]
struct Row {
    inc: crate::store::Incident,
    in_window: u64,
    /// The last 24 h per hour, oldest first (24 values).
    spark: Vec<u64>,
}

/// A page of the incident list.
#[derive(Debug)]
struct ListPage {
    rows: Vec<Row>,
    next: Option<String>,
    /// Set when a text search stopped at its budget: how many incidents it examined.
    searched: Option<usize>,
}

fn store_filter(q: &ListQuery) -> crate::store::IncidentFilter {
    use crate::store::StatusFilter;
    crate::store::IncidentFilter {
        status: q.status.as_deref().and_then(|s| {
            if s == "active" {
                Some(StatusFilter::Active)
            } else {
                IncidentStatus::from_name(s).map(StatusFilter::Is)
            }
        }),
        component: q.component.clone(),
        severity: q.severity,
    }
}

fn text_matches(inc: &crate::store::Incident, text: &str) -> bool {
    let t = text.to_lowercase();
    [
        &inc.sample,
        &inc.normalized,
        &inc.component_id,
        &inc.pact_key,
        &inc.id,
    ]
    .iter()
    .any(|f| f.to_lowercase().contains(&t))
}

/// Incidents a text search examines for one page before it answers with what it found and a
/// cursor to search on: a rare word in a million incidents never holds a request for long.
pub const TEXT_SCAN_BUDGET: usize = 50_000;

/// The deepest row the non-recency orders page to: they keep the best `offset + limit` rows
/// while reading every matching incident (memory bounded by this, not by the store).
pub const MAX_SORTED_ROWS: usize = 10_000;

/// Reads one page of the list (on the blocking pool).
fn list_page(
    store: &crate::store::Store,
    q: &ListQuery,
    now: Timestamp,
) -> Result<ListPage, StoreError> {
    list_page_within(store, q, now, TEXT_SCAN_BUDGET)
}

/// [`list_page`] with a text search examining at most about `budget` incidents.
fn list_page_within(
    store: &crate::store::Store,
    q: &ListQuery,
    now: Timestamp,
    budget: usize,
) -> Result<ListPage, StoreError> {
    let filter = store_filter(q);
    let text = q.text.as_deref();
    let mut searched = None;
    let (incs, next) = if q.sort == Sort::LastSeen {
        // Walk the recency index from the cursor (a key: stable while incidents arrive).
        let mut before = q.cursor.as_deref().and_then(decode_key);
        let mut out = Vec::new();
        let mut next = None;
        let mut examined = 0usize;
        loop {
            let (page, more) = store.incidents_page(&filter, None, before, 256)?;
            examined += page.len();
            for inc in page {
                if text.is_none_or(|t| text_matches(&inc, t)) {
                    out.push(inc);
                }
                if out.len() == q.limit {
                    break;
                }
            }
            if out.len() == q.limit {
                next = out.last().map(|i: &crate::store::Incident| {
                    encode_key((micros(i.last_seen), i.fingerprint.0))
                });
                break;
            }
            match more {
                Some(k) if text.is_some() && examined >= budget => {
                    // Out of budget: answer with what matched so far and where to go on.
                    searched = Some(examined);
                    next = Some(encode_key(k));
                    break;
                }
                Some(k) => before = Some(k),
                None => break,
            }
        }
        (out, next)
    } else {
        sorted_page(store, &filter, q, text, now)?
    };
    let in_window = window_counts(store, &incs, q.window, now)?;
    let fps: Vec<_> = incs.iter().map(|i| i.fingerprint).collect();
    let hours = store.trends(&fps, crate::store::trend::Bucket::Hour, now)?;
    let now_h = crate::store::trend::Bucket::Hour.index(micros(now));
    let rows = incs
        .into_iter()
        .zip(in_window)
        .zip(hours)
        .map(|((inc, in_window), points)| {
            let mut spark = vec![0u64; 24];
            for p in points {
                if let Some(back) = now_h.checked_sub(p.index)
                    && back < 24
                {
                    spark[23 - back as usize] += p.count;
                }
            }
            Row {
                inc,
                in_window,
                spark,
            }
        })
        .collect();
    Ok(ListPage {
        rows,
        next,
        searched,
    })
}

/// A page in an order other than recency: every matching incident is read (in chunks) and
/// only the best `offset + limit` are kept, as (order key, fingerprint, id); the page's
/// incidents are then read back by id. Paged by offset, up to [`MAX_SORTED_ROWS`].
fn sorted_page(
    store: &crate::store::Store,
    filter: &crate::store::IncidentFilter,
    q: &ListQuery,
    text: Option<&str>,
    now: Timestamp,
) -> Result<(Vec<crate::store::Incident>, Option<String>), StoreError> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let offset: usize = q
        .cursor
        .as_deref()
        .and_then(|c| c.strip_prefix('o'))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
        .min(MAX_SORTED_ROWS);
    let keep = offset + q.limit;
    // A min-heap of the best `keep` rows so far (the worst on top): larger key first, then
    // the newer fingerprint order for ties, so pages are stable.
    let mut best: BinaryHeap<Reverse<(u64, u64, String)>> = BinaryHeap::new();
    let mut matched = 0usize;
    let mut chunk: Vec<crate::store::Incident> = Vec::new();
    let flush = |chunk: &mut Vec<crate::store::Incident>,
                 best: &mut BinaryHeap<Reverse<(u64, u64, String)>>|
     -> Result<(), StoreError> {
        let window = if q.sort == Sort::Window {
            window_counts(store, chunk, q.window, now)?
        } else {
            Vec::new()
        };
        for (i, inc) in chunk.drain(..).enumerate() {
            let key = match q.sort {
                Sort::Window => window[i],
                Sort::Count => inc.count,
                Sort::FirstSeen => micros(inc.first_seen),
                Sort::Severity => inc.severity as u64,
                Sort::LastSeen => micros(inc.last_seen),
            };
            let row = Reverse((key, inc.fingerprint.0, inc.id));
            if best.len() < keep {
                best.push(row);
            } else if best.peek().is_some_and(|worst| row < *worst) {
                best.pop();
                best.push(row);
            }
        }
        Ok(())
    };
    let mut failed = None;
    store.for_each_incident(|inc| {
        if failed.is_some() || !filter.matches(&inc) || !text.is_none_or(|t| text_matches(&inc, t))
        {
            return;
        }
        matched += 1;
        chunk.push(inc);
        if chunk.len() == 1024
            && let Err(e) = flush(&mut chunk, &mut best)
        {
            failed = Some(e);
        }
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    flush(&mut chunk, &mut best)?;
    // Best first.
    let ordered: Vec<(u64, u64, String)> = best
        .into_sorted_vec()
        .into_iter()
        .map(|Reverse(r)| r)
        .collect();
    let mut page = Vec::new();
    for (_, _, id) in ordered.into_iter().skip(offset).take(q.limit) {
        if let Some(inc) = store.incident(&id)? {
            page.push(inc);
        }
    }
    let more = matched > keep && keep < MAX_SORTED_ROWS;
    Ok((page, more.then(|| format!("o{keep}"))))
}

/// Occurrences of each incident in `window`.
fn window_counts(
    store: &crate::store::Store,
    incs: &[crate::store::Incident],
    window: Window,
    now: Timestamp,
) -> Result<Vec<u64>, StoreError> {
    let (bucket, n) = window.buckets();
    let from = bucket.index(micros(now)).saturating_sub(n - 1);
    let fps: Vec<_> = incs.iter().map(|i| i.fingerprint).collect();
    Ok(store
        .trends(&fps, bucket, now)?
        .into_iter()
        .map(|ps| ps.iter().filter(|p| p.index >= from).map(|p| p.count).sum())
        .collect())
}

fn micros(t: Timestamp) -> u64 {
    u64::try_from(t.as_microsecond()).unwrap_or(0)
}

fn encode_key((us, fp): (u64, u64)) -> String {
    format!("c1{us:016x}{fp:016x}")
}

fn decode_key(c: &str) -> Option<(u64, u64)> {
    let hex = c.strip_prefix("c1").filter(|h| h.len() == 32)?;
    let us = u64::from_str_radix(hex.get(..16)?, 16).ok()?;
    let fp = u64::from_str_radix(hex.get(16..)?, 16).ok()?;
    Some((us, fp))
}

async fn overview(
    State(d): State<Arc<Dash>>,
    axum::Extension(viewer): axum::Extension<Viewer>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let q = match parse_list_query(query) {
        Ok(q) => q,
        Err(r) => return r.into_response(),
    };
    if let Some(c) = &q.cursor {
        let ok = if q.sort == Sort::LastSeen {
            decode_key(c).is_some()
        } else {
            c.strip_prefix('o')
                .is_some_and(|n| n.parse::<usize>().is_ok())
        };
        if !ok {
            return bad(format!(
                "cursor {:?} is not a cursor of this list's next link",
                clip(c)
            ))
            .into_response();
        }
    }
    let summary = match d.summary().await {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let store = d.api.store().clone();
    let (qq, now) = (q.clone(), Timestamp::now());
    let head = store.event_head();
    let read_page = move || {
        let page = list_page(&store, &qq, now)?;
        let recent = store.events_after(
            head.saturating_sub(OVERVIEW_FEED_ROWS),
            OVERVIEW_FEED_ROWS as usize,
        )?;
        Ok((page, recent))
    };
    let (page, recent) = match read(read_page).await {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let ingest = d.ingest();
    pages::overview(&viewer, &q, &summary, &page, &ingest, &recent, head, now).into_response()
}

// ---- ingest figures ----

/// One source's ingest figures: totals and per-second rates.
#[derive(Debug, Clone, Default, serde::Serialize)]
struct SourceStats {
    name: String,
    kind: String,
    lines: u64,
    bytes: u64,
    error_lines: u64,
    webhook_requests: u64,
    rejected_429: u64,
    lines_per_s: f64,
    bytes_per_s: f64,
    error_lines_per_s: f64,
    webhook_requests_per_s: f64,
    rejected_429_per_s: f64,
    /// A file source's bytes not read yet (None: not a file source).
    lag_bytes: Option<u64>,
    /// A file source's files behind their end.
    files_behind: Option<u64>,
}

/// How many files furthest behind the overview lists.
const OVERVIEW_FILES_BEHIND: usize = 10;

/// The live figures of the overview.
#[derive(Debug, Clone, Default, serde::Serialize)]
struct Ingest {
    sources: Vec<SourceStats>,
    /// Batches waiting for the writer.
    queue_depth: i64,
    /// Webhook events acknowledged but not in the store yet.
    unapplied_events: i64,
    /// The tailed files furthest behind their end, most first.
    most_behind: Vec<crate::metrics::FileBehind>,
}

/// Rates from two samples of the counters at least a second apart.
#[derive(Debug, Default)]
struct RateSampler {
    last: Option<(Instant, Vec<[u64; 5]>)>,
    rates: Vec<[f64; 5]>,
}

/// The sum of a counter's series whose `source` label is `source` (and `code`, if given).
fn counter_sum(c: &prometheus::IntCounterVec, source: &str, label: Option<(&str, &str)>) -> u64 {
    use prometheus::core::Collector;
    let has = |m: &prometheus::proto::Metric, k: &str, v: &str| {
        m.get_label()
            .iter()
            .any(|l| l.name() == k && l.value() == v)
    };
    c.collect()
        .iter()
        .flat_map(|f| f.get_metric())
        .filter(|m| has(m, "source", source) && label.is_none_or(|(k, v)| has(m, k, v)))
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

impl Dash {
    fn ingest(&self) -> Ingest {
        let m = self.api.metrics();
        let now: Vec<[u64; 5]> = self
            .api
            .sources()
            .iter()
            .map(|s| {
                [
                    counter_sum(&m.lines, &s.name, None),
                    counter_sum(&m.bytes, &s.name, None),
                    counter_sum(&m.error_lines, &s.name, None),
                    counter_sum(&m.webhook_requests, &s.name, None),
                    counter_sum(&m.webhook_requests, &s.name, Some(("code", "429"))),
                ]
            })
            .collect();
        let rates = {
            let mut r = self.rates.lock().unwrap_or_else(|e| e.into_inner());
            let t = Instant::now();
            match &r.last {
                Some((at, prev)) if at.elapsed() < Duration::from_secs(1) => {
                    let _ = prev;
                }
                Some((at, prev)) => {
                    let dt = at.elapsed().as_secs_f64();
                    let rates = now
                        .iter()
                        .zip(prev.iter().chain(std::iter::repeat(&[0; 5])))
                        .map(|(n, p)| {
                            let mut out = [0.0; 5];
                            for i in 0..5 {
                                out[i] = n[i].saturating_sub(p[i]) as f64 / dt;
                            }
                            out
                        })
                        .collect();
                    r.rates = rates;
                    r.last = Some((t, now.clone()));
                }
                None => r.last = Some((t, now.clone())),
            }
            r.rates.clone()
        };
        let sources = self
            .api
            .sources()
            .iter()
            .zip(&now)
            .enumerate()
            .map(|(i, (s, n))| {
                let r = rates.get(i).copied().unwrap_or_default();
                let lag = (s.kind == "file").then(|| m.file_lag.summary(Some(&s.name), 0));
                SourceStats {
                    name: s.name.clone(),
                    kind: s.kind.clone(),
                    lines: n[0],
                    bytes: n[1],
                    error_lines: n[2],
                    webhook_requests: n[3],
                    rejected_429: n[4],
                    lines_per_s: r[0],
                    bytes_per_s: r[1],
                    error_lines_per_s: r[2],
                    webhook_requests_per_s: r[3],
                    rejected_429_per_s: r[4],
                    lag_bytes: lag.as_ref().map(|l| l.bytes_behind),
                    files_behind: lag.as_ref().map(|l| l.files_behind),
                }
            })
            .collect();
        Ingest {
            sources,
            queue_depth: m.queue_depth.get(),
            unapplied_events: m.log_unapplied.get(),
            most_behind: m.file_lag.summary(None, OVERVIEW_FILES_BEHIND).most_behind,
        }
    }
}

async fn stats(State(d): State<Arc<Dash>>) -> Response {
    axum::Json(d.ingest()).into_response()
}

// ---- the incident page ----

async fn incident(
    State(d): State<Arc<Dash>>,
    axum::Extension(viewer): axum::Extension<Viewer>,
    Path(id): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let Ok(Query(params)) = query else {
        return bad("the query is not valid".into()).into_response();
    };
    let mut window = Window::Day;
    for (k, v) in &params {
        match k.as_str() {
            "range" => match Window::from_name(v) {
                Some(w) => window = w,
                None => {
                    return bad(format!(
                        "range {:?} is not one of 1h, 24h, 7d, 30d",
                        clip(v)
                    ))
                    .into_response();
                }
            },
            other => {
                return bad(format!(
                    "unknown query parameter {:?}; use range",
                    clip(other)
                ))
                .into_response();
            }
        }
    }
    let store = d.api.store().clone();
    let reports = d.api.config().state().reports();
    let now = Timestamp::now();
    let key = id.clone();
    let found = read(move || {
        let Some(inc) = store.incident(&key)? else {
            return Ok(None);
        };
        let timeline = store.incident_events(&key, crate::api::MAX_TIMELINE)?;
        let fixes = store.fixes_of(&key)?;
        let (bucket, _) = window.buckets();
        let points = store.incident_trend(&key, bucket, now)?.unwrap_or_default();
        // Report ids are incident ids (hex): no path can be built from it otherwise.
        let report = key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric())
            .then(|| std::fs::read_to_string(reports.join(format!("{key}.md"))).ok())
            .flatten();
        Ok(Some((inc, timeline, fixes, points, report)))
    })
    .await;
    match found {
        Err(r) => r.into_response(),
        Ok(None) => page_error(
            StatusCode::NOT_FOUND,
            &format!("No incident with id {:?}.", clip(&id)),
        ),
        Ok(Some((inc, timeline, fixes, points, report))) => pages::incident(
            &viewer,
            &inc,
            &timeline,
            &fixes,
            window,
            &points,
            report.as_deref(),
            now,
        )
        .into_response(),
    }
}

// ---- live, components, fixes ----

/// Events the overview's live panel starts with.
const OVERVIEW_FEED_ROWS: u64 = 20;

/// Rows the live feed shows (and keeps as events arrive).
pub const FEED_ROWS: usize = 200;

async fn live(
    State(d): State<Arc<Dash>>,
    axum::Extension(viewer): axum::Extension<Viewer>,
) -> Response {
    let store = d.api.store().clone();
    let head = store.event_head();
    match read(move || store.events_after(head.saturating_sub(50), 50)).await {
        Ok(events) => pages::live(&viewer, &events, head).into_response(),
        Err(r) => r.into_response(),
    }
}

/// A registered component's figures.
#[derive(Debug, Default)]
struct ComponentRow {
    id: String,
    incidents: u64,
    active: u64,
    occurrences: u64,
    last: Option<crate::store::Incident>,
    /// Trust events Arbiter accepted for it.
    trust: u64,
}

async fn components(
    State(d): State<Arc<Dash>>,
    axum::Extension(viewer): axum::Extension<Viewer>,
) -> Response {
    let manifest = d.api.rules().snapshot().manifest.clone();
    let store = d.api.store().clone();
    let rows = read(move || {
        let mut rows: BTreeMap<String, ComponentRow> = manifest
            .components
            .keys()
            .map(|k| {
                (
                    k.clone(),
                    ComponentRow {
                        id: k.clone(),
                        ..ComponentRow::default()
                    },
                )
            })
            .collect();
        // Each registered component's incidents through the component index (newest
        // first): what this reads is what the registered components hold, not the store.
        for (id, r) in &mut rows {
            let filter = crate::store::IncidentFilter {
                component: Some(id.clone()),
                ..crate::store::IncidentFilter::default()
            };
            let mut before = None;
            loop {
                let (page, next) = store.incidents_page(&filter, None, before, 1024)?;
                for inc in page {
                    r.incidents += 1;
                    r.active += u64::from(inc.status.is_active());
                    r.occurrences += inc.count;
                    if r.last.is_none() {
                        r.last = Some(inc);
                    }
                }
                match next {
                    Some(k) => before = Some(k),
                    None => break,
                }
            }
        }
        // Trust events Arbiter accepted, per component (counted with the sink's cursor).
        let delivered = store.delivered_by_component("arbiter")?;
        let trust_total = delivered.values().sum::<u64>();
        for (component, n) in delivered {
            if let Some(r) = rows.get_mut(&component) {
                r.trust = n;
            }
        }
        Ok((rows.into_values().collect::<Vec<_>>(), trust_total))
    })
    .await;
    match rows {
        Ok((rows, trust)) => pages::components(&viewer, &rows, trust).into_response(),
        Err(r) => r.into_response(),
    }
}

/// Spend against one cap.
type Spend = crate::fix::budget::WindowSpend;

async fn fixes(
    State(d): State<Arc<Dash>>,
    axum::Extension(viewer): axum::Extension<Viewer>,
) -> Response {
    let store = d.api.store().clone();
    let budget = d.api.config().budget.clone();
    let now = Timestamp::now();
    let found = read(move || {
        let jobs = store.open_jobs()?;
        let recent = store.fixes(100)?;
        let spend = crate::fix::budget::window_spend(&store, &budget, now)?;
        Ok((jobs, recent, spend))
    })
    .await;
    match found {
        Ok((jobs, recent, spend)) => pages::fixes(
            &viewer,
            &jobs,
            &recent,
            &spend,
            d.api.config().budget.per_incident_cap,
        )
        .into_response(),
        Err(r) => r.into_response(),
    }
}

// ---- forms ----

#[derive(Debug, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn review(
    State(d): State<Arc<Dash>>,
    axum::Extension(viewer): axum::Extension<Viewer>,
    Path((id, action)): Path<(String, String)>,
    form: Result<axum::Form<CsrfForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let approve = match action.as_str() {
        "approve" => true,
        "reject" => false,
        _ => {
            return page_error(
                StatusCode::NOT_FOUND,
                "No such action; use approve or reject.",
            );
        }
    };
    if viewer.scope != Scope::Write {
        return page_error(
            StatusCode::FORBIDDEN,
            "Approving or rejecting a fix needs the write token; this session has the read scope.",
        );
    }
    let csrf = form.map(|f| f.0.csrf).unwrap_or_default();
    if !viewer.csrf_is(&csrf) {
        return page_error(
            StatusCode::FORBIDDEN,
            "The form's CSRF token is missing or stale: reload the page and try again.",
        );
    }
    use crate::fix::service::ReviewError;
    let (store, config) = (d.api.store().clone(), d.api.config().clone());
    let done = tokio::task::spawn_blocking(move || {
        crate::fix::service::review(&store, &config, &id, approve, None)
    })
    .await;
    match done {
        Ok(Ok(fix)) => Redirect::to(&format!("/ui/incidents/{}", fix.incident_id)).into_response(),
        Ok(Err(e @ ReviewError::NotFound(_))) => page_error(StatusCode::NOT_FOUND, &e.to_string()),
        Ok(Err(e @ ReviewError::NotAwaiting { .. })) => {
            page_error(StatusCode::CONFLICT, &e.to_string())
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "dashboard: reviewing a fix failed");
            page_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "The store could not be written; see Sentinel's log.",
            )
        }
        Err(_) => page_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Reviewing the fix failed.",
        ),
    }
}

async fn login_form(State(d): State<Arc<Dash>>) -> Response {
    if !d.api.auth().has_tokens() {
        return Redirect::to("/").into_response();
    }
    pages::login(None).into_response()
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
}

async fn login(
    State(d): State<Arc<Dash>>,
    form: Result<axum::Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let token = form.map(|f| f.0.token).unwrap_or_default();
    match d.api.auth().scope_of(token.trim().as_bytes()) {
        Some(scope) if d.api.auth().has_tokens() => {
            let (_, cookie) = d.sessions.open(scope);
            let mut r = Redirect::to("/").into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().append(header::SET_COOKIE, v);
            }
            r
        }
        _ => {
            let mut r = pages::login(Some("That token is not valid.")).into_response();
            *r.status_mut() = StatusCode::UNAUTHORIZED;
            r
        }
    }
}

async fn logout(
    State(d): State<Arc<Dash>>,
    axum::Extension(viewer): axum::Extension<Viewer>,
    form: Result<axum::Form<CsrfForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let csrf = form.map(|f| f.0.csrf).unwrap_or_default();
    if !viewer.csrf_is(&csrf) {
        return page_error(
            StatusCode::FORBIDDEN,
            "The form's CSRF token is missing or stale.",
        );
    }
    d.sessions.close(&viewer);
    let mut r = Redirect::to("/ui/login").into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static(session::CLEAR_COOKIE),
    );
    r
}

async fn events(
    State(d): State<Arc<Dash>>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    crate::api::events::events(State(d.api.clone()), headers, query)
        .await
        .into_response()
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = Response::new(Body::from(body));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=300"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request as HttpRequest;
    use tower::ServiceExt;

    /// A store with `n` incidents: incident `i` seen `i + 1` times, last at second `i` (so the
    /// newest has the highest count), its line naming `word(i)`.
    fn list_store(
        dir: &std::path::Path,
        n: u64,
        word: impl Fn(u64) -> &'static str,
    ) -> crate::store::Store {
        use crate::attribute::{AttributionStatus, Severity};
        use crate::scan::Fingerprint;
        let store = crate::store::Store::open(&dir.join("list.redb")).unwrap();
        for i in 0..n {
            let mut b = crate::store::IngestBatch::new();
            let line = format!("ERROR PACT:list:get {} item {i:05}", word(i));
            b.incidents.insert(
                Fingerprint(1000 + i),
                crate::store::IncidentDelta::new(
                    Fingerprint(1000 + i),
                    i + 1,
                    &line,
                    AttributionStatus::Unregistered,
                    Severity::Medium,
                ),
            );
            store
                .apply(
                    &b,
                    Timestamp::from_second(1_700_000_000 + i as i64).unwrap(),
                )
                .unwrap();
        }
        store
    }

    fn query(text: Option<&str>, sort: Sort, cursor: Option<String>, limit: usize) -> ListQuery {
        ListQuery {
            status: None,
            component: None,
            severity: None,
            text: text.map(str::to_string),
            sort,
            window: Window::Day,
            cursor,
            limit,
        }
    }

    #[test]
    fn a_text_search_answers_within_its_budget_and_its_cursor_finds_every_match_once() {
        let dir = tempfile::tempdir().unwrap();
        // Three needles among 1,200 incidents, far apart in recency.
        let store = list_store(dir.path(), 1200, |i| {
            if [5, 600, 1190].contains(&i) {
                "needle"
            } else {
                "hay"
            }
        });
        let now = Timestamp::from_second(1_700_010_000).unwrap();
        let mut found = Vec::new();
        let mut cursor = None;
        let mut pages = 0;
        loop {
            let p = list_page_within(
                &store,
                &query(Some("NEEDLE"), Sort::LastSeen, cursor, 50),
                now,
                300,
            )
            .unwrap();
            pages += 1;
            found.extend(p.rows.iter().map(|r| r.inc.sample.clone()));
            if let Some(n) = p.searched {
                // Each answer read at most the budget (plus the rest of its last page).
                assert!((300..300 + 256).contains(&n), "{n}");
            }
            match p.next {
                Some(c) => cursor = Some(c),
                None => break,
            }
            assert!(pages < 20, "the search does not end");
        }
        // Each answer stops after the index page that passes the budget (256 a page).
        assert_eq!(pages, 3, "1,200 incidents at 512 an answer");
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(
            found[0].contains("01190") && found[1].contains("00600") && found[2].contains("00005")
        );
        // Without a text filter, pages are full and never stop early.
        let p = list_page_within(&store, &query(None, Sort::LastSeen, None, 50), now, 300).unwrap();
        assert_eq!((p.rows.len(), p.searched), (50, None));
    }

    #[test]
    fn other_orders_keep_only_the_best_rows_and_page_through_them_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = list_store(
            dir.path(),
            1500,
            |i| if i % 2 == 0 { "even" } else { "odd" },
        );
        let now = Timestamp::from_second(1_700_010_000).unwrap();
        let mut counts = Vec::new();
        let mut cursor = None;
        loop {
            let p = list_page_within(
                &store,
                &query(Some("odd"), Sort::Count, cursor, 200),
                now,
                300,
            )
            .unwrap();
            counts.extend(p.rows.iter().map(|r| r.inc.count));
            match p.next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        // Every odd incident once, most occurrences first.
        let expected: Vec<u64> = (0..1500u64)
            .rev()
            .filter(|i| i % 2 == 1)
            .map(|i| i + 1)
            .collect();
        assert_eq!(counts, expected);
        // Deep pages stop at the cap.
        let deep = query(
            None,
            Sort::FirstSeen,
            Some(format!("o{MAX_SORTED_ROWS}")),
            50,
        );
        let p = list_page_within(&store, &deep, now, 300).unwrap();
        assert!(p.next.is_none());
    }

    fn app(dir: &std::path::Path, tokens: bool) -> Router {
        let store = Arc::new(crate::store::Store::open(&dir.join("s.redb")).unwrap());
        let config = Arc::new(crate::config::Config::defaults(dir, None));
        let mut state = ApiState::new(
            store,
            Arc::new(crate::metrics::Metrics::new()),
            config,
            crate::attribute::LiveRules::with_manifest(crate::attribute::Manifest::default()),
            Vec::new(),
            Timestamp::UNIX_EPOCH,
        );
        if tokens {
            let api = crate::config::ApiConfig {
                read_token_env: Some("R".into()),
                write_token_env: Some("W".into()),
                ..crate::config::ApiConfig::default()
            };
            let auth = crate::api::ApiAuth::from_config(&api, |k| match k {
                "R" => Some("read-secret".into()),
                "W" => Some("write-secret".into()),
                _ => None,
            })
            .unwrap();
            state = state.with_auth(auth);
        }
        crate::api::router(Arc::new(state))
    }

    async fn send(app: &Router, req: HttpRequest<Body>) -> (StatusCode, HeaderMap, String) {
        let resp = app.clone().oneshot(req).await.unwrap();
        let (status, headers) = (resp.status(), resp.headers().clone());
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    fn get(path: &str, cookie: Option<&str>) -> HttpRequest<Body> {
        let mut r = HttpRequest::get(path).header("host", "localhost:8484");
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        r.body(Body::empty()).unwrap()
    }

    fn post(
        path: &str,
        cookie: Option<&str>,
        origin: Option<&str>,
        body: &str,
    ) -> HttpRequest<Body> {
        let mut r = HttpRequest::post(path)
            .header("host", "localhost:8484")
            .header("content-type", "application/x-www-form-urlencoded");
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.body(Body::from(body.to_string())).unwrap()
    }

    fn session_cookie(h: &HeaderMap) -> String {
        let v = h[header::SET_COOKIE].to_str().unwrap();
        v.split(';').next().unwrap().to_string()
    }

    fn csrf_of(page: &str) -> String {
        let at = page
            .find("name=\"csrf\" value=\"")
            .expect("a form with a CSRF token")
            + 19;
        page[at..at + 64].to_string()
    }

    #[tokio::test]
    async fn pages_carry_the_security_headers_and_the_host_check_applies() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path(), false);
        for path in [
            "/",
            "/ui/live",
            "/ui/components",
            "/ui/fixes",
            "/ui/assets/app.js",
        ] {
            let (st, h, _) = send(&app, get(path, None)).await;
            assert_eq!(st, StatusCode::OK, "{path}");
            assert_eq!(h[header::CONTENT_SECURITY_POLICY], CSP, "{path}");
            assert!(!CSP.contains("unsafe-inline"));
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        }
        let (st, h, body) = send(&app, get("/", None)).await;
        assert_eq!(st, StatusCode::OK);
        let cookie = h[header::SET_COOKIE].to_str().unwrap();
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
        assert!(!body.contains("<script>"), "no inline script");
        assert!(!body.contains("style="), "no inline style");
        let evil = HttpRequest::get("/")
            .header("host", "evil.example")
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(&app, evil).await.0, StatusCode::FORBIDDEN);
        // Bad input is a 4xx page naming the problem; the API keeps its JSON errors.
        let (st, _, body) = send(&app, get("/?severity=urgent", None)).await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert!(body.contains("severity"), "{body}");
        let (st, _, body) = send(&app, get("/incidents", None)).await;
        assert_eq!(st, StatusCode::OK);
        assert!(body.starts_with('{'));
    }

    #[tokio::test]
    async fn with_tokens_a_session_has_its_tokens_scope_and_posts_need_origin_and_csrf() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path(), true);
        let (st, _, body) = send(&app, get("/", None)).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        assert!(body.contains("name=\"token\""), "the token form");
        let (st, _, _) = send(&app, get("/ui/events", None)).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        let origin = Some("http://localhost:8484");
        // A wrong token, and a login from another origin, open nothing.
        let (st, h, _) = send(&app, post("/ui/login", None, origin, "token=nope")).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        assert!(!h.contains_key(header::SET_COOKIE));
        let (st, _, _) = send(
            &app,
            post(
                "/ui/login",
                None,
                Some("http://evil.example"),
                "token=read-secret",
            ),
        )
        .await;
        assert_eq!(st, StatusCode::FORBIDDEN);
        // The read token: pages yes, reviews no.
        let (st, h, _) = send(&app, post("/ui/login", None, origin, "token=read-secret")).await;
        assert_eq!(st, StatusCode::SEE_OTHER);
        let read = session_cookie(&h);
        let (st, _, page) = send(&app, get("/", Some(&read))).await;
        assert_eq!(st, StatusCode::OK);
        let csrf = csrf_of(&page);
        let form = format!("csrf={csrf}");
        let (st, _, _) = send(
            &app,
            post("/ui/fixes/f1/approve", Some(&read), origin, &form),
        )
        .await;
        assert_eq!(st, StatusCode::FORBIDDEN);
        // The write token: a review needs the Origin and the session's CSRF token.
        let (_, h, _) = send(&app, post("/ui/login", None, origin, "token=write-secret")).await;
        let write = session_cookie(&h);
        let (_, _, page) = send(&app, get("/", Some(&write))).await;
        let form = format!("csrf={}", csrf_of(&page));
        let (st, _, _) = send(
            &app,
            post("/ui/fixes/f1/approve", Some(&write), None, &form),
        )
        .await;
        assert_eq!(st, StatusCode::FORBIDDEN, "no Origin");
        let (st, _, _) = send(
            &app,
            post(
                "/ui/fixes/f1/approve",
                Some(&write),
                Some("http://evil.example"),
                &form,
            ),
        )
        .await;
        assert_eq!(st, StatusCode::FORBIDDEN, "another Origin");
        let (st, _, _) = send(
            &app,
            post("/ui/fixes/f1/approve", Some(&write), origin, "csrf=0000"),
        )
        .await;
        assert_eq!(st, StatusCode::FORBIDDEN, "a wrong CSRF token");
        let (st, _, body) = send(
            &app,
            post("/ui/fixes/f1/approve", Some(&write), origin, &form),
        )
        .await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{body}");
        // Signing out ends the session.
        let (st, _, _) = send(&app, post("/ui/logout", Some(&write), origin, &form)).await;
        assert_eq!(st, StatusCode::SEE_OTHER);
        assert_eq!(
            send(&app, get("/", Some(&write))).await.0,
            StatusCode::UNAUTHORIZED
        );
        // The API still wants its bearer token.
        assert_eq!(
            send(&app, get("/incidents", Some(&read))).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
}
