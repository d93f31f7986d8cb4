//! Throughput of the hot-path pieces this crate owns: line framing and fingerprinting.
//!
//! Run with `cargo run --release --example frame_throughput`. Prints MB/s for normalise+hash
//! over typical ~200-byte error lines (and, for reference, for the three `regex`
//! substitutions that define the normalisation), over the error lines of a generated corpus
//! (short ones, and the 8-64 KiB JSON payload lines that dominate fingerprinting time) and
//! over hand-made long lines (hex dumps, a stack trace, English text), and GB/s for framing a
//! 256 MiB in-memory stream with the default `LineReader`.
#![allow(clippy::print_stdout)]

use std::hint::black_box;
use std::io::Cursor;
use std::time::Instant;

use regex::bytes::Regex;
use sentinel::scan::{Fingerprinter, LineReader};
use sentinel_corpus::{CorpusSpec, generate};

/// The corpus's error-line rule (see `sentinel_corpus`).
const ERROR_PATTERN: &str =
    r#"(?-u)ERROR|CRITICAL|FATAL|Traceback|panicked at|(?i:"level": ?"(?:error|fatal|critical)")"#;

/// The error lines of a generated 48 MiB corpus (seed 1), split into lines under 8 KiB and
/// lines of 8 KiB or more.
fn corpus_error_lines() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut data = Vec::with_capacity(50 << 20);
    generate(&CorpusSpec::new(1, 48 << 20), &mut data).expect("writing to a Vec cannot fail");
    let error = Regex::new(ERROR_PATTERN).expect("valid regex");
    let (mut short, mut long) = (Vec::new(), Vec::new());
    for line in data.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > 1 << 20 || !error.is_match(line) {
            continue;
        }
        if line.len() < 8 << 10 {
            short.push(line.to_vec());
        } else {
            long.push(line.to_vec());
        }
    }
    (short, long)
}

/// Deterministic long lines other than the corpus's payloads: hex dumps (spaced bytes and
/// one contiguous run), a Java stack trace joined on one line, English-like text with ids,
/// and JSON records with two UUIDs each.
fn other_long_lines() -> Vec<Vec<u8>> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut spaced = b"ERROR bad frame, dump:".to_vec();
    let mut contiguous = b"ERROR bad frame, raw=".to_vec();
    for k in 0..4096u32 {
        if k % 16 == 0 {
            spaced.extend_from_slice(format!(" {:08x}:", k * 16).as_bytes());
        }
        let b = next() as u8;
        spaced.extend_from_slice(format!(" {b:02x}").as_bytes());
        contiguous.extend_from_slice(format!("{b:02x}").as_bytes());
    }
    let mut trace = b"ERROR java.lang.IllegalStateException: pool exhausted".to_vec();
    let mut text = b"ERROR replay failed:".to_vec();
    let mut uuids = b"ERROR batch failed: [".to_vec();
    let words = [
        "the", "request", "was", "denied", "because", "cache", "failed", "decode", "of", "header",
        "after", "retry", "backoff", "user", "session", "closed",
    ];
    for k in 0..400u64 {
        let r = next();
        trace.extend_from_slice(
            format!(
                "\\n\\tat com.example.svc.Handler{}.process(Handler{}.java:{})",
                r % 97,
                r % 97,
                r % 2000
            )
            .as_bytes(),
        );
        for j in 0..8 {
            text.push(b' ');
            text.extend_from_slice(words[((r >> (4 * j)) % 16) as usize].as_bytes());
        }
        text.extend_from_slice(format!(" id={} at +{}ms;", r % 100_000, k * 3).as_bytes());
        let uuid = |v: u128| {
            let h = format!("{v:032x}");
            format!(
                "{}-{}-{}-{}-{}",
                &h[..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..]
            )
        };
        let (a, b) = (
            u128::from(r) << 64 | u128::from(next()),
            u128::from(next()) << 17,
        );
        uuids.extend_from_slice(
            format!(
                r#"{{"id":"{}","parent":"{}","n":{}}},"#,
                uuid(a),
                uuid(b),
                r % 1_000_000
            )
            .as_bytes(),
        );
    }
    vec![spaced, contiguous, trace, text, uuids]
}

/// Best-of-`rounds` MB/s of fingerprinting every line of `lines` `reps` times: each line
/// `reps` times in a row when `hot` (as `sentinel scan` does, right after its scanner read
/// the line), else round-robin over all of them (the lines come from memory or L3).
fn fingerprint_mbps(lines: &[Vec<u8>], rounds: usize, reps: usize, hot: bool) -> f64 {
    let total: usize = lines.iter().map(Vec::len).sum();
    let mut fp = Fingerprinter::new();
    let mut best = f64::MAX;
    let mut acc = 0u64;
    for _ in 0..rounds {
        let t = Instant::now();
        if hot {
            for line in lines {
                for _ in 0..reps {
                    acc ^= fp.fingerprint(black_box(line)).0;
                }
            }
        } else {
            for _ in 0..reps {
                for line in lines {
                    acc ^= fp.fingerprint(black_box(line)).0;
                }
            }
        }
        best = best.min(t.elapsed().as_secs_f64() / reps as f64);
    }
    black_box(acc);
    total as f64 / 1e6 / best
}

fn describe(what: &str, lines: &[Vec<u8>]) {
    let total: usize = lines.iter().map(Vec::len).sum();
    let reps = (64 << 20) / total.max(1) + 1;
    println!(
        "  {what}: {} lines, mean {} bytes: {:8.1} MB/s hot, {:8.1} MB/s round-robin",
        lines.len(),
        total / lines.len().max(1),
        fingerprint_mbps(lines, 7, reps, true),
        fingerprint_mbps(lines, 7, reps, false),
    );
}

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

    println!(
        "fingerprint (normalise + xxh3) of corpus error lines and other long lines \
         (hot: each line repeatedly; round-robin: all lines in turn):"
    );
    let (short, long) = corpus_error_lines();
    describe("corpus error lines < 8 KiB", &short);
    describe("corpus error lines 8-64 KiB", &long);
    let other = other_long_lines();
    for (what, line) in [
        "spaced hex dump",
        "contiguous hex",
        "stack trace",
        "text with ids",
        "JSON with UUIDs",
    ]
    .iter()
    .zip(&other)
    {
        describe(what, std::slice::from_ref(line));
    }

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
