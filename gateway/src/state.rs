//! What every part of the gateway shares: configuration, the config center,
//! the current plane (topology snapshot + endpoint pools), keys, geo, metrics.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::{ArcSwap, ArcSwapOption};
use config_center::{ConfigCenter, Snapshot};
use unit_router::{Here, Keyring};
use unitgate_geo::MmdbGeo;

use crate::auth::fetch::Fetched;
use crate::auth::index::AuthIndex;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::quota::index::Quotas;
use crate::upstream::budget::RetryBudget;
use crate::upstream::pool::{EjectPolicy, Pools};
use pingora_prometheus::prometheus;

/// A topology snapshot with the endpoint pools built for it: the one value
/// the request path loads (one atomic load per request).
#[derive(Debug)]
pub struct Plane {
    pub snap: Arc<Snapshot>,
    pub pools: Pools,
    pub here: Here,
    /// The snapshot's quotas with this gateway's share of each.
    pub quotas: Quotas,
}

/// Shared gateway state.
pub struct Shared {
    pub cfg: Config,
    pub center: ConfigCenter,
    pub plane: ArcSwapOption<Plane>,
    pub keys: Keyring,
    pub geo: Option<Arc<MmdbGeo>>,
    pub metrics: Metrics,
    pub budget: RetryBudget,
    pub policy: EjectPolicy,
    pub started_at: i64,
    /// Monotonic origin for endpoint timers.
    pub clock_origin: Instant,
    /// Epoch of the plane in force (for registration and status).
    pub applied_epoch: AtomicI64,
    /// The issuers in force (rebuilt with the plane, and when a fetched JWK
    /// set changes).
    pub auth: ArcSwap<AuthIndex>,
    /// JWK sets fetched from the issuers' `jwks_uri`.
    pub jwks: Arc<Fetched>,
    /// One rebuild of the issuers at a time (snapshot and fetcher); off the
    /// request path.
    #[allow(clippy::disallowed_types)]
    auth_rebuild: std::sync::Mutex<()>,
    /// The certificates served, when a listener speaks TLS.
    pub tls: Option<Arc<crate::tls::Certificates>>,
    /// Their reload loop's state, taken by the control thread.
    #[allow(clippy::disallowed_types)]
    pub tls_reloader: std::sync::Mutex<Option<crate::tls::reload::Reloader>>,
}

impl Shared {
    pub fn new(
        cfg: Config,
        center: ConfigCenter,
        keys: Keyring,
        geo: Option<Arc<MmdbGeo>>,
        tls: Option<(Arc<crate::tls::Certificates>, crate::tls::reload::Reloader)>,
    ) -> Result<Arc<Self>, prometheus::Error> {
        let (tls, reloader) = match tls {
            Some((c, r)) => (Some(c), Some(r)),
            None => (None, None),
        };
        let metrics = Metrics::new()?;
        let policy = EjectPolicy {
            consecutive_failures: cfg.eject_after_failures,
            error_rate_percent: cfg.eject_error_rate_percent,
            ..EjectPolicy::default()
        };
        let budget = RetryBudget::new(cfg.retry_budget_percent);
        Ok(Arc::new(Shared {
            started_at: center.now(),
            cfg,
            center,
            plane: ArcSwapOption::empty(),
            keys,
            geo,
            metrics,
            budget,
            policy,
            clock_origin: Instant::now(),
            applied_epoch: AtomicI64::new(0),
            auth: ArcSwap::from_pointee(AuthIndex::default()),
            jwks: Arc::new(Fetched::default()),
            auth_rebuild: Default::default(),
            tls,
            #[allow(clippy::disallowed_types)]
            tls_reloader: std::sync::Mutex::new(reloader),
        }))
    }

    /// Build the plane for the config center's current snapshot, reusing
    /// endpoint state, and publish it. Off the request path.
    pub fn refresh_plane(&self) {
        let Some(snap) = self.center.current() else {
            return;
        };
        let old = self.plane.load_full();
        if old.as_ref().is_some_and(|p| Arc::ptr_eq(&p.snap, &snap)) {
            return;
        }
        let pools = Pools::build(
            &snap.topology,
            old.as_ref().map(|p| &p.pools),
            old.as_ref().map(|p| &p.snap.topology),
            self.clock_origin,
        );
        let here = Here::resolve(
            &snap.topology,
            self.cfg.region.as_deref(),
            self.cfg.dc.as_deref(),
        );
        if self.cfg.dc.is_some() && here.dc.is_none() {
            tracing::warn!(dc = ?self.cfg.dc, "this gateway's dc is not in the topology; policy local falls back to region");
        }
        let quotas = Quotas::build(
            &snap.topology,
            old.as_ref().map(|p| &p.quotas),
            self.cfg.quota_max_keys,
        );
        self.refresh_auth(&snap.topology);
        let epoch = snap.epoch();
        self.plane.store(Some(Arc::new(Plane {
            snap,
            pools,
            here,
            quotas,
        })));
        self.applied_epoch.store(epoch, Ordering::SeqCst);
        self.metrics.config.epoch.set(epoch);
        tracing::info!(epoch, "plane updated");
    }

    /// Copy the config center's status into the metrics (each control
    /// tick, and when metrics are scraped, so a scrape is never stale).
    pub fn mirror_config_status(&self) {
        let st = self.center.status();
        let m = &self.metrics.config;
        m.connected.set(i64::from(st.connected));
        m.rejected.set(st.rejected_changes as i64);
        m.relists.set(st.compaction_relists as i64);
    }

    /// Copy each (unit, service)'s breaker ratio and concurrency limit
    /// into the metrics (when metrics are scraped).
    pub fn mirror_guards(&self) {
        let Some(plane) = self.plane.load_full() else {
            return;
        };
        let topo = &plane.snap.topology;
        let m = &self.metrics.resilience;
        for (u, s, pool) in plane.pools.iter() {
            let labels = [
                topo.unit(u).name.as_str(),
                topo.services[s.index()].as_str(),
            ];
            let r = &pool.resilience;
            let w = pool.guard.breaker.window(&r.breaker);
            m.drop_ratio.with_label_values(&labels).set(w.drop_ratio);
            if r.limiter.enabled {
                let l = &pool.guard.limit;
                m.limit.with_label_values(&labels).set(l.limit());
                m.inflight
                    .with_label_values(&labels)
                    .set(i64::from(l.inflight()));
            }
        }
    }

    /// Rebuild the issuers of the plane in force (a fetched JWK set changed).
    pub fn refresh_auth_now(&self) {
        if let Some(p) = self.plane.load_full() {
            self.refresh_auth(&p.snap.topology);
        }
    }

    /// Rebuild the issuers of `topo` with the fetched JWK sets, keeping
    /// those that did not change. Off the request path.
    pub fn refresh_auth(&self, topo: &unit_router::Topology) {
        let _one = self.auth_rebuild.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.auth.load();
        let index = AuthIndex::build(topo, &self.jwks, Some(&old));
        self.auth.store(Arc::new(index));
    }
}

#[cfg(test)]
mod tests {
    // Test code: a failed unwrap is a failed test.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::BTreeMap;

    use config_center::kv::parse_document;
    use config_center::Kv;

    use super::*;
    use crate::config::{FileConfig, Overrides};

    const SAMPLE: &str = include_str!("../../deploy/local/topology.yaml");

    fn shared() -> Arc<Shared> {
        let o = Overrides {
            topology_file: Some("topology.yaml".into()),
            ..Overrides::default()
        };
        let cfg = Config::resolve(FileConfig::default(), o).unwrap();
        let keys = Keyring::new("k1", BTreeMap::from([("k1".to_owned(), vec![7; 32])])).unwrap();
        Shared::new(cfg, ConfigCenter::new(None), keys, None, None).unwrap()
    }

    /// The sample topology with one more issuer, `name`, whose keys are
    /// fetched.
    fn topology(name: &str) -> Kv {
        let mut kv = parse_document(SAMPLE, "sample").unwrap();
        let spec = format!(
            r#"{{"iss": "https://{name}.example", "algs": ["RS256"], "jwks_uri": "https://{name}.example/jwks"}}"#
        );
        kv.insert(format!("auth/issuers/{name}"), spec);
        kv
    }

    /// The switch from topology A (issuer `old`) to B (issuer `new`) with
    /// a rebuild of the issuers for a fetched key set racing it: the
    /// fetcher read plane A before the switch stored plane B, and its
    /// index of A's issuers lands after the switch stored B's. Once the
    /// control loop has run again, B's issuers are in force.
    #[test]
    fn a_key_set_fetched_during_a_switch_leaves_the_new_issuers_in_force() {
        let s = shared();
        s.center.apply_next(topology("old")).unwrap();
        s.refresh_plane();
        s.center.apply_next(topology("new")).unwrap();
        // The fetcher's rebuild starts from the plane in force (A).
        let seen = s.plane.load_full().unwrap();
        // The switch to B.
        s.refresh_plane();
        // The fetcher's index of A lands.
        s.refresh_auth(&seen.snap.topology);
        // The control loop's next turn.
        s.refresh_plane();

        let plane = s.plane.load_full().unwrap();
        assert!(plane.snap.topology.issuers.contains_key("new"));
        let auth = s.auth.load();
        assert!(auth.get("new").is_some(), "B's issuer is not in force");
        assert!(auth.get("old").is_none(), "A's issuer is still in force");
    }
}
