//! The admission pipeline: one function ([`admit`]) takes a request through
//! the input rules, its route, auth, quotas, the routing decision and its
//! limits, and says what was admitted or the one [`GwError`] that refuses
//! it. Each step is a small function below, in the order they run; every
//! refusal is answered in one place by the caller.

use std::time::Duration;

use pingora::http::RequestHeader;
use pingora::proxy::Session;
use unit_router::policy::{quota_subject, unrouted, user_key, Unrouted};
use unit_router::routes::Route;
use unit_router::spec::AuthMode;
use unit_router::{decide_route, Decision, InputError, Listener, RouteError, UnitId};

use crate::answer::GwError;
use crate::auth::gate::Refusal;
use crate::quota::gate::Caller;
use crate::request::ctx::Ctx;
use crate::request::facts::{self, RequestFacts};
use crate::request::redirect::HttpsRedirect;
use crate::request::{deadline, headers, locate};
use crate::state::{Plane, Shared};
use crate::upstream::pool::Guarded;

/// Where a listener's requests are admitted.
#[derive(Clone, Copy)]
pub struct Gate<'a> {
    pub shared: &'a Shared,
    pub listener: Listener,
    /// `public`, `internal` or `http`: the metric label.
    pub name: &'static str,
    /// On the plain listener beside an HTTPS one: the hosts sent to HTTPS.
    pub redirect: Option<&'a HttpsRedirect>,
}

/// What the pipeline admitted.
#[derive(Debug)]
pub enum Admitted {
    /// A routed request, its decision and limits in the context: proxy it.
    Proxy,
    /// A host sent to HTTPS: a 308 to this location.
    Redirect(String),
    /// `GET /_unitgate/locate`: answered by the gateway.
    Locate,
}

/// Take the request in `session` through the pipeline, filling `ctx`.
pub fn admit(gate: Gate<'_>, session: &mut Session, ctx: &mut Ctx) -> Result<Admitted, GwError> {
    ctx.ids = facts::identify(gate.shared, gate.listener, session);
    // The admission's own lines (debug) name the request.
    let ids = &ctx.ids;
    let trace_id = || ids.trace.trace_id();
    let _span =
        tracing::debug_span!("request", request_id = %ids.request_id, trace_id = %trace_id())
            .entered();
    refuse_connect(gate, session.req_header())?;
    let shared = gate.shared;
    shared.budget.deposit();
    if headers::head_size(session.req_header()) > shared.cfg.max_header_bytes {
        return Err(GwError::HeadersTooLarge);
    }
    let plane = shared.plane.load_full().ok_or(GwError::NotReady)?;
    let admitted = admit_on(gate, session, ctx, &plane);
    // Whatever the outcome: the request is logged with its snapshot.
    ctx.plane = Some(plane);
    admitted
}

/// The steps that need the snapshot.
fn admit_on(
    gate: Gate<'_>,
    session: &mut Session,
    ctx: &mut Ctx,
    plane: &Plane,
) -> Result<Admitted, GwError> {
    let shared = gate.shared;
    // Pingora keeps an HTTP/1.1 connection open forever between requests;
    // idle time is bounded where the connection is parked
    // (`listen/idle.rs`), and this bounds each read of a head.
    if session.get_keepalive().is_some() {
        session.set_keepalive(Some(shared.cfg.session_keepalive_s()));
    }
    ctx.facts = RequestFacts::gather(shared, gate.listener, session, plane);
    input_rules(shared, session, ctx.facts.peer_trusted, plane)?;
    let req = session.req_header();
    if let Some(location) = redirect(gate, req) {
        return Ok(Admitted::Redirect(location));
    }
    if gate.listener == Listener::Public
        && req.method == http::Method::GET
        && req.uri.path() == locate::PATH
    {
        return Ok(Admitted::Locate);
    }
    let route_id = route(gate, req, plane)?;
    ctx.facts.route = Some(route_id);
    let route = plane.snap.topology.routes.get(route_id);
    authenticate(shared, route, req, ctx, plane)?;
    count_quotas(shared, route, req, ctx, plane)?;
    let d = match decide(gate.listener, req, &ctx.facts, plane, ctx.draw, &[]) {
        Ok(d) => d,
        Err(RouteError::NoRoute) => return Err(not_routed(gate, req, plane)),
        Err(e) => return Err(route_error(e)),
    };
    count_throttled(shared, &d, plane, ctx.draw);
    ctx.decision = Some(d);
    limits(shared, ctx, req, route)?;
    // The client's own deadline is already spent: 504 at once.
    if ctx.time_left().is_some_and(|t| t.is_zero()) {
        return Err(GwError::Deadline);
    }
    Ok(Admitted::Proxy)
}

/// CONNECT: the gateway is no forward proxy (405, counted with the heads
/// refused).
fn refuse_connect(gate: Gate<'_>, req: &RequestHeader) -> Result<(), GwError> {
    if req.method != http::Method::CONNECT {
        return Ok(());
    }
    let m = &gate.shared.metrics.connections.heads_refused;
    m.with_label_values(&[gate.name, "connect"]).inc();
    Err(GwError::ConnectUnsupported)
}

/// The edge input rules: internal headers stripped (untrusted input never
/// reaches an upstream), then framing (the `Content-Length` rewritten as
/// one plain number), names with `_`, one user key, and the request line
/// (the Host checked, the path normalised in place).
fn input_rules(
    shared: &Shared,
    session: &mut Session,
    peer_trusted: bool,
    plane: &Plane,
) -> Result<(), GwError> {
    headers::strip(session.req_header_mut(), peer_trusted);
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
    let user_header = plane.snap.topology.cluster.user_header.as_str();
    let forward = shared.cfg.forward_underscore_headers;
    let checked = headers::check_framing(session.req_header(), raw_head.as_deref())
        .and_then(|()| headers::underscored(session.req_header_mut(), user_header, forward))
        .map(|dropped| count_dropped(shared, dropped))
        .and_then(|()| headers::one_user_key(session.req_header(), user_header))
        .and_then(|()| headers::canonical_length(session.req_header_mut()))
        .and_then(|()| headers::check_request_line(session.req_header_mut()));
    checked.map_err(GwError::BadRequest)
}

/// Headers dropped for `_` in their name (an uncontended no-op when none
/// were: most requests).
fn count_dropped(shared: &Shared, dropped: u64) {
    if dropped > 0 {
        shared.metrics.underscore_dropped.inc_by(dropped);
    }
}

/// On the plain listener: the HTTPS location of a host sent there.
fn redirect(gate: Gate<'_>, req: &RequestHeader) -> Option<String> {
    let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
    gate.redirect?.location(headers::host(req), target)
}

/// The route that takes the request, or 405/404.
fn route(
    gate: Gate<'_>,
    req: &RequestHeader,
    plane: &Plane,
) -> Result<unit_router::RouteId, GwError> {
    let found = plane.snap.topology.routes.find(
        headers::host(req),
        req.uri.path(),
        req.method.as_str(),
        gate.listener,
    );
    found.ok_or_else(|| not_routed(gate, req, plane))
}

/// No route takes the request: 405 with `Allow`, or 404.
fn not_routed(gate: Gate<'_>, req: &RequestHeader, plane: &Plane) -> GwError {
    let routes = &plane.snap.topology.routes;
    match unrouted(routes, headers::host(req), req.uri.path(), gate.listener) {
        Unrouted::NoRoute => GwError::NoRoute,
        Unrouted::MethodNotAllowed(allow) => GwError::MethodNotAllowed(allow),
    }
}

/// The route's auth: the verified identity goes into the facts, its user
/// key outranking the others.
fn authenticate(
    shared: &Shared,
    route: &Route,
    req: &RequestHeader,
    ctx: &mut Ctx,
    plane: &Plane,
) -> Result<(), GwError> {
    if route.auth == AuthMode::None {
        return Ok(());
    }
    let m = &shared.metrics.auth;
    match crate::auth::gate::check(route, req, &plane.auth, &shared.jwks, ctx.facts.now) {
        Ok(Some(id)) => {
            m.valid.inc();
            ctx.facts.identity = Some(id);
            Ok(())
        }
        Ok(None) => {
            m.anonymous.inc();
            Ok(())
        }
        Err(r) => {
            let (counter, err) = match r {
                Refusal::Missing => (&m.missing, GwError::TokenMissing),
                Refusal::BadRequest => (&m.invalid, GwError::CredentialMalformed),
                Refusal::Invalid(e) => (&m.invalid, GwError::TokenInvalid(e)),
                Refusal::Forbidden(_) => (&m.forbidden, GwError::Forbidden),
            };
            counter.inc();
            Err(err)
        }
    }
}

/// The route's quotas: all must allow the request; their fields go into
/// the answer. A per-user quota counts the verified user, else the user
/// header, else the client address.
fn count_quotas(
    shared: &Shared,
    route: &Route,
    req: &RequestHeader,
    ctx: &mut Ctx,
    plane: &Plane,
) -> Result<(), GwError> {
    if route.quotas.is_empty() {
        return Ok(());
    }
    let user_header = plane.snap.topology.cluster.user_header.as_str();
    let header = req.headers.get(user_header).and_then(|v| v.to_str().ok());
    // The routing token is not a quota key: every user of a shard has the
    // same one.
    let key = user_key(header);
    let identity = ctx.facts.identity.as_deref();
    let caller = Caller {
        ip: ctx.facts.client_ip,
        identity,
        subject: quota_subject(identity.map(|i| i.user.as_str()), key),
    };
    match crate::quota::gate::check(route, &plane.quotas, &caller) {
        Ok(limits) => {
            ctx.limits = limits;
            Ok(())
        }
        Err(x) => {
            let m = &shared.metrics.quota.refused;
            m.with_label_values(&[x.quota.as_str()]).inc();
            Err(GwError::TooManyRequests(x))
        }
    }
}

/// Ask the router for the request's route, with the units in `exclude`
/// excluded. A unit's service counts as healthy when an endpoint is and its
/// breaker lets this request (its `draw`) through.
pub fn decide(
    listener: Listener,
    req: &RequestHeader,
    facts: &RequestFacts,
    plane: &Plane,
    draw: f64,
    exclude: &[UnitId],
) -> Result<Decision, RouteError> {
    let route = facts.route.ok_or(RouteError::NoRoute)?;
    let f = facts.for_router(listener, req, plane, exclude);
    let health = Guarded {
        pools: &plane.pools,
        draw,
    };
    decide_route(&plane.snap.topology, route, &f, &health)
}

/// The gateway's answer when no unit can take the request.
pub fn route_error(e: RouteError) -> GwError {
    match e {
        RouteError::NoRoute => GwError::NoRoute,
        RouteError::NoUnit { .. } => GwError::NoUnit,
        RouteError::HopLimit { .. } => GwError::HopLimit,
    }
}

/// A request sent away from home because home's breaker refused it counts
/// as refused there (the breaker's `requests`).
fn count_throttled(shared: &Shared, d: &Decision, plane: &Plane, draw: f64) {
    if d.target == d.home {
        return;
    }
    let health = Guarded {
        pools: &plane.pools,
        draw,
    };
    if !health.throttled(d.home, d.service) {
        return;
    }
    if let Some(pool) = plane.pools.get(d.home, d.service) {
        pool.guard.breaker.refused(&pool.resilience.breaker);
        let topo = &plane.snap.topology;
        let labels = [
            topo.unit(d.home).name.as_str(),
            topo.services[d.service.index()].as_str(),
        ];
        let m = &shared.metrics.resilience.breaker_refused;
        m.with_label_values(&labels).inc();
    }
}

/// The routed request's limits: its deadline (the route's, else its
/// service's, else the gateway's; shortened by the client's own) and body
/// limit. A declared body over the limit is refused before a byte of it is
/// read.
fn limits(
    shared: &Shared,
    ctx: &mut Ctx,
    req: &RequestHeader,
    route: &Route,
) -> Result<(), GwError> {
    let cfg = &shared.cfg;
    let mut total = Duration::from_millis(route.timeout_ms.unwrap_or(cfg.request_timeout_ms));
    match deadline::of_request(req) {
        Ok(Some((asked, source))) => {
            total = total.min(asked);
            ctx.deadline_source = Some(source);
        }
        Ok(None) => {}
        Err(deadline::BadTimeout) => return Err(GwError::BadRequest(InputError::BadTimeout)),
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
