//! Writes a generated log corpus and, optionally, its ground truth and manifest.
//!
//! ```text
//! cargo run --release --example gen_corpus -- --seed 1 --bytes 1G --out /tmp/corpus.log \
//!     [--truth /tmp/truth.json] [--manifest /tmp/manifest.json]
//! ```
//!
//! `--bytes` takes an optional `K`, `M` or `G` suffix (powers of 1024). The throughput goes
//! to stderr.

use std::fs::File;
use std::time::Instant;

use sentinel_corpus::{self as corpus, CorpusSpec};

const USAGE: &str = "usage: gen_corpus --seed N --bytes N[K|M|G] --out PATH \
                     [--truth PATH] [--manifest PATH]";

fn parse_bytes(text: &str) -> Option<u64> {
    let (digits, shift) = match text.as_bytes().last()? {
        b'K' | b'k' => (&text[..text.len() - 1], 10),
        b'M' | b'm' => (&text[..text.len() - 1], 20),
        b'G' | b'g' => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    };
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut seed, mut bytes, mut out, mut truth, mut manifest) = (None, None, None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(USAGE)?;
        match flag.as_str() {
            "--seed" => seed = Some(value.parse::<u64>()?),
            "--bytes" => bytes = Some(parse_bytes(&value).ok_or(USAGE)?),
            "--out" => out = Some(value),
            "--truth" => truth = Some(value),
            "--manifest" => manifest = Some(value),
            _ => return Err(USAGE.into()),
        }
    }
    let (Some(seed), Some(bytes), Some(out)) = (seed, bytes, out) else {
        return Err(USAGE.into());
    };
    let spec = CorpusSpec::new(seed, bytes);
    let start = Instant::now();
    let ground_truth = corpus::generate(&spec, File::create(&out)?)?;
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "{out}: {} bytes, {} lines, {} error lines ({} keys, {} fingerprints) in {secs:.2} s = \
         {:.0} MB/s",
        ground_truth.bytes,
        ground_truth.lines,
        ground_truth.error_lines,
        ground_truth.distinct_keys,
        ground_truth.distinct_fingerprints,
        ground_truth.bytes as f64 / secs / 1e6,
    );
    if let Some(path) = truth {
        std::fs::write(path, serde_json::to_string_pretty(&ground_truth)? + "\n")?;
    }
    if let Some(path) = manifest {
        std::fs::write(path, corpus::manifest_json(&spec, "pact_project") + "\n")?;
    }
    Ok(())
}
