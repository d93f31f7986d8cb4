//! Registering the components of a Pact project (SPEC §3.1, §15.2).
//!
//! A component is a directory `contracts/<id>/` holding an `interface.json` (Pact's
//! ComponentContract) whose `component_id` is `<id>`; its tests are `tests/<id>` and its
//! source `src/<id>` when they exist. Unlike the reference, the contract is read and checked
//! (a broken one is reported and skipped, the rest register), paths are stored absolute and
//! canonical, the language is detected from the files (python, typescript, javascript, rust,
//! go), the manifest is written once and atomically, and components that vanished from the
//! project are reported (and removed with `prune`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::manifest::valid_component_id;
use super::{Manifest, ManifestEntry, ManifestError};

/// The languages the fixer knows how to test (`language` of a registration).
pub const LANGUAGES: &[&str] = &["python", "typescript", "javascript", "rust", "go"];

/// The largest `interface.json` read (Pact's contracts are a few KiB to a few hundred).
pub const MAX_CONTRACT_BYTES: u64 = 16 << 20;

/// A component that could not be registered, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// The directory name under `contracts/`.
    pub component_id: String,
    /// Why.
    pub reason: String,
}

/// What a project directory holds.
#[derive(Debug, Clone, Default)]
pub struct Discovery {
    /// The canonical project directory.
    pub project: PathBuf,
    /// Whether it has a `contracts/` directory at all.
    pub has_contracts: bool,
    /// Valid components, sorted by id (`last_registered` left empty).
    pub components: Vec<ManifestEntry>,
    /// Components whose contract is unusable.
    pub skipped: Vec<Skipped>,
}

/// The outcome of a registration.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RegisterOutcome {
    /// The canonical project directory.
    pub project: PathBuf,
    /// The ids registered (new or refreshed).
    pub registered: Vec<String>,
    /// Components reported and not registered.
    pub skipped: Vec<Skipped>,
    /// Components registered from this project earlier that it no longer has.
    pub missing: Vec<String>,
    /// Of those, the ones removed (`prune`).
    pub pruned: Vec<String>,
}

/// Why a project cannot be registered at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// The directory does not exist or is not a directory.
    #[error("{0}: no such directory")]
    NoDir(PathBuf),
    /// It cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The manifest cannot be read or written.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

/// Finds the components of the Pact project at `dir`.
///
/// # Errors
///
/// [`RegisterError::NoDir`] when `dir` is not a directory, [`RegisterError::Io`] when
/// `contracts/` cannot be listed.
pub fn discover(dir: &Path) -> Result<Discovery, RegisterError> {
    let project = std::fs::canonicalize(dir).map_err(|_| RegisterError::NoDir(dir.into()))?;
    if !project.is_dir() {
        return Err(RegisterError::NoDir(dir.into()));
    }
    let contracts = project.join("contracts");
    let mut out = Discovery {
        project: project.clone(),
        has_contracts: contracts.is_dir(),
        ..Discovery::default()
    };
    if !out.has_contracts {
        return Ok(out);
    }
    let io = |source| RegisterError::Io {
        path: contracts.clone(),
        source,
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&contracts).map_err(io)? {
        let entry = entry.map_err(io)?;
        if entry.path().is_dir() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    for id in names {
        let interface = contracts.join(&id).join("interface.json");
        if !interface.exists() {
            continue; // Not a component directory (the reference skips these silently too).
        }
        match component(&project, &id, &interface) {
            Ok(entry) => out.components.push(entry),
            Err(reason) => out.skipped.push(Skipped {
                component_id: id,
                reason,
            }),
        }
    }
    Ok(out)
}

fn component(project: &Path, id: &str, interface: &Path) -> Result<ManifestEntry, String> {
    if !valid_component_id(id) {
        return Err(format!(
            "{id:?} is not a valid component id (letters, digits and _ only)"
        ));
    }
    let contract_path = within(project, interface)?;
    let meta = std::fs::metadata(&contract_path).map_err(|e| format!("{e}"))?;
    if meta.len() > MAX_CONTRACT_BYTES {
        return Err(format!(
            "contracts/{id}/interface.json is {} bytes, over the {MAX_CONTRACT_BYTES}-byte limit",
            meta.len()
        ));
    }
    let bytes = std::fs::read(&contract_path)
        .map_err(|e| format!("cannot read contracts/{id}/interface.json: {e}"))?;
    let doc: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("contracts/{id}/interface.json is not valid JSON: {e}"))?;
    let Some(obj) = doc.as_object() else {
        return Err(format!(
            "contracts/{id}/interface.json is not a JSON object"
        ));
    };
    match obj.get("component_id").and_then(|v| v.as_str()) {
        Some(cid) if cid == id => {}
        Some(cid) => {
            return Err(format!(
                "contracts/{id}/interface.json names component {cid:?}, not {id:?}"
            ));
        }
        None => {
            return Err(format!(
                "contracts/{id}/interface.json has no \"component_id\" string"
            ));
        }
    }
    let optional = |sub: &str| -> Result<Option<PathBuf>, String> {
        let p = project.join(sub).join(id);
        if p.exists() {
            within(project, &p).map(Some)
        } else {
            Ok(None)
        }
    };
    let tests = optional("tests")?;
    let source = optional("src")?;
    let language = detect_language(
        source.as_deref(),
        &project.join("contracts").join(id),
        tests.as_deref(),
    );
    let text = |p: &Path| p.to_string_lossy().into_owned();
    let mut entry = ManifestEntry::new(id);
    entry.contract_path = text(&contract_path);
    entry.test_path = tests.as_deref().map(text).unwrap_or_default();
    entry.source_path = source.as_deref().map(text).unwrap_or_default();
    entry.language = language.to_string();
    entry.pact_project = text(project);
    Ok(entry)
}

/// The canonical form of `path`, which must stay inside `project` (a symlink out of the
/// project is refused: registration must not reach files the project does not hold).
fn within(project: &Path, path: &Path) -> Result<PathBuf, String> {
    let canon = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if canon.starts_with(project) {
        Ok(canon)
    } else {
        Err(format!(
            "{} leads outside the project (to {}) through a symlink",
            path.display(),
            canon.display()
        ))
    }
}

/// The language of a component: the most common source language under `src/<id>` (any
/// TypeScript file makes it TypeScript, as in the reference), else the language of Pact's
/// rendered stub `contracts/<id>/interface.*`, else of its tests, else python.
pub fn detect_language(
    source: Option<&Path>,
    contract_dir: &Path,
    tests: Option<&Path>,
) -> &'static str {
    for dir in [source, Some(contract_dir), tests].into_iter().flatten() {
        let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
        count_languages(dir, 0, &mut counts);
        if counts.contains_key("typescript") {
            return "typescript";
        }
        // Most files wins; ties in a fixed order.
        let best = ["python", "javascript", "rust", "go"]
            .into_iter()
            .filter_map(|l| counts.get(l).map(|&n| (n, l)))
            .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(a.1)));
        if let Some((_, lang)) = best {
            return lang;
        }
    }
    "python"
}

fn count_languages(dir: &Path, depth: usize, counts: &mut BTreeMap<&'static str, usize>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten().take(10_000) {
        let Ok(ft) = entry.file_type() else { continue };
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if ft.is_dir() {
            if depth < 4
                && !matches!(
                    &*name,
                    "node_modules" | "target" | "__pycache__" | "history"
                )
                && !name.starts_with('.')
            {
                count_languages(&entry.path(), depth + 1, counts);
            }
            continue;
        }
        let lang = match name.rsplit_once('.').map(|(_, e)| e) {
            Some("py") => "python",
            Some("ts" | "tsx" | "mts" | "cts") if !name.ends_with(".d.ts") => "typescript",
            Some("js" | "jsx" | "mjs" | "cjs") => "javascript",
            Some("rs") => "rust",
            Some("go") => "go",
            _ => continue,
        };
        *counts.entry(lang).or_default() += 1;
    }
}

/// Registers the components of the project at `dir` into the manifest at `manifest_path`,
/// in one locked, atomic update. `now` is stamped as `last_registered`.
///
/// # Errors
///
/// [`RegisterError`]: the directory or the manifest cannot be used. Bad contracts are not
/// errors: they are in [`RegisterOutcome::skipped`].
pub fn register_project(
    manifest_path: &Path,
    dir: &Path,
    prune: bool,
    now: &str,
) -> Result<RegisterOutcome, RegisterError> {
    let found = discover(dir)?;
    let project = found.project.to_string_lossy().into_owned();
    let mut out = RegisterOutcome {
        project: found.project.clone(),
        skipped: found.skipped.clone(),
        ..RegisterOutcome::default()
    };
    if found.components.is_empty() && !prune {
        // Nothing to write: leave the manifest (and its mtime) alone.
        let manifest = Manifest::load(manifest_path)?;
        out.missing = vanished(&manifest, &project, &found);
        return Ok(out);
    }
    Manifest::update(manifest_path, |m| {
        for mut entry in found.components.iter().cloned() {
            entry.last_registered = now.to_string();
            out.registered.push(entry.component_id.clone());
            m.insert(entry);
        }
        out.missing = vanished(m, &project, &found);
        if prune {
            for id in &out.missing {
                m.remove(id);
            }
            out.pruned = out.missing.clone();
        }
        Ok::<_, std::convert::Infallible>(())
    })?
    .unwrap_or_else(|never| match never {});
    Ok(out)
}

/// Entries registered from `project` that it no longer has (a skipped component still
/// exists: it is not reported as gone).
fn vanished(manifest: &Manifest, project: &str, found: &Discovery) -> Vec<String> {
    manifest
        .components
        .values()
        .filter(|e| e.pact_project == project)
        .filter(|e| {
            !found
                .components
                .iter()
                .any(|c| c.component_id == e.component_id)
                && !found
                    .skipped
                    .iter()
                    .any(|s| s.component_id == e.component_id)
        })
        .map(|e| e.component_id.clone())
        .collect()
}

/// Resolves a path given over the API and checks it stays inside one of `roots` (the
/// configured `pact.project_dir` and `api.register_roots`): absolute or relative to the
/// first root, no `..` component, and its canonical form (symlinks resolved) under a
/// root's canonical form. A path that does not exist is resolved through its longest
/// existing ancestor when `must_exist` is false.
///
/// # Errors
///
/// A message for a 400 answer: what is wrong with the path, never the roots' contents.
pub fn confine(raw: &str, roots: &[PathBuf], must_exist: bool) -> Result<PathBuf, String> {
    if roots.is_empty() {
        return Err(
            "registration over the API is disabled: set pact.project_dir or api.register_roots"
                .into(),
        );
    }
    if raw.trim().is_empty() {
        return Err("empty path".into());
    }
    if raw.contains('\0') {
        return Err("the path contains a NUL byte".into());
    }
    let p = Path::new(raw);
    if p.components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!("{raw:?}: `..` is not allowed"));
    }
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        roots[0].join(p)
    };
    let canon = match std::fs::canonicalize(&joined) {
        Ok(c) => c,
        Err(_) if !must_exist => {
            // The longest existing ancestor decides where a not-yet-existing path points.
            let mut existing = joined.as_path();
            let mut rest = Vec::new();
            loop {
                match (std::fs::canonicalize(existing), existing.parent()) {
                    (Ok(c), _) => {
                        let mut c = c;
                        for part in rest.iter().rev() {
                            c.push(part);
                        }
                        break c;
                    }
                    (Err(_), Some(parent)) => {
                        rest.push(existing.file_name().unwrap_or_default().to_os_string());
                        existing = parent;
                    }
                    (Err(e), None) => return Err(format!("{raw:?}: {e}")),
                }
            }
        }
        Err(e) => return Err(format!("{raw:?}: {e}")),
    };
    let inside = roots
        .iter()
        .any(|r| std::fs::canonicalize(r).is_ok_and(|root| canon.starts_with(&root)));
    if inside {
        Ok(canon)
    } else {
        Err(format!(
            "{raw:?} is outside the directories registration may read (pact.project_dir, api.register_roots)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn contract(id: &str) -> String {
        format!(r#"{{"component_id": "{id}", "name": "x", "version": 1, "functions": []}}"#)
    }

    #[test]
    fn discovers_checks_and_detects_languages() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "contracts/alpha/interface.json", &contract("alpha"));
        write(root, "src/alpha/alpha.py", "");
        write(root, "tests/alpha/contract_test.py", "");
        write(root, "contracts/beta/interface.json", &contract("beta"));
        write(root, "src/beta/beta.ts", "");
        write(root, "src/beta/util.js", "");
        write(root, "contracts/gamma/interface.json", &contract("gamma"));
        write(root, "contracts/gamma/interface.rs", "");
        write(root, "contracts/broken/interface.json", "{not json");
        write(root, "contracts/liar/interface.json", &contract("other"));
        write(root, "contracts/list/interface.json", "[1]");
        write(root, "contracts/notacomponent/readme.md", "");
        let d = discover(root).unwrap();
        let ids: Vec<_> = d
            .components
            .iter()
            .map(|c| c.component_id.as_str())
            .collect();
        assert_eq!(ids, ["alpha", "beta", "gamma"]);
        let langs: Vec<_> = d.components.iter().map(|c| c.language.as_str()).collect();
        assert_eq!(langs, ["python", "typescript", "rust"]);
        let alpha = &d.components[0];
        assert!(Path::new(&alpha.contract_path).is_absolute());
        assert!(alpha.test_path.ends_with("tests/alpha"));
        assert!(d.components[2].source_path.is_empty() && d.components[2].test_path.is_empty());
        let skipped: Vec<_> = d.skipped.iter().map(|s| s.component_id.as_str()).collect();
        assert_eq!(skipped, ["broken", "liar", "list"]);
        assert!(
            d.skipped[0].reason.contains("not valid JSON"),
            "{:?}",
            d.skipped[0]
        );
        assert!(
            d.skipped[1].reason.contains("\"other\""),
            "{:?}",
            d.skipped[1]
        );
    }

    #[test]
    fn registers_once_reports_vanished_and_prunes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("proj");
        write(&root, "contracts/a/interface.json", &contract("a"));
        write(&root, "contracts/b/interface.json", &contract("b"));
        let manifest = dir.path().join("manifest.json");
        let mut other = ManifestEntry::new("elsewhere");
        other.pact_project = "/some/other/project".into();
        let mut m = Manifest::default();
        m.insert(other);
        m.save(&manifest).unwrap();

        let out = register_project(&manifest, &root, false, "t1").unwrap();
        assert_eq!(out.registered, ["a", "b"]);
        assert!(out.missing.is_empty());
        std::fs::remove_dir_all(root.join("contracts/b")).unwrap();
        let out = register_project(&manifest, &root, false, "t2").unwrap();
        assert_eq!(out.registered, ["a"]);
        assert_eq!(out.missing, ["b"]);
        assert!(
            Manifest::load(&manifest).unwrap().contains(b"b"),
            "kept without --prune"
        );
        let out = register_project(&manifest, &root, true, "t3").unwrap();
        assert_eq!(out.pruned, ["b"]);
        let m = Manifest::load(&manifest).unwrap();
        assert!(!m.contains(b"b") && m.contains(b"a") && m.contains(b"elsewhere"));
        assert_eq!(m.get("a").unwrap().last_registered, "t3");
    }

    #[test]
    fn symlinks_out_of_the_project_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("proj");
        let outside = dir.path().join("outside");
        write(&outside, "interface.json", &contract("evil"));
        std::fs::create_dir_all(root.join("contracts")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("contracts/evil")).unwrap();
        let d = discover(&root).unwrap();
        assert!(d.components.is_empty());
        assert!(
            d.skipped[0].reason.contains("outside the project"),
            "{:?}",
            d.skipped
        );
        assert!(matches!(
            discover(&dir.path().join("nope")),
            Err(RegisterError::NoDir(_))
        ));
    }

    #[test]
    fn confine_refuses_dotdot_symlink_escapes_and_outsiders() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        write(&root, "proj/contracts/a/interface.json", &contract("a"));
        write(dir.path(), "secret/interface.json", "{}");
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("link")).unwrap();
        let roots = vec![root.clone()];
        let canon_root = std::fs::canonicalize(&root).unwrap();
        assert_eq!(
            confine("proj", &roots, true).unwrap(),
            canon_root.join("proj")
        );
        let abs = root.join("proj");
        assert_eq!(
            confine(abs.to_str().unwrap(), &roots, true).unwrap(),
            canon_root.join("proj")
        );
        assert!(
            confine("proj/../../secret", &roots, true)
                .unwrap_err()
                .contains("..")
        );
        assert!(
            confine("link", &roots, true)
                .unwrap_err()
                .contains("outside")
        );
        let outside = dir.path().join("secret");
        assert!(confine(outside.to_str().unwrap(), &roots, true).is_err());
        assert!(confine("proj/new/dir", &roots, true).is_err());
        assert_eq!(
            confine("proj/new/dir", &roots, false).unwrap(),
            canon_root.join("proj/new/dir")
        );
        assert!(
            confine("link/new", &roots, false)
                .unwrap_err()
                .contains("outside")
        );
        assert!(confine("proj", &[], true).unwrap_err().contains("disabled"));
    }
}
