//! The control plane, on its own thread and runtime, off the request path:
//! the topology source, plane rebuilds on every snapshot, drain expiry, geo
//! database reload, active health checks, config-center metrics, and the
//! gateway's registration under `gateways/<id>` (etcd only).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use config_center::etcd::{self, normalize_prefix, EtcdOptions, EtcdSource};
use config_center::file::FileSource;
use etcd_client::PutOptions;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;

use crate::config::TopologySource;
use crate::lb::Endpoint;
use crate::state::Shared;

/// Start the control plane on a dedicated thread.
pub fn start(shared: Arc<Shared>) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("unitgate-control".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .thread_name("unitgate-control")
                .build()
                .expect("control runtime");
            rt.block_on(run(shared));
        })
}

async fn run(shared: Arc<Shared>) {
    let center = shared.center.clone();
    match shared.cfg.topology.clone() {
        TopologySource::File(path) => {
            tokio::spawn(FileSource::new(path, Duration::from_millis(500)).run(center.clone()));
        }
        TopologySource::Etcd { endpoints, prefix } => {
            tokio::spawn(
                EtcdSource::new(endpoints.clone(), &prefix, EtcdOptions::default())
                    .run(center.clone()),
            );
            tokio::spawn(register(
                shared.clone(),
                endpoints,
                normalize_prefix(&prefix),
            ));
        }
    }
    tokio::spawn(center.clone().run_drain_expiry());
    tokio::spawn(health_checks(shared.clone()));
    if let Some(geo) = shared.geo.clone() {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tick.tick().await;
                match geo.reload_if_changed() {
                    Ok(true) => {
                        tracing::info!(path = %geo.path().display(), "geo database reloaded")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "geo database not reloaded; the previous one stays")
                    }
                }
            }
        });
    }
    // Rebuild the plane on every publish; mirror the status into metrics.
    let mut rx = center.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        shared.refresh_plane();
        let st = center.status();
        let m = &shared.metrics;
        m.config_connected.set(i64::from(st.connected));
        m.config_rejected.set(st.rejected_changes as i64);
        m.config_relists.set(st.compaction_relists as i64);
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = tick.tick() => {}
        }
    }
}

/// Active health checks: `GET <health_path>` on every endpoint of every
/// service that has one, each at its service's interval.
async fn health_checks(shared: Arc<Shared>) {
    let connector = Arc::new(Connector::new(None));
    let mut next: HashMap<(SocketAddr, String), Instant> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let Some(plane) = shared.plane.load_full() else {
            continue;
        };
        let now = Instant::now();
        let mut live = std::collections::HashSet::new();
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

/// Keep `gateways/<id>` under a lease with this gateway's applied epoch.
async fn register(shared: Arc<Shared>, endpoints: Vec<String>, prefix: String) {
    loop {
        if let Err(e) = register_once(&shared, &endpoints, &prefix).await {
            tracing::warn!(error = %e, "gateway registration interrupted; retrying");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn register_once(
    shared: &Shared,
    endpoints: &[String],
    prefix: &str,
) -> Result<(), etcd_client::Error> {
    let mut c = etcd::connect(endpoints, &EtcdOptions::default()).await?;
    let lease = c.lease_grant(10, None).await?.id();
    let (mut keeper, mut acks) = c.lease_keep_alive(lease).await?;
    let key = format!("{prefix}/gateways/{}", shared.cfg.id);
    let started = time::OffsetDateTime::from_unix_timestamp(shared.started_at)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    let mut rx = shared.center.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(3));
    let mut last = None;
    loop {
        let epoch = shared.applied_epoch.load(Ordering::SeqCst);
        if last != Some(epoch) {
            let value = serde_json::json!({
                "region": shared.cfg.region.clone().unwrap_or_default(),
                "dc": shared.cfg.dc.clone().unwrap_or_default(),
                "applied_epoch": epoch,
                "started_at": started,
                "version": env!("CARGO_PKG_VERSION"),
            });
            c.put(
                key.as_str(),
                value.to_string(),
                Some(PutOptions::new().with_lease(lease)),
            )
            .await?;
            last = Some(epoch);
        }
        tokio::select! {
            _ = tick.tick() => {
                keeper.keep_alive().await?;
                match acks.message().await? {
                    Some(r) if r.ttl() > 0 => {}
                    _ => return Err(etcd_client::Error::LeaseKeepAliveError("lease expired".into())),
                }
            }
            // Let the plane refresh first, then publish the new epoch.
            r = rx.changed() => {
                if r.is_err() { return Ok(()) }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
