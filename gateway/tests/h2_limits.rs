//! HTTP/2 limits, probed with raw frames as an attacker would send them:
//! rapid reset (CVE-2023-44487), SETTINGS and PING floods, an HPACK table
//! size beyond the advertised one, a header block never finished, a
//! header list over the size limit, the per-address connection limit on
//! TLS, a body over the route's limit, a response dribbled out a byte at a
//! time by WINDOW_UPDATEs of 1 (CVE-2019-9511). Each flood ends with the
//! connection closed and counted, while a well-behaved client is served
//! throughout.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;
use unitgate_tests::gateway::{Gateway, Units};
use unitgate_tests::proto::{Proto, SendVia};
use wiremock::matchers::path;
use wiremock::{Mock, ResponseTemplate};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

const DATA: u8 = 0x0;
const SETTINGS: u8 = 0x4;
const HEADERS: u8 = 0x1;
const WINDOW_UPDATE: u8 = 0x8;
const RST_STREAM: u8 = 0x3;
const PING: u8 = 0x6;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// An HPACK block for `GET /orders/1` to api.example.com as user 42
/// (static-table entries and literals without indexing).
fn request_block(prefix: &[u8]) -> Vec<u8> {
    request_block_for("/orders/1", prefix)
}

/// The same for `GET <path>` (under 127 bytes).
fn request_block_for(path: &str, prefix: &[u8]) -> Vec<u8> {
    let mut b = prefix.to_vec();
    b.extend_from_slice(&[0x82, 0x86]); // :method GET, :scheme http
    b.push(0x04); // :path, literal
    b.push(path.len() as u8);
    b.extend_from_slice(path.as_bytes());
    b.push(0x01); // :authority, literal
    b.push(15);
    b.extend_from_slice(b"api.example.com");
    b.push(0x00); // new name, literal
    b.push(9);
    b.extend_from_slice(b"x-user-id");
    b.push(2);
    b.extend_from_slice(b"42");
    b
}

/// Write `frames` until the gateway stops taking them; then read until it
/// closes. `true` if it closed within 10 s.
async fn flood_until_closed<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    frames: impl Iterator<Item = Vec<u8>>,
) -> bool {
    for f in frames {
        if s.write_all(&f).await.is_err() {
            break;
        }
    }
    let _ = s.flush().await;
    let mut buf = vec![0u8; 64 * 1024];
    let closed = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .is_ok()
}

async fn h2c(gw: &Gateway) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(gw.internal).await.unwrap();
    s.write_all(PREFACE).await.unwrap();
    s.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    s
}

async fn metric(gw: &Gateway, needle: &str) -> u64 {
    let m = gw.admin("/metrics").await.1;
    m.lines()
        .find(|l| l.starts_with(needle))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The well-behaved client: an HTTP/2 GET over TLS answered 200.
async fn served(gw: &Gateway) -> bool {
    gw.http()
        .get(gw.url("/orders/1"))
        .header("host", "api.example.com")
        .header("x-user-id", "42")
        .send_via(gw.proto)
        .await
        .is_ok_and(|r| r.status() == 200 && r.version() == reqwest::Version::HTTP_2)
}

async fn start(units: &Units, dir: &std::path::Path, config: &str) -> Gateway {
    common::start_proto(units.topology(&[]), dir, config, Proto::H2).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_closes_the_connection_within_its_budget() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    // 10, under the h2 library's own limit of 20 streams reset before they
    // were accepted: with a larger budget, that limit may close the
    // connection first (how the flood's bytes arrive decides), and the
    // guard's refusal is not counted.
    let gw = start(&units, dir.path(), "h2_max_resets = 10\n").await;
    let mut s = h2c(&gw).await;
    // Open a stream and reset it at once, 2,000 times.
    let frames = (0..2_000u32).flat_map(|i| {
        let id = 2 * i + 1;
        [
            frame(HEADERS, END_HEADERS | END_STREAM, id, &request_block(&[])),
            frame(RST_STREAM, 0, id, &8u32.to_be_bytes()), // CANCEL
        ]
    });
    assert!(flood_until_closed(&mut s, frames).await, "not closed");
    assert_eq!(
        metric(
            &gw,
            r#"unitgate_edge_refused_total{listener="internal",reason="h2_resets"}"#
        )
        .await,
        1
    );
    // Far fewer than 2,000 requests reached the unit: at most the budget
    // and the streams in flight.
    let reached = units.received("bj-2", "orders").await.len();
    assert!(reached <= 10 + 100, "{reached} requests reached the unit");
    assert!(served(&gw).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_and_ping_floods_are_cut_off() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = start(&units, dir.path(), "").await;
    let mut s = h2c(&gw).await;
    let settings = (0..10_000).map(|_| frame(SETTINGS, 0, 0, &[]));
    assert!(flood_until_closed(&mut s, settings).await, "SETTINGS flood");
    let mut s = h2c(&gw).await;
    let pings = (0..10_000u64).map(|i| frame(PING, 0, 0, &i.to_be_bytes()));
    assert!(flood_until_closed(&mut s, pings).await, "PING flood");
    assert_eq!(
        metric(
            &gw,
            r#"unitgate_edge_refused_total{listener="internal",reason="h2_control"}"#
        )
        .await,
        2
    );
    // The same on the public listener, over TLS.
    let ca = gw.ca.clone().unwrap();
    let cert = native_tls::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    let connector = native_tls::TlsConnector::builder()
        .add_root_certificate(cert)
        .disable_built_in_roots(true)
        .request_alpns(&["h2"])
        .build()
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(gw.public).await.unwrap();
    let mut tls = tokio_native_tls::TlsConnector::from(connector)
        .connect("api.example.com", tcp)
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().negotiated_alpn().unwrap().as_deref(),
        Some(&b"h2"[..])
    );
    tls.write_all(PREFACE).await.unwrap();
    let pings = (0..10_000u64).map(|i| frame(PING, 0, 0, &i.to_be_bytes()));
    assert!(
        flood_until_closed(&mut tls, pings).await,
        "PING flood over TLS"
    );
    assert_eq!(
        metric(
            &gw,
            r#"unitgate_edge_refused_total{listener="public",reason="h2_control"}"#
        )
        .await,
        1
    );
    assert!(served(&gw).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpack_tables_header_blocks_and_lists_are_bounded() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = start(&units, dir.path(), "header_timeout_ms = 500\n").await;

    // A client that asks for a 2 GiB HPACK table (for the gateway's
    // encoder) is still answered: the encoder keeps its own cap.
    let mut s = tokio::net::TcpStream::connect(gw.internal).await.unwrap();
    s.write_all(PREFACE).await.unwrap();
    let mut huge_table = vec![0x00, 0x01]; // SETTINGS_HEADER_TABLE_SIZE
    huge_table.extend_from_slice(&(1u32 << 31).to_be_bytes());
    s.write_all(&frame(SETTINGS, 0, 0, &huge_table))
        .await
        .unwrap();
    s.write_all(&frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &request_block(&[]),
    ))
    .await
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let answered = tokio::time::timeout(Duration::from_secs(5), async {
        // A HEADERS frame on stream 1 back.
        loop {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed");
            got.extend_from_slice(&buf[..n]);
            let mut at = 0;
            while got.len() >= at + 9 {
                let len = (usize::from(got[at]) << 16)
                    | (usize::from(got[at + 1]) << 8)
                    | usize::from(got[at + 2]);
                if got[at + 3] == HEADERS && got[at + 8] == 1 {
                    return;
                }
                at += 9 + len;
            }
        }
    })
    .await;
    assert!(answered.is_ok(), "no answer");

    // A header block that updates the decoder's table beyond the 4 KiB
    // advertised: a compression error, the connection closed.
    let mut s = h2c(&gw).await;
    // Dynamic table size update to 1 MiB: 001xxxxx with the 5-bit prefix.
    let mut update = vec![0x3f];
    let mut v = (1usize << 20) - 31;
    while v >= 128 {
        update.push((v % 128 + 128) as u8);
        v /= 128;
    }
    update.push(v as u8);
    let block = request_block(&update);
    let f = std::iter::once(frame(HEADERS, END_HEADERS | END_STREAM, 1, &block));
    assert!(
        flood_until_closed(&mut s, f).await,
        "table update beyond the limit"
    );

    // A header block never finished (HEADERS without END_HEADERS, no
    // CONTINUATION): closed at the head timeout.
    let mut s = h2c(&gw).await;
    let f = std::iter::once(frame(HEADERS, END_STREAM, 1, &request_block(&[])));
    assert!(flood_until_closed(&mut s, f).await, "unfinished block");
    assert_eq!(
        metric(
            &gw,
            r#"unitgate_edge_refused_total{listener="internal",reason="h2_timeout"}"#
        )
        .await,
        1
    );
    // A header list over max_header_bytes (32 KiB) never reaches a unit.
    let before = units.received("bj-2", "orders").await.len();
    let r = gw
        .http()
        .get(gw.url("/orders/1"))
        .header("host", "api.example.com")
        .header("x-user-id", "42")
        .header("x-big", "a".repeat(40 * 1024))
        .send_via(gw.proto)
        .await;
    assert!(r.as_ref().map_or(true, |r| r.status() != 200), "{r:?}");
    assert_eq!(units.received("bj-2", "orders").await.len(), before);
    assert!(served(&gw).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_address_connection_limit_holds_before_the_tls_handshake() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = start(&units, dir.path(), "max_connections_per_ip = 2\n").await;
    let a = tokio::net::TcpStream::connect(gw.public).await.unwrap();
    let b = tokio::net::TcpStream::connect(gw.public).await.unwrap();
    let mut c = tokio::net::TcpStream::connect(gw.public).await.unwrap();
    let mut buf = [0u8; 8];
    // Refused on accept; the wait is long because, about one run in ten,
    // a gateway just started took more than 5 s to reach its accepts
    // (cause not found). Being refused is what the metric below checks.
    let n = tokio::time::timeout(Duration::from_secs(15), c.read(&mut buf))
        .await
        .expect("the third connection is closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(gw
        .admin("/metrics")
        .await
        .1
        .contains(r#"unitgate_connections_refused_total{limit="ip",listener="public"} 1"#));
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_413_over_http2_too() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = start(&units, dir.path(), "max_body_bytes = 1024\n").await;
    let r = gw
        .http()
        .post(gw.url("/orders/1"))
        .header("host", "api.example.com")
        .header("x-user-id", "42")
        .body(vec![b'a'; 4096])
        .send_via(gw.proto)
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 413);
    assert!(units.received("bj-2", "orders").await.is_empty());
    assert!(served(&gw).await);
}

/// The size of the body `/orders/big` answers with.
const BIG: usize = 4 << 20;

/// User 42's home (bj-2's orders) answers `/orders/big` with [`BIG`] bytes.
async fn serve_big_body(units: &Units) {
    Mock::given(path("/orders/big"))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(vec![b'x'; BIG]))
        .with_priority(1)
        .mount(units.get("bj-2", "orders"))
        .await;
}

/// Read the gateway's frames until it closes the connection: `headers`
/// is told when stream 1's answer starts; the DATA bytes of stream 1.
async fn read_frames(mut r: impl AsyncRead + Unpin, headers: oneshot::Sender<()>) -> usize {
    let mut headers = Some(headers);
    let (mut got, mut data) = (Vec::new(), 0);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return data,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        while got.len() >= 9 {
            let len =
                (usize::from(got[0]) << 16) | (usize::from(got[1]) << 8) | usize::from(got[2]);
            if got.len() < 9 + len {
                break;
            }
            let stream = u32::from_be_bytes([got[5], got[6], got[7], got[8]]) & 0x7fff_ffff;
            match (got[3], stream) {
                (HEADERS, 1) => {
                    if let Some(tx) = headers.take() {
                        let _ = tx.send(());
                    }
                }
                (DATA, 1) => data += len,
                _ => {}
            }
            got.drain(..9 + len);
        }
    }
}

/// `/orders/big` as user 42 with the `h2` library's default windows
/// (64 KiB: a WINDOW_UPDATE for every 32 KiB or so read, per stream and
/// per connection): the body bytes received.
async fn download_big(gw: &Gateway) -> usize {
    let tcp = tokio::net::TcpStream::connect(gw.internal).await.unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("http://api.example.com/orders/big")
        .header("x-user-id", "42")
        .body(())
        .unwrap();
    let (answer, _) = client.send_request(req, true).unwrap();
    let answer = answer.await.unwrap();
    assert_eq!(answer.status(), 200);
    let mut body = answer.into_body();
    let mut got = 0;
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        got += chunk.len();
        body.flow_control().release_capacity(chunk.len()).unwrap();
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_update_dribbles_are_cut_off_and_downloads_are_not() {
    let units = Units::start().await;
    serve_big_body(&units).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = start(&units, dir.path(), "h2_max_control_frames = 50\n").await;
    // A client with stream windows of 0 asks for 4 MiB, then lets the
    // answer out a byte at a time: each WINDOW_UPDATE of 1 makes the
    // gateway send a DATA frame of one byte.
    let (r, mut w) = tokio::net::TcpStream::connect(gw.internal)
        .await
        .unwrap()
        .into_split();
    w.write_all(PREFACE).await.unwrap();
    let initial_window_0 = [0x00, 0x04, 0, 0, 0, 0];
    w.write_all(&frame(SETTINGS, 0, 0, &initial_window_0))
        .await
        .unwrap();
    let block = request_block_for("/orders/big", &[]);
    w.write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &block))
        .await
        .unwrap();
    let (tx, answered) = oneshot::channel();
    let reader = tokio::spawn(read_frames(r, tx));
    tokio::time::timeout(Duration::from_secs(10), answered)
        .await
        .expect("the answer starts")
        .unwrap();
    let one = frame(WINDOW_UPDATE, 0, 1, &1u32.to_be_bytes());
    for _ in 0..20_000 {
        if reader.is_finished() || w.write_all(&one).await.is_err() {
            break;
        }
    }
    let dribbled = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .expect("the dribbling connection is closed")
        .unwrap();
    // At most about the budget (50 bytes) went out, of 4 MiB.
    assert!(dribbled < 200, "{dribbled} bytes dribbled out");
    let control = r#"unitgate_edge_refused_total{listener="internal",reason="h2_control"}"#;
    assert_eq!(metric(&gw, control).await, 1);

    // A download with the h2 library's windows sends some 250
    // WINDOW_UPDATEs, five times the budget: served whole.
    assert_eq!(download_big(&gw).await, BIG);
    // And over TLS with reqwest's.
    let r = gw
        .http()
        .get(gw.url("/orders/big"))
        .header("host", "api.example.com")
        .header("x-user-id", "42")
        .send_via(gw.proto)
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.bytes().await.unwrap().len(), BIG);
    assert_eq!(metric(&gw, control).await, 1);
    assert!(served(&gw).await);
}
