//! The fixer's queue: only distinct, actionable errors of registered components become fix
//! jobs, written durably by the daemon in the transaction that made them actionable.

use std::io::Write;
use std::time::Duration;

use crate::harness::{Workspace, eventually};

#[test]
fn ten_thousand_repeats_of_one_error_make_one_fix_job() {
    let ws = Workspace::with_config(
        "state_dir: state\nauto_remediate: true\nerror_threshold:\n  count: 3\n  window_seconds: 300\n\
         sources:\n  - type: file\n    path: logs/*.log\n",
    );
    ws.file(
        "state/manifest.json",
        r#"{"components": {"auth": {"component_id": "auth"}}}"#,
    );
    let log = ws.file("logs/app.log", "");
    let mut d = ws.spawn(&["watch", "--no-api"]);
    d.ready();
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    let mut text = String::new();
    for i in 0..10_000 {
        text.push_str(&format!(
            "2026-11-30T10:00:00Z ERROR [PACT:auth:login] login failed for user {i}\n"
        ));
    }
    // 50 distinct errors of the registered component, each seen 3 times (the threshold),
    // and one error seen only twice (not actionable), and an unregistered one.
    for round in 0..3 {
        for e in 0..50u8 {
            let word: String = [b'a' + e / 26, b'a' + e % 26]
                .map(char::from)
                .iter()
                .collect();
            text.push_str(&format!("ERROR [PACT:auth:check_{word}] failed\n"));
        }
        if round < 2 {
            text.push_str("ERROR [PACT:auth:rare] twice only\n");
        }
        text.push_str("ERROR [PACT:ghost:run] not registered\n");
    }
    f.write_all(text.as_bytes()).unwrap();
    let jobs = eventually(Duration::from_secs(20), || {
        let s = ws.store()?;
        let total = s.totals().ok()?;
        (total.get("error_lines").copied() == Some(10_000 + 150 + 2 + 3))
            .then(|| s.fix_jobs().ok())
            .flatten()
    })
    .expect("all lines committed");
    assert_eq!(
        jobs.len(),
        51,
        "one job for the 10 000 repeats, one per distinct error"
    );
    let store = ws.store().unwrap();
    let incidents = store.recent_incidents(100).unwrap();
    let login = incidents.iter().find(|i| i.method == "login").unwrap();
    assert_eq!(login.count, 10_000);
    assert_eq!(jobs.iter().filter(|j| j.incident_id == login.id).count(), 1);
    let rare = incidents.iter().find(|i| i.method == "rare").unwrap();
    assert_eq!(rare.status.as_str(), "detected");
    assert!(!jobs.iter().any(|j| j.incident_id == rare.id));
    let ghost = incidents
        .iter()
        .find(|i| i.component_id == "ghost")
        .unwrap();
    assert_eq!(
        (ghost.status.as_str(), ghost.resolution.as_str()),
        ("escalated", "component_not_registered")
    );
    assert!(d.term(Duration::from_secs(5)).success());
}
