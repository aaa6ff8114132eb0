//! Resilience against real gateway processes and wiremock units that answer
//! 503, hang or slow down on command: failover on retryable statuses (and
//! never a second send of a POST unless keyed and opted in), deadlines
//! across attempts, the (unit, service) breaker opening and closing, and
//! the concurrency limit shedding an overloaded service while a healthy
//! route keeps its latency.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{quantile, start_with, CapacityUpstream};
use unitgate_tests::gateway::{client, Gateway, Units};
use unitgate_tests::proto::{Proto, SendVia};
use wiremock::matchers::{any, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

/// Shard 3 lives in bj-1, whose failover order is bj-2 then sh-1.
const USER: (&str, &str) = ("x-user-id", "3");

/// GET `url` over the gateway's protocol (checked on HTTP/2).
/// The latency test runs alone: the other tests of this file hold this
/// shared while they run, the latency test holds it exclusively (two tests
/// at once on a 2-core machine measure each other, not the gateway).
static BESIDE: std::sync::LazyLock<tokio::sync::RwLock<()>> =
    std::sync::LazyLock::new(Default::default);

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

/// Every request to `/orders...` of `server` gets `t` (health checks pass).
async fn orders_answer(server: &MockServer, t: ResponseTemplate) {
    Mock::given(path_regex("^/orders"))
        .respond_with(t)
        .with_priority(1)
        .mount(server)
        .await;
}

/// Requests of `method` that reached (unit, orders).
async fn count(units: &Units, unit: &str, method: &str) -> usize {
    units
        .received(unit, "orders")
        .await
        .iter()
        .filter(|r| r.method.as_str() == method)
        .count()
}

fn baggage(r: &Request) -> String {
    r.headers
        .get("baggage")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

unitgate_tests::both_protocols! {
async fn a_get_answered_503_fails_over_dyed_and_the_client_gets_200(proto: Proto) {
    let _beside = BESIDE.read().await;
    let units = Units::start().await;
    orders_answer(units.get("bj-1", "orders"), ResponseTemplate::new(503)).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = common::start_proto(units.topology(&[]), dir.path(), "", proto).await;

    let r = get(&gw, &gw.url("/orders/1"), &[USER]).await;
    assert_eq!(
        (r.status().as_u16(), served_by(&r)),
        (200, "bj-2".to_owned())
    );
    assert_eq!(count(&units, "bj-1", "GET").await, 1);
    let at_bj2 = units.received("bj-2", "orders").await;
    let b = baggage(at_bj2.last().unwrap());
    assert!(
        b.contains("ug.home=bj-1") && b.contains("ug.reason=failover"),
        "{b}"
    );
    let m = reqwest::get(gw.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("unitgate_retries_total{kind=\"status\"} 1"),
        "{m}"
    );
}
}

unitgate_tests::both_protocols! {
async fn a_post_answered_503_is_returned_and_sent_once(proto: Proto) {
    let _beside = BESIDE.read().await;
    let units = Units::start().await;
    orders_answer(
        units.get("bj-1", "orders"),
        ResponseTemplate::new(503)
            .insert_header("retry-after", "7")
            .set_body_string("unit busy"),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let gw = common::start_proto(units.topology(&[]), dir.path(), "", proto).await;

    // Without a key, and with one on a route that does not opt in.
    for key in [None, Some("k-1")] {
        let mut req = gw.http()
            .post(gw.url("/orders/1"))
            .header("host", "api.example.com")
            .header(USER.0, USER.1)
            .body("{\"item\":1}");
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        let r = req.send_via(gw.proto).await.unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "7");
        assert_eq!(
            r.text().await.unwrap(),
            "unit busy",
            "the unit's own answer"
        );
    }
    assert_eq!(
        count(&units, "bj-1", "POST").await,
        2,
        "each POST sent once"
    );
    for u in ["bj-2", "sh-1", "sh-2"] {
        assert_eq!(count(&units, u, "POST").await, 0, "POST reached {u}");
    }
}
}

unitgate_tests::both_protocols! {
async fn a_keyed_post_on_an_opted_in_route_fails_over_once(proto: Proto) {
    let _beside = BESIDE.read().await;
    let units = Units::start().await;
    orders_answer(units.get("bj-1", "orders"), ResponseTemplate::new(503)).await;
    let topo = units.topology(&[]).replacen(
        "  policy: shard\n  auth: none\n  listener: both\n",
        "  policy: shard\n  auth: none\n  listener: both\n  retry_with_idempotency_key: true\n",
        1,
    );
    assert!(topo.contains("retry_with_idempotency_key"));
    let dir = tempfile::tempdir().unwrap();
    let gw = common::start_proto(topo, dir.path(), "", proto).await;

    let r = gw.http()
        .post(gw.url("/orders/1"))
        .header("host", "api.example.com")
        .header(USER.0, USER.1)
        .header("idempotency-key", "order-77")
        .body("{\"item\":1}")
        .send_via(gw.proto)
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), served_by(&r)),
        (200, "bj-2".to_owned())
    );
    assert_eq!(count(&units, "bj-1", "POST").await, 1);
    let at_bj2: Vec<Request> = units
        .received("bj-2", "orders")
        .await
        .into_iter()
        .filter(|r| r.method.as_str() == "POST")
        .collect();
    assert_eq!(at_bj2.len(), 1, "sent once more, to the failover unit");
    assert_eq!(at_bj2[0].headers["idempotency-key"], "order-77");
    assert_eq!(at_bj2[0].body, b"{\"item\":1}");

    // Without the key the same POST is never sent twice.
    let r = gw.http()
        .post(gw.url("/orders/1"))
        .header("host", "api.example.com")
        .header(USER.0, USER.1)
        .body("x")
        .send_via(gw.proto)
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(count(&units, "bj-1", "POST").await, 2);
    assert_eq!(count(&units, "bj-2", "POST").await, 1);
}
}

unitgate_tests::both_protocols! {
async fn a_real_answer_beats_the_gateway_error_of_a_later_attempt(proto: Proto) {
    let _beside = BESIDE.read().await;
    let units = Units::start().await;
    orders_answer(
        units.get("bj-1", "orders"),
        ResponseTemplate::new(503)
            .insert_header("retry-after", "7")
            .set_body_string("unit busy"),
    )
    .await;
    // The failover unit takes the retry and never answers in time.
    orders_answer(
        units.get("bj-2", "orders"),
        ResponseTemplate::new(200).set_delay(Duration::from_secs(3)),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let gw = common::start_proto(units.topology(&[]), dir.path(), "", proto).await;

    let r = get(
        &gw,
        &gw.url("/orders/1"),
        &[USER, ("x-request-timeout-ms", "400")],
    )
    .await;
    assert_eq!(r.status(), 503, "bj-1's answer, not the gateway's 504");
    assert_eq!(r.headers()["retry-after"], "7");
    assert_eq!(served_by(&r), "bj-1");
    assert_eq!(r.text().await.unwrap(), "", "its body was not read");
    assert_eq!(units.received("bj-2", "orders").await.len(), 1);
}
}

/// The sample topology with a 200 ms read timeout on the orders endpoints
/// of `slow`.
fn with_read_timeout(units: &Units, text: String, slow: &[&str]) -> String {
    let mut text = text;
    for u in slow {
        let addr = units.get(u, "orders").address().to_string();
        let from = format!("[\"{addr}\"], health_path");
        assert!(text.contains(&from));
        text = text.replace(
            &from,
            &format!("[\"{addr}\"], read_timeout_ms: 200, health_path"),
        );
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_300ms_deadline_holds_across_two_slow_attempts() {
    let _beside = BESIDE.read().await;
    let units = Units::start().await;
    for u in ["bj-1", "bj-2"] {
        orders_answer(
            units.get(u, "orders"),
            ResponseTemplate::new(200).set_delay(Duration::from_secs(3)),
        )
        .await;
    }
    let topo = with_read_timeout(&units, units.topology(&[]), &["bj-1", "bj-2"]);
    let dir = tempfile::tempdir().unwrap();
    let gw = start_with(topo, dir.path(), "").await;

    let t0 = Instant::now();
    let r = get(
        &gw,
        &gw.url("/orders/1"),
        &[USER, ("x-request-timeout-ms", "300")],
    )
    .await;
    let took = t0.elapsed();
    assert_eq!(r.status(), 504);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], "deadline_exceeded");
    // Tolerance: 150 ms over the deadline for a loaded CI machine.
    assert!(took < Duration::from_millis(450), "answered after {took:?}");
    assert!(
        took >= Duration::from_millis(280),
        "answered after {took:?}"
    );
    // Two attempts: bj-1 timed out at its 200 ms read timeout, then bj-2
    // got what was left, told so in x-request-timeout-ms.
    let first = units.received("bj-1", "orders").await;
    let second = units.received("bj-2", "orders").await;
    assert_eq!((first.len(), second.len()), (1, 1));
    let left = |r: &Request| -> u64 {
        r.headers["x-request-timeout-ms"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(
        left(&first[0]) <= 300 && left(&first[0]) > 200,
        "{}",
        left(&first[0])
    );
    assert!(left(&second[0]) <= 100, "{}", left(&second[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_deadlines_are_capped_parsed_and_forwarded() {
    let _beside = BESIDE.read().await;
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let topo = units.topology(&[]).replacen(
        "  path_prefix: /orders\n",
        "  path_prefix: /orders\n  timeout_ms: 1000\n",
        1,
    );
    let gw = start_with(topo, dir.path(), "").await;

    // grpc-timeout is forwarded as what is left, in the same header.
    let r = get(&gw, &gw.url("/orders/1"), &[USER, ("grpc-timeout", "250m")]).await;
    assert_eq!(r.status(), 200);
    let seen = units.received("bj-1", "orders").await;
    let g = seen.last().unwrap().headers["grpc-timeout"]
        .to_str()
        .unwrap()
        .to_owned();
    let ms: u64 = g.strip_suffix('m').unwrap().parse().unwrap();
    assert!(ms <= 250 && ms > 150, "{g}");

    // A longer one than the route's is capped by it.
    let r = get(
        &gw,
        &gw.url("/orders/1"),
        &[USER, ("x-request-timeout-ms", "60000")],
    )
    .await;
    assert_eq!(r.status(), 200);
    let seen = units.received("bj-1", "orders").await;
    let left: u64 = seen.last().unwrap().headers["x-request-timeout-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(left <= 1000, "{left}");

    // Malformed: 400, nothing sent.
    let before = units.received("bj-1", "orders").await.len();
    for bad in [("grpc-timeout", "1.5S"), ("x-request-timeout-ms", "soon")] {
        let r = get(&gw, &gw.url("/orders/1"), &[USER, bad]).await;
        assert_eq!(r.status(), 400, "{bad:?}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"], "bad_request");
    }
    // Already spent: 504 at once, nothing sent.
    let t0 = Instant::now();
    let r = get(
        &gw,
        &gw.url("/orders/1"),
        &[USER, ("x-request-timeout-ms", "0")],
    )
    .await;
    assert_eq!(r.status(), 504);
    assert!(t0.elapsed() < Duration::from_millis(500));
    assert_eq!(units.received("bj-1", "orders").await.len(), before);
}

/// Passive ejection off and a full retry budget, so that the breaker alone
/// moves traffic.
const BREAKER_ONLY: &str =
    "eject_after_failures = 1000000\neject_error_rate_percent = 0\nretry_budget_percent = 100\n";

async fn breaker_of(gw: &unitgate_tests::gateway::Gateway, unit: &str) -> serde_json::Value {
    let st = gw.status().await;
    st["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == unit)
        .unwrap()["services"]["orders"]["breaker"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_on_a_failing_unit_shuttles_its_traffic_and_closes_after_recovery() {
    let _beside = BESIDE.read().await;
    let units = Units::start().await;
    let bj1 = units.get("bj-1", "orders");
    orders_answer(bj1, ResponseTemplate::new(503)).await;
    let mut topo = units.topology(&[]);
    topo.push_str("\nservices/orders:\n  breaker: {min_requests: 10, window_ms: 2000}\n");
    let dir = tempfile::tempdir().unwrap();
    let gw = start_with(topo, dir.path(), BREAKER_ONLY).await;
    assert_eq!(breaker_of(&gw, "bj-1").await["state"], "closed");

    // Every request still succeeds (the 503 is retried on bj-2) while the
    // breaker counts bj-1's failures.
    for _ in 0..20 {
        let r = get(&gw, &gw.url("/orders/1"), &[USER]).await;
        assert_eq!((r.status().as_u16(), served_by(&r)), (200, "bj-2".into()));
    }
    let b = breaker_of(&gw, "bj-1").await;
    assert_eq!(b["state"], "open", "{b}");
    assert!(b["drop_ratio"].as_f64().unwrap() > 0.5, "{b}");

    // Open: most requests go straight to bj-2, dyed; few probes reach bj-1.
    let before = count(&units, "bj-1", "GET").await;
    for _ in 0..40 {
        let r = get(&gw, &gw.url("/orders/1"), &[USER]).await;
        assert_eq!((r.status().as_u16(), served_by(&r)), (200, "bj-2".into()));
    }
    let probes = count(&units, "bj-1", "GET").await - before;
    assert!(
        probes <= 12,
        "{probes} of 40 requests reached the open breaker's unit"
    );
    let last = units.received("bj-2", "orders").await;
    assert!(baggage(last.last().unwrap()).contains("ug.reason=failover"));
    assert!(
        breaker_of(&gw, "bj-1").await["refused_total"]
            .as_u64()
            .unwrap()
            >= 28
    );

    // bj-1 recovers: probes succeed, the ratio falls, traffic comes home.
    bj1.reset().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).insert_header("x-upstream-unit", "bj-1"))
        .mount(bj1)
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut home = 0;
    while home < 5 {
        assert!(Instant::now() < deadline, "traffic never came back to bj-1");
        let r = get(&gw, &gw.url("/orders/1"), &[USER]).await;
        assert_eq!(r.status(), 200);
        if served_by(&r) == "bj-1" {
            home += 1;
        } else {
            home = 0;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    unitgate_tests::eventually!(
        Duration::from_secs(10),
        breaker_of(&gw, "bj-1").await["state"] == "closed",
        "the breaker closes"
    );
}

/// Send GET `path` (user 3) every `every` for `for_`, each on its own task;
/// the (status, error code, latency) of each.
async fn open_loop(url: String, every: Duration, for_: Duration) -> Vec<(u16, String, Duration)> {
    let mut tick = tokio::time::interval(every);
    let end = Instant::now() + for_;
    let mut tasks = Vec::new();
    while Instant::now() < end {
        tick.tick().await;
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let r = client()
                .get(&url)
                .header("host", "api.example.com")
                .header(USER.0, USER.1)
                .send()
                .await
                .ok()?;
            let status = r.status().as_u16();
            let code = r
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_default();
            Some((status, code, t0.elapsed()))
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        if let Ok(Some(r)) = t.await {
            out.push(r);
        }
    }
    out
}

/// Latencies of sequential GETs of the healthy route while `busy` runs.
async fn healthy_latency(url: String, stop: Arc<AtomicUsize>) -> Vec<Duration> {
    // A client of its own: its connections are never ones the load used.
    let own = reqwest::Client::new();
    let mut out = Vec::new();
    while stop.load(Ordering::SeqCst) == 0 {
        let t0 = Instant::now();
        let r = own
            .get(&url)
            .header("host", "api.example.com")
            .header(USER.0, USER.1)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        out.push(t0.elapsed());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    out
}

/// The sample topology with bj-1's orders at `slow` and the orders
/// service limited (or not).
fn overload_topology(units: &Units, slow: &CapacityUpstream, limiter: bool) -> String {
    let addr = units.get("bj-1", "orders").address().to_string();
    let mut t = units.topology(&[]).replace(&addr, &slow.addr);
    t = t.replacen(
        "  path_prefix: /orders\n",
        "  path_prefix: /orders\n  timeout_ms: 2000\n",
        1,
    );
    if limiter {
        t.push_str(
            "\nservices/orders:\n  limiter: {enabled: true, initial: 8, min: 2, max: 200}\n",
        );
    }
    t
}

/// What one overload run measured.
struct Overload {
    sent: usize,
    ok: usize,
    /// Latencies of the slow route's 200 answers.
    ok_latency: Vec<Duration>,
    shed: Vec<Duration>,
    healthy_before: Vec<Duration>,
    healthy_during: Vec<Duration>,
}

/// A slow unit (capacity 2 at 50 ms each: 40 requests/s) offered 400
/// requests/s for 3 s, while a healthy route on the same gateway is timed.
async fn overload_run(limiter: bool) -> Overload {
    let units = Units::start().await;
    let slow = CapacityUpstream::start(2, Duration::from_millis(50)).await;
    let dir = tempfile::tempdir().unwrap();
    // Health checks keep the slow unit in; the orders route is the load.
    // Every client is on loopback: the per-ip connection cap is raised.
    let gw = start_with(
        overload_topology(&units, &slow, limiter),
        dir.path(),
        "max_connections_per_ip = 100000\n",
    )
    .await;
    let healthy = gw.url("/profile/1");
    let stop = Arc::new(AtomicUsize::new(0));
    let healthy_before = {
        let s = Arc::new(AtomicUsize::new(0));
        let h = tokio::spawn(healthy_latency(healthy.clone(), s.clone()));
        tokio::time::sleep(Duration::from_millis(500)).await;
        s.store(1, Ordering::SeqCst);
        h.await.unwrap()
    };
    let during = tokio::spawn(healthy_latency(healthy, stop.clone()));
    let results = open_loop(
        gw.url("/orders/1"),
        Duration::from_micros(2_500),
        Duration::from_secs(3),
    )
    .await;
    stop.store(1, Ordering::SeqCst);
    let healthy_during = during.await.unwrap();
    Overload {
        sent: results.len(),
        ok: results.iter().filter(|r| r.0 == 200).count(),
        ok_latency: results.iter().filter(|r| r.0 == 200).map(|r| r.2).collect(),
        shed: results
            .iter()
            .filter(|r| r.0 == 503 && r.1 == "overloaded")
            .map(|r| r.2)
            .collect(),
        healthy_before,
        healthy_during,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_service_sheds_fast_while_a_healthy_route_keeps_its_latency() {
    // Its latencies are measured with no other test of this file running.
    let _alone = BESIDE.write().await;
    let mut o = overload_run(true).await;
    let shed_p99 = quantile(&mut o.shed, 0.99);
    let before = quantile(&mut o.healthy_before, 0.99);
    let during = quantile(&mut o.healthy_during, 0.99);
    eprintln!(
        "sent {} ok {} shed {} (p99 {shed_p99:?}); healthy p99 before {before:?} during {during:?}",
        o.sent,
        o.ok,
        o.shed.len()
    );
    assert!(o.ok > 0, "the slow unit still serves at its capacity");
    assert!(o.shed.len() > o.sent / 2, "most of a 10x overload is shed");
    // Shed at once or after a short CoDel wait: milliseconds, not the
    // seconds a request would queue at the unit.
    assert!(
        shed_p99 < Duration::from_millis(300),
        "shed p99 {shed_p99:?}"
    );
    assert!(
        during < Duration::from_millis(300),
        "healthy p99 {during:?}"
    );
}

/// Answers 503 to every other request, 200 to the rest.
struct HalfFailing(AtomicUsize);

impl wiremock::Respond for HalfFailing {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        if self.0.fetch_add(1, Ordering::SeqCst) % 2 == 0 {
            ResponseTemplate::new(503)
        } else {
            ResponseTemplate::new(200).insert_header("x-upstream-unit", "bj-1")
        }
    }
}

/// 2000 GETs (8 at a time) to a user whose home answers 503 to half of its
/// requests; the share that got 200, and where they were served.
async fn failover_rate(config: &str) -> (f64, usize, usize, usize) {
    let units = Units::start().await;
    Mock::given(path_regex("^/orders"))
        .respond_with(HalfFailing(AtomicUsize::new(0)))
        .with_priority(1)
        .mount(units.get("bj-1", "orders"))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let gw = start_with(units.topology(&[]), dir.path(), config).await;
    let url = gw.url("/orders/1");
    let mut loops = Vec::new();
    for _ in 0..8 {
        let url = url.clone();
        loops.push(tokio::spawn(async move {
            let (mut ok, mut home) = (0, 0);
            for _ in 0..250 {
                let r = client()
                    .get(&url)
                    .header("host", "api.example.com")
                    .header(USER.0, USER.1)
                    .send()
                    .await
                    .unwrap();
                if r.status() == 200 {
                    ok += 1;
                    home += usize::from(served_by(&r) == "bj-1");
                }
            }
            (ok, home)
        }));
    }
    let (mut ok, mut home) = (0, 0);
    for l in loops {
        let (o, h) = l.await.unwrap();
        ok += o;
        home += h;
    }
    let at_home = count(&units, "bj-1", "GET").await;
    (ok as f64 / 2000.0, home, ok - home, at_home)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement for docs/bench/results-resilience.md, not a check"]
async fn measure_failover_success_rate_against_a_unit_failing_half_its_requests() {
    let _beside = BESIDE.read().await;
    for (name, config) in [
        ("defaults", ""),
        (
            "ejection off, retry budget 20 %",
            "eject_after_failures = 1000000\neject_error_rate_percent = 0\n",
        ),
        ("ejection off, retry budget 100 %", BREAKER_ONLY),
    ] {
        let (rate, home, away, reached) = failover_rate(config).await;
        println!(
            "failover [{name}]: {:.2} % of 2000 GETs got 200 ({home} served by bj-1, {away} by the failover unit); bj-1 received {reached}",
            rate * 100.0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement for docs/bench/results-resilience.md, not a check"]
async fn measure_a_healthy_route_beside_an_overloaded_one() {
    let _beside = BESIDE.read().await;
    for limiter in [false, true] {
        let mut o = overload_run(limiter).await;
        let q = |v: &mut Vec<Duration>, p| quantile(v, p).as_secs_f64() * 1000.0;
        println!(
            "limiter {}: orders sent {} ok {} (p50 {:.0} ms, p99 {:.0} ms) shed {} (shed p50 {:.1} ms, p99 {:.1} ms); healthy route p50/p99 before {:.2}/{:.2} ms, during {:.2}/{:.2} ms ({} samples)",
            if limiter { "on " } else { "off" },
            o.sent,
            o.ok,
            q(&mut o.ok_latency, 0.5),
            q(&mut o.ok_latency, 0.99),
            o.shed.len(),
            q(&mut o.shed, 0.5),
            q(&mut o.shed, 0.99),
            q(&mut o.healthy_before, 0.5),
            q(&mut o.healthy_before, 0.99),
            q(&mut o.healthy_during, 0.5),
            q(&mut o.healthy_during, 0.99),
            o.healthy_during.len(),
        );
    }
}
