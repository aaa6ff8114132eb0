//! The processes under test and their configurations: one nginx origin
//! serving fixed bodies, and the proxies in front of it (nginx, haproxy,
//! the bare Pingora proxy, unitgate), each with one worker.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::http;
use crate::procs::{Pin, Proc};

/// The bodies the origin serves, by path.
pub const BODIES: [(&str, usize); 2] = [("/bench/1k", 1024), ("/bench/64k", 64 * 1024)];

/// Where the harness finds its programs.
#[derive(Clone)]
pub struct Programs {
    pub nginx: PathBuf,
    pub haproxy: PathBuf,
    pub unitgate: PathBuf,
    pub bare: PathBuf,
}

/// Something the load generator can aim at.
pub struct Target {
    pub name: &'static str,
    pub addr: SocketAddr,
    /// Header lines every request carries (Host, and unitgate's cookie).
    pub headers: Vec<(String, String)>,
    /// HTTPS (the load generators accept any certificate).
    pub tls: bool,
    /// The process behind it (None for the origin reached directly: its
    /// process is the origin's).
    pub proc: Option<Proc>,
}

impl Target {
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }
}

/// Start the nginx origin on `port` pinned to `pin`. It is also the OTLP
/// collector a variant may export to (`otlp_endpoint = "http://{origin}"`):
/// `POST /v1/traces` answered 200, each export's size logged in
/// `origin-nginx/otlp.log`.
pub fn origin(p: &Programs, dir: &Path, port: u16, pin: Pin) -> Result<Proc> {
    let root = dir.join("origin-root");
    std::fs::create_dir_all(root.join("bench"))?;
    for (path, size) in BODIES {
        std::fs::write(root.join(&path[1..]), vec![b'x'; size])?;
    }
    let conf = format!(
        "{common}
http {{
{HTTP_COMMON}
  log_format otlp '$request_length';
  client_max_body_size 64m;
  client_body_buffer_size 1m;
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    root {root};
    location = /healthz {{ return 200 \"ok\\n\"; }}
    location = /v1/traces {{ access_log {logs}/otlp.log otlp; return 200; }}
    location / {{ }}
  }}
}}
",
        common = nginx_common(dir, "origin"),
        root = root.display(),
        logs = dir.join("origin-nginx").display()
    );
    start_nginx(p, dir, "origin", &conf, pin)
}

/// nginx as a reverse proxy with upstream keep-alive.
pub fn nginx_proxy(p: &Programs, dir: &Path, port: u16, origin: u16, pin: Pin) -> Result<Proc> {
    let conf = format!(
        "{common}
http {{
{HTTP_COMMON}
  upstream origin {{ server 127.0.0.1:{origin}; keepalive 128; keepalive_requests 100000000; }}
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    location / {{
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
    }}
  }}
}}
",
        common = nginx_common(dir, "nginx")
    );
    start_nginx(p, dir, "nginx", &conf, pin)
}

/// The TLS 1.2 ciphers and TLS 1.3 suites unitgate's acceptor offers, in
/// its order, server preference on (`gateway/src/tls/mod.rs`): nginx is
/// given the same, so that both negotiate the same suite.
const TLS12_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
const TLS13_SUITES: &str =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";

/// nginx as the same reverse proxy with an HTTPS listener (TLS 1.2 and
/// 1.3, HTTP/2 and HTTP/1.1 by ALPN, `cert`/`key`) beside a plain one, and
/// no session resumption (no cache, no tickets): every new connection is a
/// full handshake. The `http2` listen flag: nginx 1.22 has no `http2 on;`
/// (`keepalive_requests` counts HTTP/2 requests too).
pub fn nginx_tls_proxy(
    p: &Programs,
    dir: &Path,
    ports: (u16, u16),
    origin: u16,
    cert: (&Path, &Path),
    pin: Pin,
) -> Result<Proc> {
    let (tls_port, plain_port) = ports;
    let conf = format!(
        "{common}
http {{
{HTTP_COMMON}
  upstream origin {{ server 127.0.0.1:{origin}; keepalive 128; keepalive_requests 100000000; }}
  ssl_certificate {crt};
  ssl_certificate_key {key};
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_ciphers {TLS12_CIPHERS};
  ssl_conf_command Ciphersuites {TLS13_SUITES};
  ssl_prefer_server_ciphers on;
  ssl_session_cache off;
  ssl_session_tickets off;
  server {{
    listen 127.0.0.1:{tls_port} ssl http2 reuseport backlog=4096;
    listen 127.0.0.1:{plain_port} reuseport backlog=4096;
    location / {{
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
    }}
  }}
}}
",
        common = nginx_common(dir, "nginx-tls"),
        crt = cert.0.display(),
        key = cert.1.display(),
    );
    start_nginx(p, dir, "nginx-tls", &conf, pin)
}

/// The `http` settings both nginx configurations share: no access log,
/// client connections kept alive for the whole run.
const HTTP_COMMON: &str = "  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 300s;";

fn nginx_common(dir: &Path, name: &str) -> String {
    let d = dir.join(format!("{name}-nginx"));
    let _ = std::fs::create_dir_all(&d);
    format!(
        "daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile {nofile};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections {conns}; }}
",
        d = d.display(),
        nofile = crate::procs::fd_hard_limit(),
        conns = crate::procs::fd_hard_limit()
            .saturating_sub(100)
            .min(30_000),
    )
}

fn start_nginx(p: &Programs, dir: &Path, name: &str, conf: &str, pin: Pin) -> Result<Proc> {
    let path = dir.join(format!("{name}.nginx.conf"));
    std::fs::write(&path, conf)?;
    // The prefix holds nginx's temp dirs; -e keeps startup errors off
    // /var/log.
    let prefix = dir.join(format!("{name}-nginx"));
    let args = vec![
        "-p".into(),
        prefix.display().to_string(),
        "-e".into(),
        prefix.join("error.log").display().to_string(),
        "-c".into(),
        path.display().to_string(),
    ];
    Proc::start(name, pin, &p.nginx, &args, &[], dir, "-TERM")
}

/// The most connections haproxy can accept here: it wants two descriptors
/// per connection (client and server side) plus a few, within the hard limit.
pub fn haproxy_maxconn() -> u64 {
    (crate::procs::fd_hard_limit().saturating_sub(20) / 2).min(30_000)
}

/// haproxy with one thread and connection reuse to the origin.
pub fn haproxy(p: &Programs, dir: &Path, port: u16, origin: u16, pin: Pin) -> Result<Proc> {
    let conf = format!(
        "global
  nbthread 1
  maxconn {maxconn}
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
  http-reuse always
frontend fe
  bind 127.0.0.1:{port}
  default_backend be
backend be
  server origin 127.0.0.1:{origin}
",
        maxconn = haproxy_maxconn()
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, conf)?;
    let args = vec!["-db".into(), "-f".into(), path.display().to_string()];
    Proc::start("haproxy", pin, &p.haproxy, &args, &[], dir, "-TERM")
}

/// The bare Pingora proxy (Pingora's defaults, one thread).
pub fn bare(p: &Programs, dir: &Path, port: u16, origin: u16, pin: Pin) -> Result<Proc> {
    let args = vec![
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--upstream".into(),
        format!("127.0.0.1:{origin}"),
        "--threads".into(),
        "1".into(),
    ];
    Proc::start("bare-pingora", pin, &p.bare, &args, &[], dir, "-INT")
}

/// The topology unitgate runs on in the bench: two shard units in two
/// datacenters of one region, both served by the origin, one shard route.
/// User 42 lives in unit u1 (dc bj-a).
pub fn topology_yaml(origin: u16) -> String {
    let unit = |dc: &str, other: &str| {
        format!(
            "{{dc: {dc}, kind: shard, failover: [{other}], services: {{origin: {{endpoints: [\"127.0.0.1:{origin}\"], health_path: /healthz, health_interval_ms: 1000}}}}}}"
        )
    };
    format!(
        "cluster: {{shards: 100, shard_hash: mod, user_header: x-user-id, token_ttl_s: 86400, max_hops: 2}}
regions/r1: {{entries: [api.example.com]}}
datacenters/bj-a: {{region: r1}}
datacenters/bj-b: {{region: r1}}
units/u1: {u1}
units/u2: {u2}
shardmap: {{ranges: [{{from: 0, to: 49, unit: u1}}, {{from: 50, to: 99, unit: u2}}]}}
routes/bench: {{hosts: [\"*.example.com\", 127.0.0.1, localhost], path_prefix: /bench, service: origin, policy: shard, auth: none, listener: public}}
auth/issuers/bench: {{iss: {AUTH_ISS}, aud: [api], algs: [RS256, ES256], jwks: {jwks}}}
quotas/bench: {{key: user, rate: 1000000000, per_s: 1, burst: 1000000000}}
routes/bench-auth: {{hosts: [{AUTH_HOST}], path_prefix: /bench, service: origin, policy: shard, auth: required, issuers: [bench], quota: bench, listener: public}}
",
        u1 = unit("bj-a", "u2"),
        u2 = unit("bj-b", "u1"),
        jwks = BENCH_JWKS.replace('\n', ""),
    )
}

/// The host of the route with RS256 auth and a quota (never exhausted:
/// its cost is counted, nothing refused), beside the plain route.
pub const AUTH_HOST: &str = "auth.example.com";
const AUTH_ISS: &str = "https://id.bench.invalid";
/// The test issuer's keys (`gateway/tests/fixtures/jwt`, test-only).
const BENCH_JWKS: &str = include_str!("../../gateway/tests/fixtures/jwt/jwks.json");
const BENCH_RSA: &str = include_str!("../../gateway/tests/fixtures/jwt/rsa-private.pem");

/// A bearer token of user 42 for the auth route, valid a day.
pub fn auth_token() -> Result<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let claims =
        serde_json::json!({"iss": AUTH_ISS, "aud": "api", "sub": "42", "exp": now + 86_400});
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    h.kid = Some("rsa-1".into());
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(BENCH_RSA.as_bytes())?;
    Ok(jsonwebtoken::encode(&h, &claims, &key)?)
}

/// Ports of one unitgate.
pub struct GatewayPorts {
    pub public: u16,
    pub internal: u16,
    pub admin: u16,
}

/// Where a bench unitgate gets its topology.
pub enum Source<'a> {
    File(&'a Path),
    Etcd(&'a str),
}

/// Start unitgate with one worker thread on `ports`.
pub fn unitgate(
    p: &Programs,
    dir: &Path,
    name: &str,
    ports: &GatewayPorts,
    source: Source<'_>,
    extra_conf: &str,
    pin: Pin,
) -> Result<Proc> {
    let secrets = dir.join("secrets.toml");
    if !secrets.exists() {
        std::fs::write(&secrets, secrets_toml()?)?;
    }
    let state = dir.join(format!("{name}-state"));
    std::fs::create_dir_all(&state)?;
    let source_line = match source {
        Source::File(f) => format!("topology_file = \"{}\"", f.display()),
        Source::Etcd(url) => format!("etcd = [\"{url}\"]"),
    };
    let conf = format!(
        "id = \"{name}\"
region = \"r1\"
dc = \"bj-a\"
listen = \"127.0.0.1:{public}\"
internal_listen = \"127.0.0.1:{internal}\"
admin_listen = \"127.0.0.1:{admin}\"
{source_line}
secrets = \"{secrets}\"
state_dir = \"{state}\"
threads = 1
max_connections = 50000
max_connections_per_ip = 50000
{extra_conf}
",
        public = ports.public,
        internal = ports.internal,
        admin = ports.admin,
        secrets = secrets.display(),
        state = state.display(),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, conf)?;
    let args = vec!["--config".into(), path.display().to_string()];
    Proc::start(
        name,
        pin,
        &p.unitgate,
        &args,
        &[("RUST_LOG", "warn")],
        dir,
        "-INT",
    )
}

/// A fresh random routing-token and dye key for this run.
fn secrets_toml() -> Result<String> {
    use std::io::Read;
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .context("reading /dev/urandom")?;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(
        "active = \"bench\"\n[keys]\nbench = \"hex:{hex}\"\n"
    ))
}

/// The routing cookie unitgate gives user 42, to echo on every request.
pub async fn unitgate_cookie(addr: SocketAddr) -> Result<String> {
    let r = http::get(
        addr,
        BODIES[0].0,
        &[
            ("Host".into(), "api.example.com".into()),
            ("x-user-id".into(), "42".into()),
        ],
        Duration::from_secs(5),
    )
    .await?;
    anyhow::ensure!(
        r.status == 200,
        "unitgate answered {} for user 42",
        r.status
    );
    anyhow::ensure!(
        r.body.len() == BODIES[0].1,
        "unitgate passed a body of {} bytes, not {}",
        r.body.len(),
        BODIES[0].1
    );
    let set = r
        .header("set-cookie")
        .context("unitgate set no routing cookie")?;
    let pair = set.split(';').next().unwrap_or_default().trim();
    anyhow::ensure!(pair.starts_with("ug_route="), "unexpected cookie {set:?}");
    Ok(pair.to_owned())
}
