//! The size and time bounds a client meets, over raw sockets: a request
//! head capped while it arrives (431) and due by a deadline however slowly
//! it trickles (408), 200 slowloris connections beside normal traffic, a
//! flood of unfinished heads within a stated memory bound, body limits
//! (413), stalled and malformed bodies (408, 400) and the route's total
//! deadline across attempts (504). Every refusal is the JSON error of the
//! wire contract and reaches no unit.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{orders_never_answer, public, raw, start_with, total_received, trickle, OkUpstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use unitgate_tests::gateway::{client, Gateway, Units};

/// Everything the gateway sends until it closes (or 15 s pass).
async fn read_all(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn status(text: &str) -> u16 {
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// This process's soft limit on open files.
fn fd_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

const HEAD: &str = "GET /orders/1 HTTP/1.1\r\nhost: api.example.com\r\nx-user-id: 42\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_growing_past_the_cap_is_431_before_it_ends() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = start_with(units.topology(&[]), dir.path(), "max_header_bytes = 4096\n").await;
    let mut s = TcpStream::connect(public(&gw)).await.unwrap();
    s.write_all(HEAD.as_bytes()).await.unwrap();
    // 6 KiB of header in two parts, never finished.
    let filler = format!("x-fill: {}\r\n", "a".repeat(3000));
    s.write_all(filler.as_bytes()).await.unwrap();
    s.write_all(filler.as_bytes()).await.unwrap();
    let text = read_all(&mut s).await;
    assert_eq!(status(&text), 431, "{text}");
    assert!(text.contains(r#""error":"headers_too_large""#), "{text}");
    assert_eq!(total_received(&units).await, 0);
    let m = gw.admin("/metrics").await.1;
    assert!(
        m.contains(
            r#"unitgate_request_heads_refused_total{listener="public",reason="too_large"} 1"#
        ),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_trickled_byte_by_byte_is_408_at_the_head_deadline() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = start_with(
        units.topology(&[]),
        dir.path(),
        "header_timeout_ms = 1000\n",
    )
    .await;
    let mut s = TcpStream::connect(public(&gw)).await.unwrap();
    let t0 = Instant::now();
    // One byte every 100 ms: never 60 s without a byte, as Pingora alone
    // would require, but the head is not done in a second.
    let drip: Vec<u8> = HEAD.bytes().cycle().take(200).collect();
    let every = Duration::from_millis(100);
    let (closed, text) = trickle(&mut s, &drip, every, Duration::from_secs(15)).await;
    assert!(closed, "the gateway closed the connection");
    assert_eq!(status(&text), 408, "{text}");
    assert!(text.contains(r#""error":"request_timeout""#), "{text}");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(6),
        "{took:?}"
    );
    // A connection that sends nothing at all is closed by the same clock.
    let mut idle = TcpStream::connect(public(&gw)).await.unwrap();
    let text = read_all(&mut idle).await;
    assert_eq!(status(&text), 408, "{text}");
    assert_eq!(total_received(&units).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keepalive_limit_shorter_than_the_head_timeout_still_gets_the_408() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Gaps between the head's bytes longer than the keep-alive limit: the
    // head is still the head guard's to bound (408 at its deadline), not
    // closed without an answer at the first long gap.
    let config = "keepalive_idle_s = 1\nheader_timeout_ms = 3000\n";
    let gw = start_with(units.topology(&[]), dir.path(), config).await;
    let mut s = TcpStream::connect(public(&gw)).await.unwrap();
    let every = Duration::from_millis(1400);
    let (closed, text) = trickle(&mut s, HEAD.as_bytes(), every, Duration::from_secs(15)).await;
    assert!(closed, "the gateway closed the connection");
    assert_eq!(status(&text), 408, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_slowloris_connections_leave_normal_traffic_served() {
    let up = OkUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = "header_timeout_ms = 2000\nmax_connections_per_ip = 1000\n";
    let gw = start_with(up.topology(), dir.path(), config).await;
    let addr = public(&gw);
    let mut slow = Vec::new();
    for _ in 0..200 {
        let addr = addr.clone();
        slow.push(tokio::spawn(async move {
            let mut s = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(&addr))
                .await
                .expect("slow connection accepted in time")
                .unwrap();
            let t0 = Instant::now();
            let drip: Vec<u8> = HEAD.bytes().cycle().take(100).collect();
            let every = Duration::from_millis(300);
            let (closed, text) = trickle(&mut s, &drip, every, Duration::from_secs(20)).await;
            (closed, status(&text), t0.elapsed())
        }));
    }
    // Normal clients meanwhile: every request answered.
    let c = client();
    let url = gw.url("/orders/1");
    let mut served = 0;
    for i in 0..100 {
        let send = c
            .get(&url)
            .header("host", "api.example.com")
            .header("x-user-id", "42")
            .send();
        let r = tokio::time::timeout(Duration::from_secs(10), send)
            .await
            .unwrap_or_else(|_| panic!("normal request {i} answered in time: {}", gw.log_tail()))
            .unwrap();
        served += usize::from(r.status() == 200);
    }
    assert_eq!(served, 100);
    for h in slow {
        let (closed, code, took) = tokio::time::timeout(Duration::from_secs(40), h)
            .await
            .expect("slow connection ended")
            .unwrap();
        assert!(closed, "a slow connection was left open ({took:?})");
        assert_eq!(code, 408);
        assert!(took < Duration::from_secs(10), "{took:?}");
    }
    assert_eq!(up.received(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_head_flood_stays_within_its_memory_bound() {
    // 1,000 connections each holding a 30 KiB head that never ends (just
    // under the 32 KiB cap): the gateway holds about the cap per
    // connection, never Pingora's 1 MiB. Bound: 96 MiB over the idle
    // gateway for the whole flood, 96 KiB a connection (measured: about
    // 60 KiB in a debug build, the connection itself included).
    let up = OkUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = "header_timeout_ms = 20000\nmax_connections_per_ip = 2000\n";
    let gw = start_with(up.topology(), dir.path(), config).await;
    let addr = public(&gw);
    let base = gw.rss_kib().unwrap();
    let filler = format!("{HEAD}x-fill: {}", "a".repeat(30 * 1024));
    // Both ends of every connection live on this machine: fewer under a
    // low file limit.
    let n = fd_limit()
        .map_or(1000, |l| l.saturating_sub(200) / 2)
        .min(1000);
    let mut conns = Vec::new();
    for _ in 0..n {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(filler.as_bytes()).await.unwrap();
        conns.push(s);
    }
    let open = format!(r#"unitgate_connections_open{{listener="public"}} {n}"#);
    unitgate_tests::eventually!(
        Duration::from_secs(10),
        gw.admin("/metrics").await.1.contains(&open),
        "all connections open"
    );
    let during = gw.rss_kib().unwrap();
    assert!(
        during.saturating_sub(base) < 96 * 1024,
        "RSS {base} KiB idle, {during} KiB during a flood of {n}"
    );
    // Then each head grows past the cap: every one is answered 431 and
    // closed, all within one overall deadline.
    let more = format!("{}\r\n", "a".repeat(4 * 1024));
    let answers = conns.into_iter().map(|mut s| {
        let more = more.clone();
        tokio::spawn(async move {
            let _ = s.write_all(more.as_bytes()).await;
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out).await;
            status(&String::from_utf8_lossy(&out))
        })
    });
    let all = tokio::time::timeout(Duration::from_secs(30), futures_join_all(answers.collect()))
        .await
        .expect("every connection answered within 30 s");
    assert_eq!(all.iter().filter(|&&c| c == 431).count(), n, "{all:?}");
    assert_eq!(up.received(), 0);
}

/// Await every task, in order.
async fn futures_join_all(tasks: Vec<tokio::task::JoinHandle<u16>>) -> Vec<u16> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_route_limit_are_413_and_stalled_or_broken_bodies_are_408_400() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let topology = units.topology(&[]).replacen(
        "  path_prefix: /orders\n",
        "  path_prefix: /orders\n  max_body_bytes: 1000\n",
        1,
    );
    let gw = start_with(topology, dir.path(), "body_read_timeout_ms = 500\n").await;
    let addr = public(&gw);
    let post = "POST /orders/1 HTTP/1.1\r\nhost: api.example.com\r\nx-user-id: 42\r\n";

    // Declared over the limit: refused before a byte of the body is read.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let req = format!("{post}content-length: 5000\r\n\r\n{}", "b".repeat(5000));
    s.write_all(req.as_bytes()).await.unwrap();
    let text = read_all(&mut s).await;
    assert_eq!(status(&text), 413, "{text}");
    assert!(text.contains(r#""error":"payload_too_large""#), "{text}");
    assert_eq!(total_received(&units).await, 0);

    // Chunked, no length declared: cut off once past the limit.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let chunk = format!("258\r\n{}\r\n", "c".repeat(600));
    let req = format!("{post}transfer-encoding: chunked\r\n\r\n{chunk}{chunk}{chunk}0\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let text = read_all(&mut s).await;
    assert_eq!(status(&text), 413, "{text}");

    // A body that stops arriving: 408 after the body read timeout.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let req = format!("{post}content-length: 100\r\n\r\n0123456789");
    s.write_all(req.as_bytes()).await.unwrap();
    let t0 = Instant::now();
    let text = read_all(&mut s).await;
    assert_eq!(status(&text), 408, "{text}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());

    // A chunk size that is not hex: 400.
    let (code, text) = raw(
        &addr,
        &[
            "POST /orders/1 HTTP/1.1",
            "host: api.example.com",
            "x-user-id: 42",
            "transfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0",
        ],
    )
    .await;
    assert_eq!(code, 400, "{text}");
    assert!(text.contains(r#""error":"bad_request""#), "{text}");

    // Within the limit: served.
    let r = client()
        .post(gw.url("/orders/1"))
        .header("host", "api.example.com")
        .header("x-user-id", "42")
        .body("d".repeat(1000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_deadline_bounds_every_attempt_together() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Every orders endpoint accepts and never answers; each read may wait
    // 3 s, but the route gives the whole request 600 ms.
    let text = units
        .topology(&[])
        .replace(
            "health_path: /healthz, health_interval_ms: 1000",
            "read_timeout_ms: 3000",
        )
        .replacen(
            "  path_prefix: /orders\n",
            "  path_prefix: /orders\n  timeout_ms: 600\n",
            1,
        );
    let (text, holds) = orders_never_answer(&units, text).await;
    let gw = start_with(text, dir.path(), "").await;
    let t0 = Instant::now();
    let (code, body) = raw(
        &public(&gw),
        &[
            "GET /orders/3 HTTP/1.1",
            "host: api.example.com",
            "x-user-id: 3",
        ],
    )
    .await;
    let took = t0.elapsed();
    assert_eq!(code, 504, "{body}");
    assert!(body.contains(r#""error":"deadline_exceeded""#), "{body}");
    // One 3 s read would already be over: the deadline cut it.
    assert!(took < Duration::from_millis(2500), "{took:?}");
    // The route's deadline is not the endpoint's failure: nothing is
    // counted against it (no ejection), no retry is made.
    one_cancelled_attempt(&gw).await;
    for h in holds {
        h.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_head_on_a_kept_alive_connection_has_the_same_bounds() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = "max_header_bytes = 4096\nheader_timeout_ms = 1000\n";
    let gw = start_with(units.topology(&[]), dir.path(), config).await;
    let first = format!("{HEAD}\r\n");

    // A second head past the cap: 431.
    let mut s = TcpStream::connect(public(&gw)).await.unwrap();
    s.write_all(first.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let big = format!("{HEAD}x-fill: {}\r\n", "a".repeat(6000));
    let _ = s.write_all(big.as_bytes()).await;
    let text = read_all(&mut s).await;
    assert_eq!(status(&text), 431, "{text}");

    // A second head trickled in: 408 at its own deadline.
    let mut s = TcpStream::connect(public(&gw)).await.unwrap();
    s.write_all(first.as_bytes()).await.unwrap();
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let drip: Vec<u8> = HEAD.bytes().cycle().take(100).collect();
    let every = Duration::from_millis(100);
    let (closed, text) = trickle(&mut s, &drip, every, Duration::from_secs(15)).await;
    assert!(closed, "the gateway closed the connection");
    assert_eq!(status(&text), 408, "{text}");

    // A malformed second head: the JSON 400.
    let mut s = TcpStream::connect(public(&gw)).await.unwrap();
    s.write_all(first.as_bytes()).await.unwrap();
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    s.write_all(b"GET /orders/1 HTTP/1.1\r\nhost: api.example.com\r\nx[a]: 1\r\n\r\n")
        .await
        .unwrap();
    let text = read_all(&mut s).await;
    assert_eq!(status(&text), 400, "{text}");
    assert!(text.contains(r#""error":"bad_request""#), "{text}");
    assert!(
        !text.to_ascii_lowercase().contains("server: pingora"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_stalled_past_the_upstream_read_timeout_is_the_clients_408() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    // The upstream waits for the whole body; its read timeout (300 ms) is
    // shorter than the gateway's body read timeout (2 s).
    let topology = units.topology(&[]).replace(
        "health_path: /healthz, health_interval_ms: 1000",
        "read_timeout_ms: 300",
    );
    let gw = start_with(topology, dir.path(), "body_read_timeout_ms = 2000\n").await;
    let mut s = TcpStream::connect(public(&gw)).await.unwrap();
    let req = "PUT /orders/1 HTTP/1.1\r\nhost: api.example.com\r\nx-user-id: 42\r\ncontent-length: 100\r\n\r\n0123456789";
    s.write_all(req.as_bytes()).await.unwrap();
    let text = read_all(&mut s).await;
    assert_eq!(status(&text), 408, "{text}");
    // Not the upstream's failure: no endpoint blamed, no retry elsewhere.
    one_cancelled_attempt(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_connection_is_outside_the_body_limit_and_body_timeout() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Every orders endpoint switches protocols and then echoes.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo = l.local_addr().unwrap().to_string();
    let server = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && s.read_exact(&mut b).await.is_ok() {
                    head.push(b[0]);
                }
                let _ = s
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n")
                    .await;
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let mut text = units.topology(&[]).replacen(
        "  path_prefix: /orders\n",
        "  path_prefix: /orders\n  max_body_bytes: 1000\n  timeout_ms: 2000\n",
        1,
    );
    for u in ["bj-1", "bj-2", "sh-1", "sh-2"] {
        text = text.replace(&units.get(u, "orders").address().to_string(), &echo);
    }
    let gw = start_with(text, dir.path(), "body_read_timeout_ms = 300\n").await;
    let mut s = TcpStream::connect(public(&gw)).await.unwrap();
    s.write_all(
        b"GET /orders/ws HTTP/1.1\r\nhost: api.example.com\r\nx-user-id: 42\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 8192];
    let n = s.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 101"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    // Over the body limit, after longer than the body read timeout, and
    // past the route's deadline: still echoed.
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let frame = vec![b'a' + round; 3000];
        s.write_all(&frame).await.unwrap();
        let mut got = vec![0u8; frame.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
            .await
            .expect("echoed in time")
            .unwrap();
        assert_eq!(got, frame, "round {round}");
    }
    server.abort();
}

/// The gateway's metrics show exactly one upstream attempt, and it was
/// cancelled: the endpoint was not blamed and nothing was retried.
async fn one_cancelled_attempt(gw: &Gateway) {
    let m = gw.admin("/metrics").await.1;
    let attempts: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("unitgate_upstream_attempts_total{"))
        .collect();
    assert!(
        attempts
            .iter()
            .all(|l| l.contains(r#"outcome="cancelled""#)),
        "{attempts:?}"
    );
    assert_eq!(attempts.len(), 1, "one attempt: {attempts:?}");
}
