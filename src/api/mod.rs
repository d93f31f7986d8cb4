//! The daemon's HTTP API. (Placeholder until the API lands.)

use std::sync::Arc;

use crate::attribute::LiveRules;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Store;

/// A configured source as `/status` lists it.
#[derive(Debug, Clone)]
pub struct SourceInfo {
    /// Name.
    pub name: String,
    /// Type.
    pub kind: String,
    /// Glob or listen address.
    pub detail: String,
}

/// Shared state of the API handlers.
#[derive(Debug)]
pub struct ApiState {
    metrics: Arc<Metrics>,
}

impl ApiState {
    /// The state.
    pub fn new(
        _store: Arc<Store>,
        metrics: Arc<Metrics>,
        _config: Arc<Config>,
        _rules: Arc<LiveRules>,
        _sources: Vec<SourceInfo>,
    ) -> ApiState {
        ApiState { metrics }
    }
}

/// The router.
pub fn router(state: Arc<ApiState>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let s = state.clone();
            async move { s.metrics.render() }
        }),
    )
}
