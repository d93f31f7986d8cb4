//! `sentinel serve`: the API alone (no sources), and the HTTP server's defences against
//! slow clients.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::harness::{Workspace, http};

#[test]
fn serve_without_sources_serves_the_api_alone() {
    let ws = Workspace::new();
    let mut d = ws.spawn(&["serve", "--host", "127.0.0.1", "--port", "0"]);
    let info = d.ready();
    assert!(info.webhooks.is_empty());
    let c = http();
    let r = c.get(info.api_url("/health")).send().expect("GET");
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = c
        .get(info.api_url("/status"))
        .send()
        .and_then(|r| r.json())
        .expect("status");
    assert_eq!(v["sources"], 0);
    assert_eq!(v["source_details"], serde_json::json!([]));
    let r = c.get(info.api_url("/incidents")).send().expect("GET");
    assert_eq!(r.status().as_u16(), 200);
    let status = d.term(Duration::from_secs(10));
    assert!(status.success(), "exit {status}");
}

#[test]
fn slow_header_senders_are_cut_off_and_do_not_block_others() {
    let ws = Workspace::new();
    let mut d = ws.spawn(&["serve", "--host", "127.0.0.1", "--port", "0"]);
    let info = d.ready();
    let addr = info.api.clone().expect("api address");
    // 50 clients that start a request and never finish its headers (slowloris).
    let mut slow: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).expect("connect");
            s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .expect("write");
            s
        })
        .collect();
    // A normal client is served meanwhile.
    let started = Instant::now();
    let r = http().get(info.api_url("/health")).send().expect("GET");
    assert_eq!(r.status().as_u16(), 200);
    assert!(started.elapsed() < Duration::from_secs(5));
    // The slow ones are closed once the header-read timeout (10 s) passes; the read
    // timeout is only a failure guard.
    let s = &mut slow[0];
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut buf = Vec::new();
    let closed = s.read_to_end(&mut buf);
    let waited = started.elapsed();
    assert!(
        closed.is_ok()
            || closed
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "{closed:?}"
    );
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(25),
        "closed after {waited:?}"
    );
    assert!(d.term(Duration::from_secs(10)).success());
}
