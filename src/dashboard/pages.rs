//! The pages, as maud templates. maud escapes every `(value)`; nothing here writes raw
//! HTML, no element carries a `style` attribute or an event handler (the CSP forbids them).

use axum::http::StatusCode;
use axum::response::Html;
use jiff::Timestamp;
use maud::{DOCTYPE, Markup, html};

use super::session::Viewer;
use super::{ComponentRow, FEED_ROWS, Ingest, ListPage, ListQuery, Sort, Spend, Summary, Window};
use crate::attribute::Severity;
use crate::store::trend::{Bucket, TrendPoint};
use crate::store::{Event, FixJob, FixResult, FixStatus, Incident, IncidentStatus};

type Page = Html<String>;

fn time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%SZ").to_string()
}

/// At most `n` characters of `s` (display only; the full text is on the incident page).
fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n).collect();
        t.push('…');
        t
    }
}

fn event_kinds() -> String {
    crate::store::EventKind::ALL
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// The frame of every page. `after` is the event head the page was rendered at (the live
/// parts follow the event log from there).
fn layout(viewer: Option<&Viewer>, title: &str, active: &str, after: u64, body: Markup) -> Page {
    let nav = [
        ("/", "Overview"),
        ("/ui/live", "Live"),
        ("/ui/components", "Components"),
        ("/ui/fixes", "Fixes"),
    ];
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " — Sentinel" }
                    link rel="stylesheet" href="/ui/assets/app.css";
                    script src="/ui/assets/app.js" defer {}
                }
                body data-after=(after) data-kinds=(event_kinds()) {
                    header.top {
                        a.brand href="/" { "Sentinel" }
                        @if let Some(v) = viewer {
                            nav {
                                @for (href, name) in nav {
                                    a href=(href) class=[(active == name).then_some("active")] { (name) }
                                }
                            }
                            span.who {
                                span #live-status .muted { "" }
                                " "
                                span.scope { (if v.can_write() { "write" } else { "read" }) }
                                @if v.signed_in {
                                    form.inline method="post" action="/ui/logout" {
                                        input type="hidden" name="csrf" value=(v.csrf);
                                        button type="submit" { "Sign out" }
                                    }
                                }
                            }
                        }
                    }
                    main { (body) }
                }
            }
        }
        .into_string(),
    )
}

/// A count, or a dash where it does not apply.
fn opt_count(v: Option<u64>) -> String {
    v.map_or_else(|| "\u{2013}".to_string(), |n| n.to_string())
}

fn status_badge(s: IncidentStatus) -> Markup {
    html! { span class={ "badge st-" (s.as_str()) } { (s.as_str()) } }
}

fn severity_badge(s: Severity) -> Markup {
    html! { span class={ "badge sev-" (s.as_str()) } { (s.as_str()) } }
}

/// The lifecycle badges beside the status: new (first seen in the last hour), regressed,
/// fixing (escalated is a status of its own).
fn flags(inc: &Incident, now: Timestamp) -> Markup {
    let new = now.duration_since(inc.first_seen) < jiff::SignedDuration::from_hours(1);
    let regressed = inc.resolution == "regression" && inc.status.is_active();
    let fixing = matches!(
        inc.status,
        IncidentStatus::Triaging
            | IncidentStatus::Diagnosing
            | IncidentStatus::Remediating
            | IncidentStatus::Verifying
    );
    html! {
        @if new { span.badge.flag-new { "new" } }
        @if regressed { span.badge.flag-regressed { "regressed" } }
        @if fixing { span.badge.flag-fixing { "fixing" } }
        @if inc.overflow.is_some() { span.badge.flag-overflow title="new fingerprints of this key folded here" { "high cardinality" } }
    }
}

/// A 24-bar sparkline (inline SVG: no script, no style attribute).
fn sparkline(values: &[u64]) -> Markup {
    let max = values.iter().copied().max().unwrap_or(0).max(1) as f64;
    let n = values.len().max(1) as f64;
    let (w, h) = (96.0, 20.0);
    let bw = w / n;
    html! {
        svg.spark viewBox={ "0 0 " (w) " " (h) } width="96" height="20" role="img"
            aria-label={ (values.iter().sum::<u64>()) " in 24 h" } {
            @for (i, v) in values.iter().enumerate() {
                @if *v > 0 {
                    @let bh = ((*v as f64 / max) * (h - 2.0)).max(1.5);
                    rect x=(format!("{:.2}", i as f64 * bw)) y=(format!("{:.2}", h - bh))
                        width=(format!("{:.2}", (bw - 0.8).max(0.5))) height=(format!("{:.2}", bh)) {}
                }
            }
        }
    }
}

/// The overview.
#[allow(clippy::too_many_arguments)]
pub(super) fn overview(
    viewer: &Viewer,
    q: &ListQuery,
    summary: &Summary,
    page: &ListPage,
    ingest: &Ingest,
    recent: &[Event],
    head: u64,
    now: Timestamp,
) -> Page {
    // New incidents join the list live on its first page in recency order, whatever the
    // filters: the script checks each against them (the data-filter-* attributes).
    let live_first_page = q.cursor.is_none() && q.sort == Sort::LastSeen;
    let next_href = page.next.as_ref().map(|c| {
        let mut parts: Vec<(&str, String)> = Vec::new();
        if let Some(s) = &q.status {
            parts.push(("status", s.clone()));
        }
        if let Some(c) = &q.component {
            parts.push(("component", c.clone()));
        }
        if let Some(s) = q.severity {
            parts.push(("severity", s.as_str().to_string()));
        }
        if let Some(t) = &q.text {
            parts.push(("q", t.clone()));
        }
        parts.push(("sort", q.sort.as_str().to_string()));
        parts.push(("window", q.window.as_str().to_string()));
        parts.push(("limit", q.limit.to_string()));
        parts.push(("cursor", c.clone()));
        let qs: Vec<String> = parts
            .iter()
            .map(|(k, v)| format!("{k}={}", url_encode(v)))
            .collect();
        format!("/?{}", qs.join("&"))
    });
    let body = html! {
        h1 { "Overview" }
        section.cards {
            div.card {
                h2 { "Ingest" }
                div.scroll {
                    table #ingest {
                        thead { tr { th { "source" } th { "lines/s" } th { "bytes/s" } th { "error lines/s" } th { "webhook req/s" } th { "429/s" } th { "error lines" } th title="bytes of tailed files not read yet" { "behind" } th { "files behind" } } }
                        tbody {
                            @for s in &ingest.sources {
                                tr data-source=(s.name) {
                                    td { (s.name) " " span.muted { (s.kind) } }
                                    td data-field="lines_per_s" { (format!("{:.1}", s.lines_per_s)) }
                                    td data-field="bytes_per_s" { (format!("{:.0}", s.bytes_per_s)) }
                                    td data-field="error_lines_per_s" { (format!("{:.1}", s.error_lines_per_s)) }
                                    td data-field="webhook_requests_per_s" { (format!("{:.1}", s.webhook_requests_per_s)) }
                                    td data-field="rejected_429_per_s" { (format!("{:.1}", s.rejected_429_per_s)) }
                                    td data-field="error_lines" { (s.error_lines) }
                                    td data-field="lag_bytes" { (opt_count(s.lag_bytes)) }
                                    td data-field="files_behind" { (opt_count(s.files_behind)) }
                                }
                            }
                        }
                    }
                }
                p.muted { "lag: " span #lag-queue { (ingest.queue_depth) } " batches queued, " span #lag-unapplied { (ingest.unapplied_events) } " webhook events not committed yet" }
                details #behind-files open[!ingest.most_behind.is_empty()] {
                    summary { "Files furthest behind" }
                    table #behind {
                        thead { tr { th { "file" } th { "source" } th { "bytes behind" } th { "behind for" } } }
                        tbody {
                            @for b in &ingest.most_behind {
                                tr {
                                    td.mono { (b.path) }
                                    td { (b.source) }
                                    td { (b.bytes_behind) }
                                    td { (b.behind_seconds) " s" }
                                }
                            }
                        }
                    }
                    @if ingest.most_behind.is_empty() { p.muted #behind-none { "Every tailed file is read to its end." } }
                }
            }
            div.card {
                h2 { "Incidents " span.muted #total { (summary.total) } }
                p.counts {
                    @for st in IncidentStatus::ALL {
                        @let n = summary.by_status.get(&st).copied().unwrap_or(0);
                        span.count { (status_badge(st)) " " (n) }
                    }
                }
                p.counts {
                    @for sev in Severity::ALL {
                        @let n = summary.by_severity.get(&sev).copied().unwrap_or(0);
                        span.count { (severity_badge(sev)) " " (n) }
                    }
                }
            }
        }
        form.filters method="get" action="/" {
            label { "status " select name="status" {
                option value="" selected[q.status.is_none()] { "any" }
                option value="active" selected[q.status.as_deref() == Some("active")] { "active" }
                @for st in IncidentStatus::ALL {
                    option value=(st.as_str()) selected[q.status.as_deref() == Some(st.as_str())] { (st.as_str()) }
                }
            } }
            label { "component " input type="text" name="component" value=[q.component.as_deref()] size="12"; }
            label { "severity " select name="severity" {
                option value="" selected[q.severity.is_none()] { "any" }
                @for sev in Severity::ALL {
                    option value=(sev.as_str()) selected[q.severity == Some(sev)] { (sev.as_str()) }
                }
            } }
            label { "text " input type="search" name="q" value=[q.text.as_deref()] size="16"; }
            label { "sort " select name="sort" {
                @for s in Sort::ALL {
                    option value=(s.as_str()) selected[q.sort == s] { (s.label()) }
                }
            } }
            label { "window " select name="window" {
                @for w in Window::ALL {
                    option value=(w.as_str()) selected[q.window == w] { (w.as_str()) }
                }
            } }
            button type="submit" { "Apply" }
        }
        div.grid {
            section.list {
                div.scroll {
                    table #incidents data-live=(if live_first_page { "1" } else { "0" })
                        data-filter-status=(q.status.as_deref().unwrap_or(""))
                        data-filter-component=(q.component.as_deref().unwrap_or(""))
                        data-filter-severity=(q.severity.map_or("", |s| s.as_str()))
                        data-filter-q=(q.text.as_deref().unwrap_or("")) {
                        thead { tr {
                            th { "incident" } th { "component" } th { "severity" } th { "status" }
                            th { "in " (q.window.as_str()) } th { "total" } th { "24 h" }
                            th { "first seen" } th { "last seen" }
                        } }
                        tbody {
                            @for r in &page.rows {
                                tr data-id=(r.inc.id) {
                                    td.incident {
                                        a href={ "/ui/incidents/" (r.inc.id) } { (r.inc.id) }
                                        div.sample { (short(&r.inc.sample, 160)) }
                                    }
                                    td { (r.inc.component_id) }
                                    td { (severity_badge(r.inc.severity)) }
                                    td { (status_badge(r.inc.status)) " " (flags(&r.inc, now)) }
                                    td.num data-field="window" { (r.in_window) }
                                    td.num data-field="count" { (r.inc.count) }
                                    td { (sparkline(&r.spark)) }
                                    td.time { (time(r.inc.first_seen)) }
                                    td.time data-field="last_seen" { (time(r.inc.last_seen)) }
                                }
                            }
                        }
                    }
                }
                @if let Some(n) = page.searched {
                    p #searched.muted { "Searched " (n) " incidents; older ones were not read yet." }
                } @else if page.rows.is_empty() {
                    p #empty.muted { "No incidents match." }
                }
                @if let Some(href) = next_href {
                    p { a #next href=(href) { @if page.searched.is_some() { "Search older incidents →" } @else { "Next page →" } } }
                }
            }
            aside.feed {
                h2 { "Live" }
                (feed_table(recent, head))
            }
        }
    };
    layout(Some(viewer), "Overview", "Overview", head, body)
}

/// `application/x-www-form-urlencoded` encoding of a query value.
fn url_encode(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn feed_table(events: &[Event], head: u64) -> Markup {
    html! {
        div.scroll {
            table #feed data-after=(head) data-keep=(FEED_ROWS) {
                thead { tr { th { "#" } th { "time" } th { "event" } th { "incident" } th { "component" } th { "detail" } } }
                tbody {
                    @for e in events.iter().rev().take(FEED_ROWS) {
                        tr data-seq=(e.seq) {
                            td { (e.seq) }
                            td.time { (time(e.at)) }
                            td { span class={ "badge ev-" (e.kind.as_str()) } { (e.kind.as_str()) } }
                            td { @if !e.incident_id.is_empty() { a href={ "/ui/incidents/" (e.incident_id) } { (e.incident_id) } } }
                            td { (e.component_id) }
                            td.sample { (short(&event_detail(e), 120)) }
                        }
                    }
                }
            }
        }
    }
}

/// A line of text about an event (the same the script shows).
fn event_detail(e: &Event) -> String {
    let d = &e.data;
    ["sample", "error", "reason", "status"]
        .iter()
        .find_map(|k| d.get(*k).and_then(|v| v.as_str()).filter(|s| !s.is_empty()))
        .unwrap_or("")
        .to_string()
}

/// The live feed page.
pub(super) fn live(viewer: &Viewer, events: &[Event], head: u64) -> Page {
    let body = html! {
        h1 { "Live" }
        p.muted { "New incidents and state changes as they happen; the newest " (FEED_ROWS) " are kept." }
        (feed_table(events, head))
    };
    layout(Some(viewer), "Live", "Live", head, body)
}

/// The occurrences chart: one bar per non-empty bucket, each with its start and count
/// (`data-start`, `data-count`) and a tooltip.
fn chart(window: Window, points: &[TrendPoint], now: Timestamp) -> Markup {
    let (bucket, n) = window.buckets();
    let now_i = bucket.index(u64::try_from(now.as_microsecond()).unwrap_or(0));
    let from = now_i.saturating_sub(n - 1);
    let shown: Vec<&TrendPoint> = points.iter().filter(|p| p.index >= from).collect();
    let max = shown.iter().map(|p| p.count).max().unwrap_or(0).max(1);
    let (w, h, pad) = (720.0, 160.0, 14.0);
    let bw = w / n as f64;
    let unit = match bucket {
        Bucket::Minute => "minute",
        Bucket::Hour => "hour",
    };
    html! {
        svg #trend.chart viewBox={ "0 0 " (w) " " (h + pad) } role="img"
            data-bucket=(bucket.as_str()) data-points=(shown.len())
            aria-label={ (shown.iter().map(|p| p.count).sum::<u64>()) " occurrences in " (window.as_str()) } {
            line.axis x1="0" y1=(h) x2=(w) y2=(h) {}
            @for p in &shown {
                @let i = (p.index - from) as f64;
                @let bh = ((p.count as f64 / max as f64) * (h - 16.0)).max(1.5);
                rect.bar x=(format!("{:.2}", i * bw)) y=(format!("{:.2}", h - bh))
                    width=(format!("{:.2}", (bw * 0.8).max(0.6))) height=(format!("{:.2}", bh))
                    data-start=(p.start.to_string()) data-count=(p.count) {
                    title { (p.count) " in the " (unit) " from " (time(p.start)) }
                }
            }
            text.label x="2" y="11" { "max " (max) " per " (unit) }
            text.label x="2" y=(h + pad - 2.0) { (time(bucket.start(from))) }
            text.label.end x=(w - 2.0) y=(h + pad - 2.0) { "now" }
        }
    }
}

/// The incident page.
#[allow(clippy::too_many_arguments)]
pub(super) fn incident(
    viewer: &Viewer,
    inc: &Incident,
    timeline: &[Event],
    fixes: &[FixResult],
    window: Window,
    points: &[TrendPoint],
    report: Option<&str>,
    now: Timestamp,
) -> Page {
    let body = html! {
        h1 { "Incident " (inc.id) }
        p.badges { (severity_badge(inc.severity)) " " (status_badge(inc.status)) " " (flags(inc, now)) }
        dl.facts {
            dt { "component" } dd { (inc.component_id) " " span.muted { (inc.attribution.as_str()) } }
            dt { "method" } dd { (inc.method) }
            dt { "key" } dd { code { (inc.pact_key) } }
            dt { "occurrences" } dd #count { (inc.count) }
            dt { "first seen" } dd { (time(inc.first_seen)) }
            dt { "last seen" } dd { (time(inc.last_seen)) }
            dt { "source" } dd { (inc.source) }
            @if !inc.resolution.is_empty() { dt { "resolution" } dd { (inc.resolution) } }
        }
        @if let Some(o) = &inc.overflow {
            h2 { "High cardinality" }
            p #overflow { (o.folded_fingerprints) " new fingerprints folded into this incident. " (o.hint) }
            @if !o.samples.is_empty() {
                pre #overflow-samples { @for l in &o.samples { (l) "\n" } }
            }
        }
        h2 { "Sample line" }
        pre #sample { (inc.sample) }
        h2 { "Normalised text" }
        pre #normalized { (inc.normalized) }
        h2 { "Occurrences" }
        p.tabs {
            @for w in Window::ALL {
                a href={ "/ui/incidents/" (inc.id) "?range=" (w.as_str()) } class=[(w == window).then_some("active")] { (w.as_str()) }
            }
        }
        div.scroll { (chart(window, points, now)) }
        h2 { "Fix attempts" }
        @if fixes.is_empty() { p.muted { "None." } }
        @for f in fixes {
            section.fix #{ "fix-" (f.id) } data-status=(f.status.as_str()) {
                h3 { "Fix " (f.id) " " span class={ "badge fx-" (f.status.as_str()) } { (f.status.as_str()) }
                    @if f.merged { " " span.badge.fx-merged { "merged" } } }
                dl.facts {
                    @if !f.branch.is_empty() { dt { "branch" } dd { code { (f.branch) } } }
                    @if !f.git_fix_ref.is_empty() { dt { "commit" } dd { code { (f.git_fix_ref) } } }
                    dt { "attempts" } dd { (f.attempts) }
                    dt { "spend" } dd { "$" (format!("{:.4}", f.spend_usd)) }
                    @if let Some(t) = f.started_at { dt { "started" } dd { (time(t)) } }
                    @if let Some(t) = f.completed_at { dt { "completed" } dd { (time(t)) } }
                    @if !f.error.is_empty() { dt { "error" } dd { (f.error) } }
                }
                @if f.status == FixStatus::AwaitingApproval {
                    div.review {
                        form.inline method="post" action={ "/ui/fixes/" (f.id) "/approve" } {
                            input type="hidden" name="csrf" value=(viewer.csrf);
                            button.approve type="submit" { "Approve and merge" }
                        }
                        form.inline method="post" action={ "/ui/fixes/" (f.id) "/reject" } {
                            input type="hidden" name="csrf" value=(viewer.csrf);
                            button.reject type="submit" { "Reject" }
                        }
                        @if !viewer.can_write() { span.muted { " (needs the write token)" } }
                    }
                }
                @if !f.reproducer_test.is_empty() {
                    details { summary { "Reproducer test" } pre { (f.reproducer_test) } }
                }
                @if !f.diff.is_empty() {
                    details.change open {
                        summary { "Change (unified diff)" }
                        pre.diff {
                            @for line in f.diff.lines() {
                                span class=(diff_class(line)) { (line) } "\n"
                            }
                        }
                    }
                }
                @for (path, text) in &f.fixed_source {
                    details { summary { "Fixed file: " code { (path) } } pre.source { (text) } }
                }
                @if !f.contract_change.is_empty() {
                    details { summary { "Contract change" } pre { (f.contract_change) } }
                }
                @if !f.test_output_tail.is_empty() {
                    details { summary { "Test output" } pre { (f.test_output_tail) } }
                }
            }
        }
        @if let Some(r) = report {
            h2 { "Report" }
            pre.report { (r) }
        }
        h2 { "Timeline" }
        div.scroll {
            table.timeline {
                thead { tr { th { "time" } th { "event" } th { "fix" } th { "detail" } } }
                tbody {
                    @for e in timeline {
                        tr {
                            td.time { (time(e.at)) }
                            td { span class={ "badge ev-" (e.kind.as_str()) } { (e.kind.as_str()) } }
                            td { (e.fix_id) }
                            td.sample { (short(&event_detail(e), 200)) }
                        }
                    }
                }
            }
        }
    };
    layout(Some(viewer), &format!("Incident {}", inc.id), "", 0, body)
}

/// The CSS class of one line of a unified diff.
fn diff_class(line: &str) -> &'static str {
    if line.starts_with("+++") || line.starts_with("---") || line.starts_with("diff ") {
        "d-file"
    } else if line.starts_with("@@") {
        "d-hunk"
    } else if line.starts_with('+') {
        "d-add"
    } else if line.starts_with('-') {
        "d-del"
    } else {
        "d-ctx"
    }
}

/// The components page.
pub(super) fn components(viewer: &Viewer, rows: &[ComponentRow], trust_sent: u64) -> Page {
    let body = html! {
        h1 { "Components" }
        p.muted { "Trust events accepted by Arbiter (all components): " span #trust-total { (trust_sent) } }
        @if rows.is_empty() { p.muted { "No component is registered (sentinel register <project>)." } }
        div.scroll {
            table #components {
                thead { tr { th { "component" } th { "incidents" } th { "active" } th { "error lines" } th { "trust events" } th { "last error" } } }
                tbody {
                    @for r in rows {
                        tr {
                            td { a href={ "/?component=" (url_encode(&r.id)) } { (r.id) } }
                            td.num { (r.incidents) }
                            td.num { (r.active) }
                            td.num { (r.occurrences) }
                            td.num.trust { (r.trust) }
                            td {
                                @if let Some(l) = &r.last {
                                    span.time { (time(l.last_seen)) } " "
                                    a href={ "/ui/incidents/" (l.id) } { (short(&l.sample, 100)) }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    layout(Some(viewer), "Components", "Components", 0, body)
}

/// The fixes page.
pub(super) fn fixes(
    viewer: &Viewer,
    jobs: &[FixJob],
    recent: &[FixResult],
    spend: &[Spend],
    per_incident_cap: f64,
) -> Page {
    let running: Vec<&FixResult> = recent
        .iter()
        .filter(|f| f.status == FixStatus::Running)
        .collect();
    let body = html! {
        h1 { "Fixes" }
        h2 { "Spend" }
        table #spend {
            thead { tr { th { "cap" } th { "spent" } th { "cap" } th {} } }
            tbody {
                @for s in spend {
                    tr {
                        td { (s.name) }
                        td.num { "$" (format!("{:.2}", s.spent_usd)) }
                        td.num { "$" (format!("{:.2}", s.cap_usd)) }
                        td { progress max=(format!("{:.4}", s.cap_usd.max(0.0001))) value=(format!("{:.4}", s.spent_usd.min(s.cap_usd))) {} }
                    }
                }
            }
        }
        p.muted { "Per incident: at most $" (format!("{per_incident_cap:.2}")) "." }
        h2 { "Queued (" (jobs.len()) ")" }
        @if jobs.is_empty() { p.muted { "None." } }
        ul { @for j in jobs { li { a href={ "/ui/incidents/" (j.incident_id) } { (j.incident_id) } " " span.muted { (format!("{:?}", j.state)) } } } }
        h2 { "Running (" (running.len()) ")" }
        ul { @for f in &running { li { a href={ "/ui/incidents/" (f.incident_id) } { (f.id) } " " (f.component_id) } } }
        h2 { "Recent" }
        div.scroll {
            table #fixes {
                thead { tr { th { "fix" } th { "incident" } th { "component" } th { "status" } th { "spend" } th { "completed" } } }
                tbody {
                    @for f in recent {
                        tr {
                            td { (f.id) }
                            td { a href={ "/ui/incidents/" (f.incident_id) "#fix-" (f.id) } { (f.incident_id) } }
                            td { (f.component_id) }
                            td { span class={ "badge fx-" (f.status.as_str()) } { (f.status.as_str()) } @if f.merged { " " span.badge.fx-merged { "merged" } } }
                            td.num { "$" (format!("{:.4}", f.spend_usd)) }
                            td.time { @if let Some(t) = f.completed_at { (time(t)) } }
                        }
                    }
                }
            }
        }
    };
    layout(Some(viewer), "Fixes", "Fixes", 0, body)
}

/// The token form.
pub(super) fn login(problem: Option<&str>) -> Page {
    let body = html! {
        h1 { "Sign in" }
        p { "This Sentinel needs an API token (the read or the write token of its configuration)." }
        @if let Some(p) = problem { p.problem #problem { (p) } }
        form.login method="post" action="/ui/login" {
            label for="token" { "Token" }
            input #token type="password" name="token" autocomplete="off" required;
            button #signin type="submit" { "Sign in" }
        }
    };
    layout(None, "Sign in", "", 0, body)
}

/// An error page.
pub(super) fn error(status: StatusCode, message: &str) -> Page {
    let title = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let body = html! {
        h1 #error { (title) }
        p #message { (message) }
        p { a href="/" { "Back to the overview" } }
    };
    layout(None, &title, "", 0, body)
}
