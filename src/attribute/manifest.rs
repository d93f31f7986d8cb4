//! `state_dir/manifest.json`: the registered components, in the reference's shape
//! (`{"components": {"<id>": ManifestEntry}}`), which other tools read too.
//!
//! A manifest that cannot be parsed is an error naming the file; it is never treated as empty
//! (the reference logged at DEBUG and carried on with no components, so every error line
//! silently became "unregistered").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One registered component, as the reference writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ManifestEntry {
    /// The component id (`[A-Za-z0-9_]+`).
    pub component_id: String,
    /// `contracts/<id>/interface.json`.
    #[serde(default)]
    pub contract_path: String,
    /// `tests/<id>`.
    #[serde(default)]
    pub test_path: String,
    /// `src/<id>`.
    #[serde(default)]
    pub source_path: String,
    /// `python`, `typescript`, `javascript`, `rust` or `go`.
    #[serde(default = "default_language")]
    pub language: String,
    /// When it was last registered (RFC 3339).
    #[serde(default)]
    pub last_registered: String,
    /// The Pact project directory.
    #[serde(default)]
    pub pact_project: String,
}

fn default_language() -> String {
    "python".into()
}

impl ManifestEntry {
    /// An entry with only its id set.
    pub fn new(component_id: &str) -> ManifestEntry {
        ManifestEntry {
            component_id: component_id.to_string(),
            contract_path: String::new(),
            test_path: String::new(),
            source_path: String::new(),
            language: default_language(),
            last_registered: String::new(),
            pact_project: String::new(),
        }
    }
}

/// The registered components.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// By component id.
    pub components: BTreeMap<String, ManifestEntry>,
}

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The file exists but could not be read.
    #[error("cannot read manifest {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a manifest.
    #[error(
        "manifest {path} is not valid: {source} (fix or remove the file; it is never silently emptied)"
    )]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause, with line and column.
        source: serde_json::Error,
    },
}

impl Manifest {
    /// Loads `path`; a missing file is an empty manifest.
    ///
    /// # Errors
    ///
    /// [`ManifestError`] when the file exists but cannot be read or parsed.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Manifest::default()),
            Err(source) => {
                return Err(ManifestError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        serde_json::from_slice(&bytes).map_err(|source| ManifestError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Whether `component_id` is registered.
    pub fn contains(&self, component_id: &[u8]) -> bool {
        std::str::from_utf8(component_id).is_ok_and(|id| self.components.contains_key(id))
    }

    /// The entry of `component_id`.
    pub fn get(&self, component_id: &str) -> Option<&ManifestEntry> {
        self.components.get(component_id)
    }

    /// Adds or replaces an entry.
    pub fn insert(&mut self, entry: ManifestEntry) {
        self.components.insert(entry.component_id.clone(), entry);
    }

    /// The number of registered components.
    pub fn len(&self) -> usize {
        self.components.len()
    }

    /// Whether no component is registered.
    pub fn is_empty(&self) -> bool {
        self.components.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_reference_shape_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("manifest.json");
        assert!(Manifest::load(&p).unwrap().is_empty());
        std::fs::write(&p, r#"{"components": {"auth": {"component_id": "auth", "contract_path": "c", "test_path": "", "source_path": "", "language": "python", "last_registered": "x", "pact_project": "/p"}}}"#).unwrap();
        let m = Manifest::load(&p).unwrap();
        assert!(m.contains(b"auth"));
        assert!(!m.contains(b"other"));
        std::fs::write(&p, "{\"components\": ").unwrap();
        let err = Manifest::load(&p).unwrap_err().to_string();
        assert!(err.contains("manifest.json"), "{err}");
    }
}
