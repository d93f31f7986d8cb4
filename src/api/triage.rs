//! `POST /triage`: which registered component an error text belongs to (SPEC §5.3–5.4), as
//! `sentinel triage` answers it — the CLI asks here while a daemon owns the store (and the
//! spend log in it).
//!
//! Body `{"error_text": "..."}` (at most [`MAX_TEXT`] bytes). A PACT key answers at once
//! (1.0, or 0.5 for an unregistered component); without one, one LLM call within the
//! daemon's budget (the fixer's, so their reservations never overlap), 0.8 for a match.
//! The answer is the CLI's `--json` verdict: `{component_id, confidence, reasoning,
//! pact_key}`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::Value;

use super::{ApiError, ApiState};
use crate::cli::triage::{Verdict, by_key, unavailable, verdict_of};

/// The most error text one request may carry.
pub const MAX_TEXT: usize = 64 << 10;

/// What LLM triage needs in the daemon: the client and the fixer's budget.
#[derive(Debug)]
pub struct TriageDesk {
    /// The configured LLM client (or why there is none).
    pub llm: crate::fix::service::DaemonLlm,
    /// The daemon's budget, shared with the fixer.
    pub budget: Arc<crate::fix::budget::Budget>,
}

#[utoipa::path(post, path = "/triage", request_body(content = crate::api::schema::TriageRequest, content_type = "application/json"), responses((status = 200, description = "`{component_id, confidence, reasoning, pact_key}`", body = crate::cli::triage::Verdict), (status = 400, description = "bad body", body = crate::api::schema::ErrorBody), (status = 409, description = "no component registered", body = crate::api::schema::ErrorBody), (status = 413, description = "error_text too long", body = crate::api::schema::ErrorBody)))]
pub(super) async fn triage(
    State(s): State<Arc<ApiState>>,
    body: Bytes,
) -> Result<Json<Verdict>, ApiError> {
    let doc: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("invalid JSON: {e}")))?;
    let Some(text) = doc.get("error_text").and_then(Value::as_str) else {
        return Err(ApiError::bad_request(
            "invalid_body",
            "error_text required (a string)",
        ));
    };
    if text.trim().is_empty() {
        return Err(ApiError::bad_request("invalid_body", "error_text is empty"));
    }
    if text.len() > MAX_TEXT {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_long",
            format!("error_text is {} bytes; at most {MAX_TEXT}", text.len()),
        ));
    }
    let manifest = s.rules.snapshot().manifest.clone();
    if manifest.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_components",
            "No components registered. Use 'sentinel register <dir>' first.",
        ));
    }
    if let Some(v) = by_key(text.as_bytes(), &manifest) {
        return Ok(Json(v));
    }
    let Some(desk) = s.triage.clone() else {
        return Ok(Json(unavailable("the LLM does not run in this process")));
    };
    let text = text.to_string();
    let outcome = crate::fix::triage::within_budget(
        &desk.llm,
        &desk.budget,
        &s.config.llm,
        "triage",
        &text,
        &manifest,
    )
    .await;
    Ok(Json(verdict_of(outcome)))
}
