//! The `tls` part: what TLS termination costs, unitgate against nginx in
//! one run. Each proxy gets an HTTPS listener and a plain one beside it
//! (one process, the same routes), the same certificate (the EC P-256 leaf
//! of `unitgate demo-tls`) and the same protocol versions and suites. Three
//! loads, each against every listener, interleaved over the rounds:
//!
//! - a new connection per request (`oha --disable-keepalive`): over TLS,
//!   every request is a full handshake. oha (native-tls) never offers a
//!   session to resume (wrk does, and unitgate would resume it, so wrk is
//!   not used here); nginx has its session cache and tickets off anyway;
//! - keep-alive HTTP/1.1 (`wrk`, as the throughput part);
//! - keep-alive HTTP/2 over TLS (`oha --http2`; no plain counterpart).
//!
//! Beside req/s, the proxy's own CPU time per request (read from `/proc`)
//! shows the server's cost even where the load generator, on the other
//! CPU, is what limits the rate.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::load::{self, OhaMode, Throughput};
use crate::peers::{self, GatewayPorts, Programs, Source, Target, BODIES};
use crate::procs::{free_ports, Pin, Proc};
use crate::tls_report::{self, Load, Run};

/// The knobs of the part (from the command line).
pub struct Settings<'a> {
    pub rounds: usize,
    pub secs: u64,
    pub conns: u32,
    pub oha: &'a Path,
}

/// HTTP/2 requests in flight on each connection: `conns / STREAMS`
/// connections keep as many requests in flight as the HTTP/1.1 loads.
const STREAMS: u32 = 8;

/// One proxy under test: its process and its two listeners.
struct Peer {
    name: &'static str,
    proc: Proc,
    tls: Target,
    plain: Target,
}

/// Run the part; its tables go to `md`.
pub async fn run(
    s: &Settings<'_>,
    p: &Programs,
    dir: &Path,
    origin: u16,
    topology: &Path,
    pins: (Pin, Pin),
    md: &mut String,
) -> Result<()> {
    let (proxy_pin, load_pin) = pins;
    let certs = demo_certificates(p, dir)?;
    let (crt, key) = (certs.join("demo.crt"), certs.join("demo.key"));
    let ports = free_ports(6)?;
    let gw = GatewayPorts {
        public: ports[0],
        internal: ports[1],
        admin: ports[2],
    };
    let tls_conf = format!(
        "http_listen = \"127.0.0.1:{}\"\n[tls]\ncert_dir = \"{}\"\n",
        ports[3],
        certs.display()
    );
    let unitgate = peers::unitgate(
        p,
        dir,
        "unitgate-tls",
        &gw,
        Source::File(topology),
        &tls_conf,
        proxy_pin,
    )?;
    let nginx = peers::nginx_tls_proxy(
        p,
        dir,
        (ports[4], ports[5]),
        origin,
        (&crt, &key),
        proxy_pin,
    )?;
    let mut peers = vec![
        peer("unitgate", unitgate, ports[0], ports[3]),
        peer("nginx", nginx, ports[4], ports[5]),
    ];
    for peer in &mut peers {
        ready(s, dir, peer).await?;
    }
    let mut negotiated = Vec::new();
    for peer in &peers {
        negotiated.push((peer.name, negotiated_params(&peer.tls).await));
    }

    let mut runs = Vec::new();
    for load in Load::ALL {
        // Every listener the load applies to, as (peer, over TLS).
        let listeners: Vec<(usize, bool)> = (0..peers.len())
            .flat_map(|i| [(i, true), (i, false)])
            .filter(|&(_, tls)| tls || load != Load::KeepAliveH2)
            .collect();
        let mut rows: Vec<Run> = listeners
            .iter()
            .map(|&(i, tls)| Run::new(load, peers[i].name, tls))
            .collect();
        for round in 0..s.rounds {
            for k in 0..listeners.len() {
                let j = (k + round) % listeners.len();
                let (i, tls) = listeners[j];
                let peer = &mut peers[i];
                peer.proc.check_alive()?;
                let target = if tls { &peer.tls } else { &peer.plain };
                let cpu = peer.proc.cpu_secs();
                let t = Instant::now();
                let r = measure(s, load, target, load_pin)?;
                let busy = (peer.proc.cpu_secs() - cpu) / t.elapsed().as_secs_f64();
                eprintln!(
                    "tls {} round {} {:>14}: {:>9.0} req/s, server CPU {:>3.0} %",
                    load.short(),
                    round + 1,
                    target.name,
                    r.rps,
                    busy * 100.0
                );
                rows[j].push(r, busy);
            }
        }
        runs.extend(rows);
    }
    tls_report::tls(md, &runs, &negotiated, s.rounds, s.secs, s.conns, STREAMS);
    Ok(())
}

/// One run of `load` against `target`.
fn measure(s: &Settings<'_>, load: Load, target: &Target, pin: Pin) -> Result<Throughput> {
    let path = BODIES[0].0;
    match load {
        Load::NewConnection => load::oha_closed(
            s.oha,
            target,
            path,
            OhaMode::NewConnection,
            s.conns,
            s.secs,
            pin,
        ),
        Load::KeepAliveH1 => load::wrk(target, path, s.conns, s.secs, pin),
        Load::KeepAliveH2 => load::oha_closed(
            s.oha,
            target,
            path,
            OhaMode::Http2 { streams: STREAMS },
            (s.conns / STREAMS).max(1),
            s.secs,
            pin,
        ),
    }
}

/// The directory of the demo CA's server certificate for localhost and
/// 127.0.0.1 (`demo.crt`, `demo.key`), made by unitgate itself.
fn demo_certificates(p: &Programs, dir: &Path) -> Result<std::path::PathBuf> {
    let out = dir.join("tls");
    let run = std::process::Command::new(&p.unitgate)
        .arg("demo-tls")
        .arg("--out")
        .arg(&out)
        .args(["--host", "localhost", "--host", "127.0.0.1"])
        .output()
        .context("running unitgate demo-tls")?;
    if !run.status.success() {
        bail!(
            "unitgate demo-tls failed: {}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
    Ok(out.join("certs"))
}

/// The requests name no host: the URL's (127.0.0.1, which the bench route
/// covers) goes in `Host` or `:authority`. A `Host` header beside another
/// `:authority` is a malformed HTTP/2 request (RFC 9113, 8.3.1), which
/// unitgate refuses.
fn peer(name: &'static str, proc: Proc, tls_port: u16, plain_port: u16) -> Peer {
    let target = |name, port, tls| Target {
        name,
        addr: ([127, 0, 0, 1], port).into(),
        headers: Vec::new(),
        tls,
        proc: None,
    };
    let (tls_name, plain_name) = match name {
        "unitgate" => ("unitgate/tls", "unitgate/plain"),
        _ => ("nginx/tls", "nginx/plain"),
    };
    Peer {
        name,
        proc,
        tls: target(tls_name, tls_port, true),
        plain: target(plain_name, plain_port, false),
    }
}

/// Wait for the plain listener, give unitgate's targets the routing
/// cookie (as in the throughput part), then check that both listeners
/// answer every load's requests.
async fn ready(s: &Settings<'_>, dir: &Path, peer: &mut Peer) -> Result<()> {
    let path = BODIES[0].0;
    let plain = peer.plain.addr;
    let up = crate::http::wait_status(
        plain,
        path,
        &peer.plain.headers,
        200,
        Duration::from_secs(30),
    )
    .await;
    if let Err(e) = up {
        let log_name = match peer.name {
            "unitgate" => "unitgate-tls",
            _ => "nginx-tls",
        };
        let log = std::fs::read_to_string(dir.join(format!("{log_name}.log"))).unwrap_or_default();
        bail!("{} not ready: {e:#}\n{log}", peer.name);
    }
    if peer.name == "unitgate" {
        let cookie = peers::unitgate_cookie(plain).await?;
        for t in [&mut peer.tls, &mut peer.plain] {
            t.headers.push(("Cookie".into(), cookie.clone()));
        }
    }
    load::oha_probe(s.oha, &peer.plain, path, OhaMode::NewConnection, 2)?;
    load::oha_probe(s.oha, &peer.tls, path, OhaMode::NewConnection, 2)?;
    load::oha_probe(s.oha, &peer.tls, path, OhaMode::Http2 { streams: 1 }, 2)?;
    Ok(())
}

/// What `openssl s_client` (the system OpenSSL, as oha's native-tls)
/// negotiates with `target`: protocol, suite, key exchange group, ALPN.
/// Informative only: a note when the openssl tool is missing or fails.
async fn negotiated_params(target: &Target) -> String {
    let run = tokio::process::Command::new("openssl")
        .args(["s_client", "-connect"])
        .arg(target.addr.to_string())
        .args(["-alpn", "h2,http/1.1"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(5), run).await {
        Ok(Ok(out)) => parse_s_client(&String::from_utf8_lossy(&out.stdout))
            .unwrap_or_else(|| "(openssl s_client: no session)".into()),
        Ok(Err(e)) => format!("(openssl s_client: {e})"),
        Err(_) => "(openssl s_client: no answer within 5 s)".into(),
    }
}

/// "TLSv1.3, TLS_AES_128_GCM_SHA256, X25519, ALPN h2" from s_client's
/// report.
fn parse_s_client(text: &str) -> Option<String> {
    let session = text.lines().find_map(|l| {
        l.strip_prefix("New, ")
            .or_else(|| l.strip_prefix("Reused, "))
    })?;
    let (proto, cipher) = session.split_once(", Cipher is ")?;
    let group = text
        .lines()
        .find_map(|l| l.strip_prefix("Server Temp Key: "))
        .and_then(|k| k.split(',').next())
        .unwrap_or("?");
    let alpn = text
        .lines()
        .find_map(|l| l.strip_prefix("ALPN protocol: "))
        .unwrap_or("none");
    Some(format!("{proto}, {cipher}, {group}, ALPN {alpn}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s_client_report_is_summed_up() {
        let text = "CONNECTED(00000003)\n---\nServer Temp Key: X25519, 253 bits\n---\n\
            New, TLSv1.3, Cipher is TLS_AES_128_GCM_SHA256\nServer public key is 256 bit\n\
            ALPN protocol: h2\n";
        assert_eq!(
            parse_s_client(text).as_deref(),
            Some("TLSv1.3, TLS_AES_128_GCM_SHA256, X25519, ALPN h2")
        );
        assert_eq!(parse_s_client("CONNECTED\nno peer certificate\n"), None);
    }
}
