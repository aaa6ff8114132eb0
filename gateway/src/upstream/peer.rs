//! The Pingora peer for one endpoint of a unit's service, with that
//! service's timeouts, capped by what is left of the request's deadline.

use std::net::SocketAddr;
use std::time::Duration;

use pingora::upstreams::peer::HttpPeer;
use unit_router::topology::UnitService;

/// A plain HTTP/1.1 peer at `addr` with the timeouts of `service`, none
/// longer than `left`, the time the request has left.
pub fn http_peer(addr: SocketAddr, service: &UnitService, left: Duration) -> HttpPeer {
    let ms = |v: u64| Some(Duration::from_millis(v).min(left));
    let mut peer = HttpPeer::new(addr, false, String::new());
    peer.options.connection_timeout = ms(service.connect_timeout_ms);
    peer.options.total_connection_timeout = ms(service.total_connect_timeout_ms);
    peer.options.read_timeout = ms(service.read_timeout_ms);
    peer.options.write_timeout = ms(service.read_timeout_ms);
    peer
}
