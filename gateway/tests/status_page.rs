//! The admin listener's status page in a real browser: headless Chromium
//! (Debian's `chromium`, driven over WebDriver by Debian's
//! `chromedriver`) loads `/` of a gateway on a real etcd. The page loads
//! with no console errors, shows the tree of regions, datacenters and
//! units, the share each unit served with its dyed part, the registered
//! gateway as up to date, a datacenter as drained within 2 s of its drain
//! key being written (the drain's text shown as text, never as markup),
//! and, once the gateway is gone, that what it shows is stale. With
//! `UNITGATE_SCREENSHOT=<path>` it saves a screenshot (`docs/status-page.png`).
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use unit_router::{Dye, Reason};
use unitgate_tests::gateway::{client, test_keyring, Gateway, GatewayArgs, Units};
use unitgate_tests::{eventually, free_port, Etcd};

const BIN: &str = env!("CARGO_BIN_EXE_unitgate");

/// A chromedriver on a free loopback port, and one headless Chromium
/// session; both ended on drop (the session quit, then the driver's whole
/// process group killed, Chromium included).
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
            // Its own process group: Drop kills Chromium with it.
            .process_group(0)
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
            // Nothing but loopback: no name resolves to anywhere else.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
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
        // Quit the session: Chromium exits with it.
        let url = format!("{}/session/{}", self.base, self.session);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async { client().delete(url).send().await })
        })
        .join();
        // Whatever is left of the driver's group (its pgid is its pid).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
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
        gw.epoch().await >= first,
        "topology applied"
    );
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

    // Traffic once the page holds its first sample: public requests and
    // two that arrive dyed on the internal listener (sh-1's shard 60, back
    // home from bj-2).
    for user in ["10", "30", "60", "80"] {
        let r = client()
            .get(gw.url("/orders/1"))
            .header("host", "api.example.com")
            .header("x-user-id", user);
        assert_eq!(r.send().await.unwrap().status(), 200);
    }
    let dye = Dye {
        shard: Some(60),
        home: "sh-1".into(),
        via: "bj-2".into(),
        reason: Reason::Failover,
        hops: 1,
        exp: i64::MAX,
    };
    for _ in 0..2 {
        let r = client()
            .get(gw.internal_url("/orders/9"))
            .header("host", "api.example.com")
            .header("baggage", dye.merge_into(None, &test_keyring()));
        assert_eq!(r.send().await.unwrap().status(), 200);
    }
    // Counted when each request ends, which may be just after its answer
    // reached the client.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sh1 = gw.status().await["units"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"] == "sh-1")
            .unwrap()["services"]["orders"]
            .clone();
        if sh1["dyed_total"] == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "{sh1}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // sh-1 served user 60 and the two dyed calls: 3 of 6, 2 of them dyed.
    let share = "const u = document.querySelector('[data-unit=\"sh-1\"]'); return u ? [u.dataset.share, u.dataset.dyed] : null;";
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = browser.eval(share).await;
        if v == json!(["50.0", "66.7"]) {
            break;
        }
        assert!(Instant::now() < deadline, "sh-1's share shown as {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The one key ops write: sh-a drained, seen within 2 s. Its text is
    // the operator's, shown as text.
    let drain = r#"{"reason":"maintenance <img src=x id=injected>","by":"ops-alice","until":null}"#;
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
    assert!(
        text.as_str()
            .unwrap()
            .contains("maintenance <img src=x id=injected> (by ops-alice"),
        "{text}"
    );
    let injected = browser
        .eval("return document.getElementById('injected') === null && document.querySelectorAll('img').length === 0;")
        .await;
    assert_eq!(injected, true, "the drain's text became markup");
    let row = browser
        .eval("const r = document.querySelector('[data-drain=\"drain/dc/sh-a\"]'); return r ? r.textContent : null;")
        .await;
    assert!(
        row.as_str().is_some_and(|t| t.contains("ops-alice")),
        "{row}"
    );
    eprintln!("drain shown {shown:?} after the key was written");
    if let Some(path) = std::env::var_os("UNITGATE_SCREENSHOT") {
        // The drain as an operator would write it, for the picture.
        let drain = r#"{"reason":"network maintenance","by":"ops-alice","until":null}"#;
        etcd.put("drain/dc/sh-a", drain).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        browser.screenshot(Path::new(&path)).await;
    }
    let center = browser
        .eval("return document.getElementById('center').textContent;")
        .await;
    assert!(
        !center.as_str().unwrap().contains("null"),
        "no value shown as null: {center}"
    );
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:?}");

    // The gateway gone: the page says what it shows is stale.
    let _dir = gw.kill();
    let stale = "return document.body.classList.contains('stale') ? document.getElementById('error').textContent : null;";
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = browser.eval(stale).await;
        if v.as_str().is_some_and(|t| t.contains("refresh failed")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the page never said it was stale"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
