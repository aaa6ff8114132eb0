//! One request's upstream attempts: which units and endpoints were tried,
//! the attempt in flight and how each ended (feeding passive health, the
//! (unit, service) breaker and its concurrency limit).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use unit_router::{Decision, UnitId};

use crate::upstream::limiter::Slot;
use crate::upstream::pool::{EjectPolicy, Endpoint, Pool};

/// How an upstream attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The upstream failed (connect, transport, 5xx): counts against it.
    Failed,
    /// The client went away: says nothing about the upstream.
    ClientGone,
    /// Ended by the gateway, not the upstream: the request's deadline ran
    /// out, or the client stopped sending its body. Says nothing about the
    /// upstream either.
    Cancelled,
}

impl Outcome {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "error",
            Outcome::ClientGone => "client_gone",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// The attempts of one request.
#[derive(Debug, Default)]
pub struct Attempts {
    /// Units given up on (no endpoint left), excluded from the next decision.
    pub tried_units: Vec<UnitId>,
    /// Endpoints that failed, skipped by the next pick.
    pub tried_endpoints: Vec<SocketAddr>,
    current: Option<Current>,
    /// Attempts started.
    pub count: u8,
    /// The unit to go to once the unit named first is given up on, when it
    /// was already decided (asked whether there is a next target).
    pub planned: Option<(UnitId, Decision)>,
}

/// The attempt in flight.
#[derive(Debug)]
struct Current {
    ep: Arc<Endpoint>,
    pool: Arc<Pool>,
    started: Instant,
    /// Its slot of the (unit, service) concurrency limit, if limited.
    slot: Option<Slot>,
}

impl Attempts {
    /// An attempt to `ep` of `pool` starts, holding `slot`.
    pub fn begin(&mut self, ep: Arc<Endpoint>, pool: Arc<Pool>, slot: Option<Slot>) {
        ep.begin();
        self.current = Some(Current {
            ep,
            pool,
            started: Instant::now(),
            slot,
        });
        self.count += 1;
    }

    /// The endpoint of the attempt in flight.
    pub fn current_endpoint(&self) -> Option<SocketAddr> {
        self.current.as_ref().map(|c| c.ep.addr)
    }

    /// The attempt in flight ended with `outcome`; false if none was in
    /// flight. `answered`: the upstream answered or timed out (its latency
    /// says something about its load), as opposed to a refused connection.
    /// How long the attempt in flight has run.
    pub fn elapsed(&self) -> Option<std::time::Duration> {
        self.current.as_ref().map(|c| c.started.elapsed())
    }

    pub fn end(&mut self, outcome: Outcome, policy: &EjectPolicy, answered: bool) -> bool {
        let Some(c) = self.current.take() else {
            return false;
        };
        let breaker = (&c.pool.guard.breaker, &c.pool.resilience.breaker);
        let sample = match outcome {
            Outcome::Ok => {
                c.ep.end(c.started.elapsed(), true, policy);
                breaker.0.record(true, breaker.1);
                true
            }
            Outcome::Failed => {
                c.ep.end(c.started.elapsed(), false, policy);
                breaker.0.record(false, breaker.1);
                self.tried_endpoints.push(c.ep.addr);
                answered
            }
            Outcome::ClientGone | Outcome::Cancelled => {
                c.ep.cancel();
                false
            }
        };
        if let Some(slot) = c.slot {
            slot.release(sample);
        }
        true
    }
}
