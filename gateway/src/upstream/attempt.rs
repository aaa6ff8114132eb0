//! One request's upstream attempts: which units and endpoints were tried,
//! the attempt in flight and how each ended (feeding passive health).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use unit_router::UnitId;

use crate::upstream::pool::{EjectPolicy, Endpoint};

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
    current: Option<(Arc<Endpoint>, Instant)>,
    /// Attempts started.
    pub count: u8,
}

impl Attempts {
    /// An attempt to `ep` starts.
    pub fn begin(&mut self, ep: Arc<Endpoint>) {
        ep.begin();
        self.current = Some((ep, Instant::now()));
        self.count += 1;
    }

    /// The attempt in flight ended with `outcome`; false if none was in flight.
    pub fn end(&mut self, outcome: Outcome, policy: &EjectPolicy) -> bool {
        let Some((ep, t0)) = self.current.take() else {
            return false;
        };
        match outcome {
            Outcome::Ok => ep.end(t0.elapsed(), true, policy),
            Outcome::Failed => {
                ep.end(t0.elapsed(), false, policy);
                self.tried_endpoints.push(ep.addr);
            }
            Outcome::ClientGone | Outcome::Cancelled => ep.cancel(),
        }
        true
    }
}
