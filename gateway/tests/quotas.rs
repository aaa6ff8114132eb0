//! Rate quotas end to end: a real gateway (two for the cluster scope, on a
//! real etcd), wiremock units. Exactness on one gateway (the burst, plus
//! what the rate refills while the test runs, tolerance one request), the
//! 429 with `Retry-After` and the RateLimit fields, keys counted apart, a
//! live change, and a cluster quota split across the live gateways and
//! taken whole by the survivor once the other's lease expires. Users of
//! one shard, each with a routing cookie, counted apart; an address quota
//! counted before a per-user one.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{start, start_with, BIN};
use unit_router::RouteToken;
use unitgate_tests::gateway::{client, test_keyring, Gateway, GatewayArgs, Units};
use unitgate_tests::{eventually, Etcd};

const HOSTS: &str = r#"["*.example.com", localhost, 127.0.0.1]"#;

fn with_quota(units: &Units, quota: &str, key: &str) -> String {
    format!(
        r#"{}
quotas/q: {quota}
routes/limited: {{hosts: {HOSTS}, path_prefix: /limited, service: orders, policy: shard, quota: q}}
routes/{key}: {{hosts: {HOSTS}, path_prefix: /{key}, service: orders, policy: shard, quota: [q]}}
"#,
        units.topology(&[])
    )
}

struct Answer {
    status: u16,
    retry_after: Option<String>,
    policy: Option<String>,
    state: Option<String>,
    /// The `ug_route` cookie set, if any.
    route_cookie: Option<String>,
}

async fn get(gw: &Gateway, path: &str, user: Option<&str>) -> Answer {
    let headers: Vec<(&str, &str)> = user.map(|u| ("x-user-id", u)).into_iter().collect();
    send(gw, path, &headers).await
}

/// GET `path` with `headers`.
async fn send(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut r = client().get(gw.url(path)).header("host", "api.example.com");
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let resp = r.send().await.unwrap();
    let h = |n: &str| {
        resp.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    Answer {
        status: resp.status().as_u16(),
        retry_after: h("retry-after"),
        policy: h("ratelimit-policy"),
        state: h("ratelimit"),
        route_cookie: route_cookie(&resp),
    }
}

fn route_cookie(resp: &reqwest::Response) -> Option<String> {
    resp.headers().get_all("set-cookie").iter().find_map(|v| {
        let v = v.to_str().ok()?.strip_prefix("ug_route=")?;
        v.split(';').next().map(str::to_owned)
    })
}

/// Send `n` requests; how many were allowed (200) and refused (429).
async fn burst(gw: &Gateway, path: &str, user: Option<&str>, n: usize) -> (usize, usize) {
    let headers: Vec<(&str, &str)> = user.map(|u| ("x-user-id", u)).into_iter().collect();
    burst_with(gw, path, &headers, n).await
}

/// The same, each request with `headers`.
async fn burst_with(
    gw: &Gateway,
    path: &str,
    headers: &[(&str, &str)],
    n: usize,
) -> (usize, usize) {
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..n {
        match send(gw, path, headers).await.status {
            200 => ok += 1,
            429 => refused += 1,
            s => panic!("unexpected status {s}"),
        }
    }
    (ok, refused)
}

#[tokio::test]
async fn a_quota_allows_its_burst_plus_its_rate_and_refuses_the_rest_with_429() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    // 100 per minute (one every 600 ms), 20 at once.
    let q = r#"{key: ip, rate: 100, per_s: 60, burst: 20}"#;
    let gw = start(with_quota(&units, q, "other"), dir.path()).await;
    let began = Instant::now();
    let first = get(&gw, "/limited/1", None).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.policy.as_deref(), Some("\"q\";q=100;w=60"));
    assert_eq!(first.state.as_deref(), Some("\"q\";r=19;t=1"));
    let (ok, refused) = burst(&gw, "/limited/1", None, 59).await;
    let refill = (began.elapsed().as_secs_f64() / 0.6).floor() as usize;
    let allowed = ok + 1;
    // Tolerance: one request either way (a refill at the edge of the run).
    assert!(
        allowed + 1 >= 20 + refill && allowed <= 20 + refill + 1,
        "allowed {allowed}, expected 20 + {refill}"
    );
    assert_eq!(allowed + refused, 60);
    let r = get(&gw, "/limited/1", None).await;
    assert_eq!(r.status, 429);
    let wait: u64 = r.retry_after.unwrap().parse().unwrap();
    assert!((1..=1).contains(&wait), "Retry-After {wait}");
    assert_eq!(r.state.as_deref(), Some("\"q\";r=0;t=1"));
    // The quota's key is the client IP: another route with the same quota
    // shares the count; nothing refused reached a unit.
    assert_eq!(get(&gw, "/other/1", None).await.status, 429);
    assert_eq!(common::total_received(&units).await, allowed);
}

#[tokio::test]
async fn each_user_has_their_own_count_and_a_live_change_applies() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let q = r#"{key: user, rate: 1, per_s: 3600, burst: 3}"#;
    let gw = start(with_quota(&units, q, "other"), dir.path()).await;
    assert_eq!(burst(&gw, "/limited/1", Some("7"), 5).await, (3, 2));
    assert_eq!(burst(&gw, "/limited/1", Some("8"), 5).await, (3, 2));
    // No user key: counted by the client IP.
    assert_eq!(burst(&gw, "/limited/1", None, 5).await, (3, 2));
    // A live change (the topology file rewritten): a bigger burst.
    let q = r#"{key: user, rate: 1, per_s: 3600, burst: 10}"#;
    std::fs::write(
        dir.path().join("topology.yaml"),
        with_quota(&units, q, "other"),
    )
    .unwrap();
    eventually!(
        Duration::from_secs(10),
        gw.status().await["quotas"]["q"]["burst"] == 10,
        "the new quota applied"
    );
    assert_eq!(burst(&gw, "/limited/1", Some("7"), 12).await, (10, 2));
    // Removing the quota from the route: no limit.
    let text = with_quota(&units, q, "other").replace(", quota: q}", "}");
    std::fs::write(dir.path().join("topology.yaml"), text).unwrap();
    eventually!(
        Duration::from_secs(10),
        get(&gw, "/limited/1", Some("7")).await.status == 200,
        "the quota removed"
    );
    let r = get(&gw, "/limited/1", Some("7")).await;
    assert!(r.policy.is_none() && r.state.is_none());
}

/// The routing cookie the gateway gives `user`, asking from `addr`.
async fn cookie_of(gw: &Gateway, user: &str, addr: &str) -> String {
    let first = send(
        gw,
        "/limited/1",
        &[("x-user-id", user), ("x-forwarded-for", addr)],
    )
    .await;
    assert_eq!(first.status, 200, "user {user}");
    first.route_cookie.expect("a routing cookie")
}

#[tokio::test]
async fn users_of_one_shard_with_routing_cookies_have_their_own_counts() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let q = r#"{key: user, rate: 1, per_s: 3600, burst: 3}"#;
    // The test client is the trusted proxy: `x-forwarded-for` names the client.
    let config = "trusted_proxies = [\"127.0.0.1/32\"]\n";
    let gw = start_with(with_quota(&units, q, "other"), dir.path(), config).await;
    // Users 42 and 142 share shard 42 (100 shards, `shard_hash: mod`).
    let (addr_a, addr_b) = ("198.51.100.1", "198.51.100.2");
    let a = cookie_of(&gw, "42", addr_a).await;
    let b = cookie_of(&gw, "142", addr_b).await;
    let keys = test_keyring();
    let shard = |t: &str| RouteToken::decode(t, &keys, 0).unwrap().shard;
    assert_eq!((shard(&a), shard(&b)), (Some(42), Some(42)));
    // Later requests carry only the cookie. User 42 spends their bucket...
    let (cookie_a, cookie_b) = (format!("ug_route={a}"), format!("ug_route={b}"));
    let from_a = [("cookie", cookie_a.as_str()), ("x-forwarded-for", addr_a)];
    assert_eq!(burst_with(&gw, "/limited/1", &from_a, 5).await, (3, 2));
    // ...and user 142, of the same shard, still has theirs.
    let from_b = [("cookie", cookie_b.as_str()), ("x-forwarded-for", addr_b)];
    assert_eq!(burst_with(&gw, "/limited/1", &from_b, 3).await, (3, 0));
}

#[tokio::test]
async fn an_address_quota_refuses_before_a_per_user_quota_counts() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    // The per-user quota is listed first; the address allows one request.
    let topology = format!(
        r#"{}
quotas/u: {{key: user, rate: 1, per_s: 3600, burst: 5}}
quotas/a: {{key: ip, rate: 1, per_s: 3600, burst: 1}}
routes/guarded: {{hosts: {HOSTS}, path_prefix: /guarded, service: orders, policy: shard, quota: [u, a]}}
routes/plain: {{hosts: {HOSTS}, path_prefix: /plain, service: orders, policy: shard, quota: [u]}}
"#,
        units.topology(&[])
    );
    let gw = start(topology, dir.path()).await;
    assert_eq!(burst(&gw, "/guarded/1", Some("7"), 4).await, (1, 3));
    let refused = get(&gw, "/guarded/1", Some("8")).await;
    assert_eq!((refused.status, left(&refused)), (429, Some(("a", 0))));
    // The refused requests counted for no user: user 7 spent one, user 8 none.
    let r = get(&gw, "/plain/1", Some("7")).await;
    assert_eq!((r.status, left(&r)), (200, Some(("u", 3))));
    let r = get(&gw, "/plain/1", Some("8")).await;
    assert_eq!((r.status, left(&r)), (200, Some(("u", 4))));
}

/// The quota named in the `RateLimit` field and its remaining count.
fn left(a: &Answer) -> Option<(&str, u32)> {
    let (name, rest) = a.state.as_deref()?.split_once(";r=")?;
    let r = rest.split(';').next()?.parse().ok()?;
    Some((name.trim_matches('"'), r))
}

async fn gateway_on(etcd: &Etcd) -> Gateway {
    let args = GatewayArgs {
        etcd: Some(etcd.endpoint()),
        region: Some("cn-north".into()),
        dc: Some("bj-a".into()),
        ..GatewayArgs::default()
    };
    Gateway::start(Path::new(BIN), args).await.unwrap()
}

async fn share(gw: &Gateway) -> (u64, u64) {
    let s = gw.status().await;
    let q = &s["quotas"]["q"];
    (
        q["gateways"].as_u64().unwrap_or(0),
        q["burst"].as_u64().unwrap_or(0),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_quota_is_split_across_live_gateways() {
    let etcd = Etcd::start().await.unwrap();
    let units = Units::start().await;
    // 40 at once across the cluster; refills once an hour.
    let q = r#"{key: route, rate: 1, per_s: 3600, burst: 40, scope: cluster}"#;
    let kv = config_center::kv::parse_document(&with_quota(&units, q, "other"), "t").unwrap();
    etcd.put_all(&kv).await.unwrap();
    let a = gateway_on(&etcd).await;
    let b = gateway_on(&etcd).await;
    for gw in [&a, &b] {
        eventually!(
            Duration::from_secs(15),
            share(gw).await == (2, 20),
            "each gateway enforces half"
        );
    }
    assert_eq!(burst(&a, "/limited/1", None, 30).await, (20, 10));
    assert_eq!(burst(&b, "/limited/1", None, 30).await, (20, 10));
    // b stops; once its lease expires (10 s) a takes the whole quota.
    drop(b.kill());
    eventually!(
        Duration::from_secs(30),
        share(&a).await == (1, 40),
        "the survivor enforces all"
    );
    assert_eq!(burst(&a, "/limited/1", None, 50).await, (40, 10));
}
