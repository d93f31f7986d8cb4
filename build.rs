//! Records the commit Sentinel is built from, for `sentinel --version`.
//!
//! `SENTINEL_GIT_COMMIT` is `git rev-parse --short=12 HEAD`, or `unknown` outside a git
//! checkout (a source tarball, no git installed).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SENTINEL_GIT_COMMIT={commit}");
    // Built again when HEAD moves: a commit, a checkout (worktrees have their own HEAD; the
    // branch's ref lives in the common directory).
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
    }
    if let (Some(common), Some(head_ref)) = (
        git(&["rev-parse", "--git-common-dir"]),
        git(&["symbolic-ref", "-q", "HEAD"]),
    ) {
        println!("cargo:rerun-if-changed={common}/{head_ref}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
