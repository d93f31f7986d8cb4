//! Reading a CI job's log: which step failed and what it printed.
//!
//! A job log is not a production log: every line carries the runner's timestamp, steps are
//! delimited by markers, and the runner's own last words ("Process completed with exit code
//! 1", "ERROR: Job failed") say *that* it failed, not *why*. So before the scanner sees a
//! line it is stripped of the timestamp and colour codes, the markers are read for the step
//! structure and dropped, and only the failing step's lines are kept — the error lines the
//! scanner then finds in them (PACT keys attributing them as anywhere else) are the
//! failure's own.
//!
//! - **GitHub Actions** (`GET /repos/{owner}/{repo}/actions/jobs/{id}/logs`): each line is
//!   `2026-12-06T10:00:00.1234567Z text`; a step opens with `##[group]Run NAME` (its setup
//!   lines up to `##[endgroup]`, then its output); `##[error]TEXT` is an error annotation;
//!   `##[error]Process completed with exit code N.` ends a failing step.
//! - **GitLab** (`GET /projects/:id/jobs/:job_id/trace`): sections
//!   `section_start:UNIX:NAME\r\x1b[0K` … `section_end:UNIX:NAME\r\x1b[0K` (`step_script`,
//!   `after_script`, …), ANSI colours, optionally a per-line timestamp
//!   `2026-12-06T10:00:00.123456Z 00O ` (the `FF_TIMESTAMPS` form), and the runner's
//!   `ERROR: Job failed: …` at the end.
//!
//! The failing step is the one the failure marker closes; without a marker (a truncated
//! log), the last step that printed an error annotation, else the last step.

/// What a failed job's log says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailedStep {
    /// The failing step's name (`cargo test`, `step_script`), or empty when the log has no
    /// step markers.
    pub step: String,
    /// Its lines, stripped of timestamps, colours and markers; error annotations
    /// (`##[error]TEXT`) become `ERROR TEXT` so the scanner counts them as errors.
    pub lines: Vec<String>,
    /// The runner's failure line (`Process completed with exit code 1.`), when present.
    pub failure: String,
}

/// `2026-12-06T10:00:00.1234567Z ` (GitHub) or `2026-12-06T10:00:00.123456Z 00O ` /
/// `00O+` (GitLab's stream and continuation marks): the length of the prefix, or 0.
fn timestamp_len(line: &str) -> usize {
    let b = line.as_bytes();
    // YYYY-MM-DDTHH:MM:SS
    let shape = b"dddd-dd-ddTdd:dd:dd";
    if b.len() < shape.len() + 2 {
        return 0;
    }
    for (c, s) in b.iter().zip(shape) {
        let ok = if *s == b'd' {
            c.is_ascii_digit()
        } else {
            c == s
        };
        if !ok {
            return 0;
        }
    }
    let mut i = shape.len();
    if b.get(i) == Some(&b'.') {
        i += 1;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
    }
    if b.get(i) != Some(&b'Z') {
        return 0;
    }
    i += 1;
    if b.get(i) == Some(&b' ') {
        i += 1;
    }
    // GitLab: a 2-hex-digit stream number and O/E, maybe `+` (a continued line), a space.
    let rest = &b[i..];
    if rest.len() >= 4
        && rest[0].is_ascii_hexdigit()
        && rest[1].is_ascii_hexdigit()
        && matches!(rest[2], b'O' | b'E')
    {
        let mut j = 3;
        if rest.get(j) == Some(&b'+') {
            j += 1;
        }
        if rest.get(j) == Some(&b' ') {
            return i + j + 1;
        }
    }
    i
}

/// Drops ANSI escape sequences (CSI `ESC [ … final`, and lone `ESC x`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'[') {
            chars.next();
            // Parameters and intermediates up to the final byte (@ to ~).
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            chars.next();
        }
    }
    out
}

/// One raw log line without its timestamp, colours and carriage returns (a `\r` rewrite
/// keeps what the terminal would show last).
fn clean(raw: &str) -> String {
    let line = raw.strip_suffix('\r').unwrap_or(raw);
    let line = &line[timestamp_len(line)..];
    let shown = line.rsplit('\r').find(|p| !p.is_empty()).unwrap_or("");
    strip_ansi(shown)
}

#[derive(Default)]
struct Step {
    name: String,
    lines: Vec<String>,
    annotated: bool,
}

fn pick(mut steps: Vec<Step>, failed_at: Option<usize>, failure: String) -> FailedStep {
    let idx = failed_at
        .or_else(|| steps.iter().rposition(|s| s.annotated))
        .unwrap_or(steps.len().saturating_sub(1));
    if idx >= steps.len() {
        return FailedStep {
            failure,
            ..FailedStep::default()
        };
    }
    let s = steps.swap_remove(idx);
    FailedStep {
        step: s.name,
        lines: s.lines,
        failure,
    }
}

/// The failing step of a GitHub Actions job log.
pub fn github(log: &str) -> FailedStep {
    let mut steps: Vec<Step> = vec![Step::default()];
    let mut in_setup = false;
    let mut failed_at = None;
    let mut failure = String::new();
    for raw in log.lines() {
        let line = clean(raw);
        if let Some(title) = line.strip_prefix("##[group]") {
            // A step's setup group; other groups inside a step's output (a tool's own
            // `::group::`) are folded into it.
            if let Some(name) = title.strip_prefix("Run ") {
                steps.push(Step {
                    name: name.trim().to_string(),
                    ..Step::default()
                });
                in_setup = true;
            }
            continue;
        }
        if line.starts_with("##[endgroup]") {
            in_setup = false;
            continue;
        }
        if let Some(text) = line.strip_prefix("##[error]") {
            let last = steps.len() - 1;
            if text.starts_with("Process completed with exit code") {
                failure = text.trim().to_string();
                failed_at.get_or_insert(last);
                continue;
            }
            steps[last].annotated = true;
            steps[last].lines.push(format!("ERROR {}", text.trim()));
            continue;
        }
        if line.starts_with("##[") || in_setup {
            continue; // ##[debug], ##[warning], ##[command]; a step's env and shell
        }
        if let Some(s) = steps.last_mut() {
            s.lines.push(line);
        }
    }
    if steps.len() > 1 && steps[0].lines.is_empty() {
        steps.remove(0);
        failed_at = failed_at.map(|i| i.saturating_sub(1));
    }
    pick(steps, failed_at, failure)
}

/// Sections the GitLab runner runs after a failed script, whatever it was.
const GITLAB_HOUSEKEEPING: [&str; 6] = [
    "after_script",
    "archive_cache",
    "archive_cache_on_failure",
    "upload_artifacts_on_failure",
    "upload_artifacts_on_success",
    "cleanup_file_variables",
];

/// A trace's lines, timestamps stripped, with the section markers each on a line of their
/// own: the runner writes a section's end and the next one's start on ONE line, each marker
/// followed by the `\r\x1b[0K` that erases it on a terminal (and a section start by its
/// header, dropped here). The runner's `ERROR: Job failed` often follows the last marker on
/// its line.
fn gitlab_lines(trace: &str) -> Vec<String> {
    let mut out = Vec::new();
    for raw in trace.lines() {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let raw = &raw[timestamp_len(raw)..];
        if !raw.contains("section_") {
            out.push(raw.to_string());
            continue;
        }
        let mut header = false;
        for piece in raw.split('\r') {
            let text = strip_ansi(piece);
            if text.starts_with("section_start:") {
                out.push(text);
                header = true;
            } else if text.starts_with("section_end:") {
                out.push(text);
                header = false;
            } else if !header && !text.trim().is_empty() {
                out.push(piece.to_string());
            }
        }
    }
    out
}

/// The failing section of a GitLab job trace.
pub fn gitlab(trace: &str) -> FailedStep {
    let mut steps: Vec<Step> = vec![Step::default()];
    let mut failed_at = None;
    let mut failure = String::new();
    for raw in gitlab_lines(trace) {
        let line = strip_ansi(&raw);
        if let Some(rest) = line.strip_prefix("section_start:") {
            let mut parts = rest.splitn(3, ':');
            let _ts = parts.next();
            let name = parts.next().unwrap_or_default();
            let name = name.split(['\r', '[']).next().unwrap_or(name);
            // What follows the marker on its line is the section's header ("Executing
            // \"step_script\" stage"), not output.
            steps.push(Step {
                name: name.trim().to_string(),
                ..Step::default()
            });
            continue;
        }
        if line.starts_with("section_end:") {
            continue;
        }
        let line = clean(&line);
        if let Some(text) = line.strip_prefix("ERROR: Job failed") {
            failure = format!("Job failed{text}");
            // The failing section is the last one of the job's own that printed anything:
            // the runner's housekeeping after a failure (after_script, cache and artifact
            // uploads, cleanup) runs whatever happened and is not it.
            failed_at.get_or_insert_with(|| {
                steps
                    .iter()
                    .rposition(|s| {
                        !s.name.is_empty()
                            && !s.lines.is_empty()
                            && !GITLAB_HOUSEKEEPING.contains(&s.name.as_str())
                    })
                    .unwrap_or(steps.len() - 1)
            });
            continue;
        }
        if let Some(s) = steps.last_mut() {
            s.lines.push(line);
        }
    }
    if steps.len() > 1 && steps[0].lines.is_empty() {
        steps.remove(0);
        failed_at = failed_at.map(|i| i.saturating_sub(1));
    }
    pick(steps, failed_at, failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GITHUB: &str = "\
2026-12-06T10:00:00.1000000Z ##[group]Run actions/checkout@v4
2026-12-06T10:00:00.1100000Z with:
2026-12-06T10:00:00.1200000Z   repository: acme/shop
2026-12-06T10:00:00.1300000Z ##[endgroup]
2026-12-06T10:00:01.0000000Z Syncing repository: acme/shop
2026-12-06T10:00:02.0000000Z ##[group]Run python -m pytest
2026-12-06T10:00:02.0100000Z \x1b[36;1mpython -m pytest\x1b[0m
2026-12-06T10:00:02.0200000Z shell: /usr/bin/bash -e {0}
2026-12-06T10:00:02.0300000Z ##[endgroup]
2026-12-06T10:00:03.0000000Z ============ test session starts ============
2026-12-06T10:00:04.0000000Z \x1b[31mE   IndexError: list index out of range [PACT:auth_module:validate_token]\x1b[0m
2026-12-06T10:00:04.1000000Z FAILED tests/test_auth.py::test_short - IndexError
2026-12-06T10:00:05.0000000Z ##[error]Process completed with exit code 1.
2026-12-06T10:00:06.0000000Z ##[group]Run actions/upload-artifact@v4
2026-12-06T10:00:06.1000000Z ##[endgroup]
2026-12-06T10:00:06.2000000Z Uploaded 0 files
";

    #[test]
    fn a_github_log_yields_its_failing_step_without_timestamps_or_markers() {
        let f = github(GITHUB);
        assert_eq!(f.step, "python -m pytest");
        assert_eq!(f.failure, "Process completed with exit code 1.");
        assert_eq!(
            f.lines,
            [
                "============ test session starts ============",
                "E   IndexError: list index out of range [PACT:auth_module:validate_token]",
                "FAILED tests/test_auth.py::test_short - IndexError",
            ]
        );
    }

    #[test]
    fn error_annotations_count_and_a_truncated_log_still_names_a_step() {
        let log = "\
2026-12-06T10:00:02.0000000Z ##[group]Run make lint
2026-12-06T10:00:02.0300000Z ##[endgroup]
2026-12-06T10:00:03.0000000Z ##[error]src/a.rs:3: unused variable [PACT:billing:charge]
2026-12-06T10:00:03.5000000Z ##[warning]slow
2026-12-06T10:00:04.0000000Z ##[group]Run make test
2026-12-06T10:00:04.0300000Z ##[endgroup]
2026-12-06T10:00:05.0000000Z running 3 tests
";
        let f = github(log);
        assert_eq!(f.step, "make lint");
        assert_eq!(
            f.lines,
            ["ERROR src/a.rs:3: unused variable [PACT:billing:charge]"]
        );
        assert_eq!(f.failure, "");
        // No markers at all: every line, one unnamed step.
        let f = github("plain line\nanother\n");
        assert_eq!((f.step.as_str(), f.lines.len()), ("", 2));
        assert_eq!(github(""), FailedStep::default());
    }

    #[test]
    fn a_gitlab_trace_yields_its_failing_section() {
        let trace = "\
\x1b[0KRunning with gitlab-runner 17.5.0\n\
section_start:1733479200:prepare_script\r\x1b[0K\x1b[0K\x1b[36;1mPreparing environment\x1b[0;m\n\
Running on runner-abc\n\
section_end:1733479201:prepare_script\r\x1b[0K\n\
section_start:1733479202:step_script\r\x1b[0K\x1b[0K\x1b[36;1mExecuting \"step_script\" stage\x1b[0;m\n\
2026-12-06T10:00:03.123456Z 00O $ go test ./...\n\
2026-12-06T10:00:04.123456Z 01E panic: runtime error: index out of range [PACT:ledger:post]\n\
2026-12-06T10:00:04.223456Z 01E+ goroutine 1 [running]:\n\
section_end:1733479205:step_script\r\x1b[0K\n\
section_start:1733479205:after_script\r\x1b[0K\x1b[0K\x1b[36;1mRunning after_script\x1b[0;m\n\
$ echo done\n\
done\n\
section_end:1733479206:after_script\r\x1b[0K\n\
section_start:1733479206:cleanup_file_variables\r\x1b[0K\x1b[0K\x1b[36;1mCleaning up\x1b[0;m\n\
section_end:1733479207:cleanup_file_variables\r\x1b[0K\n\
\x1b[31;1mERROR: Job failed: exit code 2\n\
\x1b[0;m\n";
        let f = gitlab(trace);
        assert_eq!(f.failure, "Job failed: exit code 2");
        // Not after_script (it printed later) nor the cleanup: the job's own script.
        assert_eq!(f.step, "step_script");
        assert!(
            !f.lines.iter().any(|l| l.contains("Executing")),
            "{:?}",
            f.lines
        );
        assert!(
            f.lines.contains(
                &"panic: runtime error: index out of range [PACT:ledger:post]".to_string()
            ),
            "{:?}",
            f.lines
        );
        assert!(f.lines.contains(&"$ go test ./...".to_string()));
    }

    #[test]
    fn timestamps_are_only_stripped_when_they_are_timestamps() {
        assert_eq!(clean("2026-12-06T10:00:00.1234567Z hello"), "hello");
        assert_eq!(clean("2026-12-06T10:00:00Z hello"), "hello");
        assert_eq!(
            clean("2026-12-06 10:00:00 hello"),
            "2026-12-06 10:00:00 hello"
        );
        assert_eq!(clean("progress 10%\rprogress 100%"), "progress 100%");
    }

    #[test]
    fn gitlab_markers_sharing_a_line_are_read() {
        let trace = "Running with gitlab-runner 17.6.0\n\x1b[0Ksection_start:1:prepare_executor\r\x1b[0K\x1b[0K\x1b[36;1mPreparing\x1b[0;m\nUsing Docker\n\x1b[0Ksection_end:2:prepare_executor\r\x1b[0K\x1b[0Ksection_start:3:step_script\r\x1b[0K\x1b[0K\x1b[36;1mExecuting \"step_script\"\x1b[0;m\n$ make test\nERROR [PACT:a:b] boom\n\x1b[0Ksection_end:4:step_script\r\x1b[0K\x1b[0Ksection_start:5:cleanup_file_variables\r\x1b[0K\x1b[0K\x1b[36;1mCleaning up\x1b[0;m\n\x1b[0Ksection_end:6:cleanup_file_variables\r\x1b[0K\x1b[31;1mERROR: Job failed: exit code 1\n\x1b[0;m\n";
        let f = gitlab(trace);
        assert_eq!(f.step, "step_script");
        assert_eq!(f.failure, "Job failed: exit code 1");
        assert!(
            f.lines.iter().any(|l| l == "ERROR [PACT:a:b] boom"),
            "{:?}",
            f.lines
        );
        assert!(
            !f.lines.iter().any(|l| l.contains("Executing")),
            "{:?}",
            f.lines
        );
    }
}
