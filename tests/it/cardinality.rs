//! High cardinality (issue 23): a key whose every error line is different folds past its
//! budget into one overflow incident with exact counts, in `scan` and through a webhook;
//! `grouping.rules` merge what they match and are checked at load.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Workspace, eventually, http, stderr, stdout};

const KEY: &str = "PACT:noisy:emit";

fn distinct_corpus(ws: &Workspace, name: &str, lines: u64, messages: Option<u64>) -> u64 {
    let f = std::fs::File::create(ws.path().join(name)).unwrap();
    let w = sentinel_corpus::cardinality::write(7, lines, messages, KEY, f).unwrap();
    w.distinct
}

/// The stored incidents of `key`, summed, and its overflow incident.
fn stored(ws: &Workspace, key: &str) -> (u64, u64, Option<sentinel::store::Incident>) {
    let store = sentinel::store::Store::open_read_only(&ws.path().join("state/sentinel.redb"))
        .unwrap()
        .expect("a store");
    let all = store.recent_incidents(100_000).unwrap();
    let of_key: Vec<_> = all.into_iter().filter(|i| i.pact_key == key).collect();
    let total = of_key.iter().map(|i| i.count).sum();
    let n = of_key.len() as u64;
    let overflow = of_key.into_iter().find(|i| i.overflow.is_some());
    (total, n, overflow)
}

#[test]
fn a_key_past_its_budget_folds_into_one_overflow_incident_with_exact_counts() {
    let ws = Workspace::with_config(
        "state_dir: state\nauto_remediate: true\ngrouping:\n  max_new_incidents_per_key: 100\n",
    );
    let distinct = distinct_corpus(&ws, "noisy.log", 5000, None);
    ws.file(
        "calm.log",
        "ERROR [PACT:calm:ok] disk full\nERROR [PACT:calm:ok] disk full\nERROR [PACT:calm:ok] queue stuck\n",
    );
    let (out, v) = ws.scan_json(&["--threads", "2", "noisy.log", "calm.log"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(v["error_lines"], 5003);
    assert_eq!(v["error_key_counts"][KEY], 5000);
    // Distinct fingerprints seen, folded or not.
    assert_eq!(v["distinct_fingerprints"], distinct + 2);
    assert_eq!(v["distinct_fingerprints_estimated"], false);
    assert_eq!(v["incidents_folded"], 4900);
    // 100 of the key, its overflow incident, two calm ones.
    assert_eq!(v["incidents_new"], 103);
    assert_eq!(v["overflow_keys"][KEY], 4900);
    let (total, n, overflow) = stored(&ws, KEY);
    assert_eq!((total, n), (5000, 101), "every line counted, exactly");
    let overflow = overflow.expect("an overflow incident");
    assert_eq!(overflow.count, 4900);
    let o = overflow.overflow.as_ref().unwrap();
    assert!(o.high_cardinality);
    assert_eq!(o.folded_fingerprints, 4900);
    assert_eq!(o.samples.len(), sentinel::store::guard::OVERFLOW_SAMPLES);
    assert!(o.samples.iter().all(|s| s.contains(KEY)), "{:?}", o.samples);
    assert!(o.hint.contains("grouping.rules"), "{}", o.hint);
    // Nothing of the overflow reaches the fixer.
    let store = sentinel::store::Store::open_read_only(&ws.path().join("state/sentinel.redb"))
        .unwrap()
        .unwrap();
    let jobs = store.fix_jobs().unwrap();
    assert!(jobs.iter().all(|j| j.incident_id != overflow.id));
    drop(store);

    // `report` says so, in text and JSON.
    let out = ws.run(&["report"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("HIGH CARDINALITY: 4900 new fingerprints of PACT:noisy:emit"));
    let out = ws.run(&["report", "--json"]);
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        rows.iter()
            .any(|r| r["overflow"]["high_cardinality"] == true)
    );

    // A second run (a new process, the same hour): the key's budget is still spent, its 100
    // incidents count again, the rest folds again, and the counts stay exact.
    let (out, v) = ws.scan_json(&["noisy.log"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(v["incidents_new"], 0);
    assert_eq!(v["incidents_updated"], 101);
    assert_eq!(v["incidents_folded"], 4900);
    let (total, n, overflow) = stored(&ws, KEY);
    assert_eq!((total, n), (10_000, 101));
    assert_eq!(overflow.unwrap().count, 9800);
}

/// Past the first flushes of a long scan the key is known to be over its budget, and its
/// new fingerprints travel without descriptions (`store::Undescribed`): the counts stay
/// exact, and the incidents the key opened before keep counting as themselves.
#[test]
fn a_long_scan_of_distinct_errors_counts_exactly_once_the_key_is_full() {
    let ws =
        Workspace::with_config("state_dir: state\ngrouping:\n  max_new_incidents_per_key: 100\n");
    let lines = 200_000;
    distinct_corpus(&ws, "noisy.log", lines, None);
    let (out, v) = ws.scan_json(&["--threads", "2", "noisy.log"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(v["error_key_counts"][KEY], lines);
    assert_eq!(v["incidents_new"], 101);
    assert_eq!(v["incidents_folded"], lines - 100);
    let (total, n, overflow) = stored(&ws, KEY);
    assert_eq!((total, n), (lines, 101), "every line counted, exactly");
    let overflow = overflow.expect("an overflow incident");
    assert_eq!(overflow.count, lines - 100);
    let o = overflow.overflow.as_ref().unwrap();
    assert_eq!(o.folded_fingerprints, lines - 100);
    assert_eq!(o.samples.len(), sentinel::store::guard::OVERFLOW_SAMPLES);

    // Again, with the key full from the start: the 100 count as themselves.
    let (out, v) = ws.scan_json(&["--threads", "2", "noisy.log"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(v["incidents_new"], 0);
    assert_eq!(v["incidents_updated"], 101);
    let (total, n, overflow) = stored(&ws, KEY);
    assert_eq!((total, n), (2 * lines, 101));
    assert_eq!(overflow.unwrap().count, 2 * (lines - 100));
}

/// A second key that goes over its budget later in the run: the incidents it opened before
/// (after the first key's overflow) still count as themselves when their lines come back.
#[test]
fn a_key_that_overflows_later_in_the_run_keeps_counting_its_incidents() {
    let ws =
        Workspace::with_config("state_dir: state\ngrouping:\n  max_new_incidents_per_key: 100\n");
    const OTHER: &str = "PACT:loud:emit";
    let (a, b) = (50_000, 50_000);
    let mut body = Vec::new();
    sentinel_corpus::cardinality::write(7, a, None, KEY, &mut body).unwrap();
    let mut second = Vec::new();
    sentinel_corpus::cardinality::write(8, b, None, OTHER, &mut second).unwrap();
    // The second key's lines twice: by the second pass it is over its budget.
    body.extend_from_slice(&second);
    body.extend_from_slice(&second);
    std::fs::write(ws.path().join("two.log"), &body).unwrap();
    let (out, v) = ws.scan_json(&["--threads", "2", "two.log"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(v["error_key_counts"][OTHER], 2 * b);
    let (total, n, overflow) = stored(&ws, KEY);
    assert_eq!((total, n), (a, 101));
    assert_eq!(overflow.unwrap().count, a - 100);
    let (total, n, overflow) = stored(&ws, OTHER);
    assert_eq!((total, n), (2 * b, 101), "every line counted, exactly");
    assert_eq!(
        overflow.unwrap().count,
        2 * (b - 100),
        "the 100 incidents of the key count their lines of the second pass"
    );
}

#[test]
fn ordinary_logs_never_meet_the_default_budget() {
    let ws = Workspace::new();
    let distinct = distinct_corpus(&ws, "repeats.log", 20_000, Some(50));
    let (out, v) = ws.scan_json(&["repeats.log"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(v["distinct_fingerprints"], distinct);
    assert_eq!(v["incidents_new"], 50);
    assert_eq!(v["incidents_folded"], 0);
    assert_eq!(v["overflow_keys"], serde_json::json!({}));
}

#[test]
fn grouping_rules_merge_what_they_match_and_bad_ones_name_file_line_and_key() {
    let ws = Workspace::with_config(
        "state_dir: state\ngrouping:\n  rules:\n    - pattern: 'user [a-z]+'\n      replace: 'user <user>'\n    - pattern: 'in (eu|us)-[a-z]+'\n      replace: 'in $1-<zone>'\n",
    );
    ws.file(
        "a.log",
        "ERROR [PACT:auth:login] user alice denied in eu-west\n\
         ERROR [PACT:auth:login] user bob denied in eu-north\n\
         ERROR [PACT:auth:login] user carol denied in us-east\n\
         ERROR [PACT:auth:login] token expired\n",
    );
    let (out, v) = ws.scan_json(&["a.log"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(v["distinct_fingerprints"], 3, "{v}");
    let store = sentinel::store::Store::open_read_only(&ws.path().join("state/sentinel.redb"))
        .unwrap()
        .unwrap();
    let mut normalized: Vec<(String, u64, String)> = store
        .recent_incidents(10)
        .unwrap()
        .into_iter()
        .map(|i| (i.normalized, i.count, i.sample))
        .collect();
    normalized.sort();
    assert_eq!(
        normalized
            .iter()
            .map(|(n, c, _)| (n.as_str(), *c))
            .collect::<Vec<_>>(),
        [
            ("ERROR [PACT:auth:login] token expired", 1),
            ("ERROR [PACT:auth:login] user <user> denied in eu-<zone>", 2),
            ("ERROR [PACT:auth:login] user <user> denied in us-<zone>", 1),
        ]
    );
    // The sample is the line as it was.
    assert!(normalized[1].2.contains("user alice"), "{normalized:?}");
    drop(store);

    // A bad pattern: refused at load, with file, line and key.
    let bad = Workspace::with_config(
        "state_dir: state\ngrouping:\n  rules:\n    - pattern: 'ok'\n    - pattern: 'user ('\n      replace: x\n",
    );
    bad.file("a.log", "ERROR x\n");
    let out = bad.run(&["scan", "a.log"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("sentinel.yaml:5"), "{err}");
    assert!(err.contains("grouping.rules[1].pattern"), "{err}");
    assert!(err.contains("unclosed group"), "{err}");
    let bad =
        Workspace::with_config("state_dir: state\ngrouping:\n  max_new_incidents_per_key: 0\n");
    let out = bad.run(&["scan", "a.log"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("grouping.max_new_incidents_per_key"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_webhook_flood_of_distinct_errors_folds_and_the_metrics_say_so() {
    let ws = Workspace::with_config(
        "state_dir: state\napi:\n  listen: 127.0.0.1:0\ngrouping:\n  max_new_incidents_per_key: 20\nsources:\n  - type: webhook\n    name: hook\n    port: 0\n",
    );
    let mut d = ws.spawn(&["watch"]);
    let info = d.ready();
    let url = info.webhook_url("hook");
    let c = http();
    let mut corpus = Vec::new();
    sentinel_corpus::cardinality::write(3, 300, None, KEY, &mut corpus).unwrap();
    for line in corpus.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let body = serde_json::json!({"error": String::from_utf8_lossy(line)}).to_string();
        let r = c
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }
    let counted = eventually(Duration::from_secs(20), || {
        let s = ws.store()?;
        let k: BTreeMap<String, u64> = s.key_counts().ok()?;
        (k.get(KEY) == Some(&300)).then_some(())
    });
    assert!(counted.is_some(), "every acknowledged event counted");
    let metrics = eventually(Duration::from_secs(20), || {
        let text = c.get(info.api_url("/metrics")).send().ok()?.text().ok()?;
        text.contains("sentinel_incidents_overflow_total{key=\"PACT:noisy:emit\"} 280")
            .then_some(text)
    });
    assert!(metrics.is_some(), "the overflow counter");
    let (total, n, overflow) = stored(&ws, KEY);
    assert_eq!((total, n), (300, 21));
    assert_eq!(overflow.unwrap().count, 280);
    // The API shows the flag.
    let list: Value = c
        .get(info.api_url("/incidents?limit=100"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let text = list.to_string();
    assert!(text.contains("\"high_cardinality\":true"), "{text}");
    // The log did not get a line per new incident.
    let log = d.log_text();
    let per_incident = log.matches("new incident").count();
    assert!(
        per_incident <= 25,
        "{per_incident} lines about new incidents"
    );
    assert!(d.term(Duration::from_secs(10)).success());
}
