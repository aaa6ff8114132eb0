//! The gateway against hostile clients, over raw sockets where the shape of
//! the bytes matters: hosts that are not hosts, paths that climb out of
//! their route, methods a route does not take, forged identity headers, a
//! dye replayed on another user's call, an upstream that never answers.
//! Every refusal is the JSON error of the wire contract, and nothing
//! refused reaches a unit.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

mod common;

use common::{
    keepalive_status, now, orders_never_answer, public, raw, start, start_with, status_of,
    total_received,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use unit_router::{Dye, Reason};
use unitgate_tests::gateway::{Gateway, GatewayArgs, Units};
use unitgate_tests::proto::SendVia;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_that_are_not_hosts_get_400_and_reach_no_unit() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = start(units.topology(&[]), dir.path()).await;
    let addr = public(&gw);
    // Pingora's own parser already refuses some shapes (400, empty body:
    // a known gap, see docs/security.md); the rest are the gateway's.
    let (status, _) = raw(
        &addr,
        &["GET /orders/1 HTTP/1.1", "host: evil.com@api.example.com"],
    )
    .await;
    assert_eq!(status, 400);
    for host in [
        "evil.com/.example.com",
        "evil.com#.example.com",
        "a..example.com",
        "api.example.com:99999",
        "[::1",
    ] {
        let (status, text) = raw(
            &addr,
            &[
                "GET /orders/1 HTTP/1.1",
                &format!("host: {host}"),
                "x-user-id: 42",
            ],
        )
        .await;
        assert_eq!(status, 400, "{host}: {text}");
        assert!(text.contains(r#""error":"bad_request""#), "{host}: {text}");
    }
    assert_eq!(total_received(&units).await, 0);
    // Case, port and a trailing dot are fine.
    let (status, _) = raw(
        &addr,
        &[
            "GET /orders/1 HTTP/1.1",
            "host: API.Example.COM.:80",
            "x-user-id: 42",
        ],
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_normalised_before_routing_and_forwarded_normalised() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = start(units.topology(&[]), dir.path()).await;
    let addr = public(&gw);
    let host = "host: api.example.com";
    // Out of /orders by dot segments: routed by what the path really is.
    let (status, text) = raw(&addr, &["GET /orders/../admin HTTP/1.1", host]).await;
    assert_eq!(status, 404, "{text}");
    let (status, text) = raw(&addr, &["GET /orders/%2e%2e/config?x=1 HTTP/1.1", host]).await;
    assert_eq!(status, 200, "{text}");
    let seen = units.received("ct-1", "config").await;
    assert_eq!(seen.last().unwrap().url.path(), "/config");
    assert_eq!(seen.last().unwrap().url.query(), Some("x=1"));
    assert!(units.received("bj-1", "orders").await.is_empty());
    // Encoded separators and backslashes are refused.
    for path in [
        "/orders/..%2Fconfig",
        "/orders/%5c..%5cconfig",
        "/orders/%zz",
    ] {
        let (status, text) = raw(&addr, &[&format!("GET {path} HTTP/1.1"), host]).await;
        assert_eq!(status, 400, "{path}: {text}");
        assert!(text.contains(r#""error":"bad_request""#), "{path}: {text}");
    }
    assert!(units.received("ct-1", "config").await.len() == 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_no_route_takes_is_405_with_allow() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = start(units.topology(&[]), dir.path()).await;
    // routes/config takes GET and HEAD only.
    let (status, text) = raw(
        &public(&gw),
        &["DELETE /config/1 HTTP/1.1", "host: api.example.com"],
    )
    .await;
    assert_eq!(status, 405, "{text}");
    assert!(
        text.to_ascii_lowercase().contains("allow: get, head"),
        "{text}"
    );
    assert!(text.contains(r#""error":"method_not_allowed""#), "{text}");
    // Methods are case-sensitive: `get` is not GET, and never reaches the
    // unit as a GET the route list let through.
    let (status, text) = raw(
        &public(&gw),
        &["get /config/1 HTTP/1.1", "host: api.example.com"],
    )
    .await;
    assert_eq!(status, 405, "{text}");
    assert!(units.received("ct-1", "config").await.is_empty());
}

unitgate_tests::both_protocols! {
async fn identity_headers_from_the_client_never_reach_a_unit(proto: Proto) {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = common::start_proto(units.topology(&[]), dir.path(), "", proto).await;
    let r = gw.http()
        .get(gw.url("/orders/1"))
        .header("host", "api.example.com")
        .header("x-user-id", "42")
        .header("x-real-ip", "6.6.6.6")
        .header("cookie", "ug_route=x; sid=1")
        .send_via(gw.proto)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = units.received("bj-2", "orders").await;
    let req = seen.last().unwrap();
    assert!(req.headers.get("x-real-ip").is_none());
    assert_eq!(req.headers["cookie"], "sid=1");
}
}

unitgate_tests::both_protocols! {
async fn headers_named_with_underscores_never_reach_a_unit(proto: Proto) {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = common::start_proto(units.topology(&[]), dir.path(), "", proto).await;
    // A unit behind a CGI/WSGI-style server reads `X_Auth_User` as
    // `x-auth-user`: the gateway drops every `_` name and counts it.
    let r = gw.http()
        .get(gw.url("/orders/1"))
        .header("host", "api.example.com")
        .header("x-user-id", "42")
        .header("X_Auth_User", "admin")
        .header("x_forwarded_for", "6.6.6.6")
        .header("x_trace_note", "harmless")
        .send_via(gw.proto)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = units.received("bj-2", "orders").await;
    let names: Vec<&str> = seen.last().unwrap().headers.keys().map(|k| k.as_str()).collect();
    assert!(!names.iter().any(|n| n.contains('_')), "{names:?}");
    let (_, metrics) = gw.admin("/metrics").await;
    assert!(
        metrics.contains("unitgate_headers_dropped_total{reason=\"underscore\"} 3"),
        "{metrics}"
    );
    // A second user key spelled with `_` is a second user key: 400.
    let r = gw.http()
        .get(gw.url("/orders/1"))
        .header("host", "api.example.com")
        .header("x-user-id", "42")
        .header("x_user_id", "60")
        .send_via(gw.proto)
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains(r#""error":"bad_request""#));
    assert_eq!(total_received(&units).await, 1);
}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn underscore_headers_are_forwarded_when_asked_but_never_framing_or_identity() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let topology = dir.path().join("topology.yaml");
    std::fs::write(&topology, units.topology(&[])).unwrap();
    let args = GatewayArgs {
        topology_file: Some(topology),
        region: Some("cn-north".into()),
        dc: Some("bj-a".into()),
        extra: vec!["--forward-underscore-headers".into()],
        ..GatewayArgs::default()
    };
    let gw = Gateway::start(std::path::Path::new(common::BIN), args)
        .await
        .unwrap();
    let addr = public(&gw);
    let (status, text) = raw(
        &addr,
        &[
            "GET /orders/1 HTTP/1.1",
            "host: api.example.com",
            "x-user-id: 42",
            "x_trace_note: harmless",
            "X_Auth_User: admin",
        ],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let seen = units.received("bj-2", "orders").await;
    let h = &seen.last().unwrap().headers;
    assert_eq!(h["x_trace_note"], "harmless");
    assert!(h.get("x_auth_user").is_none(), "{h:?}");
    for refused in [
        &[
            "POST /orders/1 HTTP/1.1",
            "content-length: 0",
            "Transfer_Encoding: chunked",
        ][..],
        &[
            "POST /orders/1 HTTP/1.1",
            "content-length: 0",
            "content_length: 10",
        ][..],
        &["GET /orders/1 HTTP/1.1", "x_user_id: 60"][..],
    ] {
        let mut head = refused.to_vec();
        head.extend(["host: api.example.com", "x-user-id: 42"]);
        let (status, text) = raw(&addr, &head).await;
        assert_eq!(status, 400, "{refused:?}: {text}");
        assert!(text.contains(r#""error":"bad_request""#), "{text}");
    }
    assert_eq!(total_received(&units).await, 1);
}

unitgate_tests::both_protocols! {
async fn a_dye_replayed_on_another_users_call_is_ignored_and_never_renewed(proto: Proto) {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    // sh-1 down: a dye for shard 60 (home sh-1) keeps calls in bj-1.
    let gw = common::start_proto(units.topology(&["sh-1"]), dir.path(), "", proto).await;
    let keys = unitgate_tests::gateway::test_keyring();
    let exp = now() + 30;
    let dye = Dye {
        shard: Some(60),
        home: "sh-1".into(),
        via: "bj-2".into(),
        reason: Reason::Failover,
        hops: 2,
        exp,
    };
    let baggage = dye.merge_into(None, &keys);
    let call = |user: &'static str| {
        gw.http()
            .get(gw.internal_url("/orders/1"))
            .header("host", "api.example.com")
            .header("x-user-id", user)
            .header("baggage", baggage.clone())
            .send_via(gw.proto)
    };
    // The same user (shard 60): the dye holds the call at the hop limit,
    // and the dye it carries on is not extended.
    let r = call("60").await.unwrap();
    assert_eq!(r.status(), 200);
    let held = r.headers()["x-unit-served-by"].to_str().unwrap().to_owned();
    let seen = units.received(&held, "orders").await;
    let carried = seen.last().unwrap().headers["baggage"]
        .to_str()
        .unwrap()
        .to_owned();
    let carried = Dye::decode(&carried, &keys, 0).unwrap().unwrap();
    assert_eq!((carried.reason, carried.exp), (Reason::Failover, exp));
    // Another user's call (shard 42, home bj-2) with that dye: ignored, the
    // call goes to the caller's own home with no dye.
    let r = call("42").await.unwrap();
    assert_eq!(r.headers()["x-unit-served-by"], "bj-2");
    let seen = units.received("bj-2", "orders").await;
    assert!(seen.last().unwrap().headers.get("baggage").is_none());
}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_never_answers_is_504_within_the_read_timeouts() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Every orders endpoint accepts and never answers; reads time out at
    // 300 ms. With sh-a drained only bj-1 and bj-2 are left: the units run
    // out before the attempt cap, and the answer is still the timeout.
    let mut text = units.topology(&[]).replace(
        "health_path: /healthz, health_interval_ms: 1000",
        "read_timeout_ms: 300",
    );
    text.push_str("\ndrain/dc/sh-a: {reason: test}\n");
    let (text, holds) = orders_never_answer(&units, text).await;
    let gw = start(text, dir.path()).await;
    let t0 = Instant::now();
    let (status, text) = raw(
        &public(&gw),
        &[
            "GET /orders/3 HTTP/1.1",
            "host: api.example.com",
            "x-user-id: 3",
        ],
    )
    .await;
    assert_eq!(status, 504, "{text}");
    assert!(text.contains(r#""error":"upstream_timeout""#), "{text}");
    // Two attempts of 300 ms each, with slack for the CI.
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    for h in holds {
        h.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_per_address_limit_are_closed_on_accept() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = "max_connections_per_ip = 3\nmax_connections = 100\n";
    let gw = start_with(units.topology(&[]), dir.path(), config).await;
    let addr = public(&gw);
    // Three idle connections from this address hold its three places...
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let open = r#"unitgate_connections_open{listener="public"} 3"#;
    unitgate_tests::eventually!(
        Duration::from_secs(5),
        gw.admin("/metrics").await.1.contains(open),
        "three connections admitted"
    );
    // ...so the fourth is closed before it can send anything.
    let mut fourth = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), fourth.read(&mut buf))
        .await
        .expect("closed promptly")
        .unwrap_or(0);
    assert_eq!(n, 0, "the refused connection is closed without an answer");
    let m = gw.admin("/metrics").await.1;
    assert!(
        m.contains(r#"unitgate_connections_refused_total{limit="ip",listener="public"}"#),
        "{m}"
    );
    // One idle connection goes: a new client connection is served again.
    drop(idle.pop());
    unitgate_tests::eventually!(
        Duration::from_secs(5),
        status_of(
            &addr,
            &[
                "GET /orders/1 HTTP/1.1",
                "host: api.example.com",
                "x-user-id: 42"
            ]
        )
        .await
            == 200,
        "served once a place is free"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keepalive_connection_is_closed_after_the_idle_limit() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = start_with(units.topology(&[]), dir.path(), "keepalive_idle_s = 1\n").await;
    let mut s = tokio::net::TcpStream::connect(public(&gw)).await.unwrap();
    s.write_all(b"GET /orders/1 HTTP/1.1\r\nhost: api.example.com\r\nx-user-id: 42\r\n\r\n")
        .await
        .unwrap();
    // The answer, then nothing: the gateway closes the idle connection.
    let t0 = Instant::now();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("closed by the gateway, not kept forever")
        .unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keepalive_connections_wait_parked_and_wake_on_their_next_request() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = start(units.topology(&[]), dir.path()).await;
    let head = b"GET /orders/1 HTTP/1.1\r\nhost: api.example.com\r\nx-user-id: 42\r\n\r\n";
    let mut conns = Vec::new();
    for _ in 0..20 {
        let mut s = tokio::net::TcpStream::connect(public(&gw)).await.unwrap();
        s.write_all(head).await.unwrap();
        assert_eq!(keepalive_status(&mut s).await, 200);
        conns.push(s);
    }
    let gauges = |open: usize, idle: usize| {
        [
            format!(r#"unitgate_connections_open{{listener="public"}} {open}"#),
            format!(r#"unitgate_connections_idle{{listener="public"}} {idle}"#),
        ]
    };
    let shows = |want: [String; 2]| {
        let gw = &gw;
        async move {
            let m = gw.admin("/metrics").await.1;
            want.iter().all(|w| m.lines().any(|l| l == w))
        }
    };
    unitgate_tests::eventually!(
        Duration::from_secs(5),
        shows(gauges(20, 20)).await,
        "all twenty connections wait parked"
    );
    // A request's first byte alone wakes its connection; the parser then
    // reads that byte and the rest as one head.
    conns[0].write_all(&head[..1]).await.unwrap();
    unitgate_tests::eventually!(
        Duration::from_secs(5),
        shows(gauges(20, 19)).await,
        "the first byte woke its connection"
    );
    conns[0].write_all(&head[1..]).await.unwrap();
    assert_eq!(keepalive_status(&mut conns[0]).await, 200);
    for s in &mut conns {
        s.write_all(head).await.unwrap();
        assert_eq!(keepalive_status(s).await, 200);
    }
    unitgate_tests::eventually!(
        Duration::from_secs(5),
        shows(gauges(20, 20)).await,
        "parked again after their second and third requests"
    );
    drop(conns);
    unitgate_tests::eventually!(
        Duration::from_secs(5),
        shows(gauges(0, 0)).await,
        "closed connections are neither open nor idle"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_answer_with_an_oversized_head_is_502() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Every orders endpoint answers with a 1.1 MB response head, past what
    // Pingora parses (1 MiB).
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bad = l.local_addr().unwrap().to_string();
    let server = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 0\r\n\r\n",
                    "a".repeat(1_100_000)
                );
                let _ = s.write_all(head.as_bytes()).await;
            });
        }
    });
    let mut text = units.topology(&[]);
    for u in ["bj-1", "bj-2", "sh-1", "sh-2"] {
        text = text.replace(&units.get(u, "orders").address().to_string(), &bad);
    }
    let gw = start(text, dir.path()).await;
    let (status, body) = raw(
        &public(&gw),
        &[
            "GET /orders/3 HTTP/1.1",
            "host: api.example.com",
            "x-user-id: 3",
        ],
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains(r#""error":"upstream_error""#), "{body}");
    server.abort();
}
