//! TEMPORARY shim.
#![allow(missing_docs, unreachable_pub, missing_debug_implementations)]
use std::io::Read;
pub struct LineReader<R> { r: R, buf: Vec<u8>, carry: usize, off: u64, partial_taken: bool }
#[derive(Debug)] pub struct Region<'a> { pub bytes: &'a [u8], pub offset: u64 }
impl<R: Read> LineReader<R> {
 pub fn new(r: R) -> Self { Self::with_capacity(r, 256*1024, 1<<20) }
 pub fn with_capacity(r: R, _c: usize, _m: usize) -> Self { LineReader { r, buf: Vec::new(), carry: 0, off: 0, partial_taken: false } }
 pub fn with_offset(mut self, o: u64) -> Self { self.off = o; self }
 pub fn next_region(&mut self) -> std::io::Result<Option<Region<'_>>> { let _ = self.partial_taken;
  if self.carry > 0 && self.carry < self.buf.len() { self.buf.drain(..self.carry); } else if self.carry > 0 { self.buf.clear(); } self.carry = 0;
  loop { let mut chunk = vec![0u8; 256*1024]; let n = self.r.read(&mut chunk)?; if n == 0 { return Ok(None); } self.buf.extend_from_slice(&chunk[..n]);
   if let Some(p) = memchr::memrchr(b'\n', &self.buf) { self.carry = p + 1; let o = self.off; self.off += (p + 1) as u64; return Ok(Some(Region { bytes: &self.buf[..p+1], offset: o })); } } }
 pub fn take_partial(&mut self) -> &[u8] { if self.carry > 0 { self.buf.drain(..self.carry); self.carry = 0; } self.off += self.buf.len() as u64; self.carry = self.buf.len(); &self.buf[..] }
 pub fn offset(&self) -> u64 { self.off } pub fn skipped_long_lines(&self) -> u64 { 0 }
}
pub struct ReadAt<'a> { pub file: &'a std::fs::File, pub pos: u64, pub end: u64 }
impl<'a> ReadAt<'a> { pub fn new(file: &'a std::fs::File, pos: u64, end: u64) -> Self { ReadAt { file, pos, end } } }
impl Read for ReadAt<'_> { fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> { use std::os::unix::fs::FileExt; let n = (self.end - self.pos).min(b.len() as u64) as usize; if n == 0 { return Ok(0); } let r = self.file.read_at(&mut b[..n], self.pos)?; self.pos += r as u64; Ok(r) } }
pub fn split_segments(file: &std::fs::File, len: u64, target: u64) -> std::io::Result<Vec<std::ops::Range<u64>>> { use std::os::unix::fs::FileExt; let mut v = Vec::new(); let mut s = 0; while s < len { let mut e = (s + target).min(len); if e < len { let mut b = vec![0u8; 65536]; loop { let n = file.read_at(&mut b, e - 1)?; if n == 0 { e = len; break; } if let Some(i) = memchr::memchr(b'\n', &b[..n]) { e = e - 1 + i as u64 + 1; break; } e += n as u64; if e >= len { e = len; break; } } } v.push(s..e); s = e; } Ok(v) }
