//! Helpers of the raw-socket gateway tests: start a gateway on a topology
//! and a config file, send a raw request head, read the status.
// Each test file uses some of these.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use unitgate_tests::gateway::{Gateway, GatewayArgs, Units};

pub const BIN: &str = env!("CARGO_BIN_EXE_unitgate");

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub async fn start(topology: String, dir: &Path) -> Gateway {
    start_with(topology, dir, "").await
}

/// A gateway in cn-north/bj-a on `topology`, with `config` as its TOML file.
pub async fn start_with(topology: String, dir: &Path, config: &str) -> Gateway {
    let file = dir.join("topology.yaml");
    std::fs::write(&file, topology).unwrap();
    let conf = dir.join("gw.toml");
    std::fs::write(&conf, config).unwrap();
    let args = GatewayArgs {
        topology_file: Some(file),
        region: Some("cn-north".into()),
        dc: Some("bj-a".into()),
        extra: vec!["--config".into(), conf.display().to_string()],
        ..GatewayArgs::default()
    };
    Gateway::start(Path::new(BIN), args).await.unwrap()
}

/// Send `head` (CRLF line ends added) on a fresh connection; the status and
/// the whole response text.
pub async fn raw(addr: &str, head: &[&str]) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = head.join("\r\n");
    req.push_str("\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("answered in time")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// Like [`raw`], but any IO failure (a refused connection) is status 0.
pub async fn status_of(addr: &str, head: &[&str]) -> u16 {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let mut req = head.join("\r\n");
        req.push_str("\r\nconnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        String::from_utf8_lossy(&out)
            .split(' ')
            .nth(1)?
            .parse()
            .ok()
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
}

pub fn public(gw: &Gateway) -> String {
    gw.url("").trim_start_matches("http://").to_owned()
}

pub async fn total_received(units: &Units) -> usize {
    let mut n = 0;
    for (unit, service) in units.servers.keys() {
        n += units.received(unit, service).await.len();
    }
    n
}
