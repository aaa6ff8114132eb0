//! The Pingora `ProxyHttp` shell, one phase hook each: `request_filter`
//! gathers the request's facts once and asks the router; `upstream_peer`
//! turns the decision into a peer (next endpoint, then next unit); the
//! failure hooks record failures and mark retries; the header hooks render
//! the decision ([`crate::request::render`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType};
use pingora_prometheus::prometheus::Histogram;
use unit_router::resilience::Criticality;
use unit_router::routes::Route;
use unit_router::spec::AuthMode;
use unit_router::{decide, decide_route, Decision, Listener, RouteError, UnitId};

use crate::auth::gate::Refusal;
use crate::listen::head::HeadGuard;
use crate::quota::gate::{Caller, UserKey};
use crate::request::ctx::Ctx;
use crate::request::facts::RequestFacts;
use crate::request::respond::{respond, respond_redirect, GwError};
use crate::request::{deadline, headers, locate, render};
use crate::state::{Plane, Shared};
use crate::upstream::attempt::Outcome;
use crate::upstream::limiter::{Shed, Slot};
use crate::upstream::peer::http_peer;
use crate::upstream::pool::{Guarded, Pool};

/// One listener's proxy logic.
pub struct UnitProxy {
    pub shared: Arc<Shared>,
    pub listener: Listener,
    /// `unitgate_request_duration_seconds` of this listener.
    pub duration: Histogram,
    /// On the plain listener beside an HTTPS one: the hosts sent to HTTPS.
    pub redirect: Option<Arc<super::redirect::HttpsRedirect>>,
}

impl UnitProxy {
    fn listener_name(&self) -> &'static str {
        match self.listener {
            Listener::Public => "public",
            Listener::Internal => "internal",
        }
    }

    /// Ask the router, with the units already tried excluded.
    fn route(&self, req: &RequestHeader, ctx: &Ctx, plane: &Plane) -> Result<Decision, RouteError> {
        self.route_excluding(req, ctx, plane, &ctx.attempts.tried_units)
    }

    /// Ask the router with the units in `exclude` excluded. A unit's
    /// service counts as healthy when an endpoint is and its breaker lets
    /// this request through.
    fn route_excluding(
        &self,
        req: &RequestHeader,
        ctx: &Ctx,
        plane: &Plane,
        exclude: &[UnitId],
    ) -> Result<Decision, RouteError> {
        let f = ctx.facts.for_router(self.listener, req, plane, exclude);
        let health = Guarded {
            pools: &plane.pools,
            draw: ctx.draw,
        };
        match ctx.facts.route {
            Some(r) => decide_route(&plane.snap.topology, r, &f, &health),
            None => decide(&plane.snap.topology, &f, &health),
        }
    }

    /// A request sent away from home because home's breaker refused it
    /// counts as refused there (the breaker's `requests`).
    fn count_throttled(&self, ctx: &Ctx, d: &Decision, plane: &Plane) {
        if d.target == d.home {
            return;
        }
        let health = Guarded {
            pools: &plane.pools,
            draw: ctx.draw,
        };
        if !health.throttled(d.home, d.service) {
            return;
        }
        if let Some(pool) = plane.pools.get(d.home, d.service) {
            pool.guard.breaker.refused(&pool.resilience.breaker);
            let topo = &plane.snap.topology;
            self.shared
                .metrics
                .resilience
                .breaker_refused
                .with_label_values(&[
                    topo.unit(d.home).name.as_str(),
                    topo.services[d.service.index()].as_str(),
                ])
                .inc();
        }
    }

    /// How much this request matters if its service must shed: a trusted
    /// internal caller's `x-unit-criticality`, else the route's; one level
    /// up when the request is shuttled (dyed, or sent away from home).
    fn criticality(&self, ctx: &Ctx, plane: &Plane) -> Criticality {
        let Some(d) = ctx.decision else {
            return Criticality::Default;
        };
        let route = plane.snap.topology.routes.get(d.route);
        let base = ctx.facts.criticality.unwrap_or(route.criticality);
        if ctx.facts.dye.is_some() || d.reason.is_shuttle() {
            base.raised()
        } else {
            base
        }
    }

    /// A slot of the (unit, service) concurrency limit, when the service
    /// has one: at once, after a short wait in its queue, or shed.
    async fn take_slot(
        &self,
        pool: &Arc<Pool>,
        ctx: &Ctx,
        plane: &Plane,
        left: Duration,
    ) -> Result<Option<Slot>, Shed> {
        let settings = pool.resilience.limiter;
        if !settings.enabled {
            return Ok(None);
        }
        let c = self.criticality(ctx, plane);
        pool.guard.limit.acquire(c, &settings, left).await?;
        Ok(Some(Slot::taken(pool.guard.limit.clone(), settings)))
    }

    /// Whether the request may be sent once more after bytes of it reached
    /// an upstream: an idempotent method, or an `Idempotency-Key` on a
    /// route that opts in; and the whole body still buffered.
    fn may_send_again(&self, session: &Session, ctx: &Ctx) -> bool {
        let req = session.req_header();
        let keyed = || {
            ctx.plane.as_ref().zip(ctx.decision).is_some_and(|(p, d)| {
                p.snap
                    .topology
                    .routes
                    .get(d.route)
                    .retry_with_idempotency_key
            }) && req.headers.contains_key(IDEMPOTENCY_KEY)
        };
        (req.method.is_idempotent() || keyed()) && !session.as_ref().retry_buffer_truncated()
    }

    /// Whether another attempt has somewhere to go: another endpoint of
    /// this unit, or another unit by the failover order.
    fn has_next_target(&self, session: &Session, ctx: &Ctx) -> bool {
        let (Some(plane), Some(d)) = (ctx.plane.as_ref(), ctx.decision) else {
            return false;
        };
        let current = ctx.attempts.current_endpoint();
        let tried = &ctx.attempts.tried_endpoints;
        if let Some(pool) = plane.pools.get(d.target, d.service) {
            let other = pool
                .endpoints
                .iter()
                .any(|e| e.is_healthy() && Some(e.addr) != current && !tried.contains(&e.addr));
            if other {
                return true;
            }
        }
        let mut exclude = ctx.attempts.tried_units.clone();
        exclude.push(d.target);
        self.route_excluding(session.req_header(), ctx, plane, &exclude)
            .is_ok()
    }

    /// Whether the upstream's answer `status` is to be replaced by another
    /// attempt: retryable for the route, the request may be sent again,
    /// there is somewhere else to send it, and the caps and budget allow.
    fn retry_status(&self, session: &Session, ctx: &Ctx, status: u16) -> bool {
        let (Some(plane), Some(d)) = (ctx.plane.as_ref(), ctx.decision) else {
            return false;
        };
        let route = plane.snap.topology.routes.get(d.route);
        route.retry_on.binary_search(&status).is_ok()
            && self.may_send_again(session, ctx)
            && self.has_next_target(session, ctx)
            && self.may_retry(ctx, "status")
    }

    /// Whether the route admits the request: its auth (the verified
    /// identity goes into the facts, its user key outranking the others)
    /// and its quotas (their fields go into the answer).
    fn admit(
        &self,
        route: &Route,
        req: &RequestHeader,
        ctx: &mut Ctx,
        plane: &Plane,
    ) -> Result<(), GwError> {
        let shared = &self.shared;
        if route.auth != AuthMode::None {
            let m = &shared.metrics.auth;
            let index = shared.auth.load();
            match crate::auth::gate::check(route, req, &index, &shared.jwks, ctx.facts.now) {
                Ok(Some(id)) => {
                    m.valid.inc();
                    ctx.facts.identity = Some(id);
                }
                Ok(None) => m.anonymous.inc(),
                Err(r) => {
                    let (counter, err) = match r {
                        Refusal::Missing => (&m.missing, GwError::TokenMissing),
                        Refusal::BadRequest => (&m.invalid, GwError::CredentialMalformed),
                        Refusal::Invalid(e) => (&m.invalid, GwError::TokenInvalid(e)),
                        Refusal::Forbidden(_) => (&m.forbidden, GwError::Forbidden),
                    };
                    counter.inc();
                    return Err(err);
                }
            }
        }
        if route.quotas.is_empty() {
            return Ok(());
        }
        let user_header = plane.snap.topology.cluster.user_header.as_str();
        let user_key = match ctx.facts.token.as_ref().and_then(|t| t.shard) {
            Some(s) => Some(UserKey::Shard(s)),
            None => req
                .headers
                .get(user_header)
                .and_then(|v| v.to_str().ok())
                .filter(|k| !k.is_empty())
                .map(UserKey::Header),
        };
        let caller = Caller {
            ip: ctx.facts.client_ip,
            identity: ctx.facts.identity.as_deref(),
            user_key,
        };
        match crate::quota::gate::check(route, &plane.quotas, &caller) {
            Ok(limits) => {
                ctx.limits = limits;
                Ok(())
            }
            Err(x) => {
                shared
                    .metrics
                    .quota
                    .refused
                    .with_label_values(&[x.quota.as_str()])
                    .inc();
                Err(GwError::TooManyRequests(x))
            }
        }
    }

    /// Close the current attempt's bookkeeping (`answered`: the upstream
    /// answered or timed out, rather than refusing the connection).
    fn end_attempt(&self, ctx: &mut Ctx, outcome: Outcome, answered: bool) {
        if ctx.attempts.end(outcome, &self.shared.policy, answered) {
            self.shared
                .metrics
                .attempts
                .with_label_values(&[ctx.target_name(), outcome.label()])
                .inc();
        }
    }

    /// No route takes the request: 405 with `Allow` when some route takes
    /// the path with other methods, else 404.
    fn not_routed(&self, req: &RequestHeader, plane: &Plane) -> GwError {
        let allow = plane.snap.topology.routes.allowed_methods(
            headers::host(req),
            req.uri.path(),
            self.listener,
        );
        if allow.is_empty() {
            GwError::NoRoute
        } else {
            GwError::MethodNotAllowed(allow.join(", "))
        }
    }

    /// End the attempt without blaming the upstream: `err` is the answer,
    /// and there is no retry.
    fn cancel_attempt(&self, ctx: &mut Ctx, err: GwError, mut e: Box<Error>) -> Box<Error> {
        self.end_attempt(ctx, Outcome::Cancelled, false);
        ctx.error = Some(err);
        e.set_retry(false);
        e
    }

    /// Whether one more attempt is allowed (attempt cap, time left, retry
    /// budget).
    fn may_retry(&self, ctx: &Ctx, kind: &str) -> bool {
        if ctx.attempts.count >= self.shared.cfg.max_attempts
            || ctx.time_left().is_some_and(|t| t < MIN_ATTEMPT_TIME)
        {
            return false;
        }
        if !self.shared.budget.try_retry() {
            self.shared.metrics.retry_budget_exhausted.inc();
            return false;
        }
        self.shared.metrics.retries.with_label_values(&[kind]).inc();
        true
    }

    /// The routed request's limits: its deadline (the route's, else its
    /// service's, else the gateway's; shortened by the client's own) and
    /// body limit, from the route or the gateway's defaults. A declared
    /// body over the limit is refused before a byte of it is read.
    fn limits(
        &self,
        ctx: &mut Ctx,
        req: &RequestHeader,
        d: &Decision,
        plane: &Plane,
    ) -> Result<(), GwError> {
        let route = plane.snap.topology.routes.get(d.route);
        let cfg = &self.shared.cfg;
        let mut total = Duration::from_millis(route.timeout_ms.unwrap_or(cfg.request_timeout_ms));
        match deadline::of_request(req) {
            Ok(Some((asked, source))) => {
                total = total.min(asked);
                ctx.deadline_source = Some(source);
            }
            Ok(None) => {}
            Err(deadline::BadTimeout) => {
                return Err(GwError::BadRequest(unit_router::InputError::BadTimeout))
            }
        }
        ctx.deadline = Some(ctx.started + total);
        ctx.body_limit = route.max_body_bytes.unwrap_or(cfg.max_body_bytes);
        let declared = req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        match declared {
            Some(n) if n > ctx.body_limit => Err(GwError::PayloadTooLarge),
            _ => Ok(()),
        }
    }

    /// Each read of the body waits at most `body_read_timeout_ms`, and never
    /// past the deadline: a body trickled in byte by byte ends at the
    /// route's total time (408).
    fn bound_body_reads(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        let idle = Duration::from_millis(self.shared.cfg.body_read_timeout_ms);
        let left = ctx.time_left().unwrap_or(idle);
        if left.is_zero() {
            ctx.error = Some(GwError::RequestTimeout);
            return Err(Error::explain(
                ErrorType::HTTPStatus(408),
                "request body not received within the route's time",
            ));
        }
        session.set_read_timeout(Some(idle.min(left)));
        Ok(())
    }

    /// The request is shed by the (unit, service) limit: 503 `overloaded`
    /// with `Retry-After`, at once, and no other unit is tried (moving load
    /// off an overloaded unit onto the next would spread the overload).
    fn shed(&self, ctx: &mut Ctx, plane: &Plane, d: &Decision, why: Shed) -> Box<Error> {
        let topo = &plane.snap.topology;
        self.shared
            .metrics
            .resilience
            .shed
            .with_label_values(&[
                topo.unit(d.target).name.as_str(),
                topo.services[d.service.index()].as_str(),
                why.label(),
            ])
            .inc();
        ctx.error = Some(GwError::Overloaded);
        Error::explain(ErrorType::HTTPStatus(503), "shed by the concurrency limit")
    }

    /// Answer with a held upstream answer: its status and headers (framing
    /// replaced), an empty body, the gateway's own headers. Its status, or
    /// 0 when the client is gone.
    async fn answer_held(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        mut h: ResponseHeader,
    ) -> u16 {
        h.remove_header(&http::header::TRANSFER_ENCODING);
        h.remove_header(&http::header::CONTENT_LENGTH);
        let status = h.status.as_u16();
        let written = async {
            h.insert_header(http::header::CONTENT_LENGTH, "0")?;
            render::response(&self.shared, ctx, &mut h)?;
            session.set_keepalive(None);
            session.write_response_header(Box::new(h), false).await?;
            session.write_response_body(Some(Bytes::new()), true).await
        };
        match written.await {
            Ok(()) => status,
            Err(_) => 0,
        }
    }

    /// Answer `err` from the gateway itself; the request ends there.
    async fn answer(&self, session: &mut Session, ctx: &mut Ctx, err: GwError) -> Result<bool> {
        // Recorded first: logged and counted even if the client is gone.
        ctx.error = Some(err.clone());
        let h = &session.req_header().headers;
        if h.contains_key(http::header::CONTENT_LENGTH)
            || h.contains_key(http::header::TRANSFER_ENCODING)
        {
            // Answered before the body was read: the close lingers.
            if let Some(g) = HeadGuard::of(session.as_downstream().stream()) {
                g.linger_on_close();
            }
        }
        respond(session, &err).await?;
        Ok(true)
    }
}

/// A failure to get an answer from upstreams (as opposed to the client's
/// fault or a refusal of the gateway's own).
fn upstream_failure(e: &GwError) -> bool {
    matches!(
        e,
        GwError::NoUnit
            | GwError::Deadline
            | GwError::UpstreamUnavailable
            | GwError::UpstreamTimeout
            | GwError::UpstreamError
    )
}

/// The request header that opts a non-idempotent request into retries.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

fn gw_error(e: RouteError) -> GwError {
    match e {
        RouteError::NoRoute => GwError::NoRoute,
        RouteError::NoUnit { .. } => GwError::NoUnit,
        RouteError::HopLimit { .. } => GwError::HopLimit,
    }
}

/// The edge input rules on the parsed head: framing (with the
/// `Content-Length` rewritten as one plain number), names with `_`, one
/// user key, then the request line (the Host checked, the path normalised
/// in place).
fn check_input(
    session: &mut Session,
    user_header: &str,
    shared: &Shared,
) -> std::result::Result<(), unit_router::InputError> {
    // The raw head is only needed to see a Content-Length beside a
    // Transfer-Encoding, which Pingora has dropped from the parsed head.
    let te = http::header::TRANSFER_ENCODING;
    let raw_head = if session.req_header().headers.contains_key(te) {
        session
            .as_downstream()
            .as_http1()
            .map(|h| h.get_headers_raw_bytes())
    } else {
        None
    };
    headers::check_framing(session.req_header(), raw_head.as_deref())?;
    let forward = shared.cfg.forward_underscore_headers;
    let dropped = headers::underscored(session.req_header_mut(), user_header, forward)?;
    shared.metrics.underscore_dropped.inc_by(dropped);
    headers::one_user_key(session.req_header(), user_header)?;
    headers::canonical_length(session.req_header_mut())?;
    headers::check_request_line(session.req_header_mut())
}

/// No attempt is started with less time than this left before the deadline.
const MIN_ATTEMPT_TIME: Duration = Duration::from_millis(50);

/// A timeout that fired because the request's deadline ran out (each
/// attempt's timeouts are cut to the time left): the route's answer is 504
/// `deadline_exceeded`, and the upstream is not blamed for it.
fn deadline_hit(ctx: &Ctx, e: &Error) -> Option<GwError> {
    let timeout = matches!(
        e.etype(),
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
    );
    let spent = ctx
        .time_left()
        .is_some_and(|t| t < Duration::from_millis(5));
    (timeout && spent).then_some(GwError::Deadline)
}

/// Whether a failed request is the client's doing (gone, garbage, over a
/// limit): not the upstream's fault, logged at debug.
fn client_fault(ctx: &Ctx, e: &Error) -> bool {
    *e.esource() == ErrorSource::Downstream
        || matches!(
            ctx.error,
            Some(GwError::ClientClosed | GwError::PayloadTooLarge | GwError::RequestTimeout)
        )
}

/// The gateway's answer for a proxy error that has none recorded yet.
fn proxy_error(e: &Error) -> GwError {
    if *e.esource() == ErrorSource::Downstream {
        // The client's side: its own fault, never a 5xx.
        return match e.etype() {
            ErrorType::ReadTimedout => GwError::RequestTimeout,
            ErrorType::InvalidHTTPHeader | ErrorType::H1Error | ErrorType::InvalidH2 => {
                GwError::BadRequest(unit_router::InputError::BadBody)
            }
            // A chunk size or chunk framing that does not parse.
            ErrorType::Custom("InvalidChunk") => {
                GwError::BadRequest(unit_router::InputError::BadBody)
            }
            _ => GwError::ClientClosed,
        };
    }
    match e.etype() {
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
            GwError::UpstreamTimeout
        }
        ErrorType::ConnectRefused | ErrorType::ConnectError | ErrorType::ConnectNoRoute => {
            GwError::UpstreamUnavailable
        }
        ErrorType::HTTPStatus(503) => GwError::NoUnit,
        _ if *e.esource() == ErrorSource::Upstream => GwError::UpstreamError,
        _ => GwError::Internal,
    }
}

#[async_trait]
impl ProxyHttp for UnitProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new(self.listener)
    }

    async fn early_request_filter(&self, session: &mut Session, _ctx: &mut Ctx) -> Result<()> {
        // The head is in: its size and time limits stop applying.
        if let Some(g) = HeadGuard::of(session.as_downstream().stream()) {
            g.head_read();
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let shared = &self.shared;
        shared.budget.deposit();
        if headers::head_size(session.req_header()) > shared.cfg.max_header_bytes {
            return self.answer(session, ctx, GwError::HeadersTooLarge).await;
        }
        let Some(plane) = shared.plane.load_full() else {
            return self.answer(session, ctx, GwError::NotReady).await;
        };
        // Pingora keeps an HTTP/1.1 connection open forever between
        // requests; here idle time is bounded where the connection is
        // parked (`listen/idle.rs`), and this bounds each read of a head.
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(shared.cfg.session_keepalive_s()));
        }
        ctx.facts = RequestFacts::gather(shared, self.listener, session, &plane);
        // Untrusted input never reaches an upstream: internal headers go,
        // the host is checked and the path normalised before routing.
        headers::strip(session.req_header_mut(), ctx.facts.peer_trusted);
        let user_header = plane.snap.topology.cluster.user_header.as_str();
        if let Err(e) = check_input(session, user_header, shared) {
            return self.answer(session, ctx, GwError::BadRequest(e)).await;
        }
        if let Some(redirect) = &self.redirect {
            let req = session.req_header();
            let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
            if let Some(location) = redirect.location(headers::host(req), target) {
                respond_redirect(session, &location).await?;
                return Ok(true);
            }
        }
        let req = session.req_header();
        if self.listener == Listener::Public
            && req.method == http::Method::GET
            && req.uri.path() == locate::PATH
        {
            locate::answer(shared, session, ctx, &plane).await?;
            return Ok(true);
        }
        let topo = &plane.snap.topology;
        let found = topo.routes.find(
            headers::host(req),
            req.uri.path(),
            req.method.as_str(),
            self.listener,
        );
        let Some(route_id) = found else {
            let err = self.not_routed(req, &plane);
            ctx.plane = Some(plane);
            return self.answer(session, ctx, err).await;
        };
        ctx.facts.route = Some(route_id);
        if let Err(e) = self.admit(topo.routes.get(route_id), req, ctx, &plane) {
            ctx.plane = Some(plane);
            return self.answer(session, ctx, e).await;
        }
        let routed = self.route(req, ctx, &plane);
        let err = match routed {
            Ok(d) => {
                self.count_throttled(ctx, &d, &plane);
                let limits = self.limits(ctx, req, &d, &plane);
                ctx.decision = Some(d);
                ctx.plane = Some(plane);
                return match limits {
                    // The client's own deadline is already spent: 504 at once.
                    Ok(()) if ctx.time_left().is_some_and(|t| t.is_zero()) => {
                        self.answer(session, ctx, GwError::Deadline).await
                    }
                    Ok(()) => {
                        self.bound_body_reads(session, ctx)?;
                        Ok(false)
                    }
                    Err(e) => self.answer(session, ctx, e).await,
                };
            }
            Err(RouteError::NoRoute) => self.not_routed(req, &plane),
            Err(e) => gw_error(e),
        };
        ctx.plane = Some(plane);
        self.answer(session, ctx, err).await
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let Some(plane) = ctx.plane.clone() else {
            return Err(Error::explain(ErrorType::InternalError, "no plane"));
        };
        let left = ctx.time_left().unwrap_or(Duration::MAX);
        if left.is_zero() {
            ctx.error = Some(GwError::Deadline);
            return Err(Error::explain(
                ErrorType::HTTPStatus(504),
                "deadline exceeded",
            ));
        }
        // Bounded: each turn either returns or excludes one more unit.
        let mut no_unit = GwError::NoUnit;
        for _ in 0..=plane.snap.topology.units.len() {
            let Some(d) = ctx.decision else { break };
            if let Some(pool) = plane.pools.get(d.target, d.service) {
                if let Some(ep) = pool.pick(&ctx.attempts.tried_endpoints) {
                    let slot = match self.take_slot(pool, ctx, &plane, left).await {
                        Ok(slot) => slot,
                        Err(shed) => return Err(self.shed(ctx, &plane, &d, shed)),
                    };
                    // A wait in the queue used some of the time.
                    let left = ctx.time_left().unwrap_or(Duration::MAX);
                    let route = ctx.facts.route.map(|r| plane.snap.topology.routes.get(r));
                    let (protocol, sni) = route.map_or((Default::default(), ""), |r| {
                        (r.upstream_protocol, r.upstream_sni.as_str())
                    });
                    let peer = http_peer(ep.addr, &pool.settings, left, protocol, sni);
                    ctx.upstream_status = None;
                    ctx.attempts.begin(ep, pool.clone(), slot);
                    return Ok(Box::new(peer));
                }
            }
            // No endpoint left in this unit: the next unit by the failover order.
            ctx.attempts.tried_units.push(d.target);
            match self.route(session.req_header(), ctx, &plane) {
                Ok(next) => ctx.decision = Some(next),
                Err(e) => {
                    no_unit = gw_error(e);
                    break;
                }
            }
        }
        // Every unit tried: a timeout (504) or a bad answer (502) on the last
        // attempt is the answer; units that could not be reached are 503.
        let last = ctx
            .last_failure
            .take()
            .filter(|e| matches!(e, GwError::UpstreamTimeout | GwError::UpstreamError));
        ctx.error = Some(last.unwrap_or(no_unit));
        Err(Error::explain(
            ErrorType::HTTPStatus(503),
            "no unit can serve",
        ))
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if session.was_upgraded() {
            // A WebSocket (or other upgraded) connection: its frames are not
            // a request body. Bounded by the connection limits and the idle
            // keep-alive time, not by the request's body limit or deadline.
            let idle = Duration::from_secs(self.shared.cfg.keepalive_idle_s);
            session.set_read_timeout(Some(idle));
            return Ok(());
        }
        // Counted as it streams: a body without a declared length (chunked)
        // is cut off at the limit.
        ctx.body_seen += body.as_ref().map_or(0, |b| b.len() as u64);
        if ctx.body_seen > ctx.body_limit {
            ctx.error = Some(GwError::PayloadTooLarge);
            return Err(Error::explain(
                ErrorType::HTTPStatus(413),
                "request body over the route's limit",
            ));
        }
        self.bound_body_reads(session, ctx)
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        up: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        render::upstream_request(&self.shared, ctx, up)
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let status = resp.status.as_u16();
        ctx.upstream_status = Some(status);
        if status >= 400 && self.retry_status(session, ctx, status) {
            // Not passed on: the request goes elsewhere. The answer is kept
            // (with the decision it was routed by) in case no later attempt
            // gets a real one.
            ctx.held = ctx.decision.map(|d| (Box::new(resp.clone()), d));
            ctx.status_retry = true;
            return Err(Error::explain(
                ErrorType::HTTPStatus(status),
                "retryable upstream status",
            ));
        }
        if resp.status == http::StatusCode::SWITCHING_PROTOCOLS {
            // Upgraded (WebSocket): the client may stay quiet as long as an
            // idle keep-alive connection may, not just a body's read timeout.
            let idle = Duration::from_secs(self.shared.cfg.keepalive_idle_s);
            session.set_read_timeout(Some(idle));
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        render::response(&self.shared, ctx, resp)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(err) = deadline_hit(ctx, &e) {
            return self.cancel_attempt(ctx, err, e);
        }
        // Nothing reached the upstream: any method may be retried.
        self.end_attempt(ctx, Outcome::Failed, false);
        ctx.last_failure = Some(proxy_error(&e));
        let retry = self.may_retry(ctx, "connect");
        e.set_retry(retry);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        _client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer: {peer}"));
        if std::mem::take(&mut ctx.status_retry) {
            // The upstream answered a retryable status: already cleared for
            // another attempt (`retry_status`).
            self.end_attempt(ctx, Outcome::Failed, true);
            ctx.last_failure = None;
            e.set_retry(true);
            return e;
        }
        if client_fault(ctx, &e) {
            // The client went away or sent garbage: not the upstream's fault,
            // and nobody is left to answer.
            self.end_attempt(ctx, Outcome::ClientGone, false);
            e.set_retry(false);
            return e;
        }
        if let Some(err) = deadline_hit(ctx, &e) {
            return self.cancel_attempt(ctx, err, e);
        }
        if e.etype() == &ErrorType::ReadTimedout && !session.is_body_done() {
            // The upstream was still waiting for the body when its answer
            // timed out: the client stopped sending, not the upstream's fault.
            return self.cancel_attempt(ctx, GwError::RequestTimeout, e);
        }
        self.end_attempt(ctx, Outcome::Failed, true);
        ctx.last_failure = Some(proxy_error(&e));
        // Bytes may have reached the upstream: only idempotent methods (or
        // keyed ones where the route opts in) are sent again, and only with
        // the whole body still buffered.
        let retry = self.may_send_again(session, ctx)
            && ctx.upstream_status.is_none()
            && self.may_retry(ctx, "transport");
        e.set_retry(retry);
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let downstream_dead = *e.esource() == ErrorSource::Downstream
            && matches!(
                e.etype(),
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed
            );
        let err = if downstream_dead {
            GwError::ClientClosed
        } else {
            ctx.error.clone().unwrap_or_else(|| proxy_error(e))
        };
        // Nobody to answer, or the answer already started: nothing to send.
        let code = if err == GwError::ClientClosed || session.response_written().is_some() {
            0
        } else if let Some((held, d)) = ctx.held.take().filter(|_| upstream_failure(&err)) {
            // An upstream answered before the later attempts failed without
            // an answer: its status and headers beat the gateway's error,
            // rendered for the unit that gave it.
            ctx.decision = Some(d);
            self.answer_held(session, ctx, *held).await
        } else {
            let _ = respond(session, &err).await;
            if matches!(err, GwError::PayloadTooLarge | GwError::RequestTimeout) {
                // The body is still arriving: linger so the answer is read.
                if let Some(g) = HeadGuard::of(session.as_downstream().stream()) {
                    g.linger_on_close();
                }
                session.as_downstream_mut().shutdown().await;
            }
            err.status()
        };
        // A refusal answered before any upstream attempt (shed by the
        // limit) keeps a body-less request's connection: shedding stays cheap.
        let reuse = code != 0 && err.keeps_connection() && session.is_body_empty();
        ctx.error = Some(err);
        FailToProxy {
            error_code: code,
            can_reuse_downstream: reuse,
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, _e: &Error) -> bool {
        // The gateway logs every failed request itself, in `logging`: at
        // debug when the client is at fault, at warn otherwise.
        true
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let answered = ctx.upstream_status.is_some();
        let outcome = match e {
            Some(e) if client_fault(ctx, e) => Outcome::ClientGone,
            Some(_) => Outcome::Failed,
            None if ctx.upstream_status.is_some_and(|s| s >= 500) => Outcome::Failed,
            None => Outcome::Ok,
        };
        self.end_attempt(ctx, outcome, answered);
        // A client gone before the answer is 499 (nginx's convention).
        let client_gone = matches!(e, Some(e) if *e.esource() == ErrorSource::Downstream);
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .or_else(|| ctx.error.as_ref().map(GwError::status))
            .unwrap_or(if client_gone { 499 } else { 0 });
        let (route, reason) = match (&ctx.plane, ctx.decision, ctx.facts.route) {
            (Some(p), Some(d), _) => (
                p.snap.topology.routes.get(d.route).name.as_str(),
                d.reason.as_str(),
            ),
            (Some(p), None, Some(r)) => (
                p.snap.topology.routes.get(r).name.as_str(),
                ctx.error.as_ref().map_or("", GwError::code),
            ),
            _ => ("", ctx.error.as_ref().map_or("", GwError::code)),
        };
        if let Some(e) = e {
            if client_fault(ctx, e) {
                tracing::debug!(error = %e, status, route, "client-side error");
            } else {
                tracing::warn!(error = %e, status, route, unit = ctx.target_name(), "request failed");
            }
        }
        // Status codes are 100-999, or 0 when nothing was answered.
        let code = http::StatusCode::from_u16(status).ok();
        let code = code.as_ref().map_or("0", http::StatusCode::as_str);
        self.shared
            .metrics
            .requests
            .with_label_values(&[self.listener_name(), route, reason, code])
            .inc();
        self.duration.observe(ctx.started.elapsed().as_secs_f64());
    }
}
