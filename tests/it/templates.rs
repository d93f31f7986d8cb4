//! `grouping.templates` (issue 23): the Drain-style miner groups messages varying in a
//! word into one incident per template with exact counts; identities survive a restart and
//! a template generalising; the result does not depend on the thread count or how the input
//! is cut; bad settings are refused with file, line and key.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use crate::harness::{Workspace, eventually, http, stderr};

const ON: &str = "state_dir: state\ngrouping:\n  templates: true\n";

/// (normalised text, count) of every stored incident, by id.
fn incidents(ws: &Workspace) -> BTreeMap<String, (String, u64)> {
    let store = sentinel::store::Store::open_read_only(&ws.path().join("state/sentinel.redb"))
        .unwrap()
        .expect("a store");
    store
        .recent_incidents(100_000)
        .unwrap()
        .into_iter()
        .map(|i| (i.id, (i.normalized, i.count)))
        .collect()
}

fn texts(all: &BTreeMap<String, (String, u64)>) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = all.values().cloned().collect();
    v.sort();
    v
}

const USERS: &[&str] = &["alice", "bob", "carol", "dave", "erin"];

/// Lines varying in one word (the user), and a message of another length.
fn login_log() -> String {
    let mut s = String::new();
    for (i, u) in USERS.iter().enumerate() {
        for _ in 0..=i {
            s.push_str(&format!(
                "2026-12-06T10:00:0{i}Z ERROR [PACT:auth:login] user {u} logged in from web\n"
            ));
        }
    }
    s.push_str("2026-12-06T10:00:09Z ERROR [PACT:auth:login] token expired\n");
    s.push_str("2026-12-06T10:00:09Z ERROR [PACT:auth:login] token expired\n");
    s.push_str("2026-12-06T10:00:09Z INFO all good\n");
    s
}

#[test]
fn messages_varying_in_a_word_are_one_incident_per_template_and_off_one_per_message() {
    let ws = Workspace::with_config(ON);
    ws.file("a.log", login_log());
    let (out, v) = ws.scan_json(&["a.log"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(v["error_lines"], 17);
    // Distinct fingerprints seen (of the normalised lines), templates or not.
    assert_eq!(v["distinct_fingerprints"], 6);
    assert_eq!(v["incidents_new"], 2);
    let all = incidents(&ws);
    assert_eq!(
        texts(&all),
        [
            (
                "<n>-<n>-<n>T<n>:<n>:<n>Z ERROR [PACT:auth:login] token expired".to_string(),
                2
            ),
            (
                "<n>-<n>-<n>T<n>:<n>:<n>Z ERROR [PACT:auth:login] user <*> logged in from web"
                    .to_string(),
                15
            ),
        ]
    );
    let store = sentinel::store::Store::open_read_only(&ws.path().join("state/sentinel.redb"))
        .unwrap()
        .unwrap();
    assert_eq!(store.key_counts().unwrap()["PACT:auth:login"], 17);
    assert_eq!(store.template_clusters("PACT:auth:login").unwrap().len(), 2);
    drop(store);

    // Templates off (the default): one incident per distinct message.
    let off = Workspace::new();
    off.file("a.log", login_log());
    let (out, v) = off.scan_json(&["a.log"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(v["incidents_new"], 6);
    let all = incidents(&off);
    assert_eq!(all.len(), 6);
    assert!(
        all.values()
            .any(|(n, c)| n.contains("user erin") && *c == 5)
    );
}

#[test]
fn a_second_run_counts_into_the_same_incidents_even_when_the_template_generalises() {
    let ws = Workspace::with_config(ON);
    ws.file(
        "one.log",
        "ERROR [PACT:auth:login] user alice logged in\nERROR [PACT:auth:login] user alice logged in\n",
    );
    let (out, v) = ws.scan_json(&["one.log"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(v["incidents_new"], 1);
    let first = incidents(&ws);
    let (id, (text, n)) = first.iter().next().unwrap();
    assert_eq!(
        (text.as_str(), *n),
        ("ERROR [PACT:auth:login] user alice logged in", 2)
    );
    // A new process: alice again, and bob — the template generalises, the incident stays.
    ws.file(
        "two.log",
        "ERROR [PACT:auth:login] user bob logged in\nERROR [PACT:auth:login] user alice logged in\n",
    );
    let (out, v) = ws.scan_json(&["two.log"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(v["incidents_new"], 0, "{v}");
    assert_eq!(v["incidents_updated"], 1, "{v}");
    let second = incidents(&ws);
    assert_eq!(second.len(), 1);
    assert_eq!(
        second[id],
        ("ERROR [PACT:auth:login] user <*> logged in".to_string(), 4)
    );
    // And the whole input once more: every line counted into the same incident.
    let (out, _) = ws.scan_json(&["one.log", "two.log"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let third = incidents(&ws);
    assert_eq!(
        third[id],
        ("ERROR [PACT:auth:login] user <*> logged in".to_string(), 8)
    );
}

/// Messages whose clustering depends on the order they are mined in: `a b c d`, `a x y d`
/// and `a b c z` (with a threshold of 0.5, whichever two come first merge and the third is
/// too far from their template), spread over many lines of several keys.
fn order_sensitive(parts: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for k in 0..4 {
        for (i, m) in [
            "alpha beta gamma delta",
            "alpha xray yank delta",
            "alpha beta gamma zulu",
            "alpha beta kilo delta",
            "omega one two three",
            "omega one two four",
        ]
        .iter()
        .enumerate()
        {
            for r in 0..(1 + (i + k) % 3) {
                lines.push(format!("ERROR [PACT:c{k}:op] {m} r{}\n", r % 2));
            }
        }
    }
    // Cut into `parts` files, interleaved, so each thread count meets them in another order.
    let mut files = vec![String::new(); parts];
    for (i, l) in lines.iter().enumerate() {
        files[(i * 7) % parts].push_str(l);
    }
    files
}

#[test]
fn the_same_input_gives_the_same_incidents_whatever_the_threads_and_the_cut() {
    let mut results = Vec::new();
    for (parts, threads) in [(1, "1"), (1, "2"), (5, "1"), (5, "2"), (3, "2")] {
        let ws = Workspace::with_config(ON);
        let mut names = Vec::new();
        for (i, f) in order_sensitive(parts).iter().enumerate() {
            let name = format!("part{i}.log");
            ws.file(&name, f);
            names.push(name);
        }
        // The files in reverse order too: another arrival order.
        if parts > 1 && threads == "1" {
            names.reverse();
        }
        let mut args = vec!["--threads", threads];
        args.extend(names.iter().map(String::as_str));
        let (out, v) = ws.scan_json(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(v["incidents_folded"], 0);
        results.push(incidents(&ws));
    }
    let total: u64 = results[0].values().map(|(_, c)| c).sum();
    assert_eq!(total, order_sensitive(1)[0].lines().count() as u64);
    // Fewer incidents than messages: the miner merged some.
    assert!(results[0].len() < 4 * 6 * 2, "{:?}", results[0]);
    assert!(
        results[0].values().any(|(n, _)| n.contains("<*>")),
        "{:?}",
        results[0]
    );
    for r in &results[1..] {
        assert_eq!(r, &results[0], "ids, templates and counts identical");
    }
}

#[test]
fn the_daemon_mines_file_and_webhook_lines_and_keeps_identities_across_a_restart() {
    let ws = Workspace::with_config(
        "state_dir: state\napi:\n  listen: 127.0.0.1:0\ngrouping:\n  templates: true\n\
         sources:\n  - type: file\n    name: app\n    path: logs/*.log\n\
         \x20 - type: webhook\n    name: hook\n    port: 0\n",
    );
    std::fs::create_dir_all(ws.path().join("logs")).unwrap();
    let log = ws.path().join("logs/app.log");
    std::fs::write(&log, "").unwrap();
    let append = |s: &str| {
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(s.as_bytes()).unwrap();
    };
    let key_count = |n: u64| {
        eventually(Duration::from_secs(20), || {
            let s = ws.store()?;
            (s.key_counts().ok()?.get("PACT:auth:login") == Some(&n)).then_some(())
        })
        .is_some()
    };
    let mut d = ws.spawn(&["watch"]);
    let info = d.ready();
    append(
        "ERROR [PACT:auth:login] user alice logged in\nERROR [PACT:auth:login] user bob logged in\n",
    );
    assert!(key_count(2), "{}", d.log_text());
    // A webhook line of the same template.
    let r = http()
        .post(info.webhook_url("hook"))
        .header("content-type", "application/json")
        .body(r#"{"error": "ERROR [PACT:auth:login] user carol logged in"}"#)
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert!(key_count(3), "{}", d.log_text());
    let before = incidents(&ws);
    assert_eq!(
        texts(&before),
        [("ERROR [PACT:auth:login] user <*> logged in".to_string(), 3)],
        "{before:?}"
    );
    assert!(d.term(Duration::from_secs(10)).success());

    // Restarted: new users count into the same incident.
    let mut d = ws.spawn(&["watch"]);
    d.ready();
    append(
        "ERROR [PACT:auth:login] user dave logged in\nERROR [PACT:auth:login] user alice logged in\n",
    );
    assert!(key_count(5), "{}", d.log_text());
    let after = incidents(&ws);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    assert_eq!(
        texts(&after),
        [("ERROR [PACT:auth:login] user <*> logged in".to_string(), 5)]
    );
    assert!(d.term(Duration::from_secs(10)).success());
}

#[test]
fn bad_template_settings_name_file_line_and_key() {
    for (yaml, key, line) in [
        (
            "state_dir: state\ngrouping:\n  templates: true\n  template_similarity: 1.5\n",
            "grouping.template_similarity",
            "sentinel.yaml:4",
        ),
        (
            "state_dir: state\ngrouping:\n  template_depth: 2\n",
            "grouping.template_depth",
            "sentinel.yaml:3",
        ),
        (
            "state_dir: state\ngrouping:\n  template_depth: 99\n",
            "grouping.template_depth",
            "sentinel.yaml:3",
        ),
        (
            "state_dir: state\ngrouping:\n  templates: sometimes\n",
            "grouping.templates",
            "sentinel.yaml:3",
        ),
    ] {
        let ws = Workspace::with_config(yaml);
        ws.file("a.log", "ERROR x\n");
        let out = ws.run(&["scan", "a.log"]);
        assert_eq!(out.status.code(), Some(2), "{yaml}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(line), "{yaml}: {err}");
        assert!(err.contains(key), "{yaml}: {err}");
    }
}
