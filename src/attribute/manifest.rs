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
#[cfg_attr(feature = "daemon", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "daemon", derive(utoipa::ToSchema))]
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
    /// The manifest could not be written.
    #[error("cannot write manifest {path}: {source}")]
    Write {
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

    /// Writes the manifest to `path` atomically: a temporary file beside it, fsync, rename,
    /// fsync of the directory. Readers see the old or the new manifest, never a torn one.
    ///
    /// # Errors
    ///
    /// [`ManifestError::Write`].
    pub fn save(&self, path: &Path) -> Result<(), ManifestError> {
        use std::io::Write;
        let err = |source| ManifestError::Write {
            path: path.to_path_buf(),
            source,
        };
        let mut text = serde_json::to_string_pretty(self).map_err(|e| err(e.into()))?;
        text.push('\n');
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            path.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            std::fs::File::open(dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(err)
    }

    /// Loads the manifest at `path`, lets `change` edit it and saves it, holding an exclusive
    /// lock (`<path>.lock`) throughout, so that concurrent registrations (the CLI and the
    /// daemon's `POST /register`) never lose each other's entries.
    ///
    /// # Errors
    ///
    /// [`ManifestError`]: the manifest cannot be read, parsed, locked or written. `change`
    /// returning `Err` leaves the file untouched and passes the error on.
    pub fn update<R, E>(
        path: &Path,
        change: impl FnOnce(&mut Manifest) -> Result<R, E>,
    ) -> Result<Result<R, E>, ManifestError> {
        let lock_path = path.with_extension("json.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .and_then(|f| f.lock().map(|()| f))
            .map_err(|source| ManifestError::Write {
                path: lock_path.clone(),
                source,
            })?;
        let mut manifest = Manifest::load(path)?;
        let out = match change(&mut manifest) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        manifest.save(path)?;
        drop(lock);
        Ok(Ok(out))
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

    /// Removes an entry.
    pub fn remove(&mut self, component_id: &str) -> Option<ManifestEntry> {
        self.components.remove(component_id)
    }

    /// The entry a text's first PACT key names (SPEC §3.4): its component, else its second
    /// segment (Pact's `PACT:<hash>:<component_id>` preamble), else none. Returns the key too.
    pub fn lookup_by_key<'t>(
        &self,
        text: &'t [u8],
    ) -> Option<(crate::scan::PactKey<'t>, Option<&ManifestEntry>)> {
        let key = crate::scan::PactKeys::new(text).next()?;
        let entry = std::str::from_utf8(key.component())
            .ok()
            .and_then(|c| self.components.get(c))
            .or_else(|| {
                std::str::from_utf8(key.method())
                    .ok()
                    .and_then(|m| self.components.get(m))
            });
        Some((key, entry))
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

/// Whether `id` is a valid component id: `[A-Za-z0-9_]+`, at most 128 bytes.
pub fn valid_component_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
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

    #[test]
    fn saves_atomically_and_updates_under_a_lock() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("manifest.json");
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let p = p.clone();
                std::thread::spawn(move || {
                    Manifest::update(&p, |m| {
                        m.insert(ManifestEntry::new(&format!("c{i}")));
                        Ok::<_, ()>(())
                    })
                    .unwrap()
                    .unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let m = Manifest::load(&p).unwrap();
        assert_eq!(m.len(), 8, "no registration lost");
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("{\n  \"components\": {"), "{text}");
        // A failed change leaves the file as it was.
        let r = Manifest::update(&p, |m| {
            m.components.clear();
            Err::<(), _>("no")
        })
        .unwrap();
        assert!(r.is_err());
        assert_eq!(Manifest::load(&p).unwrap().len(), 8);
    }

    #[test]
    fn lookup_by_key_tries_the_component_then_the_second_segment() {
        let mut m = Manifest::default();
        m.insert(ManifestEntry::new("auth"));
        let (k, e) = m.lookup_by_key(b"x [PACT:auth:login] y").unwrap();
        assert_eq!(k.as_bytes(), b"PACT:auth:login");
        assert_eq!(e.unwrap().component_id, "auth");
        let (_, e) = m.lookup_by_key(b"[PACT:3f2a1c:auth] y").unwrap();
        assert_eq!(e.unwrap().component_id, "auth");
        let (_, e) = m.lookup_by_key(b"PACT:ghost:run").unwrap();
        assert!(e.is_none());
        assert!(m.lookup_by_key(b"no key").is_none());
        assert!(
            valid_component_id("a_B9") && !valid_component_id("a-b") && !valid_component_id("")
        );
    }
}
