//! Loading the attribution rules at start: the manifest, and Ledger's severity overrides
//! from `ledger.mappings_file` and/or `ledger.ledger_api` (SPEC §9.4).
//!
//! Ledger is advisory: a document that cannot be fetched or read is a warning and Sentinel
//! carries on with the built-in rules (the reference's FA-S-030). A manifest that cannot be
//! read is an error: attribution without it would silently turn every line unregistered.

use std::time::Duration;

use super::{Manifest, ManifestError, Rules, SeverityRules};
use crate::config::Config;

/// How long the Ledger fetch may take (the reference's).
pub const LEDGER_TIMEOUT: Duration = Duration::from_secs(10);

/// The rules `config` describes, with warnings about the severity overrides that could not
/// be used (for the caller to log).
///
/// # Errors
///
/// [`ManifestError`] when `manifest.json` exists but cannot be read or parsed.
pub fn load_rules(config: &Config) -> Result<(Rules, Vec<String>), ManifestError> {
    let manifest = Manifest::load(&config.manifest_path())?;
    let mut severity = SeverityRules::builtin();
    let mut warnings = Vec::new();
    if let Some(path) = &config.ledger.mappings_file {
        match std::fs::read(path) {
            Err(e) => warnings.push(format!(
                "ledger.mappings_file {}: {e} — proceeding without its severity overrides",
                path.display()
            )),
            Ok(bytes) => add(
                &mut severity,
                &mut warnings,
                &bytes,
                &path.display().to_string(),
            ),
        }
    }
    if let Some(api) = config.ledger.ledger_api.as_deref().map(str::trim)
        && !api.is_empty()
    {
        let url = export_url(api);
        match fetch(&url) {
            Ok(bytes) => add(&mut severity, &mut warnings, &bytes, &url),
            Err(e) => warnings.push(e),
        }
    }
    Ok((Rules { manifest, severity }, warnings))
}

fn add(rules: &mut SeverityRules, warnings: &mut Vec<String>, bytes: &[u8], from: &str) {
    match SeverityRules::from_json(bytes) {
        Ok((more, skipped)) => {
            warnings.extend(skipped.into_iter().map(|w| format!("{from}: {w}")));
            rules.extend(more);
        }
        Err(e) => warnings.push(format!(
            "{from}: {e} — proceeding without its severity overrides"
        )),
    }
}

/// `<ledger_api>/export/sentinel`, unless the URL already names an export document.
pub fn export_url(api: &str) -> String {
    if api.contains("/export/") {
        api.to_string()
    } else {
        format!("{}/export/sentinel", api.trim_end_matches('/'))
    }
}

#[cfg(feature = "daemon")]
fn fetch(url: &str) -> Result<Vec<u8>, String> {
    let unavailable = |e: &dyn std::fmt::Display| {
        format!("Ledger unavailable at {url} — proceeding without severity overrides: {e}")
    };
    let client = reqwest::blocking::Client::builder()
        .timeout(LEDGER_TIMEOUT)
        .build()
        .map_err(|e| unavailable(&e))?;
    let resp = client.get(url).send().map_err(|e| unavailable(&e))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!(
            "Ledger returned {} at {url} — proceeding without severity overrides",
            status.as_u16()
        ));
    }
    // A mappings document is small; refuse to buffer anything huge.
    let bytes = resp.bytes().map_err(|e| unavailable(&e))?;
    if bytes.len() > 16 << 20 {
        return Err(unavailable(&"the document is over 16 MiB"));
    }
    Ok(bytes.to_vec())
}

#[cfg(not(feature = "daemon"))]
fn fetch(url: &str) -> Result<Vec<u8>, String> {
    Err(format!(
        "ledger.ledger_api {url}: this build has no HTTP client (feature `daemon`); \
         use ledger.mappings_file"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_urls() {
        assert_eq!(
            export_url("http://127.0.0.1:7701/"),
            "http://127.0.0.1:7701/export/sentinel"
        );
        assert_eq!(export_url("http://h/export/json"), "http://h/export/json");
    }
}
