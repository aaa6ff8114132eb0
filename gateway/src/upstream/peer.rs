//! The Pingora peer for one endpoint of a unit's service, with that
//! service's timeouts.

use std::net::SocketAddr;
use std::time::Duration;

use pingora::upstreams::peer::HttpPeer;
use unit_router::topology::UnitService;

/// A plain HTTP/1.1 peer at `addr` with the timeouts of `service`.
pub fn http_peer(addr: SocketAddr, service: &UnitService) -> HttpPeer {
    let ms = Duration::from_millis;
    let mut peer = HttpPeer::new(addr, false, String::new());
    peer.options.connection_timeout = Some(ms(service.connect_timeout_ms));
    peer.options.total_connection_timeout = Some(ms(service.total_connect_timeout_ms));
    peer.options.read_timeout = Some(ms(service.read_timeout_ms));
    peer.options.write_timeout = Some(ms(service.read_timeout_ms));
    peer
}
