//! What the gateway holds for clients that do not read, measured in the
//! gateway's resident memory against a unit that streams large answers as
//! fast as it is let: HTTP/2 clients whose windows never open, HTTP/1.1
//! clients that never read their sockets. Each stalled response holds at
//! most `response_buffer_bytes` of its answer (about half of what the
//! framework alone queued, everything counted), and is released, with its
//! unit connection, once `send_timeout_ms` ends it.
//!
//! `measure_at_scale` (ignored; run by hand with `--ignored --nocapture`)
//! takes the figures of `docs/security.md`: 10 HTTP/2 connections × 100
//! streams of 50 MB, and 200 HTTP/1.1 clients of 500 MB.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use unitgate_tests::gateway::{Gateway, Units};
use unitgate_tests::stream_unit::StreamUnit;

/// Per stalled response, at most (KiB of the gateway's resident memory,
/// with the default `response_buffer_bytes`, 128 KiB). The framework
/// alone held 450-480.
const PER_STALLED_KIB: u64 = 256;

/// The tests of this file run one at a time: each streams as fast as the
/// machine goes, and two at once on two cores measure each other.
static ALONE: std::sync::LazyLock<tokio::sync::Mutex<()>> =
    std::sync::LazyLock::new(Default::default);

/// A gateway whose every `orders` endpoint is `unit`.
async fn gateway_on(unit: &StreamUnit, dir: &std::path::Path, config: &str) -> (Units, Gateway) {
    let units = Units::start().await;
    let mut topology = units.topology(&[]);
    for ((_, service), server) in &units.servers {
        if service == "orders" {
            topology = topology.replace(&server.address().to_string(), &unit.addr.to_string());
        }
    }
    let gw = common::start_with(topology, dir, config).await;
    (units, gw)
}

/// Wait until the unit has written nothing more for a second: every
/// stalled response is as full as it gets.
async fn until_stalled(unit: &StreamUnit, within: Duration) {
    let deadline = Instant::now() + within;
    let mut last = (unit.written(), Instant::now());
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = unit.written();
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() >= Duration::from_secs(1) {
            return;
        }
    }
    panic!("the unit never stopped writing: {} bytes", unit.written());
}

fn rss(gw: &Gateway) -> u64 {
    gw.rss_kib().expect("the gateway's resident memory")
}

/// One warm-up answer of each kind, read whole: the allocator's and the
/// framework's first-use memory is not counted against stalled streams.
async fn warm_up(gw: &Gateway, proto: Proto) {
    for _ in 0..4 {
        match proto {
            Proto::H1 => {
                let r = gw
                    .http()
                    .get(gw.url(&format!("/orders/warm?bytes={WARM}")))
                    .header("x-user-id", "42");
                assert_eq!(r.send().await.unwrap().bytes().await.unwrap().len(), WARM);
            }
            Proto::H2 => {
                let (mut client, _conn) = h2_client(gw).await;
                let warm =
                    http::Request::get(format!("http://api.example.com/orders/warm?bytes={WARM}"))
                        .header("x-user-id", "42")
                        .body(())
                        .unwrap();
                let (resp, _) = client.send_request(warm, true).unwrap();
                let mut body = resp.await.unwrap().into_body();
                let mut n = 0;
                while let Some(chunk) = body.data().await {
                    let chunk = chunk.unwrap();
                    n += chunk.len();
                    let _ = body.flow_control().release_capacity(chunk.len());
                }
                assert_eq!(n, WARM);
            }
        }
    }
}

const WARM: usize = 1 << 20;

#[derive(Clone, Copy)]
enum Proto {
    H1,
    H2,
}

fn request() -> http::Request<()> {
    http::Request::get("http://api.example.com/orders/big")
        .header("x-user-id", "42")
        .body(())
        .unwrap()
}

async fn h2_client(
    gw: &Gateway,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<()>,
) {
    let tcp = tokio::net::TcpStream::connect(gw.internal).await.unwrap();
    let (client, conn) = h2::client::Builder::new()
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .unwrap();
    (
        client,
        tokio::spawn(async move {
            let _ = conn.await;
        }),
    )
}

/// `conns` HTTP/2 connections of `streams` streams each, with a window of
/// 0: the answers start, and the client never takes a byte of them.
async fn stalled_h2(
    gw: &Gateway,
    conns: usize,
    streams: usize,
) -> Vec<(h2::client::SendRequest<bytes::Bytes>, Vec<h2::RecvStream>)> {
    let mut held = Vec::new();
    for _ in 0..conns {
        let tcp = tokio::net::TcpStream::connect(gw.internal).await.unwrap();
        let (mut client, conn) = h2::client::Builder::new()
            .initial_window_size(0)
            .handshake::<_, bytes::Bytes>(tcp)
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut pending = Vec::new();
        for _ in 0..streams {
            client = client.ready().await.unwrap();
            let (resp, _) = client.send_request(request(), true).unwrap();
            pending.push(resp);
        }
        let mut bodies = Vec::new();
        for resp in pending {
            let resp = tokio::time::timeout(Duration::from_secs(20), resp)
                .await
                .expect("the answer's head in time")
                .unwrap();
            assert_eq!(resp.status(), 200);
            bodies.push(resp.into_body());
        }
        held.push((client, bodies));
    }
    held
}

/// `n` HTTP/1.1 clients that send their request and never read.
async fn stalled_h1(gw: &Gateway, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut held = Vec::new();
    for _ in 0..n {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut s = socket.connect(gw.public).await.unwrap();
        s.write_all(b"GET /orders/big HTTP/1.1\r\nhost: api.example.com\r\nx-user-id: 42\r\n\r\n")
            .await
            .unwrap();
        held.push(s);
    }
    held
}

/// How a test's clients stall.
#[derive(Clone, Copy)]
enum Stall {
    /// HTTP/2 connections × streams, windows of 0.
    Window(usize, usize),
    /// One HTTP/2 connection's streams, its socket not read.
    Socket(usize),
    /// HTTP/1.1 clients that never read.
    Reader(usize),
}

impl Stall {
    fn proto(self) -> Proto {
        match self {
            Stall::Reader(_) => Proto::H1,
            _ => Proto::H2,
        }
    }

    fn responses(self) -> usize {
        match self {
            Stall::Window(conns, streams) => conns * streams,
            Stall::Socket(streams) | Stall::Reader(streams) => streams,
        }
    }
}

/// Clients that stall as `stall` says, held open and unread.
async fn hold(gw: &Gateway, stall: Stall) -> Box<dyn std::any::Any + Send> {
    match stall {
        Stall::Window(conns, streams) => Box::new(stalled_h2(gw, conns, streams).await),
        Stall::Socket(streams) => Box::new(stalled_h2_socket(gw, streams).await),
        Stall::Reader(clients) => Box::new(stalled_h1(gw, clients).await),
    }
}

/// The gateway's resident memory per stalled response (KiB), with `stall`
/// clients asking a unit for `body` bytes each.
async fn per_stalled(stall: Stall, body: u64) -> u64 {
    let unit = StreamUnit::start(body).await;
    let dir = tempfile::tempdir().unwrap();
    let (_units, gw) = gateway_on(&unit, dir.path(), "send_timeout_ms = 60000\n").await;
    warm_up(&gw, stall.proto()).await;
    let before = rss(&gw);
    // Held open, unread, until measured.
    let held = hold(&gw, stall).await;
    until_stalled(&unit, Duration::from_secs(30)).await;
    let during = rss(&gw);
    drop(held);
    let n = stall.responses();
    let per = during.saturating_sub(before) / n as u64;
    eprintln!("RSS {before} KiB before, {during} KiB with {n} stalled: {per} KiB each");
    per
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_http2_stream_holds_kilobytes() {
    let _alone = ALONE.lock().await;
    let per = per_stalled(Stall::Window(2, 100), 64 << 20).await;
    assert!(per <= PER_STALLED_KIB, "{per} KiB per stalled stream");
}

/// One HTTP/2 connection whose windows are wide open and whose socket the
/// client stops reading once `streams` answers have started: every stream
/// may send, and nothing leaves the gateway's socket.
async fn stalled_h2_socket(gw: &Gateway, streams: usize) -> impl Send {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(gw.internal).await.unwrap();
    let (mut client, conn) = h2::client::Builder::new()
        .initial_window_size(i32::MAX as u32)
        .initial_connection_window_size(i32::MAX as u32)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .unwrap();
    // The connection is driven until told to stop, then held unpolled:
    // its socket is never read again.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let driver = tokio::spawn(async move {
        let mut conn = Box::pin(conn);
        tokio::select! {
            _ = &mut conn => None,
            _ = stopped => Some(conn),
        }
    });
    let mut bodies = Vec::new();
    for _ in 0..streams {
        client = client.ready().await.unwrap();
        let (resp, _) = client.send_request(request(), true).unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(20), resp)
            .await
            .expect("the answer's head in time")
            .unwrap();
        assert_eq!(resp.status(), 200);
        bodies.push(resp.into_body());
    }
    stop.send(()).unwrap();
    let conn = driver.await.unwrap().expect("the connection still open");
    (client, bodies, conn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_http2_socket_holds_kilobytes_a_stream() {
    let _alone = ALONE.lock().await;
    let per = per_stalled(Stall::Socket(100), 64 << 20).await;
    assert!(per <= PER_STALLED_KIB, "{per} KiB per stalled stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_http1_connection_holds_kilobytes() {
    let _alone = ALONE.lock().await;
    let per = per_stalled(Stall::Reader(100), 512 << 20).await;
    assert!(per <= PER_STALLED_KIB, "{per} KiB per stalled connection");
}

/// The connections to an HTTP/1.1 unit, read through the gateway's own
/// socket type, are pooled and reused like any other: requests one after
/// another take one connection, not one each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_units_connection_is_reused() {
    let _alone = ALONE.lock().await;
    let unit = StreamUnit::start(64 << 20).await;
    let dir = tempfile::tempdir().unwrap();
    let (_units, gw) = gateway_on(&unit, dir.path(), "").await;
    let client = gw.http();
    let before = unit.served();
    for _ in 0..50 {
        let r = client
            .get(gw.url("/orders/1?bytes=4096"))
            .header("x-user-id", "42")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().len(), 4096);
    }
    // Health checks open their own; only connections that carried a
    // request count. A request may come before the last one's connection
    // is back in the pool (the framework puts it back after the answer is
    // sent), so a few; one each (50) when nothing is reused.
    let opened = unit.served() - before;
    assert!(opened <= 10, "{opened} connections for 50 requests");
}

async fn send_timeouts(gw: &Gateway) -> u64 {
    let m = gw.admin("/metrics").await.1;
    m.lines()
        .filter(|l| l.starts_with("unitgate_send_timeouts_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The figures of `docs/security.md`, at the scale of the report that
/// found the problem, with the default `send_timeout_ms`: the gateway's
/// RSS before, during and after, and when the stalled responses were
/// ended. Run with `cargo test --release -p unitgate --test buffering --
/// --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement of about two minutes; run by hand"]
async fn measure_at_scale() {
    let _alone = ALONE.lock().await;
    let parts = [
        (
            "HTTP/2, 10 connections x 100 zero-window streams, 50 MB each",
            Stall::Window(10, 100),
            50_000_000,
        ),
        (
            "HTTP/1.1, 200 clients that never read, 500 MB each",
            Stall::Reader(200),
            500_000_000,
        ),
    ];
    for (name, stall, body) in parts {
        let n = stall.responses();
        let unit = StreamUnit::start(body).await;
        let dir = tempfile::tempdir().unwrap();
        let (_units, gw) = gateway_on(&unit, dir.path(), "").await;
        warm_up(&gw, stall.proto()).await;
        let before = rss(&gw);
        let opened = Instant::now();
        // Held open, unread, until the end.
        let held = hold(&gw, stall).await;
        until_stalled(&unit, Duration::from_secs(60)).await;
        let during = rss(&gw);
        let upstream = unit.open();
        let (toward_clients, from_unit) =
            kernel_queues(gw.public.port(), gw.internal.port(), unit.addr.port());
        // When each was ended: the send-timeout count, sampled.
        let mut ended = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        while ended.len() < n && Instant::now() < deadline {
            let count = send_timeouts(&gw).await as usize;
            let at = opened.elapsed();
            ended.resize(count.max(ended.len()), at);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Let go of the unit's connections (health checks aside).
        let released = Instant::now() + Duration::from_secs(30);
        while unit.open() > 4 && Instant::now() < released {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Freed memory goes back to the system as the allocator's
        // background threads purge it (about 10 s).
        let freed = Instant::now();
        let mut after = rss(&gw);
        while after > before + (during - before) / 4 && freed.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(250)).await;
            after = rss(&gw);
        }
        let freed = freed.elapsed();
        drop(held);
        let per = during.saturating_sub(before) / n as u64;
        println!("{name}:");
        println!("  RSS {before} KiB before, {during} KiB stalled ({per} KiB each), {after} KiB {:.1} s after they were ended", freed.as_secs_f64());
        println!(
            "  unit connections: {upstream} while stalled, {} after",
            unit.open()
        );
        println!(
            "  kernel queues while stalled: {} KiB toward the clients, {} KiB from the unit",
            toward_clients / 1024,
            from_unit / 1024
        );
        if let (Some(first), Some(last)) = (ended.first(), ended.last()) {
            println!(
                "  ended: {} of {n}, from {:.1} s to {:.1} s after they were opened",
                ended.len(),
                first.as_secs_f64(),
                last.as_secs_f64()
            );
        }
        assert_eq!(ended.len(), n, "not all were ended");
    }
}

/// Bytes the kernel holds in the gateway's sockets (`/proc/net/tcp`):
/// queued to send on its listeners' connections, and received unread on
/// its connections to the unit at `unit`.
fn kernel_queues(public: u16, internal: u16, unit: u16) -> (u64, u64) {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port = |addr: &str| u16::from_str_radix(addr.rsplit(':').next().unwrap(), 16).unwrap();
    let (mut send, mut recv) = (0, 0);
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (local, remote) = (port(f[1]), port(f[2]));
        let (tx, rx) = f[4].split_once(':').unwrap();
        let (tx, rx) = (
            u64::from_str_radix(tx, 16).unwrap(),
            u64::from_str_radix(rx, 16).unwrap(),
        );
        if local == public || local == internal {
            send += tx;
        } else if remote == unit {
            recv += rx;
        }
    }
    (send, recv)
}

/// Download speed through the gateway from the streaming unit, one answer
/// of 64 MB at a time, over HTTP/1.1 and HTTP/2 (h2c): what the read
/// sizes and send buffers cost a client that keeps up. Run with `cargo
/// test --release -p unitgate --test buffering -- --ignored --nocapture
/// measure_downloads`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run by hand"]
async fn measure_downloads() {
    let _alone = ALONE.lock().await;
    const SIZE: usize = 64 << 20;
    let unit = StreamUnit::start(SIZE as u64).await;
    let dir = tempfile::tempdir().unwrap();
    let (_units, gw) = gateway_on(
        &unit,
        dir.path(),
        &std::env::var("UNITGATE_CONFIG").unwrap_or_default(),
    )
    .await;
    for round in 0..3 {
        let t = Instant::now();
        let mut r = gw
            .http()
            .get(gw.url("/orders/big"))
            .header("x-user-id", "42")
            .send()
            .await
            .unwrap();
        let mut n = 0;
        while let Some(c) = r.chunk().await.unwrap() {
            n += c.len();
        }
        assert_eq!(n, SIZE);
        let h1 = SIZE as f64 / t.elapsed().as_secs_f64() / 1e6;
        // HTTP/2 by curl (h2c): the `h2` crate's client with its default
        // windows is the bottleneck itself.
        let curl = std::process::Command::new("curl")
            .args([
                "-s",
                "--http2-prior-knowledge",
                "-o",
                "/dev/null",
                "-w",
                "%{speed_download}",
            ])
            .args(["-H", "x-user-id: 42", "-H", "host: api.example.com"])
            .arg(format!("http://{}/orders/big", gw.internal))
            .output()
            .unwrap();
        let h2 = String::from_utf8_lossy(&curl.stdout)
            .parse::<f64>()
            .unwrap()
            / 1e6;
        println!("round {round}: HTTP/1.1 {h1:.0} MB/s, HTTP/2 {h2:.0} MB/s");
    }
}
