//! TEMPORARY shim (the corpus generator lands from its branch).
#![allow(missing_docs, unreachable_pub, missing_debug_implementations)]
pub struct CorpusSpec;
impl CorpusSpec { pub fn new(_: u64, _: u64) -> Self { CorpusSpec } }
pub fn generate<W: std::io::Write>(_: &CorpusSpec, _: W) -> std::io::Result<serde_json::Value> { Ok(serde_json::Value::Null) }
pub fn manifest_json(_: &CorpusSpec, _: &str) -> String { String::new() }
