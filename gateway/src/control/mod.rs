//! The control plane, on its own thread and runtime, off the request path:
//! the topology source, plane rebuilds on every snapshot and every change
//! of the fetched JWK sets (its loop is the plane's one writer), the JWK
//! set fetcher, drain expiry, geo database reload, active health checks
//! ([`health_checks`]), config-center metrics, and the gateway's
//! registration under `gateways/<id>` ([`register`], etcd only).

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

/// Fetch the issuers' `jwks_uri` sets in the background
/// ([`crate::auth::fetch`]) into the fetcher's table; a changed set wakes
/// the plane's writer ([`run`]).
async fn jwks_fetcher(shared: Arc<Shared>) {
    let (_keep, never) = tokio::sync::watch::channel(false);
    let issuers = {
        let shared = shared.clone();
        move || {
            shared
                .plane
                .load()
                .as_ref()
                .map(|p| {
                    p.snap
                        .topology
                        .issuers
                        .iter()
                        .filter(|(_, s)| s.jwks_uri.is_some())
                        .map(|(n, s)| (n.clone(), s.clone()))
                        .collect()
                })
                .unwrap_or_default()
        }
    };
    crate::auth::fetch::run(shared.jwks.clone(), issuers, never).await;
}

/// Every few seconds: drop idle quota keys, count table resets, publish
/// the keys held.
async fn quota_sweeper(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let Some(plane) = shared.plane.load_full() else {
            continue;
        };
        for q in plane.quotas.all() {
            q.limiter.sweep();
            let m = &shared.metrics.quota;
            m.keys
                .with_label_values(&[q.name.as_str()])
                .set(q.limiter.keys() as i64);
            let resets = q.limiter.take_resets();
            if resets > 0 {
                m.resets
                    .with_label_values(&[q.name.as_str()])
                    .inc_by(resets);
            }
        }
    }
}

/// Read the secrets file and the admin token file again every second:
/// new keys and tokens are in force as soon as a changed file loads
/// (`secrets::live`, `admin::token`).
async fn keys_reloader(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        shared.keys.reload(shared.center.now());
        shared.admin_tokens.reload();
    }
}

/// Reopen the access log's file and read the secrets file again on every
/// SIGHUP (logrotate, key rotation). Without a handler the signal would
/// end the process.
fn reopen_on_hangup(shared: Arc<Shared>) {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!(
                        "SIGHUP: the access log is reopened, the secrets and admin token files read again"
                    );
                    shared.access.reopen();
                    shared.keys.reload(shared.center.now());
                    shared.admin_tokens.reload();
                }
            });
        }
        Err(e) => tracing::error!(error = %e, "SIGHUP handler not installed"),
    }
}

/// SIGUSR1 and SIGUSR2 are logged and ignored: only SIGTERM, SIGINT and
/// SIGQUIT (`crate::stop`) end the gateway (their default would).
fn ignore_user_signals() {
    use tokio::signal::unix::{signal, SignalKind};
    for (name, kind) in [
        ("SIGUSR1", SignalKind::user_defined1()),
        ("SIGUSR2", SignalKind::user_defined2()),
    ] {
        match signal(kind) {
            Ok(mut s) => {
                tokio::spawn(async move {
                    while s.recv().await.is_some() {
                        tracing::info!("{name} ignored");
                    }
                });
            }
            Err(e) => tracing::error!(error = %e, "{name} handler not installed"),
        }
    }
}

async fn run(shared: Arc<Shared>) {
    reopen_on_hangup(shared.clone());
    ignore_user_signals();
    let center = shared.center.clone();
    match shared.cfg.topology.clone() {
        TopologySource::File(path) => {
            tokio::spawn(FileSource::new(path, Duration::from_millis(500)).run(center.clone()));
        }
        TopologySource::Etcd {
            endpoints, prefix, ..
        } => {
            let opts = EtcdOptions {
                access: shared.etcd_access.clone(),
                ..EtcdOptions::default()
            };
            tokio::spawn(EtcdSource::new(endpoints.clone(), &prefix, opts).run(center.clone()));
            tokio::spawn(register::register(
                shared.clone(),
                endpoints,
                normalize_prefix(&prefix),
            ));
        }
    }
    tokio::spawn(center.clone().run_drain_expiry());
    tokio::spawn(health_checks(shared.clone()));
    tokio::spawn(jwks_fetcher(shared.clone()));
    tokio::spawn(quota_sweeper(shared.clone()));
    tokio::spawn(keys_reloader(shared.clone()));
    let reloader = shared.tls_reloader.lock().ok().and_then(|mut r| r.take());
    if let (Some(mut reloader), Some(certs)) = (reloader, shared.tls.clone()) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(reloader.interval());
            loop {
                tick.tick().await;
                reloader.check(&certs);
            }
        });
    }
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
    // The plane's one writer: rebuild it on every publish and every change
    // of the fetched JWK sets; mirror the status into metrics.
    let mut rx = center.subscribe();
    let mut keys = shared.jwks.changes();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        shared.refresh_plane();
        shared.mirror_config_status();
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            r = keys.changed() => if r.is_err() { return },
            _ = tick.tick() => {}
        }
    }
}
