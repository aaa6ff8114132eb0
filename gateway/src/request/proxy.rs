//! The Pingora `ProxyHttp` shell: each phase hook is a few lines that hand
//! the request to its part. `request_filter` runs the admission pipeline
//! ([`super::pipeline`]); `upstream_peer` picks the next attempt's peer
//! ([`super::upstream`]); the failure hooks end attempts and ask
//! [`crate::upstream::failover`] whether to try again, recording the one
//! failure value ([`super::failure`]); the header hooks render the decision
//! ([`super::render`]); every answer the gateway makes itself goes through
//! [`crate::answer`] ([`super::reply`]); `logging` ends the request
//! ([`super::log`]).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorType};
use unit_router::policy::retryable_status;
use unit_router::Listener;

use crate::answer::{render as answers, send, GwError};
use crate::listen::signals;
use crate::request::ctx::Ctx;
use crate::request::failure::{client_fault, deadline_hit, fail, from_proxy_error, Held};
use crate::request::pipeline::{self, Admitted, Gate};
use crate::request::redirect::HttpsRedirect;
use crate::request::{bounds, locate, log, render, reply, upstream};
use crate::state::Shared;
use crate::upstream::attempt::Outcome;
use crate::upstream::failover::{has_next_target, may_send_again};

/// One listener's proxy logic.
pub struct UnitProxy {
    pub shared: Arc<Shared>,
    pub listener: Listener,
    /// `public`, `internal` or `http`.
    pub name: &'static str,
    /// On the plain listener beside an HTTPS one: the hosts sent to HTTPS.
    pub redirect: Option<Arc<HttpsRedirect>>,
}

impl UnitProxy {
    fn gate(&self) -> Gate<'_> {
        Gate {
            shared: &self.shared,
            listener: self.listener,
            name: self.name,
            redirect: self.redirect.as_deref(),
        }
    }

    /// Whether bytes of the request may be sent to an upstream once more.
    fn may_send_again(&self, session: &Session, ctx: &Ctx) -> bool {
        let (Some(plane), Some(d)) = (ctx.plane.as_ref(), ctx.decision) else {
            return false;
        };
        let route = plane.snap.topology.routes.get(d.route);
        let buffered = !session.as_ref().retry_buffer_truncated();
        may_send_again(route, session.req_header(), buffered)
    }

    /// Whether the upstream's answer `status` is to be replaced by another
    /// attempt: retryable for the route, the request may be sent again,
    /// there is somewhere else to send it, and the caps and budget allow.
    fn retry_status(&self, session: &Session, ctx: &mut Ctx, status: u16) -> bool {
        let (Some(plane), Some(d)) = (ctx.plane.clone(), ctx.decision) else {
            return false;
        };
        if !retryable_status(plane.snap.topology.routes.get(d.route), status)
            || !self.may_send_again(session, ctx)
        {
            return false;
        }
        let (req, facts, draw) = (session.req_header(), &ctx.facts, ctx.draw);
        let route = |ex: &[_]| pipeline::decide(self.listener, req, facts, &plane, draw, ex);
        has_next_target(&plane.pools, &d, &mut ctx.attempts, route)
            && upstream::retry_limits(&self.shared).allow(&ctx.attempts, ctx.time_left(), "status")
    }

    /// End the attempt without blaming the upstream: `err` is the answer,
    /// and there is no retry.
    fn cancel_attempt(&self, ctx: &mut Ctx, err: GwError, mut e: Box<Error>) -> Box<Error> {
        ctx.end_attempt(&self.shared, Outcome::Cancelled, false);
        ctx.failure.answer_with(err);
        e.set_retry(false);
        e
    }
}

#[async_trait]
impl ProxyHttp for UnitProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new(self.listener)
    }

    async fn early_request_filter(&self, _session: &mut Session, _ctx: &mut Ctx) -> Result<()> {
        // The head is in: its size and time limits stop applying.
        signals::head_read();
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        match pipeline::admit(self.gate(), session, ctx) {
            Ok(Admitted::Proxy) => {
                bounds::sends(&self.shared.cfg, session);
                bounds::body_reads(&self.shared.cfg, session, ctx).map(|()| false)
            }
            Ok(Admitted::Redirect(location)) => {
                let id = &ctx.ids.request_id;
                send::send(session, answers::redirect(&location)?, id).await?;
                Ok(true)
            }
            Ok(Admitted::Locate) => locate::answer(&self.shared, session, ctx)
                .await
                .map(|()| true),
            Err(err) => reply::refuse(session, ctx, err).await,
        }
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        upstream::next_peer(&self.shared, self.listener, session.req_header(), ctx).await
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if session.was_upgraded() {
            // A WebSocket connection's frames are not a request body: bounded
            // by the connection limits and the idle time, not the body limit.
            bounds::upgraded(&self.shared.cfg, session);
            return Ok(());
        }
        // Counted as it streams: a body without a declared length (chunked)
        // is cut off at the limit.
        ctx.body_seen += body.as_ref().map_or(0, |b| b.len() as u64);
        if ctx.body_seen > ctx.body_limit {
            let why = "request body over the route's limit";
            return Err(fail(&mut ctx.failure, GwError::PayloadTooLarge, why));
        }
        bounds::body_reads(&self.shared.cfg, session, ctx)
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
        ctx.upstream_answered(&self.shared);
        if status >= 400 && self.retry_status(session, ctx, status) {
            // Not passed on: the request goes elsewhere. The answer is held
            // in case no later attempt gets a real one.
            if let Some(decision) = ctx.decision {
                let answer = Box::new(resp.clone());
                ctx.failure.hold(Held { answer, decision });
            }
            let e = Error::explain(ErrorType::HTTPStatus(status), "retryable upstream status");
            return Err(e);
        }
        if resp.status == http::StatusCode::SWITCHING_PROTOCOLS {
            bounds::upgraded(&self.shared.cfg, session);
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.head_taken(resp);
        ctx.saw_grpc_status(&resp.headers);
        render::response(&self.shared, ctx, resp)
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<std::time::Duration>> {
        ctx.taken(body.as_ref().map_or(0, Bytes::len));
        Ok(None)
    }

    fn upstream_response_trailer_filter(
        &self,
        _session: &mut Session,
        trailers: &mut http::HeaderMap,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.saw_grpc_status(trailers);
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if deadline_hit(ctx.time_left(), &e) {
            return self.cancel_attempt(ctx, GwError::Deadline, e);
        }
        // Nothing reached the upstream: any method may be retried.
        ctx.end_attempt(&self.shared, Outcome::Failed, false);
        ctx.attempt_failed(from_proxy_error(&e));
        let retry =
            upstream::retry_limits(&self.shared).allow(&ctx.attempts, ctx.time_left(), "connect");
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
        if ctx.failure.retry_pending() {
            // A retryable status, already cleared for another attempt.
            ctx.end_attempt(&self.shared, Outcome::Failed, true);
            ctx.failure.attempt_failed(None);
            e.set_retry(true);
            return e;
        }
        if client_fault(&ctx.failure, &e) {
            // The client went away or sent garbage: nobody is left to answer.
            ctx.end_attempt(&self.shared, Outcome::ClientGone, false);
            e.set_retry(false);
            return e;
        }
        if deadline_hit(ctx.time_left(), &e) {
            return self.cancel_attempt(ctx, GwError::Deadline, e);
        }
        if e.etype() == &ErrorType::ReadTimedout && !session.is_body_done() {
            // The upstream still waited for the body: the client stopped.
            return self.cancel_attempt(ctx, GwError::RequestTimeout, e);
        }
        ctx.end_attempt(&self.shared, Outcome::Failed, true);
        ctx.attempt_failed(from_proxy_error(&e));
        // Bytes may have reached the upstream: sent again only if the route's
        // policy allows, with the whole body still buffered.
        let retry = self.may_send_again(session, ctx)
            && ctx.upstream_status.is_none()
            && upstream::retry_limits(&self.shared).allow(
                &ctx.attempts,
                ctx.time_left(),
                "transport",
            );
        e.set_retry(retry);
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        reply::failed(&self.shared, session, e, ctx).await
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, _e: &Error) -> bool {
        // Every failed request is logged by `logging`.
        true
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        log::request_done(&self.shared, self.name, session, e, ctx);
    }
}
