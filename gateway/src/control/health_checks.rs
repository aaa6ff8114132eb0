//! Active health checks, scheduled off the request path: every endpoint of
//! every service that has a `health_path`, each at its service's interval;
//! the verdict marks the endpoint up or down for the load balancer.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora::connectors::http::Connector;

use crate::state::Shared;
use crate::upstream::health::probe;

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
                        let up = tokio::time::timeout(timeout * 2, probe(&c, &ep, &path, timeout))
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
