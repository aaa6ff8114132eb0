//! The gateway's registration under `gateways/<id>` with a lease, carrying
//! the epoch it applied: ops see which gateways applied a change, and the
//! lease says which gateways are alive.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use config_center::etcd::{self, EtcdOptions};
use etcd_client::PutOptions;

use crate::state::Shared;

/// Keep `gateways/<id>` under a lease with this gateway's applied epoch,
/// until the gateway stops: then delete it.
pub async fn register(shared: Arc<Shared>, endpoints: Vec<String>, prefix: String) {
    let mut leave = shared.stopping.leave_signal();
    loop {
        if let Err(e) = register_once(&shared, &endpoints, &prefix, &mut leave).await {
            tracing::warn!(error = %e, "gateway registration interrupted; retrying");
        }
        if *leave.borrow() {
            shared.stopping.left();
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = leave.changed() => {}
        }
    }
}

async fn register_once(
    shared: &Shared,
    endpoints: &[String],
    prefix: &str,
    leave: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), etcd_client::Error> {
    let opts = EtcdOptions {
        access: shared.etcd_access.clone(),
        ..EtcdOptions::default()
    };
    let mut c = etcd::connect(endpoints, &opts).await?;
    let lease = c.lease_grant(10, None).await?.id();
    let (mut keeper, mut acks) = c.lease_keep_alive(lease).await?;
    let key = format!("{prefix}/gateways/{}", shared.cfg.id);
    let started = rfc3339(shared.started_at);
    let mut rx = shared.center.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(3));
    let mut last = None;
    loop {
        if *leave.borrow() {
            // Revoking the lease deletes the key if it is still this
            // process's (a successor may have written it under its own).
            c.lease_revoke(lease).await?;
            tracing::info!(key, "deregistered");
            return Ok(());
        }
        let epoch = shared.applied_epoch.load(Ordering::SeqCst);
        let changed = shared.center.change_revision();
        if last != Some((epoch, changed)) {
            let value = serde_json::json!({
                "region": shared.cfg.region.clone().unwrap_or_default(),
                "dc": shared.cfg.dc.clone().unwrap_or_default(),
                "applied_epoch": epoch,
                "change_revision": changed,
                "applied_at": rfc3339(shared.applied_at.load(Ordering::SeqCst)),
                "started_at": started,
                "version": env!("CARGO_PKG_VERSION"),
            });
            c.put(
                key.as_str(),
                value.to_string(),
                Some(PutOptions::new().with_lease(lease)),
            )
            .await?;
            shared.stopping.registered();
            last = Some((epoch, changed));
        }
        tokio::select! {
            _ = leave.changed() => {}
            _ = tick.tick() => {
                keeper.keep_alive().await?;
                match acks.message().await? {
                    Some(r) if r.ttl() > 0 => {}
                    _ => return Err(etcd_client::Error::LeaseKeepAliveError("lease expired".into())),
                }
                // Written again if it is gone or another process's (an
                // upgrade's predecessor revoking its lease took it).
                let held = c.get(key.as_str(), None).await?;
                if held.kvs().first().map(|kv| kv.lease()) != Some(lease) {
                    last = None;
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

/// Unix seconds as RFC 3339 (UTC); empty if out of range.
fn rfc3339(unix_s: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix_s)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
