//! The fixer: from an actionable incident to a fix proven by the project's own tests.
//!
//! - [`policy`]: when an incident becomes actionable (`error_threshold`) and whether it is
//!   queued for a fix or escalated (`auto_remediate`); the store applies it at ingest.
//! - `service` (daemon): takes jobs from the durable queue, at most one per component and
//!   `llm.max_concurrent_fixes` at once; [`triage`] decides what is worth a fix, and
//!   `autotriage` (daemon) asks the LLM which component an incident without a PACT key
//!   belongs to.
//! - `engine`: one fix — the prompt ([`prompt`], with [`redact`]ed, fenced log text), the LLM
//!   call (`llm`: one trait, one HTTP client for Anthropic and OpenAI-compatible servers,
//!   retries, a circuit breaker) under the [`budget`] caps, a reproducer test and a fix written
//!   in a git [`worktree`] on a new branch, both proven with the component's tests
//!   ([`runner`]: own process group, timeout kills the group), then a branch, a fast-forward
//!   or a pull request; `layout` finds a component's source, tests and contract, and
//!   `contract` tightens the contract and pushes it to Pact.
//!
//! Why a trait with one real implementation: the fixer is generic over it so that its tests
//! can script answers, and the real client is tested against a fake server speaking both wire
//! formats over loopback (`fake_llm`, test-only), which exercises the HTTP, retry and
//! parsing code for real.

#[cfg(all(unix, feature = "daemon"))]
pub mod autotriage;
pub mod budget;
#[cfg(all(unix, feature = "daemon"))]
pub mod contract;
#[cfg(all(unix, feature = "daemon"))]
pub mod engine;
#[cfg(all(feature = "daemon", any(test, feature = "test-util")))]
#[doc(hidden)]
pub mod fake_llm;
pub mod guard;
#[cfg(all(unix, feature = "daemon"))]
pub mod layout;
#[cfg(feature = "daemon")]
pub mod llm;
pub mod policy;
pub mod postmortem;
#[cfg(feature = "daemon")]
pub mod prompt;
pub mod redact;
#[cfg(unix)]
pub mod runner;
#[cfg(all(unix, feature = "daemon"))]
pub mod service;
#[cfg(all(unix, feature = "daemon"))]
pub mod triage;
pub mod worktree;

/// 64 unpredictable bits (SipHash under the process's random keys, which std re-keys for
/// every `RandomState`): for retry jitter and fence nonces. Not for cryptographic keys.
pub(crate) fn random_u64() -> u64 {
    use std::hash::BuildHasher;
    std::hash::RandomState::new().hash_one(std::time::SystemTime::now())
}
