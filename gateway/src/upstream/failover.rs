//! Retry and failover of one request: whether it may be sent again (the
//! route's policy in `unit_router::policy`, and the body still buffered),
//! whether another attempt has somewhere to go (another endpoint of this
//! unit, else the next unit by the failover order, found once and kept for
//! the attempt that uses it), whether the attempt cap, the time left and the
//! retry budget allow one more, and where the next attempt goes.

use std::sync::Arc;
use std::time::Duration;

use pingora::http::RequestHeader;
use pingora_prometheus::prometheus::{IntCounter, IntCounterVec};
use unit_router::policy::{self, Resend, IDEMPOTENCY_KEY};
use unit_router::routes::Route;
use unit_router::{Decision, RouteError, UnitId};

use super::attempt::Attempts;
use super::budget::RetryBudget;
use super::pool::{Endpoint, Pool, Pools};

/// No attempt is started with less time than this left before the deadline.
pub const MIN_ATTEMPT_TIME: Duration = Duration::from_millis(50);

/// The gateway-wide limits on sending a request again, with their counters.
pub struct RetryLimits<'a> {
    pub max_attempts: u8,
    pub budget: &'a RetryBudget,
    /// `unitgate_retries_total{kind}`.
    pub retries: &'a IntCounterVec,
    /// `unitgate_retry_budget_exhausted_total`.
    pub exhausted: &'a IntCounter,
}

impl RetryLimits<'_> {
    /// Whether one more attempt is allowed (attempt cap, time left, retry
    /// budget); an allowed one is counted as a retry of `kind`.
    pub fn allow(&self, attempts: &Attempts, time_left: Option<Duration>, kind: &str) -> bool {
        if attempts.count >= self.max_attempts || time_left.is_some_and(|t| t < MIN_ATTEMPT_TIME) {
            return false;
        }
        if !self.budget.try_retry() {
            self.exhausted.inc();
            return false;
        }
        self.retries.with_label_values(&[kind]).inc();
        true
    }
}

/// Whether the request may be sent once more after bytes of it reached an
/// upstream (`body_buffered`: the whole body is still held for it).
pub fn may_send_again(route: &Route, req: &RequestHeader, body_buffered: bool) -> bool {
    policy::may_send_again(
        route,
        Resend {
            idempotent_method: req.method.is_idempotent(),
            idempotency_key: req.headers.contains_key(IDEMPOTENCY_KEY),
            body_buffered,
        },
    )
}

/// Whether another attempt has somewhere to go after the one to `d.target`
/// failed: another healthy endpoint of that unit not tried yet, or another
/// unit by the failover order (`route` decides with those units excluded).
/// A unit found is kept in `attempts` for the attempt that goes there, so it
/// is not decided twice.
pub fn has_next_target(
    pools: &Pools,
    d: &Decision,
    attempts: &mut Attempts,
    route: impl FnOnce(&[UnitId]) -> Result<Decision, RouteError>,
) -> bool {
    let current = attempts.current_endpoint();
    if let Some(pool) = pools.get(d.target, d.service) {
        let tried = &attempts.tried_endpoints;
        let other = pool
            .endpoints
            .iter()
            .any(|e| e.is_healthy() && Some(e.addr) != current && !tried.contains(&e.addr));
        if other {
            return true;
        }
    }
    let mut exclude = attempts.tried_units.clone();
    exclude.push(d.target);
    match route(&exclude) {
        Ok(next) => {
            attempts.planned = Some((d.target, next));
            true
        }
        Err(_) => false,
    }
}

/// Where the next attempt goes.
pub struct Target {
    pub decision: Decision,
    pub pool: Arc<Pool>,
    pub endpoint: Arc<Endpoint>,
}

/// No unit is left: why, and the last decision in force.
pub struct NoTarget {
    pub error: RouteError,
    pub last: Decision,
}

/// The next attempt's target: an endpoint of the decision in force not yet
/// tried, else the next unit by the failover order (the one already found,
/// or decided now with the units given up on excluded). `Err` once no unit
/// is left. Bounded: each turn returns or gives up one unit.
pub fn next_target(
    pools: &Pools,
    mut d: Decision,
    attempts: &mut Attempts,
    units: usize,
    mut route: impl FnMut(&[UnitId]) -> Result<Decision, RouteError>,
) -> Result<Target, NoTarget> {
    for _ in 0..=units {
        if let Some(pool) = pools.get(d.target, d.service) {
            if let Some(endpoint) = pool.pick(&attempts.tried_endpoints) {
                // A unit decided earlier is for leaving this one: stale once
                // this one serves again.
                attempts.planned = None;
                return Ok(Target {
                    decision: d,
                    pool: pool.clone(),
                    endpoint,
                });
            }
        }
        // No endpoint left in this unit: the next unit by the failover order.
        let planned = attempts
            .planned
            .take()
            .filter(|(left, _)| *left == d.target);
        attempts.tried_units.push(d.target);
        d = match planned {
            Some((_, next)) => next,
            None => match route(&attempts.tried_units) {
                Ok(next) => next,
                Err(error) => return Err(NoTarget { error, last: d }),
            },
        };
    }
    let error = RouteError::NoUnit {
        route: d.route,
        home: Some(d.home),
    };
    Err(NoTarget { error, last: d })
}
