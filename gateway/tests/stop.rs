//! Stopping a gateway as a balancer and an operator see it: on SIGTERM
//! `/readyz` answers 503 at once while the gateway serves on for
//! `shutdown_delay_s`; then new connections are refused, idle ones are
//! closed, a long request in flight finishes, the gateway leaves
//! `gateways/` and exits 0 as soon as nothing is left (not after the whole
//! grace period). A second SIGTERM stops at once.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use unitgate_tests::gateway::{client, Gateway, GatewayArgs, Units};
use unitgate_tests::{eventually, Etcd};
use wiremock::matchers::path;
use wiremock::{Mock, ResponseTemplate};

/// Units whose orders servers take `slow` to answer `/orders/slow`.
async fn units(slow: Duration) -> Units {
    let units = Units::start().await;
    for ((_, service), server) in &units.servers {
        if service == "orders" {
            Mock::given(path("/orders/slow"))
                .respond_with(
                    ResponseTemplate::new(200)
                        .set_body_string("done")
                        .set_delay(slow),
                )
                .with_priority(1)
                .mount(server)
                .await;
        }
    }
    units
}

/// A gateway on `units` from a topology file, or from `etcd`, with `flags`.
async fn gateway(units: &Units, dir: &Path, etcd: Option<String>, flags: &[&str]) -> Gateway {
    let file = dir.join("topology.yaml");
    std::fs::write(&file, units.topology(&[])).unwrap();
    let args = GatewayArgs {
        topology_file: etcd.is_none().then_some(file),
        etcd,
        region: Some("cn-north".into()),
        dc: Some("bj-a".into()),
        extra: flags.iter().map(|f| (*f).to_owned()).collect(),
        ..GatewayArgs::default()
    };
    Gateway::start(Path::new(common::BIN), args).await.unwrap()
}

/// A request that takes the slow path, sent now and answered later.
fn slow_request(gw: &Gateway) -> tokio::task::JoinHandle<Result<(u16, String), String>> {
    let req = client()
        .get(gw.url("/orders/slow"))
        .header("host", "api.example.com")
        .header("x-user-id", "42");
    tokio::spawn(async move {
        let r = req.send().await.map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        Ok((status, r.text().await.map_err(|e| e.to_string())?))
    })
}

/// A slow request, once it reached its unit: in flight at the gateway. A
/// request answered before it got there (an endpoint not yet judged
/// healthy on a loaded machine) is sent again, a few times at most.
async fn in_flight(
    gw: &Gateway,
    units: &Units,
) -> tokio::task::JoinHandle<Result<(u16, String), String>> {
    for _ in 0..5 {
        let slow = slow_request(gw);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if slow_arrived(units).await >= 1 {
                return slow;
            }
            if slow.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if !slow.is_finished() {
            panic!("the slow request never reached its unit: {}", gw.log_tail());
        }
        let answer = slow.await.unwrap();
        eprintln!("the slow request was answered before it reached a unit: {answer:?}");
    }
    panic!("no slow request reached its unit: {}", gw.log_tail());
}

async fn readyz(gw: &Gateway) -> u16 {
    client()
        .get(gw.admin_url("/readyz"))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

async fn routed_get(gw: &Gateway) -> Result<u16, reqwest::Error> {
    Ok(client()
        .get(gw.url("/orders/1"))
        .header("host", "api.example.com")
        .header("x-user-id", "42")
        .send()
        .await?
        .status()
        .as_u16())
}

/// Requests that reached the units' orders servers for `/orders/slow`.
async fn slow_arrived(units: &Units) -> usize {
    let mut n = 0;
    for (unit, service) in units.servers.keys() {
        if service == "orders" {
            let got = units.received(unit, service).await;
            n += got
                .iter()
                .filter(|r| r.url.path() == "/orders/slow")
                .count();
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_the_balancer_then_finishes_what_is_in_flight_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let units = units(Duration::from_secs(3)).await;
    let mut gw = gateway(
        &units,
        dir.path(),
        None,
        &["--shutdown-delay-s", "1", "--grace-period-s", "30"],
    )
    .await;
    assert_eq!(readyz(&gw).await, 200);
    // A long request in flight, and an idle keep-alive connection.
    let slow = in_flight(&gw, &units).await;
    let mut idle = tokio::net::TcpStream::connect(common::public(&gw))
        .await
        .unwrap();
    idle.write_all(b"GET /orders/7 HTTP/1.1\r\nhost: api.example.com\r\nx-user-id: 7\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(common::keepalive_status(&mut idle).await, 200);

    let term = Instant::now();
    gw.signal("TERM");
    // Balancers are told at once...
    eventually!(
        Duration::from_millis(500),
        readyz(&gw).await == 503,
        "/readyz 503 right after SIGTERM"
    );
    // ...while new connections are still served during the delay.
    assert_eq!(routed_get(&gw).await.unwrap(), 200);
    assert!(
        term.elapsed() < Duration::from_secs(1),
        "checked within the delay"
    );
    // After the delay the listeners are closed: a new connection is refused.
    eventually!(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(common::public(&gw))
            .await
            .is_err(),
        "new connections refused after the delay"
    );
    assert!(
        term.elapsed() >= Duration::from_secs(1),
        "refused only after shutdown_delay_s: {:?}",
        term.elapsed()
    );
    // The idle keep-alive connection is closed cleanly.
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "idle connection closed: {read:?}"
    );
    // The request in flight across the SIGTERM finishes.
    let answer = slow.await.unwrap();
    assert_eq!(answer, Ok((200, "done".to_owned())));
    // And the gateway exits 0 once nothing is left, long before the grace
    // period (30 s) ends.
    let status = tokio::task::block_in_place(|| gw.wait_exit(Duration::from_secs(10)));
    assert_eq!(
        status.map(|s| s.code()),
        Some(Some(0)),
        "exit status: {}",
        gw.log_tail()
    );
    assert!(
        term.elapsed() < Duration::from_secs(10),
        "stopped after {:?}",
        term.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_sigterm_stops_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let units = units(Duration::from_secs(20)).await;
    let mut gw = gateway(
        &units,
        dir.path(),
        None,
        &["--shutdown-delay-s", "0", "--grace-period-s", "60"],
    )
    .await;
    let slow = in_flight(&gw, &units).await;
    gw.signal("TERM");
    eventually!(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(common::public(&gw))
            .await
            .is_err(),
        "listeners closed"
    );
    // The grace period would wait for the 20 s request; a second SIGTERM
    // does not.
    assert!(
        gw.pid().is_some(),
        "still running for the request in flight"
    );
    let second = Instant::now();
    let status = tokio::task::block_in_place(|| gw.signal_and_wait("TERM", Duration::from_secs(5)));
    assert_eq!(status.map(|s| s.code()), Some(Some(0)));
    assert!(
        second.elapsed() < Duration::from_secs(3),
        "took {:?}",
        second.elapsed()
    );
    assert!(
        slow.await.unwrap().is_err(),
        "the request in flight was cut"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_gateway_leaves_gateways_at_once() {
    let etcd = Etcd::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let units = units(Duration::from_millis(10)).await;
    let kv = config_center::kv::parse_document(&units.topology(&[]), "t").unwrap();
    etcd.put_all(&kv).await.unwrap();
    let mut gw = gateway(&units, dir.path(), Some(etcd.endpoint()), &[]).await;
    let mut c = etcd.client().await.unwrap();
    let registered = |c: &mut etcd_client::Client| {
        let mut c = c.clone();
        async move {
            c.get(
                "/unitgate/gateways/",
                Some(etcd_client::GetOptions::new().with_prefix()),
            )
            .await
            .unwrap()
            .kvs()
            .len()
        }
    };
    eventually!(
        Duration::from_secs(10),
        registered(&mut c).await == 1,
        "registered"
    );
    let status =
        tokio::task::block_in_place(|| gw.signal_and_wait("TERM", Duration::from_secs(10)));
    assert_eq!(status.map(|s| s.code()), Some(Some(0)));
    // Gone when the process is, not when its lease (10 s) runs out.
    assert_eq!(
        registered(&mut c).await,
        0,
        "gateways/<id> deleted before exit"
    );
}
