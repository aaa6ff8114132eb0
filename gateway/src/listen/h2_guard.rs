//! Bounds on what an HTTP/2 client may make the gateway do, enforced on
//! the frames as they arrive, below the HTTP/2 library.
//!
//! The `h2` library bounds streams, header lists and flow control by the
//! settings the gateway advertises (`listen/mod.rs`), and answers the
//! frames a client sends. Some frames cost the gateway work but give the
//! client nothing: a stream opened and reset at once (rapid reset,
//! CVE-2023-44487: each reset stream may already have started a request
//! upstream), SETTINGS and PING frames each answered with an ACK, PRIORITY
//! frames, empty DATA frames, WINDOW_UPDATEs of a few bytes that each make
//! the library send a DATA frame of that few (CVE-2019-9511). [`FrameGuard`]
//! reads the client's byte stream through [`super::h2_frames`], which gives
//! each connection a budget of resets and one of those control frames; a
//! client that spends one is disconnected (nginx and Envoy do the same).
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

use super::h2_frames::{Clock, Flood, Frames};
use crate::config::H2Limits;

/// HTTP/2 connections closed by the guard, by why.
#[derive(Clone)]
pub struct FrameCounters {
    pub resets: IntCounter,
    pub control: IntCounter,
    pub timeout: IntCounter,
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
