//! Bounds on what an HTTP/2 client may make the gateway do, enforced on
//! the frames as they arrive, below the HTTP/2 library.
//!
//! The `h2` library bounds streams, header lists and flow control by the
//! settings the gateway advertises (`listen/mod.rs`), and answers the
//! frames a client sends. Some frames cost the gateway work but give the
//! client nothing: a stream opened and reset at once (rapid reset,
//! CVE-2023-44487: each reset stream may already have started a request
//! upstream), SETTINGS and PING frames each answered with an ACK, PRIORITY
//! frames, empty DATA frames. [`FrameGuard`] reads the frame headers of
//! the client's byte stream (9 bytes a frame; payloads are not touched)
//! and gives each connection two budgets, refilled at a tenth of their
//! size per second: stream resets, and those control frames. A client
//! that spends one is disconnected (nginx and Envoy do the same).
//!
//! It also bounds time the way [`super::head`] does for HTTP/1: the
//! connection preface and first SETTINGS frame, and every header block
//! (HEADERS and its CONTINUATION frames), must arrive within the head
//! timeout, however slowly their bytes trickle in.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{Peek, Ssl, Stream, ALPN};
use pingora_prometheus::prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::config::H2Limits;

const PREFACE_LEN: usize = 24;
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_ACK: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;

/// HTTP/2 connections closed by the guard, by why.
#[derive(Clone)]
pub struct FrameCounters {
    pub resets: IntCounter,
    pub control: IntCounter,
    pub timeout: IntCounter,
}

/// Why a connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flood {
    Resets,
    Control,
    Timeout,
}

/// A token bucket of `cap` frames, refilled at `cap / 10` a second.
#[derive(Debug)]
struct Budget {
    tokens: f64,
    cap: f64,
    last: Instant,
}

impl Budget {
    fn new(cap: u32) -> Self {
        Budget {
            tokens: f64::from(cap),
            cap: f64::from(cap),
            last: Instant::now(),
        }
    }

    fn spend(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.cap / 10.0;
        self.tokens = (self.tokens + refill).min(self.cap);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The frame reader's position in the client's byte stream.
#[derive(Debug)]
struct Frames {
    preface_left: usize,
    header: [u8; 9],
    header_len: usize,
    /// Payload bytes of the current frame still to come.
    skip: usize,
    /// The head clock stops when the current frame's payload is in: the
    /// first frame (SETTINGS), or the frame that ends a header block.
    stop_after_payload: bool,
    /// The first frame after the preface has been seen.
    settled: bool,
    resets: Budget,
    control: Budget,
}

/// What one chunk of bytes did to the head clock.
#[derive(Debug, PartialEq, Eq)]
enum Clock {
    Keep,
    Start,
    Stop,
}

impl Frames {
    fn new(limits: &H2Limits) -> Self {
        Frames {
            preface_left: PREFACE_LEN,
            header: [0; 9],
            header_len: 0,
            skip: 0,
            stop_after_payload: false,
            settled: false,
            resets: Budget::new(limits.max_resets),
            control: Budget::new(limits.max_control_frames),
        }
    }

    /// Account for `bytes` read from the client.
    fn scan(&mut self, mut bytes: &[u8]) -> Result<Clock, Flood> {
        let mut clock = Clock::Keep;
        while !bytes.is_empty() {
            if self.preface_left > 0 {
                let n = self.preface_left.min(bytes.len());
                self.preface_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                if self.skip == 0 && self.stop_after_payload {
                    self.stop_after_payload = false;
                    clock = Clock::Stop;
                }
                continue;
            }
            let n = (9 - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
            self.header_len += n;
            bytes = &bytes[n..];
            if self.header_len < 9 {
                continue;
            }
            self.header_len = 0;
            let h = self.header;
            let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
            let (kind, flags) = (h[3], h[4]);
            self.skip = len;
            if !self.settled {
                // The preface's first frame: the clock runs until its
                // payload is in.
                self.settled = true;
                self.stop_after_payload = true;
            }
            let spent = match kind {
                RST_STREAM => self.resets.spend().then_some(()).ok_or(Flood::Resets),
                SETTINGS | PING if flags & FLAG_ACK == 0 => {
                    self.control.spend().then_some(()).ok_or(Flood::Control)
                }
                PRIORITY => self.control.spend().then_some(()).ok_or(Flood::Control),
                DATA if len == 0 && flags & FLAG_END_STREAM == 0 => {
                    self.control.spend().then_some(()).ok_or(Flood::Control)
                }
                // A header block runs the clock from its first frame's
                // header to the end of the payload that ends it.
                HEADERS | PUSH_PROMISE => {
                    clock = Clock::Start;
                    self.stop_after_payload = flags & FLAG_END_HEADERS != 0;
                    Ok(())
                }
                CONTINUATION if flags & FLAG_END_HEADERS != 0 => {
                    self.stop_after_payload = true;
                    Ok(())
                }
                _ => Ok(()),
            };
            spent?;
            if len == 0 && self.stop_after_payload {
                self.stop_after_payload = false;
                clock = Clock::Stop;
            }
        }
        Ok(clock)
    }
}

/// An HTTP/2 client connection under the frame budgets and head clock.
pub struct FrameGuard {
    inner: Stream,
    /// Bytes already read off the socket (by an HTTP/1 guard that saw the
    /// h2c preface), handed out first.
    pending: Bytes,
    frames: Frames,
    timeout: Duration,
    /// The head clock (reset, never reallocated), and whether it runs.
    deadline: Pin<Box<Sleep>>,
    armed: bool,
    counters: Arc<FrameCounters>,
    closed: Option<Flood>,
    /// Whether the connection is h2c (no ALPN to say so).
    h2c: bool,
}

impl std::fmt::Debug for FrameGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameGuard")
            .field("inner", &self.inner)
            .field("frames", &self.frames)
            .finish()
    }
}

impl FrameGuard {
    /// Guard `inner`, whose first bytes are `pending` (already read), the
    /// preface and first frames due within `timeout`. `h2c`: the stream
    /// says it speaks HTTP/2 though it has no ALPN.
    pub fn wrap(
        inner: Stream,
        pending: Bytes,
        limits: &H2Limits,
        timeout: Duration,
        counters: Arc<FrameCounters>,
        h2c: bool,
    ) -> Stream {
        Box::new(FrameGuard {
            inner,
            pending,
            frames: Frames::new(limits),
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            armed: true,
            counters,
            closed: None,
            h2c,
        })
    }

    fn close(&mut self, why: Flood) -> io::Error {
        if self.closed.is_none() {
            match why {
                Flood::Resets => self.counters.resets.inc(),
                Flood::Control => self.counters.control.inc(),
                Flood::Timeout => self.counters.timeout.inc(),
            }
            tracing::debug!(?why, "HTTP/2 connection closed by the frame guard");
            self.closed = Some(why);
        }
        io::Error::new(
            io::ErrorKind::ConnectionAborted,
            format!("HTTP/2 client over its budget: {why:?}"),
        )
    }
}

impl AsyncRead for FrameGuard {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(why) = this.closed {
            return Poll::Ready(Err(this.close(why)));
        }
        if this.armed && this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(this.close(Flood::Timeout)));
        }
        let before = buf.filled().len();
        if !this.pending.is_empty() {
            let n = this.pending.len().min(buf.remaining());
            buf.put_slice(&this.pending[..n]);
            this.pending.advance(n);
        } else {
            match Pin::new(&mut this.inner).poll_read(cx, buf) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
        }
        match this.frames.scan(&buf.filled()[before..]) {
            Err(why) => Poll::Ready(Err(this.close(why))),
            Ok(Clock::Keep) => Poll::Ready(Ok(())),
            Ok(Clock::Stop) => {
                this.armed = false;
                Poll::Ready(Ok(()))
            }
            Ok(Clock::Start) => {
                // A block begun in this read and not finished in it.
                this.deadline.as_mut().reset(Instant::now() + this.timeout);
                this.armed = true;
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl AsyncWrite for FrameGuard {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

super::delegate_to_inner!(FrameGuard: Shutdown, UniqueID, GetTimingDigest, GetProxyDigest, GetSocketDigest);

impl Ssl for FrameGuard {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        if self.h2c {
            Some(ALPN::H2)
        } else {
            self.inner.selected_alpn_proto()
        }
    }
}

impl Peek for FrameGuard {}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> H2Limits {
        H2Limits {
            max_concurrent_streams: 100,
            stream_window: 65_535,
            connection_window: 65_535,
            max_resets: 10,
            max_control_frames: 10,
        }
    }

    fn frame(kind: u8, flags: u8, len: usize) -> Vec<u8> {
        let mut f = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            flags,
            0,
            0,
            0,
            1,
        ];
        f.resize(9 + len, 0);
        f
    }

    #[tokio::test]
    async fn budgets_are_spent_by_frames_across_read_boundaries() {
        let mut f = Frames::new(&limits());
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend(frame(SETTINGS, 0, 6));
        // One byte at a time: the preface, then a SETTINGS frame.
        let mut clocks = Vec::new();
        for b in &bytes {
            clocks.push(f.scan(std::slice::from_ref(b)).unwrap());
        }
        // Stopped once, when the SETTINGS payload's last byte came.
        assert_eq!(clocks.iter().filter(|c| **c == Clock::Stop).count(), 1);
        assert_eq!(clocks.last(), Some(&Clock::Stop));
        // ACKs and WINDOW_UPDATEs are free; pings are not.
        for _ in 0..50 {
            f.scan(&frame(PING, FLAG_ACK, 8)).unwrap();
            f.scan(&frame(0x8, 0, 4)).unwrap();
        }
        // The client's first SETTINGS counted one of the 10.
        for _ in 0..8 {
            f.scan(&frame(PING, 0, 8)).unwrap();
        }
        assert_eq!(f.scan(&frame(PING, 0, 8)), Ok(Clock::Keep));
        assert_eq!(f.scan(&frame(PRIORITY, 0, 5)), Err(Flood::Control));
        let mut f = Frames::new(&limits());
        f.scan(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
        let mut resets = Vec::new();
        for _ in 0..11 {
            resets.extend(frame(RST_STREAM, 0, 4));
        }
        assert_eq!(f.scan(&resets), Err(Flood::Resets));
    }

    fn window_update(increment: u32) -> Vec<u8> {
        let mut f = frame(0x8, 0, 4);
        f[9..].copy_from_slice(&increment.to_be_bytes());
        f
    }

    #[tokio::test]
    async fn small_window_updates_spend_the_control_budget_across_read_boundaries() {
        let mut f = Frames::new(&limits());
        f.scan(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
        // The client's SETTINGS: 1 of the 10.
        f.scan(&frame(SETTINGS, 0, 0)).unwrap();
        // A download's increments (1,024 bytes and more; the reserved bit
        // is not part of it) are free, however the reads split them.
        let mut big = Vec::new();
        for inc in [1024, 32 * 1024, (1 << 31) | 1024, 0x7fff_ffff] {
            big.extend(window_update(inc).repeat(25));
        }
        for n in [1, 2, 3, 5, 7, 13] {
            for chunk in big.chunks(n) {
                assert_eq!(f.scan(chunk), Ok(Clock::Keep));
            }
        }
        // Small ones (a dribble) are not: 8 of them, a byte at a time, and
        // one split inside its increment; the reserved bit hides nothing.
        for inc in [1, 0, 1023, (1 << 31) | 1, 512, 1, 1, 1] {
            for b in window_update(inc) {
                assert_eq!(f.scan(&[b]), Ok(Clock::Keep), "{inc}");
            }
        }
        let last = window_update(1);
        assert_eq!(f.scan(&last[..11]), Ok(Clock::Keep));
        assert_eq!(f.scan(&last[11..]), Ok(Clock::Keep));
        // The budget is spent: the next small increment closes.
        let mut two = window_update(64 * 1024);
        two.extend(window_update(2));
        assert_eq!(f.scan(&two), Err(Flood::Control));
    }

    #[tokio::test]
    async fn a_header_block_runs_the_clock_until_its_last_byte() {
        let mut f = Frames::new(&limits());
        f.scan(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
        assert_eq!(f.scan(&frame(SETTINGS, 0, 0)), Ok(Clock::Stop));
        assert_eq!(f.scan(&frame(HEADERS, 0, 3)), Ok(Clock::Start));
        assert_eq!(f.scan(&frame(CONTINUATION, 0, 3)), Ok(Clock::Keep));
        assert_eq!(
            f.scan(&frame(CONTINUATION, FLAG_END_HEADERS, 3)),
            Ok(Clock::Stop)
        );
        // A whole block in one read: started and stopped, stopped wins.
        assert_eq!(
            f.scan(&frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 3)),
            Ok(Clock::Stop)
        );
        // A block whose payload trickles: the clock runs until its end.
        let whole = frame(HEADERS, FLAG_END_HEADERS, 4);
        assert_eq!(f.scan(&whole[..11]), Ok(Clock::Start));
        assert_eq!(f.scan(&whole[11..12]), Ok(Clock::Keep));
        assert_eq!(f.scan(&whole[12..]), Ok(Clock::Stop));
    }
}
