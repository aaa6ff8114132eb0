//! Connection limits of a listener: at most `per_listener` connections at
//! once, and at most `per_ip` from one client address. A connection over a
//! limit is closed as soon as it is accepted, before a byte is read, so a
//! refused connection costs almost nothing. A connection counts until it
//! closes, idle keep-alive time included.
//!
//! Per-address counts live in a fixed table of atomic counters indexed by a
//! keyed hash of the address: memory is bounded whatever the number of
//! clients, nothing locks, and two addresses that share a slot share its
//! limit (stricter, never looser).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use pingora_prometheus::prometheus::{IntCounterVec, IntGauge};

use ipnet::IpNet;
use pingora::protocols::ALPN;

use super::conn::Conn;
use super::h2_guard::FrameGuard;
use super::head::{HeadCounters, HeadGuard, HeadLimits};
use super::idle::{serve, H2c, Parking};
use super::proxy_protocol::read_header;
use crate::tls::{HandshakeError, Terminator};

/// Slots of the per-address table (65,536 x 4 bytes).
const SLOTS: usize = 1 << 16;

/// The limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub per_listener: u32,
    /// `None`: no per-address limit (e.g. behind a load balancer whose
    /// address every connection shares).
    pub per_ip: Option<u32>,
}

/// Counters for one listener.
pub struct ConnCounts {
    limits: ConnLimits,
    open: AtomicU32,
    per_ip: Box<[AtomicU32]>,
    hasher: RandomState,
}

/// One counted connection; uncounted on drop.
pub struct Admitted<'a> {
    counts: &'a ConnCounts,
    slot: Option<usize>,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.counts.open.fetch_sub(1, Ordering::AcqRel);
        if let Some(s) = self.slot {
            self.counts.per_ip[s].fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// A gauge, one up for as long as this lives.
pub(super) struct GaugeUp<'a>(&'a IntGauge);

impl<'a> GaugeUp<'a> {
    pub(super) fn up(g: &'a IntGauge) -> Self {
        g.inc();
        GaugeUp(g)
    }
}

impl Drop for GaugeUp<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Why a connection was refused (the metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Listener,
    Ip,
}

/// Take one from `counter` unless it is at `limit`.
fn take(counter: &AtomicU32, limit: u32) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < limit).then_some(n + 1)
        })
        .is_ok()
}

impl ConnCounts {
    pub fn new(limits: ConnLimits) -> Self {
        let slots = if limits.per_ip.is_some() { SLOTS } else { 0 };
        ConnCounts {
            limits,
            open: AtomicU32::new(0),
            per_ip: (0..slots).map(|_| AtomicU32::new(0)).collect(),
            hasher: RandomState::new(),
        }
    }

    /// Count a new connection from `ip`, or say which limit refuses it.
    pub fn admit(&self, ip: Option<IpAddr>) -> Result<Admitted<'_>, Refused> {
        if !take(&self.open, self.limits.per_listener) {
            return Err(Refused::Listener);
        }
        let mut admitted = Admitted {
            counts: self,
            slot: None,
        };
        if let (Some(limit), Some(ip)) = (self.limits.per_ip, ip) {
            let slot = (self.hasher.hash_one(ip) as usize) % self.per_ip.len();
            if !take(&self.per_ip[slot], limit) {
                return Err(Refused::Ip); // `admitted` drops: the listener count is returned
            }
            admitted.slot = Some(slot);
        }
        Ok(admitted)
    }

    /// Connections open now.
    pub fn open(&self) -> u32 {
        self.open.load(Ordering::Acquire)
    }
}

/// A Pingora app behind connection limits: each connection is admitted
/// once and served by `inner` (keep-alive requests included) until it
/// closes, its request heads bounded by [`HeadGuard`], parked between
/// requests ([`serve`]).
pub struct Limited<A> {
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

impl<A> Limited<A> {
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
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for Limited<A> {
    async fn process_new(
        self: &Arc<Self>,
        session: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let conn = self.edge.proxied(session, self.listener).await?;
        let ip = conn.client_ip();
        let _admitted = match self.counts.admit(ip) {
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
        let _open = GaugeUp::up(&self.open);
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
        let session = if matches!(session.selected_alpn_proto(), Some(ALPN::H2)) {
            let h2 = &self.edge.h2;
            FrameGuard::wrap(
                session,
                bytes::Bytes::new(),
                &h2.limits,
                h2.timeout,
                h2.counters.clone(),
                false,
            )
        } else {
            HeadGuard::wrap(session, self.head, self.head_counters.clone())
        };
        let h2c = (self.edge.h2c && self.edge.tls.is_none()).then_some(&self.edge.h2);
        serve(&self.inner, session, &self.parking, shutdown, h2c).await;
        None
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(&*self.inner).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_count_and_uncount() {
        let c = ConnCounts::new(ConnLimits {
            per_listener: 3,
            per_ip: Some(2),
        });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = c.admit(Some(a)).unwrap();
        let a2 = c.admit(Some(a)).unwrap();
        assert_eq!(c.admit(Some(a)).err(), Some(Refused::Ip));
        assert_eq!(c.open(), 2, "a refused connection is not counted");
        let b1 = c.admit(Some(b));
        // b shares a's slot only by a 1-in-65536 chance: then Ip, else ok.
        if let Ok(b1) = b1 {
            assert_eq!(c.admit(None).err(), Some(Refused::Listener));
            drop(b1);
        }
        drop(a1);
        let _a3 = c.admit(Some(a)).unwrap();
        drop(a2);
        assert_eq!(c.open(), 1);
    }

    #[test]
    fn no_per_ip_limit_needs_no_table() {
        let c = ConnCounts::new(ConnLimits {
            per_listener: 1,
            per_ip: None,
        });
        assert!(c.per_ip.is_empty());
        let _one = c.admit(Some("192.0.2.1".parse().unwrap())).unwrap();
        assert_eq!(c.admit(None).err(), Some(Refused::Listener));
    }
}
