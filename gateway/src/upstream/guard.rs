//! What protects one (unit, service) as a whole, beside the per-endpoint
//! passive health of the pool: its circuit breaker and its concurrency
//! limit. Like endpoint state, it outlives snapshots: a new topology keeps
//! the guard of every (unit, service) it still has.

use std::sync::Arc;
use std::time::Instant;

use unit_router::resilience::Resilience;

use crate::upstream::breaker::Breaker;
use crate::upstream::limiter::ConcurrencyLimit;

/// The breaker and limit of one (unit, service), and what it served.
#[derive(Debug)]
pub struct Guard {
    pub breaker: Breaker,
    pub limit: Arc<ConcurrencyLimit>,
    /// Requests it answered; of those, requests that arrived dyed
    /// (`/status`, the status page's share of traffic per unit).
    pub served: std::sync::atomic::AtomicU64,
    pub dyed: std::sync::atomic::AtomicU64,
}

impl Guard {
    pub fn new(origin: Instant, r: &Resilience) -> Self {
        Guard {
            breaker: Breaker::new(origin),
            limit: Arc::new(ConcurrencyLimit::new(origin, &r.limiter)),
            served: Default::default(),
            dyed: Default::default(),
        }
    }
}
