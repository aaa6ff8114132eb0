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
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
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

#[async_trait]
impl Shutdown for Conn {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for Conn {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Conn {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Conn {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
}

impl GetProxyDigest for Conn {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

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
