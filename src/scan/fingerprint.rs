//! TEMPORARY shim.
#![allow(missing_docs, unreachable_pub, missing_debug_implementations)]
pub const NORMALIZED_KEEP_BYTES: usize = 512;
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)] pub struct Fingerprint(pub u64);
impl std::fmt::Display for Fingerprint { fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { write!(f, "{:016x}", self.0) } }
#[derive(Debug, Default)] pub struct Fingerprinter { buf: Vec<u8> }
impl Fingerprinter { pub fn new() -> Self { Self::default() } pub fn fingerprint(&mut self, l: &[u8]) -> Fingerprint { self.buf.clear(); self.buf.extend_from_slice(l); Fingerprint(xxhash_rust::xxh3::xxh3_64(&self.buf)) } pub fn normalized(&self) -> &[u8] { &self.buf } }
