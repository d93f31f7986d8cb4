//! Webhook sources: HTTP POSTs of events from log shippers and CI. (Placeholder.)

use std::sync::Arc;

use crate::aggregate::writer::WriterHandle;
use crate::config::SourceConfig;
use crate::metrics::Metrics;

/// Memory budget of queued webhook requests.
#[derive(Debug, Default)]
pub struct IngestBudget {
    _p: (),
}

/// Why a webhook source could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("webhook setup")]
pub struct WebhookError;

/// The router of one webhook source.
///
/// # Errors
///
/// Bad auth settings.
pub fn router(
    _source: &SourceConfig,
    _default_error_patterns: &[String],
    _writer: WriterHandle,
    _metrics: Arc<Metrics>,
    _budget: Arc<IngestBudget>,
) -> Result<axum::Router, WebhookError> {
    Ok(axum::Router::new())
}
