//! The webhook body decoder on arbitrary bytes, under every content type and encoding:
//! never a panic, never more events than the limit, and a refusal always maps to a
//! client-error status.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sentinel::source::webhook::decode::{Limits, decode};

const TYPES: [Option<&str>; 5] = [
    Some("application/json"),
    Some("application/x-ndjson"),
    Some("text/plain"),
    None,
    Some("application/x-www-form-urlencoded"),
];
const ENCODINGS: [Option<&str>; 3] = [None, Some("gzip"), Some("deflate")];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let ct = TYPES[(selector & 7) as usize % TYPES.len()];
    let ce = ENCODINGS[(selector >> 3) as usize % ENCODINGS.len()];
    let limits = Limits::default()
        .with_max_events(100)
        .with_max_body_bytes(1 << 20);
    match decode(ct, ce, body, &limits) {
        Ok(events) => assert!(events.len() <= 100),
        Err(e) => assert!(matches!(e.status(), 400 | 413)),
    }
});
