//! Single-thread throughput of the error-line scanner, per kernel.
//!
//! Generates ~256 MiB of realistic log text in memory (plain and JSON lines of 150-250 bytes,
//! ~2% error lines, lots of lowercase English with "error", "trace", "transaction", "panel",
//! "critique" in the noise so the prefilter sees false candidates, PACT keys on many lines),
//! then scans it with the default patterns under every kernel this CPU supports and prints
//! GB/s. Every run checks the error-line count against the count known from generation.
//!
//! ```text
//! cargo run --release --example scan_throughput [MiB [avx2|sse2|scalar|other]]
//! ```
//!
//! The optional second argument runs only one kernel (or only the other matching paths), for
//! profiling.
#![allow(clippy::print_stdout)] // A command-line report is the point of this example.

use std::cell::Cell;
use std::time::{Duration, Instant};

use sentinel::scan::matcher::{DEFAULT_ERROR_PATTERNS, from_fn};
use sentinel::scan::{Kernel, ScanStats, Scanner, ScannerBuilder};

/// xorshift64*: deterministic, fast, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// Common words of log messages, with "error", "trace", "transaction", "panel", "critique"
/// and friends mixed in: each of those is a false candidate for the prefilter (same folded
/// prefix as a pattern) that verification must reject.
const WORDS: &[&str] = &[
    "the",
    "request",
    "for",
    "user",
    "account",
    "was",
    "processed",
    "in",
    "with",
    "cache",
    "miss",
    "retrying",
    "after",
    "connection",
    "reset",
    "by",
    "peer",
    "upstream",
    "latency",
    "exceeded",
    "budget",
    "scheduled",
    "job",
    "completed",
    "successfully",
    "records",
    "batch",
    "queue",
    "depth",
    "is",
    "normal",
    "session",
    "expired",
    "token",
    "refreshed",
    "handler",
    "returned",
    "status",
    "payload",
    "validated",
    "against",
    "schema",
    "of",
    "to",
    "and",
    "a",
    "from",
    "on",
    "at",
    "new",
    "old",
    "value",
    "key",
    "node",
    "cluster",
    "shard",
    "replica",
    "primary",
    "elected",
    "lease",
    "renewed",
    "timeout",
    "ms",
    "bytes",
    "sent",
    "received",
    "client",
    "server",
    "opened",
    "closed",
    "stream",
    "offset",
    "partition",
    "consumer",
    "lag",
    "commit",
    "rollback",
    "handled",
    "recovered",
    "gracefully",
    "metrics",
    "flushed",
    "disk",
    "usage",
    "memory",
    "pool",
    "size",
    "thread",
    "worker",
    "started",
    "stopped",
    "config",
    "reloaded",
    "feature",
    "flag",
    "enabled",
    "disabled",
    "route",
    "matched",
    "query",
    "rows",
    "index",
    "scan",
    "plan",
    "chosen",
    "warm",
    "cold",
    "hit",
    "ratio",
    "order",
    "item",
    "shipped",
    "invoice",
    "paid",
    "refund",
    "issued",
    "email",
    "queued",
    "delivered",
    "error",
    "errors",
    "trace",
    "traced",
    "transaction",
    "panel",
    "critique",
    "fatalism",
    "traffic",
    "transfer",
    "critical_path",
    "level",
    "pane",
    "fat",
];
const COMPONENTS: &[&str] = &[
    "billing",
    "checkout",
    "auth_svc",
    "inventory",
    "search",
    "panel_ui",
    "tx_engine",
];
const METHODS: &[&str] = &[
    "charge", "refund", "login", "reserve", "query", "render", "commit",
];
const PLAIN_LEVELS: &[&str] = &["INFO", "DEBUG", "WARN", "TRACE"];
const JSON_LEVELS: &[&str] = &["info", "debug", "warn", "trace"];

/// Appends one line (with `\n`); returns whether it is an error line.
fn line(rng: &mut Rng, out: &mut Vec<u8>) -> bool {
    let target = 150 + rng.below(101);
    let start = out.len();
    let error = rng.below(100) < 2;
    let json = rng.below(100) < 40;
    let ts = format!(
        "2024-05-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        1 + rng.below(28),
        rng.below(24),
        rng.below(60),
        rng.below(60),
        rng.below(1000)
    );
    let pact = (rng.below(100) < 60)
        .then(|| format!("PACT:{}:{}", rng.pick(COMPONENTS), rng.pick(METHODS)));
    let level = if error {
        if json { "error" } else { "ERROR" }
    } else if json {
        rng.pick(JSON_LEVELS)
    } else {
        rng.pick(PLAIN_LEVELS)
    };
    let mut msg = String::new();
    // Leave room for the fixed parts (~100 bytes).
    while msg.len() + 100 < target {
        msg.push_str(rng.pick(WORDS));
        msg.push(' ');
    }
    let text = if json {
        format!(
            r#"{{"ts":"{ts}","level":"{level}","component":"{}","msg":"{}","pact":"{}"}}"#,
            rng.pick(COMPONENTS),
            msg.trim_end(),
            pact.as_deref().unwrap_or("-")
        )
    } else {
        format!(
            "{ts} {level:<5} [worker-{}] {} {}",
            rng.below(64),
            msg.trim_end(),
            pact.as_deref().unwrap_or("")
        )
    };
    out.extend_from_slice(text.as_bytes());
    out.push(b'\n');
    debug_assert!(out.len() - start < 400);
    error
}

fn generate(bytes: usize) -> (Vec<u8>, u64) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::with_capacity(bytes + 512);
    let mut errors = 0;
    while out.len() < bytes {
        errors += u64::from(line(&mut rng, &mut out));
    }
    (out, errors)
}

/// CPU time of this thread (Linux: `/proc/thread-self/schedstat`, updated at scheduler ticks,
/// hence the long timings), so that other processes competing for the cores do not distort
/// the numbers; wall-clock time elsewhere.
struct Clock {
    wall: Instant,
    cpu: Option<u64>,
}

impl Clock {
    fn cpu_ns() -> Option<u64> {
        let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
        stat.split_whitespace().next()?.parse().ok()
    }

    fn start() -> Clock {
        Clock {
            cpu: Clock::cpu_ns(),
            wall: Instant::now(),
        }
    }

    fn elapsed(&self) -> Duration {
        let wall = self.wall.elapsed();
        match (self.cpu, Clock::cpu_ns()) {
            (Some(a), Some(b)) => Duration::from_nanos(b.saturating_sub(a)),
            _ => wall,
        }
    }
}

/// Scans `data` `REPS` times per timing (so that one timing lasts long enough for the
/// tick-granular CPU clock), best of `RUNS` timings; returns the stats of one scan and the
/// duration of one scan.
fn measure(scanner: &Scanner, data: &[u8]) -> (ScanStats, Duration) {
    const RUNS: u32 = 3;
    const REPS: u32 = 5;
    let mut best = Duration::MAX;
    let mut stats = ScanStats::default();
    for _ in 0..RUNS {
        let mut keys = 0u64;
        let t = Clock::start();
        for _ in 0..REPS {
            stats = scanner
                .scan(
                    data,
                    &mut from_fn(|l| {
                        keys += u64::from(l.first_key().is_some());
                        true
                    }),
                )
                .unwrap_or_else(|e| match e {});
        }
        best = best.min(t.elapsed() / REPS);
        std::hint::black_box(keys);
    }
    (stats, best)
}

fn gbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mib: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => 256,
    };
    let only = std::env::args().nth(2).map(|a| a.to_ascii_lowercase());
    let wanted = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let t = Instant::now();
    let (data, expected_errors) = generate(mib << 20);
    let lines = memchr::memchr_iter(b'\n', &data).count() as u64;
    println!(
        "generated {:.1} MiB, {lines} lines, {expected_errors} error lines ({:.2}%) in {:.1?}",
        data.len() as f64 / (1 << 20) as f64,
        100.0 * expected_errors as f64 / lines as f64,
        t.elapsed()
    );

    // Baselines: how fast can this machine walk the buffer at all?
    let t = Clock::start();
    let absent = memchr::memmem::find(&data, b"\x01\x02never").is_some();
    println!(
        "baseline: memmem of an absent needle {:.2} GB/s ({absent})",
        gbps(data.len(), t.elapsed())
    );

    let failures = Cell::new(0u32);
    let report = |name: &str, scanner: &Scanner, expect_errors: Option<u64>| {
        let (stats, d) = measure(scanner, &data);
        let ok = stats.lines == lines
            && stats.long_lines == 0
            && expect_errors.is_none_or(|e| e == stats.error_lines);
        failures.set(failures.get() + u32::from(!ok));
        println!(
            "{name:<42} {:>6.2} GB/s  error lines {:>7}  {}",
            gbps(data.len(), d),
            stats.error_lines,
            if ok { "ok" } else { "COUNT MISMATCH" }
        );
    };

    println!(
        "default patterns ({} patterns):",
        DEFAULT_ERROR_PATTERNS.len()
    );
    for kernel in [Kernel::Auto, Kernel::Avx2, Kernel::Sse2, Kernel::Scalar] {
        let name = format!("{kernel:?}").to_ascii_lowercase();
        if only.is_some() && !wanted(&name) {
            continue;
        }
        match ScannerBuilder::new()
            .kernel(kernel)
            .build(DEFAULT_ERROR_PATTERNS)
        {
            Ok(s) => report(
                &format!("  {kernel:?} (runs {:?})", s.kernel()),
                &s,
                Some(expected_errors),
            ),
            Err(e) => println!("  {kernel:?}: {e}"),
        }
    }

    if !wanted("other") {
        return finish(failures.get());
    }
    println!("small regions, default patterns, Auto kernel:");
    let scanner = Scanner::new(DEFAULT_ERROR_PATTERNS)?;
    for region_size in [64 << 10, 4 << 10] {
        let mut best = Duration::MAX;
        let mut total = ScanStats::default();
        for _ in 0..3 {
            let t = Clock::start();
            total = ScanStats::default();
            let mut rest = &data[..];
            while !rest.is_empty() {
                // Cut after the last newline within `region_size`, as the framing layer does.
                let cut = memchr::memrchr(b'\n', &rest[..region_size.min(rest.len())])
                    .map_or(rest.len(), |i| i + 1);
                let stats = scanner
                    .scan(&rest[..cut], &mut from_fn(|_| true))
                    .unwrap_or_else(|e| match e {});
                total.add(&stats);
                rest = &rest[cut..];
            }
            best = best.min(t.elapsed());
        }
        let ok = total.error_lines == expected_errors && total.lines == lines;
        failures.set(failures.get() + u32::from(!ok));
        println!(
            "  {:<40} {:>6.2} GB/s  error lines {:>7}  {}",
            format!("scan() per {} KiB region", region_size >> 10),
            gbps(data.len(), best),
            total.error_lines,
            if ok { "ok" } else { "COUNT MISMATCH" }
        );
    }
    let t = Clock::start();
    let mut found = 0;
    for line in data.split(|&b| b == b'\n') {
        found += u64::from(scanner.is_error_line(line));
    }
    let d = t.elapsed();
    let ok = found == expected_errors;
    failures.set(failures.get() + u32::from(!ok));
    println!(
        "  {:<40} {:>6.2} GB/s  error lines {:>7}  {} ({:.0} ns per line)",
        "is_error_line() per line",
        gbps(data.len(), d),
        found,
        if ok { "ok" } else { "COUNT MISMATCH" },
        d.as_nanos() as f64 / lines as f64
    );

    println!("other paths, Auto kernel:");
    let cs_only = [
        "ERROR",
        "CRITICAL",
        "FATAL",
        "Traceback",
        "panicked at",
        r#""level":"error""#,
    ];
    report(
        "  case-sensitive literals (aho-corasick)",
        &Scanner::new(cs_only)?,
        Some(expected_errors),
    );
    let mut best = Duration::MAX;
    let mut ci_lines = 0;
    for _ in 0..2 {
        let t = Clock::start();
        ci_lines = aho_corasick_ci(&data)?;
        best = best.min(t.elapsed());
    }
    println!(
        "  {:<40} {:>6.2} GB/s  error lines {:>7}  (reference)",
        "aho-corasick ascii_case_insensitive",
        gbps(data.len(), best),
        ci_lines
    );
    let regex = [r"\bERROR\b", r#"(?i)"level":\s*"(error|fatal|critical)""#];
    report(
        "  regex patterns",
        &Scanner::new(regex)?,
        Some(expected_errors),
    );
    // Same shape as the defaults (5 case-sensitive prefixes, 1 case-insensitive), no
    // candidates: the cost of the vector pass alone.
    let absent = ["QQA", "QQB", "QQC", "QQD", "QQE", "(?i)q0z"];
    report(
        "  6 never-matching prefixes (kernel only)",
        &Scanner::new(absent)?,
        Some(0),
    );
    report(
        "  no patterns (line counting only)",
        &Scanner::new(Vec::<&str>::new())?,
        Some(0),
    );

    finish(failures.get())
}

fn finish(failures: u32) -> Result<(), Box<dyn std::error::Error>> {
    if failures > 0 {
        return Err(format!("{failures} run(s) with wrong counts").into());
    }
    Ok(())
}

/// The design alternative the prefilter replaced: aho-corasick over the default patterns with
/// `ascii_case_insensitive` (no packed prefilter then), marking a line per hit and resuming
/// after its end. Returns the number of error lines (over-long lines are not checked; the
/// generated data has none).
fn aho_corasick_ci(data: &[u8]) -> Result<u64, Box<dyn std::error::Error>> {
    use aho_corasick::{AhoCorasick, Input, MatchKind};
    // Case-sensitive patterns must stay exact: only the JSON ones are case-insensitive, so
    // a line is counted only if an exact or a case-insensitive hit verifies.
    let ac = AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostFirst)
        .ascii_case_insensitive(true)
        .build(
            DEFAULT_ERROR_PATTERNS
                .iter()
                .map(|p| p.trim_start_matches("(?i)")),
        )?;
    let mut pos = 0;
    let mut lines = 0;
    while let Some(m) = ac.find(Input::new(data).span(pos..data.len())) {
        let pattern = DEFAULT_ERROR_PATTERNS[m.pattern().as_usize()];
        let exact = pattern.starts_with("(?i)") || &data[m.range()] == pattern.as_bytes();
        let end = memchr::memchr(b'\n', &data[m.end()..]).map_or(data.len(), |i| m.end() + i);
        if exact {
            lines += 1;
            pos = end + 1;
        } else {
            pos = m.start() + 1;
        }
        if pos >= data.len() {
            break;
        }
    }
    Ok(lines)
}
