//! The connection pipeline of a listener: each accepted connection goes,
//! in order, through the PROXY protocol header where configured
//! ([`super::proxy_protocol`]), admission by the connection limits
//! ([`super::admission`]), the TLS handshake ([`crate::tls`]), a guard that
//! bounds request reads (HTTP/1 heads: [`super::head`]; HTTP/2 frames:
//! [`super::h2_guard`]), and is then served, parked between requests
//! ([`super::idle`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use ipnet::IpNet;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use pingora_prometheus::prometheus::{IntCounterVec, IntGauge};

use super::admission::{ConnCounts, GaugeUp, Refused};
use super::conn::Conn;
use super::h2_guard::FrameGuard;
use super::head::{HeadCounters, HeadGuard, HeadLimits};
use super::idle::{serve, H2c, Parking};
use super::proxy_protocol::read_header;
use super::send_queue;
use super::signals;
use crate::tls::{HandshakeError, Terminator};

/// A Pingora app behind the connection pipeline: each connection is
/// admitted once and served by `inner` (keep-alive requests included) until
/// it closes, its request reads bounded, parked between requests
/// ([`serve`]).
pub struct ConnectionPipeline<A> {
    pub inner: Arc<A>,
    pub counts: ConnCounts,
    pub head: HeadLimits,
    pub head_counters: Arc<HeadCounters>,
    /// Where a connection waits for its next request.
    pub parking: Parking,
    pub listener: &'static str,
    pub refused: IntCounterVec,
    /// Connections open now on this listener.
    pub open: IntGauge,
    /// Connections being served on every listener, counted from accept
    /// (PROXY header and admission included), which the gateway waits
    /// for when it stops (`crate::stop`).
    pub live: Arc<AtomicUsize>,
    /// TLS, PROXY protocol and HTTP/2 on this listener.
    pub edge: Edge,
}

/// What a listener speaks below HTTP/1.
pub struct Edge {
    /// TLS terminated here.
    pub tls: Option<Arc<Terminator>>,
    /// A PROXY protocol header is required from these peers (and taken
    /// from no one else).
    pub proxy_protocol: Option<Arc<[IpNet]>>,
    /// HTTP/2 frame budgets, and h2c on a plain listener.
    pub h2: H2c,
    pub h2c: bool,
    /// `unitgate_edge_refused_total{listener, reason}`.
    pub refused: IntCounterVec,
}

impl Edge {
    fn refuse(&self, listener: &str, reason: &str) {
        self.refused.with_label_values(&[listener, reason]).inc();
    }

    /// The PROXY header, read from a trusted peer, or `None` (refused).
    async fn proxied(&self, mut session: Stream, listener: &str) -> Option<Conn> {
        let Some(trusted) = &self.proxy_protocol else {
            return Some(Conn::new(session));
        };
        let peer = Conn::new_peer_ip(&session);
        if !peer.is_some_and(|ip| trusted.iter().any(|n| n.contains(&ip))) {
            self.refuse(listener, "proxy_untrusted");
            return None;
        }
        match read_header(&mut session, self.h2.timeout).await {
            Ok(Some((client, local))) => Some(Conn::proxied(session, client, local)),
            Ok(None) => Some(Conn::new(session)),
            Err(e) => {
                tracing::debug!(error = %e, ?peer, "PROXY header refused");
                self.refuse(listener, "proxy_header");
                None
            }
        }
    }
}

impl<A> ConnectionPipeline<A> {
    /// The TLS handshake, within the head timeout from now. A connection
    /// closed before its first byte (a load balancer's TCP check) is no
    /// failed handshake: it is dropped uncounted.
    async fn hello(&self, tls: &Terminator, mut conn: Conn) -> Result<Stream, HandshakeError> {
        let started = tokio::time::Instant::now();
        let mut first = [0u8; 1];
        match tokio::time::timeout(self.head.timeout, conn.inner_mut().try_peek(&mut first)).await {
            Err(_) => return Err(HandshakeError::Timeout(self.head.timeout)),
            Ok(Err(_)) => return Err(HandshakeError::Closed),
            Ok(Ok(_)) => {}
        }
        let left = self.head.timeout.saturating_sub(started.elapsed());
        tls.handshake(conn, left).await
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for ConnectionPipeline<A> {
    async fn process_new(
        self: &Arc<Self>,
        session: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let _live = Live::enter(&self.live);
        send_queue::limit(&session);
        let conn = self.edge.proxied(session, self.listener).await?;
        let ip = conn.client_ip();
        let admitted = match self.counts.admit(ip) {
            Ok(a) => a,
            Err(why) => {
                let label = match why {
                    Refused::Listener => "listener",
                    Refused::Ip => "ip",
                };
                self.refused
                    .with_label_values(&[self.listener, label])
                    .inc();
                return None; // dropped: closed before a byte is read
            }
        };
        // Dropped in this order: the admission is released before the
        // gauge falls, so an open count of 0 means the slots are free.
        let _held = (admitted, GaugeUp::up(&self.open));
        let session: Stream = match &self.edge.tls {
            None => conn.into_stream(),
            Some(tls) => match self.hello(tls, conn).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, ?ip, "TLS handshake failed");
                    let reason = match e {
                        HandshakeError::Timeout(_) => "tls_timeout",
                        HandshakeError::Failed(_) => "tls_handshake",
                        HandshakeError::Closed => return None,
                    };
                    self.edge.refuse(self.listener, reason);
                    return None;
                }
            },
        };
        let (session, heads) = if matches!(session.selected_alpn_proto(), Some(ALPN::H2)) {
            let h2 = &self.edge.h2;
            let s = FrameGuard::wrap(
                session,
                bytes::Bytes::new(),
                &h2.limits,
                h2.timeout,
                h2.counters.clone(),
                false,
            );
            (s, None)
        } else {
            HeadGuard::wrap(session, self.head, self.head_counters.clone())
        };
        let h2c = (self.edge.h2c && self.edge.tls.is_none()).then_some(&self.edge.h2);
        let served = serve(
            &self.inner,
            session,
            &self.parking,
            shutdown,
            h2c,
            heads.clone(),
        );
        signals::scope(heads, served).await;
        None
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(&*self.inner).await
    }
}

/// One connection counted in [`ConnectionPipeline::live`] while it lives.
struct Live<'a>(&'a AtomicUsize);

impl<'a> Live<'a> {
    fn enter(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Live(n)
    }
}

impl Drop for Live<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
