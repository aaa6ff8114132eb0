//! The diagnostic log under load with a failover: expected conditions
//! (a pooled upstream connection taken by another request, a unit that
//! refuses connections and is failed over) are not ERRORs. A real gateway,
//! wiremock units with keep-alive connections, bj-1 down.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use unitgate_tests::gateway::{client, Units};

/// Concurrent clients × requests each: enough for the connection pool's
/// benign race (two requests reaching for the same idle connection) to
/// happen many times over.
const CLIENTS: u64 = 64;
const EACH: u64 = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failover_under_load_logs_no_error() {
    let dir = tempfile::tempdir().unwrap();
    let units = Units::start().await;
    let gw = common::start(units.topology(&["bj-1"]), dir.path()).await;
    let http = client();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (http, url) = (http.clone(), gw.url("/orders/1"));
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            for i in 0..EACH {
                // Users of every shard: bj-1's fail over, the rest go home.
                let user = (c * EACH + i) % 100;
                let r = http
                    .get(&url)
                    .header("host", "api.example.com")
                    .header("x-user-id", user.to_string())
                    .send()
                    .await
                    .unwrap();
                ok += u64::from(r.status() == 200);
            }
            ok
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap();
    }
    assert_eq!(
        ok,
        CLIENTS * EACH,
        "every request is served, failed over or not"
    );
    let (_, metrics) = gw.admin("/metrics").await;
    let failed_over: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("unitgate_requests_total") && l.contains("reason=\"failover\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        failed_over > 0.0,
        "bj-1's users were failed over:\n{metrics}"
    );
    let log = std::fs::read_to_string(&gw.log).unwrap();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(
        errors.is_empty(),
        "{} ERROR lines, the first: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
}
