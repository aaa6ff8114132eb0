//! Active health checks: `GET <health_path>` on every endpoint of every
//! service that has one, each at its service's interval; the verdict marks
//! the endpoint up or down for the load balancer.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;

use crate::state::Shared;
use crate::upstream::pool::Endpoint;

/// Active health checks: `GET <health_path>` on every endpoint of every
/// service that has one, each at its service's interval.
pub async fn health_checks(shared: Arc<Shared>) {
    let connector = Arc::new(Connector::new(None));
    let mut next: HashMap<(SocketAddr, String), Instant> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let Some(plane) = shared.plane.load_full() else {
            continue;
        };
        let now = Instant::now();
        let mut live = HashSet::new();
        for (_, _, pool) in plane.pools.iter() {
            let Some(path) = &pool.settings.health_path else {
                continue;
            };
            let every = Duration::from_millis(pool.settings.health_interval_ms);
            let timeout =
                Duration::from_millis(pool.settings.connect_timeout_ms.max(100)).min(every);
            for ep in &pool.endpoints {
                let key = (ep.addr, path.clone());
                live.insert(key.clone());
                let at = next.entry(key).or_insert(now);
                if *at <= now {
                    *at = now + every;
                    let (ep, path, c) = (ep.clone(), path.clone(), connector.clone());
                    tokio::spawn(async move {
                        let up = tokio::time::timeout(timeout * 2, check(&c, &ep, &path, timeout))
                            .await
                            .unwrap_or(false);
                        ep.set_active(up);
                    });
                }
            }
        }
        next.retain(|k, _| live.contains(k));
    }
}

async fn check(c: &Connector, ep: &Endpoint, path: &str, timeout: Duration) -> bool {
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
