//! Throughput of the hot-path pieces this crate owns: line framing and fingerprinting.
//!
//! Run with `cargo run --release --example frame_throughput`. Prints MB/s for normalise+hash
//! over typical ~200-byte error lines (and, for reference, for the three `regex`
//! substitutions that define the normalisation), and GB/s for framing a 256 MiB in-memory
//! stream with the default `LineReader`.
#![allow(clippy::print_stdout)]

use std::hint::black_box;
use std::io::Cursor;
use std::time::Instant;

use regex::bytes::Regex;
use sentinel::scan::{Fingerprinter, LineReader};

/// Typical error lines, each around 200 bytes.
fn error_lines(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            format!(
                "2024-05-{:02}T12:{:02}:{:02}.{:03}Z ERROR [worker-{}] PACT:auth_module:login \
                 request {:08x}-1d2e-4f5a-8b9c-{:012x} failed after {}ms: upstream \
                 10.0.{}.{}:8443 returned 503 (trace {:016x}) user_id={}",
                1 + i % 28,
                i % 60,
                (i * 7) % 60,
                i % 1000,
                i % 16,
                i.wrapping_mul(2_654_435_761) as u32,
                i * 31,
                i % 5000,
                i % 256,
                (i * 3) % 256,
                (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                i * 13,
            )
            .into_bytes()
        })
        .collect()
}

fn main() {
    let lines = error_lines(20_000);
    let total: usize = lines.iter().map(Vec::len).sum();
    println!(
        "fingerprint: {} lines, mean {} bytes",
        lines.len(),
        total / lines.len()
    );

    // Best of several runs: the machine may be shared.
    let mut fp = Fingerprinter::new();
    let mut best = f64::MAX;
    let mut acc = 0u64;
    for _ in 0..7 {
        let t = Instant::now();
        for _ in 0..10 {
            for line in &lines {
                acc ^= fp.fingerprint(black_box(line)).0;
            }
        }
        best = best.min(t.elapsed().as_secs_f64() / 10.0);
    }
    black_box(acc);
    println!(
        "  one pass normalise + xxh3: {:8.1} MB/s  ({:.0} ns/line)",
        total as f64 / 1e6 / best,
        best * 1e9 / lines.len() as f64
    );

    let res = [
        r"(?-u)[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
        r"(?-u)[0-9a-fA-F]{8,}",
        r"(?-u)[0-9]+",
    ]
    .map(|re| Regex::new(re).expect("valid regex"));
    let mut best = f64::MAX;
    let mut acc = 0usize;
    for _ in 0..3 {
        let t = Instant::now();
        for line in &lines {
            let t1 = res[0].replace_all(black_box(line), &b"<uuid>"[..]);
            let t2 = res[1].replace_all(&t1, &b"<hex>"[..]);
            acc += res[2].replace_all(&t2, &b"<n>"[..]).len();
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    black_box(acc);
    println!(
        "  three regex substitutions: {:8.1} MB/s (reference)",
        total as f64 / 1e6 / best
    );

    // Framing: 256 MiB of log lines of 60..260 bytes.
    let mut block = Vec::with_capacity(1 << 20);
    let mut i = 0usize;
    while block.len() < (1 << 20) - 300 {
        let len = 60 + (i * 37) % 200;
        block.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, len));
        block.push(b'\n');
        i += 1;
    }
    let mut data = Vec::with_capacity(256 << 20);
    while data.len() + block.len() <= 256 << 20 {
        data.extend_from_slice(&block);
    }
    println!("framing: {} MiB in memory", data.len() >> 20);
    let mut best = f64::MAX;
    let mut regions = 0usize;
    for _ in 0..5 {
        let mut rdr = LineReader::new(Cursor::new(&data[..]));
        let t = Instant::now();
        let mut bytes = 0usize;
        regions = 0;
        while let Some(region) = rdr.next_region().expect("in-memory reads do not fail") {
            bytes += region.bytes.len();
            regions += 1;
        }
        best = best.min(t.elapsed().as_secs_f64());
        assert_eq!(bytes, data.len());
    }
    println!(
        "  LineReader (256 KiB reads): {:6.2} GB/s  ({} regions)",
        data.len() as f64 / 1e9 / best,
        regions
    );
}
