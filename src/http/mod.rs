//! HTTP pieces every listener shares — the API and the webhook sources alike: serving with
//! limits and a graceful stop ([`serve()`], [`harden`]), the one error shape ([`ApiError`]),
//! and request authentication ([`auth`]: bearer tokens, HMAC signatures).

pub mod auth;
mod error;
mod serve;

pub use error::ApiError;
pub use serve::{
    HEADER_READ_TIMEOUT, MAX_CONNECTIONS, REQUEST_TIMEOUT, SHUTDOWN_GRACE, WRITE_STALL_TIMEOUT,
    harden, serve,
};
