//! Contract tightening: a proven fix that changes the contract produces the new
//! ComponentContract JSON (version + 1) and hands it to Pact.
//!
//! The proposal is always kept in `state_dir/proposed_contracts/<component>.json`. Then, in
//! order (SPEC §8, made safe):
//!
//! 1. `pact` on `PATH`: `pact sentinel push-contract <project> <component> <file>` runs
//!    against the project directory **inside the fix worktree**, so the rewritten
//!    `contracts/<component>/` lands in the fix commit, beside the code it describes, and
//!    reaches the user's branch only with the fix. Their working tree is never written.
//! 2. `pact.api_endpoint`: `POST <api>/contracts/<component>` with the document.
//! 3. Otherwise the proposal file is where it stays (`proposed:<path>`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::layout::Layout;
use super::runner::run_tests;
use crate::attribute::manifest::ManifestEntry;
use crate::config::Config;

/// Where a tightened contract went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// `pact-cli`, `pact-api`, or `proposed:<path>`.
    pub how: String,
    /// Files to add to the fix commit (relative to the repository root), when Pact rewrote
    /// them in the worktree.
    pub commit_prefix: Option<PathBuf>,
}

/// Reads the LLM's contract text (JSON, possibly in a code fence) and returns the new
/// contract: the old one's `version` + 1.
///
/// # Errors
///
/// A message when the text is not a JSON object.
pub fn tighten(text: &str, old: Option<&Path>) -> Result<String, String> {
    let body = text.trim();
    let body = body
        .strip_prefix("```json")
        .or_else(|| body.strip_prefix("```"))
        .map_or(body, |b| b.trim_end().trim_end_matches("```"));
    let mut doc: Value = serde_json::from_str(body.trim())
        .map_err(|e| format!("the proposed contract is not JSON: {e}"))?;
    let Some(obj) = doc.as_object_mut() else {
        return Err("the proposed contract is not a JSON object".into());
    };
    let old_version = old
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v.get("version").and_then(Value::as_u64))
        .unwrap_or(0);
    obj.insert("version".into(), Value::from(old_version + 1));
    serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())
}

/// Keeps the proposal and pushes it (see the module docs). `worktree` is the fix worktree.
///
/// # Errors
///
/// A message when the proposal cannot be written.
pub fn push(
    config: &Config,
    entry: &ManifestEntry,
    layout: &Layout,
    worktree: &Path,
    doc: &str,
    fix_id: &str,
) -> Result<Pushed, String> {
    let dir = config.state().proposed_contracts();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let file = dir.join(format!("{}.json", entry.component_id));
    let tmp = dir.join(format!(".{}.json.tmp", entry.component_id));
    std::fs::write(&tmp, doc)
        .and_then(|()| std::fs::rename(&tmp, &file))
        .map_err(|e| format!("{}: {e}", file.display()))?;
    if let Some(pact) = find_on_path("pact") {
        let project = worktree.join(&layout.project);
        let argv = [
            pact.to_string_lossy().into_owned(),
            "sentinel".into(),
            "push-contract".into(),
            project.to_string_lossy().into_owned(),
            entry.component_id.clone(),
            file.to_string_lossy().into_owned(),
        ];
        let out = run_tests(&project, &argv, Duration::from_secs(120), &[]);
        if out.passed {
            let prefix = layout.project.join("contracts").join(&entry.component_id);
            let exists = worktree.join(&prefix).exists();
            return Ok(Pushed {
                how: "pact-cli".into(),
                commit_prefix: exists.then_some(prefix),
            });
        }
        tracing::warn!(output = %out.output_tail, "pact sentinel push-contract failed");
    } else if let Some(api) = config
        .pact
        .api_endpoint
        .as_deref()
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        let url = format!(
            "{}/contracts/{}",
            api.trim_end_matches('/'),
            entry.component_id
        );
        let body = serde_json::json!({
            "component_id": entry.component_id,
            "contract_yaml": doc,
            "contract": serde_json::from_str::<Value>(doc).unwrap_or_default(),
            "reason": format!("Tightened after fix {fix_id}"),
            "fix_id": fix_id,
        });
        let sent = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())
            .and_then(|c| c.post(&url).json(&body).send().map_err(|e| e.to_string()));
        match sent {
            Ok(r) if r.status().is_success() => {
                return Ok(Pushed {
                    how: "pact-api".into(),
                    commit_prefix: None,
                });
            }
            Ok(r) => tracing::warn!(status = %r.status(), %url, "Pact refused the contract"),
            Err(e) => tracing::warn!(error = %e, %url, "cannot reach Pact"),
        }
    }
    Ok(Pushed {
        how: format!("proposed:{}", file.display()),
        commit_prefix: None,
    })
}

/// The first executable `name` on `PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tightening_bumps_the_version_and_refuses_non_json() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("interface.json");
        std::fs::write(&old, r#"{"component_id":"a","version":3}"#).unwrap();
        let new = tighten(
            "```json\n{\"component_id\":\"a\",\"version\":1}\n```",
            Some(&old),
        )
        .unwrap();
        let v: Value = serde_json::from_str(&new).unwrap();
        assert_eq!(v["version"], 4);
        assert!(tighten("version: 2", Some(&old)).is_err());
        assert!(tighten("[1]", None).is_err());
    }
}
