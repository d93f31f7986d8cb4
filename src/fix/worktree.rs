//! Safe git operations for one fix: an isolated `git worktree` on a new branch, confined
//! edits, a commit of exactly the edited files, and an optional fast-forward of the user's
//! branch.
//!
//! What the reference did wrong and this module does not (SPEC §13 item 11): it ran
//! `git add -A` and `git reset --hard` in the user's own repository, and an empty component
//! path resolved to the current directory. Here:
//!
//! - the user's working tree, index, stash and uncommitted or untracked files are never
//!   touched: every change happens in a separate worktree created from their `HEAD` commit
//!   (`git worktree add -b <branch> <dir> HEAD`), and only the edited paths are staged
//!   (`git add -- <paths>`);
//! - every edit path is relative, has no `..`, no `.git` component, does not pass through a
//!   symlink, and lies under one of the allowed prefixes given at creation (the component's
//!   registered source and test directories); empty prefixes are refused, so an unset
//!   `source_path` can never widen the allowance to the whole repository. A batch of edits is
//!   validated completely before the first byte is written;
//! - `git` runs with a cleared environment: `PATH`, `LC_ALL=C`, `GIT_TERMINAL_PROMPT=0`,
//!   `GIT_CONFIG_NOSYSTEM=1`, `GIT_CONFIG_GLOBAL=/dev/null` (no system or user config:
//!   no signing prompts, no aliases, no external diff drivers), a fixed author and committer
//!   (`Sentinel <sentinel@localhost>`), and none of the caller's `GIT_DIR`/`GIT_WORK_TREE`/
//!   `GIT_INDEX_FILE`. Hooks and fsmonitor are disabled with `-c core.hooksPath=/dev/null
//!   -c core.fsmonitor=false` so that a repository's hooks do not run code on our commits.
//!
//! Everything is synchronous (`std::process`); callers in async code use `spawn_blocking`.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The fixed identity of every commit Sentinel makes.
pub const AUTHOR_NAME: &str = "Sentinel";
/// The fixed e-mail of every commit Sentinel makes.
pub const AUTHOR_EMAIL: &str = "sentinel@localhost";

/// How much of a failing command's stderr an error keeps.
const STDERR_TAIL: usize = 2048;

/// A git operation that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GitError {
    /// `git` could not be started.
    #[error("cannot run `git {command}`: {source}")]
    Spawn {
        /// The arguments, space-joined.
        command: String,
        /// The cause.
        source: std::io::Error,
    },
    /// `git` exited unsuccessfully.
    #[error("`git {command}` failed ({status}): {stderr}")]
    Failed {
        /// The arguments, space-joined.
        command: String,
        /// The exit status, as displayed.
        status: String,
        /// The last bytes of its stderr.
        stderr: String,
    },
    /// The directory is not inside a git repository (or has no commit yet).
    #[error("{path} is not a git repository with a commit: {stderr}")]
    NotARepo {
        /// The directory given.
        path: PathBuf,
        /// The last bytes of git's stderr.
        stderr: String,
    },
    /// The branch to create already exists.
    #[error("branch {branch} already exists in {repo}; refusing to reuse it")]
    BranchExists {
        /// The branch name.
        branch: String,
        /// The repository.
        repo: PathBuf,
    },
    /// The branch name is not a valid new branch name.
    #[error("invalid branch name {0:?}")]
    InvalidBranch(String),
    /// The worktree directory already exists.
    #[error("worktree directory {0} already exists")]
    DirExists(PathBuf),
    /// An allowed prefix is empty, absolute or contains `..`.
    #[error("invalid allowed prefix {0:?}: must be a non-empty relative path without `..`")]
    InvalidPrefix(PathBuf),
    /// `commit` was called with no change to commit.
    #[error("nothing to commit: no applied edit changed a file")]
    NothingToCommit,
    /// Creating the worktree's parent directory failed.
    #[error("cannot create {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// One file edit proposed for a fix. Paths are relative to the repository root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Replace the single occurrence of `old` in an existing file by `new`.
    Replace {
        /// The file.
        path: PathBuf,
        /// Text that must occur exactly once.
        old: String,
        /// Its replacement.
        new: String,
    },
    /// Write a whole file (created, with its parent directories, if missing).
    Write {
        /// The file.
        path: PathBuf,
        /// Its new contents.
        contents: String,
    },
}

impl Edit {
    /// The path the edit writes.
    pub fn path(&self) -> &Path {
        match self {
            Edit::Replace { path, .. } | Edit::Write { path, .. } => path,
        }
    }
}

/// Why a batch of edits was rejected. Nothing was written when validation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EditError {
    /// The path is empty.
    #[error("edit path is empty")]
    Empty,
    /// The path is absolute.
    #[error("edit path {0} is absolute")]
    Absolute(PathBuf),
    /// The path has a `..`, `.` or `.git` component.
    #[error("edit path {0} has a `..`, `.` or `.git` component")]
    BadComponent(PathBuf),
    /// The path lies outside every allowed prefix.
    #[error("edit path {path} is outside the allowed directories {allowed:?}")]
    OutsideAllowed {
        /// The path.
        path: PathBuf,
        /// The allowed prefixes.
        allowed: Vec<PathBuf>,
    },
    /// A component of the path (or the path itself) is a symlink.
    #[error("edit path {path} goes through the symlink {link}")]
    Symlink {
        /// The path.
        path: PathBuf,
        /// The symlink found.
        link: PathBuf,
    },
    /// A component of the path exists but is not a directory, or the target is a directory.
    #[error("edit path {path}: {what}")]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        what: &'static str,
    },
    /// `Replace` needs exactly one occurrence of `old`.
    #[error("edit of {path}: expected exactly one occurrence of the old text, found {found}")]
    Occurrences {
        /// The path.
        path: PathBuf,
        /// How many were found.
        found: usize,
    },
    /// Reading or writing failed.
    #[error("edit of {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Builds a `git` command with a cleared, deterministic environment, run in `dir`.
/// Serialises this process's `git worktree add`, `remove` and `prune`. They are not safe
/// against each other in one repository: `prune` deletes the administrative directory of a
/// worktree that `add` is still creating (its checkout does not exist yet), and `add` then
/// fails (`could not open '.git/worktrees/<name>/locked'`). Two fixes run at once
/// (`llm.max_concurrent_fixes`), so one ending must not prune under another starting.
static WORKTREE_ADMIN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn worktree_admin() -> std::sync::MutexGuard<'static, ()> {
    WORKTREE_ADMIN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn git_command(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    cmd.env("LC_ALL", "C")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", AUTHOR_NAME)
        .env("GIT_AUTHOR_EMAIL", AUTHOR_EMAIL)
        .env("GIT_COMMITTER_NAME", AUTHOR_NAME)
        .env("GIT_COMMITTER_EMAIL", AUTHOR_EMAIL)
        .env("GIT_EDITOR", "true")
        .env("GIT_PAGER", "cat")
        .args([
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "core.fsmonitor=false",
            "-c",
            "commit.gpgSign=false",
        ])
        .current_dir(dir)
        .stdin(Stdio::null());
    cmd
}

fn tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(STDERR_TAIL);
    String::from_utf8_lossy(&bytes[start..]).trim().to_string()
}

fn display_args<S: AsRef<OsStr>>(args: &[S]) -> String {
    args.iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs git, returning its raw output whatever the exit status.
fn git_output<S: AsRef<OsStr>>(dir: &Path, args: &[S]) -> Result<Output, GitError> {
    git_command(dir)
        .args(args)
        .output()
        .map_err(|source| GitError::Spawn {
            command: display_args(args),
            source,
        })
}

/// Runs git and returns its trimmed stdout; a non-zero exit is an error.
fn git<S: AsRef<OsStr>>(dir: &Path, args: &[S]) -> Result<String, GitError> {
    let out = git_output(dir, args)?;
    if !out.status.success() {
        return Err(GitError::Failed {
            command: display_args(args),
            status: out.status.to_string(),
            stderr: tail(&out.stderr),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The repository's top-level directory, or `NotARepo`.
pub fn toplevel(repo: &Path) -> Result<PathBuf, GitError> {
    let out = git_output(repo, &["rev-parse", "--show-toplevel"])?;
    if !out.status.success() {
        return Err(GitError::NotARepo {
            path: repo.to_path_buf(),
            stderr: tail(&out.stderr),
        });
    }
    Ok(PathBuf::from(
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    ))
}

fn head_commit(root: &Path) -> Result<String, GitError> {
    let out = git_output(root, &["rev-parse", "--verify", "HEAD^{commit}"])?;
    if !out.status.success() {
        return Err(GitError::NotARepo {
            path: root.to_path_buf(),
            stderr: tail(&out.stderr),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn branch_exists(root: &Path, branch: &str) -> Result<bool, GitError> {
    let out = git_output(
        root,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("refs/heads/{branch}"),
        ],
    )?;
    Ok(out.status.success())
}

fn check_branch_name(root: &Path, branch: &str) -> Result<(), GitError> {
    if branch.is_empty() || branch.starts_with('-') {
        return Err(GitError::InvalidBranch(branch.to_string()));
    }
    let out = git_output(root, &["check-ref-format", "--branch", branch])?;
    if !out.status.success() {
        return Err(GitError::InvalidBranch(branch.to_string()));
    }
    Ok(())
}

/// Checks that `path` is a non-empty relative path of plain components, none `.git`.
fn check_relative(path: &Path) -> Result<(), EditError> {
    if path.as_os_str().is_empty() {
        return Err(EditError::Empty);
    }
    for c in path.components() {
        match c {
            Component::Normal(name) if !name.eq_ignore_ascii_case(".git") => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(EditError::Absolute(path.to_path_buf()));
            }
            _ => return Err(EditError::BadComponent(path.to_path_buf())),
        }
    }
    Ok(())
}

/// Checks every existing component of `root/rel` with `symlink_metadata`: no symlink anywhere,
/// directories for all but the last, and the last (if present) a regular file. Returns whether
/// the file exists.
fn check_no_symlink(root: &Path, rel: &Path) -> Result<bool, EditError> {
    let mut cur = root.to_path_buf();
    let mut so_far = PathBuf::new();
    let count = rel.components().count();
    for (i, c) in rel.components().enumerate() {
        cur.push(c);
        so_far.push(c);
        let meta = match std::fs::symlink_metadata(&cur) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(source) => {
                return Err(EditError::Io {
                    path: rel.to_path_buf(),
                    source,
                });
            }
        };
        let ft = meta.file_type();
        if ft.is_symlink() {
            return Err(EditError::Symlink {
                path: rel.to_path_buf(),
                link: so_far,
            });
        }
        let last = i + 1 == count;
        if !last && !ft.is_dir() {
            return Err(EditError::NotAFile {
                path: rel.to_path_buf(),
                what: "a parent component is not a directory",
            });
        }
        if last && !ft.is_file() {
            return Err(EditError::NotAFile {
                path: rel.to_path_buf(),
                what: "the target exists and is not a regular file",
            });
        }
    }
    Ok(true)
}

/// One fix's isolated worktree, on its own branch created from the user's `HEAD`.
///
/// Dropping it removes the worktree directory (the branch stays, for review).
#[derive(Debug)]
pub struct FixWorktree {
    repo: PathBuf,
    path: PathBuf,
    branch: String,
    base: String,
    allowed: Vec<PathBuf>,
    changed: Vec<PathBuf>,
    removed: bool,
}

impl FixWorktree {
    /// Creates `<base_dir>/<branch with '/' as '-'>` as a new worktree of `repo` on the new
    /// branch `branch`, at the user's `HEAD` commit. Edits will be confined to `allowed`
    /// (paths relative to the repository root, typically a component's `source_path` and
    /// `test_path`; see [`allowed_prefixes`]).
    ///
    /// Refuses an existing branch, a non-repository, an invalid branch name, an existing
    /// worktree directory and an empty, absolute or `..` prefix. The user's working tree and
    /// index are not touched.
    pub fn create(
        repo: &Path,
        branch: &str,
        base_dir: &Path,
        allowed: &[PathBuf],
    ) -> Result<FixWorktree, GitError> {
        let root = toplevel(repo)?;
        for p in allowed {
            if check_relative(p).is_err() {
                return Err(GitError::InvalidPrefix(p.clone()));
            }
        }
        check_branch_name(&root, branch)?;
        let base = head_commit(&root)?;
        if branch_exists(&root, branch)? {
            return Err(GitError::BranchExists {
                branch: branch.to_string(),
                repo: root,
            });
        }
        std::fs::create_dir_all(base_dir).map_err(|source| GitError::Io {
            path: base_dir.to_path_buf(),
            source,
        })?;
        let base_dir = std::fs::canonicalize(base_dir).map_err(|source| GitError::Io {
            path: base_dir.to_path_buf(),
            source,
        })?;
        let path = base_dir.join(branch.replace('/', "-"));
        if std::fs::symlink_metadata(&path).is_ok() {
            return Err(GitError::DirExists(path));
        }
        let _admin = worktree_admin();
        git(
            &root,
            &[
                OsStr::new("worktree"),
                OsStr::new("add"),
                OsStr::new("--quiet"),
                OsStr::new("-b"),
                OsStr::new(branch),
                path.as_os_str(),
                OsStr::new(&base),
            ],
        )?;
        Ok(FixWorktree {
            repo: root,
            path,
            branch: branch.to_string(),
            base,
            allowed: allowed.to_vec(),
            changed: Vec::new(),
            removed: false,
        })
    }

    /// The worktree directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The fix branch.
    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// The commit the worktree was created from (the user's `HEAD` at creation).
    pub fn base_commit(&self) -> &str {
        &self.base
    }

    /// The paths changed by applied edits so far (relative, in first-edit order).
    pub fn changed_paths(&self) -> &[PathBuf] {
        &self.changed
    }

    /// Validates every edit, then applies them all. Edits apply in order (a later edit of the
    /// same path sees the earlier one). On a validation error nothing is written.
    pub fn apply(&mut self, edits: &[Edit]) -> Result<(), EditError> {
        // path -> planned contents
        let mut planned: BTreeMap<PathBuf, String> = BTreeMap::new();
        let mut order: Vec<PathBuf> = Vec::new();
        for edit in edits {
            let rel = edit.path();
            check_relative(rel)?;
            if !self.allowed.iter().any(|p| rel.starts_with(p)) {
                return Err(EditError::OutsideAllowed {
                    path: rel.to_path_buf(),
                    allowed: self.allowed.clone(),
                });
            }
            let exists = check_no_symlink(&self.path, rel)?;
            let new_contents = match edit {
                Edit::Write { contents, .. } => contents.clone(),
                Edit::Replace { old, new, .. } => {
                    let current =
                        match planned.get(rel) {
                            Some(text) => text.clone(),
                            None if exists => std::fs::read_to_string(self.path.join(rel))
                                .map_err(|source| EditError::Io {
                                    path: rel.to_path_buf(),
                                    source,
                                })?,
                            None => {
                                return Err(EditError::Io {
                                    path: rel.to_path_buf(),
                                    source: std::io::ErrorKind::NotFound.into(),
                                });
                            }
                        };
                    let found = if old.is_empty() {
                        0
                    } else {
                        current.matches(old.as_str()).count()
                    };
                    if found != 1 {
                        return Err(EditError::Occurrences {
                            path: rel.to_path_buf(),
                            found,
                        });
                    }
                    current.replacen(old.as_str(), new, 1)
                }
            };
            if !planned.contains_key(rel) {
                order.push(rel.to_path_buf());
            }
            planned.insert(rel.to_path_buf(), new_contents);
        }
        for rel in order {
            let full = self.path.join(&rel);
            if let Some(parent) = full.parent() {
                std::fs::create_dir_all(parent).map_err(|source| EditError::Io {
                    path: rel.clone(),
                    source,
                })?;
            }
            std::fs::write(&full, &planned[&rel]).map_err(|source| EditError::Io {
                path: rel.clone(),
                source,
            })?;
            if !self.changed.contains(&rel) {
                self.changed.push(rel);
            }
        }
        Ok(())
    }

    /// Stages exactly the files changed by applied edits (`git add -- <paths>`) and commits
    /// them on the fix branch, inside the worktree. Returns the new commit's sha.
    pub fn commit(&mut self, message: &str) -> Result<String, GitError> {
        if self.changed.is_empty() {
            return Err(GitError::NothingToCommit);
        }
        let mut add: Vec<&OsStr> = vec![OsStr::new("add"), OsStr::new("--")];
        add.extend(self.changed.iter().map(|p| p.as_os_str()));
        git(&self.path, &add)?;
        let staged = git_output(&self.path, &["diff", "--cached", "--quiet"])?;
        if staged.status.success() {
            return Err(GitError::NothingToCommit);
        }
        git(
            &self.path,
            &["commit", "--quiet", "--no-verify", "-m", message],
        )?;
        git(&self.path, &["rev-parse", "HEAD"])
    }

    /// The diff of the worktree (committed and uncommitted edits, new files included) against
    /// the base commit.
    pub fn diff(&self) -> Result<String, GitError> {
        if !self.changed.is_empty() {
            let mut add: Vec<&OsStr> = vec![
                OsStr::new("add"),
                OsStr::new("--intent-to-add"),
                OsStr::new("--"),
            ];
            add.extend(self.changed.iter().map(|p| p.as_os_str()));
            git(&self.path, &add)?;
        }
        let out = git_output(
            &self.path,
            &["diff", "--no-color", "--no-ext-diff", &self.base, "--"],
        )?;
        if !out.status.success() {
            return Err(GitError::Failed {
                command: format!("diff {}", self.base),
                status: out.status.to_string(),
                stderr: tail(&out.stderr),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Adds `rel` (a file or directory the fixer wrote itself, not an LLM edit — e.g. the
    /// contract Pact rewrote) to what [`FixWorktree::commit`] stages.
    pub fn include(&mut self, rel: &Path) -> Result<(), EditError> {
        check_relative(rel)?;
        if !self.changed.iter().any(|c| c == rel) {
            self.changed.push(rel.to_path_buf());
        }
        Ok(())
    }

    /// Removes the worktree and deletes the fix branch, which must still be at the base
    /// commit (a failed fix leaves nothing behind in the user's repository).
    pub fn discard(mut self) -> Result<(), GitError> {
        self.cleanup()?;
        let tip = git(
            &self.repo,
            &["rev-parse", &format!("refs/heads/{}", self.branch)],
        )?;
        if tip == self.base {
            git(&self.repo, &["branch", "--quiet", "-D", "--", &self.branch])?;
        }
        Ok(())
    }

    /// Undoes every edit: the worktree (ours, never the user's) goes back to the base commit
    /// (`git reset --hard` + `git clean -fd` inside it), for the next attempt.
    pub fn reset(&mut self) -> Result<(), GitError> {
        git(&self.path, &["reset", "--quiet", "--hard", &self.base])?;
        git(&self.path, &["clean", "--quiet", "-fd"])?;
        self.changed.clear();
        Ok(())
    }

    /// Removes the worktree (`git worktree remove --force`, then `git worktree prune`). The
    /// branch stays, for review.
    pub fn remove(mut self) -> Result<(), GitError> {
        self.cleanup()
    }

    fn cleanup(&mut self) -> Result<(), GitError> {
        if self.removed {
            return Ok(());
        }
        self.removed = true;
        let _admin = worktree_admin();
        let res = git(
            &self.repo,
            &[
                OsStr::new("worktree"),
                OsStr::new("remove"),
                OsStr::new("--force"),
                self.path.as_os_str(),
            ],
        );
        let prune = git(&self.repo, &["worktree", "prune"]);
        res.and(prune).map(|_| ())
    }
}

impl Drop for FixWorktree {
    fn drop(&mut self) {
        if let Err(e) = self.cleanup() {
            tracing::warn!(worktree = %self.path.display(), error = %e, "cannot remove fix worktree");
        }
    }
}

/// The allowed edit prefixes of a registered component: its non-empty `source_path` and
/// `test_path` (an empty one is skipped, never widened to the repository root).
pub fn allowed_prefixes(entry: &crate::attribute::manifest::ManifestEntry) -> Vec<PathBuf> {
    [&entry.source_path, &entry.test_path]
        .into_iter()
        .map(|p| p.trim().trim_end_matches('/'))
        .filter(|p| !p.is_empty() && *p != ".")
        .map(PathBuf::from)
        .collect()
}

/// Cleans up after a fix cut off by a crash: removes the worktree that has `branch` checked
/// out (if any), prunes stale worktree records, and deletes `branch` (a `sentinel/` branch
/// only) when it still points at `base` or holds nothing beyond the user's `HEAD`.
pub fn discard_abandoned(repo: &Path, branch: &str, base: &str) -> Result<(), GitError> {
    let root = toplevel(repo)?;
    check_branch_name(&root, branch)?;
    if !branch.starts_with("sentinel/") {
        return Err(GitError::InvalidBranch(branch.to_string()));
    }
    let admin = worktree_admin();
    let list = git(&root, &["worktree", "list", "--porcelain"])?;
    let wanted = format!("branch refs/heads/{branch}");
    let mut path: Option<&str> = None;
    for line in list.lines() {
        if let Some(p) = line.strip_prefix("worktree ") {
            path = Some(p);
        } else if line == wanted
            && let Some(p) = path
        {
            git(&root, &["worktree", "remove", "--force", p])?;
        }
    }
    git(&root, &["worktree", "prune"])?;
    drop(admin);
    let tip = git_output(
        &root,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("refs/heads/{branch}"),
        ],
    )?;
    if !tip.status.success() {
        return Ok(());
    }
    if String::from_utf8_lossy(&tip.stdout).trim() == base {
        git(&root, &["branch", "--quiet", "-D", "--", branch])?;
    } else {
        // Base unknown (cut before the worktree existed): `-d` deletes it only when it holds
        // nothing that is not already in the user's HEAD.
        let _ = git_output(&root, &["branch", "--quiet", "-d", "--", branch]);
    }
    Ok(())
}

/// Deletes the fix branch `branch` (a `sentinel/` branch only; never the user's).
pub fn delete_branch(repo: &Path, branch: &str) -> Result<(), GitError> {
    let root = toplevel(repo)?;
    check_branch_name(&root, branch)?;
    if !branch.starts_with("sentinel/") {
        return Err(GitError::InvalidBranch(branch.to_string()));
    }
    git(&root, &["branch", "--quiet", "-D", "--", branch]).map(|_| ())
}

/// Fast-forwards the user's current branch in `repo` to `branch` (the fix branch), only when
/// their working tree is clean (`git status --porcelain` empty, untracked files included),
/// `HEAD` is on a branch, and the fix commit descends from their `HEAD`. Returns `false` (the
/// fix waits on its branch for review) otherwise. `git merge --ff-only` itself also refuses to
/// overwrite local changes, should the tree change between the check and the merge.
pub fn fast_forward_user_branch(repo: &Path, branch: &str) -> Result<bool, GitError> {
    let root = toplevel(repo)?;
    check_branch_name(&root, branch)?;
    let status = git(&root, &["status", "--porcelain", "--untracked-files=all"])?;
    if !status.is_empty() {
        return Ok(false);
    }
    let on_branch = git_output(&root, &["symbolic-ref", "--quiet", "HEAD"])?;
    if !on_branch.status.success() {
        return Ok(false);
    }
    let fix = git(
        &root,
        &[
            "rev-parse",
            "--verify",
            &format!("refs/heads/{branch}^{{commit}}"),
        ],
    )?;
    let anc = git_output(&root, &["merge-base", "--is-ancestor", "HEAD", &fix])?;
    match anc.status.code() {
        Some(0) => {}
        Some(1) => return Ok(false),
        _ => {
            return Err(GitError::Failed {
                command: format!("merge-base --is-ancestor HEAD {fix}"),
                status: anc.status.to_string(),
                stderr: tail(&anc.stderr),
            });
        }
    }
    git(&root, &["merge", "--ff-only", "--quiet", &fix])?;
    Ok(true)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const BUGGY: &str = "def add(a, b):\n    return a - b\n";
    const TESTS: &str = "import os\nimport sys\nimport unittest\n\n\
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), \"..\", \"..\", \"src\", \"calc\"))\n\n\
from calc import add  # noqa: E402\n\n\n\
class TestCalc(unittest.TestCase):\n    def test_zero(self):\n        self.assertEqual(add(0, 0), 0)\n";

    /// Runs git in `dir` with the module's clean environment; panics on failure.
    fn g(dir: &Path, args: &[&str]) -> String {
        git(dir, args).unwrap_or_else(|e| panic!("{e}"))
    }

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// Fixes run two at once: one ending (remove + prune) while another starts (add) must
    /// never break the start. Before the admin lock, `prune` deleted a worktree being added
    /// about once in 50 such pairs (seen in `fix_e2e`).
    #[test]
    fn concurrent_creates_and_removes_never_break_each_other() {
        let repo = user_repo(false);
        let base = tempfile::tempdir().unwrap();
        let allowed = [PathBuf::from("src/calc")];
        std::thread::scope(|scope| {
            for t in 0..4 {
                let (repo, base, allowed) = (repo.path(), base.path(), &allowed);
                scope.spawn(move || {
                    for i in 0..8 {
                        let branch = format!("sentinel/fix-t{t}-{i}");
                        let wt = FixWorktree::create(repo, &branch, base, allowed)
                            .unwrap_or_else(|e| panic!("create {branch}: {e}"));
                        wt.remove()
                            .unwrap_or_else(|e| panic!("remove {branch}: {e}"));
                    }
                });
            }
        });
        let list = g(repo.path(), &["worktree", "list", "--porcelain"]);
        assert_eq!(list.matches("worktree ").count(), 1, "{list}");
    }

    /// A committed Python project, then uncommitted user changes and an untracked file.
    fn user_repo(dirty: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        g(root, &["init", "--quiet", "-b", "main"]);
        write(root, "src/calc/calc.py", BUGGY);
        write(root, "tests/calc/test_calc.py", TESTS);
        write(root, "README.md", "calc\n");
        g(root, &["add", "--", "."]);
        g(root, &["commit", "--quiet", "-m", "initial"]);
        if dirty {
            write(root, "README.md", "calc, with my uncommitted notes\n");
            write(
                root,
                "src/calc/calc.py",
                &format!("{BUGGY}# work in progress\n"),
            );
            write(root, "scratch.txt", "untracked\n");
        }
        dir
    }

    fn allowed() -> Vec<PathBuf> {
        let mut e = crate::attribute::manifest::ManifestEntry::new("calc");
        e.source_path = "src/calc".into();
        e.test_path = "tests/calc/".into();
        allowed_prefixes(&e)
    }

    /// Every file of the user's tree (untracked included) plus `.git/index` and `.git/HEAD`,
    /// by content; `.git/worktrees` and the rest of `.git` are git's own bookkeeping.
    fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let entry = entry.unwrap();
                let p = entry.path();
                let rel = p.strip_prefix(root).unwrap().to_path_buf();
                if rel == Path::new(".git") {
                    continue;
                }
                let ft = entry.file_type().unwrap();
                if ft.is_symlink() {
                    let target = std::fs::read_link(&p).unwrap();
                    out.insert(rel, target.into_os_string().into_encoded_bytes());
                } else if ft.is_dir() {
                    walk(root, &p, out);
                } else {
                    out.insert(rel, std::fs::read(&p).unwrap());
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(root, root, &mut out);
        for f in [".git/index", ".git/HEAD"] {
            // A worktree's `.git` is a file: nothing to add there.
            if let Ok(bytes) = std::fs::read(root.join(f)) {
                out.insert(PathBuf::from(f), bytes);
            }
        }
        out
    }

    fn repro() -> Edit {
        Edit::Replace {
            path: "tests/calc/test_calc.py".into(),
            old: "        self.assertEqual(add(0, 0), 0)\n".into(),
            new: "        self.assertEqual(add(0, 0), 0)\n\n    def test_positive(self):\n        self.assertEqual(add(2, 3), 5)\n".into(),
        }
    }

    fn fix() -> Edit {
        Edit::Replace {
            path: "src/calc/calc.py".into(),
            old: "a - b".into(),
            new: "a + b".into(),
        }
    }

    fn tests_pass(dir: &Path) -> bool {
        use crate::fix::runner::{TestCommand, run_tests};
        let argv = TestCommand::for_language("python", "tests/calc").unwrap();
        let out = run_tests(dir, &argv, std::time::Duration::from_secs(60), &[]);
        assert!(!out.timed_out, "{}", out.output_tail);
        eprintln!("{}", out.output_tail);
        out.passed
    }

    #[test]
    fn fix_in_worktree_leaves_user_tree_untouched() {
        let repo = user_repo(true);
        let base = tempfile::tempdir().unwrap();
        let before = snapshot(repo.path());
        let head = g(repo.path(), &["rev-parse", "HEAD"]);

        let mut wt =
            FixWorktree::create(repo.path(), "sentinel/fix-abc123", base.path(), &allowed())
                .unwrap();
        assert!(
            wt.path()
                .starts_with(std::fs::canonicalize(base.path()).unwrap())
        );
        assert_eq!(wt.base_commit(), head);
        // The worktree has the committed (buggy) source, not the user's uncommitted edits.
        assert_eq!(
            std::fs::read_to_string(wt.path().join("src/calc/calc.py")).unwrap(),
            BUGGY
        );
        assert!(!wt.path().join("scratch.txt").exists());
        assert!(tests_pass(wt.path()), "the bug is not covered yet");

        wt.apply(&[repro()]).unwrap();
        assert!(
            !tests_pass(wt.path()),
            "the reproducer fails on the buggy source"
        );
        wt.apply(&[fix()]).unwrap();
        assert!(tests_pass(wt.path()), "the fix makes the tests pass");
        // No bytecode cache: a stale `.pyc` of a same-size source cannot mask the fix.
        assert!(!wt.path().join("src/calc/__pycache__").exists());

        let diff = wt.diff().unwrap();
        assert!(diff.contains("+    return a + b"), "{diff}");
        assert!(diff.contains("+    def test_positive(self):"), "{diff}");

        let sha = wt.commit("fix(calc): add adds").unwrap();
        assert_eq!(
            g(
                repo.path(),
                &["rev-parse", "refs/heads/sentinel/fix-abc123"]
            ),
            sha
        );
        let files = g(
            repo.path(),
            &["show", "--name-only", "--format=%an <%ae>", &sha],
        );
        assert_eq!(
            files.lines().filter(|l| !l.is_empty()).collect::<Vec<_>>(),
            [
                "Sentinel <sentinel@localhost>",
                "src/calc/calc.py",
                "tests/calc/test_calc.py"
            ]
        );
        // Committed only the edits: no __pycache__ the test run left behind.
        assert!(matches!(wt.commit("again"), Err(GitError::NothingToCommit)));

        // The user's tree, index and HEAD are byte-identical.
        assert_eq!(snapshot(repo.path()), before);
        assert_eq!(g(repo.path(), &["rev-parse", "HEAD"]), head);

        // A dirty user tree is never fast-forwarded.
        assert!(!fast_forward_user_branch(repo.path(), "sentinel/fix-abc123").unwrap());
        assert_eq!(snapshot(repo.path()), before);
        assert_eq!(g(repo.path(), &["rev-parse", "HEAD"]), head);

        let path = wt.path().to_path_buf();
        wt.remove().unwrap();
        assert!(!path.exists());
        assert_eq!(
            g(repo.path(), &["worktree", "list", "--porcelain"])
                .matches("worktree ")
                .count(),
            1
        );
        // The branch stays for review.
        assert_eq!(
            g(
                repo.path(),
                &["rev-parse", "refs/heads/sentinel/fix-abc123"]
            ),
            sha
        );
        assert_eq!(snapshot(repo.path()), before);
    }

    #[test]
    fn fast_forward_only_when_clean_and_descendant() {
        // Clean tree: fast-forwarded.
        let repo = user_repo(false);
        let base = tempfile::tempdir().unwrap();
        let mut wt =
            FixWorktree::create(repo.path(), "sentinel/fix-1", base.path(), &allowed()).unwrap();
        wt.apply(&[fix()]).unwrap();
        let sha = wt.commit("fix").unwrap();
        drop(wt);
        // An untracked file alone makes the tree unclean.
        write(repo.path(), "notes.txt", "x");
        assert!(!fast_forward_user_branch(repo.path(), "sentinel/fix-1").unwrap());
        std::fs::remove_file(repo.path().join("notes.txt")).unwrap();
        assert!(fast_forward_user_branch(repo.path(), "sentinel/fix-1").unwrap());
        assert_eq!(g(repo.path(), &["rev-parse", "HEAD"]), sha);
        assert_eq!(g(repo.path(), &["symbolic-ref", "HEAD"]), "refs/heads/main");
        assert!(
            std::fs::read_to_string(repo.path().join("src/calc/calc.py"))
                .unwrap()
                .contains("a + b")
        );
        assert_eq!(g(repo.path(), &["status", "--porcelain"]), "");

        // The user committed meanwhile: the fix no longer descends from HEAD.
        let repo = user_repo(false);
        let mut wt =
            FixWorktree::create(repo.path(), "sentinel/fix-2", base.path(), &allowed()).unwrap();
        wt.apply(&[fix()]).unwrap();
        wt.commit("fix").unwrap();
        drop(wt);
        write(repo.path(), "README.md", "new\n");
        g(repo.path(), &["commit", "--quiet", "-am", "user work"]);
        let head = g(repo.path(), &["rev-parse", "HEAD"]);
        assert!(!fast_forward_user_branch(repo.path(), "sentinel/fix-2").unwrap());
        assert_eq!(g(repo.path(), &["rev-parse", "HEAD"]), head);
    }

    #[test]
    fn bad_edits_are_rejected_before_anything_is_written() {
        let repo = user_repo(true);
        let base = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let before = snapshot(repo.path());
        let mut wt =
            FixWorktree::create(repo.path(), "sentinel/fix-bad", base.path(), &allowed()).unwrap();
        std::os::unix::fs::symlink(outside.path(), wt.path().join("src/calc/link")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("f.py"),
            wt.path().join("tests/calc/f.py"),
        )
        .unwrap();
        let wt_before = snapshot(wt.path());

        let w = |p: &str| Edit::Write {
            path: p.into(),
            contents: "pwned\n".into(),
        };
        type Check = fn(&EditError) -> bool;
        let cases: Vec<(Edit, Check)> = vec![
            (w("README.md"), |e| {
                matches!(e, EditError::OutsideAllowed { .. })
            }),
            (w("src/calcx/a.py"), |e| {
                matches!(e, EditError::OutsideAllowed { .. })
            }),
            (w("src/calc/../../README.md"), |e| {
                matches!(e, EditError::BadComponent(_))
            }),
            (w("src/calc/.git/config"), |e| {
                matches!(e, EditError::BadComponent(_))
            }),
            (w(""), |e| matches!(e, EditError::Empty)),
            (w(&outside.path().join("abs.py").to_string_lossy()), |e| {
                matches!(e, EditError::Absolute(_))
            }),
            (w("src/calc/link/pwn.py"), |e| {
                matches!(e, EditError::Symlink { .. })
            }),
            (w("tests/calc/f.py"), |e| {
                matches!(e, EditError::Symlink { .. })
            }),
            (w("src/calc"), |e| matches!(e, EditError::NotAFile { .. })),
            (
                Edit::Replace {
                    path: "src/calc/calc.py".into(),
                    old: "nope".into(),
                    new: "x".into(),
                },
                |e| matches!(e, EditError::Occurrences { found: 0, .. }),
            ),
            (
                Edit::Replace {
                    path: "src/calc/calc.py".into(),
                    old: "a".into(),
                    new: "x".into(),
                },
                |e| matches!(e, EditError::Occurrences { found: 3, .. }),
            ),
        ];
        for (bad, expected) in cases {
            // A valid edit first: the batch is validated before it is written.
            let err = wt.apply(&[fix(), bad.clone()]).unwrap_err();
            assert!(expected(&err), "{bad:?}: {err}");
            assert_eq!(snapshot(wt.path()), wt_before, "{bad:?} wrote something");
        }
        assert!(wt.changed_paths().is_empty());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        assert_eq!(snapshot(repo.path()), before);
        // New files under an allowed prefix are fine, with their directories.
        wt.apply(&[w("tests/calc/new/test_new.py")]).unwrap();
        assert_eq!(
            wt.changed_paths(),
            [PathBuf::from("tests/calc/new/test_new.py")]
        );
    }

    #[test]
    fn refusals() {
        let repo = user_repo(false);
        let base = tempfile::tempdir().unwrap();
        let wt =
            FixWorktree::create(repo.path(), "sentinel/fix-dup", base.path(), &allowed()).unwrap();
        let other = tempfile::tempdir().unwrap();
        let err = FixWorktree::create(repo.path(), "sentinel/fix-dup", other.path(), &allowed())
            .unwrap_err();
        assert!(matches!(err, GitError::BranchExists { .. }), "{err}");
        assert!(err.to_string().contains("sentinel/fix-dup"), "{err}");
        drop(wt);
        // Still refused after the worktree is gone: the branch stays for review.
        assert!(matches!(
            FixWorktree::create(repo.path(), "sentinel/fix-dup", other.path(), &allowed()),
            Err(GitError::BranchExists { .. })
        ));

        let not_repo = tempfile::tempdir().unwrap();
        let err = FixWorktree::create(not_repo.path(), "sentinel/fix-x", base.path(), &allowed())
            .unwrap_err();
        assert!(matches!(err, GitError::NotARepo { .. }), "{err}");

        for bad in ["", "-x", "a..b", "has space"] {
            assert!(
                matches!(
                    FixWorktree::create(repo.path(), bad, base.path(), &allowed()),
                    Err(GitError::InvalidBranch(_))
                ),
                "{bad:?}"
            );
        }
        for prefix in ["", ".", "/abs", "src/../x"] {
            assert!(
                matches!(
                    FixWorktree::create(
                        repo.path(),
                        "sentinel/fix-p",
                        base.path(),
                        &[PathBuf::from(prefix)]
                    ),
                    Err(GitError::InvalidPrefix(_))
                ),
                "{prefix:?}"
            );
        }
        // An entry with no paths allows nothing rather than everything.
        assert!(allowed_prefixes(&crate::attribute::manifest::ManifestEntry::new("x")).is_empty());
        assert_eq!(
            g(repo.path(), &["worktree", "list", "--porcelain"])
                .matches("worktree ")
                .count(),
            1
        );
    }
}
