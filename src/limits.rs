//! Process resource limits.
//!
//! A log directory with thousands of files is ordinary, and so is a soft `RLIMIT_NOFILE` of
//! 1024 (or 256). Like Go's runtime and many servers, Sentinel raises its soft descriptor
//! limit to the hard limit when it starts: the hard limit is what the administrator allows,
//! the soft one only a default.

use std::sync::OnceLock;

/// The descriptor limits in force after [`raise_open_files_limit`]: (soft, hard), `None`
/// meaning unlimited.
static OPEN_FILES: OnceLock<(Option<u64>, Option<u64>)> = OnceLock::new();

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (once per process) and returns the
/// limits now in force. A refusal leaves the limit as it was (and is logged at debug level).
pub fn raise_open_files_limit() -> (Option<u64>, Option<u64>) {
    *OPEN_FILES.get_or_init(|| {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let mut lim = getrlimit(Resource::Nofile);
        if lim.current != lim.maximum {
            let raised = rustix::process::Rlimit {
                current: lim.maximum,
                maximum: lim.maximum,
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => lim = getrlimit(Resource::Nofile),
                Err(e) => tracing::debug!(error = %e, "could not raise the open files limit"),
            }
        }
        (lim.current, lim.maximum)
    })
}

/// The soft descriptor limit in force now (`None`: unlimited), as read from the kernel.
pub fn soft_open_files_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// The soft descriptor limit in force, for start-up summaries ("unlimited" when none).
pub fn open_files_limit_text() -> String {
    match raise_open_files_limit().0 {
        Some(n) => n.to_string(),
        None => "unlimited".into(),
    }
}

/// Whether an error is a refused descriptor (EMFILE: the process's limit; ENFILE: the
/// system's): a fault to wait out, not a verdict on the file.
pub fn is_descriptor_exhaustion(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == rustix::io::Errno::MFILE.raw_os_error()
            || code == rustix::io::Errno::NFILE.raw_os_error()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let (soft, hard) = raise_open_files_limit();
        assert_eq!(soft, hard);
        let now = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        assert_eq!(now.current, soft);
    }
}
