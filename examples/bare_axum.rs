//! The baseline for the webhook benchmark (`bench/webhook.sh`): a bare axum handler that
//! reads the POST body and answers 200, on the same runtime settings as Sentinel's
//! (2 worker threads), so `wrk` measures what HTTP alone costs on this machine.
//!
//! ```text
//! cargo run --release --example bare_axum -- 127.0.0.1:9000
//! ```
#![allow(clippy::print_stdout)] // Prints its address for the script.

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9000".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let app = Router::new().fallback(post(|body: Bytes| async move {
            std::hint::black_box(body.len());
            "OK"
        }));
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        println!("listening on {}", listener.local_addr()?);
        axum::serve(listener, app).await
    })
}
