//! Request smuggling shapes, one case each, over raw sockets: every
//! ambiguous or malformed framing is refused with the JSON 400 of the wire
//! contract (never the framework's bare 400) and no request reaches a unit
//! whole. (A chunk error found mid-body, after the head went upstream,
//! aborts the upstream request: the unit sees a cut-off body and a closed
//! connection.)
//! A plain `Content-Length` body and a plain chunked body still pass.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{public, start_with, total_received};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use unitgate_tests::gateway::Units;

const LINE: &str = "POST /orders/1 HTTP/1.1\r\nhost: api.example.com\r\nx-user-id: 42\r\n";

/// (shape, the bytes after the request line and the two headers above).
const SHAPES: &[(&str, &str)] = &[
    (
        "Content-Length with Transfer-Encoding",
        "content-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "Transfer-Encoding with Content-Length after it",
        "transfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n0\r\n\r\n",
    ),
    (
        "two different Content-Length values",
        "content-length: 4\r\ncontent-length: 5\r\n\r\nabcde",
    ),
    ("a Content-Length list", "content-length: 4, 5\r\n\r\nabcde"),
    ("a signed Content-Length", "content-length: +4\r\n\r\nabcd"),
    ("a hex Content-Length", "content-length: 0x4\r\n\r\nabcd"),
    (
        "a coding before chunked",
        "transfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "identity as the coding",
        "transfer-encoding: identity\r\n\r\n",
    ),
    (
        "an unknown coding",
        "transfer-encoding: xchunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "chunked twice in two headers",
        "transfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "chunked twice in one header",
        "transfer-encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "Transfer-Encoding folded onto a second line",
        "transfer-encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "a space before the colon",
        "transfer-encoding : chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "a vertical tab before the coding",
        "transfer-encoding: \x0bchunked\r\n\r\n0\r\n\r\n",
    ),
    ("a bare CR inside a header", "x-a: 1\rx-b: 2\r\n\r\n"),
    ("a NUL inside a header value", "x-a: 1\x002\r\n\r\n"),
    ("a header name that is not a token", "x[a]: 1\r\n\r\n"),
    ("a second Host", "host: evil.example.com\r\n\r\n"),
    (
        "a second user key (routed on one, the unit acting on the other)",
        "x-user-id: 80\r\ncontent-length: 0\r\n\r\n",
    ),
    (
        "a Transfer-Encoding spelled with '_' (a unit folding '_' into '-' reads it)",
        "content-length: 4\r\nTransfer_Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "a second Content-Length spelled with '_'",
        "content-length: 4\r\nContent_Length: 10\r\n\r\nabcd",
    ),
    (
        "a chunk size that overflows",
        "transfer-encoding: chunked\r\n\r\nfffffffffffffffffffff1\r\nx\r\n0\r\n\r\n",
    ),
];

/// Send `bytes` and read everything until the gateway closes.
async fn exchange(addr: &str, bytes: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_smuggling_shape_is_a_json_400_that_reaches_no_unit() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = start_with(units.topology(&[]), dir.path(), "").await;
    let addr = public(&gw);
    let mut wrong = Vec::new();
    for (shape, rest) in SHAPES {
        let text = exchange(&addr, &format!("{LINE}{rest}")).await;
        let lower = text.to_ascii_lowercase();
        let ok = text.starts_with("HTTP/1.1 400 ")
            && text.contains(r#""error":"bad_request""#)
            && lower.contains("content-type: application/json")
            && !lower.contains("server: pingora");
        if !ok {
            wrong.push(format!("{shape}: {text:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "not refused as JSON 400:\n{}",
        wrong.join("\n")
    );
    assert_eq!(
        total_received(&units).await,
        0,
        "a refused request reached a unit"
    );

    // CONNECT, which Pingora refuses before any hook: the JSON 405.
    let text = exchange(
        &addr,
        "CONNECT api.example.com:443 HTTP/1.1\r\nhost: api.example.com:443\r\n\r\n",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 405 "), "{text}");
    assert!(text.contains(r#""error":"method_not_allowed""#), "{text}");

    // The honest framings still pass.
    for honest in [
        "content-length: 4\r\nconnection: close\r\n\r\nabcd",
        "transfer-encoding: chunked\r\nconnection: close\r\n\r\n4\r\nabcd\r\n0\r\n\r\n",
    ] {
        let text = exchange(&addr, &format!("{LINE}{honest}")).await;
        assert!(text.starts_with("HTTP/1.1 200 "), "{honest:?}: {text}");
    }
    assert_eq!(total_received(&units).await, 2);
}
