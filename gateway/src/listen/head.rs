//! Bounds on reading a request head, enforced while the bytes arrive.
//!
//! Pingora buffers a request head up to about 1 MiB and allows 60 s per
//! read, so a client can hold a megabyte, or a connection for ever, by
//! sending a head slowly or never finishing it. [`HeadGuard`] wraps each
//! client connection and, while a head is being read:
//!
//! - hands the parser at most `max_bytes` bytes; a head still unfinished at
//!   that size is answered 431 and the connection closed;
//! - gives the whole head `timeout` from its first byte (from accept for the
//!   first request of a connection); a head not finished by then is
//!   answered 408 and the connection closed, however steadily its bytes
//!   trickle in;
//! - turns the framework's own answer to a head it cannot parse (an empty
//!   400 with a `Server: Pingora` header, sent before any proxy hook runs)
//!   into the gateway's JSON error, so every error the gateway sends has one
//!   shape ([`crate::answer`] renders all of them).
//!
//! The head phase ends when the proxy's first hook runs
//! ([`super::signals::head_read`]); the next one starts when the framework
//! hands the connection back for reuse, any unread body drained
//! ([`HeadSignals::rearm`], from [`super::idle`]). Idle time between
//! keep-alive requests is not head time: it is bounded where the connection
//! is parked, and the head clock starts at the next request's first byte.
//! Body bytes are never counted. HTTP/2 connections (ALPN `h2`) are not
//! guarded: their framing has its own limits.

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::protocols::{Peek, Shutdown, Stream, ALPN};
use pingora_prometheus::prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

pub use super::head_log::HeadLog;
use super::send_watch::SendWatch;
use super::signals::{HeadSignals, ARMED, BODY, HEAD};
use crate::answer::{render, GwError};

/// The head limits of a listener.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Bytes of one request head (request line and headers).
    pub max_bytes: usize,
    /// Time to receive one whole head.
    pub timeout: Duration,
    /// How long a write may wait for the client without progress.
    pub send_timeout: Duration,
}

/// Heads refused, by why, and where they are logged.
#[derive(Clone)]
pub struct HeadCounters {
    pub too_large: IntCounter,
    pub timeout: IntCounter,
    pub malformed: IntCounter,
    pub log: Option<HeadLog>,
}

/// A canned response being written in place of the connection's traffic.
struct Canned {
    bytes: bytes::Bytes,
    written: usize,
}

impl Canned {
    /// The gateway's answer to `err`, as bytes that close the connection,
    /// logged ([`HeadLog`]) with the id it carries.
    fn new(err: &GwError, io: &Stream, counters: &HeadCounters, reading: Duration) -> Self {
        let id = crate::access::ids::new_request_id(rand::random());
        if let Some(log) = &counters.log {
            log.refused(io, err, reading, &id);
        }
        let bytes = match render::error(err, render::Form::Json, &id) {
            Ok(a) => render::wire(&a),
            Err(_) => Bytes::from_static(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"),
        };
        Canned { bytes, written: 0 }
    }

    /// Write the rest into `io`; Ready once all of it is out (or the
    /// client is gone, which ends the connection just the same).
    fn poll_out(&mut self, io: &mut Stream, cx: &mut Context<'_>) -> Poll<()> {
        while self.written < self.bytes.len() {
            match ready!(Pin::new(&mut *io).poll_write(cx, &self.bytes[self.written..])) {
                Ok(0) | Err(_) => return Poll::Ready(()),
                Ok(n) => self.written += n,
            }
        }
        let _ = ready!(Pin::new(&mut *io).poll_flush(cx));
        Poll::Ready(())
    }
}

/// Why a head was refused.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    TooLarge,
    Timeout,
}

/// How long, and how many bytes, a refused connection is read and
/// discarded after the answer and the FIN: closing a socket with unread
/// bytes sends a reset, which can make the client lose the answer
/// (nginx's lingering close). Bounded, so a client cannot hold it open.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;

/// Where a refusal is: writing the answer, sending the FIN, draining.
enum Stage {
    Writing,
    Closing,
    Draining {
        drained: usize,
        until: Pin<Box<Sleep>>,
    },
}

/// Discard what the client still sends, until it closes or the linger
/// limits are reached. Ready when done.
fn poll_drain(
    io: &mut Stream,
    cx: &mut Context<'_>,
    drained: &mut usize,
    until: &mut Pin<Box<Sleep>>,
) -> Poll<()> {
    let mut scratch = [0u8; 4096];
    loop {
        if *drained >= LINGER_BYTES || until.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        let mut rb = ReadBuf::new(&mut scratch);
        match ready!(Pin::new(&mut *io).poll_read(cx, &mut rb)) {
            Ok(()) if !rb.filled().is_empty() => *drained += rb.filled().len(),
            _ => return Poll::Ready(()),
        }
    }
}

/// A client connection whose request heads are bounded in size and time.
pub struct HeadGuard {
    inner: Stream,
    limits: HeadLimits,
    counters: Arc<HeadCounters>,
    /// The phase, and the linger request, shared with the requests served.
    signals: Arc<HeadSignals>,
    /// The clock of writes waiting for the client.
    send: SendWatch,
    /// Bytes handed to the parser in the current head.
    read: usize,
    /// When the current head must be complete; `None` until its first byte.
    deadline: Option<Pin<Box<Sleep>>>,
    /// A refusal being written; reads fail once it is out.
    refusing: Option<(Refusal, Canned, Stage)>,
    /// The JSON 400 written in place of the framework's head rejection.
    replaced: Option<Canned>,
    /// Bytes read by [`Peek::try_peek`], handed to the parser before the
    /// socket's (empty, and holding no memory, while the connection idles).
    peeked: Bytes,
}

impl std::fmt::Debug for HeadGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadGuard")
            .field("inner", &self.inner)
            .field("phase", &self.signals.phase())
            .field("read", &self.read)
            .finish()
    }
}

impl HeadGuard {
    /// Guard `inner`, with the signals its requests give it; or hand it
    /// back unguarded when it speaks HTTP/2.
    pub fn wrap(
        inner: Stream,
        limits: HeadLimits,
        counters: Arc<HeadCounters>,
    ) -> (Stream, Option<Arc<HeadSignals>>) {
        if matches!(inner.selected_alpn_proto(), Some(ALPN::H2)) {
            return (inner, None);
        }
        let signals = HeadSignals::new();
        // The first head's clock runs from accept: a connection that sends
        // nothing is closed after `timeout` too.
        let deadline = Some(Box::pin(tokio::time::sleep(limits.timeout)));
        let guard = Box::new(HeadGuard {
            inner,
            limits,
            counters,
            signals: signals.clone(),
            send: SendWatch::new(limits.send_timeout),
            read: 0,
            deadline,
            refusing: None,
            replaced: None,
            peeked: Bytes::new(),
        });
        (guard, Some(signals))
    }

    /// The socket and the bytes peeked off it but not yet read: an h2c
    /// connection leaves the HTTP/1 guard for [`super::h2_guard`].
    pub fn into_parts(self) -> (Stream, Bytes) {
        (self.inner, self.peeked)
    }

    /// How long the current head has been read (0 before its first byte).
    fn reading(&self) -> Duration {
        let left = |d: &Pin<Box<Sleep>>| d.deadline().saturating_duration_since(Instant::now());
        let left = self.deadline.as_ref().map_or(self.limits.timeout, left);
        self.limits.timeout.saturating_sub(left)
    }

    fn refuse(&mut self, why: Refusal) {
        let (counter, err) = match why {
            Refusal::TooLarge => (&self.counters.too_large, GwError::HeadersTooLarge),
            Refusal::Timeout => (&self.counters.timeout, GwError::HeadTimeout),
        };
        let canned = Canned::new(&err, &self.inner, &self.counters, self.reading());
        counter.inc();
        tracing::debug!(?why, read = self.read, "request head refused");
        self.refusing = Some((why, canned, Stage::Writing));
    }

    /// Write the refusal, send the FIN, drain what the client still sends
    /// (bounded), then fail the read so the connection ends.
    fn poll_refusal(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some((why, canned, stage)) = self.refusing.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        loop {
            match stage {
                Stage::Writing => {
                    ready!(canned.poll_out(&mut self.inner, cx));
                    *stage = Stage::Closing;
                }
                Stage::Closing => {
                    let _ = ready!(Pin::new(&mut self.inner).poll_shutdown(cx));
                    *stage = Stage::Draining {
                        drained: 0,
                        until: Box::pin(tokio::time::sleep(LINGER)),
                    };
                }
                Stage::Draining { drained, until } => {
                    ready!(poll_drain(&mut self.inner, cx, drained, until));
                    break;
                }
            }
        }
        let (kind, msg) = match why {
            Refusal::TooLarge => (io::ErrorKind::InvalidData, "request head too large"),
            Refusal::Timeout => (io::ErrorKind::TimedOut, "request head timed out"),
        };
        Poll::Ready(Err(io::Error::new(kind, msg)))
    }

    fn poll_head_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.signals.phase() == ARMED {
            self.signals.set_phase(HEAD);
            self.read = 0;
            self.deadline = None;
        }
        if let Some(d) = self.deadline.as_mut() {
            if d.as_mut().poll(cx).is_ready() {
                self.refuse(Refusal::Timeout);
                return self.poll_refusal(cx);
            }
        }
        let room = self.limits.max_bytes.saturating_sub(self.read);
        if room == 0 {
            self.refuse(Refusal::TooLarge);
            return self.poll_refusal(cx);
        }
        let n = if buf.remaining() <= room {
            let before = buf.filled().len();
            ready!(self.poll_source(cx, buf))?;
            buf.filled().len() - before
        } else {
            // Never hand the parser more than the head may still take.
            let mut part = ReadBuf::new(buf.initialize_unfilled_to(room));
            ready!(self.poll_source(cx, &mut part))?;
            let n = part.filled().len();
            buf.advance(n);
            n
        };
        self.read += n;
        if n > 0 && self.deadline.is_none() {
            let at = Instant::now() + self.limits.timeout;
            self.deadline = Some(Box::pin(tokio::time::sleep_until(at)));
        }
        Poll::Ready(Ok(()))
    }
}

impl HeadGuard {
    /// Read into `buf`: peeked bytes first, then the socket.
    fn poll_source(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.peeked.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = self.peeked.len().min(buf.remaining());
        buf.put_slice(&self.peeked.split_to(n));
        Poll::Ready(Ok(()))
    }

    /// Read from the socket until at least `want` bytes are peeked. Each
    /// read takes what the socket has (up to [`PEEK_READ`]), so the parser
    /// then finds the head without another system call.
    fn poll_peek(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<()>> {
        while self.peeked.len() < want {
            let mut scratch = [MaybeUninit::<u8>::uninit(); PEEK_READ];
            let mut rb = ReadBuf::uninit(&mut scratch);
            ready!(Pin::new(&mut self.inner).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            self.peeked = if self.peeked.is_empty() {
                Bytes::copy_from_slice(rb.filled())
            } else {
                let mut joined = BytesMut::from(&self.peeked[..]);
                joined.extend_from_slice(rb.filled());
                joined.freeze()
            };
        }
        Poll::Ready(Ok(()))
    }
}

/// The most one peek reads from the socket (the parser's first buffer).
const PEEK_READ: usize = 4096;

impl AsyncRead for HeadGuard {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.refusing.is_some() {
            return this.poll_refusal(cx);
        }
        if this.signals.phase() == BODY {
            return this.poll_source(cx, buf);
        }
        this.poll_head_read(cx, buf)
    }
}

impl AsyncWrite for HeadGuard {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.signals.phase() != HEAD {
            // The request's own answer, or its end written after `logging`.
            let r = Pin::new(&mut this.inner).poll_write(cx, buf);
            return this.send.watch(cx, r, |n| *n > 0);
        }
        // Written before any proxy hook ran: the framework refusing a head
        // it could not parse (its only answer before the hooks; CONNECT is
        // let through to them). The client gets the gateway's JSON answer
        // once; the framework's bytes are dropped.
        if this.replaced.is_none() {
            this.counters.malformed.inc();
            let reading = this.reading();
            let err = GwError::MalformedHead;
            this.replaced = Some(Canned::new(&err, &this.inner, &this.counters, reading));
        }
        let Some(canned) = this.replaced.as_mut() else {
            return Poll::Ready(Ok(buf.len()));
        };
        ready!(canned.poll_out(&mut this.inner, cx));
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.send.watch(cx, r, |_| true)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for HeadGuard {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
        // A refusal written for the framework, or an answer sent before the
        // body was read: linger so the client reads it.
        if self.replaced.take().is_some() || self.signals.take_linger() {
            let mut drained = 0;
            let mut until = Box::pin(tokio::time::sleep(LINGER));
            let inner = &mut self.inner;
            std::future::poll_fn(|cx| poll_drain(inner, cx, &mut drained, &mut until)).await;
        }
    }
}

super::delegate_to_inner!(HeadGuard: UniqueID, Ssl, GetTimingDigest, GetProxyDigest, GetSocketDigest);

/// Waits until `buf.len()` bytes came in and copies them, leaving them to
/// be read: how an idle connection is parked ([`super::idle`]).
#[async_trait]
impl Peek for HeadGuard {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        std::future::poll_fn(|cx| self.poll_peek(cx, buf.len())).await?;
        buf.copy_from_slice(&self.peeked[..buf.len()]);
        Ok(true)
    }
}
