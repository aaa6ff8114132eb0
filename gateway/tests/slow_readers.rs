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
