//! `sentinel scan` and `sentinel report` end to end: counts, idempotent rescans, bad input.

use std::io::Write;

use crate::harness::{Workspace, stderr, stdout};

const LOG: &str = "2026-11-23T10:00:00Z INFO [PACT:auth:login] ok user=1\n\
2026-11-23T10:00:01Z ERROR [PACT:auth:login] login failed for user 4412 after 12ms\n\
2026-11-23T10:00:02Z ERROR [PACT:auth:login] login failed for user 99 after 7ms\n\
2026-11-23T10:00:03Z ERROR no key here request 3f2a9c1d-0000-4000-8000-00000000abcd\n\
{\"level\":\"Error\",\"msg\":\"charge declined\",\"key\":\"PACT:billing:charge\"}\n\
2026-11-23T10:00:04Z WARN nothing to see\n";

#[test]
fn scan_counts_attributes_and_rescans_without_duplicates() {
    let ws = Workspace::new();
    ws.file(
        "state/manifest.json",
        r#"{"components": {"auth": {"component_id": "auth"}}}"#,
    );
    ws.file("logs/app.log", LOG);
    let (out, v) = ws.scan_json(&["logs/app.log"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(v["lines"], 6);
    assert_eq!(v["error_lines"], 4);
    assert_eq!(v["keyed_lines"], 3);
    assert_eq!(v["registered_lines"], 2);
    assert_eq!(v["unregistered_lines"], 1);
    assert_eq!(v["unattributed_lines"], 1);
    assert_eq!(v["error_key_counts"]["PACT:auth:login"], 2);
    assert_eq!(v["error_key_counts"]["PACT:billing:charge"], 1);
    assert_eq!(v["distinct_keys"], 2);
    // The two login failures differ only in numbers: one incident.
    assert_eq!(v["distinct_fingerprints"], 3);
    assert_eq!(v["incidents_new"], 3);
    assert_eq!(v["incidents_updated"], 0);

    // Scanning the same file again updates the same incidents.
    let (out, v) = ws.scan_json(&["logs/app.log"]);
    assert!(out.status.success());
    assert_eq!(v["incidents_new"], 0);
    assert_eq!(v["incidents_updated"], 3);

    let out = ws.run(&["report", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let incidents: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let incidents = incidents.as_array().unwrap();
    assert_eq!(incidents.len(), 3);
    let login = incidents
        .iter()
        .find(|i| i["pact_key"] == "PACT:auth:login")
        .unwrap();
    assert_eq!(login["count"], 4);
    assert_eq!(login["attribution"], "registered");
    assert_eq!(login["component_id"], "auth");
    assert_eq!(login["method"], "login");
    let total: u64 = incidents.iter().map(|i| i["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 8);

    let out = ws.run(&["report"]);
    let text = stdout(&out);
    // auto_remediate is off: actionable incidents are escalated (the reference's semantics).
    assert!(text.contains("[!!]"), "{text}");
    assert!(login["resolution"] == "auto_remediate_disabled", "{login}");
    assert!(text.contains("auth                "), "{text}");
    assert!(text.contains("unknown"), "{text}");

    // The filters (the store's secondary indexes), alone and combined.
    let report = |args: &[&str]| -> Vec<serde_json::Value> {
        let mut all = vec!["report", "--json"];
        all.extend_from_slice(args);
        let out = ws.run(&all);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
    };
    let auth = report(&["--component", "auth"]);
    assert_eq!(auth.len(), 1);
    assert_eq!(auth[0]["pact_key"], "PACT:auth:login");
    assert_eq!(
        report(&["--component", "auth", "--status", "escalated"]).len(),
        1
    );
    assert!(report(&["--component", "auth", "--status", "active"]).is_empty());
    assert!(report(&["--severity", "critical"]).is_empty());
    assert_eq!(report(&["--status", "escalated", "--limit", "2"]).len(), 2);
    let out = ws.run(&["report", "--component", "nope"]);
    assert_eq!(stdout(&out).trim(), "No incident matches.");
    let out = ws.run(&["report", "--status", "gone"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("active, detected"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn dry_run_writes_nothing() {
    let ws = Workspace::new();
    ws.file("a.log", LOG);
    let (out, v) = ws.scan_json(&["--dry-run", "a.log"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(v["error_lines"], 4);
    assert_eq!(v["incidents_new"], 3);
    assert!(!ws.path().join("state/sentinel.redb").exists());
    let out = ws.run(&["report"]);
    assert_eq!(stdout(&out).trim(), "No incidents recorded.");
}

#[test]
fn gzip_directories_and_globs() {
    let ws = Workspace::new();
    ws.file("logs/a.log", LOG);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(LOG.as_bytes()).unwrap();
    ws.file("logs/old/a.log.1.gz", gz.finish().unwrap());
    ws.file("logs/.hidden.log", LOG);
    let (out, v) = ws.scan_json(&["logs"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(v["files"], 2);
    assert_eq!(v["error_lines"], 8);
    let (_, v) = ws.scan_json(&["--dry-run", "logs/**/*.gz"]);
    assert_eq!(v["files"], 1);
    assert_eq!(v["error_lines"], 4);
}

#[test]
fn bad_inputs_are_reported_and_the_rest_still_scanned() {
    let ws = Workspace::new();
    ws.file("good.log", LOG);
    ws.file(
        "corrupt.log.gz",
        b"\x1f\x8b\x08\x00this is not deflate data at all........",
    );
    let unreadable = ws.file("secret.log", LOG);
    std::fs::create_dir_all(ws.path().join("empty")).unwrap();
    let (out, v) = ws.scan_json(&[
        "good.log",
        "missing.log",
        "corrupt.log.gz",
        "empty",
        "nomatch/*.log",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(v["files"], 1);
    assert_eq!(v["error_lines"], 4);
    let err = stderr(&out);
    assert!(
        err.contains("missing.log: no such file or directory"),
        "{err}"
    );
    assert!(
        err.contains("corrupt.log.gz: corrupt or unreadable gzip"),
        "{err}"
    );
    assert!(
        err.contains("empty: directory contains no log files"),
        "{err}"
    );
    assert!(err.contains("nomatch/*.log: no files match"), "{err}");
    assert_eq!(v["errors"].as_array().unwrap().len(), 4);

    // Nothing scannable at all: non-zero exit with a clear message.
    let out = ws.run(&["scan", "missing.log", "empty"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("nothing could be scanned"),
        "{}",
        stderr(&out)
    );

    // An unreadable file (only meaningful when not running as root).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&unreadable, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::read(&unreadable).is_err() {
        let out = ws.run(&["scan", "secret.log"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).contains("secret.log: permission denied"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn corrupt_store_and_manifest_are_clear_errors() {
    let ws = Workspace::new();
    ws.file("a.log", LOG);
    ws.file(
        "state/sentinel.redb",
        b"garbage garbage garbage".repeat(100),
    );
    let out = ws.run(&["scan", "a.log"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("sentinel.redb"), "{err}");
    assert!(err.contains("corrupt"), "{err}");
    // Never silently reset.
    assert!(
        std::fs::read(ws.path().join("state/sentinel.redb"))
            .unwrap()
            .starts_with(b"garbage")
    );
    let out = ws.run(&["report"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("sentinel.redb"));

    let ws = Workspace::new();
    ws.file("a.log", LOG);
    ws.file("state/manifest.json", "{\"components\": {");
    let out = ws.run(&["scan", "a.log"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("manifest.json"), "{}", stderr(&out));
}

#[test]
fn bad_config_names_file_line_and_key() {
    let ws =
        Workspace::with_config("state_dir: state\nsources:\n  - type: file\n    paht: x.log\n");
    ws.file("a.log", LOG);
    let out = ws.run(&["scan", "a.log"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("sentinel.yaml:4:"), "{err}");
    assert!(err.contains("paht"), "{err}");

    let out = ws.run(&["--config", "nope.yaml", "scan", "a.log"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("nope.yaml does not exist"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn error_pattern_flags_replace_the_config_list() {
    let ws = Workspace::new();
    ws.file("a.log", "WARN disk 91% full\nERROR x\nWARN disk 95% full\n");
    let (_, v) = ws.scan_json(&["--dry-run", "--error-pattern", "WARN disk", "a.log"]);
    assert_eq!(v["error_lines"], 2);
    assert_eq!(v["distinct_fingerprints"], 1);
    let out = ws.run(&["scan", "--error-pattern", "(bad", "a.log"]);
    assert_eq!(out.status.code(), Some(2));
}

/// 20,000 files under a descriptor limit (soft AND hard) of 256: the scan holds a bounded
/// number of files open, so every file is counted, exactly once.
#[test]
fn twenty_thousand_files_at_ulimit_256_are_all_counted() {
    let ws = Workspace::new();
    let dir = ws.path().join("logs");
    let mut want = std::collections::BTreeMap::<String, u64>::new();
    for i in 0..20_000u64 {
        let sub = dir.join(format!("d{}", i % 20));
        if i < 20 {
            std::fs::create_dir_all(&sub).unwrap();
        }
        let key = format!("PACT:svc{}:m{}", i % 37, i % 3);
        *want.entry(key.clone()).or_default() += 1;
        std::fs::write(
            sub.join(format!("f{i}.log")),
            format!("INFO ok {i}\nERROR [{key}] failed after {i} ms\n"),
        )
        .unwrap();
    }
    // `ulimit -n` sets the soft and the hard limit: nothing to raise to.
    let out = std::process::Command::new("sh")
        .current_dir(ws.path())
        .env_remove("SENTINEL_CONFIG")
        .env("HOME", ws.path())
        .args(["-c", "ulimit -n 256 && exec \"$0\" \"$@\""])
        .arg(crate::harness::BIN)
        .args(["scan", "--json", "--threads", "2", "logs"])
        .output()
        .expect("run sentinel under sh");
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("Too many open files"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["files"], 20_000);
    assert_eq!(v["files_failed"], 0);
    assert_eq!(v["error_lines"], 20_000);
    let got: std::collections::BTreeMap<String, u64> =
        serde_json::from_value(v["error_key_counts"].clone()).unwrap();
    assert_eq!(got, want);
    // One incident per key: the siblings `svc1` … `svc36` are never folded together.
    assert_eq!(v["distinct_fingerprints"], 37 * 3);
}

#[test]
fn scan_dash_reads_standard_input_like_a_file() {
    use std::process::{Command, Stdio};
    let ws = Workspace::new();
    ws.file("logs/app.log", LOG);
    let mut child = Command::new(crate::harness::BIN)
        .current_dir(ws.path())
        .env_remove("SENTINEL_CONFIG")
        .env("HOME", ws.path())
        .args(["scan", "--json", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sentinel");
    // Written, then closed (dropped): standard input ends.
    child
        .stdin
        .take()
        .unwrap()
        .write_all(LOG.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["files"], 1);
    assert_eq!(v["lines"], 6);
    assert_eq!(v["error_lines"], 4);
    assert_eq!(v["error_key_counts"]["PACT:auth:login"], 2);
    assert_eq!(v["incidents_new"], 3);
    // The same lines from the file are the same incidents.
    let (out, f) = ws.scan_json(&["logs/app.log"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(f["incidents_new"], 0);
    assert_eq!(f["incidents_updated"], 3);
}

/// A 64-byte log line (`\n` included) saying `level`, numbered `i`.
fn line64(level: &str, i: usize) -> String {
    let head = format!("2026-11-23T10:00:01Z {level} [PACT:auth:login] failed user {i} ");
    format!("{head:.<63}\n")
}

#[test]
fn mapped_and_read_paths_count_the_same() {
    let ws = Workspace::new();
    // Long lines (one longer than a read buffer), CRLF, NUL bytes, invalid UTF-8, no
    // trailing newline, and enough of it for several chunks of a mapping.
    let mut log = Vec::new();
    for i in 0..60_000 {
        log.extend_from_slice(line64(if i % 7 == 0 { "ERROR" } else { "INFO" }, i).as_bytes());
        if i % 9_999 == 0 {
            log.extend_from_slice(b"FATAL \xff\x00 crlf\r\n");
            log.extend(std::iter::repeat_n(b'y', 1 << 21));
            log.extend_from_slice(b" ERROR in a long line\n");
        }
    }
    log.extend_from_slice(b"ERROR [PACT:billing:charge] last line, unterminated");
    ws.file("big.log", &log);
    let (out, mapped) = ws.scan_json(&["--dry-run", "--threads", "2", "big.log"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (out, read) = ws.scan_json(&["--dry-run", "--threads", "2", "--no-mmap", "big.log"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for field in [
        "bytes",
        "lines",
        "error_lines",
        "long_lines",
        "keyed_lines",
        "distinct_fingerprints",
        "error_key_counts",
    ] {
        assert_eq!(mapped[field], read[field], "{field}");
    }
    assert_eq!(mapped["bytes"], log.len() as u64);
    assert_eq!(mapped["long_lines"], 7);
    assert!(mapped.get("warnings").is_none(), "{mapped}");
}

/// Runs `scan --json` on `file` (one mapped segment), pausing after its first 1 MiB chunk
/// to let `change` alter the file, and returns the report.
fn scan_changing(
    ws: &Workspace,
    file: &str,
    change: impl FnOnce(&std::path::Path),
) -> serde_json::Value {
    use std::process::{Command, Stdio};
    let pause = ws.path().join("pause");
    std::fs::create_dir_all(&pause).unwrap();
    let child = Command::new(crate::harness::BIN)
        .current_dir(ws.path())
        .env_remove("SENTINEL_CONFIG")
        .env("HOME", ws.path())
        .env("SENTINEL_TEST_SCAN_PAUSE", &pause)
        .args(["scan", "--json", "--threads", "2", file])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sentinel");
    crate::harness::eventually(std::time::Duration::from_secs(60), || {
        pause.join("paused").exists().then_some(())
    })
    .expect("the scan never paused");
    change(&ws.path().join(file));
    std::fs::write(pause.join("resume"), "").unwrap();
    let out = child.wait_with_output().unwrap();
    // Exits normally: no SIGBUS.
    assert!(out.status.success(), "{:?} {}", out.status, stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("truncated while being scanned"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["files"], 1, "{v}");
    assert_eq!(v["files_failed"], 0, "{v}");
    assert_eq!(v["warnings"][0]["path"], file, "{v}");
    v
}

#[test]
fn a_file_truncated_while_mapped_is_counted_up_to_its_new_end() {
    let ws = Workspace::new();
    // 4 MiB of error lines: one segment, four chunks.
    let log: String = (0..65_536).map(|i| line64("ERROR", i)).collect();
    ws.file("app.log", &log);
    let cut = 2_621_440u64; // 2.5 MiB: inside the third chunk, on a line boundary
    let v = scan_changing(&ws, "app.log", |p| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(p)
            .unwrap()
            .set_len(cut)
            .unwrap();
    });
    assert_eq!(v["bytes"], cut);
    assert_eq!(v["lines"], cut / 64);
    assert_eq!(v["error_lines"], cut / 64);
    assert_eq!(v["error_key_counts"]["PACT:auth:login"], cut / 64);
    // What the store holds is what was counted.
    let out = ws.run(&["report", "--json"]);
    let incidents: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let total: u64 = incidents.iter().map(|i| i["count"].as_u64().unwrap()).sum();
    assert_eq!(total, cut / 64);
}

#[test]
fn a_file_rewritten_while_mapped_counts_what_was_read() {
    let ws = Workspace::new();
    let log: String = (0..65_536).map(|i| line64("ERROR", i)).collect();
    ws.file("app.log", &log);
    // Rewritten in place, shorter: 3 MiB of INFO lines where the errors were.
    let v = scan_changing(&ws, "app.log", |p| {
        let new: String = (0..49_152).map(|i| line64("INFO", i)).collect();
        std::fs::write(p, new).unwrap();
    });
    // The first chunk (1 MiB) was read before the rewrite, the rest after it.
    assert_eq!(v["bytes"], 3 << 20);
    assert_eq!(v["lines"], 49_152);
    assert_eq!(v["error_lines"], (1 << 20) / 64);
}
