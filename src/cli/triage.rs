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
#[derive(Debug, Clone, PartialEq, Serialize)]
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
    let verdict = by_key(&text, &manifest).unwrap_or_else(|| Verdict {
        component_id: "unknown".into(),
        confidence: 0.0,
        reasoning: "No PACT key found in error text and LLM unavailable \
                    (LLM triage is not available in this build)"
            .into(),
        pact_key: None,
    });
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
