//! A zero-downtime upgrade under load: a new gateway started with the same
//! command line plus `--upgrade` takes the listening sockets of the running
//! one when it gets SIGQUIT; the old one finishes what is in flight and
//! exits. Steady load across the switch: HTTP/1.1 keep-alive, HTTP/2
//! (h2c on the internal listener), a new connection per request, and slow
//! requests in flight. No request may fail, and the new process serves
//! afterwards. Prints the latency before, during and after the switch.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use unitgate_tests::gateway::{Gateway, GatewayArgs, Units};
use wiremock::matchers::path;
use wiremock::{Mock, ResponseTemplate};

/// One request of the load: when it was sent, how long it took, what kind
/// it was and whether it failed (with why).
#[derive(Debug, Clone)]
struct Sample {
    sent: Instant,
    took: Duration,
    kind: &'static str,
    error: Option<String>,
}

/// Send requests with `client` to `url` until `stop`: each one's sample.
fn load(
    kind: &'static str,
    client: reqwest::Client,
    url: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Sample>> {
    tokio::spawn(async move {
        let mut log = Vec::new();
        for i in 0..1_000_000u32 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let sent = Instant::now();
            let r = client
                .get(&url)
                .header("x-user-id", (i % 100).to_string())
                .send()
                .await;
            let error = match r {
                Ok(r) if r.status() == 200 => r.bytes().await.err().map(|e| e.to_string()),
                Ok(r) => Some(format!("status {}", r.status())),
                Err(e) => Some(format!("{e:?}")),
            };
            log.push(Sample {
                sent,
                took: sent.elapsed(),
                kind,
                error,
            });
        }
        log
    })
}

fn p99(samples: &[&Sample]) -> Duration {
    let mut t: Vec<Duration> = samples.iter().map(|s| s.took).collect();
    common::quantile(&mut t, 0.99)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upgrade_under_load_fails_no_request_and_the_new_process_serves() {
    let units = Units::start().await;
    for ((_, service), server) in &units.servers {
        if service == "orders" {
            Mock::given(path("/orders/slow"))
                .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(1500)))
                .with_priority(1)
                .mount(server)
                .await;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let topo = dir.path().join("topology.yaml");
    std::fs::write(&topo, units.topology(&[])).unwrap();
    let mut gw = Gateway::start(
        Path::new(common::BIN),
        GatewayArgs {
            topology_file: Some(topo),
            region: Some("cn-north".into()),
            dc: Some("bj-a".into()),
            ..GatewayArgs::default()
        },
    )
    .await
    .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let keepalive = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        tasks.push(load(
            "http/1.1 keep-alive",
            keepalive.clone(),
            gw.url("/orders/1"),
            stop.clone(),
        ));
        tasks.push(load(
            "h2",
            h2.clone(),
            gw.internal_url("/orders/1"),
            stop.clone(),
        ));
        tasks.push(load(
            "slow",
            keepalive.clone(),
            gw.url("/orders/slow"),
            stop.clone(),
        ));
    }
    tasks.push(load(
        "new connection",
        fresh.clone(),
        gw.url("/orders/1"),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The successor: same command line plus --upgrade. It loads its
    // topology, then waits for the sockets.
    let new_log = gw.state_dir.path().join("successor.log");
    let successor = gw.upgrade(&new_log).unwrap();
    let waiting = Instant::now();
    while !std::fs::read_to_string(&new_log)
        .unwrap_or_default()
        .contains("waiting for the running gateway's sockets")
    {
        assert!(
            waiting.elapsed() < Duration::from_secs(30),
            "successor never ready: {}",
            std::fs::read_to_string(&new_log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let quit = Instant::now();
    gw.signal("QUIT");
    let status = tokio::task::block_in_place(|| gw.wait_exit(Duration::from_secs(40)));
    let exited = Instant::now();
    assert_eq!(
        status.map(|s| s.code()),
        Some(Some(0)),
        "old process: {}",
        gw.log_tail()
    );
    gw.adopt(successor, new_log);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut log = Vec::new();
    for t in tasks {
        log.extend(t.await.unwrap());
    }

    let failed: Vec<&Sample> = log.iter().filter(|s| s.error.is_some()).collect();
    let window = |from: Instant, to: Instant| -> Vec<&Sample> {
        log.iter()
            .filter(|s| s.sent >= from && s.sent < to)
            .collect()
    };
    let start = log.iter().map(|s| s.sent).min().unwrap();
    let end = Instant::now();
    let (before, during, after) = (
        window(start, quit),
        window(quit, exited),
        window(exited, end),
    );
    println!(
        "upgrade: {} requests, {} failed; the old process exited {:?} after SIGQUIT; p99 before {:?} ({} requests), during {:?} ({}), after {:?} ({})",
        log.len(),
        failed.len(),
        exited - quit,
        p99(&before),
        before.len(),
        p99(&during),
        during.len(),
        p99(&after),
        after.len()
    );
    for kind in ["http/1.1 keep-alive", "h2", "slow", "new connection"] {
        let n = log.iter().filter(|s| s.kind == kind).count();
        let across = log
            .iter()
            .filter(|s| s.kind == kind && s.sent < quit && s.sent + s.took > quit)
            .count();
        // The old process closes its listeners 5 s after the SIGQUIT.
        let closing = quit + Duration::from_secs(5);
        let at_close = log
            .iter()
            .filter(|s| s.kind == kind && s.sent < closing && s.sent + s.took > closing)
            .count();
        println!(
            "  {kind}: {n} requests, {across} in flight at the SIGQUIT, {at_close} when the old process closed its listeners"
        );
        assert!(n > 0, "{kind} ran");
    }
    assert!(
        failed.is_empty(),
        "failed: {:?}",
        &failed[..failed.len().min(5)]
    );
    assert!(
        !during.is_empty() && !after.is_empty(),
        "load ran across the switch"
    );

    // The new process serves: a request and its readiness.
    assert_serves(&gw).await;
    assert!(
        std::fs::read_to_string(gw.state_dir.path().join("successor.log"))
            .unwrap()
            .contains("unitgate serving")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigquit_that_no_successor_answers_leaves_the_gateway_serving() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut gw = common::start(units.topology(&[]), dir.path()).await;
    gw.signal("QUIT");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !gw.log_tail().contains("still serving") {
        assert!(Instant::now() < deadline, "{}", gw.log_tail());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        tokio::task::block_in_place(|| gw.wait_exit(Duration::ZERO)),
        None
    );
    assert_serves(&gw).await;
}

/// The gateway answers a routed request and is ready.
async fn assert_serves(gw: &Gateway) {
    let r = unitgate_tests::gateway::client()
        .get(gw.url("/orders/1"))
        .header("host", "api.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(gw.admin("/readyz").await.0, 200, "{}", gw.log_tail());
}
