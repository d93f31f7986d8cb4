//! `POST /fix`, `GET /fixes`, `GET /fixes/{id}` (SPEC §11, made durable and asynchronous).
//!
//! `POST /fix` takes the reference's body `{"pact_key", "error"}`, counts the error as an
//! incident, queues a fix and answers **202** at once with the fix (`status: pending`) and
//! `Location: /fixes/<id>`. With `?wait=true` it waits for the fix to end — at most
//! [`WAIT_MAX`], within the request timeout — and answers 200 with the FixResult (the
//! reference's synchronous answer), or 202 if it is still running then. Fixes are stored in
//! redb: they survive restarts (the reference kept them in memory).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

use super::{ApiError, ApiState};
use crate::fix::service::RequestError;
use crate::store::FixStatus;

/// The longest `POST /fix?wait=true` waits.
pub(super) const WAIT_MAX: Duration = Duration::from_secs(25);

#[derive(Debug, Deserialize)]
pub(super) struct FixQuery {
    #[serde(default)]
    wait: Option<String>,
}

#[utoipa::path(post, path = "/fix", request_body(content = crate::api::schema::FixRequest, content_type = "application/json"), params(("wait" = Option<bool>, Query, description = "wait up to 25 s for the fix to end")), responses((status = 202, description = "the fix, queued (`Location: /fixes/<id>`)", body = crate::store::FixResult), (status = 200, description = "with `wait`: the ended FixResult", body = crate::store::FixResult), (status = 400, description = "bad body", body = crate::api::schema::ErrorBody), (status = 409, description = "a fix of the incident is running", body = crate::api::schema::ErrorBody), (status = 422, description = "component not registered", body = crate::api::schema::ErrorBody)))]
pub(super) async fn post_fix(
    State(s): State<Arc<ApiState>>,
    Query(q): Query<FixQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some(fixer) = s.fixer.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "fixer_unavailable",
            "the fixer does not run in this process",
        ));
    };
    let doc: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("invalid JSON: {e}")))?;
    let field = |k: &str| {
        doc.get(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .unwrap_or("")
    };
    let (key, error) = (field("pact_key").to_string(), field("error").to_string());
    if key.is_empty() || error.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "pact_key and error required (non-empty strings)",
        ));
    }
    let wait = matches!(q.wait.as_deref(), Some("true" | "1" | "yes"));
    let fix = tokio::task::spawn_blocking(move || fixer.request(&key, &error))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| match e {
            RequestError::NotRegistered(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "not_registered",
                e.to_string(),
            ),
            RequestError::BadInput(_) => ApiError::bad_request("invalid_body", e.to_string()),
            RequestError::Busy { .. } => {
                ApiError::new(StatusCode::CONFLICT, "fix_in_progress", e.to_string())
            }
            RequestError::Store(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                e.to_string(),
            ),
        })?;
    let location = format!("/fixes/{}", fix.id);
    let mut result = fix;
    if wait
        && let Some(handle) = s.fixer.as_ref()
        && let Some(done) = handle.wait(&result.id, WAIT_MAX).await
    {
        result = done;
    }
    let status = if matches!(result.status, FixStatus::Pending | FixStatus::Running) {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, [(header::LOCATION, location)], Json(result)).into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    #[serde(default)]
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/fixes", operation_id = "list_fixes", params(("limit" = Option<usize>, Query, description = "at most this many (default 50, ≤ 1000)")), responses((status = 200, description = "FixResults, newest first", body = Vec<crate::store::FixResult>)))]
pub(super) async fn list(
    State(s): State<Arc<ApiState>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let store = s.store.clone();
    let fixes = tokio::task::spawn_blocking(move || store.fixes(limit))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(fixes).into_response())
}

#[utoipa::path(get, path = "/fixes/{id}", params(("id" = String, Path, description = "fix id")), responses((status = 200, description = "a FixResult", body = crate::store::FixResult), (status = 404, description = "no such fix", body = crate::api::schema::ErrorBody)))]
pub(super) async fn get_fix(
    State(s): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let store = s.store.clone();
    let key = id.clone();
    let fix = tokio::task::spawn_blocking(move || store.fix(&key))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    match fix {
        Some(f) => Ok(Json(f).into_response()),
        None => Err(ApiError::not_found(format!("no fix {}", super::clip(&id)))),
    }
}

#[utoipa::path(post, path = "/fixes/{id}/approve", operation_id = "approve_fix", params(("id" = String, Path, description = "fix id")), responses((status = 200, description = "approved: merged (with fix.merge) and resolved", body = crate::store::FixResult), (status = 404, description = "no such fix", body = crate::api::schema::ErrorBody), (status = 409, description = "not awaiting approval", body = crate::api::schema::ErrorBody)))]
pub(super) async fn approve(
    State(s): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    review(s, id, true, None).await
}

#[utoipa::path(post, path = "/fixes/{id}/reject", operation_id = "reject_fix", params(("id" = String, Path, description = "fix id")), request_body(content = Option<crate::api::schema::RejectRequest>, description = "optional: why (kept as the fix's error)", content_type = "application/json"), responses((status = 200, description = "rejected: branch deleted, incident escalated", body = crate::store::FixResult), (status = 400, description = "a body that is not a JSON object with an optional string `reason`", body = crate::api::schema::ErrorBody), (status = 404, description = "no such fix", body = crate::api::schema::ErrorBody), (status = 409, description = "not awaiting approval", body = crate::api::schema::ErrorBody)))]
pub(super) async fn reject(
    State(s): State<Arc<ApiState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let reason = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let doc: Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("invalid_json", format!("invalid JSON: {e}")))?;
        match doc.get("reason") {
            None | Some(Value::Null) if doc.is_object() => None,
            Some(Value::String(r)) => Some(r.chars().take(2000).collect()),
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_body",
                    "expected {\"reason\": \"...\"} (reason optional, a string)",
                ));
            }
        }
    };
    review(s, id, false, reason).await
}

async fn review(
    s: Arc<ApiState>,
    id: String,
    approve: bool,
    reason: Option<String>,
) -> Result<Response, ApiError> {
    use crate::fix::service::ReviewError;
    let (store, config) = (s.store.clone(), s.config.clone());
    let fix = tokio::task::spawn_blocking(move || {
        crate::fix::service::review(&store, &config, &id, approve, reason.as_deref())
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| match e {
        ReviewError::NotFound(_) => ApiError::not_found(e.to_string()),
        ReviewError::NotAwaiting { .. } => {
            ApiError::new(StatusCode::CONFLICT, "not_awaiting_approval", e.to_string())
        }
        ReviewError::Store(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            e.to_string(),
        ),
    })?;
    Ok(Json(fix).into_response())
}

#[utoipa::path(post, path = "/fixes/pause", operation_id = "pause_fixes", request_body(content = Option<crate::api::schema::RejectRequest>, description = "optional: who or why", content_type = "application/json"), responses((status = 200, description = "`{paused, since, reason}`: no fix starts until resume (queued fixes wait; a running one finishes)", body = crate::fix::guard::PauseState), (status = 400, description = "a body that is not a JSON object with an optional string `reason`", body = crate::api::schema::ErrorBody), (status = 503, description = "the fixer does not run in this process", body = crate::api::schema::ErrorBody)))]
pub(super) async fn pause(
    State(s): State<Arc<ApiState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let reason = optional_reason(&body)?.unwrap_or_default();
    switch(s, Some(reason)).await
}

#[utoipa::path(post, path = "/fixes/resume", operation_id = "resume_fixes", responses((status = 200, description = "`{paused: false}`: held fixes start now", body = crate::fix::guard::PauseState), (status = 503, description = "the fixer does not run in this process", body = crate::api::schema::ErrorBody)))]
pub(super) async fn resume(State(s): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    switch(s, None).await
}

/// The kill switch: `Some(reason)` pauses, `None` resumes.
async fn switch(s: Arc<ApiState>, pause: Option<String>) -> Result<Response, ApiError> {
    let Some(fixer) = s.fixer.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "fixer_unavailable",
            "the fixer does not run in this process",
        ));
    };
    let state = tokio::task::spawn_blocking(move || {
        let sw = fixer.pause_switch();
        let r = match pause {
            Some(reason) => sw.pause(&reason, jiff::Timestamp::now()),
            None => sw.resume(),
        };
        fixer.wake();
        r
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| ApiError::internal(format!("cannot write the pause switch: {e}")))?;
    Ok(Json(state).into_response())
}

/// An empty body, or `{"reason": "..."}`.
fn optional_reason(body: &[u8]) -> Result<Option<String>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let doc: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("invalid JSON: {e}")))?;
    match doc.get("reason") {
        None | Some(Value::Null) if doc.is_object() => Ok(None),
        Some(Value::String(r)) => Ok(Some(r.chars().take(2000).collect())),
        _ => Err(ApiError::bad_request(
            "invalid_body",
            "expected {\"reason\": \"...\"} (reason optional, a string)",
        )),
    }
}
