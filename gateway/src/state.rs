//! What every part of the gateway shares: configuration, the config center,
//! the current plane (topology snapshot + endpoint pools), keys, geo, metrics.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwapOption;
use config_center::{ConfigCenter, Snapshot};
use unit_router::{Here, Keyring};
use unitgate_geo::MmdbGeo;

use crate::config::Config;
use crate::metrics::Metrics;
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
}

impl Shared {
    pub fn new(
        cfg: Config,
        center: ConfigCenter,
        keys: Keyring,
        geo: Option<Arc<MmdbGeo>>,
    ) -> Result<Arc<Self>, prometheus::Error> {
        let metrics = Metrics::new()?;
        let policy = EjectPolicy {
            consecutive_failures: cfg.eject_after_failures,
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
        let epoch = snap.epoch();
        self.plane
            .store(Some(Arc::new(Plane { snap, pools, here })));
        self.applied_epoch.store(epoch, Ordering::SeqCst);
        self.metrics.config.epoch.set(epoch);
        tracing::info!(epoch, "plane updated");
    }
}
