//! The connections of a listener, below HTTP: the connection pipeline
//! ([`pipeline`]) takes each through a PROXY protocol header where
//! configured ([`proxy_protocol`], [`conn`]), the connection limits
//! ([`admission`]), TLS ([`crate::tls`]) and request-read bounds: HTTP/1
//! heads ([`head`]) or HTTP/2 frames ([`h2_guard`] over [`h2_frames`]), and writes that wait
//! for a client that does not read ([`send_watch`]); idle connections are
//! parked between requests ([`idle`]). What the request side may tell its
//! connection goes through [`signals`]. Nothing here knows requests.

/// The traits of Pingora's `IO` that a connection wrapper (`Conn`,
/// `HeadGuard`, `FrameGuard`) passes to the stream under it, its `inner`
/// field: `delegate_to_inner!(Type: Trait, ...)`. Each wrapper writes the
/// ones it changes itself.
macro_rules! delegate_to_inner {
    ($t:ty: $($tr:ident),+ $(,)?) => { $( delegate_to_inner!(@ $tr $t); )+ };
    (@ Shutdown $t:ty) => {
        #[async_trait::async_trait]
        impl pingora::protocols::Shutdown for $t {
            async fn shutdown(&mut self) {
                pingora::protocols::Shutdown::shutdown(&mut *self.inner).await
            }
        }
    };
    (@ UniqueID $t:ty) => {
        impl pingora::protocols::UniqueID for $t {
            fn id(&self) -> pingora::protocols::UniqueIDType {
                pingora::protocols::UniqueID::id(&*self.inner)
            }
        }
    };
    (@ Ssl $t:ty) => {
        impl pingora::protocols::Ssl for $t {
            fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
                pingora::protocols::Ssl::get_ssl(&*self.inner)
            }
            fn get_ssl_digest(&self) -> Option<std::sync::Arc<pingora::protocols::tls::SslDigest>> {
                pingora::protocols::Ssl::get_ssl_digest(&*self.inner)
            }
            fn selected_alpn_proto(&self) -> Option<pingora::protocols::ALPN> {
                pingora::protocols::Ssl::selected_alpn_proto(&*self.inner)
            }
        }
    };
    (@ GetTimingDigest $t:ty) => {
        impl pingora::protocols::GetTimingDigest for $t {
            fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
                pingora::protocols::GetTimingDigest::get_timing_digest(&*self.inner)
            }
        }
    };
    (@ GetProxyDigest $t:ty) => {
        impl pingora::protocols::GetProxyDigest for $t {
            fn get_proxy_digest(
                &self,
            ) -> Option<std::sync::Arc<pingora::protocols::raw_connect::ProxyDigest>> {
                pingora::protocols::GetProxyDigest::get_proxy_digest(&*self.inner)
            }
        }
    };
    (@ GetSocketDigest $t:ty) => {
        impl pingora::protocols::GetSocketDigest for $t {
            fn get_socket_digest(&self) -> Option<std::sync::Arc<pingora::protocols::SocketDigest>> {
                pingora::protocols::GetSocketDigest::get_socket_digest(&*self.inner)
            }
        }
    };
}
use delegate_to_inner;

pub mod admission;
pub mod conn;
pub mod h2_frames;
pub mod h2_guard;
pub mod head;
pub mod head_log;
pub mod idle;
pub mod pipeline;
pub mod proxy_protocol;
pub mod send_queue;
pub mod send_watch;
pub mod signals;
