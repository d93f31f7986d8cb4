//! A real browser for the dashboard's tests: Debian's `chromium` driven through
//! `chromedriver` (WebDriver) with fantoccini.
//!
//! Each [`Browser`] starts its own chromedriver on a free loopback port, in a process group
//! of its own, and a headless chromium with a temporary profile, no sandbox and no
//! background networking. Dropping it ends the WebDriver session and kills the process
//! group it started (chromedriver and the chromium it launched), by id.
//!
//! Without chromedriver the tests FAIL, saying what to install: a browser test that skips
//! itself silently proves nothing.

use std::future::Future;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Where Debian's packages put the programs (also looked up on `PATH`).
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

fn find(default: &str, name: &str) -> Option<PathBuf> {
    let d = PathBuf::from(default);
    if d.is_file() {
        return Some(d);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// A headless chromium under WebDriver, with the runtime that drives it.
pub(crate) struct Browser {
    pub(crate) rt: tokio::runtime::Runtime,
    client: Option<fantoccini::Client>,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a browser session.
    ///
    /// # Panics
    ///
    /// When chromedriver or chromium is not installed (with the command that installs
    /// them), or the browser does not start within 30 s.
    pub(crate) fn start() -> Browser {
        let (Some(driver_bin), Some(chromium)) = (
            find(CHROMEDRIVER, "chromedriver"),
            find(CHROMIUM, "chromium"),
        ) else {
            panic!(
                "the dashboard's browser tests need Debian's chromium and chromium-driver \
                 (/usr/bin/chromium, /usr/bin/chromedriver): install them with \
                 `apt-get install -y chromium chromium-driver` (.ci/run does)"
            );
        };
        let port = crate::harness::free_port();
        let profile = tempfile::tempdir().expect("profile dir");
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: dropping the browser kills chromium with it.
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut b = Browser {
            rt,
            client: None,
            driver,
            _profile: profile,
        };
        let url = format!("http://127.0.0.1:{port}");
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.to_string_lossy(),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-extensions",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", b._profile.path().display()),
                ],
            }
        });
        let caps = match caps {
            Value::Object(m) => m,
            _ => unreachable!("an object"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = b.rt.block_on(async {
            loop {
                let mut builder = fantoccini::ClientBuilder::rustls().expect("rustls");
                match builder.capabilities(caps.clone()).connect(&url).await {
                    Ok(c) => break c,
                    Err(e) => {
                        assert!(
                            Instant::now() < deadline,
                            "chromium did not start under chromedriver within 30 s: {e}"
                        );
                        // chromedriver is still starting: retry (a failure guard, not a sync).
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        b.client = Some(client);
        b
    }

    /// The WebDriver client.
    pub(crate) fn client(&self) -> &fantoccini::Client {
        self.client.as_ref().expect("a session")
    }

    /// Runs `f` on the browser's runtime.
    pub(crate) fn run<T>(&self, f: impl Future<Output = T>) -> T {
        self.rt.block_on(f)
    }

    /// Opens `url` and waits for the document to be loaded.
    pub(crate) fn goto(&self, url: &str) {
        self.run(self.client().goto(url)).expect("goto");
    }

    /// Evaluates `script` (a function body: use `return`) in the page.
    pub(crate) fn js(&self, script: &str) -> Value {
        self.run(self.client().execute(script, Vec::new()))
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Polls `script` until it returns something truthy or `within` passes.
    pub(crate) fn wait_js(&self, within: Duration, script: &str) -> Option<Value> {
        let deadline = Instant::now() + within;
        loop {
            let v = self.js(script);
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v != json!("") && v != json!(0);
            if truthy {
                return Some(v);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A PNG of the viewport.
    pub(crate) fn screenshot(&self) -> Vec<u8> {
        self.run(self.client().screenshot()).expect("screenshot")
    }

    /// Resizes the window.
    pub(crate) fn resize(&self, width: u32, height: u32) {
        self.run(self.client().set_window_size(width, height))
            .expect("resize");
    }

    /// The text of an open `alert`/`confirm`, if one is open.
    pub(crate) fn alert_text(&self) -> Option<String> {
        self.run(self.client().get_alert_text()).ok()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(5), c.close()).await });
        }
        // The group holds chromedriver and the chromium it started.
        let pgid = rustix::process::Pid::from_child(&self.driver);
        let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
