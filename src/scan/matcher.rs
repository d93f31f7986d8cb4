//! The [`Scanner`]: finds the error lines of a region of log lines in one pass.
//!
//! # Model
//!
//! A *region* is a byte slice made of lines: every `\n` ends a line, and a non-empty tail
//! without `\n` is one more line (the framing layer passes complete lines except at end of
//! file). A line never includes its `\n`; a trailing `\r` is not part of the line reported
//! to the [`Sink`], but patterns are matched against the line with it.
//!
//! A line is an *error line* when any error pattern matches anywhere in it. Patterns use the
//! syntax of the [`regex`] crate, with Unicode mode off by default: `(?i)` is ASCII case
//! folding (`(?i)error` matches `ERROR` and `eRrOr`, and `(?i)é` matches only `é`), `.` and
//! `\w` are byte-oriented, and lines need not be UTF-8. Non-ASCII literals are allowed and
//! match their UTF-8 encoding. A line longer than `max_line_bytes` (counting a trailing `\r`)
//! is an *over-long* line: it is counted in [`ScanStats::long_lines`] and never reported.
//!
//! Internal iteration (the scanner pushes into a [`Sink`], like grep-searcher) keeps the hot
//! loop in one function and lets the sink stop the scan early; nothing allocates per line.
//!
//! # How patterns are matched
//!
//! At build time each pattern is classified:
//!
//! - *literal*: it parses (Unicode off) to a plain literal, possibly after a leading `(?i)`
//!   (escapes such as `\[ERROR\]` are literals);
//! - *regex*: everything else. Case-insensitive literals with non-ASCII bytes are treated as
//!   regexes too.
//!
//! Literals are found by one vectorised pass over the whole region, never a loop over lines:
//!
//! - If at least one literal is case-insensitive (the default set has several), the block
//!   kernel of `simd.rs` looks for the first up-to-3 bytes of every literal (folded with
//!   `| 0x20` for case-insensitive literals, exact for case-sensitive ones) at every position
//!   and verifies each candidate against the whole literal. On generated logs with the
//!   default patterns this runs at about 4 GB/s per core with AVX2 on AMD Zen 3, some 8x
//!   faster than aho-corasick with `ascii_case_insensitive` (which has no prefilter); see
//!   `examples/scan_throughput.rs`.
//! - If all literals are case-sensitive, aho-corasick (leftmost-first) searches the region;
//!   after a hit the search resumes after the end of the hit's line. The same block kernel,
//!   without patterns, counts the lines of each stretch just searched, while it is in cache.
//! - With more than 16 distinct prefixes (the kernel's limit) the literals join the regexes.
//!
//! Regex patterns are combined into one `regex::bytes::Regex` searched over the region with
//! `find_at`. A match starting at `s` selects the line `L` containing `s`; `L` is an error line
//! iff a second regex (the same patterns) matches `L` alone, and either way the search resumes
//! after `L`. For this to be exact, every match inside a line must also be a match inside the
//! region: the region regex therefore has `\A`/`\z` rewritten to `^`/`$` in multi-line mode
//! and CRLF-mode line anchors relaxed to "always true" (which only adds candidates, and
//! candidates are checked). Literal and regex results are merged in line order.
//!
//! The kernel (AVX2, SSE2 or scalar) is chosen at build time by run-time CPU feature
//! detection, or explicitly with [`ScannerBuilder::kernel`]. All kernels give identical
//! results; the oracle tests below check that for every kernel the machine supports.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, Input, MatchKind};
use regex::bytes::{Regex, RegexBuilder};
use regex_syntax::ParserBuilder;
use regex_syntax::hir::{Capture, Hir, HirKind, Look, Repetition};

use super::keys::{self, PactKey, PactKeys};
pub use super::simd::Kernel;
use super::simd::{self, Engine, Prefilter};

/// The error patterns used when the configuration names none.
pub const DEFAULT_ERROR_PATTERNS: &[&str] = &[
    "ERROR",
    "CRITICAL",
    "FATAL",
    "Traceback",
    "panicked at",
    r#"(?i)"level":"error""#,
    r#"(?i)"level":"fatal""#,
    r#"(?i)"level":"critical""#,
    r#"(?i)"level": "error""#,
    r#"(?i)"level": "fatal""#,
    r#"(?i)"level": "critical""#,
];

/// Default for [`ScannerBuilder::max_line_bytes`]: 1 MiB.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1 << 20;

/// Smallest accepted [`ScannerBuilder::max_line_bytes`]: lines shorter than one 64-byte kernel
/// block are never checked for length.
pub const MIN_MAX_LINE_BYTES: usize = 64;

/// Why a [`Scanner`] could not be built.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    /// A pattern is the empty string (or only `(?i)`): it would make every line an error line.
    #[error("error pattern #{index} is empty")]
    Empty {
        /// Position of the pattern in the list.
        index: usize,
    },
    /// A pattern is not a valid regular expression.
    #[error("invalid error pattern {pattern:?}: {source}")]
    Syntax {
        /// The offending pattern.
        pattern: String,
        /// What the parser reported.
        #[source]
        source: Box<regex_syntax::Error>,
    },
    /// The combined patterns could not be compiled (usually: too large).
    #[error("cannot compile the error patterns: {0}")]
    Compile(#[source] Box<regex::Error>),
    /// The case-sensitive literals could not be compiled into an automaton.
    #[error("cannot build the literal matcher: {0}")]
    Literals(#[source] aho_corasick::BuildError),
    /// The requested kernel cannot run on this CPU.
    #[error("the {0:?} kernel is not supported on this CPU")]
    UnsupportedKernel(Kernel),
    /// `max_line_bytes` is below [`MIN_MAX_LINE_BYTES`].
    #[error("max_line_bytes must be at least {MIN_MAX_LINE_BYTES}, got {0}")]
    MaxLineBytes(usize),
}

/// Configures and builds a [`Scanner`].
///
/// ```
/// use sentinel::scan::{Kernel, ScannerBuilder};
/// use sentinel::scan::matcher::DEFAULT_ERROR_PATTERNS;
///
/// let scanner = ScannerBuilder::new()
///     .max_line_bytes(64 * 1024)
///     .kernel(Kernel::Auto)
///     .build(DEFAULT_ERROR_PATTERNS)?;
/// assert!(scanner.is_error_line(b"2024-01-01 ERROR db down"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ScannerBuilder {
    max_line_bytes: usize,
    kernel: Kernel,
}

impl Default for ScannerBuilder {
    fn default() -> Self {
        ScannerBuilder {
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            kernel: Kernel::Auto,
        }
    }
}

impl ScannerBuilder {
    /// A builder with the defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Lines longer than `n` bytes (without `\n`, with a trailing `\r`) are counted as
    /// over-long and never reported. Default: [`DEFAULT_MAX_LINE_BYTES`] (1 MiB); must be at
    /// least [`MIN_MAX_LINE_BYTES`] (64), checked by [`build`](Self::build).
    pub fn max_line_bytes(&mut self, n: usize) -> &mut Self {
        self.max_line_bytes = n;
        self
    }

    /// Selects the block kernel. Default: [`Kernel::Auto`], the fastest the CPU supports.
    pub fn kernel(&mut self, k: Kernel) -> &mut Self {
        self.kernel = k;
        self
    }

    /// Compiles `patterns` into a scanner. An empty list gives a scanner that only counts.
    ///
    /// # Errors
    ///
    /// [`PatternError`] if a pattern is empty or invalid, the patterns are too large to
    /// compile, the chosen kernel is not supported on this CPU, or `max_line_bytes` is too
    /// small.
    pub fn build<I, P>(&self, patterns: I) -> Result<Scanner, PatternError>
    where
        I: IntoIterator<Item = P>,
        P: AsRef<str>,
    {
        if self.max_line_bytes < MIN_MAX_LINE_BYTES {
            return Err(PatternError::MaxLineBytes(self.max_line_bytes));
        }
        let engine =
            Engine::new(self.kernel).ok_or(PatternError::UnsupportedKernel(self.kernel))?;

        let mut literals: Vec<(Vec<u8>, bool, Hir)> = Vec::new();
        let mut regexes: Vec<Hir> = Vec::new();
        for (index, pattern) in patterns.into_iter().enumerate() {
            match classify(pattern.as_ref(), index)? {
                Class::Literal { bytes, ci, hir } => literals.push((bytes, ci, hir)),
                Class::Regex(hir) => regexes.push(hir),
                Class::Never => {}
            }
        }

        let mut matcher = LiteralMatcher::None;
        if literals.iter().any(|(_, ci, _)| *ci) {
            let prefilter = Prefilter::new(literals.iter().map(|(b, ci, _)| (b.as_slice(), *ci)));
            match prefilter {
                Some(pf) => matcher = LiteralMatcher::Prefilter(Box::new(pf)),
                None => regexes.extend(literals.drain(..).map(|(_, _, hir)| hir)),
            }
        } else if !literals.is_empty() {
            let ac = AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostFirst)
                .build(literals.iter().map(|(b, _, _)| b))
                .map_err(PatternError::Literals)?;
            matcher = LiteralMatcher::AhoCorasick(ac);
        }
        let regex = if regexes.is_empty() {
            None
        } else {
            Some(RegexPair::new(&regexes)?)
        };
        Ok(Scanner {
            inner: Arc::new(Inner {
                engine,
                max_line_bytes: self.max_line_bytes,
                literals: matcher,
                regex,
            }),
        })
    }
}

/// What a pattern turned out to be.
enum Class {
    Literal {
        bytes: Vec<u8>,
        ci: bool,
        hir: Hir,
    },
    Regex(Hir),
    /// A literal containing `\n`: it can never match inside a line.
    Never,
}

fn classify(pattern: &str, index: usize) -> Result<Class, PatternError> {
    if pattern.is_empty() || pattern == "(?i)" {
        return Err(PatternError::Empty { index });
    }
    let parse = |p: &str| {
        ParserBuilder::new()
            .unicode(false)
            .utf8(false)
            .build()
            .parse(p)
            .map_err(Box::new)
    };
    let hir = parse(pattern).map_err(|source| PatternError::Syntax {
        pattern: pattern.to_owned(),
        source,
    })?;
    let literal = |bytes: &[u8], ci: bool, hir: Hir| {
        if bytes.contains(&b'\n') {
            Class::Never
        } else {
            Class::Literal {
                bytes: bytes.to_vec(),
                ci,
                hir,
            }
        }
    };
    if let HirKind::Literal(lit) = hir.kind() {
        let bytes = lit.0.to_vec();
        return Ok(literal(&bytes, false, hir));
    }
    // `(?i)` followed by a literal. Any `(?` in the rest could switch flags again (or group),
    // so such patterns are left to the regex engine.
    if let Some(rest) = pattern.strip_prefix("(?i)")
        && !rest.contains("(?")
        && let Ok(rest_hir) = parse(rest)
        && let HirKind::Literal(lit) = rest_hir.kind()
        && lit.0.is_ascii()
    {
        let bytes = lit.0.to_vec();
        return Ok(literal(&bytes, true, hir));
    }
    Ok(Class::Regex(hir))
}

/// The combined regex patterns.
#[derive(Debug)]
struct RegexPair {
    /// Searched over a whole region; every match inside a line is also a match here.
    region: Regex,
    /// Decides a candidate line; exactly the semantics of the patterns on one line.
    line: Regex,
}

impl RegexPair {
    fn new(hirs: &[Hir]) -> Result<RegexPair, PatternError> {
        // The HIR printer emits explicit flags (`(?-u:...)`, `(?m:^)`), so its output is parsed
        // with the default flags of a bytes regex.
        let compile = |hir: Hir| {
            RegexBuilder::new(&hir.to_string())
                .build()
                .map_err(|e| PatternError::Compile(Box::new(e)))
        };
        let line = Hir::alternation(hirs.iter().map(|h| rewrite(h, false)).collect());
        let region = Hir::alternation(hirs.iter().map(|h| rewrite(h, true)).collect());
        Ok(RegexPair {
            region: compile(region)?,
            line: compile(line)?,
        })
    }
}

/// Copies `hir` without capture groups (so that combining patterns cannot clash on group
/// names). With `for_region`, also makes every match inside a line a match inside the region
/// (see the module docs).
fn rewrite(hir: &Hir, for_region: bool) -> Hir {
    match hir.kind() {
        HirKind::Empty => Hir::empty(),
        HirKind::Literal(lit) => Hir::literal(lit.0.clone()),
        HirKind::Class(class) => Hir::class(class.clone()),
        HirKind::Look(look) if for_region => match look {
            Look::Start => Hir::look(Look::StartLF),
            Look::End => Hir::look(Look::EndLF),
            Look::StartCRLF | Look::EndCRLF => Hir::empty(),
            other => Hir::look(*other),
        },
        HirKind::Look(look) => Hir::look(*look),
        HirKind::Repetition(rep) => Hir::repetition(Repetition {
            min: rep.min,
            max: rep.max,
            greedy: rep.greedy,
            sub: Box::new(rewrite(&rep.sub, for_region)),
        }),
        HirKind::Capture(Capture { sub, .. }) => rewrite(sub, for_region),
        HirKind::Concat(subs) => Hir::concat(subs.iter().map(|h| rewrite(h, for_region)).collect()),
        HirKind::Alternation(subs) => {
            Hir::alternation(subs.iter().map(|h| rewrite(h, for_region)).collect())
        }
    }
}

#[derive(Debug)]
enum LiteralMatcher {
    None,
    Prefilter(Box<Prefilter>),
    AhoCorasick(AhoCorasick),
}

#[derive(Debug)]
struct Inner {
    engine: Engine,
    max_line_bytes: usize,
    literals: LiteralMatcher,
    regex: Option<RegexPair>,
}

/// Finds error lines in regions of log lines. Build once, share by `&` or clone (cheap: one
/// reference count) across threads.
///
/// ```
/// use sentinel::scan::Scanner;
/// use sentinel::scan::matcher::{DEFAULT_ERROR_PATTERNS, from_fn};
///
/// let scanner = Scanner::new(DEFAULT_ERROR_PATTERNS)?;
/// let region = b"ok\n{\"level\":\"ERROR\",\"msg\":\"PACT:billing:charge failed\"}\r\nok too\n";
/// let mut found = Vec::new();
/// let stats = scanner.scan(region, &mut from_fn(|line| {
///     found.push((line.offset(), line.first_key().map(|k| k.as_bytes().to_vec())));
///     true
/// }))?;
/// assert_eq!(found, [(3, Some(b"PACT:billing:charge".to_vec()))]);
/// assert_eq!((stats.lines, stats.error_lines), (3, 1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Scanner {
    inner: Arc<Inner>,
}

impl Scanner {
    /// Builds a scanner with the [`ScannerBuilder`] defaults.
    ///
    /// # Errors
    ///
    /// See [`ScannerBuilder::build`].
    pub fn new<I, P>(patterns: I) -> Result<Scanner, PatternError>
    where
        I: IntoIterator<Item = P>,
        P: AsRef<str>,
    {
        ScannerBuilder::new().build(patterns)
    }

    /// The kernel actually in use (never [`Kernel::Auto`]).
    pub fn kernel(&self) -> Kernel {
        self.inner.engine.kernel()
    }

    /// Lines longer than this are over-long: counted, never reported.
    pub fn max_line_bytes(&self) -> usize {
        self.inner.max_line_bytes
    }

    /// Scans a region of lines, calls `sink.error_line` for each error line in order; stops
    /// early if the sink returns `Ok(false)`.
    ///
    /// The returned statistics cover the whole region, or, after an early stop, the region up
    /// to and including the line that stopped it: `bytes` is then the offset just past that
    /// line's `\n`, i.e. where a caller would resume.
    ///
    /// # Errors
    ///
    /// The first error returned by the sink, which also stops the scan.
    pub fn scan<S: Sink>(&self, region: &[u8], sink: &mut S) -> Result<ScanStats, S::Error> {
        let inner = &*self.inner;
        let max = inner.max_line_bytes;
        let mut out = Delivery {
            region,
            sink,
            error_lines: 0,
            stop: None,
            error: None,
        };
        let mut regex = inner
            .regex
            .as_ref()
            .map(|re| Peeked::new(RegexSearch { re, max }));
        let (lines, long_lines) = match &inner.literals {
            LiteralMatcher::Prefilter(pf) => {
                let tally = simd::scan(inner.engine, pf, region, max, &mut |start, end| {
                    if let Some(cursor) = regex.as_mut() {
                        // Regex error lines before this one, then skip this one.
                        while let Some((s, e)) = cursor.peek(region) {
                            if s > start {
                                break;
                            }
                            cursor.consume(e);
                            if s < start && !out.deliver(s, e) {
                                return false;
                            }
                        }
                    }
                    out.deliver(start, end)
                });
                if !tally.stopped
                    && let Some(cursor) = regex.as_mut()
                {
                    while let Some((s, e)) = cursor.peek(region) {
                        cursor.consume(e);
                        if !out.deliver(s, e) {
                            break;
                        }
                    }
                }
                match out.stop {
                    Some(end) => simd::count(inner.engine, &region[..end], max),
                    None => (tally.lines, tally.long_lines),
                }
            }
            LiteralMatcher::AhoCorasick(ac) => {
                let mut literal = Some(Peeked::new(AcSearch { ac, max }));
                pull(
                    inner.engine,
                    region,
                    max,
                    &mut out,
                    &mut literal,
                    &mut regex,
                )
            }
            LiteralMatcher::None => pull(
                inner.engine,
                region,
                max,
                &mut out,
                &mut None::<Peeked<AcSearch<'_>>>,
                &mut regex,
            ),
        };
        if let Some(e) = out.error {
            return Err(e);
        }
        Ok(ScanStats {
            bytes: out.stop.unwrap_or(region.len()) as u64,
            lines,
            error_lines: out.error_lines,
            long_lines,
        })
    }

    /// Whether `line` is an error line (for single lines: webhooks, triage). Same rules as
    /// [`scan`](Self::scan): a trailing `\r` is matched, an over-long line is never an error
    /// line, and if `line` contains `\n` the answer is whether any of its lines is one.
    pub fn is_error_line(&self, line: &[u8]) -> bool {
        let mut found = false;
        let Ok(_) = self.scan(
            line,
            &mut from_fn(|_| {
                found = true;
                false
            }),
        );
        found
    }
}

/// Passes error lines to the sink and records how the scan ended.
struct Delivery<'r, 's, S: Sink> {
    region: &'r [u8],
    sink: &'s mut S,
    error_lines: u64,
    /// Offset just past the line that stopped the scan.
    stop: Option<usize>,
    error: Option<S::Error>,
}

impl<S: Sink> Delivery<'_, '_, S> {
    /// Reports the line `start..end` (`end` at its `\n` or the region end); `false` to stop.
    fn deliver(&mut self, start: usize, end: usize) -> bool {
        let mut line = &self.region[start..end];
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        self.error_lines += 1;
        let next = (end + 1).min(self.region.len());
        match self.sink.error_line(&ErrorLine {
            line,
            offset: start,
        }) {
            Ok(true) => true,
            Ok(false) => {
                self.stop = Some(next);
                false
            }
            Err(e) => {
                self.stop = Some(next);
                self.error = Some(e);
                false
            }
        }
    }
}

/// The line `start..end` containing `pos`, where `from <= pos` is a line start. `None` if
/// `pos` is the end of a region ending with `\n` (no line there).
fn line_at(region: &[u8], from: usize, pos: usize) -> Option<(usize, usize)> {
    let start = memchr::memrchr(b'\n', &region[from..pos]).map_or(from, |i| from + i + 1);
    if start == region.len() {
        return None;
    }
    let end = memchr::memchr(b'\n', &region[pos..]).map_or(region.len(), |i| pos + i);
    Some((start, end))
}

/// A source of error lines in order, resumable at any line start.
trait Cursor {
    /// The next error line at or after `pos` (a line start), not over-long.
    fn find(&mut self, region: &[u8], pos: usize) -> Option<(usize, usize)>;
}

/// Caches the next line of a [`Cursor`], so that each part of the region is searched once.
struct Peeked<C> {
    cursor: C,
    /// Where the next search starts (a line start).
    pos: usize,
    /// `Some(next)` once searched from `pos`; `Some(None)` when exhausted.
    next: Option<Option<(usize, usize)>>,
}

impl<C: Cursor> Peeked<C> {
    fn new(cursor: C) -> Self {
        Peeked {
            cursor,
            pos: 0,
            next: None,
        }
    }

    fn peek(&mut self, region: &[u8]) -> Option<(usize, usize)> {
        if self.next.is_none() {
            let found = if self.pos < region.len() {
                self.cursor.find(region, self.pos)
            } else {
                None
            };
            self.next = Some(found);
        }
        self.next.flatten()
    }

    /// Moves past the line ending at `end` (the current one or a later one).
    fn consume(&mut self, end: usize) {
        self.pos = end + 1;
        self.next = None;
    }
}

struct AcSearch<'a> {
    ac: &'a AhoCorasick,
    max: usize,
}

impl Cursor for AcSearch<'_> {
    fn find(&mut self, region: &[u8], mut pos: usize) -> Option<(usize, usize)> {
        while pos < region.len() {
            let hit = self.ac.find(Input::new(region).span(pos..region.len()))?;
            let (start, end) = line_at(region, pos, hit.start())?;
            if end - start <= self.max {
                return Some((start, end));
            }
            pos = end + 1;
        }
        None
    }
}

struct RegexSearch<'a> {
    re: &'a RegexPair,
    max: usize,
}

impl Cursor for RegexSearch<'_> {
    fn find(&mut self, region: &[u8], mut pos: usize) -> Option<(usize, usize)> {
        while pos <= region.len() {
            let hit = self.re.region.find_at(region, pos)?;
            let (start, end) = line_at(region, pos, hit.start())?;
            if end - start <= self.max && self.re.line.is_match(&region[start..end]) {
                return Some((start, end));
            }
            pos = end + 1;
        }
        None
    }
}

/// Merges up to two cursors in line order, counting lines stretch by stretch right after each
/// stretch was searched. Returns `(lines, long_lines)` of the part scanned.
fn pull<S, A, B>(
    engine: Engine,
    region: &[u8],
    max: usize,
    out: &mut Delivery<'_, '_, S>,
    a: &mut Option<Peeked<A>>,
    b: &mut Option<Peeked<B>>,
) -> (u64, u64)
where
    S: Sink,
    A: Cursor,
    B: Cursor,
{
    let (mut lines, mut long_lines) = (0, 0);
    let mut counted = 0;
    loop {
        let next_a = a.as_mut().and_then(|c| c.peek(region));
        let next_b = b.as_mut().and_then(|c| c.peek(region));
        let (start, end) = match (next_a, next_b) {
            (None, None) => break,
            (Some(x), None) | (None, Some(x)) => x,
            (Some(x), Some(y)) => x.min(y),
        };
        if next_a.is_some_and(|(s, _)| s == start)
            && let Some(c) = a.as_mut()
        {
            c.consume(end);
        }
        if next_b.is_some_and(|(s, _)| s == start)
            && let Some(c) = b.as_mut()
        {
            c.consume(end);
        }
        let resume = (end + 1).min(region.len());
        let (l, g) = simd::count(engine, &region[counted..resume], max);
        lines += l;
        long_lines += g;
        counted = resume;
        if !out.deliver(start, end) {
            return (lines, long_lines);
        }
    }
    let (l, g) = simd::count(engine, &region[counted..], max);
    (lines + l, long_lines + g)
}

/// Receives the error lines of a scan.
pub trait Sink {
    /// The error that aborts a scan.
    type Error;

    /// Called for each error line, in order. Return `Ok(true)` to continue, `Ok(false)` to
    /// stop the scan, or an error to abort it.
    ///
    /// # Errors
    ///
    /// Whatever the sink needs to report; [`Scanner::scan`] returns it.
    fn error_line(&mut self, line: &ErrorLine<'_>) -> Result<bool, Self::Error>;
}

impl<S: Sink + ?Sized> Sink for &mut S {
    type Error = S::Error;

    fn error_line(&mut self, line: &ErrorLine<'_>) -> Result<bool, S::Error> {
        (**self).error_line(line)
    }
}

/// A [`Sink`] made from a closure returning "continue?"; see [`from_fn`].
pub struct FnSink<F>(F);

impl<F> fmt::Debug for FnSink<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnSink")
    }
}

/// Wraps a closure `FnMut(&ErrorLine) -> bool` (`true` to continue) as an infallible
/// [`Sink`].
pub fn from_fn<F>(f: F) -> FnSink<F>
where
    F: FnMut(&ErrorLine<'_>) -> bool,
{
    FnSink(f)
}

impl<F> Sink for FnSink<F>
where
    F: FnMut(&ErrorLine<'_>) -> bool,
{
    type Error = Infallible;

    fn error_line(&mut self, line: &ErrorLine<'_>) -> Result<bool, Infallible> {
        Ok((self.0)(line))
    }
}

/// One error line, borrowed from the scanned region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorLine<'a> {
    line: &'a [u8],
    offset: usize,
}

impl<'a> ErrorLine<'a> {
    /// The line `region[offset..offset + len]`: an error line reported from `region`,
    /// rebuilt later (e.g. after deferring it) with the region's own lifetime.
    pub(crate) fn at(region: &'a [u8], offset: usize, len: usize) -> ErrorLine<'a> {
        ErrorLine {
            line: &region[offset..offset + len],
            offset,
        }
    }

    /// The line, without `\n` and without a trailing `\r`.
    pub fn line(&self) -> &'a [u8] {
        self.line
    }

    /// Where the line starts within the scanned region.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The PACT keys of the line, leftmost first.
    pub fn keys(&self) -> PactKeys<'a> {
        PactKeys::new(self.line)
    }

    /// The first PACT key of the line, if any.
    pub fn first_key(&self) -> Option<PactKey<'a>> {
        keys::first_key(self.line)
    }
}

/// Counters of one scan (or, with [`add`](Self::add), of many).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Bytes scanned.
    pub bytes: u64,
    /// Lines seen, over-long ones included.
    pub lines: u64,
    /// Error lines reported to the sink.
    pub error_lines: u64,
    /// Lines longer than `max_line_bytes` (never reported).
    pub long_lines: u64,
}

impl ScanStats {
    /// Adds `other` to `self`, field by field (saturating).
    pub fn add(&mut self, other: &ScanStats) {
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.lines = self.lines.saturating_add(other.lines);
        self.error_lines = self.error_lines.saturating_add(other.error_lines);
        self.long_lines = self.long_lines.saturating_add(other.long_lines);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use regex::bytes::{RegexSet, RegexSetBuilder};

    /// One reported line, owned, for comparisons.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Found {
        offset: usize,
        line: Vec<u8>,
        keys: Vec<Vec<u8>>,
    }

    /// The naive definition: split on `\n`, skip over-long lines, match each line with a
    /// `RegexSet` (Unicode off), keys with the reference regex.
    fn oracle(
        patterns: &[&str],
        region: &[u8],
        max: usize,
        stop_after: Option<u64>,
    ) -> (Vec<Found>, ScanStats) {
        naive(&oracle_set(patterns), region, max, stop_after)
    }

    fn oracle_set(patterns: &[&str]) -> RegexSet {
        RegexSetBuilder::new(patterns)
            .unicode(false)
            .build()
            .expect("oracle patterns compile")
    }

    fn naive(
        set: &RegexSet,
        region: &[u8],
        max: usize,
        stop_after: Option<u64>,
    ) -> (Vec<Found>, ScanStats) {
        let key_re = regex::bytes::Regex::new("PACT:[a-zA-Z0-9_]+:[a-zA-Z0-9_]+").expect("valid");
        let mut found = Vec::new();
        let mut stats = ScanStats::default();
        let mut pos = 0;
        while pos < region.len() {
            let end = region[pos..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(region.len(), |i| pos + i);
            let raw = &region[pos..end];
            stats.lines += 1;
            if raw.len() > max {
                stats.long_lines += 1;
            } else if set.is_match(raw) {
                let line = raw.strip_suffix(b"\r").unwrap_or(raw).to_vec();
                let keys = key_re
                    .find_iter(&line)
                    .map(|m| m.as_bytes().to_vec())
                    .collect();
                found.push(Found {
                    offset: pos,
                    line,
                    keys,
                });
                stats.error_lines += 1;
                if Some(stats.error_lines) == stop_after {
                    stats.bytes = (end + 1).min(region.len()) as u64;
                    return (found, stats);
                }
            }
            pos = end + 1;
        }
        stats.bytes = region.len() as u64;
        (found, stats)
    }

    fn run(scanner: &Scanner, region: &[u8], stop_after: Option<u64>) -> (Vec<Found>, ScanStats) {
        let mut found = Vec::new();
        let stats = scanner
            .scan(
                region,
                &mut from_fn(|l: &ErrorLine<'_>| {
                    found.push(Found {
                        offset: l.offset(),
                        line: l.line().to_vec(),
                        keys: l.keys().map(|k| k.as_bytes().to_vec()).collect(),
                    });
                    Some(found.len() as u64) != stop_after
                }),
            )
            .unwrap_or_else(|e| match e {});
        (found, stats)
    }

    /// The oracle and a scanner per supported kernel, for one pattern set and
    /// `max_line_bytes` (building them is the slow part of a check in debug builds).
    struct Checker<'p> {
        patterns: &'p [&'p str],
        max: usize,
        set: RegexSet,
        scanners: Vec<Scanner>,
    }

    impl<'p> Checker<'p> {
        fn new(patterns: &'p [&'p str], max: usize) -> Self {
            let scanners = Kernel::available()
                .map(|kernel| {
                    let scanner = ScannerBuilder::new()
                        .kernel(kernel)
                        .max_line_bytes(max)
                        .build(patterns)
                        .expect("patterns compile");
                    assert_eq!(scanner.kernel(), kernel);
                    scanner
                })
                .collect();
            Checker {
                patterns,
                max,
                set: oracle_set(patterns),
                scanners,
            }
        }

        /// Compares every supported kernel with the oracle.
        fn check(&self, region: &[u8], stop_after: Option<u64>) {
            let want = naive(&self.set, region, self.max, stop_after);
            for scanner in &self.scanners {
                let got = run(scanner, region, stop_after);
                assert_eq!(
                    got,
                    want,
                    "kernel {:?}, patterns {:?}, max {}, stop {stop_after:?}, region {:?}",
                    scanner.kernel(),
                    self.patterns,
                    self.max,
                    region.escape_ascii().to_string()
                );
            }
        }
    }

    /// Compares every supported kernel with the oracle.
    fn check(patterns: &[&str], region: &[u8], max: usize, stop_after: Option<u64>) {
        Checker::new(patterns, max).check(region, stop_after);
    }

    fn literal_mode<P: AsRef<str>>(patterns: &[P]) -> &'static str {
        let scanner = Scanner::new(patterns).expect("patterns compile");
        match (&scanner.inner.literals, scanner.inner.regex.is_some()) {
            (LiteralMatcher::None, false) => "none",
            (LiteralMatcher::None, true) => "regex",
            (LiteralMatcher::Prefilter(_), false) => "prefilter",
            (LiteralMatcher::Prefilter(_), true) => "prefilter+regex",
            (LiteralMatcher::AhoCorasick(_), false) => "ac",
            (LiteralMatcher::AhoCorasick(_), true) => "ac+regex",
        }
    }

    #[test]
    fn scanner_is_send_sync_and_cheap_to_clone() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<Scanner>();
        assert_send_sync::<ScannerBuilder>();
        fn assert_send_sync_plain<T: Send + Sync>() {}
        assert_send_sync_plain::<PatternError>();
        assert_send_sync_plain::<ErrorLine<'static>>();
    }

    #[test]
    fn pattern_classification() {
        assert_eq!(literal_mode(DEFAULT_ERROR_PATTERNS), "prefilter");
        assert_eq!(literal_mode(&["ERROR", r"\[FATAL\]", "panicked at"]), "ac");
        assert_eq!(literal_mode(&["ERROR", r"^E\d+"]), "ac+regex");
        assert_eq!(literal_mode(&["(?i)error", r"E\d+"]), "prefilter+regex");
        assert_eq!(literal_mode(&[r"E\d+"]), "regex");
        assert_eq!(literal_mode(&["a\nb"]), "none");
        assert_eq!(literal_mode::<&str>(&[]), "none");
        // Flags switched back off parse to a plain (case-sensitive) literal.
        assert_eq!(literal_mode(&["(?i)(?-i)abc"]), "ac");
        // Flags after the leading `(?i)`, or a non-ASCII case-insensitive literal: regex.
        assert_eq!(literal_mode(&["(?i)ab(?-i)c"]), "regex");
        assert_eq!(literal_mode(&["(?i)erreur é"]), "regex");
        // `(?i)` on a literal without letters is case-sensitive.
        assert_eq!(literal_mode(&["(?i)123"]), "ac");
        // Too many distinct prefixes: everything goes to the regex.
        let many: Vec<String> = (0..17).map(|i| format!("(?i)x{i:02}")).collect();
        assert_eq!(literal_mode(&many), "regex");
        assert_eq!(literal_mode(&many[..16]), "prefilter");
    }

    #[test]
    fn build_errors() {
        let empty = Scanner::new(["ERROR", ""]).expect_err("empty pattern");
        assert!(
            matches!(empty, PatternError::Empty { index: 1 }),
            "{empty:?}"
        );
        assert!(matches!(
            Scanner::new(["(?i)"]),
            Err(PatternError::Empty { index: 0 })
        ));
        let bad = Scanner::new(["ERR(OR"]).expect_err("invalid pattern");
        assert!(bad.to_string().contains("ERR(OR"), "{bad}");
        let small = ScannerBuilder::new().max_line_bytes(63).build(["x"]);
        assert!(matches!(small, Err(PatternError::MaxLineBytes(63))));
        for kernel in [Kernel::Auto, Kernel::Avx2, Kernel::Sse2, Kernel::Scalar] {
            let built = ScannerBuilder::new().kernel(kernel).build(["x"]);
            match built {
                Ok(s) => {
                    assert!(kernel.is_supported());
                    assert_ne!(s.kernel(), Kernel::Auto);
                    if kernel != Kernel::Auto {
                        assert_eq!(s.kernel(), kernel);
                    }
                }
                Err(e) => {
                    assert!(!kernel.is_supported());
                    assert!(matches!(e, PatternError::UnsupportedKernel(k) if k == kernel));
                }
            }
        }
        assert!(Kernel::available().any(|k| k == Kernel::Scalar));
    }

    #[test]
    fn default_patterns() {
        let s = Scanner::new(DEFAULT_ERROR_PATTERNS).expect("defaults compile");
        assert_eq!(s.max_line_bytes(), DEFAULT_MAX_LINE_BYTES);
        for line in [
            &b"2024-05-01T10:00:00Z ERROR payment failed PACT:billing:charge"[..],
            b"CRITICAL: disk full",
            b"FATAL",
            b"Traceback (most recent call last):",
            b"thread 'main' panicked at src/main.rs:1:5",
            br#"{"level":"error","msg":"x"}"#,
            br#"{"LEVEL":"ERROR"}"#,
            br#"{"Level": "Fatal"}"#,
            br#"{"level": "critical"}"#,
            b"...ERROR\r",
        ] {
            assert!(s.is_error_line(line), "{}", line.escape_ascii());
        }
        for line in [
            &b"error: lowercase is not in the default set"[..],
            b"Critical thinking",
            br#"{"level":"info","msg":"error handled"}"#,
            br#"{"level" : "error"}"#,
            b"ERRO",
            b"panicked  at",
            b"",
        ] {
            assert!(!s.is_error_line(line), "{}", line.escape_ascii());
        }
    }

    #[test]
    fn reports_lines_offsets_and_keys() {
        let s = Scanner::new(DEFAULT_ERROR_PATTERNS).expect("defaults compile");
        let region = b"ok\r\nERROR a PACT:c1:m1 PACT:c2:m2\r\n\nFATAL PACT:x\nlast ERROR";
        let (found, stats) = run(&s, region, None);
        let lines: Vec<(usize, &[u8])> = found.iter().map(|f| (f.offset, &f.line[..])).collect();
        assert_eq!(
            lines,
            [
                (4, &b"ERROR a PACT:c1:m1 PACT:c2:m2"[..]),
                (36, b"FATAL PACT:x"),
                (49, b"last ERROR")
            ]
        );
        assert_eq!(
            found[0].keys,
            [b"PACT:c1:m1".to_vec(), b"PACT:c2:m2".to_vec()]
        );
        assert!(found[1].keys.is_empty());
        assert_eq!(
            stats,
            ScanStats {
                bytes: region.len() as u64,
                lines: 5,
                error_lines: 3,
                long_lines: 0
            }
        );
        let (found, stats) = run(&s, region, Some(2));
        assert_eq!(found.len(), 2);
        assert_eq!(
            stats,
            ScanStats {
                bytes: 49,
                lines: 4,
                error_lines: 2,
                long_lines: 0
            }
        );
    }

    #[test]
    fn long_lines_are_counted_not_reported() {
        let mut region = Vec::new();
        region.extend_from_slice(b"ERROR short\n");
        region.extend(std::iter::repeat_n(b'x', 100));
        region.extend_from_slice(b" ERROR long\nERROR ");
        region.extend(std::iter::repeat_n(b'y', 100));
        for pats in [DEFAULT_ERROR_PATTERNS, &["ERROR"], &[r"ERR(OR)"]] {
            for kernel in Kernel::available() {
                let s = ScannerBuilder::new()
                    .kernel(kernel)
                    .max_line_bytes(64)
                    .build(pats)
                    .expect("compiles");
                let (found, stats) = run(&s, &region, None);
                assert_eq!(found.len(), 1, "{kernel:?} {pats:?}");
                assert_eq!((stats.lines, stats.long_lines), (3, 2));
            }
        }
    }

    #[test]
    fn sink_errors_and_mut_ref_sinks() {
        struct Failing(u32);
        impl Sink for Failing {
            type Error = String;
            fn error_line(&mut self, line: &ErrorLine<'_>) -> Result<bool, String> {
                self.0 += 1;
                if self.0 == 2 {
                    Err(format!("boom at {}", line.offset()))
                } else {
                    Ok(true)
                }
            }
        }
        let s = Scanner::new(["E"]).expect("compiles");
        let mut sink = Failing(0);
        let mut by_ref = &mut sink;
        assert_eq!(
            s.scan(b"E\nx\nE\nE\n", &mut by_ref),
            Err("boom at 4".to_owned())
        );
        assert_eq!(sink.0, 2);
    }

    #[test]
    fn stats_add() {
        let mut a = ScanStats {
            bytes: 1,
            lines: 2,
            error_lines: 3,
            long_lines: 4,
        };
        a.add(&a.clone());
        assert_eq!(
            a,
            ScanStats {
                bytes: 2,
                lines: 4,
                error_lines: 6,
                long_lines: 8
            }
        );
    }

    /// Every offset around block edges, for every kernel and each matching path.
    #[test]
    fn hits_at_every_offset() {
        let sets: [&[&str]; 4] = [
            DEFAULT_ERROR_PATTERNS,
            &["ERROR", "E"],
            &["(?i)er", "(?i)e", "(?i)error"],
            &[r"ERR(OR)?", "(?i)x"],
        ];
        let checkers: Vec<Checker<'_>> = sets.iter().map(|p| Checker::new(p, 64)).collect();
        let mut region = Vec::new();
        for hit in [&b"ERROR"[..], b"e", br#""LEVEL":"Fatal""#] {
            for at in 0..140 {
                for end_nl in [false, true] {
                    region.clear();
                    region.extend(std::iter::repeat_n(b'.', at));
                    region.extend_from_slice(hit);
                    if end_nl {
                        region.extend_from_slice(b"\r\n");
                        region.extend(std::iter::repeat_n(b'-', at % 70));
                    }
                    for checker in &checkers {
                        checker.check(&region, None);
                    }
                }
            }
        }
    }

    /// Lines and hits around the kernel's 1 KiB chunk edges, and error lines spanning several
    /// chunks (reported once their end is seen, unless over-long).
    #[test]
    fn chunk_boundaries_and_lines_spanning_chunks() {
        let sets: [&[&str]; 2] = [DEFAULT_ERROR_PATTERNS, &["ERROR", r#""(?i)level""#]];
        let checkers: Vec<Checker<'_>> = [64, 1000, 1600, 4096]
            .into_iter()
            .flat_map(|max| sets.iter().map(move |p| Checker::new(p, max)))
            .collect();
        let mut region = Vec::new();
        for edge in [1024usize, 2048] {
            for delta in [-70isize, -6, -5, -4, -1, 0, 1, 2, 63, 64] {
                for hit in [&b"ERROR"[..], br#""Level":"FATAL""#] {
                    region.clear();
                    let at = (edge as isize + delta) as usize;
                    // A newline every 50 bytes before the hit, none after it for a while.
                    for i in 0..at {
                        region.push(if i % 50 == 49 { b'\n' } else { b'.' });
                    }
                    region.extend_from_slice(hit);
                    region.extend(std::iter::repeat_n(b'-', 1500));
                    region.extend_from_slice(b"\nERROR tail");
                    for checker in &checkers {
                        checker.check(&region, None);
                    }
                }
            }
        }
        // One error line across four chunks, then lines ending right at chunk edges.
        region.clear();
        region.extend_from_slice(b"ERROR at the start of a long line ");
        region.extend(std::iter::repeat_n(b'x', 4000));
        region.push(b'\n');
        while region.len() < 6 * 1024 {
            let to_edge = 1024 - region.len() % 1024;
            region.extend(std::iter::repeat_n(b'y', to_edge.saturating_sub(7)));
            region.extend_from_slice(b"ERROR\r\n");
        }
        for max in [64, 4000, 4096, DEFAULT_MAX_LINE_BYTES] {
            let checker = Checker::new(DEFAULT_ERROR_PATTERNS, max);
            checker.check(&region, None);
            checker.check(&region, Some(2));
        }
    }

    #[test]
    fn regex_anchors_are_per_line() {
        let region = b"xERROR\nERROR\r\nERRORx\nfoo ERROR\n\nbar\n";
        for pats in [
            &[r"\AERROR"][..],
            &[r"ERROR\z"],
            &[r"^ERROR$"],
            &[r"(?m)^$"],
            &[r"(?Rm)^ERROR$"],
            &[r"\bERROR\b"],
            &[r"(?P<a>ERROR)x", r"(?P<a>foo)"],
            &[r"(?s)R.E"],
            &[r"\r$"],
            &["ERROR", r"\Abar"],
        ] {
            check(pats, region, 64, None);
            check(pats, region, 64, Some(1));
        }
    }

    fn fragment() -> impl Strategy<Value = Vec<u8>> {
        let lit = |s: &'static [u8]| Just(s.to_vec());
        prop_oneof![
            6 => lit(b"\n"),
            1 => lit(b"\r\n"),
            1 => lit(b"\r"),
            2 => lit(b"ERR"),
            2 => lit(b"ERROR"),
            2 => lit(b"error"),
            1 => lit(b"ErRoR"),
            2 => lit(br#""level":""#),
            1 => lit(br#""LEVEL": ""#),
            1 => lit(b"fatal"),
            2 => lit(b"PACT:"),
            2 => lit(b":"),
            1 => lit(b"_"),
            1 => lit(b"\0"),
            1 => lit(b"\xff"),
            1 => lit(b"\xc3"),
            1 => lit("é".as_bytes()),
            1 => lit(b" "),
            1 => lit(b"\""),
            4 => prop::sample::select(&b"aeErRoxyzEPACTl"[..]).prop_map(|b| vec![b]),
            2 => (b'0'..=b'9').prop_map(|b| vec![b]),
            1 => (1usize..120).prop_map(|n| vec![b'x'; n]),
        ]
    }

    fn region() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(fragment(), 0..700).prop_map(|v| v.concat())
    }

    const CS_LITERALS: &[&str] = &[
        "ERROR",
        "ERR",
        "E",
        "Er",
        "error",
        "PACT:",
        ":",
        "_",
        r#""level":""#,
        r"\x00",
        r"(?-u:\xff)",
        r"(?-u:\xc3)E",
        "é",
        "xx",
        "ROR\r",
        "R",
        "e",
        "x",
        "\"",
        "er",
    ];
    const CI_LITERALS: &[&str] = &[
        "(?i)error",
        "(?i)err",
        "(?i)e",
        "(?i)er",
        r#"(?i)"level":"error""#,
        r#"(?i)"level": ""#,
        "(?i)pact:",
        "(?i)fatal",
        "(?i)x",
        r"(?i)R\x00",
        "(?i)a_",
        "(?i)ror",
        "(?i)xx",
        r#"(?i)"LEVEL""#,
        "(?i)ERROR",
        "(?i):",
    ];
    const REGEXES: &[&str] = &[
        "ERR(OR)?x",
        "^ERR",
        "ERR$",
        r"\berror\b",
        r"\Aerror",
        r"error\z",
        "[0-9]{2}",
        "(?i)e.r",
        r"PACT:\w+:",
        "(?m)^$",
        r"\r$",
        "(?s)R.E",
        r"a\nb",
        "(?i)é",
        "(?Rm)^E",
        "(?Rm)ERR$",
        "(?P<n>ERR)",
        "(?P<n>err)",
        r"(?-u:\xff)+\x00",
        "x{90,}",
        "(?i)(?-i)Err",
        r"\Bor",
    ];

    fn patterns() -> impl Strategy<Value = Vec<&'static str>> {
        let pick = |pool: &'static [&'static str], max: usize| {
            prop::sample::subsequence(pool, 0..=max.min(pool.len()))
        };
        let many_ci = prop::sample::subsequence(
            &[
                "(?i)aa", "(?i)ab", "(?i)ac", "(?i)ad", "(?i)ae", "(?i)af", "(?i)ag", "(?i)ah",
                "(?i)ai", "(?i)aj", "(?i)ak", "(?i)al", "(?i)am", "(?i)an", "(?i)ao", "(?i)ap",
                "(?i)er", "(?i)xy", "(?i)ror", "ERROR",
            ][..],
            15..=20,
        );
        prop_oneof![
            pick(CS_LITERALS, 4).prop_filter("non-empty", |v| !v.is_empty()),
            (pick(CS_LITERALS, 3), pick(CI_LITERALS, 3))
                .prop_map(|(a, b)| [a, b].concat())
                .prop_filter("non-empty", |v| !v.is_empty()),
            pick(REGEXES, 3).prop_filter("non-empty", |v| !v.is_empty()),
            (pick(CS_LITERALS, 2), pick(CI_LITERALS, 2), pick(REGEXES, 2))
                .prop_map(|(a, b, c)| [a, b, c].concat())
                .prop_filter("non-empty", |v| !v.is_empty()),
            many_ci,
            Just(DEFAULT_ERROR_PATTERNS.to_vec()),
        ]
    }

    fn max_line_bytes() -> impl Strategy<Value = usize> {
        prop_oneof![64usize..100, 64usize..4096]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn scanner_matches_oracle(
            patterns in patterns(),
            region in region(),
            max in max_line_bytes(),
            stop_after in prop::option::weighted(0.3, 1u64..5),
        ) {
            check(&patterns, &region, max, stop_after);
        }

        #[test]
        fn is_error_line_matches_oracle(patterns in patterns(), line in prop::collection::vec(fragment(), 0..30)) {
            let line: Vec<u8> = line.concat().into_iter().filter(|&b| b != b'\n').collect();
            let (want, _) = oracle(&patterns, &line, 4096, None);
            for kernel in Kernel::available() {
                let s = ScannerBuilder::new().kernel(kernel).max_line_bytes(4096).build(&patterns).expect("compiles");
                prop_assert_eq!(s.is_error_line(&line), !want.is_empty());
            }
        }
    }
}
