//! Deterministic test-corpus generator with exact ground truth.
//!
//! [`generate`] writes a realistic, seeded log corpus and returns the [`GroundTruth`] of exactly
//! the bytes it wrote: how many lines, error lines, long lines, PACT-keyed lines, registered /
//! unregistered / unattributed lines, per-key error counts and distinct fingerprints Sentinel
//! must report for it. Tests, benches and fixtures assert against that truth.
//!
//! # Why an independent oracle
//!
//! The truth is not produced by Sentinel's scanner (that would only test the scanner against
//! itself). It comes from [`Oracle`], a deliberately naive second implementation of the same
//! semantics written with the `regex` crate, one line at a time. The generator feeds every
//! line it writes to the oracle, so the truth is exact by construction, whatever the content
//! happens to be (a random base64 blob that spells `ERROR` is an error line, and counted).
//! The oracle is public, so tests can also compute the truth of any bytes of their own.
//!
//! # Semantics the oracle implements (Sentinel's defaults)
//!
//! - Lines are split on `\n`. A final line without `\n` is a line if it is non-empty. A trailing
//!   `\r` is stripped before matching and fingerprinting. `lines` counts every line, long ones
//!   included.
//! - A line longer than `max_line_bytes` (default [`DEFAULT_MAX_LINE_BYTES`], 1 MiB), measured
//!   without its `\n` (a `\r` counts), is a *long line*: counted in `long_lines`, never an error
//!   line, never looked into. The generator never writes a line within 1 KiB of that threshold,
//!   so whether `\r` counts never matters for a generated corpus.
//! - An *error line* contains, anywhere, one of the case-sensitive literals `ERROR`,
//!   `CRITICAL`, `FATAL`, `Traceback`, `panicked at`, or one of the ASCII-case-insensitive
//!   literals `"level":"error"`, `"level":"fatal"`, `"level":"critical"` and the same three
//!   with one space after the colon (`"level": "error"` ...).
//! - PACT keys are the non-overlapping leftmost matches of `PACT:[a-zA-Z0-9_]+:[a-zA-Z0-9_]+`.
//!   On an error line the first key attributes the line, and every *distinct* key on it adds
//!   one to `error_key_counts[key]`. Keys on non-error lines count for nothing.
//! - Attribution of `PACT:a:b`: registered if `a` is a registered component id, else registered
//!   if `b` is (Pact's preamble form `PACT:<hash6>:<component_id>`), else unregistered. An error
//!   line without a key is unattributed. So `error_lines = keyed_lines + unattributed_lines` and
//!   `keyed_lines = registered_lines + unregistered_lines`.
//! - The fingerprint of an error line keeps its PACT keys verbatim and, in each stretch
//!   between them, replaces, in this order, UUIDs by `<uuid>`, runs of 8 or more hex digits
//!   by `<hex>`, runs of decimal digits by `<n>`, and hashes the result with xxh3-64.
//!   `distinct_fingerprints` counts distinct hashes over all error lines, and
//!   `first_key_counts` the error lines each key attributes (as their first key).
//!
//! # What a corpus contains
//!
//! About 50 components with a handful of methods each (`PACT:payment_processor:charge_card`),
//! the last few of them unregistered, and sibling pairs (`PACT:ledger_writer_v1:…` and
//! `PACT:ledger_writer_v2:…`) whose lines differ only in the key; six timestamp and line layouts (ISO 8601, Python
//! `logging`, syslog, Go, logback, Monolog); plain-text and JSON lines; about 2% error lines
//! drawn from several hundred error templates (each key has four "usual" errors with a few
//! variable parts, so repeats fold into a few fingerprints), errors without keys (Postgres,
//! MySQL, supervisors), keys of unregistered components, Pact preamble keys
//! `[PACT:<hash6>:<component_id>]`, lines with two or three keys, malformed keys, Java stack
//! traces, Python tracebacks and Rust panics; noise lines full of lowercase English and near
//! misses (`errors=0`, `critical_path`, `Tracer`, `"log_level":"error"`, `ERRO[0001]`,
//! `level=error`, nginx `[error]`, Go panics); 8-64 KiB lines, a configurable number of lines
//! over `max_line_bytes` (some containing `ERROR`), invalid UTF-8 and NUL bytes, CRLF endings
//! and, depending on the seed, no newline at the very end.
//!
//! # Determinism
//!
//! Everything derives from [`CorpusSpec::seed`] through a xoshiro256** generator seeded by
//! SplitMix64, both implemented here, and integer / IEEE-754 arithmetic only, so a spec gives
//! the same bytes on every machine and build. Changing the generator changes the bytes:
//! regenerate the committed fixtures with `cargo run --example gen_fixtures` (a unit test
//! fails while they are stale).
//!
//! The `<hash6>` of the Pact preamble key is **not** `sha256(component_id)[:6]` as Pact
//! computes it (no SHA-256 implementation is a dependency) but the top 24 bits of
//! `xxh3_64(component_id)` in hex. Sentinel's attribution never checks the hash: it falls back
//! to the second segment whenever the first is not a registered id, which is all a corpus
//! needs to exercise.

pub mod cardinality;

use std::collections::{BTreeMap, HashSet};
use std::io::{self, BufWriter, Write};

use regex::bytes::{NoExpand, Regex, RegexBuilder};
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

/// Sentinel's default maximum line length in bytes (1 MiB), without the `\n`.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1 << 20;

/// Capacity of the output buffer of [`generate`].
const OUTPUT_BUFFER_CAPACITY: usize = 1 << 20;

/// What to generate. [`CorpusSpec::new`] gives realistic defaults; adjust the fields after.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CorpusSpec {
    /// Seed of every random choice.
    pub seed: u64,
    /// Approximate size: generation stops at the first event boundary at or after this many
    /// bytes (plus one unterminated last line when `final_newline` is false). Lines over
    /// `max_line_bytes` are always written, even past the target.
    pub target_bytes: u64,
    /// Number of components (default 50).
    pub components: usize,
    /// Methods per component, so `components * methods_per_component` method keys
    /// (default 5).
    pub methods_per_component: usize,
    /// The first this-many components are registered in the manifest, the rest are not
    /// (default 45).
    pub registered_components: usize,
    /// Pairs of sibling components, `<name>_v1` and `<name>_v2`, that log the same messages
    /// in the same layout, so that only the digit in their key tells their lines apart
    /// (default 3). They are the last registered components; a spec with fewer than four
    /// registered components has none, and never more than a quarter of them are siblings.
    pub sibling_pairs: usize,
    /// Target fraction of error lines among all lines (default 0.02).
    pub error_rate: f64,
    /// Fraction of events rendered as JSON lines (default 0.3). Multi-line events (stack
    /// traces) become one JSON line with an escaped stack.
    pub json_fraction: f64,
    /// Write lines of 8-64 KiB, about three per MB, a third of them error lines (default on).
    pub long_lines: bool,
    /// Number of lines longer than `max_line_bytes`; the even-numbered ones (first, third...)
    /// contain `ERROR` and a key (default 0 below 4 MiB, 1 below 64 MiB, else 2).
    pub oversize_lines: usize,
    /// Put invalid UTF-8 and NUL bytes in a few lines (default on).
    pub invalid_utf8: bool,
    /// Fraction of lines ending in `\r\n` (default 0.01).
    pub crlf_fraction: f64,
    /// End the corpus with `\n`; when false the last line is unterminated (default: true for
    /// three seeds out of four).
    pub final_newline: bool,
    /// Sentinel's line-length limit the ground truth uses (default
    /// [`DEFAULT_MAX_LINE_BYTES`]).
    pub max_line_bytes: usize,
}

impl CorpusSpec {
    /// Realistic defaults for a corpus of about `target_bytes` bytes.
    pub fn new(seed: u64, target_bytes: u64) -> Self {
        let oversize_lines = if target_bytes < 4 << 20 {
            0
        } else if target_bytes < 64 << 20 {
            1
        } else {
            2
        };
        CorpusSpec {
            seed,
            target_bytes,
            components: 50,
            methods_per_component: 5,
            registered_components: 45,
            sibling_pairs: 3,
            error_rate: 0.02,
            json_fraction: 0.3,
            long_lines: true,
            oversize_lines,
            invalid_utf8: true,
            crlf_fraction: 0.01,
            final_newline: !splitmix64(seed ^ 0x5EED_F1A1).is_multiple_of(4),
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
        }
    }

    fn validate(&self) -> io::Result<()> {
        let bad = |what: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, what.to_owned()));
        let unit = |x: f64| (0.0..=1.0).contains(&x);
        if self.components == 0 || self.methods_per_component == 0 {
            return bad("corpus spec needs at least one component and one method");
        }
        if !unit(self.error_rate) || !unit(self.json_fraction) || !unit(self.crlf_fraction) {
            return bad("corpus spec rates and fractions must lie in [0, 1]");
        }
        if self.max_line_bytes < 128 << 10 {
            return bad("corpus spec max_line_bytes must be at least 128 KiB");
        }
        Ok(())
    }
}

/// The exact counts Sentinel must report for a corpus (see the module docs for the rules).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroundTruth {
    /// Total bytes.
    pub bytes: u64,
    /// Lines, long lines included.
    pub lines: u64,
    /// Error lines (never long lines).
    pub error_lines: u64,
    /// Lines longer than `max_line_bytes`.
    pub long_lines: u64,
    /// Error lines with at least one PACT key.
    pub keyed_lines: u64,
    /// Keyed error lines whose first key names a registered component.
    pub registered_lines: u64,
    /// Keyed error lines whose first key names no registered component.
    pub unregistered_lines: u64,
    /// Error lines without a PACT key.
    pub unattributed_lines: u64,
    /// Distinct PACT keys over all error lines (`error_key_counts.len()`).
    pub distinct_keys: u64,
    /// For each key, the number of error lines containing it (once per line).
    pub error_key_counts: BTreeMap<String, u64>,
    /// For each key, the number of error lines it attributes (their first key): what the
    /// stored incidents, summed per `pact_key`, must add up to.
    #[serde(default)]
    pub first_key_counts: BTreeMap<String, u64>,
    /// Distinct fingerprints over all error lines.
    pub distinct_fingerprints: u64,
}

/// Writes the corpus described by `spec` to `out` and returns its ground truth.
///
/// Output goes through an internal 1 MiB [`BufWriter`], so `out` may be a raw `File`.
///
/// ```
/// use sentinel_corpus::{CorpusSpec, generate, registered_component_ids, Oracle};
/// let spec = CorpusSpec::new(7, 64 << 10);
/// let mut out = Vec::new();
/// let truth = generate(&spec, &mut out)?;
/// assert_eq!(truth.bytes, out.len() as u64);
/// assert_eq!(truth, Oracle::truth_of(&registered_component_ids(&spec), &out));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// An [`io::ErrorKind::InvalidInput`] error if the spec has no components or methods, a rate
/// outside `[0, 1]` or a `max_line_bytes` under 128 KiB; otherwise any error of `out`.
pub fn generate<W: Write>(spec: &CorpusSpec, out: W) -> io::Result<GroundTruth> {
    spec.validate()?;
    let mut generator = Generator::new(spec, out);
    generator.run()?;
    generator.finish()
}

/// The ids of the registered components of `spec`, in component order.
pub fn registered_component_ids(spec: &CorpusSpec) -> Vec<String> {
    (0..spec.registered_components.min(spec.components))
        .map(|c| component_identity(spec, c).0)
        .collect()
}

/// The id of component `c` of `spec`, and the component whose messages, layout and
/// logger name it shares: itself, or the first of its sibling pair (see
/// [`CorpusSpec::sibling_pairs`]).
fn component_identity(spec: &CorpusSpec, c: usize) -> (String, usize) {
    let registered = spec.registered_components.min(spec.components);
    let pairs = spec.sibling_pairs.min(registered / 8);
    let first = registered - 2 * pairs;
    if (first..registered).contains(&c) {
        let twin = first + (c - first) / 2 * 2;
        let version = (c - first) % 2 + 1;
        (format!("{}_v{version}", component_id(twin)), twin)
    } else {
        (component_id(c), c)
    }
}

/// A `manifest.json` in the reference's shape (SPEC §2, indent 2) registering the registered
/// components of `spec` as members of the Pact project at `project_dir`.
///
/// Paths are `<project_dir>/contracts/<id>/interface.json`, `<project_dir>/tests/<id>` and
/// `<project_dir>/src/<id>`; they need not exist. `last_registered` is a fixed timestamp so
/// the output is deterministic.
pub fn manifest_json(spec: &CorpusSpec, project_dir: &str) -> String {
    #[derive(Serialize)]
    struct Entry {
        component_id: String,
        contract_path: String,
        test_path: String,
        source_path: String,
        language: &'static str,
        last_registered: String,
        pact_project: String,
    }
    #[derive(Serialize)]
    struct Manifest {
        components: BTreeMap<String, Entry>,
    }
    let dir = project_dir.trim_end_matches('/');
    let components = registered_component_ids(spec)
        .into_iter()
        .enumerate()
        .map(|(i, id)| {
            let entry = Entry {
                contract_path: format!("{dir}/contracts/{id}/interface.json"),
                test_path: format!("{dir}/tests/{id}"),
                source_path: format!("{dir}/src/{id}"),
                language: if i % 4 == 2 { "typescript" } else { "python" },
                last_registered: format!("2026-11-23T09:{:02}:{:02}.000000", i / 60, i % 60),
                pact_project: dir.to_owned(),
                component_id: id.clone(),
            };
            (id, entry)
        })
        .collect();
    serde_json::to_string_pretty(&Manifest { components })
        .expect("a map of plain string structs always serialises")
}

/// The Pact preamble key of a component, `PACT:<hash6>:<component_id>` (see the module docs
/// for how `<hash6>` is derived).
pub fn preamble_key(component_id: &str) -> String {
    format!("PACT:{}:{component_id}", hash6(component_id))
}

// ------------------------------------------------------------------------------------------
// Oracle
// ------------------------------------------------------------------------------------------

/// The error-line rule: the five case-sensitive literals and the six ASCII-case-insensitive
/// JSON level literals (` ?` covers the with/without space pairs).
const ERROR_PATTERN: &str =
    r#"ERROR|CRITICAL|FATAL|Traceback|panicked at|(?i:"level": ?"(?:error|fatal|critical)")"#;
const KEY_PATTERN: &str = "PACT:[a-zA-Z0-9_]+:[a-zA-Z0-9_]+";
const UUID_PATTERN: &str =
    "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}";
const HEX_PATTERN: &str = "[0-9a-fA-F]{8,}";
const NUM_PATTERN: &str = "[0-9]+";

/// Whether `line` may match [`ERROR_PATTERN`]: true for every line the regex matches, since
/// each alternative of the pattern begins with one of the prefixes tested here at some
/// position (the five literals in full, and `"level":` + optional space + `"` + the first
/// letter of error/fatal/critical for the case-insensitive ones); the regex confirms.
///
/// A plain byte loop, used in debug builds only (where tests run): there the regex's SIMD
/// prefilter is not optimised and would dominate generation time.
fn may_be_error_line(line: &[u8]) -> bool {
    let mut i = 0;
    while i < line.len() {
        let candidate = match line[i] {
            b'E' => line[i..].starts_with(b"ERROR"),
            b'C' => line[i..].starts_with(b"CRITICAL"),
            b'F' => line[i..].starts_with(b"FATAL"),
            b'T' => line[i..].starts_with(b"Traceback"),
            b'p' => line[i..].starts_with(b"panicked at"),
            b'"' => may_be_json_error_level(&line[i..]),
            _ => false,
        };
        if candidate {
            return true;
        }
        i += 1;
    }
    false
}

/// `rest` starts with `"level":`, an optional space, `"` and `e`, `f` or `c`, ignoring ASCII
/// case.
fn may_be_json_error_level(rest: &[u8]) -> bool {
    const KEY: &[u8] = b"\"level\":";
    if rest.len() < KEY.len() + 2 || !rest[..KEY.len()].eq_ignore_ascii_case(KEY) {
        return false;
    }
    let value = &rest[KEY.len()..];
    let value = value.strip_prefix(b" ").unwrap_or(value);
    value.len() >= 2
        && value[0] == b'"'
        && matches!(value[1].to_ascii_lowercase(), b'e' | b'f' | b'c')
}

fn bytes_regex(pattern: &str) -> Regex {
    RegexBuilder::new(pattern)
        .unicode(false)
        .build()
        .expect("the oracle's patterns are constant and valid")
}

/// The independent, naive implementation of Sentinel's line semantics that computes a
/// [`GroundTruth`] (rules in the module docs).
///
/// Feed it either whole lines with [`Oracle::line`] (and [`Oracle::final_line`] for an
/// unterminated last line) or arbitrary chunks of a stream with [`Oracle::feed`], not both,
/// then call [`Oracle::finish`].
///
/// ```
/// use sentinel_corpus::Oracle;
/// let data = b"INFO ok\nERROR [PACT:auth_module:login] denied for user 42\n";
/// let truth = Oracle::truth_of(&["auth_module".to_owned()], data);
/// assert_eq!((truth.lines, truth.error_lines, truth.registered_lines), (2, 1, 1));
/// ```
#[derive(Debug)]
pub struct Oracle {
    error_re: Regex,
    key_re: Regex,
    uuid_re: Regex,
    hex_re: Regex,
    num_re: Regex,
    registered: HashSet<Box<[u8]>>,
    max_line_bytes: usize,
    truth: GroundTruth,
    fingerprints: HashSet<u64>,
    /// Distinct keys of the current line, as ranges into it.
    line_keys: Vec<(usize, usize)>,
    /// The unterminated tail of the data given to [`Oracle::feed`].
    pending: Vec<u8>,
}

impl Oracle {
    /// An oracle with the given registered component ids and the default line limit.
    pub fn new(registered: &[String]) -> Self {
        Oracle {
            error_re: bytes_regex(ERROR_PATTERN),
            key_re: bytes_regex(KEY_PATTERN),
            uuid_re: bytes_regex(UUID_PATTERN),
            hex_re: bytes_regex(HEX_PATTERN),
            num_re: bytes_regex(NUM_PATTERN),
            registered: registered
                .iter()
                .map(|id| id.as_bytes().to_vec().into_boxed_slice())
                .collect(),
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            truth: GroundTruth::default(),
            fingerprints: HashSet::new(),
            line_keys: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// Sets the long-line threshold (default [`DEFAULT_MAX_LINE_BYTES`]).
    pub fn with_max_line_bytes(mut self, max_line_bytes: usize) -> Self {
        self.max_line_bytes = max_line_bytes;
        self
    }

    /// The ground truth of `data` as one complete stream, with the default line limit.
    pub fn truth_of(registered: &[String], data: &[u8]) -> GroundTruth {
        let mut oracle = Oracle::new(registered);
        oracle.feed(data);
        oracle.finish()
    }

    /// One line, given without its terminating `\n` (which is counted in `bytes`).
    pub fn line(&mut self, line: &[u8]) {
        self.truth.bytes += line.len() as u64 + 1;
        self.process(line);
    }

    /// The last line of a stream that does not end with `\n`. Call nothing but
    /// [`Oracle::finish`] after it.
    pub fn final_line(&mut self, line: &[u8]) {
        self.truth.bytes += line.len() as u64;
        self.process(line);
    }

    /// The next chunk of a stream, cut anywhere. Partial lines are kept until their `\n`
    /// arrives or [`Oracle::finish`] is called.
    pub fn feed(&mut self, mut data: &[u8]) {
        while let Some(i) = memchr::memchr(b'\n', data) {
            if self.pending.is_empty() {
                self.line(&data[..i]);
            } else {
                let mut pending = std::mem::take(&mut self.pending);
                pending.extend_from_slice(&data[..i]);
                self.line(&pending);
                pending.clear();
                self.pending = pending;
            }
            data = &data[i + 1..];
        }
        self.pending.extend_from_slice(data);
    }

    /// Lines seen so far.
    pub fn lines(&self) -> u64 {
        self.truth.lines
    }

    /// Error lines seen so far.
    pub fn error_lines(&self) -> u64 {
        self.truth.error_lines
    }

    /// Processes an unterminated tail left by [`Oracle::feed`] and returns the truth.
    pub fn finish(mut self) -> GroundTruth {
        if !self.pending.is_empty() {
            let pending = std::mem::take(&mut self.pending);
            self.final_line(&pending);
        }
        self.truth.distinct_keys = self.truth.error_key_counts.len() as u64;
        self.truth.distinct_fingerprints = self.fingerprints.len() as u64;
        self.truth
    }

    fn process(&mut self, raw: &[u8]) {
        self.truth.lines += 1;
        if raw.len() > self.max_line_bytes {
            self.truth.long_lines += 1;
            return;
        }
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        // Optimised, the regex's own SIMD prefilter is faster than the byte loop; both paths
        // give the same answer because the candidate test is a superset (tested).
        let candidate = !cfg!(debug_assertions) || may_be_error_line(line);
        if !candidate || !self.error_re.is_match(line) {
            return;
        }
        self.truth.error_lines += 1;

        self.line_keys.clear();
        for m in self.key_re.find_iter(line) {
            let key = m.as_bytes();
            if !self.line_keys.iter().any(|&(s, e)| &line[s..e] == key) {
                self.line_keys.push((m.start(), m.end()));
            }
        }
        match self.line_keys.first() {
            None => self.truth.unattributed_lines += 1,
            Some(&(start, end)) => {
                self.truth.keyed_lines += 1;
                // The key is `PACT:<a>:<b>` and neither segment contains ':'.
                let mut segments = line[start + 5..end].splitn(2, |&b| b == b':');
                let a = segments.next().unwrap_or_default();
                let b = segments.next().unwrap_or_default();
                if self.registered.contains(a) || self.registered.contains(b) {
                    self.truth.registered_lines += 1;
                } else {
                    self.truth.unregistered_lines += 1;
                }
            }
        }
        for &(start, end) in &self.line_keys {
            // Keys are ASCII by construction of KEY_PATTERN, so this never replaces anything.
            let key = String::from_utf8_lossy(&line[start..end]);
            match self.truth.error_key_counts.get_mut(key.as_ref()) {
                Some(count) => *count += 1,
                None => {
                    self.truth.error_key_counts.insert(key.into_owned(), 1);
                }
            }
        }

        if let Some(&(start, end)) = self.line_keys.first() {
            let key = String::from_utf8_lossy(&line[start..end]);
            *self
                .truth
                .first_key_counts
                .entry(key.into_owned())
                .or_default() += 1;
        }

        // Keys verbatim; each stretch between them through the three substitutions.
        let mut text = Vec::with_capacity(line.len());
        let mut from = 0;
        for m in self.key_re.find_iter(line) {
            self.substitute(&line[from..m.start()], &mut text);
            text.extend_from_slice(m.as_bytes());
            from = m.end();
        }
        self.substitute(&line[from..], &mut text);
        self.fingerprints.insert(xxh3_64(&text));
    }

    /// Appends the three substitutions of `stretch` to `out`.
    fn substitute(&self, stretch: &[u8], out: &mut Vec<u8>) {
        let text = self.uuid_re.replace_all(stretch, NoExpand(b"<uuid>"));
        let text = self.hex_re.replace_all(&text, NoExpand(b"<hex>"));
        out.extend_from_slice(&self.num_re.replace_all(&text, NoExpand(b"<n>")));
    }
}

// ------------------------------------------------------------------------------------------
// Fixtures
// ------------------------------------------------------------------------------------------

/// The Pact project directory the committed fixture manifest points at (relative to the
/// crate root; it does not need to exist).
pub const FIXTURE_PROJECT_DIR: &str = "testdata/pact_project";

/// One committed fixture under `testdata/logs/`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Fixture {
    /// Path relative to `testdata/logs/`, the key of the fixture in `truth.json`.
    pub path: &'static str,
    /// The spec that generates it.
    pub spec: CorpusSpec,
    /// Whether the file is gzip-compressed (its truth is that of the decompressed bytes).
    pub gzip: bool,
}

/// The committed fixtures under `testdata/logs/`, which `examples/gen_fixtures.rs` writes.
///
/// They share one component set, so `testdata/manifest.json` (from [`manifest_json`] with
/// the first fixture's spec and [`FIXTURE_PROJECT_DIR`]) serves them all. Their error rate is
/// raised to 5% so that small files still hold enough error lines, and they have no 8-64 KiB
/// or oversize lines, to stay small.
pub fn fixtures() -> Vec<Fixture> {
    let base = |seed, bytes| {
        let mut spec = CorpusSpec::new(seed, bytes);
        spec.error_rate = 0.05;
        spec.long_lines = false;
        spec.oversize_lines = 0;
        spec
    };
    let mut app = base(1, 104_000);
    app.json_fraction = 0.0;
    app.final_newline = true;
    let mut service = base(2, 48_000);
    service.json_fraction = 1.0;
    service.invalid_utf8 = false;
    service.crlf_fraction = 0.0;
    service.final_newline = true;
    let mut old = base(6, 48_000);
    old.crlf_fraction = 0.03;
    old.final_newline = false;
    vec![
        Fixture {
            path: "app.log",
            spec: app,
            gzip: false,
        },
        Fixture {
            path: "service.jsonl",
            spec: service,
            gzip: false,
        },
        Fixture {
            path: "archive/old.log.gz",
            spec: old,
            gzip: true,
        },
    ]
}

// ------------------------------------------------------------------------------------------
// Random numbers
// ------------------------------------------------------------------------------------------

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xoshiro256** seeded through SplitMix64: small, fast and the same everywhere.
#[derive(Debug, Clone)]
struct Rng {
    s: [u64; 4],
}

impl Rng {
    fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            splitmix64(x)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `0..n` (0 when `n == 0`), by multiply-high.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// Uniform in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo)
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64) * (1.0 / (1u64 << 53) as f64) < p
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.index(items.len())]
    }

    /// An index in `0..n` skewed towards 0 (70% for 0, then falling by 70% per step), so a few
    /// values dominate.
    fn skewed(&mut self, n: usize) -> usize {
        let mut i = 0;
        while i + 1 < n && self.chance(0.3) {
            i += 1;
        }
        i
    }
}

// ------------------------------------------------------------------------------------------
// Vocabulary
// ------------------------------------------------------------------------------------------

#[rustfmt::skip]
const COMPONENT_NAMES: &[&str] = &[
    "payment_processor", "auth_module", "user_service_v2", "inventory_sync", "order_router",
    "email_dispatcher", "notification_hub", "search_indexer", "billing_engine", "fraud_detector",
    "session_manager", "cart_service", "catalog_api", "shipping_calculator", "tax_engine",
    "recommendation_v3", "image_resizer", "report_builder", "ledger_writer", "webhook_relay",
    "rate_limiter", "feature_flags", "audit_logger", "geo_locator", "pricing_rules",
    "subscription_mgr", "invoice_renderer", "refund_worker", "kyc_verifier", "chat_gateway",
    "media_transcoder", "data_exporter", "etl_pipeline", "metrics_aggregator", "config_service",
    "token_minter", "oauth_bridge", "sms_sender", "push_notifier", "loyalty_points",
    "coupon_service", "warehouse_api", "returns_portal", "support_ticketing", "analytics_ingest",
    "cdn_purger", "dns_updater", "backup_scheduler", "queue_consumer", "legacy_soap_adapter",
    "currency_converter", "address_validator", "price_alerts", "gift_cards", "label_printer",
    "partner_sync", "consent_manager", "document_store", "video_chat", "survey_engine",
];

#[rustfmt::skip]
const METHOD_NAMES: &[&str] = &[
    "validate_token", "charge_card", "refund_payment", "create_session", "revoke_session",
    "lookup_user", "update_profile", "send_email", "render_template", "sync_stock",
    "reserve_item", "release_item", "route_order", "calculate_tax", "compute_quote",
    "resize_image", "build_report", "write_entry", "deliver_webhook", "check_limit",
    "evaluate_flag", "record_event", "resolve_ip", "apply_rules", "renew_subscription",
    "render_invoice", "process_refund", "verify_identity", "open_channel", "transcode_video",
    "export_batch", "run_stage", "aggregate_window", "load_config", "mint_token", "exchange_code",
    "send_sms", "push_message", "award_points", "redeem_coupon", "allocate_bin", "accept_return",
    "open_ticket", "ingest_batch", "purge_path", "update_record", "schedule_backup",
    "consume_message", "handle_request", "parse_payload", "fetch_page", "commit_txn",
    "rollback_txn", "enqueue_job", "dequeue_job", "health_check", "migrate_schema",
    "rotate_keys", "flush_cache", "warm_cache", "encode_response", "decode_request",
    "authorize_scope", "list_items",
];

/// Lowercase English for noise, with the near-miss words a case-insensitive or sloppy
/// matcher would trip over.
#[rustfmt::skip]
const WORDS: &[&str] = &[
    "the", "a", "request", "response", "user", "account", "order", "payment", "queue", "worker",
    "cache", "session", "token", "batch", "record", "stream", "window", "upstream", "client",
    "server", "handler", "config", "value", "result", "status", "update", "retry", "backoff",
    "latency", "budget", "tenant", "region", "replica", "shard", "leader", "follower", "commit",
    "snapshot", "index", "schema", "table", "column", "row", "field", "header", "payload",
    "was", "is", "has", "been", "will", "not", "already", "still", "now", "then", "after",
    "before", "during", "while", "because", "with", "without", "from", "into", "over", "under",
    "quickly", "slowly", "again", "once", "twice", "normal", "healthy", "steady", "warm", "cold",
    "fresh", "stale", "pending", "ready", "done", "queued", "skipped", "merged", "flushed",
    "accepted", "rejected", "expired", "renewed", "scheduled", "started", "stopped", "resumed",
    "error", "errors", "errors=0", "error_count=0", "no_error", "trace", "traces", "traceback",
    "transaction", "transactions", "critical_path", "critical", "criticality", "fatal",
    "fatality", "fatalities", "panic", "panel", "panels", "Tracer", "tracer", "traceable",
    "Error", "ErrorHandler", "Critical", "Fatal", "PanicHook", "level", "levels", "debug",
    "warning", "info", "notice", "alert", "pact", "contract", "component", "method", "key",
    "keys", "manifest", "incident", "signal", "fingerprint", "window", "minute", "hour", "day",
    "morning", "evening", "weekend", "customer", "merchant", "invoice", "receipt", "refund",
    "coupon", "basket", "checkout", "shipment", "parcel", "warehouse", "carrier", "label",
    "address", "country", "currency", "price", "discount", "tax", "fee", "limit", "quota",
    "threshold", "ratio", "percent", "count", "total", "average", "median", "p99", "spike",
    "dip", "plateau", "trend", "forecast", "model", "feature", "flag", "rollout", "canary",
    "deploy", "release", "version", "build", "artifact", "image", "container", "pod", "node",
    "cluster", "zone", "lease", "lock", "mutex", "channel", "socket", "connection", "pool",
];

#[rustfmt::skip]
const USERS: &[&str] =
    &["alice", "bob", "carol", "dmitri", "eve", "farah", "gustavo", "hiro", "ines", "jamal"];
#[rustfmt::skip]
const HOSTS: &[&str] = &[
    "db-primary.internal", "redis-cache.internal", "kafka-1.internal", "api.stripe.com",
    "auth.example.com", "db-replica-2.internal", "s3.eu-west-1.amazonaws.com",
    "smtp.mailgun.org", "ledger.internal", "search-7.internal",
];
#[rustfmt::skip]
const TABLES: &[&str] = &[
    "orders", "users", "payments", "sessions", "invoices", "inventory", "refunds",
    "audit_events", "subscriptions", "coupons",
];
#[rustfmt::skip]
const TOPICS: &[&str] = &[
    "orders.created", "payments.settled", "user-events", "inventory.updates", "audit.log",
    "emails.outbound",
];
#[rustfmt::skip]
const ROUTES: &[&str] = &[
    "/api/v1/orders", "/api/v2/payments/charge", "/api/v1/users/me", "/healthz",
    "/api/v1/cart/items", "/oauth/token", "/api/v1/search", "/webhooks/stripe",
    "/api/v1/invoices", "/metrics",
];
#[rustfmt::skip]
const PATHS: &[&str] = &[
    "/var/lib/app/state.db", "/etc/app/config.yaml", "/tmp/upload-cache",
    "/srv/exports/daily.csv", "/var/log/app/app.log", "/opt/app/templates/invoice.html",
    "/mnt/media/originals", "/home/app/.cache/pip",
];
#[rustfmt::skip]
const REGIONS: &[&str] =
    &["eu-west-1", "us-east-1", "ap-southeast-2", "eu-central-1", "sa-east-1"];
#[rustfmt::skip]
const JOBS: &[&str] = &[
    "nightly_reconcile", "hourly_rollup", "purge_sessions", "send_digest", "reindex_catalog",
    "rotate_logs",
];
#[rustfmt::skip]
const FLAGS: &[&str] =
    &["new_checkout_flow", "dark_mode", "fast_refunds", "beta_search", "strict_kyc"];
const SHORT_HEX: &[&str] = &["e4f", "beef", "a1", "c0de", "fa11", "7ff"];
const STATUS: &[&str] = &[
    "500", "503", "502", "504", "429", "400", "401", "403", "404", "409",
];
#[rustfmt::skip]
const STATUS_TEXT: &[&str] = &[
    "Service Unavailable", "Bad Gateway", "Too Many Requests", "Internal Server Error",
    "Conflict",
];
const ERRNO: &[&str] = &["ECONNREFUSED", "ETIMEDOUT", "ENOSPC", "EACCES", "EPIPE"];
const BUCKETS: &[&str] = &["acme-uploads", "acme-exports", "acme-backups"];
#[rustfmt::skip]
const USER_AGENTS: &[&str] = &[
    "curl/8.5.0", "Mozilla/5.0 (X11; Linux x86_64)", "okhttp/4.12.0", "python-requests/2.32.3",
];
#[rustfmt::skip]
const THREADS: &[&str] =
    &["main", "http-nio-8080-exec-3", "pool-2-thread-7", "kafka-consumer-1", "scheduling-1"];
#[rustfmt::skip]
const JAVA_EXCEPTIONS: &[&str] = &[
    "java.lang.IllegalStateException", "java.lang.NullPointerException",
    "java.util.concurrent.TimeoutException", "java.sql.SQLTransientConnectionException",
    "com.fasterxml.jackson.core.JsonParseException", "java.lang.IllegalArgumentException",
    "org.springframework.dao.DataIntegrityViolationException", "java.io.UncheckedIOException",
];
#[rustfmt::skip]
const JAVA_CAUSES: &[&str] = &[
    "java.net.SocketTimeoutException: Read timed out",
    "java.net.ConnectException: Connection refused",
    "org.postgresql.util.PSQLException: FATAL: terminating connection due to administrator command",
    "java.io.EOFException: unexpected end of stream",
];
#[rustfmt::skip]
const PY_EXCEPTIONS: &[&str] = &[
    "ValueError", "KeyError", "TimeoutError", "ConnectionResetError", "AttributeError",
    "psycopg2.OperationalError", "requests.exceptions.ReadTimeout", "json.decoder.JSONDecodeError",
];
#[rustfmt::skip]
const MONTHS: &[&str] =
    &["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// Noise messages. `{slot}`s are filled by `Pen::render`.
const NOISE_TEMPLATES: &[&str] = &[
    "user {id} logged in from {ip} in {ms}ms",
    "GET {route} 200 {ms}ms bytes={n} ua=\"{ua}\"",
    "POST {route} 201 {ms}ms request_id={uuid}",
    "processed {n} records in {ms}ms (errors=0, skipped={small})",
    "transaction {hex16} committed: {small} statements, critical_path={ms}ms",
    "Tracer flushed {n} spans to {host}:{port} in {ms}ms",
    "trace_id={hex32} span_id={hex16} sampled=true",
    "cache hit ratio {pct}% over the last {small} minutes, evicted {n} entries",
    "scheduled job {job} finished: errors=0 warnings={small} took {ms}ms",
    "retrying request {uuid} after transient error (attempt {small})",
    "health check ok: {small} upstreams healthy, panel={word}",
    "connection pool stats: active={small} idle={small} waiting=0 max={n}",
    "fatality rate model refreshed for region {region}: {pct}% (baseline {pct}%)",
    "{words}",
    "{words}; {words}",
    "the {word} {word} was {word} after {ms}ms and the {word} kept {word}",
    "config reloaded from {path}: {small} keys changed, log_level=info",
    "consumer {job} committed offset {n} on partition {small} of {topic}",
    "received webhook {uuid} from {host}, signature ok, {n} bytes",
    "slow query took {ms}ms: SELECT id, status FROM {table} WHERE user_id = {id} LIMIT {small}",
    "no errors found while validating {n} rows of {table}",
    "error budget remaining {pct}% for slo {job}",
    "errors=0 warnings=0 checked={n} duration={ms}ms",
    "opened critical_path span for {method} with trace {hex16}",
    "rendering admin panel for \"{user}\" with {small} widgets",
    "stack trace collection disabled for {comp}, sampling every {n} requests",
    "payment of {money} EUR authorised for order {id}, card ending {card}",
    "email to {email} queued with priority {small}",
    "session {hex32} refreshed for user {id}, expires in {n}s",
    "feature flag {flag} evaluated to true for {pct}% of users",
    "uploaded {n} bytes to s3://{bucket}{path} in {ms}ms",
    "warming cache for {small} tenants: {words}",
    "heartbeat from worker-{small} ({ip}) lag={ms}ms",
    "closing {small} idle connections to {host}",
    "rate limit for client {hex8} at {pct}% of quota",
    "recovered from a fatal-looking but harmless condition in {method}: {words}",
    "traceback capture enabled for {comp} (depth {small})",
    "critical section held for {ms}ms by {thread}",
    "Error rate within bounds: {pct}% over a {small}m window",
    "ErrorBoundary rendered fallback for {route} without errors",
    "Critical alerts muted for {comp} until the maintenance window ends",
    "Fatal flag cleared on job {job}",
    "{words} (errors=0)",
    "café order {id} shipped to Zürich – ETA {small} days ✓",
    "checkpoint written: offset={n} generation={small} file={path}",
    "deadline for {method} set to {ms}ms, remaining budget {ms}ms",
    "index {table}_idx rebuilt in {ms}ms, {n} pages",
    "websocket {hex12} closed by peer with code 1000",
    "TLS handshake with {host}:{port} completed in {ms}ms (TLSv1.3)",
    "request completed status=200 method=GET path={route} latency={ms}ms",
    "batch {uuid} acknowledged by {host}",
    "gc pause {ms}ms heap={n}MB",
    "DNS lookup for {host} returned {ip} (ttl {n}s)",
    "PACT key {key} emitted event completed in {ms}ms",
    "{comp} calling {key} for {user} ({words})",
];

/// Error subjects; a template is a subject followed by a reason, so
/// `ERROR_SUBJECTS.len() * ERROR_REASONS.len()` (540) templates in all.
const ERROR_SUBJECTS: &[&str] = &[
    "failed to charge card ending {card} for order {id}",
    "token validation failed for user \"{user}\"",
    "database connection to {host}:{port} refused",
    "timeout calling {route} on {ip}:{port}",
    "could not acquire lock {hex16} on {table}",
    "unhandled exception in {method}",
    "payment gateway returned {status} for transaction {uuid}",
    "invalid signature on webhook {uuid} from {host}",
    "deadlock detected while updating {table} row {id}",
    "message {hex12} could not be decoded from {topic}",
    "failed to write {n} bytes to {path}",
    "upstream {host} returned malformed JSON at offset {n}",
    "session {hex32} not found for user {id}",
    "quota exceeded for tenant \"{user}\": {n} requests",
    "certificate for {host} expired {small} days ago",
    "refund {id} rejected by processor with code {shorthex}",
    "schema migration {small} failed on {table}",
    "out of memory while resizing image {uuid} ({n}x{n})",
    "cannot parse config key {flag} in {path}",
    "job {job} crashed after {ms}ms",
    "duplicate key value violates unique constraint \"{table}_pkey\"",
    "KYC provider rejected document {hex16} for \"{user}\"",
    "consumer group {job} lost partition {small} of {topic}",
    "could not send email to {email}",
    "inventory for sku {hex8} went negative ({n})",
    "failed to render invoice {id} for \"{user}\"",
    "PutObject s3://{bucket}{path} denied",
    "circuit breaker open for {host} after {small} failures",
    "TLS handshake with {host}:{port} failed: bad certificate",
    "fraud score {pct} exceeded threshold for order {id}",
    "assertion failed in {method}: state={shorthex}",
    "worker {small} exited with status {status}",
    "NullPointerException in {method} at line {n}",
    "retry budget exhausted for request {uuid}",
    "no connection available in pool within {ms}ms",
    "replica {host} lag {ms}ms exceeds limit",
    "checksum mismatch for chunk {hex16}: expected {hex8}, got {hex8}",
    "permission denied opening {path}",
    "rate limiter backend unreachable at {ip}:{port}",
    "tax rule {shorthex} missing for region {region}",
    "access token for \"{user}\" revoked mid-request",
    "webhook delivery to {host} failed with {status}",
    "cannot decode JWT header: invalid base64 near position {n}",
    "transaction {hex16} rolled back",
    "disk {path} is {pct}% full",
];

const ERROR_REASONS: &[&str] = &[
    "",
    ": timeout after {ms}ms",
    ": connection reset by peer",
    ": deadline exceeded (attempt {small}/3)",
    ": permission denied",
    " (request_id={uuid})",
    " after {small} retries",
    ": upstream said \"{status_text}\"",
    " [trace_id={hex32}]",
    ": see {path} for details",
    ": errno={small} ({errno})",
    "; giving up",
];

/// Errors logged by things that carry no PACT key (databases, supervisors, runtimes).
const SYSTEM_ERRORS: &[&str] = &[
    "ERROR:  relation \"{table}\" does not exist at character {n}",
    "FATAL:  password authentication failed for user \"{user}\"",
    "FATAL:  the database system is in recovery mode",
    "ERROR:  canceling statement due to statement timeout",
    "CRITICAL: disk {path} {pct}% full on {host}",
    "ERROR 1205 (HY000): Lock wait timeout exceeded; try restarting transaction",
    "[FATAL] supervisor: process {job} exited too quickly (status {status})",
    "ERROR [main] o.s.boot.SpringApplication - Application run failed",
    "level=ERROR msg=\"sync failed\" component={comp} err=\"{errno}\"",
    "ERROR in ./src/{word}.ts: Module not found: Can't resolve './{word}'",
    "CRITICAL worker timeout (pid:{n})",
    "ERROR: health check for {host} failed: {status_text}",
];

/// Text noise a sloppy matcher would take for errors (none matches the default patterns).
const NEAR_MISS_TEXT: &[&str] = &[
    "ERRO[{small}] {words}",
    "WARN[{small}] retrying {job}: {words}",
    "level=error msg=\"{words}\" component={comp} attempt={small}",
    "npm ERR! code ELIFECYCLE",
    "E1123 13:17:47.560123    {n} reflector.go:{n}] failed to list *v1.Pod: {words}",
    "Err(ConnectionRefused) handled by retry layer for {host}",
    "Trace back to caller {method} suppressed",
    "recovered: panicked_at=false, panic=none, errors=0",
    "thread {thread} panicked  at the disco (two spaces, not a panic)",
    "Errors: 0, Criticals: 0, Fatals: 0",
    "ERR0R budget ok (the O is a zero)",
    "crit: {words}",
];

/// JSON level members a sloppy level matcher would take for errors.
const NEAR_MISS_JSON_LEVELS: &[&str] = &[
    r#""level" : "error""#,
    r#""level":  "error""#,
    r#""log_level":"error""#,
    r#""errorlevel":"error""#,
    r#""level":"errors""#,
    r#""level":"err""#,
    r#""lvl":"error""#,
    r#""level":"error_budget""#,
    r#""msg_level":"fatal""#,
];

// ------------------------------------------------------------------------------------------
// Components and keys
// ------------------------------------------------------------------------------------------

fn component_id(index: usize) -> String {
    let base = COMPONENT_NAMES[index % COMPONENT_NAMES.len()];
    match index / COMPONENT_NAMES.len() {
        0 => base.to_owned(),
        round => format!("{base}_{}", round + 1),
    }
}

fn method_name(component: usize, method: usize) -> String {
    let n = METHOD_NAMES.len();
    // 5 is coprime with 64 methods, so a component's first 64 methods are distinct.
    let base = METHOD_NAMES[(component * 11 + method * 5) % n];
    match method / n {
        0 => base.to_owned(),
        round => format!("{base}_{}", round + 1),
    }
}

fn hash6(component_id: &str) -> String {
    format!("{:06x}", xxh3_64(component_id.as_bytes()) >> 40)
}

fn camel_case(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for part in id.split('_') {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            out.push(first.to_ascii_uppercase());
            out.extend(chars);
        }
    }
    out
}

/// How a component formats its text lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    /// `2026-11-23T13:17:47.560Z INFO [PACT:c:m] msg`
    Iso,
    /// `2026-11-23 13:17:47,560 INFO comp.handlers: [PACT:c:m] msg`
    Python,
    /// `Nov 23 13:17:47 host comp[pid]: INFO PACT:c:m msg`
    Syslog,
    /// `2026/11/23 13:17:47.560123 INFO PACT:c:m msg`
    Go,
    /// `2026-11-23 13:17:47.560 [thread] INFO  c.a.x.CompService - [PACT:c:m] msg`
    Logback,
    /// `[2026-11-23T13:17:47.560463+00:00] comp.INFO: msg [PACT:c:m]`
    Monolog,
}

const STYLES: [Style; 6] = [
    Style::Iso,
    Style::Python,
    Style::Syslog,
    Style::Go,
    Style::Logback,
    Style::Monolog,
];

#[derive(Debug)]
struct Component {
    /// The id in its keys.
    id: String,
    /// The name it logs under (logger, host, paths): its id, or for a sibling the name its
    /// pair shares.
    name: String,
    /// The component whose messages it logs: itself, or the first of its sibling pair.
    twin: usize,
    preamble: String,
    methods: Vec<String>,
    class: String,
    package: String,
    host: String,
    pid: u64,
    style: Style,
    /// Emits Pact's logging preamble `[PACT:<hash6>:<id>]` instead of method keys.
    uses_preamble: bool,
}

#[derive(Debug)]
struct Catalog {
    components: Vec<Component>,
    methods_per_component: usize,
}

impl Catalog {
    fn new(spec: &CorpusSpec) -> Self {
        let components = (0..spec.components)
            .map(|c| {
                let (id, twin) = component_identity(spec, c);
                let name = component_id(twin);
                let class = camel_case(&name);
                Component {
                    preamble: preamble_key(&id),
                    methods: (0..spec.methods_per_component)
                        .map(|m| method_name(twin, m))
                        .collect(),
                    package: class.to_ascii_lowercase(),
                    class,
                    host: format!(
                        "{}-{:x}",
                        name.replace('_', "-"),
                        splitmix64(twin as u64) >> 44
                    ),
                    pid: 1000 + (twin as u64 * 7919) % 30000,
                    style: STYLES[(twin * 5 + 1) % STYLES.len()],
                    uses_preamble: twin % 7 == 3,
                    twin,
                    name,
                    id,
                }
            })
            .collect();
        Catalog {
            components,
            methods_per_component: spec.methods_per_component,
        }
    }

    fn key_count(&self) -> usize {
        self.components.len() * self.methods_per_component
    }

    fn push_key(&self, out: &mut Vec<u8>, c: usize, m: usize) {
        let comp = &self.components[c];
        out.extend_from_slice(b"PACT:");
        out.extend_from_slice(comp.id.as_bytes());
        out.push(b':');
        out.extend_from_slice(comp.methods[m].as_bytes());
    }

    /// The key a line of component `c` names for method `m`: the preamble key for
    /// preamble components, the method key otherwise.
    fn push_line_key(&self, out: &mut Vec<u8>, c: usize, m: usize) {
        if self.components[c].uses_preamble {
            out.extend_from_slice(self.components[c].preamble.as_bytes());
        } else {
            self.push_key(out, c, m);
        }
    }
}

// ------------------------------------------------------------------------------------------
// Formatting helpers
// ------------------------------------------------------------------------------------------

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// `n` zero-padded to at least `width` (at most 20) digits.
fn push_padded(out: &mut Vec<u8>, mut n: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut i = buf.len();
    while n > 0 {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    let start = i.min(buf.len() - width.min(buf.len()));
    out.extend_from_slice(&buf[start..]);
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";
const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Escapes `text` as the inside of a JSON string.
fn push_json_escaped(out: &mut Vec<u8>, text: &[u8]) {
    for &b in text {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX_DIGITS[usize::from(b >> 4)]);
                out.push(HEX_DIGITS[usize::from(b & 15)]);
            }
            _ => out.push(b),
        }
    }
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// A step close to `n / φ` and coprime with `n`: stepping by it modulo `n` visits every
/// value once per `n` steps, and any run of steps is spread evenly over `0..n`.
fn golden_stride(n: usize) -> usize {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    let mut stride = ((n as f64) * 0.618_033_988_75) as usize;
    while stride > 1 && gcd(stride, n) != 1 {
        stride -= 1;
    }
    stride.max(1)
}

/// 2026-11-23T00:00:00Z in Unix milliseconds.
const EPOCH_2026_11_23_MS: u64 = 20_780 * 86_400_000;

/// The simulated wall clock.
#[derive(Debug)]
struct Clock {
    ms: u64,
    day: u64,
    ymd: (u64, u64, u64),
}

impl Clock {
    fn new(start_ms: u64) -> Self {
        let day = start_ms / 86_400_000;
        Clock {
            ms: start_ms,
            day,
            ymd: civil_from_days(day),
        }
    }

    fn advance(&mut self, ms: u64) {
        self.ms += ms;
        let day = self.ms / 86_400_000;
        if day != self.day {
            self.day = day;
            self.ymd = civil_from_days(day);
        }
    }

    fn push_date(&self, out: &mut Vec<u8>, sep: u8) {
        let (y, m, d) = self.ymd;
        push_padded(out, y, 4);
        out.push(sep);
        push_padded(out, m, 2);
        out.push(sep);
        push_padded(out, d, 2);
    }

    fn push_time(&self, out: &mut Vec<u8>) {
        let ms_of_day = self.ms % 86_400_000;
        push_padded(out, ms_of_day / 3_600_000, 2);
        out.push(b':');
        push_padded(out, ms_of_day / 60_000 % 60, 2);
        out.push(b':');
        push_padded(out, ms_of_day / 1000 % 60, 2);
    }

    fn millis(&self) -> u64 {
        self.ms % 1000
    }

    /// The timestamp of a text line in `style`.
    fn push_ts(&self, out: &mut Vec<u8>, style: Style, micros: u64) {
        match style {
            Style::Iso => {
                self.push_date(out, b'-');
                out.push(b'T');
                self.push_time(out);
                out.push(b'.');
                push_padded(out, self.millis(), 3);
                out.push(b'Z');
            }
            Style::Python | Style::Logback => {
                self.push_date(out, b'-');
                out.push(b' ');
                self.push_time(out);
                out.push(if style == Style::Python { b',' } else { b'.' });
                push_padded(out, self.millis(), 3);
            }
            Style::Syslog => {
                let (_, m, d) = self.ymd;
                out.extend_from_slice(MONTHS[(m as usize + 11) % 12].as_bytes());
                out.push(b' ');
                if d < 10 {
                    out.push(b' ');
                }
                push_u64(out, d);
                out.push(b' ');
                self.push_time(out);
            }
            Style::Go | Style::Monolog => {
                if style == Style::Go {
                    self.push_date(out, b'/');
                    out.push(b' ');
                } else {
                    self.push_date(out, b'-');
                    out.push(b'T');
                }
                self.push_time(out);
                out.push(b'.');
                push_padded(out, self.millis() * 1000 + micros, 6);
                if style == Style::Monolog {
                    out.extend_from_slice(b"+00:00");
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Template rendering
// ------------------------------------------------------------------------------------------

/// The random source plus everything that turns `{slot}`s into text.
#[derive(Debug)]
struct Pen {
    rng: Rng,
}

impl Pen {
    fn hex(&mut self, out: &mut Vec<u8>, len: usize) {
        let mut bits = 0u64;
        for i in 0..len {
            if i.is_multiple_of(16) {
                bits = self.rng.next_u64();
            }
            out.push(HEX_DIGITS[(bits & 15) as usize]);
            bits >>= 4;
        }
    }

    fn uuid(&mut self, out: &mut Vec<u8>) {
        for (i, len) in [8, 4, 4, 4, 12].into_iter().enumerate() {
            if i > 0 {
                out.push(b'-');
            }
            self.hex(out, len);
        }
    }

    fn ip(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"10.");
        push_u64(out, self.rng.below(4));
        out.push(b'.');
        push_u64(out, self.rng.below(32));
        out.push(b'.');
        push_u64(out, 1 + self.rng.below(254));
    }

    fn words(&mut self, out: &mut Vec<u8>, count: usize) {
        for i in 0..count {
            if i > 0 {
                out.push(b' ');
            }
            out.extend_from_slice(self.rng.pick(WORDS).as_bytes());
        }
    }

    fn skewed(&mut self, out: &mut Vec<u8>, items: &[&str]) {
        out.extend_from_slice(items[self.rng.skewed(items.len())].as_bytes());
    }

    /// Renders `template` with the context of key `(c, m)`.
    fn render(&mut self, cat: &Catalog, c: usize, m: usize, template: &str, out: &mut Vec<u8>) {
        let mut rest = template.as_bytes();
        while let Some(open) = memchr::memchr(b'{', rest) {
            out.extend_from_slice(&rest[..open]);
            let tail = &rest[open + 1..];
            let Some(close) = memchr::memchr(b'}', tail) else {
                out.extend_from_slice(&rest[open..]);
                return;
            };
            self.slot(cat, c, m, &tail[..close], out);
            rest = &tail[close + 1..];
        }
        out.extend_from_slice(rest);
    }

    fn slot(&mut self, cat: &Catalog, c: usize, m: usize, name: &[u8], out: &mut Vec<u8>) {
        let rng = &mut self.rng;
        match name {
            b"n" => push_u64(out, rng.range(1, 100_000)),
            b"small" => push_u64(out, rng.below(10)),
            b"id" => push_u64(out, rng.range(1000, 10_000_000)),
            b"ms" => {
                let ms = rng.below(4) * rng.below(1500) + rng.below(40);
                push_u64(out, ms);
            }
            b"pct" => {
                push_u64(out, rng.below(100));
                out.push(b'.');
                push_u64(out, rng.below(10));
            }
            b"money" => {
                push_u64(out, rng.range(1, 2000));
                out.push(b'.');
                push_padded(out, rng.below(100), 2);
            }
            b"card" => push_padded(out, rng.below(10_000), 4),
            b"port" => {
                let port = rng.pick(&["5432", "6379", "443", "8080", "9092"]);
                out.extend_from_slice(port.as_bytes());
            }
            b"uuid" => self.uuid(out),
            b"hex8" => self.hex(out, 8),
            b"hex12" => self.hex(out, 12),
            b"hex16" => self.hex(out, 16),
            b"hex32" => self.hex(out, 32),
            b"ip" => self.ip(out),
            b"shorthex" => self.skewed(out, SHORT_HEX),
            b"user" => self.skewed(out, USERS),
            b"host" => self.skewed(out, HOSTS),
            b"table" => self.skewed(out, TABLES),
            b"topic" => self.skewed(out, TOPICS),
            b"route" => self.skewed(out, ROUTES),
            b"path" => self.skewed(out, PATHS),
            b"region" => self.skewed(out, REGIONS),
            b"job" => self.skewed(out, JOBS),
            b"flag" => self.skewed(out, FLAGS),
            b"status" => self.skewed(out, STATUS),
            b"status_text" => self.skewed(out, STATUS_TEXT),
            b"errno" => self.skewed(out, ERRNO),
            b"bucket" => self.skewed(out, BUCKETS),
            b"thread" => self.skewed(out, THREADS),
            b"ua" => out.extend_from_slice(rng.pick(USER_AGENTS).as_bytes()),
            b"email" => {
                self.skewed(out, USERS);
                out.extend_from_slice(b"@example.com");
            }
            b"comp" => out.extend_from_slice(cat.components[c].name.as_bytes()),
            b"method" => out.extend_from_slice(cat.components[c].methods[m].as_bytes()),
            b"key" => {
                let other = rng.index(cat.components.len());
                let method = rng.index(cat.methods_per_component);
                cat.push_key(out, other, method);
            }
            b"word" => out.extend_from_slice(rng.pick(WORDS).as_bytes()),
            b"words" => {
                let count = 3 + self.rng.index(7);
                self.words(out, count);
            }
            _ => {
                debug_assert!(
                    false,
                    "unknown template slot {}",
                    String::from_utf8_lossy(name)
                );
                out.extend_from_slice(name);
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// The generator
// ------------------------------------------------------------------------------------------

/// Invalid UTF-8 and NUL fragments put into lines when `invalid_utf8` is on.
const INVALID_FRAGMENTS: &[&[u8]] = &[
    b"\xff\xfe",
    b"\xc3\x28",
    b"caf\xe9 cr\xe8me",
    b"\xe2\x82",
    b"\x80\x80\x80",
    b"\0",
    b"user\0name",
    b"\xed\xa0\x80",
    b"\xf0\x9f\x98",
];

/// Probability that a line gets an invalid UTF-8 or NUL fragment.
const INVALID_LINE_RATE: f64 = 0.002;

/// Which key a line names in its key position.
#[derive(Debug, Clone, Copy)]
enum KeyForm {
    None,
    /// `PACT:<component>:<method>`, or the preamble key for preamble components.
    Method(usize, usize),
}

#[derive(Debug)]
struct Generator<'s, W: Write> {
    spec: &'s CorpusSpec,
    cat: Catalog,
    pen: Pen,
    clock: Clock,
    oracle: Oracle,
    out: BufWriter<W>,
    written: u64,
    /// The line being built (without its line terminator).
    line: Vec<u8>,
    /// The message being built, before it is placed (raw or JSON-escaped) into `line`.
    msg: Vec<u8>,
    /// Extra text (a stack trace) for the current JSON event.
    extra: Vec<u8>,
    /// Round-robin cursor over all method keys for error lines, and its step.
    cursor: usize,
    stride: usize,
    /// The next line is the last one and gets no `\n`.
    last_line: bool,
}

impl<'s, W: Write> Generator<'s, W> {
    fn new(spec: &'s CorpusSpec, out: W) -> Self {
        let mut rng = Rng::new(spec.seed);
        let start = EPOCH_2026_11_23_MS + rng.below(86_400_000);
        let cat = Catalog::new(spec);
        let keys = cat.key_count();
        Generator {
            spec,
            cursor: rng.index(keys),
            stride: golden_stride(keys),
            cat,
            pen: Pen { rng },
            clock: Clock::new(start),
            oracle: Oracle::new(&registered_component_ids(spec))
                .with_max_line_bytes(spec.max_line_bytes),
            out: BufWriter::with_capacity(OUTPUT_BUFFER_CAPACITY, out),
            written: 0,
            line: Vec::with_capacity(1 << 16),
            msg: Vec::with_capacity(1 << 12),
            extra: Vec::with_capacity(1 << 12),
            last_line: false,
        }
    }

    fn run(&mut self) -> io::Result<()> {
        let target = self.spec.target_bytes;
        let planned = self.spec.oversize_lines as u64;
        let mut oversize_done = 0u64;
        let mut next_long = self.pen.rng.range(20_000, 400_000);
        loop {
            let oversize_due = target * (oversize_done + 1) / (planned + 1);
            if oversize_done < planned && self.written >= oversize_due {
                self.oversize_line(oversize_done.is_multiple_of(2))?;
                oversize_done += 1;
                continue;
            }
            if self.written >= target && oversize_done == planned {
                break;
            }
            if self.spec.long_lines && self.written >= next_long {
                self.long_line()?;
                next_long = self.written + self.pen.rng.range(150_000, 450_000);
                continue;
            }
            // Steer towards the target error rate: more likely while behind, less ahead.
            let lines = self.oracle.lines() as f64;
            let errors = self.oracle.error_lines() as f64;
            let rate = self.spec.error_rate;
            let p = if errors < rate * (lines + 1.0) {
                rate * 1.6
            } else {
                rate * 0.4
            };
            let json = self.pen.rng.chance(self.spec.json_fraction);
            if self.pen.rng.chance(p) {
                self.error_event(json)?;
            } else {
                self.noise_event(json)?;
            }
        }
        if !self.spec.final_newline {
            self.last_line = true;
            let json = self.pen.rng.chance(self.spec.json_fraction);
            if self.pen.rng.chance(0.5) {
                let key = self.error_key();
                self.keyed_error(json, key)?;
            } else {
                self.noise_line(json)?;
            }
        }
        Ok(())
    }

    fn finish(mut self) -> io::Result<GroundTruth> {
        self.out.flush()?;
        let truth = self.oracle.finish();
        debug_assert_eq!(truth.bytes, self.written);
        Ok(truth)
    }

    /// Writes `self.line` as one line and hands it to the oracle.
    fn emit(&mut self) -> io::Result<()> {
        if self.spec.invalid_utf8 && self.pen.rng.chance(INVALID_LINE_RATE) {
            let fragment = INVALID_FRAGMENTS[self.pen.rng.index(INVALID_FRAGMENTS.len())];
            if self.pen.rng.chance(0.25) {
                let at = self.pen.rng.index(self.line.len() + 1);
                self.line.splice(at..at, fragment.iter().copied());
            } else {
                self.line.extend_from_slice(b" raw=");
                self.line.extend_from_slice(fragment);
            }
        }
        if self.last_line {
            self.oracle.final_line(&self.line);
        } else {
            if self.pen.rng.chance(self.spec.crlf_fraction) {
                self.line.push(b'\r');
            }
            self.oracle.line(&self.line);
            self.line.push(b'\n');
        }
        self.out.write_all(&self.line)?;
        self.written += self.line.len() as u64;
        self.line.clear();
        let step = self.pen.rng.below(40);
        self.clock.advance(step);
        Ok(())
    }

    /// A key for an error line: mostly round-robin over every method key (so a small corpus
    /// still covers them all), else skewed towards the first components (hot spots).
    fn error_key(&mut self) -> (usize, usize) {
        let methods = self.spec.methods_per_component;
        if self.pen.rng.chance(0.7) {
            self.cursor = (self.cursor + self.stride) % self.cat.key_count();
            (self.cursor / methods, self.cursor % methods)
        } else {
            let n = self.spec.components;
            let c = self.pen.rng.index(n).min(self.pen.rng.index(n));
            (c, self.pen.rng.index(methods))
        }
    }

    fn noise_key(&mut self) -> KeyForm {
        if self.pen.rng.chance(0.12) {
            KeyForm::None
        } else {
            let c = self.pen.rng.index(self.spec.components);
            KeyForm::Method(c, self.pen.rng.index(self.spec.methods_per_component))
        }
    }

    /// Writes the text prefix of a line of component `c` up to the message. Returns whether
    /// the key goes after the message instead (Monolog).
    fn text_prefix(&mut self, c: usize, level: &str, key: KeyForm) -> bool {
        let comp = &self.cat.components[c];
        let style = comp.style;
        let micros = self.pen.rng.below(1000);
        if style == Style::Monolog {
            self.line.push(b'[');
        }
        self.clock.push_ts(&mut self.line, style, micros);
        let line = &mut self.line;
        let push_key = |line: &mut Vec<u8>, open: &[u8], close: &[u8]| {
            if let KeyForm::Method(kc, km) = key {
                line.extend_from_slice(open);
                self.cat.push_line_key(line, kc, km);
                line.extend_from_slice(close);
            }
        };
        match style {
            Style::Iso => {
                line.push(b' ');
                line.extend_from_slice(level.as_bytes());
                push_key(line, b" [", b"]");
            }
            Style::Python => {
                line.push(b' ');
                line.extend_from_slice(level.as_bytes());
                line.push(b' ');
                line.extend_from_slice(comp.name.as_bytes());
                line.extend_from_slice(b".handlers:");
                push_key(line, b" [", b"]");
            }
            Style::Syslog => {
                line.push(b' ');
                line.extend_from_slice(comp.host.as_bytes());
                line.push(b' ');
                line.extend_from_slice(comp.name.as_bytes());
                line.push(b'[');
                push_u64(line, comp.pid);
                line.extend_from_slice(b"]: ");
                line.extend_from_slice(level.as_bytes());
                push_key(line, b" ", b"");
            }
            Style::Go => {
                line.push(b' ');
                line.extend_from_slice(level.as_bytes());
                push_key(line, b" ", b"");
            }
            Style::Logback => {
                line.extend_from_slice(b" [");
                let thread = THREADS[self.pen.rng.skewed(THREADS.len())];
                line.extend_from_slice(thread.as_bytes());
                line.extend_from_slice(b"] ");
                line.extend_from_slice(level.as_bytes());
                for _ in level.len()..5 {
                    line.push(b' ');
                }
                line.extend_from_slice(b" c.a.");
                line.extend_from_slice(comp.package.as_bytes());
                line.push(b'.');
                line.extend_from_slice(comp.class.as_bytes());
                line.extend_from_slice(b"Service -");
                push_key(line, b" [", b"]");
            }
            Style::Monolog => {
                line.extend_from_slice(b"] ");
                line.extend_from_slice(comp.name.as_bytes());
                line.push(b'.');
                line.extend_from_slice(level.as_bytes());
                line.push(b':');
            }
        }
        line.push(b' ');
        style == Style::Monolog
    }

    fn push_trailing_key(&mut self, key: KeyForm) {
        if let KeyForm::Method(c, m) = key {
            self.line.extend_from_slice(b" [");
            self.cat.push_line_key(&mut self.line, c, m);
            self.line.push(b']');
        }
    }

    /// A complete text line: prefix, `self.msg`, and the key where the style wants it.
    fn text_line(&mut self, c: usize, level: &str, key: KeyForm) -> io::Result<()> {
        let trailing = self.text_prefix(c, level, key);
        self.line.extend_from_slice(&self.msg);
        if trailing {
            self.push_trailing_key(key);
        }
        self.emit()
    }

    /// A complete JSON line. `level` is the raw level member (`"level":"info"`), `self.msg`
    /// the message and `self.extra`, if not empty, a stack trace named `extra_name`.
    fn json_line(
        &mut self,
        c: usize,
        level: &str,
        key: KeyForm,
        extra_name: &str,
    ) -> io::Result<()> {
        let comp = &self.cat.components[c];
        let line = &mut self.line;
        line.push(b'{');
        if c.is_multiple_of(2) {
            line.extend_from_slice(b"\"ts\":\"");
            self.clock.push_ts(line, Style::Iso, 0);
            line.push(b'"');
        } else {
            line.extend_from_slice(b"\"ts\":");
            push_u64(line, self.clock.ms);
        }
        line.push(b',');
        line.extend_from_slice(level.as_bytes());
        line.extend_from_slice(b",\"logger\":\"");
        line.extend_from_slice(comp.name.as_bytes());
        line.push(b'"');
        let method_key = match key {
            KeyForm::Method(kc, km) => Some((kc, km, self.cat.components[kc].uses_preamble)),
            KeyForm::None => None,
        };
        if let Some((kc, km, false)) = method_key {
            line.extend_from_slice(b",\"pact_key\":\"");
            self.cat.push_key(line, kc, km);
            line.push(b'"');
        }
        line.extend_from_slice(b",\"msg\":\"");
        if let Some((kc, _, true)) = method_key {
            line.push(b'[');
            line.extend_from_slice(self.cat.components[kc].preamble.as_bytes());
            line.extend_from_slice(b"] ");
        }
        push_json_escaped(line, &self.msg);
        line.push(b'"');
        if let Some((kc, km, true)) = method_key {
            // Pact's generated code: preamble prefix, then the method key as `pact_key`.
            line.extend_from_slice(b",\"pact_key\":\"");
            self.cat.push_key(line, kc, km);
            line.push(b'"');
        }
        if !self.extra.is_empty() {
            line.extend_from_slice(b",\"");
            line.extend_from_slice(extra_name.as_bytes());
            line.extend_from_slice(b"\":\"");
            push_json_escaped(line, &self.extra);
            line.push(b'"');
            self.extra.clear();
        }
        line.extend_from_slice(b",\"trace_id\":\"");
        self.pen.hex(line, 32);
        line.extend_from_slice(b"\",\"duration_ms\":");
        push_u64(line, self.pen.rng.below(2000));
        line.push(b'}');
        self.emit()
    }

    // --- noise ---------------------------------------------------------------------------

    fn noise_event(&mut self, json: bool) -> io::Result<()> {
        let r = self.pen.rng.below(1000);
        if r < 6 {
            self.near_miss(json)
        } else if r < 10 && !json {
            self.multi_line_noise()
        } else {
            self.noise_line(json)
        }
    }

    fn noise_level(&mut self, json: bool) -> &'static str {
        let r = self.pen.rng.below(100);
        match (json, r) {
            (false, 0..70) => "INFO",
            (false, 70..90) => "DEBUG",
            (false, 90..98) => "WARN",
            (false, _) => "TRACE",
            (true, 0..70) => r#""level":"info""#,
            (true, 70..85) => r#""level":"debug""#,
            (true, 85..93) => r#""level":"warn""#,
            (true, 93..97) => r#""level": "warning""#,
            (true, _) => r#""severity":"INFO""#,
        }
    }

    fn noise_line(&mut self, json: bool) -> io::Result<()> {
        let key = self.noise_key();
        let c = match key {
            KeyForm::Method(c, _) => c,
            KeyForm::None => self.pen.rng.index(self.spec.components),
        };
        let m = self.pen.rng.index(self.spec.methods_per_component);
        let template = self.pen.rng.pick(NOISE_TEMPLATES);
        self.msg.clear();
        self.pen.render(&self.cat, c, m, template, &mut self.msg);
        let level = self.noise_level(json);
        if json {
            self.json_line(c, level, key, "")
        } else {
            self.text_line(c, level, key)
        }
    }

    fn near_miss(&mut self, json: bool) -> io::Result<()> {
        let c = self.pen.rng.index(self.spec.components);
        let m = self.pen.rng.index(self.spec.methods_per_component);
        self.msg.clear();
        if json {
            let level = self.pen.rng.pick(NEAR_MISS_JSON_LEVELS);
            if self.pen.rng.chance(0.3) {
                self.msg
                    .extend_from_slice(br#"upstream replied {"level":"error","code":"#);
                push_u64(&mut self.msg, self.pen.rng.below(600));
                self.msg.push(b'}');
            } else {
                let template = self.pen.rng.pick(NOISE_TEMPLATES);
                self.pen.render(&self.cat, c, m, template, &mut self.msg);
            }
            self.json_line(c, level, KeyForm::Method(c, m), "")
        } else if self.pen.rng.chance(0.2) {
            // nginx: a lowercase [error] is no default pattern.
            self.clock.push_date(&mut self.line, b'/');
            self.line.push(b' ');
            self.clock.push_time(&mut self.line);
            self.line.extend_from_slice(b" [error] ");
            push_u64(&mut self.line, self.pen.rng.range(100, 9999));
            self.line.extend_from_slice(b"#0: *");
            push_u64(&mut self.line, self.pen.rng.range(1, 1_000_000));
            self.line.extend_from_slice(
                b" connect() failed (111: Connection refused) while connecting to upstream, \
                  client: ",
            );
            self.pen.ip(&mut self.line);
            self.emit()
        } else {
            let template = self.pen.rng.pick(NEAR_MISS_TEXT);
            self.pen.render(&self.cat, c, m, template, &mut self.line);
            self.emit()
        }
    }

    fn multi_line_noise(&mut self) -> io::Result<()> {
        let c = self.pen.rng.index(self.spec.components);
        let m = self.pen.rng.index(self.spec.methods_per_component);
        if self.pen.rng.chance(0.5) {
            // A warning with a stack trace: `at` lines without any error marker.
            self.msg.clear();
            self.msg.extend_from_slice(b"retrying after ");
            self.msg
                .extend_from_slice(self.pen.rng.pick(JAVA_EXCEPTIONS).as_bytes());
            self.msg.extend_from_slice(b": will try again");
            self.text_line(c, "WARN", KeyForm::Method(c, m))?;
            for _ in 0..self.pen.rng.range(2, 6) {
                self.java_frame(c);
                self.emit()?;
            }
            return Ok(());
        }
        // A Go panic: "panic:" and "goroutine" are no default patterns.
        self.line.extend_from_slice(
            b"panic: runtime error: invalid memory address or nil pointer dereference",
        );
        self.emit()?;
        self.line
            .extend_from_slice(b"[signal SIGSEGV: segmentation violation code=0x1 pc=0x");
        self.pen.hex(&mut self.line, 6);
        self.line.push(b']');
        self.emit()?;
        self.emit()?; // an empty line
        self.line.extend_from_slice(b"goroutine ");
        push_u64(&mut self.line, self.pen.rng.range(1, 500));
        self.line.extend_from_slice(b" [running]:");
        self.emit()?;
        self.line.extend_from_slice(b"main.(*");
        self.line
            .extend_from_slice(self.cat.components[c].class.as_bytes());
        self.line.extend_from_slice(b").Handle(0xc000");
        self.pen.hex(&mut self.line, 6);
        self.line.push(b')');
        self.emit()?;
        self.line.extend_from_slice(b"\t/app/internal/");
        self.line
            .extend_from_slice(self.cat.components[c].name.as_bytes());
        self.line.extend_from_slice(b"/handler.go:");
        push_u64(&mut self.line, self.pen.rng.range(10, 400));
        self.line.extend_from_slice(b" +0x1d");
        self.emit()
    }

    // --- errors --------------------------------------------------------------------------

    fn error_event(&mut self, json: bool) -> io::Result<()> {
        match self.pen.rng.below(100) {
            0..55 => {
                let key = self.error_key();
                self.keyed_error(json, key)
            }
            55..63 => self.multi_key_error(json),
            63..71 => self.system_error(json),
            71..75 => self.malformed_key_error(json),
            75..84 => self.java_error(json),
            84..93 => self.python_error(json),
            _ => self.rust_panic(json),
        }
    }

    /// One of the four usual error templates of key `(c, m)`, at random, and its stable
    /// level choice in `0..100`.
    fn error_template(&mut self, c: usize, m: usize) -> (usize, u64) {
        let slot = self.pen.rng.below(4);
        let n = ERROR_SUBJECTS.len() * ERROR_REASONS.len();
        let twin = self.cat.components[c].twin as u64;
        let h = splitmix64((twin << 32) ^ ((m as u64) << 8) ^ slot ^ self.spec.seed);
        ((h % n as u64) as usize, (h >> 32) % 100)
    }

    fn render_error(&mut self, c: usize, m: usize, template: usize) {
        let subject = ERROR_SUBJECTS[template / ERROR_REASONS.len()];
        let reason = ERROR_REASONS[template % ERROR_REASONS.len()];
        self.pen.render(&self.cat, c, m, subject, &mut self.msg);
        self.pen.render(&self.cat, c, m, reason, &mut self.msg);
    }

    fn text_error_level(choice: u64) -> &'static str {
        match choice {
            0..80 => "ERROR",
            80..92 => "CRITICAL",
            _ => "FATAL",
        }
    }

    fn json_error_level(choice: u64) -> &'static str {
        match choice {
            0..55 => r#""level":"error""#,
            55..63 => r#""level": "ERROR""#,
            63..69 => r#""level":"Fatal""#,
            69..77 => r#""level":"critical""#,
            77..83 => r#""level": "error""#,
            83..86 => r#""level":"FATAL""#,
            86..90 => r#""level": "Critical""#,
            90..94 => r#""Level":"Error""#,
            94..97 => r#""severity":"ERROR""#,
            _ => r#""LEVEL": "FATAL""#,
        }
    }

    fn keyed_error(&mut self, json: bool, (c, m): (usize, usize)) -> io::Result<()> {
        let (template, level) = self.error_template(c, m);
        self.msg.clear();
        self.render_error(c, m, template);
        let key = KeyForm::Method(c, m);
        if json {
            return self.json_line(c, Self::json_error_level(level), key, "");
        }
        if self.cat.components[c].uses_preamble && self.pen.rng.chance(0.5) {
            // Pact's generated code also names the method key after the preamble.
            self.msg.extend_from_slice(b" pact_key=");
            self.cat.push_key(&mut self.msg, c, m);
        }
        self.text_line(c, Self::text_error_level(level), key)
    }

    /// The downstream key `(c, m)` calls, one of two fixed ones, so that a failing call
    /// repeats with the same pair of keys.
    fn callee(&mut self, c: usize, m: usize) -> (usize, usize) {
        let h = splitmix64(((c as u64) << 32) ^ (m as u64) ^ self.pen.rng.below(2) ^ 0xCA11);
        let n = self.cat.key_count() as u64;
        let k = (h % n) as usize;
        (
            k / self.spec.methods_per_component,
            k % self.spec.methods_per_component,
        )
    }

    fn multi_key_error(&mut self, json: bool) -> io::Result<()> {
        let (c, m) = self.error_key();
        let (c2, m2) = self.callee(c, m);
        let (template, level) = self.error_template(c, m);
        self.msg.clear();
        self.msg.extend_from_slice(b"call to ");
        self.cat.push_key(&mut self.msg, c2, m2);
        self.msg.extend_from_slice(b" failed: ");
        self.render_error(c2, m2, template);
        if self.pen.rng.chance(0.4) {
            self.msg.extend_from_slice(b" (origin ");
            self.cat.push_key(&mut self.msg, c, m);
            self.msg.push(b')');
        }
        if self.pen.rng.chance(0.2) {
            let (c3, m3) = self.callee(c2, m2);
            self.msg.extend_from_slice(b"; compensating via ");
            self.cat.push_key(&mut self.msg, c3, m3);
        }
        let key = KeyForm::Method(c, m);
        if json {
            self.json_line(c, Self::json_error_level(level), key, "")
        } else {
            self.text_line(c, Self::text_error_level(level), key)
        }
    }

    fn system_error(&mut self, json: bool) -> io::Result<()> {
        let c = self.pen.rng.index(self.spec.components);
        let template = SYSTEM_ERRORS[self.pen.rng.skewed(SYSTEM_ERRORS.len())];
        self.msg.clear();
        self.pen.render(&self.cat, c, 0, template, &mut self.msg);
        if json {
            return self.json_line(c, r#""level":"error""#, KeyForm::None, "");
        }
        // Postgres-style prefix: `2026-11-23 13:17:47.560 UTC [12345] ERROR: ...`
        self.clock.push_ts(&mut self.line, Style::Logback, 0);
        self.line.extend_from_slice(b" UTC [");
        push_u64(&mut self.line, self.cat.components[c].pid);
        self.line.extend_from_slice(b"] ");
        self.line.extend_from_slice(&self.msg);
        self.emit()
    }

    fn malformed_key_error(&mut self, json: bool) -> io::Result<()> {
        let (c, m) = self.error_key();
        let (template, level) = self.error_template(c, m);
        let comp = &self.cat.components[c];
        let malformed = match self.pen.rng.below(6) {
            0 => "PACT:abc123".to_owned(),
            1 => format!("pact:{}:{}", comp.id, comp.methods[m]),
            2 => format!("PACT:{}:", comp.id),
            3 => format!("PACT:{}-{}", comp.id.replace('_', "-"), comp.methods[m]),
            4 => format!("PACT::{}", comp.methods[m]),
            _ => format!("PACT {}:{}", comp.id, comp.methods[m]),
        };
        self.msg.clear();
        self.msg.push(b'[');
        self.msg.extend_from_slice(malformed.as_bytes());
        self.msg.extend_from_slice(b"] ");
        self.render_error(c, m, template);
        if self.pen.rng.chance(0.3) {
            // A valid key later on the line still attributes it; `:v2` is not part of it.
            self.msg.extend_from_slice(b" key=");
            self.cat.push_key(&mut self.msg, c, m);
            self.msg.extend_from_slice(b":v2");
        }
        if json {
            self.json_line(c, Self::json_error_level(level), KeyForm::None, "")
        } else {
            self.text_line(c, Self::text_error_level(level), KeyForm::None)
        }
    }

    /// Appends a Java stack frame of component `c` to `self.line`.
    fn java_frame(&mut self, c: usize) {
        let comp = &self.cat.components[c];
        let line = &mut self.line;
        line.extend_from_slice(b"\tat com.acme.");
        line.extend_from_slice(comp.package.as_bytes());
        line.push(b'.');
        line.extend_from_slice(comp.class.as_bytes());
        let kind = self
            .pen
            .rng
            .pick(&["Service", "Repository", "Controller", "Client"]);
        line.extend_from_slice(kind.as_bytes());
        line.push(b'.');
        line.extend_from_slice(self.pen.rng.pick(METHOD_NAMES).as_bytes());
        line.push(b'(');
        line.extend_from_slice(comp.class.as_bytes());
        line.extend_from_slice(kind.as_bytes());
        line.extend_from_slice(b".java:");
        push_u64(line, self.pen.rng.range(20, 900));
        line.push(b')');
    }

    fn java_error(&mut self, json: bool) -> io::Result<()> {
        let (c, m) = self.error_key();
        let (template, level) = self.error_template(c, m);
        let exception = self.pen.rng.pick(JAVA_EXCEPTIONS);
        self.msg.clear();
        self.render_error(c, m, template);
        // The stack: `<exception>: <message>`, frames, maybe a cause, `... n more`.
        let mut stack = std::mem::take(&mut self.extra);
        stack.clear();
        stack.extend_from_slice(exception.as_bytes());
        stack.extend_from_slice(b": ");
        stack.extend_from_slice(&self.msg);
        let frames = self.pen.rng.range(4, 13);
        let cause_at = if self.pen.rng.chance(0.6) {
            self.pen.rng.range(1, frames)
        } else {
            u64::MAX
        };
        let key = KeyForm::Method(c, m);
        if json {
            for i in 0..frames {
                stack.push(b'\n');
                self.java_frame(c);
                stack.extend_from_slice(&self.line);
                self.line.clear();
                if i == cause_at {
                    stack.extend_from_slice(b"\nCaused by: ");
                    stack.extend_from_slice(self.pen.rng.pick(JAVA_CAUSES).as_bytes());
                }
            }
            self.extra = stack;
            return self.json_line(c, Self::json_error_level(level), key, "stack_trace");
        }
        self.text_line(c, Self::text_error_level(level), key)?;
        self.line.extend_from_slice(&stack);
        stack.clear();
        self.extra = stack;
        self.emit()?;
        for i in 0..frames {
            self.java_frame(c);
            self.emit()?;
            if i == cause_at {
                self.line.extend_from_slice(b"Caused by: ");
                self.line
                    .extend_from_slice(self.pen.rng.pick(JAVA_CAUSES).as_bytes());
                self.emit()?;
            }
        }
        self.line.extend_from_slice(b"\t... ");
        push_u64(&mut self.line, self.pen.rng.range(5, 80));
        self.line.extend_from_slice(b" more");
        self.emit()
    }

    fn python_error(&mut self, json: bool) -> io::Result<()> {
        let (c, m) = self.error_key();
        let (template, level) = self.error_template(c, m);
        let exception = self.pen.rng.pick(PY_EXCEPTIONS);
        let mut tb = std::mem::take(&mut self.extra);
        tb.clear();
        tb.extend_from_slice(b"Traceback (most recent call last):");
        let comp = &self.cat.components[c];
        for depth in 0..self.pen.rng.range(2, 5) {
            tb.extend_from_slice(b"\n  File \"/app/");
            tb.extend_from_slice(comp.name.as_bytes());
            tb.extend_from_slice(if depth == 0 {
                b"/handlers.py"
            } else {
                b"/core.py"
            });
            tb.extend_from_slice(b"\", line ");
            push_u64(&mut tb, self.pen.rng.range(10, 600));
            tb.extend_from_slice(b", in ");
            let function = if depth == 0 {
                comp.methods[m].as_str()
            } else {
                self.pen.rng.pick(METHOD_NAMES)
            };
            tb.extend_from_slice(function.as_bytes());
            tb.extend_from_slice(b"\n    result = self.");
            tb.extend_from_slice(self.pen.rng.pick(METHOD_NAMES).as_bytes());
            tb.extend_from_slice(b"(payload, timeout=");
            push_u64(&mut tb, self.pen.rng.range(1, 60));
            tb.push(b')');
        }
        tb.push(b'\n');
        tb.extend_from_slice(exception.as_bytes());
        tb.extend_from_slice(b": ");
        self.msg.clear();
        self.render_error(c, m, template);
        tb.extend_from_slice(&self.msg);
        self.msg.clear();
        self.msg.extend_from_slice(b"unhandled exception in ");
        self.msg
            .extend_from_slice(self.cat.components[c].methods[m].as_bytes());
        let key = KeyForm::Method(c, m);
        if json {
            self.extra = tb;
            return self.json_line(c, Self::json_error_level(level), key, "exc_info");
        }
        self.text_line(c, Self::text_error_level(level), key)?;
        for part in tb.split(|&b| b == b'\n') {
            self.line.extend_from_slice(part);
            self.emit()?;
        }
        tb.clear();
        self.extra = tb;
        Ok(())
    }

    fn rust_panic(&mut self, json: bool) -> io::Result<()> {
        let c = self.pen.rng.index(self.spec.components);
        let file = self
            .pen
            .rng
            .pick(&["main", "lib", "handler", "store/mod", "worker"]);
        let thread = self
            .pen
            .rng
            .pick(&["main", "tokio-runtime-worker", "ingest-2", "<unnamed>"]);
        self.msg.clear();
        self.msg.extend_from_slice(b"thread '");
        self.msg.extend_from_slice(thread.as_bytes());
        self.msg.extend_from_slice(b"' panicked at ");
        // Before Rust 1.73 the message came first, on the same line.
        let old_style = self.pen.rng.chance(0.3);
        if old_style {
            self.msg
                .extend_from_slice(b"'index out of bounds: the len is ");
            push_u64(&mut self.msg, self.pen.rng.below(8));
            self.msg.extend_from_slice(b" but the index is ");
            push_u64(&mut self.msg, self.pen.rng.range(8, 20));
            self.msg.extend_from_slice(b"', ");
        }
        self.msg.extend_from_slice(b"src/");
        self.msg.extend_from_slice(file.as_bytes());
        self.msg.extend_from_slice(b".rs:");
        push_u64(&mut self.msg, self.pen.rng.range(5, 500));
        self.msg.push(b':');
        push_u64(&mut self.msg, self.pen.rng.range(5, 40));
        if !old_style {
            self.msg.push(b':');
        }
        let detail: &[u8] = match self.pen.rng.below(3) {
            0 => b"called `Option::unwrap()` on a `None` value",
            1 => b"called `Result::unwrap()` on an `Err` value: Os { code: 111 }",
            _ => b"attempt to subtract with overflow",
        };
        if json {
            if !old_style {
                self.msg.push(b'\n');
                self.msg.extend_from_slice(detail);
            }
            return self.json_line(c, r#""level":"error""#, KeyForm::None, "");
        }
        self.line.extend_from_slice(&self.msg);
        self.emit()?;
        if !old_style {
            self.line.extend_from_slice(detail);
            self.emit()?;
        }
        self.line.extend_from_slice(
            b"note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace",
        );
        self.emit()
    }

    // --- long lines ----------------------------------------------------------------------

    /// Appends JSON items (`{"id":..}` separated by commas) until `self.line` is `len` long.
    fn fill_items(&mut self, len: usize) {
        let mut first = true;
        while self.line.len() < len {
            let line = &mut self.line;
            if !first {
                line.push(b',');
            }
            first = false;
            line.extend_from_slice(b"{\"id\":");
            push_u64(line, self.pen.rng.range(1, 10_000_000));
            line.extend_from_slice(b",\"sku\":\"");
            self.pen.hex(line, 8);
            line.extend_from_slice(b"\",\"qty\":");
            push_u64(line, self.pen.rng.range(1, 20));
            line.extend_from_slice(b",\"note\":\"");
            let words = 2 + self.pen.rng.index(6);
            self.pen.words(line, words);
            line.extend_from_slice(b"\",\"blob\":\"");
            for _ in 0..self.pen.rng.below(40) {
                let bits = self.pen.rng.next_u64();
                for k in 0..8 {
                    line.push(BASE64[((bits >> (k * 6)) & 63) as usize]);
                }
            }
            line.extend_from_slice(b"\"}");
        }
    }

    /// A line of `len` bytes or a little more, with a key and a big payload.
    fn big_line(&mut self, len: usize, error: bool, json: bool) -> io::Result<()> {
        let (c, m) = self.error_key();
        let key = KeyForm::Method(c, m);
        if json {
            // Built by hand: `json_line` would escape the payload.
            self.line.extend_from_slice(b"{\"ts\":");
            push_u64(&mut self.line, self.clock.ms);
            self.line.push(b',');
            let level = if error {
                r#""level":"error""#
            } else {
                r#""level":"debug""#
            };
            self.line.extend_from_slice(level.as_bytes());
            self.line.extend_from_slice(b",\"pact_key\":\"");
            self.cat.push_key(&mut self.line, c, m);
            self.line.extend_from_slice(b"\",\"msg\":\"");
            let msg: &[u8] = if error {
                b"request failed, payload attached"
            } else {
                b"response"
            };
            self.line.extend_from_slice(msg);
            self.line.extend_from_slice(b"\",\"payload\":[");
            self.fill_items(len);
            self.line.extend_from_slice(b"]}");
        } else {
            let trailing = self.text_prefix(c, if error { "ERROR" } else { "DEBUG" }, key);
            let msg: &[u8] = if error {
                b"request failed, payload dump: ["
            } else {
                b"response body: ["
            };
            self.line.extend_from_slice(msg);
            self.fill_items(len);
            self.line.push(b']');
            if trailing {
                self.push_trailing_key(key);
            }
        }
        self.emit()
    }

    fn long_line(&mut self) -> io::Result<()> {
        let len = self.pen.rng.range(8 << 10, 64 << 10) as usize;
        let error = self.pen.rng.chance(0.35);
        let json = self.pen.rng.chance(self.spec.json_fraction);
        self.big_line(len, error, json)
    }

    /// A line over `max_line_bytes`; an error one is plain text with `ERROR`.
    fn oversize_line(&mut self, error: bool) -> io::Result<()> {
        let len = self.spec.max_line_bytes + self.pen.rng.range(1 << 10, 64 << 10) as usize;
        let json = !error && self.pen.rng.chance(self.spec.json_fraction);
        self.big_line(len, error, json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registered() -> Vec<String> {
        ["auth_module", "payment_processor"]
            .map(String::from)
            .to_vec()
    }

    fn generate_vec(spec: &CorpusSpec) -> (Vec<u8>, GroundTruth) {
        let mut bytes = Vec::new();
        let truth = generate(spec, &mut bytes).expect("writing to a Vec cannot fail");
        (bytes, truth)
    }

    #[test]
    fn rng_is_deterministic() {
        let mut rng = Rng::new(0);
        let first: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        let mut again = Rng::new(0);
        assert_eq!(first, (0..3).map(|_| again.next_u64()).collect::<Vec<_>>());
        assert_ne!(Rng::new(1).next_u64(), first[0]);
        let mut rng = Rng::new(9);
        assert!((0..1000).all(|_| rng.below(7) < 7 && rng.range(3, 5) >= 3));
    }

    #[test]
    fn public_types_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<CorpusSpec>();
        assert_send_sync::<GroundTruth>();
        assert_send_sync::<Oracle>();
        assert_send_sync::<Fixture>();
    }

    #[test]
    fn golden_stride_visits_every_key() {
        for n in [1, 2, 5, 250, 300, 1024] {
            let stride = golden_stride(n);
            let mut seen = vec![false; n];
            let mut at = 0;
            for _ in 0..n {
                at = (at + stride) % n;
                seen[at] = true;
            }
            assert!(seen.iter().all(|&s| s), "n = {n}, stride = {stride}");
        }
    }

    #[test]
    fn civil_dates_and_padding() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_780), (2026, 11, 23));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        let mut out = Vec::new();
        push_padded(&mut out, 7, 3);
        push_padded(&mut out, 0, 2);
        push_padded(&mut out, 12345, 2);
        assert_eq!(out, b"0070012345");
    }

    #[test]
    fn oracle_hand_written_lines() {
        let pre = preamble_key("auth_module");
        let mut text = Vec::new();
        let lines: Vec<Vec<u8>> = vec![
            b"2026-11-23T13:17:47.560Z INFO [PACT:auth_module:validate_token] user 4412 ok".to_vec(),
            b"2026-11-23T13:17:47.561Z ERROR [PACT:auth_module:validate_token] denied 42".to_vec(),
            format!("ERROR [{pre}] token expired for user 7").into_bytes(),
            b"CRITICAL [PACT:legacy_soap_adapter:handle_request] upstream down".to_vec(),
            b"FATAL no key here 123\r".to_vec(),
            br#"{"level": "Error","msg":"x PACT:payment_processor:charge_card PACT:auth_module:a PACT:payment_processor:charge_card"}"#.to_vec(),
            br#"{"level" : "error"} errors=0 critical_path fatal Tracer traceback"#.to_vec(),
            b"Traceback (most recent call last):".to_vec(),
            b"thread 'main' panicked at src/main.rs:2:5:".to_vec(),
            b"ERR\xffOR \xff\xfe PACT:auth_module:x ERROR\0".to_vec(),
            b"pact:auth_module:x PACT:abc123 PACT:auth-module:y ERROR".to_vec(),
        ];
        for line in &lines {
            text.extend_from_slice(line);
            text.push(b'\n');
        }
        // A line containing ERROR just over the limit, then one exactly at the limit.
        let max = 256;
        let mut long = b"ERROR [PACT:auth_module:x] ".to_vec();
        long.resize(max + 1, b'x');
        text.extend_from_slice(&long);
        text.push(b'\n');
        long.truncate(max);
        text.extend_from_slice(&long);
        text.push(b'\n');
        // An unterminated final error line.
        text.extend_from_slice(b"ERROR [PACT:auth_module:tail] 0xdeadbeef");

        let mut oracle = Oracle::new(&registered()).with_max_line_bytes(max);
        for chunk in text.chunks(7) {
            oracle.feed(chunk);
        }
        let t = oracle.finish();
        assert_eq!(t.bytes, text.len() as u64);
        assert_eq!(t.lines, 14);
        assert_eq!(t.long_lines, 1);
        assert_eq!(t.error_lines, 11);
        assert_eq!(t.unattributed_lines, 4); // FATAL, Traceback, panicked, malformed keys
        assert_eq!(t.keyed_lines, 7);
        assert_eq!(t.unregistered_lines, 1); // legacy_soap_adapter
        assert_eq!(t.registered_lines, 6); // incl. the preamble key via its second segment
        assert_eq!(t.error_key_counts["PACT:payment_processor:charge_card"], 1);
        assert_eq!(t.error_key_counts["PACT:auth_module:a"], 1);
        assert_eq!(t.error_key_counts["PACT:auth_module:x"], 2);
        assert_eq!(t.error_key_counts["PACT:auth_module:validate_token"], 1);
        assert_eq!(t.error_key_counts[&pre], 1);
        assert_eq!(t.distinct_keys, 7);
        assert_eq!(t.distinct_keys, t.error_key_counts.len() as u64);
        assert_eq!(t.distinct_fingerprints, 11);

        // The same through `line`/`final_line`.
        let mut by_line = Oracle::new(&registered()).with_max_line_bytes(max);
        let mut parts = text.split(|&b| b == b'\n').peekable();
        while let Some(part) = parts.next() {
            if parts.peek().is_some() {
                by_line.line(part)
            } else {
                by_line.final_line(part)
            }
        }
        assert_eq!(by_line.finish(), t);
    }

    #[test]
    fn oracle_crlf_and_fingerprints() {
        let data = b"ERROR id 1 took 5ms\r\nERROR id 22 took 7ms\nERROR id 3 took 1ms uuid \
            123e4567-e89b-12d3-a456-426614174000\nERROR id 3 took 1ms uuid \
            00000000-0000-0000-0000-000000000000\r\nERROR hex deadbeef01\nERROR hex 12345678\n";
        let t = Oracle::truth_of(&[], data);
        assert_eq!((t.lines, t.error_lines, t.unattributed_lines), (6, 6, 6));
        // <n> twice, <uuid> twice, <hex> twice (an 8-digit number is hex first).
        assert_eq!(t.distinct_fingerprints, 3);
        let crlf = Oracle::truth_of(&[], b"ERROR a\r\n");
        let lf = Oracle::truth_of(&[], b"ERROR a\n");
        assert_eq!(lf.bytes + 1, crlf.bytes);
        assert_eq!(
            Oracle::truth_of(&[], b"ERROR a\r\nERROR a\n").distinct_fingerprints,
            1
        );
        assert_eq!(Oracle::truth_of(&[], b"ERROR a\r").error_lines, 1);
        assert_eq!(Oracle::truth_of(&[], b"").lines, 0);
        assert_eq!(Oracle::truth_of(&[], b"\n\n").lines, 2);
        assert_eq!(Oracle::truth_of(&[], b"a\nb").lines, 2);
    }

    #[test]
    fn candidate_test_is_a_superset_of_the_error_regex() {
        let re = bytes_regex(ERROR_PATTERN);
        let check = |line: &[u8]| {
            if re.is_match(line) {
                assert!(may_be_error_line(line), "{}", String::from_utf8_lossy(line));
            }
        };
        for literal in [
            &b"ERROR"[..],
            b"CRITICAL",
            b"FATAL",
            b"Traceback",
            b"panicked at",
            br#""level":"error""#,
            br#""LEVEL": "FATAL""#,
            br#""Level":"Critical""#,
            br#""level": "error""#,
        ] {
            for (prefix, suffix) in [(&b""[..], &b""[..]), (b"x\"", b"\""), (b"\xff ", b" \0")] {
                check(&[prefix, literal, suffix].concat());
            }
        }
        assert!(!may_be_error_line(
            br#""level":"info" Tracer PACT:a:b errors=0 "level": "warn""#
        ));
        let (bytes, _) = generate_vec(&CorpusSpec::new(11, 1 << 20));
        bytes.split(|&b| b == b'\n').for_each(check);
    }

    proptest::proptest! {
        #[test]
        fn candidate_test_is_a_superset_on_fragment_soup(
            parts in proptest::collection::vec(proptest::sample::select(vec![
                "ERR", "OR", "ERROR", "CRIT", "ICAL", "FATAL", "FAT", "AL", "Trace", "back",
                "panicked", " at", " ", "\"", "\"level\"", "\"LeVeL\"", ":", "error", "Fatal",
                "cRiTiCaL", "x", "\u{ff}",
            ]), 0..10)
        ) {
            let line = parts.concat();
            if bytes_regex(ERROR_PATTERN).is_match(line.as_bytes()) {
                proptest::prop_assert!(may_be_error_line(line.as_bytes()), "{}", line);
            }
        }
    }

    #[test]
    fn deterministic_from_seed() {
        let spec = CorpusSpec::new(7, 1 << 20);
        let (a, ta) = generate_vec(&spec);
        let (b, tb) = generate_vec(&spec);
        assert!(a == b, "same seed, different bytes");
        assert_eq!(ta, tb);
        let (c, tc) = generate_vec(&CorpusSpec::new(8, 1 << 20));
        assert!(a != c);
        assert_ne!(ta, tc);
    }

    #[test]
    fn truth_matches_a_fresh_oracle_and_invariants_hold() {
        for seed in 0..4 {
            let mut spec = CorpusSpec::new(seed, 300_000);
            spec.json_fraction = 0.5;
            let (bytes, truth) = generate_vec(&spec);
            let again = Oracle::truth_of(&registered_component_ids(&spec), &bytes);
            assert_eq!(truth, again);
            assert_eq!(truth.bytes, bytes.len() as u64);
            assert_eq!(
                truth.error_lines,
                truth.keyed_lines + truth.unattributed_lines
            );
            assert_eq!(
                truth.keyed_lines,
                truth.registered_lines + truth.unregistered_lines
            );
            assert_eq!(bytes.ends_with(b"\n"), spec.final_newline);
        }
    }

    #[test]
    fn bad_specs_are_rejected() {
        let mut spec = CorpusSpec::new(1, 1000);
        spec.error_rate = 1.5;
        let err = generate(&spec, io::sink()).expect_err("rate over 1");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let mut spec = CorpusSpec::new(1, 1000);
        spec.components = 0;
        assert!(generate(&spec, io::sink()).is_err());
    }

    #[test]
    fn five_megabytes_have_every_feature() {
        let spec = CorpusSpec::new(42, 5 << 20);
        let (bytes, t) = generate_vec(&spec);
        assert!(
            t.bytes >= 5 << 20 && t.bytes < (5 << 20) + (1 << 20),
            "{}",
            t.bytes
        );
        assert!(t.distinct_keys >= 200, "{} distinct keys", t.distinct_keys);
        assert_eq!(t.long_lines, 1);
        assert!(t.unregistered_lines > 0 && t.unattributed_lines > 0 && t.registered_lines > 0);
        let rate = t.error_lines as f64 / t.lines as f64;
        assert!((0.01..=0.03).contains(&rate), "error rate {rate}");
        assert!(
            t.distinct_fingerprints < t.error_lines,
            "errors should repeat"
        );
        let has = |needle: &[u8]| memchr::memmem::find(&bytes, needle).is_some();
        for needle in [
            &b"\r\n"[..],
            b"\0",
            b"\xff",
            b"\tat com.acme.",
            b"Caused by: ",
            b"Traceback (most recent call last):",
            b"  File \"/app/",
            b"panicked at",
            b"\"level\":\"error\"",
            b"\"level\": \"ERROR\"",
            b"errors=0",
            b"critical_path",
            b"Tracer",
            b"fatality",
            b"panel",
            b"CRITICAL",
            b"FATAL",
            b"\"level\":\"info\"",
        ] {
            assert!(has(needle), "missing {}", String::from_utf8_lossy(needle));
        }
        let preamble = |k: &str| {
            let hash = k.split(':').nth(1).unwrap_or_default();
            hash.len() == 6 && hash.bytes().all(|b| b.is_ascii_hexdigit())
        };
        assert!(
            t.error_key_counts.keys().any(|k| preamble(k)),
            "no preamble keys"
        );
        let sizes: Vec<usize> = bytes.split(|&b| b == b'\n').map(<[u8]>::len).collect();
        assert!(
            sizes
                .iter()
                .filter(|&&n| (8 << 10..64 << 10).contains(&n))
                .count()
                >= 5
        );
        assert_eq!(
            sizes
                .iter()
                .filter(|&&n| n > DEFAULT_MAX_LINE_BYTES)
                .count(),
            1
        );
        // The oversize line of this spec (the first one) contains ERROR, yet is no error line.
        assert!(bytes.split(|&b| b == b'\n').any(
            |l| l.len() > DEFAULT_MAX_LINE_BYTES && memchr::memmem::find(l, b"ERROR").is_some()
        ));
    }

    #[test]
    fn json_only_corpus_is_valid_json_lines() {
        let mut spec = CorpusSpec::new(3, 400_000);
        spec.json_fraction = 1.0;
        spec.invalid_utf8 = false;
        spec.crlf_fraction = 0.0;
        let (bytes, t) = generate_vec(&spec);
        assert!(t.error_lines > 0);
        for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let parsed = serde_json::from_slice::<serde_json::Value>(line);
            assert!(
                parsed.is_ok(),
                "not JSON: {}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn templates_have_known_slots_and_noise_is_no_error() {
        let spec = CorpusSpec::new(1, 0);
        let cat = Catalog::new(&spec);
        let mut pen = Pen { rng: Rng::new(1) };
        let all = NOISE_TEMPLATES
            .iter()
            .chain(ERROR_SUBJECTS)
            .chain(ERROR_REASONS)
            .chain(SYSTEM_ERRORS)
            .chain(NEAR_MISS_TEXT);
        for template in all {
            let mut out = Vec::new();
            pen.render(&cat, 0, 0, template, &mut out);
            assert!(!out.contains(&b'{'), "unrendered slot in {template}");
        }
        let errors = |text: &[u8]| Oracle::truth_of(&[], text).error_lines;
        for template in NOISE_TEMPLATES
            .iter()
            .chain(NEAR_MISS_TEXT)
            .chain(NEAR_MISS_JSON_LEVELS)
        {
            assert_eq!(errors(template.as_bytes()), 0, "{template}");
        }
        for template in SYSTEM_ERRORS {
            assert_eq!(errors(template.as_bytes()), 1, "{template}");
        }
    }

    #[test]
    fn manifest_has_the_reference_shape() {
        let spec = CorpusSpec::new(1, 0);
        let json = manifest_json(&spec, "testdata/pact_project/");
        let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        let comps = v["components"].as_object().expect("components object");
        assert_eq!(comps.len(), 45);
        let e = &comps["auth_module"];
        assert_eq!(e["component_id"], "auth_module");
        assert_eq!(
            e["contract_path"],
            "testdata/pact_project/contracts/auth_module/interface.json"
        );
        assert_eq!(e["pact_project"], "testdata/pact_project");
        for field in ["test_path", "source_path", "language", "last_registered"] {
            assert!(e[field].is_string(), "{field}");
        }
        assert!(!comps.contains_key("legacy_soap_adapter"));
        assert!(json.starts_with("{\n  \"components\": {\n    \""));
    }

    #[test]
    fn committed_fixtures_are_current() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata");
        let truth_json = std::fs::read_to_string(root.join("logs.truth.json"))
            .expect("testdata/logs.truth.json: run `cargo run --example gen_fixtures`");
        let truths: BTreeMap<String, GroundTruth> =
            serde_json::from_str(&truth_json).expect("truth.json parses");
        let fixtures = fixtures();
        assert_eq!(truths.len(), fixtures.len());
        let registered = registered_component_ids(&fixtures[0].spec);
        for fixture in &fixtures {
            let raw = std::fs::read(root.join("logs").join(fixture.path)).expect("fixture exists");
            let bytes = if fixture.gzip {
                let mut out = Vec::new();
                io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&raw[..]), &mut out)
                    .expect("valid gzip");
                out
            } else {
                raw
            };
            let (fresh, fresh_truth) = generate_vec(&fixture.spec);
            assert!(
                fresh == bytes,
                "{} is stale: run `cargo run --example gen_fixtures`",
                fixture.path
            );
            assert_eq!(truths[fixture.path], fresh_truth);
            let truth = &truths[fixture.path];
            assert_eq!(*truth, Oracle::truth_of(&registered, &bytes));
            // Every fixture exercises every attribution outcome.
            assert!(truth.registered_lines > 0, "{}", fixture.path);
            assert!(truth.unregistered_lines > 0, "{}", fixture.path);
            assert!(truth.unattributed_lines > 0, "{}", fixture.path);
        }
        let manifest = std::fs::read_to_string(root.join("manifest.json")).expect("manifest");
        assert_eq!(
            manifest.trim_end(),
            manifest_json(&fixtures[0].spec, FIXTURE_PROJECT_DIR)
        );
    }
}
