//! The end of every request: its last attempt closed, its failure logged
//! (at debug when the client is at fault, at warn otherwise), and counted in
//! `unitgate_requests_total` and `unitgate_request_duration_seconds`; a
//! response ended because the client took nothing is counted in
//! `unitgate_send_timeouts_total`.

use pingora::proxy::Session;
use pingora::{Error, ErrorSource};

use crate::listen::send_watch::is_send_timeout;
use crate::request::access_line::{self, Ending};
use crate::request::ctx::Ctx;
use crate::request::failure::client_fault;
use crate::state::Shared;
use crate::upstream::attempt::Outcome;

/// Log and count the request in `session`.
pub fn request_done(
    shared: &Shared,
    listener: &'static str,
    session: &Session,
    e: Option<&Error>,
    ctx: &mut Ctx,
) {
    let answered = ctx.upstream_status.is_some();
    let outcome = match e {
        Some(e) if client_fault(&ctx.failure, e) => Outcome::ClientGone,
        Some(_) => Outcome::Failed,
        None if ctx.upstream_status.is_some_and(|s| s >= 500) => Outcome::Failed,
        None => Outcome::Ok,
    };
    ctx.end_attempt(shared, outcome, answered);
    if answered {
        count_served(ctx);
    }
    let error = ctx.failure.answer();
    // A client gone before the answer is 499 (nginx's convention).
    let client_gone = matches!(e, Some(e) if *e.esource() == ErrorSource::Downstream);
    let status = session
        .response_written()
        .map(|r| r.status.as_u16())
        .or_else(|| error.map(|e| e.status()))
        .unwrap_or(if client_gone { 499 } else { 0 });
    let code = error.map_or("", |e| e.code());
    let (route, reason) = match (&ctx.plane, ctx.decision, ctx.facts.route) {
        (Some(p), Some(d), _) => (
            p.snap.topology.routes.get(d.route).name.as_str(),
            d.reason.as_str(),
        ),
        (Some(p), None, Some(r)) => (p.snap.topology.routes.get(r).name.as_str(), code),
        _ => ("", code),
    };
    let send_timeout = e.filter(|e| *e.esource() == ErrorSource::Downstream && is_send_timeout(e));
    let end = Ending {
        listener,
        status,
        route,
        client_gone,
        send_timeout: send_timeout.is_some(),
    };
    record(shared, session, ctx, &end);
    if let Some(e) = send_timeout {
        shared
            .metrics
            .send_timeouts
            .with_label_values(&[listener])
            .inc();
        let (request_id, trace_id) = (&ctx.ids.request_id, ctx.ids.trace.trace_id());
        tracing::debug!(error = %e, route, request_id, trace_id, "response ended: the client took nothing for send_timeout_ms");
    }
    if let Some(e) = e {
        if client_fault(&ctx.failure, e) {
            let (request_id, trace_id) = (&ctx.ids.request_id, ctx.ids.trace.trace_id());
            tracing::debug!(error = %e, status, route, request_id, trace_id, "client-side error");
        } else {
            let (request_id, trace_id) = (&ctx.ids.request_id, ctx.ids.trace.trace_id());
            let unit = ctx.target_name();
            tracing::warn!(error = %e, status, route, unit, request_id, trace_id, "request failed");
        }
    }
    // Status codes are 100-999, or 0 when nothing was answered.
    let code = http::StatusCode::from_u16(status).ok();
    let code = code.as_ref().map_or("0", http::StatusCode::as_str);
    let m = &shared.metrics.requests;
    m.with_label_values(&[listener, route, reason, code]).inc();
    let d = &shared.metrics.duration;
    d.with_label_values(&[listener, route])
        .observe(ctx.started.elapsed().as_secs_f64());
}

/// The request's access-log line, and its spans when it is sampled.
fn record(shared: &Shared, session: &Session, ctx: &Ctx, end: &Ending<'_>) {
    if shared.access.enabled() {
        let with_user = shared.cfg.observe.access_log_user;
        shared
            .access
            .write(access_line::entry(session, ctx, end, with_user));
    }
    if let Some(spans) = shared.spans.as_ref().filter(|_| ctx.ids.trace.sampled) {
        access_line::spans(spans, session, ctx, end);
    }
}

/// A unit answered the request: counted for its (unit, service), and as
/// dyed when it arrived with a verified dye.
fn count_served(ctx: &Ctx) {
    use std::sync::atomic::Ordering::Relaxed;
    let (Some(p), Some(d)) = (&ctx.plane, ctx.decision) else {
        return;
    };
    if let Some(pool) = p.pools.get(d.target, d.service) {
        pool.guard.served.fetch_add(1, Relaxed);
        if ctx.facts.dye.is_some() {
            pool.guard.dyed.fetch_add(1, Relaxed);
        }
    }
}
