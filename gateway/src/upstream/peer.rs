//! The Pingora peer for one endpoint of a unit's service, with that
//! service's timeouts, capped by what is left of the request's deadline,
//! in the protocol the route says the service speaks.

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use pingora::connectors::L4Connect;

use pingora::protocols::ALPN;
use pingora::upstreams::peer::HttpPeer;
use unit_router::spec::UpstreamProtocol;
use unit_router::topology::UnitService;

/// The connector of HTTP/1.1 endpoints ([`super::connect`]).
static FLOW_CONNECTOR: LazyLock<Arc<dyn L4Connect + Send + Sync>> =
    LazyLock::new(|| Arc::new(super::connect::FlowConnector));

/// Requests multiplexed on one HTTP/2 connection to an endpoint.
const H2_STREAMS_PER_CONNECTION: usize = 100;

/// A peer at `addr` with the timeouts of `service`, none longer than
/// `left`, the time the request has left: HTTP/1.1; HTTP/2 with prior
/// knowledge (`h2c`); or HTTP/2 over TLS (`h2`), the endpoint's
/// certificate verified against the system's trust store (OpenSSL's
/// default paths, `SSL_CERT_FILE` to point elsewhere) and against `sni`,
/// the name the route says the units' certificates carry.
pub fn http_peer(
    addr: SocketAddr,
    service: &UnitService,
    left: Duration,
    protocol: UpstreamProtocol,
    sni: &str,
) -> HttpPeer {
    let ms = |v: u64| Some(Duration::from_millis(v).min(left));
    let tls = protocol == UpstreamProtocol::H2;
    let mut peer = HttpPeer::new(addr, tls, sni.to_owned());
    if protocol != UpstreamProtocol::Http1 {
        peer.options.alpn = ALPN::H2;
        peer.options.max_h2_streams = H2_STREAMS_PER_CONNECTION;
    }
    if tls {
        peer.options.verify_cert = true;
        peer.options.verify_hostname = true;
    }
    peer.options.connection_timeout = ms(service.connect_timeout_ms);
    peer.options.total_connection_timeout = ms(service.total_connect_timeout_ms);
    if protocol == UpstreamProtocol::Http1 {
        // Read in the sizes the request's flow allows. The framework puts
        // the total timeout around this connector; with no TLS, the
        // connect is all of it.
        peer.options.custom_l4 = Some(FLOW_CONNECTOR.clone());
        peer.options.total_connection_timeout = ms(service
            .connect_timeout_ms
            .min(service.total_connect_timeout_ms));
    }
    peer.options.read_timeout = ms(service.read_timeout_ms);
    peer.options.write_timeout = ms(service.read_timeout_ms);
    peer
}
