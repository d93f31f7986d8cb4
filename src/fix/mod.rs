//! The fixer: what is sent to an LLM, how, and (later) what is done with the answer.
//!
//! This first slice holds the parts every later step builds on:
//!
//! - [`redact`]: secrets, tokens, e-mail addresses and card numbers are replaced by
//!   `[REDACTED:<kind>]` before any text leaves the machine, and log text is fenced as
//!   untrusted data ([`redact::fence_untrusted`]). Pure functions, available without the
//!   `daemon` feature.
//! - `llm` (feature `daemon`): one trait ([`llm::Llm`]) for "give me a structured answer that
//!   fits this JSON Schema", with one HTTP client ([`llm::LlmClient`]) speaking two wire
//!   formats (Anthropic Messages with forced tool use; OpenAI-compatible Chat Completions with
//!   a strict `json_schema` response format), integer micro-USD costing, timeouts, retries
//!   with backoff, and a circuit breaker shared by every call of the client.
//! - [`worktree`]: safe git for one fix: an isolated worktree on a new branch from the user's
//!   `HEAD`, confined edits, a commit of only the edited files, and a fast-forward of the
//!   user's branch only when their tree is clean. Their working tree is never touched.
//! - `runner` (unix): a component's tests in a minimal environment and their own process
//!   group, with a timeout that kills the whole group.
//!
//! Why a trait with one real implementation: the fixer is generic over it so that its tests
//! can script answers, and the real client is tested against a fake server speaking both wire
//! formats over loopback (`fake_llm`, test-only), which exercises the HTTP, retry and
//! parsing code for real.

pub mod budget;
#[cfg(all(unix, feature = "daemon"))]
pub mod contract;
#[cfg(all(unix, feature = "daemon"))]
pub mod engine;
#[cfg(all(feature = "daemon", any(test, feature = "test-util")))]
#[doc(hidden)]
pub mod fake_llm;
#[cfg(feature = "daemon")]
pub mod llm;
#[cfg(feature = "daemon")]
pub mod prompt;
pub mod redact;
#[cfg(unix)]
pub mod runner;
#[cfg(all(unix, feature = "daemon"))]
pub mod service;
#[cfg(feature = "daemon")]
pub mod triage;
pub mod worktree;

/// 64 unpredictable bits (SipHash under the process's random keys, which std re-keys for
/// every `RandomState`): for retry jitter and fence nonces. Not for cryptographic keys.
pub(crate) fn random_u64() -> u64 {
    use std::hash::BuildHasher;
    std::hash::RandomState::new().hash_one(std::time::SystemTime::now())
}
