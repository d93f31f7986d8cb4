//! The shapes of request and response bodies the handlers build by hand (from a parsed
//! `serde_json::Value`, to name the offending field in a 400), written down for
//! `GET /openapi.json` so a client can be generated from it. The handlers' own types
//! (incidents, fixes, events, triage verdicts, trends, the manifest) derive their schemas
//! where they are defined.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

/// Every 4xx and 5xx answer: `{"error": {"code", "message"}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The detail of an [`ErrorBody`].
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code (`invalid_json`, `invalid_query`, `not_found`, …).
    pub code: String,
    /// What a person reads: names the field or value at fault.
    pub message: String,
}

/// `POST /fix`.
#[derive(Debug, Serialize, ToSchema)]
pub struct FixRequest {
    /// The component's PACT key, `PACT:<component_id>:<method>`.
    #[schema(example = "PACT:auth_module:validate_token")]
    pub pact_key: String,
    /// The error text (the log line or its message).
    #[schema(example = "IndexError: list index out of range")]
    pub error: String,
}

/// `POST /fixes/{id}/reject` (the body is optional).
#[derive(Debug, Serialize, ToSchema)]
pub struct RejectRequest {
    /// Why, kept as the fix's error.
    pub reason: Option<String>,
}

/// `POST /triage`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TriageRequest {
    /// The error text, at most 64 KiB.
    pub error_text: String,
}

/// `POST /register`: a Pact project (`pact_dir`), or one component.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegisterRequest {
    /// A Pact project directory (under `pact.project_dir` or `api.register_roots`): every
    /// component in it.
    pub pact_dir: Option<String>,
    /// One component's id (letters, digits and `_`), when `pact_dir` is not given.
    pub component_id: Option<String>,
    /// `python` (default), `typescript`, `javascript`, `rust` or `go`.
    pub language: Option<String>,
    /// The component's contract file.
    pub contract_path: Option<String>,
    /// Its tests.
    pub test_path: Option<String>,
    /// Its source.
    pub source_path: Option<String>,
    /// Its Pact project.
    pub pact_project: Option<String>,
}

/// The answer of `POST /register`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Registered {
    /// `registered`.
    pub status: String,
    /// One component registered: its id.
    pub component_id: Option<String>,
    /// A project: the components registered.
    pub registered: Option<Vec<String>>,
    /// A project: the components skipped, and why.
    pub skipped: Option<Vec<String>>,
    /// A project: the components whose files are missing.
    pub missing: Option<Vec<String>>,
}

/// `GET /health`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `degraded` (503) when the store cannot commit.
    pub status: String,
    /// Degraded: why.
    pub reason: Option<String>,
    /// Degraded: since when (RFC 3339).
    pub since: Option<String>,
}

/// `GET /status` and `GET /metrics.json`: a JSON object whose keys are described in the
/// README (*HTTP API*); open-ended, so that adding a figure never breaks a client.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusDoc(pub BTreeMap<String, serde_json::Value>);

/// `GET /metrics.json`: the reference's JSON metrics. With `cluster` set the figures are
/// summed over the nodes that answered (`components_registered`: the most any node has),
/// and `node`, `nodes` and `missing_nodes` say who answered.
#[derive(Debug, Serialize, ToSchema)]
pub struct MetricsDoc {
    /// Incidents in the store (uncapped).
    pub total_incidents: u64,
    /// Incidents not resolved or escalated.
    pub active_incidents: u64,
    /// Fix attempts.
    pub total_fixes_attempted: u64,
    /// Fixes that succeeded.
    pub fixes_succeeded: u64,
    /// Fixes that failed.
    pub fixes_failed: u64,
    /// What the LLM cost, in USD.
    pub total_spend_usd: f64,
    /// Registered components.
    pub components_registered: u64,
    /// With `cluster` set: the node that answered this request.
    pub node: Option<String>,
    /// With `cluster` set: each node's own figures, by node name.
    pub nodes: Option<BTreeMap<String, serde_json::Value>>,
    /// With `cluster` set: the nodes that did not answer within `cluster.timeout_ms`
    /// (their figures are not in the sums).
    pub missing_nodes: Option<Vec<String>>,
}
