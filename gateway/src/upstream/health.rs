//! One active health probe: `GET <health_path>` on an endpoint through
//! Pingora's own HTTP connector; below 400 within the timeout is up. The
//! control thread schedules the probes (`control/health_checks.rs`).

use std::time::Duration;

use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;

use crate::upstream::pool::Endpoint;

/// Probe `ep` at `path`.
pub async fn probe(c: &Connector, ep: &Endpoint, path: &str, timeout: Duration) -> bool {
    let mut peer = HttpPeer::new(ep.addr, false, String::new());
    peer.options.connection_timeout = Some(timeout);
    peer.options.total_connection_timeout = Some(timeout);
    peer.options.read_timeout = Some(timeout);
    let Ok((mut s, _)) = c.get_http_session(&peer).await else {
        return false;
    };
    let Ok(mut req) = RequestHeader::build("GET", path.as_bytes(), None) else {
        return false;
    };
    let _ = req.insert_header("host", ep.addr.to_string());
    let _ = req.insert_header("user-agent", "unitgate-health-check");
    if s.write_request_header(Box::new(req)).await.is_err()
        || s.finish_request_body().await.is_err()
    {
        return false;
    }
    if s.read_response_header().await.is_err() {
        return false;
    }
    s.response_header().is_some_and(|r| r.status.as_u16() < 400)
}
