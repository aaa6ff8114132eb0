//! The metrics as an operator's Prometheus sees them: a real Prometheus
//! server (Debian's `prometheus`, on a free loopback port with a generated
//! config) scrapes a running gateway, and a PromQL query of the request
//! counter equals the requests sent; `promtool check metrics` accepts the
//! exposition; the series of a route deleted from the topology go away.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use unitgate_tests::free_port;
use unitgate_tests::gateway::{client, Gateway, Units};

/// A Prometheus server scraping one target every 500 ms; killed on drop.
struct Prometheus {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn scraping(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 500ms, evaluation_interval: 500ms}}\n\
                 scrape_configs:\n\
                 - job_name: unitgate\n  \
                   static_configs: [{{targets: ['{target}']}}]\n"
            ),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus on PATH (scripts/install-deps installs it)");
        Prometheus {
            child,
            addr,
            _dir: dir,
        }
    }

    /// The value of an instant PromQL query with one result, if it has one.
    async fn value(&self, query: &str) -> Option<f64> {
        let url = format!("http://{}/api/v1/query", self.addr);
        let r = client()
            .get(url)
            .query(&[("query", query)])
            .send()
            .await
            .ok()?;
        let v: Value = r.json().await.ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn get(gw: &Gateway, path: &str) -> u16 {
    let r = client()
        .get(gw.url(path))
        .header("host", "api.example.com")
        .header("x-user-id", "30");
    r.send().await.unwrap().status().as_u16()
}

async fn exposition(gw: &Gateway) -> String {
    let (status, text) = gw.admin("/metrics").await;
    assert_eq!(status, 200);
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_counts_the_requests_sent_and_promtool_accepts_the_exposition() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = common::start_with(units.topology(&[]), dir.path(), "access_log = \"off\"\n").await;
    const SENT: usize = 25;
    for i in 0..SENT {
        assert_eq!(get(&gw, &format!("/orders/{i}")).await, 200);
    }
    let prom = Prometheus::scraping(&gw.admin.to_string());
    // The counter, and the histograms agreeing with it.
    let queries = [
        r#"sum(unitgate_requests_total{listener="public",route="orders"})"#,
        r#"sum(unitgate_request_duration_seconds_count{listener="public",route="orders"})"#,
        r#"sum(unitgate_upstream_duration_seconds_count{unit="bj-2",service="orders"})"#,
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    for query in queries {
        while prom.value(query).await != Some(SENT as f64) {
            let now = prom.value(query).await;
            assert!(
                Instant::now() < deadline,
                "{query} never became {SENT}: {now:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert_eq!(prom.value("unitgate_build_info").await, Some(1.0));
    assert!(prom.value("process_resident_memory_bytes").await.unwrap() > 1e6);

    let text = exposition(&gw).await;
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool on PATH");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}"
    );
    // Every counter is a counter named _total.
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let (name, kind) = line[7..].split_once(' ').unwrap();
        assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_series_of_a_deleted_route_go_away_with_it() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = "routes/extra: {hosts: [\"*.example.com\"], path_prefix: /extra, service: orders, policy: shard}\n";
    let topology = format!("{}\n{extra}", units.topology(&[]));
    let gw = common::start_with(topology, dir.path(), "access_log = \"off\"\n").await;
    assert_eq!(get(&gw, "/extra/1").await, 200);
    // Counted when the request ends, just after its answer.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !exposition(&gw).await.contains("route=\"extra\"") {
        assert!(
            Instant::now() < deadline,
            "the route's series never appeared"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The route is deleted: the file source picks the change up.
    std::fs::write(dir.path().join("topology.yaml"), units.topology(&[])).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while exposition(&gw).await.contains("route=\"extra\"") {
        assert!(
            Instant::now() < deadline,
            "the deleted route's series stayed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get(&gw, "/extra/1").await, 404);
}
