//! The gateway process against wiremock units: shard and region routing,
//! routing tokens, header stripping, failover with dye, return home, hop cap,
//! and never sending a POST twice.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use unit_router::{Dye, Keyring, Reason, RouteToken, Topology};
use unitgate_tests::gateway::{Gateway, GatewayArgs, Units};
use unitgate_tests::proto::{Proto, SendVia};

const BIN: &str = env!("CARGO_BIN_EXE_unitgate");

fn keys() -> Keyring {
    unitgate_tests::gateway::test_keyring()
}

fn write_topology(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("topology.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

async fn start(units: &Units, down: &[&str], dir: &Path, extra: GatewayArgs) -> Gateway {
    let topo = write_topology(dir, &units.topology(down));
    let args = GatewayArgs {
        topology_file: Some(topo),
        region: Some("cn-north".into()),
        dc: Some("bj-a".into()),
        ..extra
    };
    Gateway::start(Path::new(BIN), args).await.unwrap()
}

/// GET `url` over the gateway's protocol (checked: an HTTP/2 test that
/// fell back to HTTP/1.1 would prove nothing).
async fn get(gw: &Gateway, url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut r = gw.http().get(url).header("host", "api.example.com");
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let resp = r.send_via(gw.proto).await.unwrap();
    if gw.proto == Proto::H2 {
        assert_eq!(resp.version(), reqwest::Version::HTTP_2, "{url}");
    }
    resp
}

fn served_by(r: &reqwest::Response) -> String {
    r.headers()
        .get("x-unit-served-by")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

fn cookie_token(r: &reqwest::Response) -> Option<String> {
    r.headers().get_all("set-cookie").iter().find_map(|v| {
        let v = v.to_str().ok()?;
        v.strip_prefix("ug_route=")
            .map(|rest| rest.split(';').next().unwrap().to_owned())
    })
}

unitgate_tests::both_protocols! {
async fn shard_routing_matches_the_shard_map_for_many_keys(proto: Proto) {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = start(&units, &[], dir.path(), GatewayArgs { proto, ..GatewayArgs::default() }).await;
    let kv = config_center::kv::parse_document(&units.topology(&[]), "t").unwrap();
    let topo = Topology::build(1, &kv, 0).unwrap();
    let mut per_unit = std::collections::BTreeMap::new();
    for user in (0..400u32)
        .map(|u| format!("user-{u}"))
        .chain((0..100).map(|u| u.to_string()))
    {
        let r = get(&gw, &gw.url("/orders/1"), &[("x-user-id", &user)]).await;
        assert_eq!(r.status(), 200);
        let want = &topo
            .unit(topo.shard_owner(topo.shard_of(&user)).unwrap())
            .name;
        assert_eq!(&served_by(&r), want, "user {user}");
        assert_eq!(r.headers()["x-upstream-unit"], want.as_str());
        *per_unit.entry(want.clone()).or_insert(0) += 1;
    }
    // Every shard unit got traffic; the upstreams saw exactly that.
    for u in ["bj-1", "bj-2", "sh-1", "sh-2"] {
        assert_eq!(units.received(u, "orders").await.len(), per_unit[u], "{u}");
    }
}
}

unitgate_tests::both_protocols! {
async fn region_routing_by_geoip(proto: Proto) {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("city.mmdb");
    unitgate_tests::geo::write_geoip2(
        &db,
        &[
            ("203.0.113.0/24", "CN", Some("SH")),
            ("198.51.100.0/24", "JP", None),
            ("192.0.2.0/24", "CN", Some("BJ")),
        ],
    );
    let extra = GatewayArgs {
        geo_db: Some(db),
        trusted_proxies: Some("127.0.0.1".into()),
        proto,
        ..GatewayArgs::default()
    };
    let gw = start(&units, &[], dir.path(), extra).await;
    for (ip, unit) in [
        ("203.0.113.7", "sh-1"),
        ("198.51.100.7", "sh-1"),
        ("192.0.2.7", "bj-1"),
    ] {
        let r = get(&gw, &gw.url("/profile"), &[("x-forwarded-for", ip)]).await;
        assert_eq!(
            (r.status().as_u16(), served_by(&r)),
            (200, unit.to_owned()),
            "{ip}"
        );
    }
    // The cn-east client is told about its regional entry.
    let r = get(&gw, &gw.url("/profile"), &[("x-forwarded-for", "203.0.113.7")]).await;
    assert_eq!(
        r.headers()["x-unit-hint"],
        "unit=sh-1; region=cn-east; entry=api-sh.example.com; ttl=300"
    );
    // A chain sent over two header lines is one list: the client is its
    // right-most address, not the first line's.
    let r = get(
        &gw,
        &gw.url("/profile"),
        &[
            ("x-forwarded-for", "192.0.2.7"),
            ("x-forwarded-for", "203.0.113.7"),
        ],
    )
    .await;
    assert_eq!(served_by(&r), "sh-1");
    // An address the database does not know falls back to this gateway's region.
    let r = get(&gw, &gw.url("/profile"), &[("x-forwarded-for", "100.64.0.1")]).await;
    assert_eq!(served_by(&r), "bj-1");
    assert!(r.headers().get("x-unit-hint").is_none());
}
}

unitgate_tests::both_protocols! {
async fn routing_tokens_are_issued_echoed_and_forgeries_ignored(proto: Proto) {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = start(&units, &[], dir.path(), GatewayArgs { proto, ..GatewayArgs::default() }).await;
    let r = get(&gw, &gw.url("/orders/1"), &[("x-user-id", "60")]).await;
    assert_eq!(served_by(&r), "sh-1");
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .next()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("Secure") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let token = cookie_token(&r).unwrap();
    let decoded = RouteToken::decode(&token, &keys(), 0).unwrap();
    // The shard, and the user's region unit (this gateway's region, cn-north).
    assert_eq!((decoded.shard, decoded.unit.as_str()), (Some(60), "bj-1"));

    // Echoed by cookie or by header, without any user header: same home, no reissue.
    let r = get(
        &gw,
        &gw.url("/orders/2"),
        &[("cookie", &format!("a=b; ug_route={token}"))],
    )
    .await;
    assert_eq!(served_by(&r), "sh-1");
    assert!(cookie_token(&r).is_none());
    // The routing cookie is the gateway's: the unit sees only its own cookies.
    let seen = units.received("sh-1", "orders").await;
    assert_eq!(seen.last().unwrap().headers["cookie"], "a=b");
    let r = get(&gw, &gw.url("/orders/2"), &[("x-unit-route", &token)]).await;
    assert_eq!(served_by(&r), "sh-1");

    // A forged token (payload edited, or signature broken) is ignored, never an error.
    let mut forged = decoded.clone();
    forged.shard = Some(3);
    let other = Keyring::new("x", [("x".to_owned(), vec![9u8; 32])].into()).unwrap();
    let forged = RouteToken {
        kid: "x".into(),
        ..forged
    }
    .encode(&other);
    for bad in [forged.as_str(), &token[..token.len() - 2], "garbage"] {
        let r = get(
            &gw,
            &gw.url("/orders/2"),
            &[("x-unit-route", bad), ("x-user-id", "99")],
        )
        .await;
        assert_eq!(
            (r.status().as_u16(), served_by(&r)),
            (200, "sh-2".to_owned())
        );
        let fresh = RouteToken::decode(&cookie_token(&r).unwrap(), &keys(), 0).unwrap();
        assert_eq!(fresh.shard, Some(99));
    }

    // The locate endpoint gives apps their home, entry and a token.
    let r = get(&gw, &gw.url("/_unitgate/locate"), &[("x-user-id", "60")]).await;
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["home"], "sh-1");
    assert_eq!(v["region"], "cn-east");
    assert_eq!(v["entries"][0], "api-sh.example.com");
    let t = RouteToken::decode(v["token"].as_str().unwrap(), &keys(), 0).unwrap();
    assert_eq!(t.shard, Some(60));
}
}

unitgate_tests::both_protocols! {
async fn the_cookie_names_the_unit_that_served_so_the_user_stays_there(proto: Proto) {
    // A region route with a user key: served in this gateway's region
    // (cn-north). The cookie must name that unit, not the user's shard
    // owner (sh-1), or the next request would move to cn-east.
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = start(&units, &[], dir.path(), GatewayArgs { proto, ..GatewayArgs::default() }).await;
    let r = get(&gw, &gw.url("/profile/1"), &[("x-user-id", "60")]).await;
    let first = served_by(&r);
    assert!(["bj-1", "bj-2"].contains(&first.as_str()), "{first}");
    assert!(r.headers().get("x-unit-hint").is_none());
    let token = cookie_token(&r).expect("a token for a region route");
    let t = RouteToken::decode(&token, &keys(), 0).unwrap();
    assert_eq!(t.unit, first);
    for _ in 0..3 {
        let r = get(&gw, &gw.url("/profile/1"), &[("x-unit-route", &token)]).await;
        assert_eq!(served_by(&r), first);
        assert!(cookie_token(&r).is_none(), "the token is kept");
        assert!(r.headers().get("x-unit-hint").is_none());
    }
    // A cookie minted by a shard route is the same token: the region route
    // keeps the user where it was, and the shard route goes home.
    let r = get(&gw, &gw.url("/orders/1"), &[("x-user-id", "61")]).await;
    assert_eq!(served_by(&r), "sh-1");
    let from_orders = cookie_token(&r).unwrap();
    let r = get(&gw, &gw.url("/profile/1"), &[("x-unit-route", &from_orders)]).await;
    let region_unit = served_by(&r);
    assert!(
        ["bj-1", "bj-2"].contains(&region_unit.as_str()),
        "{region_unit}"
    );
    assert!(cookie_token(&r).is_none(), "the token is kept");
    assert!(r.headers().get("x-unit-hint").is_none());
    let r = get(&gw, &gw.url("/orders/1"), &[("x-unit-route", &from_orders)]).await;
    assert_eq!(served_by(&r), "sh-1");
    assert!(cookie_token(&r).is_none());
}
}

unitgate_tests::both_protocols! {
async fn no_hint_points_at_a_home_that_cannot_serve(proto: Proto) {
    // User 99's home sh-2 (cn-east) is down: served by bj-2 in this region,
    // with no hint toward cn-east; the cookie still names home.
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = start(&units, &["sh-2"], dir.path(), GatewayArgs { proto, ..GatewayArgs::default() }).await;
    let r = get(&gw, &gw.url("/orders/1"), &[("x-user-id", "99")]).await;
    assert_eq!((r.status().as_u16(), served_by(&r)), (200, "bj-2".into()));
    assert!(r.headers().get("x-unit-hint").is_none());
    let t = RouteToken::decode(&cookie_token(&r).unwrap(), &keys(), 0).unwrap();
    assert_eq!(t.shard, Some(99));
    // Home up: the hint names it.
    let r = get(&gw, &gw.url("/orders/1"), &[("x-user-id", "60")]).await;
    assert_eq!(
        r.headers()["x-unit-hint"],
        "unit=sh-1; region=cn-east; entry=api-sh.example.com; ttl=300"
    );
}
}

unitgate_tests::both_protocols! {
async fn internal_headers_are_stripped_on_the_public_listener(proto: Proto) {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = start(&units, &[], dir.path(), GatewayArgs { proto, ..GatewayArgs::default() }).await;
    let keys = keys();
    let dye = Dye {
        shard: Some(60),
        home: "sh-1".into(),
        via: "bj-1".into(),
        reason: Reason::Failover,
        hops: 0,
        exp: i64::MAX,
    };
    let baggage = dye.merge_into(Some("tenant=t1"), &keys);
    let r = get(
        &gw,
        &gw.url("/orders/1"),
        &[
            ("x-user-id", "42"),
            ("x-unit-served-by", "evil"),
            ("x-unit-hint", "evil"),
            ("x-unit-anything", "evil"),
            ("baggage", &baggage),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=6.6.6.6"),
        ],
    )
    .await;
    // A signed dye on the public listener is not honoured: shard 42 -> bj-2.
    assert_eq!(served_by(&r), "bj-2");
    // The upstream's own x-unit-* response headers are replaced.
    assert_eq!(r.headers().get_all("x-unit-served-by").iter().count(), 1);
    let seen = units.received("bj-2", "orders").await;
    let req = seen.last().unwrap();
    for (name, _) in req.headers.iter() {
        let n = name.as_str();
        assert!(!n.starts_with("x-unit-"), "{n} reached the upstream");
        assert!(n != "x-forwarded-host", "{n} reached the upstream");
    }
    assert_eq!(req.headers["baggage"], "tenant=t1");
    assert_eq!(req.headers["x-forwarded-for"], "127.0.0.1");
    // The gateway's own forwarding headers, not the client's: HTTP/2 runs
    // over TLS here.
    let scheme = if proto == Proto::H2 { "https" } else { "http" };
    assert_eq!(req.headers["x-forwarded-proto"], scheme);
    let forwarded: Vec<_> = req.headers.get_all("forwarded").iter().collect();
    assert_eq!(forwarded, [format!("for=127.0.0.1;proto={scheme}").as_str()]);
}
}

/// The `x-forwarded-for` a unit received last.
async fn last_xff(units: &Units, unit: &str) -> String {
    let seen = units.received(unit, "orders").await;
    let h = &seen.last().unwrap().headers;
    let all: Vec<&str> = h
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    all.join(", ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_from_a_trusted_proxy_gets_the_proxy_appended() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = GatewayArgs {
        trusted_proxies: Some("127.0.0.1".into()),
        ..GatewayArgs::default()
    };
    let gw = start(&units, &[], dir.path(), extra).await;
    // The proxy (the socket peer, 127.0.0.1) is appended to the chain it
    // sent, as nginx's $proxy_add_x_forwarded_for appends $remote_addr.
    for (sent, want) in [
        (&["203.0.113.7"][..], "203.0.113.7, 127.0.0.1"),
        (
            &["198.51.100.1, 203.0.113.7"][..],
            "198.51.100.1, 203.0.113.7, 127.0.0.1",
        ),
        (
            &["198.51.100.1", "203.0.113.7"][..],
            "198.51.100.1, 203.0.113.7, 127.0.0.1",
        ),
        (&[][..], "127.0.0.1"),
    ] {
        let mut headers = vec![("x-user-id", "42")];
        headers.extend(sent.iter().map(|v| ("x-forwarded-for", *v)));
        let r = get(&gw, &gw.url("/orders/1"), &headers).await;
        assert_eq!(r.status(), 200);
        assert_eq!(last_xff(&units, "bj-2").await, want, "{sent:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_from_a_trusted_proxy_are_kept_and_extended() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = GatewayArgs {
        trusted_proxies: Some("127.0.0.1".into()),
        ..GatewayArgs::default()
    };
    let gw = start(&units, &[], dir.path(), extra).await;
    // The proxy knows the client's scheme: its x-forwarded-proto is kept.
    // Its forwarded chain (every line, as one list) gets the gateway's own
    // element, for the hop from the proxy (RFC 7239).
    let sent = [
        ("x-user-id", "42"),
        ("x-forwarded-proto", "https"),
        ("forwarded", "for=198.51.100.1;proto=https"),
        ("forwarded", "for=\"[2001:db8::7]\";proto=https"),
    ];
    let r = get(&gw, &gw.url("/orders/1"), &sent).await;
    assert_eq!(r.status(), 200);
    let seen = units.received("bj-2", "orders").await;
    let h = &seen.last().unwrap().headers;
    assert_eq!(h["x-forwarded-proto"], "https");
    let forwarded: Vec<_> = h.get_all("forwarded").iter().collect();
    assert_eq!(
        forwarded,
        ["for=198.51.100.1;proto=https, for=\"[2001:db8::7]\";proto=https, for=127.0.0.1;proto=http"]
    );
    // A proxy that says nothing: the gateway's scheme and element alone.
    let r = get(&gw, &gw.url("/orders/1"), &[("x-user-id", "42")]).await;
    assert_eq!(r.status(), 200);
    let seen = units.received("bj-2", "orders").await;
    let h = &seen.last().unwrap().headers;
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["forwarded"], "for=127.0.0.1;proto=http");
    // A TLS-terminating proxy that sends x-forwarded-proto alone: the
    // gateway's element (the only one) does not contradict it.
    let sent = [("x-user-id", "42"), ("x-forwarded-proto", "https")];
    let r = get(&gw, &gw.url("/orders/1"), &sent).await;
    assert_eq!(r.status(), 200);
    let seen = units.received("bj-2", "orders").await;
    let h = &seen.last().unwrap().headers;
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["forwarded"], "for=127.0.0.1;proto=https");
}

unitgate_tests::both_protocols! {
async fn failover_dyes_the_request_and_the_internal_listener_returns_it_home(proto: Proto) {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = start(&units, &["bj-1"], dir.path(), GatewayArgs { proto, ..GatewayArgs::default() }).await;
    let keys = keys();
    // Shard 3's home bj-1 is down: its failover list says bj-2.
    for _ in 0..5 {
        let r = get(&gw, &gw.url("/orders/3"), &[("x-user-id", "3")]).await;
        assert_eq!(
            (r.status().as_u16(), served_by(&r)),
            (200, "bj-2".to_owned())
        );
    }
    let seen = units.received("bj-2", "orders").await;
    let b = seen.last().unwrap().headers["baggage"]
        .to_str()
        .unwrap()
        .to_owned();
    let dye = Dye::decode(&b, &keys, 0).unwrap().unwrap();
    assert_eq!(
        (
            dye.shard,
            dye.home.as_str(),
            dye.via.as_str(),
            dye.reason,
            dye.hops
        ),
        (Some(3), "bj-1", "bj-2", Reason::Failover, 1)
    );

    // A service in bj-2 calls through the internal listener with the dye:
    // home (bj-1) still down, so the call stays where it can be served.
    let r = gw.http()
        .get(gw.internal_url("/orders/9"))
        .header("host", "api.example.com")
        .header("baggage", &b)
        .send_via(gw.proto)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_ne!(served_by(&r), "bj-1");

    // For a shard whose home is up, the dyed call goes back home and the
    // dye is dropped there.
    let dye60 = Dye {
        shard: Some(60),
        home: "sh-1".into(),
        via: "bj-2".into(),
        reason: Reason::Failover,
        hops: 1,
        exp: i64::MAX,
    };
    let before = units.received("sh-1", "orders").await.len();
    let r = gw.http()
        .get(gw.internal_url("/orders/9"))
        .header("host", "api.example.com")
        .header("baggage", dye60.merge_into(Some("k=v"), &keys))
        .send_via(gw.proto)
        .await
        .unwrap();
    assert_eq!(served_by(&r), "sh-1");
    let seen = units.received("sh-1", "orders").await;
    assert_eq!(seen.len(), before + 1);
    assert_eq!(seen.last().unwrap().headers["baggage"], "k=v");

    // An unverified dye is ignored: routed by the user header instead.
    let forged = dye60.merge_into(
        None,
        &Keyring::new("x", [("x".to_owned(), vec![1; 32])].into()).unwrap(),
    );
    let r = gw.http()
        .get(gw.internal_url("/orders/9"))
        .header("host", "api.example.com")
        .header("baggage", forged)
        .header("x-user-id", "42")
        .send_via(gw.proto)
        .await
        .unwrap();
    assert_eq!(served_by(&r), "bj-2");
    assert!(units
        .received("bj-2", "orders")
        .await
        .last()
        .unwrap()
        .headers
        .get("baggage")
        .is_none());

    // At the hop cap the request is never moved again: served in this
    // gateway's own unit (bj-a -> bj-1 is down, so it is refused).
    let capped = Dye { hops: 2, ..dye60 };
    let r = gw.http()
        .get(gw.internal_url("/orders/9"))
        .header("host", "api.example.com")
        .header("baggage", capped.merge_into(None, &keys))
        .send_via(gw.proto)
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], "hop_limit");
}
}

/// A TCP server that reads a request and closes without answering; it
/// counts the requests it swallowed.
async fn black_hole() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = n.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                if let Ok(k) = s.read(&mut buf).await {
                    if k > 0 {
                        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
                let _ = s.shutdown().await;
            });
        }
    });
    (addr, n)
}

unitgate_tests::both_protocols! {
async fn a_post_is_never_sent_twice_but_a_get_is_retried_elsewhere(proto: Proto) {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (hole, swallowed) = black_hole().await;
    let text = units
        .topology(&[])
        .replace(
            &units.get("bj-1", "orders").address().to_string(),
            &hole.to_string(),
        )
        .replace("health_path: /healthz, ", "");
    let topo = write_topology(dir.path(), &text);
    let args = GatewayArgs {
        topology_file: Some(topo),
        region: Some("cn-north".into()),
        dc: Some("bj-a".into()),
        proto,
        ..GatewayArgs::default()
    };
    let gw = Gateway::start(Path::new(BIN), args).await.unwrap();

    let r = gw.http()
        .post(gw.url("/orders"))
        .header("host", "api.example.com")
        .header("x-user-id", "3")
        .body("{\"item\":1}")
        .send_via(gw.proto)
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], "upstream_error");
    assert_eq!(swallowed.load(std::sync::atomic::Ordering::SeqCst), 1);
    let posts =
        |reqs: Vec<wiremock::Request>| reqs.iter().filter(|r| r.method.as_str() == "POST").count();
    for u in ["bj-2", "sh-1", "sh-2"] {
        assert_eq!(
            posts(units.received(u, "orders").await),
            0,
            "POST reached {u}"
        );
    }

    // The same failure on a GET is retried on the failover unit, dyed.
    let r = get(&gw, &gw.url("/orders/3"), &[("x-user-id", "3")]).await;
    assert_eq!(
        (r.status().as_u16(), served_by(&r)),
        (200, "bj-2".to_owned())
    );
    assert_eq!(swallowed.load(std::sync::atomic::Ordering::SeqCst), 2);
    let b = units
        .received("bj-2", "orders")
        .await
        .last()
        .unwrap()
        .headers["baggage"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        b.contains("ug.home=bj-1") && b.contains("ug.reason=failover"),
        "{b}"
    );
}
}

unitgate_tests::both_protocols! {
async fn gateway_errors_are_json_and_admin_endpoints_answer(proto: Proto) {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = start(&units, &[], dir.path(), GatewayArgs { proto, ..GatewayArgs::default() }).await;
    let r = gw.http()
        .get(gw.url("/nothing"))
        .header("host", "unknown.org")
        .send_via(gw.proto)
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/json");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], "no_route");
    let big = "x".repeat(40 * 1024);
    let r = get(&gw, &gw.url("/orders"), &[("x-big", &big)]).await;
    assert_eq!(r.status(), 431);

    for (path, want) in [
        ("/healthz", 200),
        ("/readyz", 200),
        ("/gslb/dc/sh-a", 200),
        ("/gslb/dc/mars", 404),
    ] {
        assert_eq!(gw.admin(path).await.0, want, "{path}");
    }
    let st = gw.status().await;
    assert_eq!(st["epoch"], 1);
    assert_eq!(st["config_center"]["connected"], true);
    assert_eq!(st["units"].as_array().unwrap().len(), 5);
    let m = gw.admin("/metrics").await.1;
    assert!(
        m.contains("unitgate_requests_total{listener=\"public\",reason=\"no_route\""),
        "{m}"
    );
    assert!(m.contains("unitgate_config_epoch 1"), "{m}");
}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_giving_up_do_not_eject_endpoints_or_cause_retries() {
    let units = Units::start().await;
    // bj-2 answers slowly; clients give up first.
    wiremock::Mock::given(wiremock::matchers::path("/orders/slow"))
        .respond_with(
            wiremock::ResponseTemplate::new(200).set_delay(std::time::Duration::from_millis(800)),
        )
        .with_priority(1)
        .mount(units.get("bj-2", "orders"))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let gw = start(&units, &[], dir.path(), GatewayArgs::default()).await;
    let impatient = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(100))
        .build()
        .unwrap();
    for _ in 0..6 {
        let r = impatient
            .get(gw.url("/orders/slow"))
            .header("host", "api.example.com")
            .header("x-user-id", "42")
            .send_via(gw.proto)
            .await;
        assert!(r.is_err(), "the client should have timed out");
    }
    // The gateway notices the closed connections when bj-2 answers: each is
    // counted as 499 (nginx's convention), none as a 5xx.
    let gone = |m: &str| {
        m.lines()
            .filter(|l| l.starts_with("unitgate_requests_total") && l.contains("status=\"499\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>()
    };
    unitgate_tests::eventually!(
        std::time::Duration::from_secs(5),
        gone(&gw.admin("/metrics").await.1) == 6,
        "six clients counted as gone"
    );
    let r = get(&gw, &gw.url("/orders/1"), &[("x-user-id", "42")]).await;
    assert_eq!(
        (r.status().as_u16(), served_by(&r)),
        (200, "bj-2".to_owned())
    );
    let m = gw.admin("/metrics").await.1;
    assert!(
        !m.lines().any(|l| l.starts_with("unitgate_retries_total")),
        "no retries expected: {m}"
    );
    assert!(
        !m.contains("outcome=\"error\""),
        "no upstream errors expected: {m}"
    );
    assert!(!m.contains("status=\"500\""), "{m}");
    for u in ["bj-1", "sh-1", "sh-2"] {
        assert!(
            units.received(u, "orders").await.is_empty(),
            "{u} got a retry"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_health_checks_take_an_endpoint_out_and_bring_it_back() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = start(&units, &[], dir.path(), GatewayArgs::default()).await;
    let healthy = |st: serde_json::Value| {
        st["units"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"] == "bj-2")
            .map(|u| u["services"]["orders"]["healthy"] == true)
            .unwrap()
    };
    assert_eq!(
        served_by(&get(&gw, &gw.url("/orders/1"), &[("x-user-id", "42")]).await),
        "bj-2"
    );

    // bj-2's health path fails while its service still answers: only the
    // active check can tell, and traffic moves before any request fails.
    let bj2 = units.get("bj-2", "orders");
    wiremock::Mock::given(wiremock::matchers::path("/healthz"))
        .respond_with(wiremock::ResponseTemplate::new(503))
        .with_priority(1)
        .named("unhealthy")
        .mount(bj2)
        .await;
    unitgate_tests::eventually!(
        std::time::Duration::from_secs(10),
        !healthy(gw.status().await),
        "bj-2 marked down by its active check"
    );
    let before = units.received("bj-2", "orders").await.len();
    for _ in 0..5 {
        let r = get(&gw, &gw.url("/orders/1"), &[("x-user-id", "42")]).await;
        assert_eq!(
            (r.status().as_u16(), served_by(&r)),
            (200, "bj-1".to_owned())
        );
    }
    assert_eq!(units.received("bj-2", "orders").await.len(), before);

    // The check passes again: bj-2 is back.
    bj2.reset().await;
    wiremock::Mock::given(wiremock::matchers::any())
        .respond_with(wiremock::ResponseTemplate::new(200))
        .mount(bj2)
        .await;
    unitgate_tests::eventually!(
        std::time::Duration::from_secs(10),
        healthy(gw.status().await),
        "bj-2 back after a passing check"
    );
    assert_eq!(
        served_by(&get(&gw, &gw.url("/orders/1"), &[("x-user-id", "42")]).await),
        "bj-2"
    );
}

unitgate_tests::both_protocols! {
async fn attempts_per_request_are_capped(proto: Proto) {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Every shard unit swallows requests; the failover chain is long enough
    // that only the cap (max_attempts, default 3) stops the retries.
    let mut text = units.topology(&[]).replace("health_path: /healthz, ", "");
    let mut holes = Vec::new();
    for u in ["bj-1", "bj-2", "sh-1", "sh-2"] {
        let (addr, n) = black_hole().await;
        text = text.replace(
            &units.get(u, "orders").address().to_string(),
            &addr.to_string(),
        );
        holes.push(n);
    }
    let args = GatewayArgs {
        topology_file: Some(write_topology(dir.path(), &text)),
        region: Some("cn-north".into()),
        dc: Some("bj-a".into()),
        proto,
        ..GatewayArgs::default()
    };
    let gw = Gateway::start(Path::new(BIN), args).await.unwrap();
    let r = get(&gw, &gw.url("/orders/3"), &[("x-user-id", "3")]).await;
    assert_eq!(r.status(), 502);
    let sent: usize = holes
        .iter()
        .map(|n| n.load(std::sync::atomic::Ordering::SeqCst))
        .sum();
    assert_eq!(sent, 3, "one request, three attempts");
}
}
