//! Criterion benches for the ingest path, one group per stage: `scan` (the error-line
//! scanner, single thread, per kernel), `line_buffer` (framing), `fingerprint`, `aggregate`
//! (scan + fingerprint + attribution, no store) and `store_batch` (one redb commit).
//!
//! Every bench measures `Throughput::Bytes` and checks its result against the corpus's
//! ground truth, so a fast wrong answer fails instead of looking good.
//!
//! `cargo bench --bench scan` (add `-- --quick` for a short run). The corpus size can be set
//! with `SENTINEL_BENCH_BYTES` (default 64 MiB).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sentinel::aggregate::LineAggregator;
use sentinel::attribute::{AttributionStatus, LiveRules, Manifest, ManifestEntry, Severity};
use sentinel::scan::fingerprint::normalize_stretch_into;
use sentinel::scan::matcher::DEFAULT_ERROR_PATTERNS;
use sentinel::scan::{
    ErrorLine, Fingerprint, Fingerprinter, Kernel, LineReader, Scanner, ScannerBuilder, Sink,
};
use sentinel::store::{IncidentDelta, IngestBatch, Store};
use sentinel_corpus::{CorpusSpec, GroundTruth, generate, registered_component_ids};

struct Corpus {
    data: Vec<u8>,
    truth: GroundTruth,
    spec: CorpusSpec,
}

fn corpus() -> Corpus {
    let bytes = std::env::var("SENTINEL_BENCH_BYTES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64u64 << 20);
    let spec = CorpusSpec::new(42, bytes);
    let mut data = Vec::with_capacity(bytes as usize + (2 << 20));
    let truth = generate(&spec, &mut data).expect("generating into memory cannot fail");
    Corpus { data, truth, spec }
}

struct Count(u64);

impl Sink for Count {
    type Error = std::convert::Infallible;
    fn error_line(&mut self, _line: &ErrorLine<'_>) -> Result<bool, Self::Error> {
        self.0 += 1;
        Ok(true)
    }
}

fn kernels() -> Vec<Kernel> {
    [Kernel::Avx2, Kernel::Sse2, Kernel::Scalar]
        .into_iter()
        .filter(|k| {
            ScannerBuilder::new()
                .kernel(*k)
                .build(DEFAULT_ERROR_PATTERNS)
                .is_ok()
        })
        .collect()
}

fn bench_scan(c: &mut Criterion, corpus: &Corpus) {
    let mut g = c.benchmark_group("scan");
    g.throughput(Throughput::Bytes(corpus.data.len() as u64));
    for kernel in kernels() {
        let scanner = ScannerBuilder::new()
            .kernel(kernel)
            .build(DEFAULT_ERROR_PATTERNS)
            .unwrap();
        g.bench_function(BenchmarkId::new("prebuilt", format!("{kernel:?}")), |b| {
            b.iter(|| {
                let mut n = Count(0);
                let Ok(stats) = scanner.scan(black_box(&corpus.data), &mut n);
                assert_eq!(stats.error_lines, corpus.truth.error_lines);
                assert_eq!(n.0, corpus.truth.error_lines);
                assert_eq!(stats.lines, corpus.truth.lines);
            })
        });
    }
    g.bench_function("oneshot/Auto", |b| {
        b.iter(|| {
            let scanner = Scanner::new(DEFAULT_ERROR_PATTERNS).unwrap();
            let mut n = Count(0);
            let Ok(stats) = scanner.scan(black_box(&corpus.data), &mut n);
            assert_eq!(stats.error_lines, corpus.truth.error_lines);
        })
    });
    g.finish();
}

fn bench_line_buffer(c: &mut Criterion, corpus: &Corpus) {
    let mut g = c.benchmark_group("line_buffer");
    g.throughput(Throughput::Bytes(corpus.data.len() as u64));
    g.bench_function("regions_256k", |b| {
        b.iter(|| {
            let mut r = LineReader::with_capacity(black_box(&corpus.data[..]), 256 << 10, 1 << 20);
            let mut total = 0u64;
            while let Some(region) = r.next_region().unwrap() {
                total += region.bytes.len() as u64;
            }
            total += r.take_partial().len() as u64;
            assert_eq!(total, corpus.data.len() as u64);
        })
    });
    g.finish();
}

/// The corpus's error lines, as the scanner reports them.
fn error_lines(corpus: &Corpus) -> Vec<Vec<u8>> {
    struct Collect(Vec<Vec<u8>>);
    impl Sink for Collect {
        type Error = std::convert::Infallible;
        fn error_line(&mut self, line: &ErrorLine<'_>) -> Result<bool, Self::Error> {
            self.0.push(line.line().to_vec());
            Ok(true)
        }
    }
    let mut c = Collect(Vec::new());
    let _ = Scanner::new(DEFAULT_ERROR_PATTERNS)
        .unwrap()
        .scan(&corpus.data, &mut c);
    c.0
}

fn bench_fingerprint(c: &mut Criterion, corpus: &Corpus) {
    let lines = error_lines(corpus);
    let bytes: u64 = lines.iter().map(|l| l.len() as u64).sum();
    let mut g = c.benchmark_group("fingerprint");
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("error_lines", |b| {
        let mut fp = Fingerprinter::new();
        b.iter(|| {
            let mut seen = std::collections::HashSet::with_capacity(1 << 14);
            for l in &lines {
                seen.insert(fp.fingerprint(black_box(l)));
            }
            assert_eq!(seen.len() as u64, corpus.truth.distinct_fingerprints);
        })
    });
    // The same lines through the substitutions alone, keys not kept (the rule before
    // schema version 2): what keeping keys verbatim costs, measured in the same run.
    g.bench_function("error_lines_substitutions_only", |b| {
        let mut out = Vec::new();
        b.iter(|| {
            let mut seen = std::collections::HashSet::with_capacity(1 << 14);
            for l in &lines {
                normalize_stretch_into(black_box(l), &mut out);
                seen.insert(xxhash_rust::xxh3::xxh3_64(&out));
            }
            // Keys with digits fold together here, so there are fewer.
            assert!(seen.len() as u64 <= corpus.truth.distinct_fingerprints);
            assert!(!seen.is_empty());
        })
    });
    g.finish();
}

fn manifest(spec: &CorpusSpec) -> Arc<LiveRules> {
    let mut m = Manifest::default();
    for id in registered_component_ids(spec) {
        m.insert(ManifestEntry::new(&id));
    }
    LiveRules::with_manifest(m)
}

fn bench_aggregate(c: &mut Criterion, corpus: &Corpus) {
    let scanner = Scanner::new(DEFAULT_ERROR_PATTERNS).unwrap();
    let manifest = manifest(&corpus.spec);
    let mut g = c.benchmark_group("aggregate");
    g.throughput(Throughput::Bytes(corpus.data.len() as u64));
    g.bench_function("scan_fingerprint_attribute", |b| {
        b.iter(|| {
            let mut agg = LineAggregator::new(&manifest, Arc::from("bench"));
            let Ok(stats) = scanner.scan(black_box(&corpus.data), &mut agg);
            assert_eq!(stats.error_lines, corpus.truth.error_lines);
            assert_eq!(agg.counts().registered_lines, corpus.truth.registered_lines);
            let batch = agg.take_batch();
            assert_eq!(
                batch.incidents.len() as u64,
                corpus.truth.distinct_fingerprints
            );
        })
    });
    g.finish();
}

fn bench_store_batch(c: &mut Criterion) {
    const N: u64 = 1000;
    let sample = "ERROR [PACT:payment_processor:charge_card] card declined for order <n>".repeat(2);
    let make = |base: u64| {
        let mut batch = IngestBatch::new();
        for i in 0..N {
            // Real fingerprints are uniform hashes: hash (round, i) so ids do not collide.
            let fp = Fingerprint(xxhash_rust::xxh3::xxh3_64(
                &[base.to_le_bytes(), i.to_le_bytes()].concat(),
            ));
            batch.incidents.insert(
                fp,
                IncidentDelta::new(
                    fp,
                    3,
                    &sample,
                    AttributionStatus::Registered,
                    Severity::Medium,
                ),
            );
            batch.key_counts.insert(format!("PACT:c{}:m", i % 50), 3);
        }
        batch.totals.insert("lines", 1000 * N);
        batch
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("bench.redb")).unwrap();
    // This measures creating incidents: every round opens 1,000 more of one key, which the
    // cardinality guard's default (10,000 a key an hour) would soon fold into one overflow
    // incident instead.
    store.set_cardinality_guard(sentinel::store::CardinalityGuard::new(u64::MAX, 3600));
    let mut g = c.benchmark_group("store_batch");
    g.throughput(Throughput::Bytes(N * sample.len() as u64));
    let mut round = 0u64;
    g.bench_function("commit_1000_incidents", |b| {
        b.iter(|| {
            round += 1;
            let out = store.apply(&make(round), jiff::Timestamp::now()).unwrap();
            assert_eq!(out.created.len() + out.updated.len(), N as usize);
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    let corpus = corpus();
    bench_scan(c, &corpus);
    bench_line_buffer(c, &corpus);
    bench_fingerprint(c, &corpus);
    bench_aggregate(c, &corpus);
    bench_store_batch(c);
}

criterion_group!(group, benches);
criterion_main!(group);
