//! An accepted connection as the layers above the socket see it: the
//! socket itself, under the client address a PROXY protocol header gave
//! ([`super::proxy_protocol`]) when the listener takes one. It is what a
//! TLS handshake runs over (Pingora's `SslStream` needs a concrete stream
//! type, not a boxed one).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use pingora::protocols::{GetSocketDigest, Peek, SocketDigest, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The accepted socket, with the addresses it is known by.
#[derive(Debug)]
pub struct Conn {
    inner: Stream,
    socket: Option<Arc<SocketDigest>>,
    /// The addresses came from a PROXY header.
    proxied: bool,
}

impl Conn {
    /// The socket as accepted.
    pub fn new(inner: Stream) -> Self {
        let socket = inner.get_socket_digest();
        Conn {
            inner,
            socket,
            proxied: false,
        }
    }

    /// The connection as a stream: the socket itself unless a PROXY header
    /// renamed its addresses (no layer more than needed on the plain path).
    pub fn into_stream(self) -> Stream {
        if self.proxied {
            Box::new(self)
        } else {
            self.inner
        }
    }

    /// The socket, known by the client and local addresses of a PROXY
    /// protocol header.
    pub fn proxied(inner: Stream, client: SocketAddr, local: SocketAddr) -> Self {
        use std::os::fd::AsRawFd;
        let fd = inner
            .as_any()
            .downcast_ref::<pingora::protocols::l4::stream::Stream>()
            .map(|s| s.as_raw_fd())
            .unwrap_or(-1);
        let digest = SocketDigest::from_raw_fd(fd);
        use pingora::protocols::l4::socket::SocketAddr as L4Addr;
        let _ = digest.peer_addr.set(Some(L4Addr::Inet(client)));
        let _ = digest.local_addr.set(Some(L4Addr::Inet(local)));
        Conn {
            inner,
            socket: Some(Arc::new(digest)),
            proxied: true,
        }
    }

    /// The peer's IP address on the socket.
    pub fn new_peer_ip(inner: &Stream) -> Option<std::net::IpAddr> {
        inner
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()))
    }

    /// The client's IP address.
    pub fn client_ip(&self) -> Option<std::net::IpAddr> {
        self.socket
            .as_ref()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()))
    }

    pub fn inner_mut(&mut self) -> &mut Stream {
        &mut self.inner
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
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

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

super::delegate_to_inner!(Conn: Shutdown, UniqueID, Ssl, GetTimingDigest, GetProxyDigest);

impl GetSocketDigest for Conn {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.socket.clone()
    }
}

#[async_trait]
impl Peek for Conn {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}
