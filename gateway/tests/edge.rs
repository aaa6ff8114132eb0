//! The edge below HTTP: TLS certificates chosen by SNI and reloaded from
//! their files, protocol versions and ALPN, the HTTPS redirect listener
//! and HSTS, the PROXY protocol, a TLS handshake that never finishes, the
//! scheme units are told a request came over.
//! Certificates come from a local CA made in the test.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
use openssl::x509::X509;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use unitgate::tls::pki::LocalCa;
use unitgate_tests::eventually;
use unitgate_tests::gateway::Units;

/// A CA and a directory of two certificates: `api.crt` (api.example.com)
/// and `shop.crt` (*.shop.test).
fn pki(dir: &Path) -> (LocalCa, PathBuf, PathBuf) {
    let ca = LocalCa::new("edge test CA", 2).unwrap();
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    ca.issue_into(&certs, "api", &["api.example.com", "127.0.0.1"], 2)
        .unwrap();
    ca.issue_into(&certs, "shop", &["*.shop.test"], 2).unwrap();
    let ca_file = dir.join("ca.crt");
    std::fs::write(&ca_file, ca.cert_pem().unwrap()).unwrap();
    (ca, ca_file, certs)
}

/// What a TLS client saw: the negotiated version, ALPN and the server
/// certificate's DNS names.
#[derive(Debug)]
struct Seen {
    version: String,
    alpn: Option<String>,
    names: Vec<String>,
    serial: String,
}

/// A blocking TLS handshake with `addr` (after `prefix` bytes in the
/// clear), verifying the chain against `ca`; `Err` if it fails.
fn handshake(
    addr: SocketAddr,
    ca: &Path,
    sni: &str,
    versions: (SslVersion, SslVersion),
    alpn: &[u8],
    prefix: &[u8],
    request: Option<&str>,
) -> Result<(Seen, String), String> {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_ca_file(ca).unwrap();
    b.set_min_proto_version(Some(versions.0)).unwrap();
    b.set_max_proto_version(Some(versions.1)).unwrap();
    b.set_alpn_protos(alpn).unwrap();
    b.set_verify(SslVerifyMode::PEER);
    let connector = b.build();
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(prefix).unwrap();
    let mut cfg = connector.configure().unwrap();
    // Name checks are the SNI test's own (the chain is verified).
    cfg.set_verify_hostname(false);
    let mut tls = cfg.connect(sni, tcp).map_err(|e| e.to_string())?;
    let ssl = tls.ssl();
    let cert = ssl.peer_certificate().unwrap();
    let seen = Seen {
        version: ssl.version_str().to_owned(),
        alpn: ssl
            .selected_alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
        names: names(&cert),
        serial: cert
            .serial_number()
            .to_bn()
            .unwrap()
            .to_hex_str()
            .unwrap()
            .to_string(),
    };
    let mut answer = String::new();
    if let Some(req) = request {
        tls.write_all(req.as_bytes()).unwrap();
        let _ = tls.read_to_string(&mut answer);
    }
    Ok((seen, answer))
}

fn names(cert: &X509) -> Vec<String> {
    cert.subject_alt_names()
        .map(|s| {
            s.iter()
                .filter_map(|n| n.dnsname().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn tls(
    addr: SocketAddr,
    ca: &Path,
    sni: &'static str,
    versions: (SslVersion, SslVersion),
    alpn: &'static [u8],
) -> Result<Seen, String> {
    let ca = ca.to_owned();
    tokio::task::spawn_blocking(move || {
        handshake(addr, &ca, sni, versions, alpn, b"", None).map(|(s, _)| s)
    })
    .await
    .unwrap()
}

/// `GET /orders/1` as user 42 over HTTPS (HTTP/1.1) to api.example.com,
/// after `prefix` in the clear: the whole answer.
async fn get_user_42(at: SocketAddr, ca: &Path, prefix: &[u8]) -> String {
    let (ca, prefix) = (ca.to_owned(), prefix.to_vec());
    let request = "GET /orders/1 HTTP/1.1\r\nHost: api.example.com\r\nx-user-id: 42\r\nconnection: close\r\n\r\n";
    tokio::task::spawn_blocking(move || {
        handshake(
            at,
            &ca,
            "api.example.com",
            MODERN,
            H1,
            &prefix,
            Some(request),
        )
    })
    .await
    .unwrap()
    .unwrap()
    .1
}

const MODERN: (SslVersion, SslVersion) = (SslVersion::TLS1_2, SslVersion::TLS1_3);
const H2_H1: &[u8] = b"\x02h2\x08http/1.1";
const H1: &[u8] = b"\x08http/1.1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_by_sni_modern_versions_and_alpn() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (_ca, ca_file, certs) = pki(dir.path());
    let config = format!(
        "[tls]\ncert_dir = {:?}\ndefault_host = \"api.example.com\"\ninternal = true\n",
        certs.display().to_string()
    );
    let gw = common::start_with(units.topology(&[]), dir.path(), &config).await;
    let at = gw.public;
    // The internal listener speaks TLS too when configured so.
    let s = tls(gw.internal, &ca_file, "api.example.com", MODERN, H2_H1)
        .await
        .unwrap();
    assert_eq!(s.alpn.as_deref(), Some("h2"));

    let s = tls(at, &ca_file, "api.example.com", MODERN, H2_H1)
        .await
        .unwrap();
    assert_eq!(s.names, ["api.example.com"], "{s:?}");
    assert_eq!(s.alpn.as_deref(), Some("h2"));
    assert_eq!(s.version, "TLSv1.3");
    let s = tls(at, &ca_file, "eu.shop.test", MODERN, H1).await.unwrap();
    assert_eq!(s.names, ["*.shop.test"], "{s:?}");
    assert_eq!(s.alpn.as_deref(), Some("http/1.1"));
    // A name no certificate covers, or one a wildcard does not (two
    // labels), gets the default certificate.
    for sni in ["unknown.test", "a.b.shop.test"] {
        let s = tls(at, &ca_file, sni, MODERN, H2_H1).await.unwrap();
        assert_eq!(s.names, ["api.example.com"], "{sni}: {s:?}");
    }
    // TLS 1.2 is taken; 1.0 and 1.1 are not.
    let tls12 = (SslVersion::TLS1_2, SslVersion::TLS1_2);
    let s = tls(at, &ca_file, "api.example.com", tls12, H2_H1)
        .await
        .unwrap();
    assert_eq!(s.version, "TLSv1.2");
    for old in [SslVersion::TLS1, SslVersion::TLS1_1] {
        let r = tls(at, &ca_file, "api.example.com", (old, old), H2_H1).await;
        assert!(r.is_err(), "{old:?} was accepted: {r:?}");
    }
    // The two refused versions are counted as failed handshakes; the
    // start-up probes (connect, close) are not.
    let m = gw.admin("/metrics").await.1;
    assert!(
        m.contains(r#"unitgate_edge_refused_total{listener="public",reason="tls_handshake"} 2"#),
        "{m}"
    );
    // Each served certificate's expiry, for the alert on certificates
    // expiring within 14 days.
    let api = std::fs::read(certs.join("api.crt")).unwrap();
    let api = X509::from_pem(&api).unwrap();
    let d = openssl::asn1::Asn1Time::from_unix(0)
        .unwrap()
        .diff(api.not_after())
        .unwrap();
    let expiry = i64::from(d.days) * 86_400 + i64::from(d.secs);
    let series = format!(
        "unitgate_tls_certificate_expiry_timestamp_seconds{{cert=\"{}\",name=\"api.example.com\"}} {expiry}",
        certs.join("api.crt").display()
    );
    assert!(m.contains(&series), "{series} not in {m}");
    // The served certificates, and no error, are in /status.
    let st = gw.status().await;
    assert_eq!(st["tls"]["certificates"].as_array().unwrap().len(), 2);
    assert_eq!(st["tls"]["errors"].as_array().unwrap().len(), 0);
    // A request over HTTPS reaches the unit.
    let answer = get_user_42(at, &ca_file, &[]).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("x-unit-served-by: bj-2"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_reloaded_and_a_bad_file_keeps_the_old_one() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (ca, ca_file, certs) = pki(dir.path());
    let config = format!(
        "header_timeout_ms = 500\n[tls]\ncert_dir = {:?}\ndefault_host = \"api.example.com\"\nreload_interval_ms = 100\n",
        certs.display().to_string()
    );
    let gw = common::start_with(units.topology(&[]), dir.path(), &config).await;
    let at = gw.public;
    let first = tls(at, &ca_file, "api.example.com", MODERN, H1)
        .await
        .unwrap();

    // A renewed certificate (a new key too) is served without a restart.
    let (cert, key) = ca
        .issue(&["api.example.com", "www.example.com"], 2)
        .unwrap();
    // The key first: for a moment the pair does not match, which is
    // reported and keeps the old certificate, never a broken one.
    std::fs::write(certs.join("api.key"), &key).unwrap();
    std::fs::write(certs.join("api.crt"), &cert).unwrap();
    eventually!(
        Duration::from_secs(10),
        tls(at, &ca_file, "api.example.com", MODERN, H1)
            .await
            .unwrap()
            .serial
            != first.serial,
        "the renewed certificate is served"
    );
    let renewed = tls(at, &ca_file, "api.example.com", MODERN, H1)
        .await
        .unwrap();
    assert_eq!(renewed.names, ["api.example.com", "www.example.com"]);

    // A garbage certificate: the renewed one stays, and /status says why.
    std::fs::write(
        certs.join("api.crt"),
        b"-----BEGIN CERTIFICATE-----\nnope\n",
    )
    .unwrap();
    eventually!(
        Duration::from_secs(10),
        gw.status().await["tls"]["errors"]
            .as_array()
            .is_some_and(|e| !e.is_empty()),
        "the bad file is reported"
    );
    let st = gw.status().await;
    let errors = st["tls"]["errors"].to_string();
    assert!(
        errors.contains("api.crt") && errors.contains("still serving"),
        "{errors}"
    );
    let s = tls(at, &ca_file, "api.example.com", MODERN, H1)
        .await
        .unwrap();
    assert_eq!(s.serial, renewed.serial);
    assert!(gw.log_tail().contains("TLS certificate not reloaded"));

    // A client that opens a connection and never says hello is closed at
    // the head timeout, before any handshake work.
    let mut idle = tokio::net::TcpStream::connect(at).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .expect("the silent connection is closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    // Counted just after the socket closes (the handshake's future, which
    // owns it, is dropped first).
    eventually!(
        Duration::from_secs(5),
        gw.admin("/metrics")
            .await
            .1
            .contains(r#"unitgate_edge_refused_total{listener="public",reason="tls_timeout"} 1"#),
        "the silent client is counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plain_listener_redirects_listed_hosts_and_hsts_is_sent_over_https_only() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (_ca, ca_file, certs) = pki(dir.path());
    let http = unitgate_tests::free_port();
    let config = format!(
        "http_listen = \"127.0.0.1:{http}\"\nhttps_redirect = [\"secure.example.com\", \"*.shop.test\"]\n[tls]\ncert_dir = {:?}\ndefault_host = \"api.example.com\"\n",
        certs.display().to_string()
    );
    let topo = units.topology(&[]).replacen(
        "routes/orders:\n",
        "routes/orders:\n  hsts: {max_age_s: 31536000, include_subdomains: true}\n",
        1,
    );
    let gw = common::start_with(topo, dir.path(), &config).await;
    let plain = format!("127.0.0.1:{http}");
    let (status, text) = common::raw(
        &plain,
        &[
            "GET /orders/1?x=1 HTTP/1.1",
            "Host: secure.example.com",
            "x-user-id: 42",
        ],
    )
    .await;
    assert_eq!(status, 308, "{text}");
    let want = format!(
        "location: https://secure.example.com:{}/orders/1?x=1",
        gw.public.port()
    );
    assert!(text.to_ascii_lowercase().contains(&want), "{text}");
    let (status, _) = common::raw(&plain, &["GET / HTTP/1.1", "Host: eu.shop.test"]).await;
    assert_eq!(status, 308);
    // Other hosts are served on the plain listener, without HSTS.
    let (status, text) = common::raw(
        &plain,
        &[
            "GET /orders/1 HTTP/1.1",
            "Host: api.example.com",
            "x-user-id: 42",
        ],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(!text
        .to_ascii_lowercase()
        .contains("strict-transport-security"));
    // Over HTTPS the route's HSTS is sent.
    let at = gw.public;
    let answer = get_user_42(at, &ca_file, &[]).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("strict-transport-security: max-age=31536000; includesubdomains"),
        "{answer}"
    );
}

/// A PROXY protocol v2 header for a TCP/IPv4 client.
fn proxy_v2(client: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x21); // v2, PROXY
    h.push(0x11); // TCP over IPv4
    h.extend_from_slice(&12u16.to_be_bytes());
    h.extend_from_slice(&client);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&443u16.to_be_bytes());
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_protocol_gives_the_client_address_before_tls_and_http() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (_ca, ca_file, certs) = pki(dir.path());
    let http = unitgate_tests::free_port();
    let config = format!(
        "http_listen = \"127.0.0.1:{http}\"\nproxy_protocol = true\ntrusted_proxies = [\"127.0.0.1\"]\n[tls]\ncert_dir = {:?}\n",
        certs.display().to_string()
    );
    let gw = common::start_with(units.topology(&[]), dir.path(), &config).await;
    let last_xff = |reqs: Vec<wiremock::Request>| {
        reqs.last().unwrap().headers["x-forwarded-for"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    // v1 on the plain listener.
    let plain = format!("127.0.0.1:{http}");
    let mut s = tokio::net::TcpStream::connect(&plain).await.unwrap();
    s.write_all(b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\nGET /orders/1 HTTP/1.1\r\nHost: api.example.com\r\nx-user-id: 42\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(
        last_xff(units.received("bj-2", "orders").await),
        "203.0.113.7"
    );
    // v2 before the TLS handshake on the public listener.
    let at = gw.public;
    let answer = get_user_42(at, &ca_file, &proxy_v2([198, 51, 100, 9], 4444)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(
        last_xff(units.received("bj-2", "orders").await),
        "198.51.100.9"
    );
    // Without a header the connection is closed unanswered.
    let before = units.received("bj-2", "orders").await.len();
    let mut s = tokio::net::TcpStream::connect(&plain).await.unwrap();
    s.write_all(b"GET /orders/1 HTTP/1.1\r\nHost: api.example.com\r\nx-user-id: 42\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut text))
        .await
        .expect("closed");
    assert_eq!(text, "");
    assert_eq!(units.received("bj-2", "orders").await.len(), before);
    let m = gw.admin("/metrics").await.1;
    assert!(
        m.contains(r#"unitgate_edge_refused_total{listener="http",reason="proxy_header"} 1"#),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_upstream_over_tls_is_verified_against_the_routes_name() {
    // The unit's service is another gateway's HTTPS listener (HTTP/2 by
    // ALPN), with a certificate of the test CA for api.example.com.
    let inner_units = Units::start().await;
    let inner_dir = tempfile::tempdir().unwrap();
    let inner = common::start_proto(
        inner_units.topology(&[]),
        inner_dir.path(),
        "",
        unitgate_tests::proto::Proto::H2,
    )
    .await;
    let (ca, _) = unitgate_tests::proto::test_pki(Path::new(common::BIN));

    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bj2 = units.get("bj-2", "orders").address().to_string();
    let topology = |sni: &str| {
        units
            .topology(&[])
            .replace(
                &format!("orders: {{endpoints: [\"{bj2}\"], health_path: /healthz, health_interval_ms: 1000}}"),
                &format!("orders: {{endpoints: [\"{}\"]}}", inner.public),
            )
            .replacen(
                "routes/orders:\n",
                &format!("routes/orders:\n  upstream_protocol: h2\n  upstream_sni: {sni}\n"),
                1,
            )
    };
    let file = dir.path().join("topology.yaml");
    std::fs::write(&file, topology("api.example.com")).unwrap();
    let args = unitgate_tests::gateway::GatewayArgs {
        topology_file: Some(file.clone()),
        region: Some("cn-north".into()),
        dc: Some("bj-a".into()),
        // The units' CA: OpenSSL's default trust store, pointed elsewhere.
        env: vec![("SSL_CERT_FILE".into(), ca.display().to_string())],
        ..Default::default()
    };
    let gw = unitgate_tests::gateway::Gateway::start(Path::new(common::BIN), args)
        .await
        .unwrap();
    let (status, text) = common::raw(
        &gw.public.to_string(),
        &[
            "GET /orders/1 HTTP/1.1",
            "Host: api.example.com",
            "x-user-id: 42",
        ],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    // Through the inner gateway to its bj-2.
    assert_eq!(inner_units.received("bj-2", "orders").await.len(), 1);

    // A name the certificate does not carry: refused, never sent.
    std::fs::write(&file, topology("orders.unit.internal")).unwrap();
    eventually!(
        Duration::from_secs(10),
        common::raw(
            &gw.public.to_string(),
            &[
                "GET /orders/1 HTTP/1.1",
                "Host: api.example.com",
                "x-user-id: 42"
            ],
        )
        .await
        .0 == 502,
        "a certificate without the route's name is refused"
    );
    let sent = inner_units.received("bj-2", "orders").await.len();
    let (status, _) = common::raw(
        &gw.public.to_string(),
        &[
            "GET /orders/1 HTTP/1.1",
            "Host: api.example.com",
            "x-user-id: 42",
        ],
    )
    .await;
    assert_eq!(status, 502);
    assert_eq!(inner_units.received("bj-2", "orders").await.len(), sent);
}

/// The `x-forwarded-proto` and `forwarded` values the unit got last (each
/// header's lines joined).
async fn last_forwarding(units: &Units) -> (String, String) {
    let seen = units.received("bj-2", "orders").await;
    let h = &seen.last().unwrap().headers;
    let all = |name: &str| {
        let v: Vec<&str> = h
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        v.join(", ")
    };
    (all("x-forwarded-proto"), all("forwarded"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn units_are_told_the_scheme_each_request_arrived_over() {
    let units = Units::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (_ca, ca_file, certs) = pki(dir.path());
    let config = format!(
        "[tls]\ncert_dir = {:?}\ndefault_host = \"api.example.com\"\n",
        certs.display().to_string()
    );
    let gw = common::start_with(units.topology(&[]), dir.path(), &config).await;
    let pem = std::fs::read(&ca_file).unwrap();
    let h1_tls = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .resolve("api.example.com", gw.public)
        .http1_only()
        .build()
        .unwrap();
    let h2 = unitgate_tests::proto::h2_client(&ca_file);
    let h1 = unitgate_tests::gateway::client();
    let https = format!("https://api.example.com:{}/orders/1", gw.public.port());
    let internal = format!("http://api.example.com:{}/orders/1", gw.internal.port());
    let cases = [
        (&h1_tls, &https, reqwest::Version::HTTP_11, "https"),
        (&h2, &https, reqwest::Version::HTTP_2, "https"),
        // Plain HTTP/1.1 and h2c, on the internal listener.
        (
            &h1,
            &gw.internal_url("/orders/1"),
            reqwest::Version::HTTP_11,
            "http",
        ),
        (&h2, &internal, reqwest::Version::HTTP_2, "http"),
    ];
    for (client, url, version, scheme) in cases {
        // What a client says of itself is not believed (its peer is not a
        // trusted proxy).
        let r = client
            .get(url.as_str())
            .header("x-user-id", "42")
            .header("x-forwarded-proto", "ftp")
            .header("forwarded", "for=6.6.6.6;proto=ftp")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{url}");
        assert_eq!(r.version(), version, "{url}");
        let (proto, forwarded) = last_forwarding(&units).await;
        assert_eq!(proto, scheme, "{url} {version:?}");
        assert_eq!(
            forwarded,
            format!("for=127.0.0.1;proto={scheme}"),
            "{url} {version:?}"
        );
    }
}
