//! The dashboard and its data: the trend counters' JSON on a real daemon; the pages in a
//! real browser (see `browser`).

use std::io::Write;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Workspace, eventually, http};

const CONFIG: &str = "state_dir: state
error_threshold:
  count: 1000000
api:
  listen: 127.0.0.1:0
sources:
  - type: file
    name: app
    path: logs/*.log
";

fn append(path: &std::path::Path, text: &str) {
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open log")
        .write_all(text.as_bytes())
        .expect("append");
}

#[test]
fn trend_counters_hold_every_counted_line_and_are_in_the_openapi_document() {
    let ws = Workspace::with_config(CONFIG);
    let log = ws.file("logs/app.log", "");
    let mut d = ws.spawn(&["watch"]);
    let info = d.ready();
    let c = http();
    append(&log, "ERROR PACT:billing:charge card declined 1\n");
    append(
        &log,
        "ERROR PACT:billing:charge card declined 2\nERROR PACT:auth:login locked\n",
    );
    let get = |path: &str| -> (u16, Value) {
        let r = c.get(info.api_url(path)).send().expect("GET");
        (r.status().as_u16(), r.json().expect("JSON"))
    };
    let incidents = eventually(Duration::from_secs(10), || {
        let (_, v) = get("/incidents");
        let list = v["incidents"].as_array()?.clone();
        (list
            .iter()
            .map(|i| i["count"].as_u64().unwrap_or(0))
            .sum::<u64>()
            == 3)
            .then_some(list)
    })
    .expect("3 lines counted within 10 s");
    for inc in &incidents {
        let id = inc["id"].as_str().unwrap();
        for bucket in ["1m", "1h"] {
            let (st, t) = get(&format!("/incidents/{id}/trend?bucket={bucket}"));
            assert_eq!(st, 200, "{t}");
            assert_eq!(t["incident_id"], *id);
            assert_eq!(t["bucket"], bucket);
            // Every counted line is in a bucket of the last 24 h / 30 days.
            assert_eq!(t["total"], inc["count"], "{t}");
            let sum: u64 = t["points"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["count"].as_u64().unwrap())
                .sum();
            assert_eq!(sum, inc["count"].as_u64().unwrap());
        }
    }
    let (st, all) = get("/trend?bucket=1h");
    assert_eq!((st, all["total"].as_u64()), (200, Some(3)), "{all}");
    let (st, all) = get("/trend");
    assert_eq!((st, all["bucket"].as_str()), (200, Some("1m")), "{all}");
    // Bad input is a 4xx naming the problem.
    let id = incidents[0]["id"].as_str().unwrap();
    let (st, e) = get(&format!("/incidents/{id}/trend?bucket=5m"));
    assert_eq!(st, 400);
    assert!(
        e["error"]["message"].as_str().unwrap().contains("1m, 1h"),
        "{e}"
    );
    let (st, e) = get("/trend?colour=red");
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (400, Some("invalid_query"))
    );
    let (st, _) = get("/incidents/000000000000/trend");
    assert_eq!(st, 404);
    let (_, doc) = get("/openapi.json");
    for path in ["/incidents/{id}/trend", "/trend"] {
        assert!(
            doc["paths"][path]["get"].is_object(),
            "{path} not documented"
        );
    }
    assert!(d.term(Duration::from_secs(10)).success());
}
