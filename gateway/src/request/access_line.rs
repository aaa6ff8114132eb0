//! The access-log line and the spans of a request that reached the hooks
//! ([`crate::access`]): read off the session and the request's context
//! when it ends, nothing decided here.

use pingora::proxy::Session;
use unit_router::Reason;

use crate::access::entry::{millis, Stamp, TraceId};
use crate::access::spans::{RequestSpan, Spans};
use crate::access::{Entry, Flags};
use crate::request::ctx::Ctx;
use crate::request::headers;

/// How the request ended, as the log line says it.
pub struct Ending<'a> {
    pub listener: &'static str,
    pub status: u16,
    pub route: &'a str,
    pub client_gone: bool,
    pub send_timeout: bool,
}

/// The line of the request in `session`.
pub fn entry(session: &Session, ctx: &Ctx, end: &Ending<'_>, with_user: bool) -> Box<Entry> {
    let req = session.req_header();
    let error = ctx.failure.answer();
    let decision = ctx.decision.zip(ctx.plane.as_ref());
    let unit = |u| decision.map(|(_, p)| p.snap.topology.unit(u).name.clone());
    let digest = session.digest();
    let tls = digest
        .and_then(|d| d.ssl_digest.as_ref())
        .map(|s| s.version.to_string());
    Box::new(Entry {
        ts: Stamp(ctx.arrived),
        request_id: ctx.ids.request_id.clone(),
        trace_id: Some(TraceId(ctx.ids.trace.trace_id)).filter(|_| !ctx.ids.request_id.is_empty()),
        listener: end.listener,
        proto: proto(req.version),
        tls,
        method: req.method.as_str().to_owned(),
        host: headers::host(req).to_owned(),
        path: req.uri.path().to_owned(),
        route: Some(end.route.to_owned()).filter(|r| !r.is_empty()),
        status: end.status,
        grpc_status: ctx.grpc_status.or_else(|| grpc_answer(session, error)),
        bytes_in: session.body_bytes_read() as u64,
        bytes_out: session.body_bytes_sent() as u64,
        duration_ms: millis(ctx.started.elapsed()),
        upstream_ms: ctx.upstream_time.map(millis),
        shard: ctx.decision.and_then(|d| d.shard),
        home: decision.and_then(|(d, _)| unit(d.home)),
        unit: decision.and_then(|(d, _)| unit(d.target)),
        reason: ctx.decision.map(|d| d.reason.as_str()),
        attempts: ctx.attempts.count,
        lane: None,
        client: ctx.facts.client_ip,
        user: with_user.then(|| ctx.facts.identity.as_ref().map(|i| i.user.clone())),
        error: error.map(|e| e.code()),
        flags: flags(ctx, end),
    })
}

/// Queue the spans of the request in `session` (sampled, spans exported).
pub fn spans(spans: &Spans, session: &Session, ctx: &Ctx, end: &Ending<'_>) {
    let req = session.req_header();
    let decision = ctx.decision.zip(ctx.plane.as_ref());
    let unit = |u| decision.map(|(_, p)| p.snap.topology.unit(u).name.as_str());
    spans.record(RequestSpan {
        trace: &ctx.ids.trace,
        method: req.method.as_str(),
        route: end.route,
        path: req.uri.path(),
        host: headers::host(req),
        client: ctx.facts.client_ip.map(|ip| ip.to_string()),
        protocol: match req.version {
            http::Version::HTTP_2 => "2",
            http::Version::HTTP_10 => "1.0",
            _ => "1.1",
        },
        status: end.status,
        start: ctx.arrived,
        duration: ctx.started.elapsed(),
        shard: ctx.decision.and_then(|d| d.shard),
        home: decision.and_then(|(d, _)| unit(d.home)),
        unit: decision.and_then(|(d, _)| unit(d.target)),
        reason: ctx.decision.map(|d| d.reason.as_str()),
        attempts: &ctx.spans,
    });
}

/// Every flag of the request: those its attempts set, its answer's, and
/// how its decision and its client ended.
fn flags(ctx: &Ctx, end: &Ending<'_>) -> Flags {
    let mut f = ctx.flags;
    if let Some(e) = ctx.failure.answer() {
        f.set(Flags::of_error(e));
    }
    match ctx.decision.map(|d| d.reason) {
        Some(Reason::Failover) => f.set(Flags::FAILOVER),
        Some(Reason::Drain) => f.set(Flags::DRAIN),
        _ => {}
    }
    if end.client_gone {
        f.set(Flags::CLIENT_GONE);
    }
    if end.send_timeout {
        f.set(Flags::SEND_TIMEOUT);
    }
    f
}

/// The gRPC status of an answer the gateway made to a gRPC call.
fn grpc_answer(session: &Session, error: Option<&crate::answer::GwError>) -> Option<u32> {
    let grpc = session
        .req_header()
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    error.filter(|_| grpc).map(|e| u32::from(e.grpc_status()))
}

fn proto(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_2 => "h2",
        http::Version::HTTP_10 => "http/1.0",
        http::Version::HTTP_09 => "http/0.9",
        _ => "http/1.1",
    }
}
