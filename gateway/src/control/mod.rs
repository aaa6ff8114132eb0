//! The control plane, on its own thread and runtime, off the request path:
//! the topology source, plane rebuilds on every snapshot, drain expiry, geo
//! database reload, active health checks ([`health_checks`]),
//! config-center metrics, and the gateway's registration under
//! `gateways/<id>` ([`register`], etcd only).

pub mod health_checks;
pub mod register;

use std::sync::Arc;
use std::time::Duration;

use config_center::etcd::{normalize_prefix, EtcdOptions, EtcdSource};
use config_center::file::FileSource;

use crate::config::TopologySource;
use crate::state::Shared;
use health_checks::health_checks;

/// Start the control plane on a dedicated thread.
pub fn start(shared: Arc<Shared>) -> std::io::Result<std::thread::JoinHandle<()>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("unitgate-control")
        .build()?;
    std::thread::Builder::new()
        .name("unitgate-control".into())
        .spawn(move || rt.block_on(run(shared)))
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
            tokio::spawn(register::register(
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
        m.config.connected.set(i64::from(st.connected));
        m.config.rejected.set(st.rejected_changes as i64);
        m.config.relists.set(st.compaction_relists as i64);
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = tick.tick() => {}
        }
    }
}
