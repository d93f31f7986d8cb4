//! `GET /incidents/{id}/report`: the incident's postmortem ([`crate::fix::postmortem`]),
//! rendered from the store on each request — markdown (`text/markdown`), or HTML when the
//! client prefers it (`Accept: text/html`). 404 for an unknown incident; an incident still
//! open gets its report so far (its "Next steps" say it is open).
//!
//! Log lines and LLM output are attacker-controlled text: the markdown's raw HTML is
//! emitted as escaped text, never as markup, and the page carries the dashboard's
//! Content-Security-Policy (no script at all), `nosniff` and frame denial.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::{ApiError, ApiState, clip};
use crate::fix::postmortem::{Record, render};

#[utoipa::path(get, path = "/incidents/{id}/report", params(("id" = String, Path, description = "incident id")), responses((status = 200, description = "the postmortem: markdown, or HTML with `Accept: text/html`", content_type = "text/markdown"), (status = 404, description = "no such incident", body = crate::api::schema::ErrorBody)))]
pub(super) async fn report(
    State(s): State<Arc<ApiState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let store = s.store.clone();
    let key = id.clone();
    let record = tokio::task::spawn_blocking(move || Record::read(&store, &key))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))?
        .ok_or_else(|| ApiError::not_found(format!("no incident {}", clip(&id))))?;
    let md = render(&record);
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(prefers_html);
    if !wants_html {
        return Ok((
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/markdown; charset=utf-8"),
            )],
            md,
        )
            .into_response());
    }
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(crate::dashboard::CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        ],
        html(&record.incident.id, &md),
    )
        .into_response())
}

/// Whether an `Accept` header asks for HTML before markdown or plain text.
fn prefers_html(accept: &str) -> bool {
    let mut best: Option<(f32, bool)> = None;
    for part in accept.split(',') {
        let mut it = part.split(';');
        let kind = it.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = it
            .find_map(|p| p.trim().strip_prefix("q="))
            .and_then(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let html = match kind.as_str() {
            "text/html" | "application/xhtml+xml" => true,
            "text/markdown" | "text/plain" | "text/*" => false,
            _ => continue,
        };
        if best.is_none_or(|(bq, _)| q > bq) {
            best = Some((q, html));
        }
    }
    best.is_some_and(|(q, html)| html && q > 0.0)
}

/// The markdown as a standalone page; raw HTML in it is escaped, not rendered.
fn html(id: &str, md: &str) -> String {
    use pulldown_cmark::{Event, Parser};
    let events = Parser::new(md).map(|e| match e {
        Event::Html(t) | Event::InlineHtml(t) => Event::Text(t),
        e => e,
    });
    let mut body = String::new();
    pulldown_cmark::html::push_html(&mut body, events);
    let title = maud::html! { (format!("Postmortem {id}")) }.into_string();
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         </head><body>\n{body}</body></html>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_chosen_only_when_preferred() {
        assert!(prefers_html("text/html"));
        assert!(prefers_html("text/html,application/xhtml+xml,*/*;q=0.8"));
        assert!(!prefers_html("text/markdown, text/html;q=0.5"));
        assert!(!prefers_html("*/*"));
        assert!(!prefers_html("text/html;q=0"));
    }

    #[test]
    fn markup_in_the_report_is_escaped() {
        let page = html("x<y", "# A\n\n<script>alert(1)</script> and `<b>`\n");
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;"), "{page}");
        assert!(page.contains("<title>Postmortem x&lt;y</title>"), "{page}");
    }
}
