//! `sentinel triage TEXT`: which registered component an error text belongs to, with the
//! reference's output lines and confidences (SPEC §5.4):
//!
//! | case | confidence |
//! |---|---|
//! | a PACT key naming a registered component (or, second segment, Pact's preamble form) | 1.0 |
//! | a PACT key whose component is not registered | 0.5 |
//! | no key, the LLM matched a component | 0.8 |
//! | no key, no match | 0.0 |
//!
//! Exit 0 in all these cases; 1 when no component is registered.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;

use super::CliError;
use crate::attribute::Manifest;
use crate::config::Config;

/// The most text `triage -` reads from stdin.
pub const MAX_TRIAGE_BYTES: u64 = 16 << 20;

/// `sentinel triage`.
#[derive(Debug, clap::Args)]
pub struct TriageArgs {
    /// The error text (`-` reads it from stdin).
    error_text: String,
    /// The directory holding `manifest.json` (default: the state_dir).
    #[arg(long, value_name = "DIR")]
    manifest: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// A triage verdict.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "daemon", derive(utoipa::ToSchema))]
pub struct Verdict {
    /// The component, or `unknown`.
    pub component_id: String,
    /// 1.0, 0.8, 0.5 or 0.0.
    pub confidence: f64,
    /// Why.
    pub reasoning: String,
    /// The key found in the text, if any.
    pub pact_key: Option<String>,
}

/// Triage by key alone: `None` when the text has no PACT key (the LLM's turn).
pub fn by_key(text: &[u8], manifest: &Manifest) -> Option<Verdict> {
    let (key, entry) = manifest.lookup_by_key(text)?;
    let key = String::from_utf8_lossy(key.as_bytes()).into_owned();
    Some(match entry {
        Some(e) => Verdict {
            component_id: e.component_id.clone(),
            confidence: 1.0,
            reasoning: format!(
                "PACT key '{key}' found in error text, matched to registered component"
            ),
            pact_key: Some(key),
        },
        None => Verdict {
            component_id: "unknown".into(),
            confidence: 0.5,
            reasoning: format!("PACT key '{key}' found but component not registered in manifest"),
            pact_key: Some(key),
        },
    })
}

pub(crate) fn run(config: &Config, args: TriageArgs) -> Result<u8, CliError> {
    let text = if args.error_text == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .lock()
            .take(MAX_TRIAGE_BYTES)
            .read_to_end(&mut buf)
            .context("reading stdin")?;
        buf
    } else {
        args.error_text.into_bytes()
    };
    let manifest_path = match &args.manifest {
        Some(dir) => dir.join("manifest.json"),
        None => config.manifest_path(),
    };
    let manifest = Manifest::load(&manifest_path)?;
    if manifest.is_empty() {
        writeln!(
            std::io::stderr().lock(),
            "No components registered. Use 'sentinel register <dir>' first."
        )
        .context("stderr")?;
        return Ok(1);
    }
    let verdict = match by_key(&text, &manifest) {
        Some(v) => v,
        None => by_llm(config, &String::from_utf8_lossy(&text), &manifest),
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &verdict).context("writing JSON")?;
        writeln!(out).context("stdout")?;
    } else {
        writeln!(out, "component_id: {}", verdict.component_id).context("stdout")?;
        writeln!(out, "confidence:   {:.1}", verdict.confidence).context("stdout")?;
        writeln!(out, "reasoning:    {}", verdict.reasoning).context("stdout")?;
    }
    Ok(0)
}

pub(crate) fn unavailable(why: &str) -> Verdict {
    Verdict {
        component_id: "unknown".into(),
        confidence: 0.0,
        reasoning: format!("No PACT key found in error text and LLM unavailable ({why})"),
        pact_key: None,
    }
}

/// The LLM path (SPEC §5.3): one call within the budget, its cost in the spend log. While a
/// daemon runs (it owns the store, and the spend log in it), the daemon is asked
/// (`POST /triage`); the verdict is the same.
#[cfg(all(unix, feature = "daemon"))]
fn by_llm(config: &Config, text: &str, manifest: &Manifest) -> Verdict {
    use crate::fix::budget::{Budget, Caps};
    use crate::fix::service::DaemonLlm;
    use crate::store::{Store, StoreError};
    use std::sync::Arc;
    match super::client::DaemonClient::find(config) {
        Ok(Some(daemon)) => {
            return match daemon.post("/triage", &serde_json::json!({ "error_text": text })) {
                Ok(doc) => serde_json::from_value(doc)
                    .unwrap_or_else(|e| unavailable(&format!("the daemon's answer: {e}"))),
                Err(e) => unavailable(&format!("{e:#}")),
            };
        }
        Ok(None) => {}
        Err(e) => return unavailable(&e.to_string()),
    }
    let llm = match DaemonLlm::new(&config.llm) {
        DaemonLlm::Unavailable(why) => return unavailable(&why),
        llm => llm,
    };
    if config.state().create().is_err() {
        return unavailable("the state directory cannot be created");
    }
    let store = match Store::open(&config.db_path()) {
        Ok(s) => Arc::new(s),
        Err(StoreError::InUse { .. }) => {
            return unavailable("another process owns the spend log; retry when it has stopped");
        }
        Err(e) => return unavailable(&e.to_string()),
    };
    let budget = Budget::new(store, Caps::new(&config.budget, config.llm.budget_per_fix));
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return unavailable("cannot start the async runtime");
    };
    verdict_of(rt.block_on(crate::fix::triage::within_budget(
        &llm,
        &budget,
        &config.llm,
        "triage",
        text,
        manifest,
    )))
}

/// The reference's verdict for an LLM triage outcome (SPEC §5.4: a match is 0.8).
#[cfg(all(unix, feature = "daemon"))]
pub fn verdict_of(outcome: crate::fix::triage::Budgeted) -> Verdict {
    use crate::fix::triage::Budgeted;
    match outcome {
        Budgeted::Matched { component_id, .. } => Verdict {
            component_id,
            confidence: 0.8,
            reasoning: "LLM triage matched error to component based on manifest analysis".into(),
            pact_key: None,
        },
        Budgeted::NoMatch => Verdict {
            component_id: "unknown".into(),
            confidence: 0.0,
            reasoning: "LLM triage could not determine responsible component".into(),
            pact_key: None,
        },
        Budgeted::Unavailable(why) => unavailable(&why),
    }
}

#[cfg(not(all(unix, feature = "daemon")))]
fn by_llm(_: &Config, _: &str, _: &Manifest) -> Verdict {
    unavailable("LLM triage is not available in this build")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::ManifestEntry;

    #[test]
    fn confidences_follow_the_reference() {
        let mut m = Manifest::default();
        m.insert(ManifestEntry::new("auth"));
        let v = by_key(b"boom [PACT:auth:login] x", &m).unwrap();
        assert_eq!((v.component_id.as_str(), v.confidence), ("auth", 1.0));
        let v = by_key(b"[PACT:1a2b3c:auth] preamble", &m).unwrap();
        assert_eq!((v.component_id.as_str(), v.confidence), ("auth", 1.0));
        let v = by_key(b"PACT:ghost:run failed", &m).unwrap();
        assert_eq!((v.component_id.as_str(), v.confidence), ("unknown", 0.5));
        assert_eq!(
            v.reasoning,
            "PACT key 'PACT:ghost:run' found but component not registered in manifest"
        );
        assert!(by_key(b"no key here", &m).is_none());
    }
}
