//! The admin listener against hostile clients, over raw sockets: GSLB
//! health checkers reach it in production, so it has the edge's bounds. A
//! head past `max_header_bytes` is 431 and closed, a silent or trickling
//! connection is 408 at `header_timeout_ms`, connections over
//! `admin_max_connections_per_ip` are closed on accept and counted, and a
//! flood of unfinished heads is held to the per-address limit while
//! `/healthz`, `/readyz`, `/gslb/dc/<dc>` and `/metrics` keep answering.
//! None of it is logged at ERROR. The hostile clients come from other
//! loopback addresses (127.0.0.2, .3) than the checks (127.0.0.1).
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{keepalive_status, start_with, trickle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use unitgate_tests::gateway::{Gateway, Units};

const HEAD: &str = "GET /healthz HTTP/1.1\r\nhost: gslb-checker\r\n";

/// A connection to `to` from the loopback address `from`.
async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind((from, 0).into()).unwrap();
    s.connect(to).await.unwrap()
}

/// What the gateway sends until it closes, or `within` passes: whether it
/// closed, and the text.
async fn read_until_closed(s: &mut TcpStream, within: Duration) -> (bool, String) {
    let mut out = Vec::new();
    let closed = tokio::time::timeout(within, s.read_to_end(&mut out))
        .await
        .is_ok();
    (closed, String::from_utf8_lossy(&out).into_owned())
}

fn status(text: &str) -> u16 {
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The gateway's log lines at ERROR.
fn error_lines(gw: &Gateway) -> Vec<String> {
    let log = std::fs::read_to_string(gw.state_dir.path().join("gateway.log")).unwrap();
    log.lines()
        .filter(|l| l.contains("ERROR"))
        .map(str::to_owned)
        .collect()
}

/// The admin endpoints a GSLB checker and a scraper use all answer 200.
async fn admin_answers(gw: &Gateway) {
    for path in ["/healthz", "/readyz", "/gslb/dc/bj-a", "/metrics"] {
        let (code, body) = gw.admin(path).await;
        assert_eq!(code, 200, "{path}: {body}");
    }
}

async fn metric_line(gw: &Gateway, line: &str) -> bool {
    gw.admin("/metrics").await.1.contains(line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_head_past_the_cap_is_431_and_closed() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = start_with(units.topology(&[]), dir.path(), "max_header_bytes = 4096\n").await;
    let mut s = connect_from([127, 0, 0, 2], gw.admin).await;
    s.write_all(HEAD.as_bytes()).await.unwrap();
    // 6 KiB of header in two parts, never finished.
    let filler = format!("x-fill: {}\r\n", "a".repeat(3000));
    s.write_all(filler.as_bytes()).await.unwrap();
    s.write_all(filler.as_bytes()).await.unwrap();
    let (closed, text) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(closed, "the admin listener closed the connection: {text:?}");
    assert_eq!(status(&text), 431, "{text}");
    assert!(text.contains(r#""error":"headers_too_large""#), "{text}");
    let refused = r#"unitgate_request_heads_refused_total{listener="admin",reason="too_large"} 1"#;
    assert!(metric_line(&gw, refused).await);
    admin_answers(&gw).await;
    assert_eq!(error_lines(&gw), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_trickling_admin_connections_are_408_at_the_head_deadline() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = start_with(
        units.topology(&[]),
        dir.path(),
        "header_timeout_ms = 1000\n",
    )
    .await;
    // A connection that sends nothing is closed by the head clock.
    let mut silent = connect_from([127, 0, 0, 2], gw.admin).await;
    let t0 = Instant::now();
    let (closed, text) = read_until_closed(&mut silent, Duration::from_secs(10)).await;
    let took = t0.elapsed();
    assert!(closed, "a silent admin connection was left open");
    assert_eq!(status(&text), 408, "{text}");
    assert!(text.contains(r#""error":"request_timeout""#), "{text}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    // One byte every 100 ms: the head is not done in a second.
    let mut slow = connect_from([127, 0, 0, 2], gw.admin).await;
    let drip: Vec<u8> = HEAD.bytes().cycle().take(200).collect();
    let every = Duration::from_millis(100);
    let (closed, text) = trickle(&mut slow, &drip, every, Duration::from_secs(10)).await;
    assert!(closed, "a trickling admin connection was left open");
    assert_eq!(status(&text), 408, "{text}");
    let timeouts = r#"unitgate_request_heads_refused_total{listener="admin",reason="timeout"} 2"#;
    assert!(metric_line(&gw, timeouts).await);
    admin_answers(&gw).await;
    assert_eq!(error_lines(&gw), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_connections_over_the_per_address_limit_are_refused_and_counted() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = "admin_max_connections_per_ip = 4\nheader_timeout_ms = 20000\n";
    let gw = start_with(units.topology(&[]), dir.path(), config).await;
    // Four kept-alive connections from one address, each served once (so
    // admitted), hold its four places...
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = connect_from([127, 0, 0, 2], gw.admin).await;
        s.write_all(format!("{HEAD}\r\n").as_bytes()).await.unwrap();
        assert_eq!(keepalive_status(&mut s).await, 200);
        held.push(s);
    }
    // ...so the fifth is closed before it can send anything.
    let mut fifth = connect_from([127, 0, 0, 2], gw.admin).await;
    let (closed, text) = read_until_closed(&mut fifth, Duration::from_secs(5)).await;
    assert!(closed && text.is_empty(), "refused unanswered: {text:?}");
    let refused = r#"unitgate_connections_refused_total{limit="ip",listener="admin"} 1"#;
    assert!(metric_line(&gw, refused).await);
    // Other addresses (the GSLB checker's) are served meanwhile.
    admin_answers(&gw).await;
    // A place freed is a place taken again.
    drop(held.pop());
    unitgate_tests::eventually!(
        Duration::from_secs(5),
        {
            let mut s = connect_from([127, 0, 0, 2], gw.admin).await;
            let _ = s.write_all(format!("{HEAD}\r\n").as_bytes()).await;
            let (_, text) = read_until_closed(&mut s, Duration::from_millis(200)).await;
            status(&text) == 200
        },
        "served once a place is free"
    );
    assert_eq!(error_lines(&gw), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_head_flood_on_the_admin_listener_is_held_to_the_address_limit() {
    // Default admin limits (64 per address, 32 KiB heads): 200 connections
    // from one address, each sending an unfinished 40 KiB head. At most 64
    // are held, each to the head cap, and answered 431; the rest are
    // closed on accept. Memory follows: 64 x 32 KiB, not 200 x 1 MiB.
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = start_with(
        units.topology(&[]),
        dir.path(),
        "header_timeout_ms = 20000\n",
    )
    .await;
    let n = 200;
    let mut conns = Vec::new();
    for _ in 0..n {
        conns.push(connect_from([127, 0, 0, 3], gw.admin).await);
    }
    let refused = format!(
        r#"unitgate_connections_refused_total{{limit="ip",listener="admin"}} {}"#,
        n - 64
    );
    unitgate_tests::eventually!(
        Duration::from_secs(10),
        metric_line(&gw, &refused).await,
        "all but 64 refused on accept"
    );
    admin_answers(&gw).await;
    let filler = format!("{HEAD}x-fill: {}", "a".repeat(40 * 1024));
    let answers = conns.into_iter().map(|mut s| {
        let filler = filler.clone();
        tokio::spawn(async move {
            let _ = s.write_all(filler.as_bytes()).await;
            let mut out = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut out)).await;
            status(&String::from_utf8_lossy(&out))
        })
    });
    let mut codes = Vec::new();
    for a in answers.collect::<Vec<_>>() {
        codes.push(a.await.unwrap());
    }
    assert_eq!(codes.iter().filter(|&&c| c == 431).count(), 64, "{codes:?}");
    assert_eq!(
        codes.iter().filter(|&&c| c == 0).count(),
        n - 64,
        "{codes:?}"
    );
    let too_large =
        r#"unitgate_request_heads_refused_total{listener="admin",reason="too_large"} 64"#;
    assert!(metric_line(&gw, too_large).await);
    admin_answers(&gw).await;
    assert_eq!(error_lines(&gw), Vec::<String>::new());
}
