//! Spans over OTLP/HTTP end to end: a real gateway exports to a receiver
//! (wiremock on loopback) that keeps what it gets; the test decodes it with
//! the OpenTelemetry protobuf definitions (`opentelemetry-proto`). A trace
//! the client started is continued and follows its sampled flag; one the
//! gateway starts is sampled at `otlp_sampling_ratio`; a collector that
//! does not answer costs requests nothing.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use unitgate_tests::gateway::{client, Gateway, Units};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// An OTLP/HTTP receiver: `POST /v1/traces` answered 200.
async fn receiver() -> MockServer {
    let s = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/traces"))
        .respond_with(
            ResponseTemplate::new(200).insert_header("content-type", "application/x-protobuf"),
        )
        .mount(&s)
        .await;
    s
}

/// Every span the receiver got so far.
async fn received(r: &MockServer) -> Vec<Span> {
    let mut out = Vec::new();
    for req in r.received_requests().await.unwrap_or_default() {
        let export = ExportTraceServiceRequest::decode(req.body.as_slice()).expect("OTLP protobuf");
        for rs in export.resource_spans {
            // Every span names the gateway as its service and scope.
            let resource = rs.resource.expect("a resource");
            let service = resource
                .attributes
                .iter()
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.clone());
            assert_eq!(service, Some(Any::StringValue("unitgate".into())));
            for ss in rs.scope_spans {
                assert_eq!(ss.scope.map(|s| s.name), Some("unitgate".into()));
                out.extend(ss.spans);
            }
        }
    }
    out
}

/// The spans of `trace_id` once there are `n` (waited for).
async fn spans_of(r: &MockServer, trace_id: &[u8], n: usize) -> Vec<Span> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got: Vec<Span> = received(r)
            .await
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect();
        if got.len() >= n {
            return got;
        }
        assert!(Instant::now() < deadline, "{} of {n} spans", got.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn attrs(s: &Span) -> HashMap<String, String> {
    s.attributes
        .iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.clone()) {
                Some(Any::StringValue(s)) => s,
                Some(Any::IntValue(i)) => i.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

async fn gateway(collector: &str, dir: &std::path::Path) -> (Units, Gateway) {
    let units = Units::start().await;
    let config =
        format!("access_log = \"off\"\notlp_endpoint = {collector:?}\notlp_sampling_ratio = 1.0\n");
    let gw = common::start_with(units.topology(&[]), dir, &config).await;
    (units, gw)
}

async fn get(gw: &Gateway, path: &str, traceparent: Option<&str>) -> reqwest::Response {
    let mut r = client()
        .get(gw.url(path))
        .header("host", "api.example.com")
        .header("x-user-id", "30");
    if let Some(tp) = traceparent {
        r = r.header("traceparent", tp);
    }
    r.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continued_trace_gets_a_server_span_and_a_client_span_per_attempt() {
    let collector = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let (units, gw) = gateway(&collector.uri(), dir.path()).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let tp = format!("00-{trace}-00f067aa0ba902b7-01");
    assert_eq!(get(&gw, "/orders/7?x=1", Some(&tp)).await.status(), 200);
    let spans = spans_of(&collector, &hex(trace), 2).await;
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .unwrap();
    let attempt = spans
        .iter()
        .find(|s| s.kind == SpanKind::Client as i32)
        .unwrap();
    assert_eq!(server.name, "GET orders");
    assert_eq!(server.parent_span_id, hex("00f067aa0ba902b7"));
    let a = attrs(server);
    for (k, v) in [
        ("http.request.method", "GET"),
        ("url.path", "/orders/7"),
        ("http.route", "orders"),
        ("http.response.status_code", "200"),
        ("server.address", "api.example.com"),
        ("client.address", "127.0.0.1"),
        ("network.protocol.version", "1.1"),
        ("unitgate.shard", "30"),
        ("unitgate.home", "bj-2"),
        ("unitgate.unit", "bj-2"),
        ("unitgate.reason", "shard"),
    ] {
        assert_eq!(a.get(k).map(String::as_str), Some(v), "{k} of {a:?}");
    }
    // The attempt is the server span's child, and the parent the unit saw.
    assert_eq!(attempt.parent_span_id, server.span_id);
    let seen = units.received("bj-2", "orders").await;
    let at_unit = seen.iter().find(|q| q.url.path() == "/orders/7").unwrap();
    let sent = at_unit.headers["traceparent"].to_str().unwrap().to_owned();
    assert_eq!(sent, format!("00-{trace}-{}-01", hex_of(&attempt.span_id)));
    let a = attrs(attempt);
    assert_eq!(a.get("unitgate.attempt").map(String::as_str), Some("1"));
    assert_eq!(a.get("unitgate.unit").map(String::as_str), Some("bj-2"));
    assert_eq!(
        a.get("http.response.status_code").map(String::as_str),
        Some("200")
    );
    assert!(attempt.start_time_unix_nano >= server.start_time_unix_nano);
    assert!(attempt.end_time_unix_nano <= server.end_time_unix_nano);

    // Not sampled by the client: nothing exported for it.
    let quiet = "5bf92f3577b34da6a3ce929d0e0e4736";
    let tp = format!("00-{quiet}-00f067aa0ba902b7-00");
    assert_eq!(get(&gw, "/orders/8", Some(&tp)).await.status(), 200);
    // A trace the gateway starts (ratio 1.0) is exported, with no parent.
    let r = get(&gw, "/orders/9", None).await;
    assert_eq!(r.status(), 200);
    let started = received_until(&collector, |s| {
        attrs(s).get("url.path").map(String::as_str) == Some("/orders/9")
    })
    .await;
    assert!(started.parent_span_id.is_empty());
    assert!(received(&collector)
        .await
        .iter()
        .all(|s| s.trace_id != hex(quiet)));
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn received_until(r: &MockServer, f: impl Fn(&Span) -> bool) -> Span {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(s) = received(r).await.into_iter().find(|s| f(s)) {
            return s;
        }
        assert!(Instant::now() < deadline, "no such span");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A collector that takes connections and never answers: exports hang
/// until their timeout, queues fill, spans are dropped; requests go on at
/// their own pace (each well under the exporter's 5 s timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_does_not_slow_requests() {
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let collector = format!("http://{}", hole.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let (_units, gw) = gateway(&collector, dir.path()).await;
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    // More than the export queue holds (2,048).
    for i in 0..2500 {
        let t = Instant::now();
        assert_eq!(get(&gw, &format!("/orders/{i}"), None).await.status(), 200);
        slowest = slowest.max(t.elapsed());
    }
    assert!(
        slowest < Duration::from_secs(2),
        "slowest request {slowest:?}"
    );
    eprintln!(
        "2,500 requests in {:?}, slowest {slowest:?}",
        started.elapsed()
    );
    drop(hole);
}
