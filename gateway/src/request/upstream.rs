//! The next attempt's peer: its target (an endpoint of the decision in
//! force, else the next unit by the failover order:
//! [`crate::upstream::failover`]), a slot of the (unit, service)
//! concurrency limit or the request shed, and the Pingora peer with the
//! time left.

use std::sync::Arc;
use std::time::Duration;

use pingora::upstreams::peer::HttpPeer;
use pingora::Error;
use unit_router::policy::criticality;
use unit_router::spec::UpstreamProtocol;
use unit_router::{Decision, Listener};

use crate::answer::GwError;
use crate::request::ctx::Ctx;
use crate::request::failure::fail;
use crate::request::pipeline::{decide, route_error};
use crate::state::{Plane, Shared};
use crate::upstream::failover::{next_target, NoTarget, RetryLimits, Target};
use crate::upstream::flow::Sizes;
use crate::upstream::limiter::{Shed, Slot};
use crate::upstream::peer::http_peer;
use crate::upstream::pool::Pool;

/// The peer of the next attempt, or the failure that ends the request.
pub async fn next_peer(
    shared: &Shared,
    listener: Listener,
    req: &pingora::http::RequestHeader,
    ctx: &mut Ctx,
) -> Result<Box<HttpPeer>, Box<Error>> {
    let (Some(plane), Some(d)) = (ctx.plane.clone(), ctx.decision) else {
        return Err(fail(&mut ctx.failure, GwError::Internal, "not routed"));
    };
    let left = ctx.time_left().unwrap_or(Duration::MAX);
    if left.is_zero() {
        return Err(fail(
            &mut ctx.failure,
            GwError::Deadline,
            "deadline exceeded",
        ));
    }
    let (facts, draw) = (&ctx.facts, ctx.draw);
    let units = plane.snap.topology.units.len();
    let route = |exclude: &[_]| decide(listener, req, facts, &plane, draw, exclude);
    let target = next_target(&plane.pools, d, &mut ctx.attempts, units, route);
    let Target {
        decision,
        pool,
        endpoint,
    } = match target {
        Ok(t) => t,
        Err(NoTarget {
            error,
            last: given_up,
        }) => {
            ctx.decision = Some(given_up);
            // Every unit tried: a timeout (504) or a bad answer (502) on the
            // last attempt is the answer; units that could not be reached
            // are 503.
            let last = ctx
                .failure
                .last()
                .filter(|e| matches!(e, GwError::UpstreamTimeout | GwError::UpstreamError));
            let err = last.cloned().unwrap_or_else(|| route_error(error));
            return Err(fail(&mut ctx.failure, err, "no unit can serve"));
        }
    };
    ctx.decision = Some(decision);
    let slot = match take_slot(&pool, ctx, &plane, &decision, left).await {
        Ok(slot) => slot,
        Err(why) => {
            count_shed(shared, &plane, &decision, why);
            return Err(fail(
                &mut ctx.failure,
                GwError::Overloaded,
                "shed by the concurrency limit",
            ));
        }
    };
    // A wait in the queue used some of the time.
    let left = ctx.time_left().unwrap_or(Duration::MAX);
    let route = plane.snap.topology.routes.get(decision.route);
    let peer = http_peer(
        endpoint.addr,
        &pool.settings,
        left,
        route.upstream_protocol,
        route.upstream_sni.as_str(),
    );
    ctx.upstream_status = None;
    if route.upstream_protocol == UpstreamProtocol::Http1 {
        // The peer's read timeout, as `http_peer` sets it.
        let read_timeout = Duration::from_millis(pool.settings.read_timeout_ms).min(left);
        let sizes = Sizes::within(shared.cfg.response_buffer_bytes).reading_within(read_timeout);
        ctx.begin_flow(sizes);
    }
    let unit = plane.snap.topology.unit(decision.target).name.as_str();
    ctx.attempt_began(shared.spans.is_some(), unit, endpoint.addr);
    ctx.attempts.begin(endpoint, pool, slot);
    Ok(Box::new(peer))
}

/// A slot of the (unit, service) concurrency limit, when the service has
/// one: at once, after a short wait in its queue, or shed. How much the
/// request matters is the route's policy (`unit_router::policy`).
async fn take_slot(
    pool: &Arc<Pool>,
    ctx: &Ctx,
    plane: &Plane,
    d: &Decision,
    left: Duration,
) -> Result<Option<Slot>, Shed> {
    let settings = pool.resilience.limiter;
    if !settings.enabled {
        return Ok(None);
    }
    let route = plane.snap.topology.routes.get(d.route);
    let dyed = ctx.facts.dye.is_some();
    let c = criticality(route, ctx.facts.criticality, dyed, d.reason);
    pool.guard.limit.acquire(c, &settings, left).await?;
    Ok(Some(Slot::taken(pool.guard.limit.clone(), settings)))
}

/// The request is shed by the (unit, service) limit: 503 `overloaded` with
/// `Retry-After`, at once, and no other unit is tried (moving load off an
/// overloaded unit onto the next would spread the overload).
fn count_shed(shared: &Shared, plane: &Plane, d: &Decision, why: Shed) {
    let topo = &plane.snap.topology;
    let labels = [
        topo.unit(d.target).name.as_str(),
        topo.services[d.service.index()].as_str(),
        why.label(),
    ];
    shared
        .metrics
        .resilience
        .shed
        .with_label_values(&labels)
        .inc();
}

/// The caps on another attempt: attempts, the retry budget, their counters.
pub fn retry_limits(shared: &Shared) -> RetryLimits<'_> {
    RetryLimits {
        max_attempts: shared.cfg.max_attempts,
        budget: &shared.budget,
        retries: &shared.metrics.retries,
        exhausted: &shared.metrics.retry_budget_exhausted,
    }
}
