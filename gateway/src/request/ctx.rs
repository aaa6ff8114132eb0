//! The per-request state carried through Pingora's phases.

use std::sync::Arc;
use std::time::{Duration, Instant};

use unit_router::{Decision, Listener};

use pingora::http::ResponseHeader;

use crate::quota::gate::Limits;
use crate::request::deadline;
use crate::request::facts::RequestFacts;
use crate::request::respond::GwError;
use crate::state::Plane;
use crate::upstream::attempt::Attempts;

/// One request's state.
#[derive(Debug)]
pub struct Ctx {
    pub started: Instant,
    pub listener: Listener,
    /// Gathered once in `request_filter`.
    pub facts: RequestFacts,
    /// The snapshot the request is routed on (one load per request).
    pub plane: Option<Arc<Plane>>,
    /// The decision in force: the first one, or the one after the last
    /// failover to another unit. Response headers are read off it.
    pub decision: Option<Decision>,
    pub attempts: Attempts,
    /// When the request's time across attempts runs out (the route's
    /// `timeout_ms`); set once routed.
    pub deadline: Option<Instant>,
    /// The route's body limit and the body bytes seen so far.
    pub body_limit: u64,
    pub body_seen: u64,
    pub upstream_status: Option<u16>,
    /// The error the gateway answers (or answered) itself.
    pub error: Option<GwError>,
    /// How the last upstream attempt failed (a timeout makes the final
    /// answer a 504 once no unit is left).
    pub last_failure: Option<GwError>,
    /// The route's quota fields for the answer (`RateLimit-Policy`,
    /// `RateLimit`).
    pub limits: Option<Limits>,
    /// The request's uniform draw in `[0, 1)` against the breakers.
    pub draw: f64,
    /// The header the client's deadline came in, forwarded the same way.
    pub deadline_source: Option<deadline::Source>,
    /// The last real upstream answer that was not passed on because the
    /// request was tried again: the answer if every later attempt fails
    /// without one (a real answer beats a gateway error).
    pub held: Option<(Box<ResponseHeader>, Decision)>,
    /// The current attempt's answer was turned into a retry (its status is
    /// retryable): the error that follows is that retry.
    pub status_retry: bool,
}

impl Ctx {
    pub fn new(listener: Listener) -> Self {
        Ctx {
            started: Instant::now(),
            listener,
            facts: RequestFacts::default(),
            plane: None,
            decision: None,
            attempts: Attempts::default(),
            deadline: None,
            body_limit: u64::MAX,
            body_seen: 0,
            upstream_status: None,
            error: None,
            last_failure: None,
            limits: None,
            draw: rand::random(),
            deadline_source: None,
            held: None,
            status_retry: false,
        }
    }

    /// Time left before the deadline (`None`: no deadline set).
    pub fn time_left(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Name of the unit the current decision targets ("" before one).
    pub fn target_name(&self) -> &str {
        match (&self.plane, self.decision) {
            (Some(p), Some(d)) => p.snap.topology.unit(d.target).name.as_str(),
            _ => "",
        }
    }
}
