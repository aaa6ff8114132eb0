//! A unit whose every answer is a large body, streamed from one static
//! buffer as fast as the gateway takes it: a large download as a unit
//! sends it, without a mock holding the body in memory. It counts the body
//! bytes it got out and the connections open to it, so a test can tell
//! when the gateway stopped reading and whether it let go.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One write of the body.
static CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];

/// Largest request head read.
const MAX_HEAD: usize = 64 * 1024;

/// The running unit; stopped on drop (its open connections end when the
/// gateway closes them).
pub struct StreamUnit {
    pub addr: SocketAddr,
    /// Body bytes written to the gateway so far.
    pub written: Arc<AtomicU64>,
    /// Connections from the gateway open now.
    pub open: Arc<AtomicUsize>,
    /// Connections from the gateway accepted so far.
    pub accepted: Arc<AtomicUsize>,
    /// Connections that carried a request other than a health check.
    pub served: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

impl StreamUnit {
    /// A unit on a free loopback port answering `body` bytes (or the `N`
    /// of a `?bytes=N` query) to every request but `/healthz` (a short
    /// 200).
    pub async fn start(body: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let written = Arc::new(AtomicU64::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let served = Arc::new(AtomicUsize::new(0));
        let (w, o, a, sv) = (
            written.clone(),
            open.clone(),
            accepted.clone(),
            served.clone(),
        );
        let accept = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let (w, o, sv) = (w.clone(), o.clone(), sv.clone());
                a.fetch_add(1, Ordering::SeqCst);
                o.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let _ = serve(s, body, &w, &sv).await;
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        StreamUnit {
            addr,
            written,
            open,
            accepted,
            served,
            accept,
        }
    }

    pub fn written(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
}

impl Drop for StreamUnit {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Answer the requests of one keep-alive connection until it closes.
async fn serve(
    mut s: TcpStream,
    body: u64,
    written: &AtomicU64,
    served: &AtomicUsize,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(4096);
    let mut counted = false;
    loop {
        head.clear();
        if !read_head(&mut s, &mut head).await? {
            return Ok(());
        }
        let health = head.starts_with(b"GET /healthz ");
        if health {
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await?;
            continue;
        }
        if !counted {
            counted = true;
            served.fetch_add(1, Ordering::SeqCst);
        }
        let body = asked(&head).unwrap_or(body);
        let top = format!("HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {body}\r\n\r\n");
        s.write_all(top.as_bytes()).await?;
        let mut left = body;
        while left > 0 {
            let n = left.min(CHUNK.len() as u64) as usize;
            s.write_all(&CHUNK[..n]).await?;
            written.fetch_add(n as u64, Ordering::SeqCst);
            left -= n as u64;
        }
    }
}

/// The size a request asks for with `?bytes=N`.
fn asked(head: &[u8]) -> Option<u64> {
    let line = head.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let target = line.split(' ').nth(1)?;
    let (_, query) = target.split_once('?')?;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("bytes="))?
        .parse()
        .ok()
}

/// Read one request head (no body is expected); `false` at a clean close.
async fn read_head(s: &mut TcpStream, head: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut byte = [0u8; 1024];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return Err(std::io::Error::other("request head too large"));
        }
        let n = s.read(&mut byte).await?;
        if n == 0 {
            return Ok(false);
        }
        head.extend_from_slice(&byte[..n]);
    }
    Ok(true)
}
