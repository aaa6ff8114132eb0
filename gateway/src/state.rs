//! What every part of the gateway shares: configuration, the config center,
//! the current plane (topology snapshot, endpoint pools, quotas, issuers)
//! and its one writer, keys, geo, metrics.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwapOption;
use config_center::{ConfigCenter, Snapshot};
use unit_router::Here;
use unitgate_geo::MmdbGeo;

use crate::access::spans::Spans;
use crate::access::AccessLog;
use crate::auth::fetch::Fetched;
use crate::auth::index::AuthIndex;
use crate::config::Config;
use crate::metrics::forget::Gone;
use crate::metrics::Metrics;
use crate::quota::index::Quotas;
use crate::upstream::budget::RetryBudget;
use crate::upstream::pool::{EjectPolicy, Pools};
use pingora_prometheus::prometheus;

/// A topology snapshot with everything built for it: the one value the
/// request path loads (one atomic load per request), written by
/// [`Shared::refresh_plane`] only, so its parts always belong together.
#[derive(Debug)]
pub struct Plane {
    pub snap: Arc<Snapshot>,
    pub pools: Pools,
    pub here: Here,
    /// The snapshot's quotas with this gateway's share of each.
    pub quotas: Quotas,
    /// The snapshot's issuers, with the JWK sets fetched for them.
    pub auth: Arc<AuthIndex>,
    /// The version of the fetched JWK sets `auth` was built with.
    pub fetched: u64,
}

/// Shared gateway state.
pub struct Shared {
    pub cfg: Config,
    pub center: ConfigCenter,
    pub plane: ArcSwapOption<Plane>,
    /// The routing-token and dye keys in force (reloaded while running).
    pub keys: crate::secrets::LiveKeys,
    pub geo: Option<Arc<MmdbGeo>>,
    pub metrics: Metrics,
    pub budget: RetryBudget,
    pub policy: EjectPolicy,
    pub started_at: i64,
    /// Monotonic origin for endpoint timers.
    pub clock_origin: Instant,
    /// Epoch of the plane in force (for registration and status): the
    /// etcd revision of the last topology change applied, a put or a
    /// delete alike.
    pub applied_epoch: AtomicI64,
    /// When it was applied (Unix seconds).
    pub applied_at: AtomicI64,
    /// JWK sets fetched from the issuers' `jwks_uri`: the fetcher's table,
    /// read by the plane's writer; the request path only asks it for an
    /// early fetch.
    pub jwks: Arc<Fetched>,
    /// The certificates served, when a listener speaks TLS.
    pub tls: Option<Arc<crate::tls::Certificates>>,
    /// Their reload loop's state, taken by the control thread.
    #[allow(clippy::disallowed_types)]
    pub tls_reloader: std::sync::Mutex<Option<crate::tls::reload::Reloader>>,
    /// Where each request's access-log line goes.
    pub access: AccessLog,
    /// Where sampled requests' spans go (`otlp_endpoint` set).
    pub spans: Option<Spans>,
    /// Where the gateway is in stopping (`/readyz`, the registration).
    pub stopping: crate::stop::Stopping,
    /// The admin listener's bearer tokens (`admin_token_file`).
    pub admin_tokens: crate::admin::token::AdminTokens,
    /// TLS and user for etcd (`etcd_*` keys), read again at each connect.
    pub etcd_access: Arc<config_center::etcd_access::EtcdAccess>,
}

/// Why the shared state could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("{0}")]
    AccessLog(#[from] std::io::Error),
    #[error("{0}")]
    Spans(String),
    #[error("{0}")]
    Credentials(String),
}

impl Shared {
    pub fn new(
        cfg: Config,
        center: ConfigCenter,
        keys: crate::secrets::LiveKeys,
        geo: Option<Arc<MmdbGeo>>,
        tls: Option<(Arc<crate::tls::Certificates>, crate::tls::reload::Reloader)>,
    ) -> Result<Arc<Self>, SharedError> {
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
        let access = AccessLog::open(&cfg.observe.access_log, metrics.access_log_dropped.clone())?;
        let admin_tokens =
            crate::admin::token::AdminTokens::open(cfg.admin_lock.token_file.as_deref())
                .map_err(|e| SharedError::Credentials(e.to_string()))?;
        let etcd_access = match &cfg.topology {
            crate::config::TopologySource::Etcd { access, .. } => {
                config_center::etcd_access::EtcdAccess::load(access.clone())
                    .map_err(|e| SharedError::Credentials(e.0))?
            }
            crate::config::TopologySource::File(_) => Arc::default(),
        };
        let spans = match &cfg.observe.otlp_endpoint {
            Some(e) => Some(Spans::start(e, &cfg.id).map_err(SharedError::Spans)?),
            None => None,
        };
        Ok(Arc::new(Shared {
            access,
            spans,
            stopping: crate::stop::Stopping::default(),
            admin_tokens,
            etcd_access,
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
            applied_at: AtomicI64::new(0),
            jwks: Arc::new(Fetched::default()),
            tls,
            #[allow(clippy::disallowed_types)]
            tls_reloader: std::sync::Mutex::new(reloader),
        }))
    }

    /// The plane's one writer (the control loop, and once before it
    /// starts): build the plane for the config center's current snapshot
    /// and the fetched JWK sets, when either changed since the plane in
    /// force, reusing endpoint state, quota counters and unchanged
    /// issuers, and publish it. Off the request path.
    pub fn refresh_plane(&self) {
        let Some(snap) = self.center.current() else {
            return;
        };
        // Read before the sets: the index is at least as new as this.
        let fetched = self.jwks.version();
        let old = self.plane.load_full();
        let same_snap = old.as_ref().is_some_and(|p| Arc::ptr_eq(&p.snap, &snap));
        if same_snap && old.as_ref().is_some_and(|p| p.fetched == fetched) {
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
        if !same_snap && self.cfg.dc.is_some() && here.dc.is_none() {
            tracing::warn!(dc = ?self.cfg.dc, "this gateway's dc is not in the topology; policy local falls back to region");
        }
        let quotas = Quotas::build(
            &snap.topology,
            old.as_ref().map(|p| &p.quotas),
            self.cfg.quota_max_keys,
        );
        let auth = AuthIndex::build(&snap.topology, &self.jwks, old.as_ref().map(|p| &*p.auth));
        let epoch = snap.epoch();
        // What left the topology, before the snapshot moves into the plane.
        let gone = old
            .as_ref()
            .filter(|_| !same_snap)
            .map(|o| Gone::between(&o.snap.topology, &snap.topology));
        self.plane.store(Some(Arc::new(Plane {
            snap,
            pools,
            here,
            quotas,
            auth: Arc::new(auth),
            fetched,
        })));
        if same_snap {
            tracing::info!(epoch, fetched, "plane updated: fetched JWK sets");
            return;
        }
        self.applied_at.store(self.center.now(), Ordering::SeqCst);
        self.applied_epoch.store(epoch, Ordering::SeqCst);
        self.metrics.config.epoch.set(epoch);
        if let Some(gone) = gone.filter(|g| !g.is_empty()) {
            tracing::info!(?gone, "metrics of what left the topology dropped");
            self.metrics.forget(&gone);
        }
        tracing::info!(epoch, "plane updated");
    }

    /// Copy the config center's status into the metrics (each control
    /// tick, and when metrics are scraped, so a scrape is never stale).
    pub fn mirror_config_status(&self) {
        let st = self.center.status();
        let m = &self.metrics.config;
        m.connected.set(i64::from(st.connected));
        m.change_revision.set(self.center.change_revision());
        let ready = self.plane.load().is_some() && !self.stopping.begun();
        let region = self.cfg.region.as_deref().unwrap_or("");
        let dc = self.cfg.dc.as_deref().unwrap_or("");
        m.ready
            .with_label_values(&[region, dc])
            .set(i64::from(ready));
        // Counters: raised by what the center counted since the last mirror.
        m.rejected
            .inc_by(st.rejected_changes.saturating_sub(m.rejected.get()));
        m.relists
            .inc_by(st.compaction_relists.saturating_sub(m.relists.get()));
    }

    /// Each served certificate's expiry, for
    /// `unitgate_tls_certificate_expiry_timestamp_seconds`: set for every
    /// certificate served, removed for one no longer served (never reset:
    /// a scrape at the same moment would miss the series).
    pub fn mirror_certificates(&self) {
        use pingora_prometheus::prometheus::core::Collector;
        let Some(certs) = &self.tls else { return };
        let Ok(epoch) = openssl::asn1::Asn1Time::from_unix(0) else {
            return;
        };
        let gauge = &self.metrics.connections.cert_expiry;
        let mut served = std::collections::HashSet::new();
        for pair in certs.current().pairs() {
            let Ok(d) = epoch.diff(pair.leaf.not_after()) else {
                continue;
            };
            let at = i64::from(d.days) * 86_400 + i64::from(d.secs);
            let cert = pair.files.cert.display().to_string();
            let name = pair.names.first().cloned().unwrap_or_default();
            gauge
                .with_label_values(&[cert.as_str(), name.as_str()])
                .set(at);
            served.insert((cert, name));
        }
        for mf in gauge.collect() {
            for m in mf.get_metric() {
                let label = |n: &str| {
                    m.get_label()
                        .iter()
                        .find(|l| l.name() == n)
                        .map(|l| l.value().to_owned())
                        .unwrap_or_default()
                };
                let (cert, name) = (label("cert"), label("name"));
                if !served.contains(&(cert.clone(), name.clone())) {
                    let _ = gauge.remove_label_values(&[cert.as_str(), name.as_str()]);
                }
            }
        }
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
}

#[cfg(test)]
mod tests {
    // Test code: a failed unwrap is a failed test.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::BTreeMap;

    use config_center::kv::parse_document;
    use config_center::Kv;
    use unit_router::jwks::{self, KeySet};

    use super::*;
    use crate::config::{FileConfig, Overrides};

    const SAMPLE: &str = include_str!("../../deploy/local/topology.yaml");

    fn shared() -> Arc<Shared> {
        let o = Overrides {
            topology_file: Some("topology.yaml".into()),
            ..Overrides::default()
        };
        let cfg = Config::resolve(FileConfig::default(), o).unwrap();
        let keys =
            unit_router::Keyring::new("k1", BTreeMap::from([("k1".to_owned(), vec![7; 32])]))
                .unwrap();
        let keys = crate::secrets::LiveKeys::fixed(keys);
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

    /// A fetched set for issuer `name` with one key, `kid`.
    fn fetched(s: &Shared, name: &str, kid: &str) {
        let kv = parse_document(SAMPLE, "sample").unwrap();
        let demo: serde_json::Value = serde_json::from_str(&kv["auth/issuers/demo"]).unwrap();
        let mut key = demo["jwks"]["keys"][0].clone();
        key["kid"] = kid.into();
        let algs = jwks::algorithms(&["RS256".to_owned()], false).unwrap();
        let set = serde_json::json!({ "keys": [key] });
        let (keys, _) = KeySet::parse_published(&set, &algs).unwrap();
        let uri = format!("https://{name}.example/jwks");
        assert!(s.jwks.store(name, &uri, keys, false));
    }

    /// The switch from topology A (issuer `old`) to B (issuer `new`) with
    /// a key set fetched for A's issuers landing before, during or after
    /// it (the order that used to leave A's issuers in force): once the
    /// writer has run for the fetcher's signal, B's issuers are in force.
    #[test]
    fn a_key_set_fetched_during_a_switch_leaves_the_new_issuers_in_force() {
        for lands in 0..3 {
            let s = shared();
            let mut signal = s.jwks.changes();
            s.center.apply_next(topology("old")).unwrap();
            s.refresh_plane();
            // The fetcher read plane A's issuers.
            let fetch = || fetched(&s, "old", "k-old");
            if lands == 0 {
                fetch();
            }
            s.center.apply_next(topology("new")).unwrap();
            if lands == 1 {
                fetch();
            }
            s.refresh_plane();
            if lands == 2 {
                fetch();
            }
            // The control loop wakes for the fetcher's signal.
            assert!(signal.has_changed().unwrap(), "the writer is not told");
            signal.mark_unchanged();
            s.refresh_plane();

            let plane = s.plane.load_full().unwrap();
            assert!(plane.snap.topology.issuers.contains_key("new"));
            assert_eq!(plane.fetched, s.jwks.version());
            let auth = &plane.auth;
            assert!(auth.get("new").is_some(), "B's issuer is not in force");
            assert!(auth.get("old").is_none(), "A's issuer is still in force");
            assert!(auth.get("demo").is_some());
        }
    }

    /// A set fetched while the snapshot stays rebuilds the issuers (the
    /// plane's other parts reused); an issuer whose spec and keys did not
    /// change keeps its verifier, and so its remembered tokens.
    #[test]
    fn a_fetched_set_alone_rebuilds_the_issuers_and_keeps_the_unchanged() {
        let s = shared();
        s.center.apply_next(topology("new")).unwrap();
        s.refresh_plane();
        let before = s.plane.load_full().unwrap();
        assert!(before.auth.get("new").unwrap().keys().get("k-1").is_none());
        s.refresh_plane();
        assert!(Arc::ptr_eq(&before, &s.plane.load_full().unwrap()));

        fetched(&s, "new", "k-1");
        s.refresh_plane();
        let after = s.plane.load_full().unwrap();
        assert!(Arc::ptr_eq(&before.snap, &after.snap));
        assert!(after.auth.get("new").unwrap().keys().get("k-1").is_some());
        let demo = |p: &Plane| p.auth.get("demo").unwrap().clone();
        assert!(Arc::ptr_eq(&demo(&before), &demo(&after)));
        // Each quota by name (the table's order is its hasher's).
        assert!(before.quotas.all().count() > 0);
        for q in before.quotas.all() {
            assert!(
                Arc::ptr_eq(q, after.quotas.get(&q.name).unwrap()),
                "{}",
                q.name
            );
        }
    }
}
