//! Why a configuration could not be used, located in its file.

use std::fmt;
use std::path::{Path, PathBuf};

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file named by `--config` or `SENTINEL_CONFIG` does not exist.
    #[error("config file {path} does not exist")]
    NotFound {
        /// The file.
        path: PathBuf,
    },
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid YAML or does not fit the schema.
    #[error("{}", Located { path, line: *line, column: *column, message })]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line, 0 when unknown.
        line: u64,
        /// 1-based column, 0 when unknown.
        column: u64,
        /// What was wrong and what was expected.
        message: String,
    },
    /// A value has the right type but cannot be used.
    #[error("{}", Located { path, line: *line, column: *column, message: &format!("{key}: {message}") })]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line, 0 when unknown.
        line: u64,
        /// 1-based column, 0 when unknown.
        column: u64,
        /// The key, as a path such as `sources[0].error_patterns[1]`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

pub(super) struct Located<'a> {
    path: &'a Path,
    line: u64,
    column: u64,
    message: &'a str,
}

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{}:{}:{}: {}",
                self.path.display(),
                self.line,
                self.column,
                self.message
            )
        } else {
            write!(f, "{}: {}", self.path.display(), self.message)
        }
    }
}
