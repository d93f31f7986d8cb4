//! Fuzzes `Scanner::scan`: arbitrary bytes are scanned under every kernel this CPU supports,
//! and every result (error-line offsets and texts, PACT keys, statistics, early stop) must
//! equal a naive oracle: split on `\n`, skip over-long lines, match each line with a
//! `RegexSet` (Unicode off), extract keys with the reference regex.
//!
//! The first input byte picks the pattern set (the defaults use the SIMD prefilter; the
//! others exercise aho-corasick and the regex path), `max_line_bytes` and an early stop.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use regex::bytes::{Regex, RegexSet, RegexSetBuilder};
use sentinel::scan::matcher::{DEFAULT_ERROR_PATTERNS, from_fn};
use sentinel::scan::{ErrorLine, Kernel, ScanStats, Scanner, ScannerBuilder};

const SETS: [&[&str]; 3] = [
    DEFAULT_ERROR_PATTERNS,
    &["ERROR", "FATAL", "PACT:", "Traceback"],
    &[
        "(?i)error",
        "CRITICAL",
        r"^\d+ ERR",
        r"PACT:\w+$",
        r"\bfatal\b",
    ],
];
const MAXES: [usize; 4] = [64, 100, 1000, 1 << 20];

struct Setup {
    oracle: RegexSet,
    /// `scanners[max][kernel]`.
    scanners: Vec<Vec<Scanner>>,
}

static SETUPS: LazyLock<Vec<Setup>> = LazyLock::new(|| {
    SETS.iter()
        .map(|patterns| Setup {
            oracle: RegexSetBuilder::new(*patterns)
                .unicode(false)
                .build()
                .expect("oracle patterns compile"),
            scanners: MAXES
                .iter()
                .map(|&max| {
                    Kernel::available()
                        .map(|k| {
                            ScannerBuilder::new()
                                .kernel(k)
                                .max_line_bytes(max)
                                .build(*patterns)
                                .expect("patterns compile")
                        })
                        .collect()
                })
                .collect(),
        })
        .collect()
});

static KEY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new("PACT:[a-zA-Z0-9_]+:[a-zA-Z0-9_]+").expect("valid regex"));

type Found = (usize, Vec<u8>, Vec<Vec<u8>>);

fn oracle(set: &RegexSet, region: &[u8], max: usize, stop: Option<u64>) -> (Vec<Found>, ScanStats) {
    let mut found = Vec::new();
    let mut stats = ScanStats::default();
    let mut pos = 0;
    while pos < region.len() {
        let end = memchr_nl(&region[pos..]).map_or(region.len(), |i| pos + i);
        let raw = &region[pos..end];
        stats.lines += 1;
        if raw.len() > max {
            stats.long_lines += 1;
        } else if set.is_match(raw) {
            let line = raw.strip_suffix(b"\r").unwrap_or(raw).to_vec();
            let keys = KEY
                .find_iter(&line)
                .map(|m| m.as_bytes().to_vec())
                .collect();
            found.push((pos, line, keys));
            stats.error_lines += 1;
            if Some(stats.error_lines) == stop {
                stats.bytes = (end + 1).min(region.len()) as u64;
                return (found, stats);
            }
        }
        pos = end + 1;
    }
    stats.bytes = region.len() as u64;
    (found, stats)
}

fn memchr_nl(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

fn scan(scanner: &Scanner, region: &[u8], stop: Option<u64>) -> (Vec<Found>, ScanStats) {
    let mut found = Vec::new();
    let stats = scanner
        .scan(
            region,
            &mut from_fn(|l: &ErrorLine<'_>| {
                let keys = l.keys().map(|k| k.as_bytes().to_vec()).collect();
                found.push((l.offset(), l.line().to_vec(), keys));
                Some(found.len() as u64) != stop
            }),
        )
        .unwrap_or_else(|e| match e {});
    (found, stats)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cfg, region)) = data.split_first() else {
        return;
    };
    let setup = &SETUPS[usize::from(cfg & 3) % SETS.len()];
    let max_index = usize::from((cfg >> 2) & 3);
    let stop = match cfg >> 4 {
        0..=7 => None,
        n => Some(u64::from(n - 7)),
    };
    let want = oracle(&setup.oracle, region, MAXES[max_index], stop);
    for scanner in &setup.scanners[max_index] {
        let got = scan(scanner, region, stop);
        assert_eq!(got, want, "kernel {:?}", scanner.kernel());
        // The convenience API agrees with a full scan.
        if !region.contains(&b'\n') {
            assert_eq!(scanner.is_error_line(region), !want.0.is_empty());
        }
    }
});
