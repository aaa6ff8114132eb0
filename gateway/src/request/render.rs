//! Rendering the decision onto the wire: the upstream request's dye,
//! forwarding and deadline headers, and the response's `x-unit-served-by`, routing cookie
//! and GSLB hint. Everything is read off the final decision; nothing is
//! decided here.

use pingora::http::{RequestHeader, ResponseHeader};
use pingora::Result;
use unit_router::{hint_value, token, Affinity, RouteToken, Topology};

use crate::request::ctx::Ctx;
use crate::request::{deadline, headers};
use crate::state::Shared;

/// Dye, forwarding and verified-identity headers of the upstream request.
pub fn upstream_request(shared: &Shared, ctx: &Ctx, up: &mut RequestHeader) -> Result<()> {
    let (Some(d), Some(plane)) = (ctx.decision, ctx.plane.as_ref()) else {
        return Ok(());
    };
    let topo = &plane.snap.topology;
    let exp = ctx.facts.now + shared.cfg.dye_ttl_s as i64;
    headers::strip_baggage(up);
    if let Some(dye) = d.dye(topo, ctx.facts.dye.as_ref(), exp) {
        let existing = headers::baggage(up);
        up.remove_header(&headers::BAGGAGE);
        up.insert_header(
            "baggage",
            dye.merge_into(existing.as_deref(), &shared.keys.load()),
        )?;
        shared.metrics.dyes.with_label_values(&["set"]).inc();
    }
    forwarding(ctx, up)?;
    identity(ctx, up)?;
    // What is left of the request's time, for the unit to pass on.
    if let Some(left) = ctx.time_left() {
        up.insert_header(deadline::X_REQUEST_TIMEOUT_MS, deadline::millis_value(left))?;
        if ctx.deadline_source == Some(deadline::Source::Grpc) {
            up.insert_header(deadline::GRPC_TIMEOUT, deadline::grpc_value(left))?;
        }
    }
    if let Some(id) = &ctx.facts.identity {
        up.insert_header(headers::X_AUTH_USER, id.user.as_str())?;
        up.insert_header(headers::X_AUTH_ISSUER, id.issuer.as_str())?;
        if let Some(t) = &id.tenant {
            up.insert_header(headers::X_AUTH_TENANT, t.as_str())?;
        }
    }
    Ok(())
}

/// `x-request-id`, and the trace context: a `traceparent` naming this
/// attempt's span (a child of the gateway's), `tracestate` passed on only
/// with a trace that was continued (`access/ids.rs`).
fn identity(ctx: &Ctx, up: &mut RequestHeader) -> Result<()> {
    up.insert_header("x-request-id", ctx.ids.request_id.as_str())?;
    let trace = &ctx.ids.trace;
    up.insert_header("traceparent", trace.traceparent(ctx.attempt_span))?;
    if !trace.continued() {
        up.remove_header("tracestate");
    }
    Ok(())
}

/// `x-forwarded-for`, `x-forwarded-proto` and `forwarded`. A trusted
/// proxy's are kept, its chains extended with the gateway's hop; from any
/// other peer they were stripped at the edge, so the gateway's stand alone.
/// The scheme is the one the request came over (`https` over TLS, on
/// HTTP/1.1 and HTTP/2 alike), except that a trusted proxy's
/// `x-forwarded-proto` names the client's.
fn forwarding(ctx: &Ctx, up: &mut RequestHeader) -> Result<()> {
    let facts = &ctx.facts;
    if let Some(peer) = facts.peer {
        let xff = headers::forwarded_for_upstream(up, peer);
        up.insert_header(headers::X_FORWARDED_FOR, xff)?;
    }
    if up.headers.get(&headers::X_FORWARDED_PROTO).is_none() {
        up.insert_header(headers::X_FORWARDED_PROTO, headers::scheme(facts.tls))?;
    }
    // The gateway's element describes its own hop when a trusted proxy
    // sent a `forwarded` chain; when it sent none, the element is the only
    // one a unit reads, so it carries the scheme the proxy's
    // `x-forwarded-proto` names (a TLS-terminating load balancer) rather
    // than contradict it.
    let chained = up.headers.contains_key(&headers::FORWARDED);
    let https = match up.headers.get(&headers::X_FORWARDED_PROTO) {
        Some(v) if !chained => v.as_bytes().eq_ignore_ascii_case(b"https"),
        _ => facts.tls,
    };
    let forwarded = headers::forwarded_upstream(up, facts.peer, https);
    up.insert_header(headers::FORWARDED, forwarded)?;
    Ok(())
}

/// The gateway's response headers; an upstream's own `x-unit-*` are dropped.
pub fn response(shared: &Shared, ctx: &Ctx, resp: &mut ResponseHeader) -> Result<()> {
    let names: Vec<http::HeaderName> = resp
        .headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-unit-"))
        .cloned()
        .collect();
    for n in names {
        resp.remove_header(&n);
    }
    resp.insert_header("x-request-id", ctx.ids.request_id.as_str())?;
    let (Some(d), Some(plane)) = (ctx.decision, ctx.plane.as_ref()) else {
        return Ok(());
    };
    let topo = &plane.snap.topology;
    resp.insert_header("x-unit-served-by", topo.unit(d.target).name.as_str())?;
    if let Some(a) = d.token_to_issue() {
        let (tok, _) = mint(shared, topo, &a, ctx.facts.now);
        resp.append_header(
            "set-cookie",
            token::set_cookie(&tok, topo.cluster.token_ttl_s),
        )?;
    }
    if let Some(u) = d.hint() {
        resp.insert_header("x-unit-hint", hint_value(topo, u, shared.cfg.hint_ttl_s))?;
    }
    if let Some(l) = &ctx.limits {
        resp.insert_header("ratelimit-policy", l.policy.as_str())?;
        resp.insert_header("ratelimit", l.state.as_str())?;
    }
    // HSTS over HTTPS only: a browser ignores it on plain HTTP anyway.
    let hsts = ctx
        .facts
        .route
        .and_then(|r| topo.routes.get(r).hsts.as_deref())
        .filter(|_| ctx.facts.tls);
    if let Some(v) = hsts {
        resp.insert_header("strict-transport-security", v)?;
    }
    Ok(())
}

/// A signed routing token recording `a`, and its expiry (unix seconds).
pub fn mint(shared: &Shared, topo: &Topology, a: &Affinity, now: i64) -> (String, i64) {
    let exp = now + topo.cluster.token_ttl_s as i64;
    let keys = shared.keys.load();
    let tok = RouteToken::new(a.shard, &topo.unit(a.unit).name, topo.epoch, exp, &keys);
    shared.metrics.token.issued.inc();
    (tok.encode(&keys), exp)
}
