//! TEMPORARY shim (replaced by the real scanner on merge).
#![allow(missing_docs, unreachable_pub, missing_debug_implementations)]
use super::keys::{PactKey, PactKeys};
pub const DEFAULT_ERROR_PATTERNS: &[&str] = &["ERROR", "CRITICAL", "FATAL", "Traceback", "panicked at", "(?i)\"level\":\"error\"", "(?i)\"level\":\"fatal\"", "(?i)\"level\":\"critical\"", "(?i)\"level\": \"error\"", "(?i)\"level\": \"fatal\"", "(?i)\"level\": \"critical\""];
pub const DEFAULT_MAX_LINE_BYTES: usize = 1 << 20;
#[derive(Debug, thiserror::Error)] #[error("bad pattern {0}")] pub struct PatternError(String);
#[derive(Debug, Clone, Copy, PartialEq, Eq)] pub enum Kernel { Auto, Avx2, Sse2, Scalar }
#[derive(Debug, Default)] pub struct ScannerBuilder { max: Option<usize> }
impl ScannerBuilder { pub fn new() -> Self { Self::default() } pub fn max_line_bytes(&mut self, n: usize) -> &mut Self { self.max = Some(n); self } pub fn kernel(&mut self, _k: Kernel) -> &mut Self { self }
 pub fn build<I: IntoIterator<Item=P>, P: AsRef<str>>(&self, p: I) -> Result<Scanner, PatternError> { let v: Vec<String> = p.into_iter().map(|s| s.as_ref().replace("(?i)", "(?i-u)")).collect(); let set = regex::bytes::RegexSet::new(&v).map_err(|e| PatternError(e.to_string()))?; Ok(Scanner { set, max: self.max.unwrap_or(DEFAULT_MAX_LINE_BYTES) }) } }
#[derive(Clone, Debug)] pub struct Scanner { set: regex::bytes::RegexSet, max: usize }
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)] pub struct ScanStats { pub bytes: u64, pub lines: u64, pub error_lines: u64, pub long_lines: u64 }
impl ScanStats { pub fn add(&mut self, o: &ScanStats) { self.bytes += o.bytes; self.lines += o.lines; self.error_lines += o.error_lines; self.long_lines += o.long_lines; } }
pub trait Sink { type Error; fn error_line(&mut self, line: &ErrorLine<'_>) -> Result<bool, Self::Error>; }
pub struct ErrorLine<'a> { line: &'a [u8], offset: usize }
impl<'a> ErrorLine<'a> { pub fn line(&self) -> &'a [u8] { self.line } pub fn offset(&self) -> usize { self.offset } pub fn keys(&self) -> PactKeys<'a> { PactKeys::new(self.line) } pub fn first_key(&self) -> Option<PactKey<'a>> { self.keys().next() } }
impl Scanner {
 pub fn new<I: IntoIterator<Item=P>, P: AsRef<str>>(p: I) -> Result<Scanner, PatternError> { ScannerBuilder::new().build(p) }
 pub fn kernel(&self) -> Kernel { Kernel::Scalar } pub fn max_line_bytes(&self) -> usize { self.max }
 pub fn is_error_line(&self, l: &[u8]) -> bool { self.set.is_match(l) }
 pub fn scan<S: Sink>(&self, region: &[u8], sink: &mut S) -> Result<ScanStats, S::Error> {
  let mut st = ScanStats { bytes: region.len() as u64, ..Default::default() }; let mut off = 0;
  for raw in region.split_inclusive(|&b| b == b'\n') { let mut l = raw.strip_suffix(b"\n").unwrap_or(raw); st.lines += 1;
   if l.len() > self.max { st.long_lines += 1; off += raw.len(); continue; }
   if let Some(x) = l.strip_suffix(b"\r") { l = x; }
   if self.set.is_match(l) { st.error_lines += 1; if !sink.error_line(&ErrorLine { line: l, offset: off })? { return Ok(st); } } off += raw.len(); }
  Ok(st) } }
