//! Where a component lives in its repository: its source, tests and contract.

use std::path::{Path, PathBuf};

use super::worktree::toplevel;
use crate::attribute::manifest::ManifestEntry;
use crate::config::Config;

/// Where a component lives in its repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The repository's top level.
    pub root: PathBuf,
    /// The project directory, relative to `root` (empty: the root itself).
    pub project: PathBuf,
    /// The component's source, relative to `root`.
    pub source: PathBuf,
    /// The component's tests, relative to `root`.
    pub tests: PathBuf,
    /// The contract file (absolute).
    pub contract: Option<PathBuf>,
}

impl Layout {
    /// Locates `entry`'s repository and paths (relative paths in the entry are relative to
    /// its project directory, else to `pact.project_dir`).
    ///
    /// # Errors
    ///
    /// A message when there is no git repository or a path is missing or outside it.
    pub fn locate(entry: &ManifestEntry, config: &Config) -> Result<Layout, String> {
        let project = if entry.pact_project.trim().is_empty() {
            config.pact_project_dir()
        } else {
            Some(PathBuf::from(entry.pact_project.trim()))
        };
        let abs = |p: &str| -> Option<PathBuf> {
            let p = p.trim();
            if p.is_empty() {
                return None;
            }
            let p = Path::new(p);
            Some(if p.is_absolute() {
                p.to_path_buf()
            } else {
                project.clone().unwrap_or_default().join(p)
            })
        };
        let source = abs(&entry.source_path)
            .ok_or_else(|| format!("component {} has no source_path", entry.component_id))?;
        let tests = abs(&entry.test_path)
            .ok_or_else(|| format!("component {} has no test_path", entry.component_id))?;
        let anchor = project.clone().unwrap_or_else(|| {
            source
                .parent()
                .map_or_else(|| source.clone(), Path::to_path_buf)
        });
        let root = toplevel(&anchor).map_err(|e| {
            format!(
                "component {} is not in a git repository ({}): {e}",
                entry.component_id,
                anchor.display()
            )
        })?;
        let root = std::fs::canonicalize(&root).map_err(|e| format!("{}: {e}", root.display()))?;
        let rel = |p: &Path| -> Result<PathBuf, String> {
            let c = std::fs::canonicalize(p).map_err(|e| format!("{}: {e}", p.display()))?;
            c.strip_prefix(&root).map(Path::to_path_buf).map_err(|_| {
                format!(
                    "{} is outside the repository {}",
                    p.display(),
                    root.display()
                )
            })
        };
        let source = rel(&source)?;
        let tests = rel(&tests)?;
        if source.as_os_str().is_empty() || tests.as_os_str().is_empty() {
            return Err(format!(
                "component {}: a source or test path is the repository root; edits would not \
                 be confined",
                entry.component_id
            ));
        }
        let project = match &project {
            Some(p) => rel(p)?,
            None => PathBuf::new(),
        };
        Ok(Layout {
            root,
            project,
            source,
            tests,
            contract: abs(&entry.contract_path).filter(|p| p.is_file()),
        })
    }
}
