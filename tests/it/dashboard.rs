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

// ---- in a real browser (see `crate::browser`) ----

use crate::browser::Browser;

/// `daemon.json`'s API address as a base URL.
fn base(info: &crate::harness::DaemonInfo) -> String {
    info.api_url("")
}

/// The ids and text of the overview's incident rows.
const ROWS: &str = "return Array.from(document.querySelectorAll('#incidents tbody tr'))\
    .map(r => r.getAttribute('data-id') + ' ' + r.textContent).join('\\n');";

#[test]
fn a_new_incident_appears_in_the_list_and_the_live_feed_without_a_reload() {
    let ws = Workspace::with_config(CONFIG);
    let log = ws.file("logs/app.log", "");
    let mut d = ws.spawn(&["watch"]);
    let info = d.ready();
    // Some history, so that the page (and its screenshot) shows something.
    append(
        &log,
        "ERROR PACT:billing:charge card declined for order 1234\n\
         ERROR PACT:billing:charge card declined for order 1235\n\
         CRITICAL PACT:auth:login token signature invalid for user 7\n\
         ERROR PACT:search:query timeout after 3000 ms\n\
         ERROR upstream connection reset by peer\n",
    );
    eventually(Duration::from_secs(10), || {
        let v: Value = http()
            .get(info.api_url("/incidents"))
            .send()
            .ok()?
            .json()
            .ok()?;
        (v["incidents"].as_array()?.len() == 4).then_some(())
    })
    .expect("4 incidents within 10 s");
    let b = Browser::start();
    b.goto(&base(&info));
    assert_eq!(b.js("return document.title;"), "Overview — Sentinel");
    assert!(b.js(ROWS).as_str().unwrap().contains("card declined"));
    // The file source's lag: its one file is read to its end.
    let lag = b.js(
        "const r = document.querySelector('#ingest tr[data-source=\"app\"]');\
           return [r.querySelector('[data-field=\"lag_bytes\"]').textContent,\
                   r.querySelector('[data-field=\"files_behind\"]').textContent,\
                   document.querySelectorAll('#behind tbody tr').length];",
    );
    assert_eq!(
        lag,
        serde_json::json!(["0", "0", 0]),
        "lag of a caught-up file"
    );
    // A marker that a reload would wipe.
    b.js("window.__noReload = 42; return 1;");
    let appended = std::time::Instant::now();
    append(
        &log,
        "ERROR PACT:inventory_v2:reserve stock unavailable for sku 99\n",
    );
    let row = b.wait_js(
        Duration::from_secs(2),
        "return Array.from(document.querySelectorAll('#incidents tbody tr'))\
           .map(r => r.textContent).find(t => t.includes('PACT:inventory_v2:reserve')) || null;",
    );
    assert!(
        row.is_some(),
        "the incident is not in the list 2 s after the append; rows:\n{}",
        b.js(ROWS)
    );
    let feed = b.wait_js(
        Duration::from_secs(2).saturating_sub(appended.elapsed()).max(Duration::from_millis(1)),
        "return Array.from(document.querySelectorAll('#feed tbody tr'))\
           .map(r => r.textContent).find(t => t.includes('incident_detected') && t.includes('inventory_v2')) || null;",
    );
    assert!(
        feed.is_some(),
        "the live feed has no incident_detected row for it"
    );
    assert!(
        appended.elapsed() < Duration::from_secs(2) + Duration::from_millis(500),
        "took {:?}",
        appended.elapsed()
    );
    assert_eq!(
        b.js("return window.__noReload;"),
        42,
        "the page was reloaded"
    );
    // The row links to the incident, whose id the API knows.
    let id = b.js(
        "const r = Array.from(document.querySelectorAll('#incidents tbody tr'))\
           .find(r => r.textContent.includes('inventory_v2')); return r.getAttribute('data-id');",
    );
    let (st, _) = {
        let r = http()
            .get(info.api_url(&format!("/incidents/{}", id.as_str().unwrap())))
            .send()
            .unwrap();
        (r.status().as_u16(), ())
    };
    assert_eq!(st, 200);
    // A filtered list stays live too: a new incident joins it only if it matches the filter.
    b.goto(&format!("{}/?q=declined", base(&info)));
    b.wait_js(
        Duration::from_secs(5),
        "return document.getElementById('live-status').textContent === 'live';",
    )
    .expect("the live feed connects");
    append(
        &log,
        "ERROR PACT:shipping:label printer jammed on dock 4
         ERROR PACT:billing:refund card declined twice for order 77
",
    );
    b.wait_js(
        Duration::from_secs(5),
        "const t = Array.from(document.querySelectorAll('#feed tbody tr')).map(r => r.textContent);         return (t.some(x => x.includes('incident_detected') && x.includes('shipping'))           && t.some(x => x.includes('incident_detected') && x.includes('refund'))) || null;",
    )
    .expect("both new incidents in the live feed");
    let rows = b.js(ROWS).as_str().unwrap().to_string();
    assert!(rows.contains("refund card declined"), "{rows}");
    assert!(!rows.contains("printer jammed"), "{rows}");
    // The screenshot of the README, from this very run (a fresh load shows the sparklines).
    b.goto(&base(&info));
    b.wait_js(
        Duration::from_secs(5),
        "return document.getElementById('live-status').textContent === 'live';",
    )
    .expect("the live feed connects");
    assert_eq!(
        b.js("return document.getElementById('total').textContent;"),
        "7",
        "the totals of a small store are up to date"
    );
    let png = b.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    // The README's picture is refreshed on request only (a test never writes into the repo):
    // SENTINEL_SCREENSHOT=docs/dashboard.png cargo test --test it dashboard::
    if let Some(to) = std::env::var_os("SENTINEL_SCREENSHOT") {
        std::fs::write(&to, &png).expect("write the screenshot");
    }
    drop(b);
    assert!(d.term(Duration::from_secs(10)).success());
}

#[test]
fn markup_in_log_lines_renders_as_text_and_never_runs() {
    let ws = Workspace::with_config(CONFIG);
    let log = ws.file("logs/app.log", "");
    let mut d = ws.spawn(&["watch"]);
    let info = d.ready();
    let b = Browser::start();
    b.goto(&base(&info));
    let title = b.js("return document.title;");
    let evil = "ERROR PACT:xss:probe <img src=x onerror=\"document.title='pwned';window.__xss=1;alert('xss')\"> \
                <script>document.title='pwned';window.__xss=2;alert('xss')</script> <b>bold</b>";
    append(&log, &format!("{evil}\n"));
    // Live: the row the script builds.
    let row = b.wait_js(
        Duration::from_secs(5),
        "const r = Array.from(document.querySelectorAll('#incidents tbody tr'))\
           .find(r => r.textContent.includes('PACT:xss:probe')); return r ? r.getAttribute('data-id') : null;",
    );
    let id = row
        .expect("the incident arrives live")
        .as_str()
        .unwrap()
        .to_string();
    let check = |page: &str| {
        assert_eq!(b.alert_text(), None, "{page}: an alert opened");
        assert_eq!(
            b.js("return typeof window.__xss;"),
            "undefined",
            "{page}: a script ran"
        );
        assert_ne!(b.js("return document.title;"), "pwned", "{page}");
        assert_eq!(
            b.js("return document.querySelectorAll('main img, main script, main b').length;"),
            0,
            "{page}: markup from the log became elements"
        );
        let text = b.js("return document.querySelector('main').textContent;");
        assert!(
            text.as_str()
                .unwrap()
                .contains("<script>document.title='pwned'"),
            "{page}: the line is shown as text"
        );
    };
    check("overview (live row)");
    assert_eq!(b.js("return document.title;"), title);
    // Server-rendered: the overview, the incident, the live feed.
    b.goto(&base(&info));
    check("overview (rendered)");
    b.goto(&format!("{}/ui/incidents/{id}", base(&info)));
    check("incident");
    assert_eq!(
        b.js("return document.getElementById('sample').textContent;"),
        evil
    );
    b.goto(&format!("{}/ui/live", base(&info)));
    // The live page shows the newest events as they come: make one.
    append(&log, &format!("{evil} again\n"));
    b.wait_js(
        Duration::from_secs(5),
        "return document.querySelectorAll('#feed tbody tr').length > 0;",
    )
    .expect("a feed row");
    assert_eq!(b.alert_text(), None, "live: an alert opened");
    assert_eq!(b.js("return typeof window.__xss;"), "undefined");
    drop(b);
    assert!(d.term(Duration::from_secs(10)).success());
}

#[test]
fn the_incident_chart_has_the_points_the_counters_hold_and_pages_fit_a_phone() {
    let ws = Workspace::with_config(CONFIG);
    let log = ws.file("logs/app.log", "");
    let mut d = ws.spawn(&["watch"]);
    let info = d.ready();
    for n in 0..3 {
        append(
            &log,
            &format!("ERROR PACT:billing:charge card declined {n}\n"),
        );
        // Separate commits (not a sleep: wait until the line is counted).
        eventually(Duration::from_secs(10), || {
            let v: Value = http()
                .get(info.api_url("/incidents"))
                .send()
                .ok()?
                .json()
                .ok()?;
            (v["incidents"][0]["count"].as_u64()? == n + 1).then_some(())
        })
        .expect("counted");
    }
    let v: Value = http()
        .get(info.api_url("/incidents"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = v["incidents"][0]["id"].as_str().unwrap().to_string();
    let b = Browser::start();
    for (range, bucket) in [("24h", "1m"), ("1h", "1m"), ("7d", "1h"), ("30d", "1h")] {
        let t: Value = http()
            .get(info.api_url(&format!("/incidents/{id}/trend?bucket={bucket}")))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let want: Vec<(String, u64)> = t["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["start"].as_str().unwrap().to_string(),
                    p["count"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(want.iter().map(|p| p.1).sum::<u64>(), 3, "{t}");
        b.goto(&format!("{}/ui/incidents/{id}?range={range}", base(&info)));
        let got = b.js(
            "return Array.from(document.querySelectorAll('svg#trend rect.bar'))\
               .map(r => [r.getAttribute('data-start'), Number(r.getAttribute('data-count'))]);",
        );
        let got: Vec<(String, u64)> = got
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_str().unwrap().to_string(), p[1].as_u64().unwrap()))
            .collect();
        assert_eq!(got, want, "range {range}");
        // Every bar is drawn inside the chart.
        let inside = b.js(
            "const s = document.getElementById('trend').getBoundingClientRect();\
             return Array.from(document.querySelectorAll('svg#trend rect.bar')).every(r => {\
               const b = r.getBoundingClientRect();\
               return b.height > 0 && b.left >= s.left - 1 && b.right <= s.right + 1; });",
        );
        assert_eq!(inside, true, "range {range}");
    }
    // A phone: 390 px wide, no page scrolls sideways.
    b.resize(390, 844);
    let width = b.js("return window.innerWidth;").as_u64().unwrap();
    assert!(width <= 390, "inner width {width}");
    for page in [
        "/".to_string(),
        format!("/ui/incidents/{id}"),
        "/ui/live".into(),
        "/ui/components".into(),
        "/ui/fixes".into(),
    ] {
        b.goto(&format!("{}{page}", base(&info)));
        let overflow = b.js(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
        );
        assert_eq!(overflow, 0, "{page} scrolls sideways at 390 px");
    }
    drop(b);
    assert!(d.term(Duration::from_secs(10)).success());
}

#[test]
fn with_tokens_the_dashboard_asks_once_and_only_the_write_scope_approves_a_fix() {
    use crate::fix_e2e::{KEY, answer, config_with, git, project, reproducer, the_fix};
    use sentinel::fix::fake_llm::{FakeLlm, Route};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeLlm::start());
    fake.push(
        Route::Anthropic,
        answer(reproducer(), the_fix(), Value::Null),
    );
    let ws = Workspace::with_config(&config_with(
        fake.base_url(),
        "",
        "  merge: true\n  require_approval: true\n",
        "api:\n  listen: 127.0.0.1:0\n  read_token_env: DASH_READ\n  write_token_env: DASH_WRITE\n",
    ));
    let project = project(&ws);
    git(&project, &["checkout", "--quiet", "--", "NOTES.md"]);
    std::fs::remove_file(project.join("scratch.txt")).unwrap();
    let head = git(&project, &["rev-parse", "HEAD"]);
    assert!(ws.run(&["register", "project"]).status.success());
    let log = ws.file("logs/app.log", "");
    let mut d = ws.spawn_env(
        &["watch"],
        &[
            ("FAKE_LLM_KEY", "k"),
            ("DASH_READ", "read-token-1"),
            ("DASH_WRITE", "write-token-1"),
        ],
    );
    let info = d.ready();
    append(
        &log,
        &format!("ERROR [{KEY}] IndexError: list index out of range\n"),
    );
    let api = |path: &str| -> Value {
        http()
            .get(info.api_url(path))
            .bearer_auth("write-token-1")
            .send()
            .expect("GET")
            .json()
            .expect("JSON")
    };
    let fix = eventually(Duration::from_secs(120), || {
        let f = api("/fixes").as_array()?.first()?.clone();
        (!matches!(f["status"].as_str(), Some("pending" | "running"))).then_some(f)
    })
    .expect("the fix ended within 120 s");
    assert_eq!(fix["status"], "awaiting_approval", "{fix:#}");
    let (fix_id, incident) = (
        fix["id"].as_str().unwrap().to_string(),
        fix["incident_id"].as_str().unwrap().to_string(),
    );

    let b = Browser::start();
    let sign_in = |token: &str| {
        b.goto(&base(&info));
        assert_eq!(b.js("return document.title;"), "Sign in — Sentinel");
        b.run(async {
            let c = b.client();
            let field = c.find(fantoccini::Locator::Css("#token")).await?;
            field.send_keys(token).await?;
            c.find(fantoccini::Locator::Css("#signin"))
                .await?
                .click()
                .await
        })
        .expect("submit the token form");
        b.wait_js(
            Duration::from_secs(5),
            "return document.title === 'Overview — Sentinel' && document.querySelector('.scope').textContent;",
        )
        .expect("signed in")
    };
    let approve = || {
        b.goto(&format!("{}/ui/incidents/{incident}", base(&info)));
        b.run(async {
            b.client()
                .find(fantoccini::Locator::Css(&format!(
                    "#fix-{fix_id} button.approve"
                )))
                .await?
                .click()
                .await
        })
        .expect("click approve");
    };
    // Unauthenticated: the token form, and nothing of the store.
    b.goto(&base(&info));
    assert_eq!(
        b.js("return document.querySelectorAll('form.login #token').length;"),
        1
    );
    assert_eq!(
        b.js("return document.querySelectorAll('#incidents').length;"),
        0,
        "nothing of the store before a token"
    );
    // The read token: the page shows the fix, but approving it is refused.
    assert_eq!(sign_in("read-token-1"), "read");
    approve();
    let refused = b.wait_js(
        Duration::from_secs(10),
        "const h = document.getElementById('error'); return h && h.textContent;",
    );
    assert_eq!(
        refused.as_ref().and_then(Value::as_str),
        Some("403 Forbidden")
    );
    let still = api(&format!("/fixes/{fix_id}"));
    assert_eq!(still["status"], "awaiting_approval");
    assert_eq!(
        git(&project, &["rev-parse", "HEAD"]),
        head,
        "nothing merged"
    );
    // Sign out (the cookie is HttpOnly: only the server can end it), then the write token.
    b.goto(&base(&info));
    assert_eq!(
        b.js("return document.cookie;"),
        "",
        "the session cookie is HttpOnly"
    );
    b.run(async {
        b.client()
            .find(fantoccini::Locator::Css("form[action='/ui/logout'] button"))
            .await?
            .click()
            .await
    })
    .expect("sign out");
    assert_eq!(sign_in("write-token-1"), "write");
    approve();
    let shown = b.wait_js(
        Duration::from_secs(30),
        &format!(
            "const s = document.getElementById('fix-{fix_id}');\
             return s && s.getAttribute('data-status') === 'success' && s.textContent.includes('merged');"
        ),
    );
    assert!(shown.is_some(), "the incident page shows the fix merged");
    let merged = api(&format!("/fixes/{fix_id}"));
    assert_eq!(
        (merged["status"].as_str(), merged["merged"].as_bool()),
        (Some("success"), Some(true))
    );
    assert_eq!(
        git(&project, &["rev-parse", "HEAD"]),
        fix["git_fix_ref"].as_str().unwrap()
    );
    drop(b);
    assert!(d.term(Duration::from_secs(10)).success());
}
