//! Load balancing inside a unit: power-of-two-choices over healthy endpoints,
//! scored by EWMA latency x (in-flight + 1) (Finagle/Kratos p2c-ewma), with
//! passive health (consecutive failures or a high error rate eject an
//! endpoint with exponential backoff) and the verdict of active checks.
//! An endpoint that is new, or back from ejection or a failed check, warms
//! up: its weight grows linearly over the service's `slow_start_ms` (from
//! 10 %), and p2c compares score / weight, so it gets a ramp of traffic
//! instead of its full share at once.
//!
//! Endpoint state outlives snapshots: a new topology reuses the state of
//! every (unit, service, address) it still has.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::upstream::guard::Guard;
use unit_router::resilience::Resilience;
use unit_router::topology::UnitService;
use unit_router::{HealthView, ServiceId, Topology, UnitId};

/// Passive-health tunables.
#[derive(Debug, Clone, Copy)]
pub struct EjectPolicy {
    pub consecutive_failures: u32,
    /// Error rate (percent) over the current window that ejects, given
    /// at least `min_requests` in the window; 0: never.
    pub error_rate_percent: u32,
    pub min_requests: u32,
    pub window: Duration,
    pub base: Duration,
    pub max: Duration,
}

impl Default for EjectPolicy {
    fn default() -> Self {
        EjectPolicy {
            consecutive_failures: 3,
            error_rate_percent: 50,
            min_requests: 20,
            window: Duration::from_secs(10),
            base: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

/// Live state of one endpoint.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// EWMA of response latency in microseconds (0 = no sample yet).
    ewma_us: AtomicU64,
    inflight: AtomicU32,
    consecutive_failures: AtomicU32,
    ejections: AtomicU32,
    /// Milliseconds since `origin` until which the endpoint is ejected.
    ejected_until_ms: AtomicU64,
    /// Verdict of the last active check (true until a check says otherwise).
    active_up: AtomicBool,
    window_start_ms: AtomicU64,
    window_requests: AtomicU32,
    window_errors: AtomicU32,
    /// Since when the endpoint warms up (new, or back from ejection or a
    /// failed active check), ms since `origin`.
    warm_from_ms: AtomicU64,
    /// Monotonic origin of this endpoint's millisecond timers.
    origin: Instant,
}

impl Endpoint {
    fn new(addr: SocketAddr, origin: Instant) -> Self {
        Endpoint {
            addr,
            ewma_us: AtomicU64::new(0),
            inflight: AtomicU32::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            active_up: AtomicBool::new(true),
            window_start_ms: AtomicU64::new(0),
            window_requests: AtomicU32::new(0),
            window_errors: AtomicU32::new(0),
            warm_from_ms: AtomicU64::new(origin.elapsed().as_millis() as u64),
            origin,
        }
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// Not ejected and not failed by an active check.
    pub fn is_healthy(&self) -> bool {
        self.active_up.load(Relaxed) && self.now_ms() >= self.ejected_until_ms.load(Relaxed)
    }

    /// Whether passive health has ejected it right now.
    pub fn is_ejected(&self) -> bool {
        self.now_ms() < self.ejected_until_ms.load(Relaxed)
    }

    pub fn inflight(&self) -> u32 {
        self.inflight.load(Relaxed)
    }

    pub fn ewma_us(&self) -> u64 {
        self.ewma_us.load(Relaxed)
    }

    /// Its share of traffic while it warms up: 0.1 .. 1 over `slow_start_ms`.
    pub fn weight(&self, slow_start_ms: u64) -> f64 {
        if slow_start_ms == 0 {
            return 1.0;
        }
        let since = self
            .now_ms()
            .saturating_sub(self.warm_from_ms.load(Relaxed));
        (since as f64 / slow_start_ms as f64).clamp(0.1, 1.0)
    }

    /// The p2c score (lower is better): EWMA latency x (in-flight + 1) /
    /// weight. An unsampled endpoint is scored with `peer_ewma`, the other
    /// candidate's latency, so that only load and warm-up tell them apart.
    fn score(&self, peer_ewma: u64, slow_start_ms: u64) -> f64 {
        let own = self.ewma_us.load(Relaxed);
        let ewma = if own == 0 { peer_ewma.max(1) } else { own };
        let load = ewma as f64 * (f64::from(self.inflight.load(Relaxed)) + 1.0);
        load / self.weight(slow_start_ms)
    }

    /// An attempt starts.
    pub fn begin(&self) {
        self.inflight.fetch_add(1, Relaxed);
    }

    /// An attempt ended for a reason that says nothing about the endpoint
    /// (the client went away): only the in-flight count changes.
    pub fn cancel(&self) {
        let _ = self
            .inflight
            .fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(1)));
    }

    /// An attempt ended; `ok` is false for connect/transport/5xx failures.
    pub fn end(&self, latency: Duration, ok: bool, policy: &EjectPolicy) {
        let _ = self
            .inflight
            .fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(1)));
        let sample = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        let _ = self.ewma_us.fetch_update(Relaxed, Relaxed, |old| {
            Some(if old == 0 {
                sample
            } else {
                (old * 7 + sample * 3) / 10
            })
        });
        let now = self.now_ms();
        let start = self.window_start_ms.load(Relaxed);
        if now.saturating_sub(start) > policy.window.as_millis() as u64 {
            self.window_start_ms.store(now, Relaxed);
            self.window_requests.store(0, Relaxed);
            self.window_errors.store(0, Relaxed);
        }
        let reqs = self.window_requests.fetch_add(1, Relaxed) + 1;
        if ok {
            self.consecutive_failures.store(0, Relaxed);
            if !self.is_ejected() {
                self.ejections.store(0, Relaxed);
            }
            return;
        }
        let errs = self.window_errors.fetch_add(1, Relaxed) + 1;
        let streak = self.consecutive_failures.fetch_add(1, Relaxed) + 1;
        let rate_trip = policy.error_rate_percent > 0
            && reqs >= policy.min_requests
            && errs * 100 >= reqs * policy.error_rate_percent;
        if (streak >= policy.consecutive_failures || rate_trip) && !self.is_ejected() {
            let n = self.ejections.fetch_add(1, Relaxed).min(16);
            let backoff = policy.base.saturating_mul(1 << n).min(policy.max);
            let until = now + backoff.as_millis() as u64;
            self.ejected_until_ms.store(until, Relaxed);
            // Back after the backoff, it warms up from then.
            self.warm_from_ms.store(until, Relaxed);
            self.consecutive_failures.store(0, Relaxed);
            self.window_requests.store(0, Relaxed);
            self.window_errors.store(0, Relaxed);
            tracing::warn!(endpoint = %self.addr, backoff_ms = backoff.as_millis() as u64, "endpoint ejected");
        }
    }

    /// Record the verdict of an active check.
    pub fn set_active(&self, up: bool) {
        let was = self.active_up.swap(up, Relaxed);
        if up && !was {
            self.warm_from_ms.store(self.now_ms(), Relaxed);
        }
        if was != up {
            tracing::info!(endpoint = %self.addr, up, "active health check changed");
        }
    }
}

/// The endpoints of one service in one unit.
#[derive(Debug)]
pub struct Pool {
    pub endpoints: Vec<Arc<Endpoint>>,
    pub settings: UnitService,
    /// The service's resilience settings in this snapshot.
    pub resilience: Resilience,
    /// Its breaker and concurrency limit (outlive snapshots).
    pub guard: Arc<Guard>,
}

impl Pool {
    /// Whether any endpoint is healthy.
    pub fn any_healthy(&self) -> bool {
        self.endpoints.iter().any(|e| e.is_healthy())
    }

    /// Power of two choices among healthy endpoints not in `tried`.
    pub fn pick(&self, tried: &[SocketAddr]) -> Option<Arc<Endpoint>> {
        let mut candidates = self
            .endpoints
            .iter()
            .filter(|e| e.is_healthy() && !tried.contains(&e.addr));
        let n = candidates.clone().count();
        match n {
            0 => None,
            1 => candidates.next().cloned(),
            _ => {
                let mut rng = rand::rng();
                let a = rng.random_range(0..n);
                let mut b = rng.random_range(0..n - 1);
                if b >= a {
                    b += 1;
                }
                let ea = candidates.clone().nth(a)?;
                let eb = candidates.nth(b)?;
                let ss = self.resilience.slow_start_ms;
                let (wa, wb) = (ea.ewma_us(), eb.ewma_us());
                Some(if eb.score(wa, ss) < ea.score(wb, ss) {
                    eb.clone()
                } else {
                    ea.clone()
                })
            }
        }
    }
}

/// Pools of one snapshot, indexed by (unit, service).
#[derive(Debug, Default)]
pub struct Pools {
    services: usize,
    pools: Vec<Option<Arc<Pool>>>,
}

impl Pools {
    /// Pools for `topo`, reusing endpoint state from `previous`.
    pub fn build(
        topo: &Topology,
        previous: Option<&Pools>,
        prev_topo: Option<&Topology>,
        origin: Instant,
    ) -> Pools {
        let mut old: HashMap<(&str, &str, SocketAddr), Arc<Endpoint>> = HashMap::new();
        let mut old_guards: HashMap<(&str, &str), Arc<Guard>> = HashMap::new();
        if let (Some(p), Some(t)) = (previous, prev_topo) {
            for (u, unit) in t.units.iter().enumerate() {
                for (s, name) in t.services.iter().enumerate() {
                    if let Some(pool) = p.get(UnitId(u as u16), ServiceId(s as u16)) {
                        old_guards.insert((unit.name.as_str(), name.as_str()), pool.guard.clone());
                        for e in &pool.endpoints {
                            old.insert((unit.name.as_str(), name.as_str(), e.addr), e.clone());
                        }
                    }
                }
            }
        }
        let services = topo.services.len();
        let mut pools = Vec::with_capacity(topo.units.len() * services);
        for unit in &topo.units {
            for (s, name) in topo.services.iter().enumerate() {
                pools.push(unit.service(ServiceId(s as u16)).map(|svc| {
                    let endpoints = svc
                        .endpoints
                        .iter()
                        .map(|&a| {
                            old.get(&(unit.name.as_str(), name.as_str(), a))
                                .cloned()
                                .unwrap_or_else(|| Arc::new(Endpoint::new(a, origin)))
                        })
                        .collect();
                    let resilience = topo.resilience(ServiceId(s as u16)).clone();
                    let guard = old_guards
                        .get(&(unit.name.as_str(), name.as_str()))
                        .cloned()
                        .unwrap_or_else(|| Arc::new(Guard::new(origin, &resilience)));
                    Arc::new(Pool {
                        endpoints,
                        settings: svc.clone(),
                        resilience,
                        guard,
                    })
                }));
            }
        }
        Pools { services, pools }
    }

    /// The pool of `service` in `unit`.
    pub fn get(&self, unit: UnitId, service: ServiceId) -> Option<&Arc<Pool>> {
        self.pools
            .get(unit.index() * self.services + service.index())
            .and_then(Option::as_ref)
    }

    /// Every pool with its (unit, service).
    pub fn iter(&self) -> impl Iterator<Item = (UnitId, ServiceId, &Arc<Pool>)> {
        let s = self.services.max(1);
        self.pools.iter().enumerate().filter_map(move |(i, p)| {
            p.as_ref()
                .map(|p| (UnitId((i / s) as u16), ServiceId((i % s) as u16), p))
        })
    }
}

impl HealthView for Pools {
    fn healthy(&self, unit: UnitId, service: ServiceId) -> bool {
        self.get(unit, service).is_some_and(|p| p.any_healthy())
    }
}

/// The health one request routes by: a (unit, service) is healthy when an
/// endpoint is and its breaker lets this request through (`draw`, the
/// request's uniform draw in `[0, 1)`, against the drop ratio). One draw
/// per request, so every question the router asks gets the same answer.
#[derive(Debug, Clone, Copy)]
pub struct Guarded<'a> {
    pub pools: &'a Pools,
    pub draw: f64,
}

impl Guarded<'_> {
    /// Whether the breaker of (unit, service) refuses this request while an
    /// endpoint is healthy.
    pub fn throttled(&self, unit: UnitId, service: ServiceId) -> bool {
        self.pools.get(unit, service).is_some_and(|p| {
            p.any_healthy() && !p.guard.breaker.admits(self.draw, &p.resilience.breaker)
        })
    }
}

impl HealthView for Guarded<'_> {
    fn healthy(&self, unit: UnitId, service: ServiceId) -> bool {
        self.pools.get(unit, service).is_some_and(|p| {
            p.any_healthy() && p.guard.breaker.admits(self.draw, &p.resilience.breaker)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: u16) -> Pool {
        let origin = Instant::now() - Duration::from_secs(120);
        let resilience = Resilience {
            slow_start_ms: 0,
            ..Resilience::default()
        };
        Pool {
            guard: Arc::new(Guard::new(origin, &resilience)),
            resilience,
            endpoints: (0..n)
                .map(|i| {
                    Arc::new(Endpoint::new(
                        SocketAddr::from(([127, 0, 0, 1], 9000 + i)),
                        origin,
                    ))
                })
                .collect(),
            settings: UnitService {
                endpoints: vec![],
                health_path: None,
                health_interval_ms: 1000,
                connect_timeout_ms: 100,
                read_timeout_ms: 100,
                total_connect_timeout_ms: 100,
            },
        }
    }

    #[test]
    fn p2c_prefers_the_faster_endpoint() {
        let p = pool(2);
        let policy = EjectPolicy::default();
        p.endpoints[0].end(Duration::from_millis(50), true, &policy);
        p.endpoints[1].end(Duration::from_millis(1), true, &policy);
        for _ in 0..100 {
            assert_eq!(p.pick(&[]).unwrap().addr.port(), 9001);
        }
        // Load shifts the choice: many in flight on the fast one.
        for _ in 0..100 {
            p.endpoints[1].begin();
        }
        assert_eq!(p.pick(&[]).unwrap().addr.port(), 9000);
        assert_eq!(p.pick(&[p.endpoints[0].addr]).unwrap().addr.port(), 9001);
    }

    #[test]
    fn consecutive_failures_eject_with_backoff_and_active_checks_count() {
        let p = pool(2);
        let policy = EjectPolicy {
            base: Duration::from_millis(200),
            ..EjectPolicy::default()
        };
        for _ in 0..3 {
            p.endpoints[0].begin();
            p.endpoints[0].end(Duration::from_millis(1), false, &policy);
        }
        assert!(!p.endpoints[0].is_healthy());
        for _ in 0..50 {
            assert_eq!(p.pick(&[]).unwrap().addr.port(), 9001);
        }
        p.endpoints[1].set_active(false);
        assert!(!p.any_healthy());
        assert!(p.pick(&[]).is_none());
        p.endpoints[1].set_active(true);
        assert!(p.any_healthy());
    }

    #[test]
    fn a_warming_endpoint_gets_a_ramp_not_its_full_share() {
        let mut p = pool(2);
        p.resilience.slow_start_ms = 60_000;
        let policy = EjectPolicy::default();
        for e in &p.endpoints {
            e.end(Duration::from_millis(5), true, &policy);
        }
        // 9001 has just come back: weight 0.1 against 9000's 1.
        p.endpoints[0]
            .warm_from_ms
            .store(0, std::sync::atomic::Ordering::Relaxed);
        p.endpoints[1].set_active(false);
        p.endpoints[1].set_active(true);
        assert!(p.endpoints[1].weight(60_000) < 0.2);
        // Equal latency: the warm one wins even with 5 in flight.
        for _ in 0..5 {
            p.endpoints[0].begin();
        }
        let warm = (0..100)
            .filter(|_| p.pick(&[]).unwrap().addr.port() == 9000)
            .count();
        assert_eq!(warm, 100);
        // Without slow start the idle one would win.
        p.resilience.slow_start_ms = 0;
        assert_eq!(p.pick(&[]).unwrap().addr.port(), 9001);
    }

    #[test]
    fn error_rate_ejects() {
        let p = pool(1);
        let policy = EjectPolicy::default();
        let e = &p.endpoints[0];
        for i in 0..20 {
            e.end(Duration::from_millis(1), i % 2 == 0, &policy);
        }
        assert!(e.is_ejected());
    }
}
