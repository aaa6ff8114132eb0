//! Helpers of the raw-socket gateway tests: start a gateway on a topology
//! and a config file, send a raw request head, read the status.
// Each test file uses some of these.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use unitgate_tests::gateway::{Gateway, GatewayArgs, Units};
use unitgate_tests::proto::Proto;

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
    start_proto(topology, dir, config, Proto::H1).await
}

/// The same, its clients speaking `proto` (HTTP/2: TLS on the public
/// listener).
pub async fn start_proto(topology: String, dir: &Path, config: &str, proto: Proto) -> Gateway {
    let file = dir.join("topology.yaml");
    std::fs::write(&file, topology).unwrap();
    let conf = dir.join("gw.toml");
    std::fs::write(&conf, config).unwrap();
    let args = GatewayArgs {
        topology_file: Some(file),
        region: Some("cn-north".into()),
        dc: Some("bj-a".into()),
        extra: vec!["--config".into(), conf.display().to_string()],
        proto,
        ..GatewayArgs::default()
    };
    // A measurement may be taken against another build of the gateway.
    let bin = std::env::var_os("UNITGATE_BIN")
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| BIN.into());
    Gateway::start(Path::new(&bin), args).await.unwrap()
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

/// Read one response (head and `content-length` body) off a kept-alive
/// connection; its status. Panics if it does not come within 10 s.
pub async fn keepalive_status(s: &mut tokio::net::TcpStream) -> u16 {
    let read = async {
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before the response head");
            got.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        while got.len() < head_end + length {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed within the response body");
            got.extend_from_slice(&chunk[..n]);
        }
        head.split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("a response within 10 s")
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

/// A plain HTTP/1.1 upstream on loopback that answers every request 200
/// `ok` and counts the requests that are not health checks. For tests that
/// load the gateway with many connections: it has no teardown to wait on.
pub struct OkUpstream {
    pub addr: String,
    pub requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl OkUpstream {
    pub async fn start() -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    let mut s = tokio::io::BufReader::new(s);
                    loop {
                        // One head (these tests send no bodies upstream).
                        let mut head = String::new();
                        loop {
                            let mut line = String::new();
                            match tokio::io::AsyncBufReadExt::read_line(&mut s, &mut line).await {
                                Ok(0) | Err(_) => return,
                                Ok(_) if line == "\r\n" => break,
                                Ok(_) => head.push_str(&line),
                            }
                        }
                        if !head.starts_with("GET /healthz") {
                            counted.fetch_add(1, Ordering::SeqCst);
                        }
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if s.get_mut().write_all(ok).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        OkUpstream {
            addr,
            requests,
            task,
        }
    }

    /// The sample topology with every endpoint at this upstream.
    pub fn topology(&self) -> String {
        let text = std::fs::read_to_string(unitgate_tests::sample_path()).unwrap();
        let mut out = String::with_capacity(text.len());
        let mut rest = text.as_str();
        while let Some(i) = rest.find("127.0.0.1:18") {
            out.push_str(&rest[..i]);
            out.push_str(&self.addr);
            rest = &rest[i + "127.0.0.1:18".len() + 3..];
        }
        out.push_str(rest);
        out
    }

    pub fn received(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for OkUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Send `bytes` one byte every `every` on `s` while reading what the
/// gateway answers, until it closes or `within` passes: whether it closed,
/// and what it sent.
pub async fn trickle(
    s: &mut tokio::net::TcpStream,
    bytes: &[u8],
    every: Duration,
    within: Duration,
) -> (bool, String) {
    let (mut rd, mut wr) = s.split();
    let drip = async {
        for b in bytes {
            if wr.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(every).await;
        }
    };
    let mut out = Vec::new();
    let read = tokio::time::timeout(within, rd.read_to_end(&mut out));
    let (_, r) = tokio::join!(drip, read);
    (r.is_ok(), String::from_utf8_lossy(&out).into_owned())
}

/// Point every orders endpoint of `text` at a listener that accepts and
/// never answers; the tasks holding them (abort when done).
pub async fn orders_never_answer(
    units: &Units,
    mut text: String,
) -> (String, Vec<tokio::task::JoinHandle<()>>) {
    let mut holds = Vec::new();
    for u in ["bj-1", "bj-2", "sh-1", "sh-2"] {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        text = text.replace(
            &units.get(u, "orders").address().to_string(),
            &l.local_addr().unwrap().to_string(),
        );
        holds.push(tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                open.push(s);
            }
        }));
    }
    (text, holds)
}

/// A plain HTTP/1.1 upstream on loopback with a fixed capacity: at most
/// `capacity` requests are worked on at once, each for `service_time`;
/// the rest wait their turn (as a real service's worker pool makes them),
/// so its latency grows with the load. `GET /healthz` is answered at once.
pub struct CapacityUpstream {
    pub addr: String,
    pub served: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CapacityUpstream {
    pub async fn start(capacity: usize, service_time: Duration) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let served = Arc::new(AtomicUsize::new(0));
        let counted = served.clone();
        let workers = Arc::new(tokio::sync::Semaphore::new(capacity));
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let counted = counted.clone();
                let workers = workers.clone();
                tokio::spawn(async move {
                    let mut s = tokio::io::BufReader::new(s);
                    loop {
                        let mut head = String::new();
                        loop {
                            let mut line = String::new();
                            match tokio::io::AsyncBufReadExt::read_line(&mut s, &mut line).await {
                                Ok(0) | Err(_) => return,
                                Ok(_) if line == "\r\n" => break,
                                Ok(_) => head.push_str(&line),
                            }
                        }
                        if !head.starts_with("GET /healthz") {
                            let Ok(_worker) = workers.acquire().await else {
                                return;
                            };
                            tokio::time::sleep(service_time).await;
                            counted.fetch_add(1, Ordering::SeqCst);
                        }
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if s.get_mut().write_all(ok).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        CapacityUpstream { addr, served, task }
    }
}

impl Drop for CapacityUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The `q` quantile (0..=1) of `samples`, sorted in place.
pub fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let i = ((samples.len() - 1) as f64 * q).round() as usize;
    samples[i]
}
