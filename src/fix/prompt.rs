//! What the fixer sends to the LLM, and how its answer is read.
//!
//! The prompt (SPEC §8, made safe): the component's contract, tests and source as committed
//! (read from the fix worktree, bounded), the incident's sample line and counts, and from the
//! second attempt a debrief of what went wrong. The whole prompt is redacted
//! ([`super::redact::redact`]); log lines and test output are fenced as untrusted data.
//!
//! The answer is structured ([`fix_tool`]): reproducer edits (test files only), fix edits
//! (source files only), an optional tightened contract and an explanation. Each edit is a
//! replacement (`old` occurring exactly once → `new`) or a whole file (`contents`).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::redact::{UNTRUSTED_DATA_NOTICE, fence_untrusted, redact};
use super::worktree::Edit;

/// The largest file included in a prompt, in bytes (larger ones are cut).
pub const MAX_FILE_BYTES: usize = 64 * 1024;

/// The most source and test text included in a prompt, in bytes.
pub const MAX_ARTIFACT_BYTES: usize = 256 * 1024;

/// Directories never read.
const SKIP_DIRS: [&str; 8] = [
    ".git",
    "node_modules",
    "target",
    "__pycache__",
    ".venv",
    "venv",
    "dist",
    "build",
];

/// The component files a prompt shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Artifacts {
    /// The contract text (JSON), or empty.
    pub contract: String,
    /// Test files: (path relative to the repository, text).
    pub tests: Vec<(String, String)>,
    /// Source files: (path relative to the repository, text).
    pub sources: Vec<(String, String)>,
}

impl Artifacts {
    /// Reads the component's files under `root` (the fix worktree): every text file under
    /// the `source` and `test` prefixes (relative paths), sorted, bounded by
    /// [`MAX_FILE_BYTES`] each and [`MAX_ARTIFACT_BYTES`] in all; and the contract file.
    pub fn gather(root: &Path, source: &Path, test: &Path, contract: Option<&Path>) -> Artifacts {
        let mut budget = MAX_ARTIFACT_BYTES;
        let tests = read_tree(root, test, &mut budget);
        let sources = read_tree(root, source, &mut budget);
        let contract = contract
            .and_then(|c| std::fs::read(c).ok())
            .map(|b| cut(&String::from_utf8_lossy(&b), MAX_FILE_BYTES))
            .unwrap_or_default();
        Artifacts {
            contract,
            tests,
            sources,
        }
    }
}

fn read_tree(root: &Path, prefix: &Path, budget: &mut usize) -> Vec<(String, String)> {
    let mut files = Vec::new();
    collect(&root.join(prefix), 0, &mut files);
    files.sort();
    let mut out = Vec::new();
    for f in files {
        if *budget == 0 {
            break;
        }
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        if bytes.contains(&0) {
            continue; // binary
        }
        let text = cut(
            &String::from_utf8_lossy(&bytes),
            MAX_FILE_BYTES.min(*budget),
        );
        *budget = budget.saturating_sub(text.len());
        let rel = f
            .strip_prefix(root)
            .unwrap_or(&f)
            .to_string_lossy()
            .into_owned();
        out.push((rel, text));
    }
    out
}

fn collect(path: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_file() {
        out.push(path.to_path_buf());
    } else if meta.is_dir() && depth < 8 {
        let Ok(rd) = std::fs::read_dir(path) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || SKIP_DIRS.contains(&name.as_ref()) {
                continue;
            }
            collect(&e.path(), depth + 1, out);
        }
    }
}

fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n[... cut at {max} bytes ...]\n", &text[..end])
}

/// What the prompt says about the incident.
#[derive(Debug, Clone, Default)]
pub struct ErrorInfo {
    /// The component.
    pub component_id: String,
    /// Its language.
    pub language: String,
    /// The PACT key.
    pub pact_key: String,
    /// A sample line.
    pub sample: String,
    /// Where it came from.
    pub source: String,
    /// Occurrences.
    pub count: u64,
    /// Reproducer edits must stay under this prefix.
    pub test_prefix: String,
    /// Fix edits must stay under this prefix.
    pub source_prefix: String,
    /// The test command that will judge the answer.
    pub test_command: String,
}

/// One failed attempt, for the next attempt's debrief.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Debrief {
    /// The attempt number.
    pub attempt: u32,
    /// What went wrong, in one line.
    pub failure: String,
    /// The tail of the test output, if tests ran.
    pub test_output: String,
}

/// The system prompt.
pub fn system_prompt() -> String {
    format!(
        "You fix production errors in one component of a software project whose components \
         follow contracts. Answer only by calling the propose_fix tool. First write a \
         reproducer: the smallest test change that FAILS on the current source because of the \
         production error. Then write the fix: the smallest source change after which the \
         reproducer and every existing test PASS. Never delete or weaken existing tests. Keep \
         the public interface unless the contract changes with it. Edit only the paths you are \
         told to; edits elsewhere are rejected.\n\n{UNTRUSTED_DATA_NOTICE}"
    )
}

/// The user prompt, redacted. `debriefs` are the earlier failed attempts of this fix.
pub fn user_prompt(info: &ErrorInfo, art: &Artifacts, debriefs: &[Debrief]) -> String {
    let mut p = String::new();
    p.push_str(&format!(
        "## Component: {} (language: {})\n\n",
        info.component_id, info.language
    ));
    p.push_str("## Contract\n");
    if art.contract.is_empty() {
        p.push_str("(no contract found)\n\n");
    } else {
        p.push_str(&format!("```json\n{}\n```\n\n", art.contract.trim_end()));
    }
    p.push_str("## Current tests\n");
    if art.tests.is_empty() {
        p.push_str("(no existing tests)\n\n");
    }
    for (path, text) in &art.tests {
        p.push_str(&format!("### {path}\n```\n{}\n```\n\n", text.trim_end()));
    }
    p.push_str("## Current source\n");
    if art.sources.is_empty() {
        p.push_str("(no existing source)\n\n");
    }
    for (path, text) in &art.sources {
        p.push_str(&format!("### {path}\n```\n{}\n```\n\n", text.trim_end()));
    }
    p.push_str("## Production error\n");
    p.push_str(&format!(
        "PACT key: {}\nOccurrences: {}\nSource: {}\n",
        info.pact_key, info.count, info.source
    ));
    p.push_str(&fence_untrusted("production log line", &info.sample));
    p.push('\n');
    p.push_str(&format!(
        "## Instructions\n\
         1. reproducer_edits: add a test under `{test}` that fails now because of this error.\n\
         2. fix_edits: change files under `{source}` so that the reproducer and all existing \
         tests pass.\n\
         3. contract_change: the complete tightened contract JSON document if the contract \
         should state what the fix enforces (same shape as the contract above), else null.\n\
         Paths are relative to the repository root, exactly as the headings above show them. \
         An edit is either {{path, old, new}} (`old` must occur exactly once in the file; set \
         `contents` null) or {{path, contents}} (the whole new file; set `old` and `new` \
         null).\n\
         The tests are run with: `{cmd}`\n\n",
        test = info.test_prefix,
        source = info.source_prefix,
        cmd = info.test_command,
    ));
    if let Some(last) = debriefs.last() {
        p.push_str(&format!("## ATTEMPT {} DEBRIEF\n", last.attempt));
        for d in debriefs.iter().take(10) {
            p.push_str(&format!(
                "- attempt {}: {}\n",
                d.attempt,
                cut(&d.failure, 200).trim_end()
            ));
        }
        if !last.test_output.is_empty() {
            p.push_str("\nThe test output of the last attempt:\n");
            let tail = tail_chars(&last.test_output, 3000);
            p.push_str(&fence_untrusted("test output", &tail));
        }
        p.push_str(
            "\n## FRESH APPROACH REQUIRED\nYou are a senior engineer brought in because the \
             previous approach failed. Take a fundamentally different approach.\n",
        );
    }
    redact(&p).0
}

fn tail_chars(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_string()
}

/// The structured answer: the tool / JSON-schema the LLM must fill (strict-mode compatible:
/// every property required, no additional properties).
pub fn fix_tool() -> super::llm::ToolSpec {
    let edit = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["path", "old", "new", "contents"],
        "properties": {
            "path": {"type": "string", "description": "File path relative to the repository root"},
            "old": {"type": ["string", "null"], "description": "Text occurring exactly once in the file, to replace"},
            "new": {"type": ["string", "null"], "description": "Its replacement"},
            "contents": {"type": ["string", "null"], "description": "The whole new file, instead of old/new"}
        }
    });
    super::llm::ToolSpec {
        name: "propose_fix".into(),
        description: "Propose a reproducer test and a fix for the production error.".into(),
        input_schema: json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["reproducer_edits", "fix_edits", "contract_change", "explanation", "confidence"],
            "properties": {
                "reproducer_edits": {"type": "array", "items": edit.clone()},
                "fix_edits": {"type": "array", "items": edit},
                "contract_change": {"type": ["string", "null"], "description": "The complete tightened contract JSON document, or null"},
                "explanation": {"type": "string"},
                "confidence": {"type": ["number", "null"], "description": "How sure you are, from 0 to 1, that the fix addresses the root cause without side effects"}
            }
        }),
    }
}

/// A parsed answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    /// Test edits that must make the tests fail.
    pub reproducer: Vec<Edit>,
    /// Source edits that must make them pass.
    pub fix: Vec<Edit>,
    /// The tightened contract (JSON text), if any.
    pub contract_change: Option<String>,
    /// The model's explanation.
    pub explanation: String,
    /// The model's own confidence in the fix (0..=1), when it gave one.
    pub confidence: Option<f64>,
}

/// Reads the tool's answer.
///
/// # Errors
///
/// A message saying what is wrong with it.
pub fn parse_proposal(v: &Value) -> Result<Proposal, String> {
    let edits = |key: &str| -> Result<Vec<Edit>, String> {
        let arr = v
            .get(key)
            .and_then(Value::as_array)
            .ok_or_else(|| format!("`{key}` is not a list"))?;
        arr.iter()
            .enumerate()
            .map(|(i, e)| parse_edit(e).map_err(|m| format!("{key}[{i}]: {m}")))
            .collect()
    };
    let reproducer = edits("reproducer_edits")?;
    let fix = edits("fix_edits")?;
    if reproducer.is_empty() {
        return Err("no reproducer test (reproducer_edits is empty)".into());
    }
    if fix.is_empty() {
        return Err("no fix (fix_edits is empty)".into());
    }
    let contract_change = match v.get("contract_change") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() || s.trim().eq_ignore_ascii_case("none") => {
            None
        }
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    };
    Ok(Proposal {
        reproducer,
        fix,
        contract_change,
        explanation: v
            .get("explanation")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        // Out-of-range values are clamped rather than refused: the test proof decides, the
        // confidence only adds a floor (`fix.min_confidence`).
        confidence: v
            .get("confidence")
            .and_then(Value::as_f64)
            .filter(|c| c.is_finite())
            .map(|c| c.clamp(0.0, 1.0)),
    })
}

fn parse_edit(e: &Value) -> Result<Edit, String> {
    let s = |k: &str| e.get(k).and_then(Value::as_str);
    let path = s("path").filter(|p| !p.is_empty()).ok_or("no path")?;
    let path = PathBuf::from(path);
    match (s("old"), s("new"), s("contents")) {
        (_, _, Some(contents)) => Ok(Edit::Write {
            path,
            contents: contents.to_string(),
        }),
        (Some(old), Some(new), None) if !old.is_empty() => Ok(Edit::Replace {
            path,
            old: old.to_string(),
            new: new.to_string(),
        }),
        _ => Err("neither contents nor a non-empty old with new".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_into_edits_and_bad_ones_are_named() {
        let v = json!({
            "reproducer_edits": [{"path": "tests/a_test.py", "old": null, "new": null, "contents": "x"}],
            "fix_edits": [{"path": "src/a.py", "old": "a", "new": "b", "contents": null}],
            "contract_change": "none",
            "explanation": "e"
        });
        let p = parse_proposal(&v).unwrap();
        assert_eq!(p.contract_change, None);
        assert!(matches!(&p.fix[0], Edit::Replace { old, .. } if old == "a"));
        assert!(matches!(&p.reproducer[0], Edit::Write { contents, .. } if contents == "x"));
        let mut bad = v.clone();
        bad["fix_edits"] = json!([]);
        assert!(parse_proposal(&bad).unwrap_err().contains("no fix"));
        bad["fix_edits"] = json!([{"path": "", "old": "a", "new": "b", "contents": null}]);
        assert!(
            parse_proposal(&bad)
                .unwrap_err()
                .contains("fix_edits[0]: no path")
        );
    }

    #[test]
    fn prompts_are_redacted_and_fence_the_log_line() {
        let info = ErrorInfo {
            component_id: "auth".into(),
            sample: "ERROR token sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789 failed \
                     for bob@example.com"
                .into(),
            ..ErrorInfo::default()
        };
        let art = Artifacts {
            contract: "{}".into(),
            tests: vec![("tests/t.py".into(), "def test(): pass".into())],
            sources: vec![],
        };
        let p = user_prompt(
            &info,
            &art,
            &[Debrief {
                attempt: 1,
                failure: "tests failed".into(),
                test_output: "AssertionError".into(),
            }],
        );
        assert!(!p.contains("bob@example.com"), "{p}");
        assert!(!p.contains("sk-ant-api03"), "{p}");
        assert!(p.contains("<<<UNTRUSTED-DATA label=\"production log line\""));
        assert!(p.contains("## ATTEMPT 1 DEBRIEF"));
        assert!(p.contains("### tests/t.py"));
        assert!(p.contains("(no existing source)"));
    }

    #[test]
    fn artifacts_read_the_component_tree_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("src/a/__pycache__")).unwrap();
        std::fs::create_dir_all(root.join("src/b")).unwrap();
        std::fs::create_dir_all(root.join("tests/a")).unwrap();
        std::fs::write(root.join("src/a/a.py"), "code").unwrap();
        std::fs::write(root.join("src/a/__pycache__/a.pyc"), "junk").unwrap();
        std::fs::write(root.join("src/b/b.py"), "other").unwrap();
        std::fs::write(root.join("tests/a/t.py"), "test").unwrap();
        let art = Artifacts::gather(root, Path::new("src/a"), Path::new("tests/a"), None);
        assert_eq!(art.sources, vec![("src/a/a.py".into(), "code".into())]);
        assert_eq!(art.tests, vec![("tests/a/t.py".into(), "test".into())]);
    }
}
