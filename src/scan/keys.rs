//! TEMPORARY shim.
#![allow(missing_docs, unreachable_pub, missing_debug_implementations)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)] pub struct PactKey<'a> { raw: &'a [u8], c: &'a [u8], m: &'a [u8] }
impl<'a> PactKey<'a> { pub fn as_bytes(&self) -> &'a [u8] { self.raw } pub fn component(&self) -> &'a [u8] { self.c } pub fn method(&self) -> &'a [u8] { self.m } }
pub struct PactKeys<'a> { l: &'a [u8], pos: usize }
impl<'a> PactKeys<'a> { pub fn new(l: &'a [u8]) -> Self { PactKeys { l, pos: 0 } } }
fn w(b: u8) -> bool { b.is_ascii_alphanumeric() || b == b'_' }
impl<'a> Iterator for PactKeys<'a> { type Item = PactKey<'a>; fn next(&mut self) -> Option<PactKey<'a>> { let l = self.l;
 while let Some(i) = memchr::memmem::find(&l[self.pos..], b"PACT:") { let s = self.pos + i; let a = s + 5; let mut b = a; while b < l.len() && w(l[b]) { b += 1; }
  if b > a && b < l.len() && l[b] == b':' { let c = b + 1; let mut d = c; while d < l.len() && w(l[d]) { d += 1; } if d > c { self.pos = d; return Some(PactKey { raw: &l[s..d], c: &l[a..b], m: &l[c..d] }); } }
  self.pos = s + 1; } None } }
pub fn first_key(l: &[u8]) -> Option<PactKey<'_>> { PactKeys::new(l).next() }
