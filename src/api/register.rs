//! `GET /manifest` and `POST /register` (SPEC §3.3, §11).
//!
//! `POST /register` takes the reference's body, `{"component_id", "contract_path"?,
//! "test_path"?, "source_path"?, "language"? ("python"), "pact_project"?}`, or
//! `{"pact_dir": "..."}` to register a whole Pact project as `sentinel register` does. Every
//! path is canonicalised and must stay inside `pact.project_dir` or one of
//! `api.register_roots` (no `..`, no symlink out): 400 otherwise, and 400 for everything
//! when neither is configured. The manifest is rewritten atomically under its lock and the
//! daemon's rules are reloaded before the answer, so the next line is attributed with it.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use serde_json::{Value, json};

use super::{ApiError, ApiState, clip};
use crate::attribute::manifest::valid_component_id;
use crate::attribute::register::LANGUAGES;
use crate::attribute::register::{confine, register_project};
use crate::attribute::{Manifest, ManifestEntry};

#[utoipa::path(get, path = "/manifest", responses((status = 200, description = "`{\"components\": {...}}`", body = crate::attribute::Manifest)))]
pub(super) async fn manifest(State(s): State<Arc<ApiState>>) -> Json<Manifest> {
    Json(s.rules.snapshot().manifest.clone())
}

#[utoipa::path(post, path = "/register", request_body(content = crate::api::schema::RegisterRequest, content_type = "application/json"), responses((status = 200, description = "registered", body = crate::api::schema::Registered), (status = 400, description = "bad body", body = crate::api::schema::ErrorBody), (status = 403, description = "not the write token", body = crate::api::schema::ErrorBody)))]
pub(super) async fn register(
    State(s): State<Arc<ApiState>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let doc: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("invalid JSON: {e}")))?;
    let Some(obj) = doc.as_object() else {
        return Err(ApiError::bad_request(
            "invalid_body",
            "the body must be a JSON object",
        ));
    };
    let text = |k: &str| -> Result<Option<String>, ApiError> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(v)) => Ok(Some(v.clone())),
            Some(_) => Err(ApiError::bad_request(
                "invalid_body",
                format!("{k} must be a string"),
            )),
        }
    };
    let mut roots: Vec<PathBuf> = s.config.pact_project_dir().into_iter().collect();
    roots.extend(s.config.api.register_roots.iter().cloned());
    let manifest_path = s.config.manifest_path();
    let now = jiff::Timestamp::now().to_string();
    let bad_path = |m: String| ApiError::bad_request("invalid_path", m);

    let answer = if let Some(dir) = text("pact_dir")? {
        let dir = confine(&dir, &roots, true).map_err(bad_path)?;
        let path = manifest_path.clone();
        let outcome =
            tokio::task::spawn_blocking(move || register_project(&path, &dir, false, &now))
                .await
                .map_err(|_| ApiError::internal("registration failed"))?
                .map_err(|e| {
                    tracing::warn!(error = %e, "POST /register failed");
                    ApiError::bad_request("register_failed", "the project could not be registered")
                })?;
        json!({
            "status": "registered",
            "registered": outcome.registered,
            "skipped": outcome.skipped,
            "missing": outcome.missing,
        })
    } else {
        let Some(id) = text("component_id")?.filter(|v| !v.is_empty()) else {
            return Err(ApiError::bad_request(
                "missing_field",
                "component_id required (or pact_dir to register a project)",
            ));
        };
        if !valid_component_id(&id) {
            return Err(ApiError::bad_request(
                "invalid_component_id",
                format!(
                    "component_id {:?} is not valid (letters, digits and _ only)",
                    clip(&id)
                ),
            ));
        }
        let language = text("language")?
            .unwrap_or_else(|| "python".into())
            .to_ascii_lowercase();
        if !LANGUAGES.contains(&language.as_str()) {
            return Err(ApiError::bad_request(
                "invalid_language",
                format!(
                    "language {:?} is not one of {}",
                    clip(&language),
                    LANGUAGES.join(", ")
                ),
            ));
        }
        let path = |k: &str| -> Result<String, ApiError> {
            match text(k)?.filter(|v| !v.is_empty()) {
                None => Ok(String::new()),
                Some(raw) => confine(&raw, &roots, false)
                    .map(|p| p.to_string_lossy().into_owned())
                    .map_err(|m| bad_path(format!("{k}: {m}"))),
            }
        };
        let mut entry = ManifestEntry::new(&id);
        entry.contract_path = path("contract_path")?;
        entry.test_path = path("test_path")?;
        entry.source_path = path("source_path")?;
        entry.pact_project = path("pact_project")?;
        entry.language = language;
        entry.last_registered = now;
        let path = manifest_path.clone();
        tokio::task::spawn_blocking(move || {
            Manifest::update(&path, |m| {
                m.insert(entry);
                Ok::<_, std::convert::Infallible>(())
            })
        })
        .await
        .map_err(|_| ApiError::internal("registration failed"))?
        .map_err(|e| {
            tracing::error!(error = %e, "POST /register: cannot write the manifest");
            ApiError::internal("the manifest could not be written; see Sentinel's log")
        })?
        .unwrap_or_else(|never| match never {});
        json!({ "status": "registered", "component_id": id })
    };
    // Apply at once (the follower would within 250 ms).
    match Manifest::load(&manifest_path) {
        Ok(m) => s.rules.replace_manifest(m),
        Err(e) => tracing::warn!("{e}"),
    }
    Ok(Json(answer))
}
