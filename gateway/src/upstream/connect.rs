//! The TCP connection to a unit's HTTP/1.1 endpoint: a plain socket whose
//! reads are sized by the flow of the request reading it ([`super::flow`]),
//! so that a client that does not read holds at most
//! `response_buffer_bytes` of its answer in the gateway. Writes, socket
//! options and everything else pass through; the pool knows it by its
//! descriptor (the one patch in `vendor/pingora-core`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use async_trait::async_trait;
use pingora::connectors::L4Connect;
use pingora::protocols::l4::ext::{connect, set_tcp_keepalive};
use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::l4::stream::Stream;
use pingora::protocols::l4::virt::{VirtualSockOpt, VirtualSocket, VirtualSocketStream};
use pingora::{Error, ErrorType, Result};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::task::Id;
use tokio::time::Sleep;

use super::flow::{self, Flow, SLOW_READ};

/// Connects to unit endpoints over TCP, each connection a [`FlowSocket`].
/// The connect timeout is the peer's `total_connection_timeout`, which
/// the framework puts around this connect.
#[derive(Debug, Default)]
pub struct FlowConnector;

#[async_trait]
impl L4Connect for FlowConnector {
    async fn connect(&self, addr: &SocketAddr) -> Result<Stream> {
        let SocketAddr::Inet(inet) = addr else {
            return Error::e_explain(ErrorType::ConnectError, "unit endpoints are TCP");
        };
        let tcp = connect(inet, None).await?;
        let socket = FlowSocket {
            tcp,
            flow: None,
            trickle: None,
        };
        Ok(Stream::from(VirtualSocketStream::new(Box::new(socket))))
    }
}

/// A unit's connection, its reads sized by the flow of the request whose
/// task reads it.
#[derive(Debug)]
pub struct FlowSocket {
    tcp: TcpStream,
    /// The flow last found, and the task it was found for.
    flow: Option<(Id, Arc<Flow>)>,
    /// A read waiting for the client's side: when it reads anyway.
    trickle: Option<Pin<Box<Sleep>>>,
}

impl FlowSocket {
    /// The reading request's flow: the one last found while it is the same
    /// task's and its request runs, else looked up.
    fn flow(&mut self) -> Option<&Arc<Flow>> {
        let task = tokio::task::try_id()?;
        let stale = match &self.flow {
            Some((id, f)) => *id != task || !f.live(),
            None => true,
        };
        if stale {
            self.flow = flow::current().map(|f| (task, f));
        }
        self.flow.as_ref().map(|(_, f)| f)
    }
}

impl VirtualSocket for FlowSocket {
    /// The pool checks and reuses the connection by its descriptor.
    fn raw_fd(&self) -> Option<std::os::unix::io::RawFd> {
        Some(std::os::unix::io::AsRawFd::as_raw_fd(&self.tcp))
    }

    fn set_socket_option(&self, opt: VirtualSockOpt) -> io::Result<()> {
        match opt {
            VirtualSockOpt::NoDelay => self.tcp.set_nodelay(true),
            VirtualSockOpt::KeepAlive(ka) => {
                set_tcp_keepalive(&self.tcp, &ka).map_err(io::Error::other)
            }
            _ => Ok(()),
        }
    }
}

impl AsyncRead for FlowSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(flow) = this.flow().cloned() else {
            return Pin::new(&mut this.tcp).poll_read(cx, buf);
        };
        let size = match flow.next(buf.remaining(), cx.waker()) {
            Some(size) => size,
            None => {
                // The budget is spent: wait for a take, or read a little
                // once the trickle time is up.
                let wait = this
                    .trickle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(flow.trickle())));
                ready!(wait.as_mut().poll(cx));
                buf.remaining().min(SLOW_READ)
            }
        };
        this.trickle = None;
        let n = ready!(read_at_most(&mut this.tcp, cx, buf, size))?;
        flow.read(n);
        Poll::Ready(Ok(()))
    }
}

/// Read at most `size` bytes of `tcp` into `buf`; how many were read.
#[allow(unsafe_code)]
fn read_at_most(
    tcp: &mut TcpStream,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
    size: usize,
) -> Poll<io::Result<usize>> {
    // A read into the first `size` bytes of the room (tokio's `Take`).
    let mut part = buf.take(size);
    let start = part.filled().as_ptr();
    ready!(Pin::new(tcp).poll_read(cx, &mut part))?;
    assert_eq!(start, part.filled().as_ptr(), "the read kept its buffer");
    let n = part.filled().len();
    // SAFETY: the `n` bytes just read into `part` are the first `n` of
    // `buf`'s unfilled room, and now initialised.
    unsafe { buf.assume_init(n) };
    buf.advance(n);
    Poll::Ready(Ok(n))
}

impl AsyncWrite for FlowSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}
