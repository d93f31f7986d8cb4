//! Serving HTTP: hyper (HTTP/1.1) with a header-read timeout, a connection cap, graceful
//! shutdown, and the [`harden`] layers (panics and slow handlers become JSON errors).
//!
//! Why not `axum::serve`: it has no header-read timeout (a slowloris client holds a task and
//! a socket forever) and no connection cap. Here:
//!
//! - a client must send its request headers within [`HEADER_READ_TIMEOUT`];
//! - at most [`MAX_CONNECTIONS`] connections are served at once; beyond that the accept
//!   loop waits for one to close, and new clients wait in the kernel's listen backlog
//!   (bounded by the OS) instead of costing memory here;
//! - a handler that panics answers 500 and the daemon carries on; a request that takes
//!   longer than [`REQUEST_TIMEOUT`] (body reading included) answers 408;
//! - on shutdown the listener closes at once, in-flight requests get [`SHUTDOWN_GRACE`] to
//!   finish, and keep-alive connections are closed after their current request.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tower_http::catch_panic::CatchPanicLayer;

use super::ApiError;

/// How long a client may take to send its request headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once, per listener.
pub const MAX_CONNECTIONS: usize = 1024;
/// How long in-flight requests may take to finish once shutdown began.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// The longest a request may take, reading its body included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection whose writes make no progress this long (its client stopped reading: a
/// stalled event stream, a hung script) is closed.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Adds the layers every Sentinel router gets: a handler panic answers 500 with a JSON
/// error (and never takes the daemon down), and a request slower than `timeout` answers
/// 408 with a JSON error.
pub fn harden(router: Router, timeout: Duration) -> Router {
    router
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| time_limit(req, next, timeout),
        ))
        .layer(CatchPanicLayer::custom(panic_response))
}

async fn time_limit(req: Request, next: Next, timeout: Duration) -> Response {
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!("the request took longer than {} s", timeout.as_secs()),
        )
        .into_response(),
    }
}

fn panic_response(_payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    // The payload may quote request data: it is not logged or returned.
    tracing::error!("a request handler panicked; answered 500");
    ApiError::internal("internal error").into_response()
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets in-flight requests
/// finish for up to [`SHUTDOWN_GRACE`]. See the module docs for the limits.
///
/// # Errors
///
/// An accept error that is not about one connection or a temporary shortage of file
/// descriptors or memory.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_capped(listener, router, shutdown, MAX_CONNECTIONS).await
}

async fn serve_capped(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    max_connections: usize,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    let result = loop {
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break Ok(()),
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break Ok(()), // never closed
            },
        };
        let stream = tokio::select! {
            biased;
            () = &mut shutdown => break Ok(()),
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) if is_resource_error(&e) => {
                    tracing::warn!(error = %e, "accept failed; backing off");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => break Err(e),
            },
        };
        let _ = stream.set_nodelay(true);
        let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
        stream.set_write_timeout(Some(WRITE_STALL_TIMEOUT));
        let conn = http.serve_connection(
            TokioIo::new(Box::pin(stream)),
            TowerToHyperService::new(router.clone()),
        );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // Errors here are one client's (reset, timeout, bad request): nothing to do.
            let _ = conn.await;
            drop(permit);
        });
    };
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("requests still running after the shutdown grace; closing them");
        }
    }
    result
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    )
}

fn is_resource_error(e: &std::io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM: wait for descriptors or memory to come back.
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_panicking_handler_answers_500_json() {
        let app = harden(
            Router::new().route(
                "/boom",
                get(|| async {
                    if true {
                        panic!("boom");
                    }
                    "never"
                }),
            ),
            REQUEST_TIMEOUT,
        );
        let resp = app
            .oneshot(Request::get("/boom").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "internal");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_handler_answers_408_json() {
        let app = harden(
            Router::new().route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    "late"
                }),
            ),
            Duration::from_secs(30),
        );
        let resp = app
            .oneshot(Request::get("/slow").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::REQUEST_TIMEOUT);
    }

    /// Sends one keep-alive request on `s` and reads its (small) answer.
    async fn request(s: &mut tokio::net::TcpStream) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0; 1024];
        let n = s.read(&mut buf).await.unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[tokio::test]
    async fn connections_past_the_cap_wait_for_a_free_slot() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/", get(|| async { "ok" }));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_capped(
            listener,
            app,
            async {
                let _ = rx.await;
            },
            1,
        ));
        let mut first = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(request(&mut first).await.starts_with("HTTP/1.1 200"));
        // The second connection is accepted by the kernel but not served while the first
        // (kept alive) holds the only slot. The timeout only bounds the negative check.
        let mut second = tokio::net::TcpStream::connect(addr).await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(300), request(&mut second)).await;
        assert!(waiting.is_err(), "served past the cap");
        drop(first);
        let mut buf = vec![0; 1024];
        use tokio::io::AsyncReadExt;
        let n = tokio::time::timeout(Duration::from_secs(10), second.read(&mut buf))
            .await
            .expect("served once the slot is free")
            .unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        tx.send(()).unwrap();
        drop(second);
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn serve_stops_on_shutdown_and_answers_until_then() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new().route("/", get(|| async { "ok" }));
        let server = tokio::spawn(serve(listener, app, async {
            let _ = rx.await;
        }));
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        assert!(
            out.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&out)
        );
        // A kept-alive connection that served a request is closed by the shutdown. (Checking
        // that a new connect is refused would be flaky: a test running beside this one may
        // bind the freed port.)
        let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0; 1024];
        let n = idle.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        tx.send(()).unwrap();
        server.await.unwrap().unwrap();
        let closed = tokio::time::timeout(Duration::from_secs(10), idle.read(&mut buf))
            .await
            .expect("the kept-alive connection is closed at shutdown");
        assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    }
}
