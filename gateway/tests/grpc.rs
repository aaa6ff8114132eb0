//! gRPC through units: a real gRPC server (tonic's health service) as each
//! shard unit's service behind a route with `upstream_protocol: h2c`,
//! called by a tonic client over TLS (HTTP/2 by ALPN) on the public
//! listener and over h2c on the internal one. Statuses ride in trailers;
//! routing is by the `x-user-id` metadata; a failover carries the dye in
//! `baggage` metadata and the internal listener sends a dyed call home;
//! the gateway's own errors are gRPC statuses.
// Test code: a failed unwrap is a failed test; a std Mutex keeps what a
// test server saw.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Request};
use tonic_health::pb::health_check_response::ServingStatus as Answer;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::ServingStatus;
use unit_router::{Dye, Reason};
use unitgate_tests::gateway::{test_keyring, Units};
use unitgate_tests::proto::{test_pki, Proto};

/// One unit's gRPC server: its health service names the unit (`Check` of
/// the unit's own name is SERVING, of any other NOT_FOUND), and the
/// metadata of every call it got is kept.
struct GrpcUnit {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<MetadataMap>>>,
}

async fn grpc_unit(unit: &str) -> GrpcUnit {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(unit, ServingStatus::Serving)
        .await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let service =
        tonic::service::interceptor::InterceptedService::new(service, move |req: Request<()>| {
            record.lock().unwrap().push(req.metadata().clone());
            Ok(req)
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        // Keep the reporter alive as long as the server.
        let _reporter = reporter;
        Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    GrpcUnit { addr, seen }
}

/// The sample topology with a gRPC route: `profile` of the shard units
/// served by `grpc` (an address per unit; none: that unit is down), no
/// HTTP health checks on them.
fn topology(units: &Units, grpc: &[(&str, Option<SocketAddr>)]) -> String {
    let mut text = units.topology(&[]);
    for (unit, addr) in grpc {
        let old = units.get(unit, "profile").address().to_string();
        let to = addr.map_or_else(
            || format!("127.0.0.1:{}", unitgate_tests::free_port()),
            |a| a.to_string(),
        );
        text = text.replace(
            &format!("profile: {{endpoints: [\"{old}\"], health_path: /healthz, health_interval_ms: 1000}}"),
            &format!("profile: {{endpoints: [\"{to}\"]}}"),
        );
    }
    text.push_str(
        "\nroutes/grpc-health:\n  hosts: [\"*.example.com\"]\n  path_prefix: /grpc.health.v1.Health/\n  service: profile\n  policy: shard\n  listener: both\n  upstream_protocol: h2c\n",
    );
    // The same service behind the demo issuer's JWT.
    text.push_str(
        "\nroutes/grpc-auth:\n  hosts: [grpc-auth.test]\n  path_prefix: /grpc.health.v1.Health/\n  service: profile\n  policy: shard\n  auth: required\n  upstream_protocol: h2c\n",
    );
    text
}

/// A token of the demo issuer for `sub`.
fn demo_jwt(sub: &str) -> String {
    let pem = std::fs::read(unitgate_tests::workspace().join("deploy/local/demo-jwt-private.pem"))
        .unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("demo-1".into());
    let now = common::now();
    let claims = serde_json::json!({
        "iss": "https://id.demo.unitgate.invalid", "aud": "api", "sub": sub,
        "iat": now, "exp": now + 300,
    });
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap(),
    )
    .unwrap()
}

/// A gRPC channel to the public listener over TLS (ALPN `h2`), trusting
/// the test CA, for api.example.com.
async fn tls_channel(addr: SocketAddr) -> Channel {
    tls_channel_to(addr, "api.example.com").await
}

/// The same for `host` (SNI and `:authority`).
async fn tls_channel_to(addr: SocketAddr, host: &'static str) -> Channel {
    let (ca, _) = test_pki(std::path::Path::new(common::BIN));
    let ca = native_tls::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    let connector = tower::service_fn(move |_: http::Uri| {
        let ca = ca.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let tls = native_tls::TlsConnector::builder()
                .add_root_certificate(ca)
                .disable_built_in_roots(true)
                .danger_accept_invalid_hostnames(true)
                .request_alpns(&["h2"])
                .build()?;
            let stream = tokio_native_tls::TlsConnector::from(tls)
                .connect(host, tcp)
                .await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    Endpoint::from_shared(format!("http://{host}"))
        .unwrap()
        .connect_with_connector(connector)
        .await
        .unwrap()
}

/// A gRPC channel to the internal listener over h2c (authority
/// `api.example.com`, the route's host).
async fn h2c_channel(addr: SocketAddr) -> Channel {
    let connector = tower::service_fn(move |_: http::Uri| async move {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tcp))
    });
    Endpoint::from_static("http://api.example.com")
        .connect_with_connector(connector)
        .await
        .unwrap()
}

/// A unary call to `path`, a method no route serves.
async fn call_elsewhere(ch: &Channel, path: &'static str) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(ch.clone());
    grpc.ready().await.unwrap();
    let req = Request::new(HealthCheckRequest {
        service: String::new(),
    });
    grpc.unary::<_, tonic_health::pb::HealthCheckResponse, _>(
        req,
        http::uri::PathAndQuery::from_static(path),
        tonic_prost::ProstCodec::default(),
    )
    .await
    .unwrap_err()
}

/// `Check(service)` with metadata: the status, or the gRPC error.
async fn check(
    ch: &Channel,
    service: &str,
    metadata: &[(&'static str, String)],
) -> Result<Answer, tonic::Status> {
    let mut req = Request::new(HealthCheckRequest {
        service: service.to_owned(),
    });
    for (k, v) in metadata {
        req.metadata_mut().insert(*k, v.parse().unwrap());
    }
    HealthClient::new(ch.clone())
        .check(req)
        .await
        .map(|r| r.into_inner().status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_are_routed_by_shard_failed_over_dyed_and_sent_home() {
    let units = Units::start().await;
    let bj2 = grpc_unit("bj-2").await;
    let sh1 = grpc_unit("sh-1").await;
    let sh2 = grpc_unit("sh-2").await;
    // bj-1 is down: shard 3's calls fail over to bj-2.
    let topo = topology(
        &units,
        &[
            ("bj-1", None),
            ("bj-2", Some(bj2.addr)),
            ("sh-1", Some(sh1.addr)),
            ("sh-2", Some(sh2.addr)),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let gw = common::start_proto(topo, dir.path(), "", Proto::H2).await;
    let public = tls_channel(gw.public).await;

    // Routed by the x-user-id metadata: user 42 lives in bj-2, 60 in sh-1.
    let user = |u: &str| vec![("x-user-id", u.to_owned())];
    assert_eq!(
        check(&public, "bj-2", &user("42")).await.unwrap(),
        Answer::Serving
    );
    assert_eq!(
        check(&public, "sh-1", &user("60")).await.unwrap(),
        Answer::Serving
    );
    // The unit's own error status comes back in the trailers, intact.
    let e = check(&public, "sh-1", &user("42")).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert_eq!(e.message(), "service not registered");

    // Shard 3's home bj-1 is down: served by bj-2, dyed in `baggage`.
    let before = bj2.seen.lock().unwrap().len();
    assert_eq!(
        check(&public, "bj-2", &user("3")).await.unwrap(),
        Answer::Serving
    );
    let baggage = {
        let seen = bj2.seen.lock().unwrap();
        assert_eq!(seen.len(), before + 1);
        seen.last()
            .unwrap()
            .get("baggage")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    };
    let dye = Dye::decode(&baggage, &test_keyring(), 0).unwrap().unwrap();
    assert_eq!(
        (dye.shard, dye.home.as_str(), dye.reason),
        (Some(3), "bj-1", Reason::Failover)
    );

    // A service in bj-2 calls through the internal listener (h2c) with a
    // dye whose home sh-1 is up: the call goes home, the dye dropped there.
    let internal = h2c_channel(gw.internal).await;
    let dye60 = Dye {
        shard: Some(60),
        home: "sh-1".into(),
        via: "bj-2".into(),
        reason: Reason::Failover,
        hops: 1,
        exp: i64::MAX,
    };
    let b = dye60.merge_into(Some("k=v"), &test_keyring());
    assert_eq!(
        check(&internal, "sh-1", &[("baggage", b)]).await.unwrap(),
        Answer::Serving
    );
    let seen = sh1.seen.lock().unwrap().last().unwrap().clone();
    assert_eq!(seen.get("baggage").unwrap(), "k=v");
    // An internal header a client sends on the public listener is gone.
    check(
        &public,
        "sh-1",
        &[
            ("x-user-id", "60".into()),
            ("x-unit-criticality", "critical".into()),
        ],
    )
    .await
    .unwrap();
    let seen = sh1.seen.lock().unwrap().last().unwrap().clone();
    assert!(seen.get("x-unit-criticality").is_none());

    // On a route with auth the verified `sub` routes the call (42: bj-2),
    // over a conflicting x-user-id (60: sh-1); no token: UNAUTHENTICATED.
    let authed = tls_channel_to(gw.public, "grpc-auth.test").await;
    let bearer = format!("Bearer {}", demo_jwt("42"));
    assert_eq!(
        check(
            &authed,
            "bj-2",
            &[("authorization", bearer), ("x-user-id", "60".into())]
        )
        .await
        .unwrap(),
        Answer::Serving
    );
    let seen = bj2.seen.lock().unwrap().last().unwrap().clone();
    assert_eq!(seen.get("x-auth-user").unwrap(), "42");
    let e = check(&authed, "bj-2", &user("42")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_own_errors_on_grpc_calls_are_grpc_statuses() {
    let units = Units::start().await;
    let bj2 = grpc_unit("bj-2").await;
    // Every unit's gRPC service is down but bj-2's.
    let topo = topology(
        &units,
        &[
            ("bj-1", None),
            ("bj-2", Some(bj2.addr)),
            ("sh-1", None),
            ("sh-2", None),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let gw = common::start_proto(topo, dir.path(), "", Proto::H2).await;
    let public = tls_channel(gw.public).await;

    // No route for this method: UNIMPLEMENTED, with the gateway's code.
    let e = call_elsewhere(&public, "/nothing.v1.Nothing/Call").await;
    assert_eq!(e.code(), Code::Unimplemented, "{e:?}");
    assert_eq!(
        e.metadata().get("x-unit-error").unwrap(),
        "no_route",
        "{e:?}"
    );
    // Two user keys: INVALID_ARGUMENT.
    let mut req = Request::new(HealthCheckRequest {
        service: "bj-2".into(),
    });
    req.metadata_mut().append("x-user-id", "1".parse().unwrap());
    req.metadata_mut().append("x-user-id", "2".parse().unwrap());
    let e = HealthClient::new(public.clone())
        .check(req)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    // Shard 60's home sh-1 and its failover bj-1 are down: UNAVAILABLE.
    let e = check(&public, "sh-1", &[("x-user-id", "60".into())])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    // The same over h2c on the internal listener, with a hop-capped dye.
    let internal = h2c_channel(gw.internal).await;
    let capped = Dye {
        shard: Some(60),
        home: "sh-1".into(),
        via: "bj-2".into(),
        reason: Reason::Failover,
        hops: 2,
        exp: i64::MAX,
    };
    let e = check(
        &internal,
        "sh-1",
        &[("baggage", capped.merge_into(None, &test_keyring()))],
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::Internal, "{e:?}");
    assert_eq!(e.metadata().get("x-unit-error").unwrap(), "hop_limit");
}

/// A unit whose connections are reset as soon as they open (a crashed
/// process behind a live port, or a connection pooled before the unit died).
async fn resetting_unit() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            // SO_LINGER 0: the close is a reset, not a FIN.
            let _ = s.set_zero_linger();
            drop(s);
        }
    });
    addr
}

/// A gRPC `Check` for user 60 over h2c, with raw HTTP/2 (the h2 library):
/// the response head, and whether the stream ended with it (trailers-only)
/// and then stayed ended (no reset).
async fn raw_grpc_check(addr: SocketAddr) -> (http::HeaderMap, bool, Result<(), h2::Error>) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::post("http://api.example.com/grpc.health.v1.Health/Check")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-user-id", "60")
        .body(())
        .unwrap();
    let (resp, mut send) = client.send_request(req, false).unwrap();
    // An empty Check message: flag 0, length 0.
    send.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .unwrap();
    let resp = tokio::time::timeout(std::time::Duration::from_secs(10), resp)
        .await
        .unwrap()
        .unwrap();
    let (head, mut body) = resp.into_parts();
    let ended = body.is_end_stream();
    let rest = tokio::time::timeout(std::time::Duration::from_secs(10), body.trailers())
        .await
        .unwrap()
        .map(|_| ());
    (head.headers, ended, rest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_with_no_unit_left_is_trailers_only_unavailable() {
    let units = Units::start().await;
    let reset = resetting_unit().await;
    // Every unit's gRPC service is gone: shard 60's home sh-1 resets its
    // connections as they open, the others refuse them.
    let topo = topology(
        &units,
        &[
            ("bj-1", None),
            ("bj-2", None),
            ("sh-1", Some(reset)),
            ("sh-2", None),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let gw = common::start_proto(topo, dir.path(), "", Proto::H2).await;
    // Twice: the second call finds the connections the first one left.
    for _ in 0..2 {
        let (headers, ended, rest) = raw_grpc_check(gw.internal).await;
        assert_eq!(headers.get("grpc-status").unwrap(), "14", "{headers:?}");
        let code = headers.get("x-unit-error").unwrap();
        let codes = [
            "no_unit_available",
            "upstream_unavailable",
            "upstream_error",
        ];
        assert!(codes.iter().any(|c| code == c), "{code:?}");
        assert!(ended, "the status did not end the stream: {headers:?}");
        assert!(
            rest.is_ok(),
            "the stream was reset after its status: {rest:?}"
        );
    }
    // And a gRPC library reads UNAVAILABLE, not CANCELLED.
    let internal = h2c_channel(gw.internal).await;
    let e = check(&internal, "sh-1", &[("x-user-id", "60".into())])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
}
