//! The admin listener's status page in a real browser: headless Chromium
//! (Debian's `chromium`, driven over WebDriver by Debian's
//! `chromedriver`) loads `/` of a gateway on a real etcd. The page loads
//! with no console errors, shows the tree of regions, datacenters and
//! units, the registered gateway as up to date, and a datacenter as
//! drained within 2 s of its drain key being written. With
//! `UNITGATE_SCREENSHOT=<path>` it saves a screenshot (`docs/status-page.png`).
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use unitgate_tests::gateway::{client, Gateway, GatewayArgs, Units};
use unitgate_tests::{eventually, free_port, Etcd};

const BIN: &str = env!("CARGO_BIN_EXE_unitgate");

/// A chromedriver on a free loopback port, and one headless Chromium
/// session; both ended on drop.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver on PATH (scripts/install-deps installs chromium-driver)");
        let base = format!("http://127.0.0.1:{port}");
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1200,1400",
        ]
        .iter()
        .map(|a| a.to_string())
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let deadline = Instant::now() + Duration::from_secs(30);
        let session = loop {
            let r = client()
                .post(format!("{base}/session"))
                .json(&caps)
                .send()
                .await;
            if let Ok(r) = r {
                let v: Value = r.json().await.unwrap();
                match v["value"]["sessionId"].as_str() {
                    Some(id) => break id.to_owned(),
                    None => panic!("no browser session: {v}"),
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        Browser {
            driver,
            base,
            session,
            _profile: profile,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = client().request(method.clone(), url);
        if method != reqwest::Method::GET {
            request = request.json(&body);
        }
        let v: Value = request.send().await.unwrap().json().await.unwrap();
        assert!(v["value"].get("error").is_none(), "WebDriver {path}: {v}");
        v["value"].clone()
    }

    async fn open(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    /// The value of `script` (a function body) in the page.
    async fn eval(&self, script: &str) -> Value {
        let body = json!({ "script": script, "args": [] });
        self.call(reqwest::Method::POST, "/execute/sync", body)
            .await
    }

    /// The browser's console lines at SEVERE (errors) since the last call.
    async fn console_errors(&self) -> Vec<Value> {
        let logs = self
            .call(reqwest::Method::POST, "/se/log", json!({"type": "browser"}))
            .await;
        logs.as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|l| l["level"] == "SEVERE")
            .collect()
    }

    async fn screenshot(&self, path: &Path) {
        use base64::Engine;
        let v = self
            .call(reqwest::Method::GET, "/screenshot", Value::Null)
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

async fn epoch(gw: &Gateway) -> i64 {
    gw.status().await["epoch"].as_i64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_a_drain_within_two_seconds_and_logs_no_errors() {
    let etcd = Etcd::start().await.unwrap();
    let units = Units::start().await;
    let kv = config_center::kv::parse_document(&units.topology(&[]), "t").unwrap();
    let first = etcd.put_all(&kv).await.unwrap();
    let args = GatewayArgs {
        etcd: Some(etcd.endpoint()),
        region: Some("cn-north".into()),
        dc: Some("bj-a".into()),
        extra: vec!["--access-log".into(), "off".into()],
        ..GatewayArgs::default()
    };
    let gw = Gateway::start(Path::new(BIN), args).await.unwrap();
    eventually!(
        Duration::from_secs(10),
        epoch(&gw).await >= first,
        "topology applied"
    );
    // Some traffic, so the shares show.
    for user in ["10", "30", "60", "80"] {
        let r = client()
            .get(gw.url("/orders/1"))
            .header("host", "api.example.com")
            .header("x-user-id", user);
        assert_eq!(r.send().await.unwrap().status(), 200);
    }

    let browser = Browser::start().await;
    browser.open(&gw.admin_url("/")).await;
    let state = "const d = document.querySelector('[data-dc=\"sh-a\"]'); return d ? d.dataset.state : null;";
    let deadline = Instant::now() + Duration::from_secs(15);
    while browser.eval(state).await != "active" {
        if Instant::now() > deadline {
            let text = browser.eval("return document.body.innerText;").await;
            let errors = browser.console_errors().await;
            panic!("the page never showed sh-a: {text}\nconsole errors: {errors:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The tree: every unit under its datacenter, under its region.
    let tree = browser
        .eval("return [...document.querySelectorAll('[data-region] [data-dc] [data-unit]')].map(u => u.closest('[data-region]').dataset.region + '/' + u.closest('[data-dc]').dataset.dc + '/' + u.dataset.unit);")
        .await;
    let tree: Vec<&str> = tree
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for want in [
        "cn-north/bj-a/bj-1",
        "cn-north/bj-b/bj-2",
        "cn-north/bj-b/ct-1",
        "cn-east/sh-a/sh-1",
    ] {
        assert!(tree.contains(&want), "{want} not in {tree:?}");
    }
    // This gateway, registered and up to date.
    let id = gw.status().await["id"].as_str().unwrap().to_owned();
    let registered = format!(
        "const r = document.querySelector('[data-gateway=\"{id}\"]'); return r ? r.textContent : null;"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while !browser
        .eval(&registered)
        .await
        .as_str()
        .is_some_and(|t| t.contains("applied"))
    {
        assert!(
            Instant::now() < deadline,
            "the gateway never showed as applied"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The one key ops write: sh-a drained, seen within 2 s.
    let drain = r#"{"reason":"maintenance","by":"ops","until":null}"#;
    etcd.put("drain/dc/sh-a", drain).await.unwrap();
    let written = Instant::now();
    loop {
        if browser.eval(state).await == "drained" {
            break;
        }
        assert!(
            written.elapsed() < Duration::from_secs(2),
            "sh-a not shown drained within 2 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let shown = written.elapsed();
    let text = browser
        .eval("return document.querySelector('[data-dc=\"sh-a\"]').textContent;")
        .await;
    assert!(text.as_str().unwrap().contains("maintenance"), "{text}");
    eprintln!("drain shown {shown:?} after the key was written");
    if let Some(path) = std::env::var_os("UNITGATE_SCREENSHOT") {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        browser.screenshot(Path::new(&path)).await;
    }
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:?}");
}
