//! Clients that do not read their answers, as an attacker would be one: an
//! HTTP/2 client that never opens its flow-control window, an HTTP/1.1
//! client that never reads its socket, each asking for a large answer. The
//! response is ended once it made no progress for `send_timeout_ms` (the
//! HTTP/2 stream reset, the HTTP/1.1 connection closed), counted, and the
//! upstream's answer is not read on.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use unitgate_tests::eventually;
use unitgate_tests::gateway::{Gateway, Units};
use wiremock::matchers::path;
use wiremock::{Mock, ResponseTemplate};

/// The large answer of every unit's `orders`, bytes.
const BIG: usize = 32 << 20;

async fn units_with_a_large_answer() -> Units {
    let units = Units::start().await;
    for ((_, service), server) in &units.servers {
        if service == "orders" {
            Mock::given(path("/orders/big"))
                .respond_with(ResponseTemplate::new(200).set_body_bytes(vec![b'x'; BIG]))
                .with_priority(1)
                .mount(server)
                .await;
        }
    }
    units
}

async fn send_timeouts(gw: &Gateway, listener: &str) -> u64 {
    let needle = format!("unitgate_send_timeouts_total{{listener=\"{listener}\"}} ");
    let m = gw.admin("/metrics").await.1;
    m.lines()
        .find_map(|l| l.strip_prefix(needle.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn start(units: &Units, dir: &std::path::Path) -> Gateway {
    common::start_with(units.topology(&[]), dir, "send_timeout_ms = 1000\n").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_stream_whose_window_never_opens_is_reset_after_the_send_timeout() {
    let units = units_with_a_large_answer().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = start(&units, dir.path()).await;
    let tcp = tokio::net::TcpStream::connect(gw.internal).await.unwrap();
    // A window of 0: the client never takes a byte of any answer.
    let (mut client, conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut streams = Vec::new();
    for _ in 0..4 {
        let req = http::Request::get("http://api.example.com/orders/big")
            .header("x-user-id", "42")
            .body(())
            .unwrap();
        let (resp, _) = client.send_request(req, true).unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), resp)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), 200);
        streams.push(resp.into_body());
    }
    eventually!(
        Duration::from_secs(10),
        send_timeouts(&gw, "internal").await >= 4,
        "the stalled streams were not ended"
    );
    for mut body in streams {
        // Reset, not ended: the client knows its answer is incomplete.
        let got = tokio::time::timeout(Duration::from_secs(10), body.data()).await;
        let err = got.unwrap().unwrap().unwrap_err();
        assert_eq!(err.reason(), Some(h2::Reason::CANCEL), "{err:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_client_that_never_reads_is_closed_after_the_send_timeout() {
    let units = units_with_a_large_answer().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = start(&units, dir.path()).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(gw.public).await.unwrap();
    s.write_all(b"GET /orders/big HTTP/1.1\r\nhost: api.example.com\r\nx-user-id: 42\r\n\r\n")
        .await
        .unwrap();
    // Nothing is read until the gateway has given up on the client.
    eventually!(
        Duration::from_secs(10),
        send_timeouts(&gw, "public").await >= 1,
        "the stalled response was not ended: {}",
        gw.log_tail()
    );
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    // The connection ends (a FIN, or a reset) before the answer is whole.
    assert!(read.is_ok(), "the connection stayed open");
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        &got[..got.len().min(64)]
    );
    assert!(got.len() < BIG, "the whole answer was sent: {}", got.len());
}

/// A unit that answers every request with `size` bytes, written from one
/// static buffer as the client takes them (its memory does not grow with
/// the answers it sends); the connections open now.
async fn streaming_unit(
    size: u64,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let open = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = open.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let open = counter.clone();
            tokio::spawn(async move {
                open.fetch_add(1, Ordering::SeqCst);
                let mut head = Vec::new();
                let mut b = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&b[..n]),
                    }
                }
                let h = format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n");
                let mut left = size;
                let mut ok = s.write_all(h.as_bytes()).await.is_ok();
                while ok && left > 0 {
                    let n = left.min(CHUNK.len() as u64) as usize;
                    ok = s.write_all(&CHUNK[..n]).await.is_ok();
                    left -= n as u64;
                }
                open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (addr, open)
}

/// The sample topology with every unit's `orders` at `addr`.
fn orders_at(units: &Units, addr: std::net::SocketAddr) -> String {
    let mut topo = units.topology(&[]);
    for ((_, service), server) in &units.servers {
        if service == "orders" {
            topo = topo.replace(&server.address().to_string(), &addr.to_string());
        }
    }
    topo
}

fn rss_mb(gw: &Gateway) -> f64 {
    gw.rss_kib().unwrap_or(0) as f64 / 1024.0
}

/// By hand, on a release build (about two minutes):
/// `cargo test --release -p unitgate --test slow_readers -- --ignored --nocapture`.
/// Prints the gateway's RSS before, during and after 10 HTTP/2 connections
/// x 100 zero-window streams of a 50 MB answer, then 200 HTTP/1.1 clients
/// that never read a 500 MB answer, and how long the stalls lasted
/// (`send_timeout_ms` at its default, 30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement, run by hand"]
async fn memory_of_clients_that_do_not_read() {
    use std::sync::atomic::Ordering;
    use std::time::Instant;
    let units = Units::start().await;
    // HTTP/2: 10 connections x 100 streams that never open their window.
    let (unit, open) = streaming_unit(50_000_000).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = common::start_with(orders_at(&units, unit), dir.path(), "").await;
    let before = rss_mb(&gw);
    let started = Instant::now();
    let mut held = Vec::new();
    let mut senders = Vec::new();
    for _ in 0..10 {
        let tcp = tokio::net::TcpStream::connect(gw.internal).await.unwrap();
        let (client, conn) = h2::client::Builder::new()
            .initial_window_size(0)
            .handshake::<_, bytes::Bytes>(tcp)
            .await
            .unwrap();
        tokio::spawn(conn);
        for _ in 0..100 {
            let mut c = client.clone().ready().await.unwrap();
            let req = http::Request::get("http://api.example.com/orders/big")
                .header("x-user-id", "42")
                .body(())
                .unwrap();
            held.push(c.send_request(req, true).unwrap());
        }
        senders.push(client);
    }
    eventually!(
        Duration::from_secs(60),
        open.load(Ordering::SeqCst) >= 1000,
        "streams at the unit: {}",
        open.load(Ordering::SeqCst)
    );
    let during = rss_mb(&gw);
    eventually!(
        Duration::from_secs(90),
        send_timeouts(&gw, "internal").await >= 1000,
        "ended: {}",
        send_timeouts(&gw, "internal").await
    );
    let ended = started.elapsed();
    eventually!(
        Duration::from_secs(30),
        open.load(Ordering::SeqCst) == 0,
        "upstream connections held: {}",
        open.load(Ordering::SeqCst)
    );
    let after = rss_mb(&gw);
    eprintln!(
        "h2 1000 zero-window streams of 50 MB: rss before {before:.1} MB, during {during:.1} MB, \
         all ended {ended:.1?} after the first opened, after {after:.1} MB, upstreams released"
    );
    drop((held, senders));
    drop(gw);

    // HTTP/1.1: 200 clients that never read a 500 MB answer.
    let (unit, open) = streaming_unit(500_000_000).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = common::start_with(orders_at(&units, unit), dir.path(), "").await;
    let before = rss_mb(&gw);
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..200 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut s = socket.connect(gw.public).await.unwrap();
        s.write_all(b"GET /orders/big HTTP/1.1\r\nhost: api.example.com\r\nx-user-id: 42\r\n\r\n")
            .await
            .unwrap();
        clients.push(s);
    }
    eventually!(
        Duration::from_secs(60),
        open.load(Ordering::SeqCst) >= 200,
        "connections at the unit: {}",
        open.load(Ordering::SeqCst)
    );
    let during = rss_mb(&gw);
    eventually!(
        Duration::from_secs(90),
        send_timeouts(&gw, "public").await >= 200,
        "ended: {}",
        send_timeouts(&gw, "public").await
    );
    let ended = started.elapsed();
    eventually!(
        Duration::from_secs(30),
        open.load(Ordering::SeqCst) == 0,
        "upstream connections held: {}",
        open.load(Ordering::SeqCst)
    );
    let after = rss_mb(&gw);
    eprintln!(
        "h1 200 non-reading clients of 500 MB: rss before {before:.1} MB, during {during:.1} MB, \
         all ended {ended:.1?} after the first asked, after {after:.1} MB, upstreams released"
    );
    drop(clients);
}
