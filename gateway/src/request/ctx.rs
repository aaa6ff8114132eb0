//! The per-request state carried through Pingora's phases.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use pingora::http::ResponseHeader;
use unit_router::{Decision, Listener};

use crate::access::ids::{self, Ids};
use crate::access::spans::AttemptSpan;
use crate::access::Flags;
use crate::answer::GwError;
use crate::quota::gate::Limits;
use crate::request::deadline;
use crate::request::facts::RequestFacts;
use crate::request::failure::Failure;
use crate::state::{Plane, Shared};
use crate::upstream::attempt::{Attempts, Outcome};
use crate::upstream::flow::{FlowGuard, Sizes};

/// One request's state.
#[derive(Debug)]
pub struct Ctx {
    pub started: Instant,
    /// The wall-clock time of `started` (the access log's `ts`).
    pub arrived: SystemTime,
    /// Its id and trace context, set first thing in `request_filter`.
    pub ids: Ids,
    /// What happened to it, for the access log (`access/flags.rs`).
    pub flags: Flags,
    /// The last attempt's time to its upstream's answer head.
    pub upstream_time: Option<Duration>,
    /// A gRPC call's status, as the client got it.
    pub grpc_status: Option<u32>,
    /// The current attempt's span id: the parent its `traceparent` names.
    pub attempt_span: [u8; 8],
    /// The attempts of a sampled request whose spans are exported.
    pub spans: Vec<AttemptSpan>,
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
    /// How the request is failing, if it is: one value
    /// ([`crate::request::failure`]).
    pub failure: Failure,
    /// The route's quota fields for the answer (`RateLimit-Policy`,
    /// `RateLimit`).
    pub limits: Option<Limits>,
    /// The request's uniform draw in `[0, 1)` against the breakers.
    pub draw: f64,
    /// The header the client's deadline came in, forwarded the same way.
    pub deadline_source: Option<deadline::Source>,
    /// How the answer is read off an HTTP/1.1 unit's connection
    /// ([`crate::upstream::flow`]); filed at the first such attempt.
    pub flow: Option<FlowGuard>,
}

/// About how long `resp` was as a unit sent it (HTTP/1.1), and whether its
/// body comes chunked (no `content-length`).
fn wire_head(resp: &ResponseHeader) -> (usize, bool) {
    let fields: usize = resp
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    let line = "HTTP/1.1 200 \r\n".len() + resp.get_reason_phrase().map_or(0, str::len);
    let chunked = !resp.headers.contains_key(http::header::CONTENT_LENGTH);
    (line + fields + 2, chunked)
}

impl Ctx {
    pub fn new(listener: Listener) -> Self {
        Ctx {
            started: Instant::now(),
            arrived: SystemTime::now(),
            ids: Ids::default(),
            flags: Flags::default(),
            upstream_time: None,
            grpc_status: None,
            attempt_span: [0; 8],
            spans: Vec::new(),
            listener,
            facts: RequestFacts::default(),
            plane: None,
            decision: None,
            attempts: Attempts::default(),
            deadline: None,
            body_limit: u64::MAX,
            body_seen: 0,
            upstream_status: None,
            failure: Failure::None,
            limits: None,
            draw: rand::random(),
            deadline_source: None,
            flow: None,
        }
    }

    /// Time left before the deadline (`None`: no deadline set).
    pub fn time_left(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Close the current attempt's bookkeeping (`answered`: the upstream
    /// answered or timed out, rather than refusing the connection), counted
    /// by outcome.
    pub fn end_attempt(&mut self, shared: &Shared, outcome: Outcome, answered: bool) {
        if self.attempts.end(outcome, &shared.policy, answered) {
            if let Some(s) = self.spans.last_mut().filter(|s| s.end.is_none()) {
                s.end = Some(SystemTime::now());
                s.outcome = Some(outcome.label());
                s.status = self.upstream_status;
            }
            let m = &shared.metrics.attempts;
            m.with_label_values(&[self.target_name(), outcome.label()])
                .inc();
        }
    }

    /// An attempt to `peer` of `unit` begins: its span id, recorded with
    /// the attempt when the request is sampled and spans are exported.
    pub fn attempt_began(&mut self, exporting: bool, unit: &str, peer: std::net::SocketAddr) {
        self.attempt_span = ids::nonzero(rand::random);
        if exporting && self.ids.trace.sampled {
            self.spans.push(AttemptSpan {
                span: self.attempt_span,
                start: SystemTime::now(),
                end: None,
                unit: unit.to_owned(),
                peer,
                attempt: self.attempts.count + 1,
                status: None,
                outcome: None,
            });
        }
    }

    /// An attempt on an HTTP/1.1 unit begins: its answer is read afresh.
    pub fn begin_flow(&mut self, sizes: Sizes) {
        match &self.flow {
            Some(g) => g.flow().restart(sizes),
            None => self.flow = FlowGuard::register(sizes),
        }
    }

    /// The client's side took the answer's head.
    pub fn head_taken(&self, resp: &ResponseHeader) {
        if let Some(g) = &self.flow {
            let (bytes, chunked) = wire_head(resp);
            g.flow().head_taken(bytes, chunked);
        }
    }

    /// The client's side took `len` bytes of the answer's body.
    pub fn taken(&self, len: usize) {
        if let Some(g) = &self.flow {
            g.flow().taken(len);
        }
    }

    /// The attempt's upstream answered: its time to the head, recorded
    /// and observed in `unitgate_upstream_duration_seconds`.
    pub fn upstream_answered(&mut self, shared: &Shared) {
        self.upstream_time = self.attempts.elapsed();
        if let (Some(t), Some(p), Some(d)) = (self.upstream_time, &self.plane, self.decision) {
            let topo = &p.snap.topology;
            let labels = [
                topo.unit(d.target).name.as_str(),
                topo.services[d.service.index()].as_str(),
            ];
            let m = &shared.metrics.upstream_duration;
            m.with_label_values(&labels).observe(t.as_secs_f64());
        }
    }

    /// An attempt failed with `err`; another may follow.
    pub fn attempt_failed(&mut self, err: GwError) {
        self.flags.set(Flags::of_error(&err));
        self.failure.attempt_failed(Some(err));
    }

    /// The `grpc-status` of the answer's head (trailers-only) or trailers.
    pub fn saw_grpc_status(&mut self, fields: &http::HeaderMap) {
        if let Some(s) = fields.get("grpc-status") {
            self.grpc_status = s.to_str().ok().and_then(|s| s.parse().ok());
        }
    }

    /// Name of the unit the current decision targets ("" before one).
    pub fn target_name(&self) -> &str {
        match (&self.plane, self.decision) {
            (Some(p), Some(d)) => p.snap.topology.unit(d.target).name.as_str(),
            _ => "",
        }
    }
}
