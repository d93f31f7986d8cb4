//! The owner file beside the store: who writes it, for a clear "store in use" message.

use std::path::Path;

/// The file, beside the database, in which a daemon says who it is (`pid <n>: <command>`),
/// so that a second writer can be told who owns the store.
pub use crate::state_dir::OWNER_FILE;

/// Writes [`OWNER_FILE`] beside `db` (best effort: it only improves an error message).
pub fn write_owner(db: &Path, what: &str) {
    if let Some(file) = crate::state_dir::owner_file_of(db) {
        let text = format!("pid {}: {what}\n", std::process::id());
        let _ = std::fs::write(file, text);
    }
}

/// Removes [`OWNER_FILE`] if it is ours.
pub fn remove_owner(db: &Path) {
    if let Some(file) = crate::state_dir::owner_file_of(db) {
        let ours = format!("pid {}:", std::process::id());
        if std::fs::read_to_string(&file).is_ok_and(|s| s.starts_with(&ours)) {
            let _ = std::fs::remove_file(file);
        }
    }
}

pub(super) fn read_owner(db: &Path) -> Option<String> {
    let text = std::fs::read_to_string(crate::state_dir::owner_file_of(db)?).ok()?;
    let line = text.lines().next()?.trim();
    (!line.is_empty() && line.len() < 200).then(|| line.to_string())
}
