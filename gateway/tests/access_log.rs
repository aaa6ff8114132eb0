//! The access log and request identity end to end: a real gateway writing
//! its access log to a file, wiremock units. A known sequence of requests
//! (a routed GET, a failover, a 401, a 429, a shed, an HTTP/2 call, a gRPC
//! call, a client that goes away) leaves one line each with the expected
//! fields and flags; `x-request-id` and the trace context travel from the
//! client to the unit, back in the answer and into the log.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use unitgate_tests::gateway::{client, Gateway, Units};
use wiremock::matchers::path;
use wiremock::{Mock, ResponseTemplate};

/// The sample topology with a tight per-address quota on `/tight`, the
/// orders service limited to one request at a time, and bj-1 down.
fn topology(units: &Units) -> String {
    format!(
        r#"{}
quotas/tight: {{key: ip, rate: 1, per_s: 3600, burst: 1, scope: gateway}}
routes/tight: {{hosts: ["*.example.com", localhost, 127.0.0.1], path_prefix: /tight, service: orders, policy: shard, quota: tight}}
services/orders:
  limiter: {{enabled: true, initial: 1, min: 1, max: 1}}
"#,
        units.topology(&["bj-1"])
    )
}

async fn gateway(dir: &Path) -> (Units, Gateway) {
    gateway_with(dir, "").await
}

/// The same, with `extra` lines in the config file.
async fn gateway_with(dir: &Path, extra: &str) -> (Units, Gateway) {
    let units = Units::start().await;
    // `/orders/slow` takes 2 s on every orders server.
    for ((_, service), server) in &units.servers {
        if service == "orders" {
            Mock::given(path("/orders/slow"))
                .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(2)))
                .with_priority(1)
                .mount(server)
                .await;
        }
    }
    let log = dir.join("access.log");
    let config = format!("access_log = {:?}\n{extra}", log.display().to_string());
    let gw = common::start_with(topology(&units), dir, &config).await;
    (units, gw)
}

/// The access log's lines, once one has `path` (waited for).
fn line_of(dir: &Path, path: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(dir.join("access.log")).unwrap_or_default();
        let found = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
            .find(|v| v["path"] == path);
        if let Some(v) = found {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "no access-log line for {path}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn get(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut r = client().get(gw.url(path)).header("host", "api.example.com");
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().await.unwrap()
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_leaves_one_line_with_its_fields_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let (_units, gw) = gateway(dir.path()).await;

    // A routed GET: shard 30 is bj-2's.
    let r = get(&gw, "/orders/routed?secret=1", &[("x-user-id", "30")]).await;
    assert_eq!(r.status(), 200);
    let id = header(&r, "x-request-id");
    let v = line_of(dir.path(), "/orders/routed");
    assert_eq!(v["request_id"], id.as_str());
    assert_eq!(v["listener"], "public");
    assert_eq!(v["proto"], "http/1.1");
    assert_eq!(v["tls"], Value::Null);
    assert_eq!(v["method"], "GET");
    assert_eq!(v["host"], "api.example.com");
    assert_eq!(v["route"], "orders");
    assert_eq!(v["status"], 200);
    assert_eq!(v["shard"], 30);
    assert_eq!(
        (v["home"].as_str(), v["unit"].as_str()),
        (Some("bj-2"), Some("bj-2"))
    );
    assert_eq!(v["reason"], "shard");
    assert_eq!(v["attempts"], 1);
    assert_eq!(v["lane"], Value::Null);
    assert_eq!(v["client"], "127.0.0.1");
    assert_eq!(v["user"], Value::Null);
    assert_eq!(v["error"], Value::Null);
    assert_eq!(v["flags"], "");
    assert_eq!(v["bytes_out"], "bj-2/orders".len());
    assert!(v["upstream_ms"].as_f64().unwrap() <= v["duration_ms"].as_f64().unwrap());
    assert_eq!(v["trace_id"].as_str().unwrap().len(), 32);
    assert!(v["ts"].as_str().unwrap().ends_with('Z'));

    // A failover: shard 7 is bj-1's, and bj-1 is down.
    let r = get(&gw, "/orders/failover", &[("x-user-id", "7")]).await;
    assert_eq!(r.status(), 200);
    let v = line_of(dir.path(), "/orders/failover");
    assert_eq!(
        (v["home"].as_str(), v["unit"].as_str()),
        (Some("bj-1"), Some("bj-2"))
    );
    assert_eq!(v["reason"], "failover");
    assert!(v["flags"].as_str().unwrap().contains("FO"), "{v}");

    // A 401: the account route needs a token.
    let r = get(&gw, "/account/me", &[]).await;
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    let v = line_of(dir.path(), "/account/me");
    assert_eq!(v["status"], 401);
    assert_eq!(v["error"], body["error"]);
    assert_eq!(v["request_id"], body["request_id"]);
    assert_eq!(v["flags"], "UA");
    assert_eq!(v["route"], "account");

    // A 429: the second request of a burst of one.
    assert_eq!(
        get(&gw, "/tight/1", &[("x-user-id", "30")]).await.status(),
        200
    );
    assert_eq!(
        get(&gw, "/tight/2", &[("x-user-id", "30")]).await.status(),
        429
    );
    let v = line_of(dir.path(), "/tight/2");
    assert_eq!(
        (v["status"].as_u64(), v["flags"].as_str()),
        (Some(429), Some("RL"))
    );
    assert_eq!(v["error"], "rate_limited");

    // A shed: the orders service takes one request at a time (at home:
    // one that failed over would be shed last).
    let slow = tokio::spawn({
        let url = gw.url("/orders/slow");
        let r = client().get(url).header("host", "api.example.com");
        async move { r.header("x-user-id", "30").send().await }
    });
    let shed = wait_for_shed(&gw).await;
    let v = line_of(dir.path(), &shed);
    assert_eq!(
        (v["status"].as_u64(), v["flags"].as_str()),
        (Some(503), Some("SH"))
    );
    assert_eq!(v["error"], "overloaded");
    assert_eq!(slow.await.unwrap().unwrap().status(), 200);

    // A client that goes away before the answer.
    let mut s = tokio::net::TcpStream::connect(gw.public).await.unwrap();
    let head = "GET /orders/slow?gone HTTP/1.1\r\nhost: api.example.com\r\nx-user-id: 30\r\n\r\n";
    tokio::io::AsyncWriteExt::write_all(&mut s, head.as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(s);
    let v = wait_line(dir.path(), |v| {
        v["path"] == "/orders/slow" && v["status"] == 499
    });
    assert!(v["flags"].as_str().unwrap().contains("DC"), "{v}");
}

/// Send requests to the limited orders service until one is shed (the
/// slow one holds its only slot); the path of the one shed.
async fn wait_for_shed(gw: &Gateway) -> String {
    for i in 0..100 {
        let path = format!("/orders/shed-{i}");
        if get(gw, &path, &[("x-user-id", "30")]).await.status() == 503 {
            return path;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("nothing was shed");
}

/// The first line that `matches` (waited for).
fn wait_line(dir: &Path, matches: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(dir.join("access.log")).unwrap_or_default();
        let found = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|v| matches(v));
        if let Some(v) = found {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "no such access-log line:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An HTTP/2 call (h2c on the internal listener) and a gRPC call the
/// gateway answers itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_and_grpc_calls_are_logged_with_their_protocol_and_grpc_status() {
    let dir = tempfile::tempdir().unwrap();
    let (_units, gw) = gateway(dir.path()).await;
    let tcp = tokio::net::TcpStream::connect(gw.internal).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let req = |path: &str, grpc: bool| {
        let mut b = http::Request::builder()
            .uri(format!("http://api.example.com{path}"))
            .header("x-user-id", "30");
        if grpc {
            b = b.method("POST").header("content-type", "application/grpc");
        }
        b.body(()).unwrap()
    };
    let (resp, _) = client
        .send_request(req("/orders/over-h2", false), true)
        .unwrap();
    assert_eq!(resp.await.unwrap().status(), 200);
    let v = line_of(dir.path(), "/orders/over-h2");
    assert_eq!(
        (v["proto"].as_str(), v["listener"].as_str()),
        (Some("h2"), Some("internal"))
    );
    assert_eq!(v["grpc_status"], Value::Null);

    let mut client = client.ready().await.unwrap();
    let (resp, _) = client
        .send_request(req("/nowhere.Service/Call", true), true)
        .unwrap();
    let resp = resp.await.unwrap();
    let status: u32 = resp.headers()["grpc-status"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let v = line_of(dir.path(), "/nowhere.Service/Call");
    assert_eq!(v["grpc_status"], status);
    assert_eq!(v["flags"], "NR");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_and_trace_context_travel_to_the_unit_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let (units, gw) = gateway(dir.path()).await;
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let headers = [
        ("x-user-id", "30"),
        ("traceparent", parent),
        ("tracestate", "vendor=1"),
        // Not from a trusted proxy: replaced.
        ("x-request-id", "client-chosen"),
    ];
    let r = get(&gw, "/orders/traced", &headers).await;
    let id = header(&r, "x-request-id");
    assert_eq!(id.len(), 32, "{id}");
    let seen = units.received("bj-2", "orders").await;
    let at_unit = seen
        .iter()
        .find(|q| q.url.path() == "/orders/traced")
        .unwrap();
    let h = |n: &str| {
        at_unit
            .headers
            .get(n)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(h("x-request-id"), Some(id.clone()));
    let tp = h("traceparent").unwrap();
    assert!(
        tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{tp}"
    );
    assert!(
        tp.ends_with("-01") && !tp.contains("00f067aa0ba902b7"),
        "{tp}"
    );
    assert_eq!(h("tracestate").as_deref(), Some("vendor=1"));
    let v = line_of(dir.path(), "/orders/traced");
    assert_eq!(v["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(v["request_id"], id.as_str());

    // An invalid traceparent starts a new trace; its tracestate is dropped.
    let headers = [
        ("x-user-id", "30"),
        (
            "traceparent",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ),
        ("tracestate", "vendor=1"),
    ];
    let r = get(&gw, "/orders/untraced", &headers).await;
    assert_eq!(r.status(), 200);
    let seen = units.received("bj-2", "orders").await;
    let at_unit = seen
        .iter()
        .find(|q| q.url.path() == "/orders/untraced")
        .unwrap();
    let tp = at_unit.headers["traceparent"].to_str().unwrap().to_owned();
    let v = line_of(dir.path(), "/orders/untraced");
    let trace_id = v["trace_id"].as_str().unwrap();
    assert!(
        tp.starts_with(&format!("00-{trace_id}-")),
        "{tp} {trace_id}"
    );
    assert!(
        tp.ends_with("-00"),
        "a trace the gateway starts is not sampled: {tp}"
    );
    assert_ne!(trace_id, "00000000000000000000000000000000");
    assert!(at_unit.headers.get("tracestate").is_none());

    // Every answer the gateway makes itself carries an id too.
    let r = get(&gw, "/nowhere", &[]).await;
    assert_eq!(r.status(), 404);
    let id = header(&r, "x-request-id");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["request_id"], id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxys_request_id_is_kept() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "access_log = {:?}\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
        dir.path().join("access.log").display().to_string()
    );
    let gw = common::start_with(units.topology(&[]), dir.path(), &config).await;
    let headers = [("x-user-id", "30"), ("x-request-id", "lb-7f3a:1")];
    let r = get(&gw, "/orders/kept", &headers).await;
    assert_eq!(header(&r, "x-request-id"), "lb-7f3a:1");
    let v = line_of(dir.path(), "/orders/kept");
    assert_eq!(v["request_id"], "lb-7f3a:1");
    // Malformed, even from a trusted proxy: replaced.
    let headers = [("x-user-id", "30"), ("x-request-id", "has space")];
    let r = get(&gw, "/orders/replaced", &headers).await;
    assert_eq!(header(&r, "x-request-id").len(), 32);
}

/// Heads refused before any request reached the proxy: too large (431)
/// and unparsable (400), each one line with the id its answer carries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_the_guard_refuses_are_logged_too() {
    let dir = tempfile::tempdir().unwrap();
    let (_units, gw) = gateway(dir.path()).await;
    let big = format!("x-big: {}", "a".repeat(40 * 1024));
    let public = gw.public.to_string();
    let (status, text) = common::raw(&public, &["GET /orders/1 HTTP/1.1", "host: a", &big]).await;
    assert_eq!(status, 431);
    let body: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    let v = wait_line(dir.path(), |v| v["status"] == 431);
    assert_eq!(v["request_id"], body["request_id"]);
    assert_eq!(
        (v["error"].as_str(), v["flags"].as_str()),
        (Some("headers_too_large"), Some("BR"))
    );
    assert_eq!(
        (v["listener"].as_str(), v["client"].as_str()),
        (Some("public"), Some("127.0.0.1"))
    );

    // The admin listener's requests too.
    assert_eq!(gw.admin("/healthz").await.0, 200);
    let v = wait_line(dir.path(), |v| {
        v["listener"] == "admin" && v["path"] == "/healthz"
    });
    assert_eq!(
        (v["status"].as_u64(), v["method"].as_str()),
        (Some(200), Some("GET"))
    );
    assert_eq!(v["request_id"].as_str().unwrap().len(), 32);

    let (status, _) = common::raw(&public, &["GET /orders/1 HTTP/1.1", "bad header line"]).await;
    assert_eq!(status, 400);
    let v = wait_line(dir.path(), |v| v["status"] == 400);
    assert_eq!(
        (v["error"].as_str(), v["flags"].as_str()),
        (Some("bad_request"), Some("BR"))
    );
}

/// logrotate: the file is moved, SIGHUP makes the gateway write a new one
/// at the path; the gateway keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reopens_the_file_after_logrotate_moved_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_units, gw) = gateway(dir.path()).await;
    assert_eq!(
        get(&gw, "/orders/before", &[("x-user-id", "30")])
            .await
            .status(),
        200
    );
    line_of(dir.path(), "/orders/before");
    let moved = dir.path().join("access.log.1");
    std::fs::rename(dir.path().join("access.log"), &moved).unwrap();
    let pid = gw.pid().unwrap().to_string();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(hup.success());
    // Lines go to the new file once the signal was handled.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    while !dir.path().join("access.log").exists() {
        assert!(Instant::now() < deadline, "no new access.log after SIGHUP");
        n += 1;
        let path = format!("/orders/after-{n}");
        assert_eq!(get(&gw, &path, &[("x-user-id", "30")]).await.status(), 200);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let path = format!("/orders/after-{}", n + 1);
    assert_eq!(get(&gw, &path, &[("x-user-id", "30")]).await.status(), 200);
    line_of(dir.path(), &path);
    let old = std::fs::read_to_string(&moved).unwrap();
    assert!(old.contains("/orders/before"));
}

/// A gateway that is stopped (SIGTERM, graceful; SIGINT, fast) exits and
/// has written the line of every request it answered first. It once hung
/// about one stop in ten: Pingora's accept loop spun on "A Tokio 1.x
/// context was found, but it is being shutdown" (`vendor/README.md`, 4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_is_written_before_the_gateway_exits() {
    for signal in ["TERM", "INT"] {
        let dir = tempfile::tempdir().unwrap();
        let (_units, mut gw) = gateway(dir.path()).await;
        for i in 0..100 {
            let path = format!("/orders/exit-{i}");
            assert_eq!(get(&gw, &path, &[("x-user-id", "30")]).await.status(), 200);
        }
        let Some(status) = gw.signal_and_wait(signal, Duration::from_secs(30)) else {
            panic!("SIG{signal}: still running:\n{}", gw.log_tail());
        };
        assert!(status.success(), "SIG{signal}: {status}");
        // Read at once: nothing is written after the process is gone.
        let text = std::fs::read_to_string(dir.path().join("access.log")).unwrap();
        let n = text.lines().filter(|l| l.contains("/orders/exit-")).count();
        assert_eq!(n, 100, "SIG{signal}: lines of the answered requests");
    }
}

/// `log_format = "json"`: the diagnostic log is JSON lines, and a failed
/// request's line names its request and trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_diagnostic_log_in_json_names_each_requests_ids() {
    let dir = tempfile::tempdir().unwrap();
    let (_units, gw) = gateway_with(dir.path(), "log_format = \"json\"\n").await;
    // The unit takes 2 s; the client gives it 300 ms: 504.
    let headers = [("x-user-id", "30"), ("x-request-timeout-ms", "300")];
    let r = get(&gw, "/orders/slow", &headers).await;
    assert_eq!(r.status(), 504);
    let id = header(&r, "x-request-id");
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let text = std::fs::read_to_string(&gw.log).unwrap_or_default();
        let found = text.lines().find(|l| l.contains(&id)).map(str::to_owned);
        if let Some(l) = found {
            // Every line is one JSON object.
            for l in text.lines() {
                serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            }
            break l;
        }
        assert!(Instant::now() < deadline, "no log line names {id}:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["level"], "WARN");
    assert_eq!(v["request_id"], id.as_str());
    let logged = line_of(dir.path(), "/orders/slow");
    assert_eq!(v["trace_id"], logged["trace_id"]);
}
