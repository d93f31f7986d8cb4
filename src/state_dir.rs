//! `state_dir`: every path Sentinel keeps there, named in one place.
//!
//! | path | what |
//! |---|---|
//! | `sentinel.redb` | the store ([`crate::store`]) |
//! | `sentinel.redb.v<N>-backup` | the store as it was before a schema migration |
//! | `sentinel.wal/` | the ingest log of acknowledged webhook events |
//! | `sentinel.pid` | the pid of the daemon writing the store (improves "in use" errors) |
//! | `daemon.json` | the running daemon's pid and addresses ([`crate::daemon`]) |
//! | `manifest.json` | registered components ([`crate::attribute::manifest`]) |
//! | `worktrees/` | the fixer's git worktrees (when not in the system temp dir) |
//! | `monitoring/reports/` | the fixer's postmortems, one Markdown file per incident |
//! | `proposed_contracts/` | tightened contracts that could not be pushed to Pact |

use std::path::{Path, PathBuf};

/// The daemon's address file.
pub const DAEMON_FILE: &str = "daemon.json";
/// The store's file.
pub const STORE_FILE: &str = "sentinel.redb";
/// The manifest of registered components.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The file, beside the store, in which the daemon writing it says who it is.
pub const OWNER_FILE: &str = "sentinel.pid";

/// The ingest log's directory beside a store file: `sentinel.wal/` beside `sentinel.redb`.
pub fn wal_of(store: &Path) -> PathBuf {
    store.with_extension("wal")
}

/// The owner (pid) file beside a store file: `sentinel.pid` in the store's directory.
pub fn owner_file_of(store: &Path) -> Option<PathBuf> {
    store.parent().map(|dir| dir.join(OWNER_FILE))
}

/// The state directory of one configuration. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// The state directory at `root` (nothing is created).
    pub fn new(root: impl Into<PathBuf>) -> StateDir {
        StateDir { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `sentinel.redb`.
    pub fn store(&self) -> PathBuf {
        self.root.join(STORE_FILE)
    }

    /// `sentinel.wal/`: the ingest log.
    pub fn wal(&self) -> PathBuf {
        wal_of(&self.store())
    }

    /// `sentinel.pid`.
    pub fn owner_file(&self) -> PathBuf {
        self.root.join(OWNER_FILE)
    }

    /// `manifest.json`.
    pub fn manifest(&self) -> PathBuf {
        self.root.join(MANIFEST_FILE)
    }

    /// `daemon.json`.
    pub fn daemon_file(&self) -> PathBuf {
        self.root.join(DAEMON_FILE)
    }

    /// `worktrees/`.
    pub fn worktrees(&self) -> PathBuf {
        self.root.join("worktrees")
    }

    /// `monitoring/reports/`.
    pub fn reports(&self) -> PathBuf {
        self.root.join("monitoring").join("reports")
    }

    /// `proposed_contracts/`.
    pub fn proposed_contracts(&self) -> PathBuf {
        self.root.join("proposed_contracts")
    }

    /// Creates the directory (mode 0700) unless it exists; refuses a symlink or a file.
    ///
    /// # Errors
    ///
    /// A message naming the directory.
    pub fn create(&self) -> anyhow::Result<()> {
        let dir = &self.root;
        match std::fs::symlink_metadata(dir) {
            Ok(m) if m.file_type().is_symlink() => {
                anyhow::bail!(
                    "state_dir {} is a symlink; refusing to use it",
                    dir.display()
                )
            }
            Ok(m) if !m.is_dir() => {
                anyhow::bail!("state_dir {} exists and is not a directory", dir.display())
            }
            Ok(_) => Ok(()),
            Err(_) => {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| anyhow::anyhow!("cannot create state_dir {}: {e}", dir.display()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_creation() {
        let tmp = tempfile::tempdir().unwrap();
        let s = StateDir::new(tmp.path().join("a/state"));
        assert_eq!(s.store(), tmp.path().join("a/state/sentinel.redb"));
        assert_eq!(s.reports(), tmp.path().join("a/state/monitoring/reports"));
        assert_eq!(s.wal(), tmp.path().join("a/state/sentinel.wal"));
        assert_eq!(owner_file_of(&s.store()), Some(s.owner_file()));
        s.create().unwrap();
        s.create().unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(s.root()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let file = tmp.path().join("f");
        std::fs::write(&file, "x").unwrap();
        assert!(StateDir::new(&file).create().is_err());
        let link = tmp.path().join("l");
        std::os::unix::fs::symlink(s.root(), &link).unwrap();
        let e = StateDir::new(&link).create().unwrap_err().to_string();
        assert!(e.contains("symlink"), "{e}");
    }
}
