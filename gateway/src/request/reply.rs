//! The request side's own answers, all through [`crate::answer`]: a
//! refusal answered from the hooks ([`refuse`]), the answer to a request
//! that failed on its way to the upstreams ([`failed`]), and a held
//! upstream answer that beats the gateway's error ([`held`]).

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::{FailToProxy, Session};
use pingora::{Error, Result};

use crate::answer::{send, Answer, GwError};
use crate::listen::signals;
use crate::request::ctx::Ctx;
use crate::request::failure::{downstream_dead, from_proxy_error, Held};
use crate::request::render;
use crate::state::Shared;

/// Answer `err` from the gateway itself; the request ends there.
pub async fn refuse(session: &mut Session, ctx: &mut Ctx, err: GwError) -> Result<bool> {
    // Recorded first: logged and counted even if the client is gone.
    ctx.failure.answer_with(err.clone());
    let h = &session.req_header().headers;
    let body_follows = h.contains_key(http::header::CONTENT_LENGTH)
        || h.contains_key(http::header::TRANSFER_ENCODING)
        // A CONNECT's tunnel bytes may follow its head.
        || err == GwError::ConnectUnsupported;
    if body_follows {
        // Answered before the body was read: the close lingers.
        signals::linger_on_close();
    }
    send::error(session, &err, &ctx.ids.request_id).await?;
    Ok(true)
}

/// The answer to a request that failed after admission (`fail_to_proxy`):
/// the gateway's error recorded for it, or read off `e`; or, when that is
/// a failure to get an answer from upstreams, the last real answer held.
pub async fn failed(
    shared: &Shared,
    session: &mut Session,
    e: &Error,
    ctx: &mut Ctx,
) -> FailToProxy {
    let err = if downstream_dead(e) {
        GwError::ClientClosed
    } else {
        ctx.failure
            .answer()
            .cloned()
            .unwrap_or_else(|| from_proxy_error(e))
    };
    // Nobody to answer, or the answer already started: nothing to send.
    let code = if err == GwError::ClientClosed || session.response_written().is_some() {
        0
    } else if let Some(h) = ctx.failure.take_held_for(&err) {
        held(shared, session, ctx, h).await
    } else {
        let _ = send::error(session, &err, &ctx.ids.request_id).await;
        if matches!(err, GwError::PayloadTooLarge | GwError::RequestTimeout) {
            // The body is still arriving: linger so the answer is read.
            signals::linger_on_close();
            session.as_downstream_mut().shutdown().await;
        }
        err.status()
    };
    // A refusal answered before any upstream attempt (shed by the limit)
    // keeps a body-less request's connection: shedding stays cheap.
    let reuse = code != 0 && err.keeps_connection() && session.is_body_empty();
    ctx.failure.answer_with(err);
    FailToProxy {
        error_code: code,
        can_reuse_downstream: reuse,
    }
}

/// Answer with a held upstream answer: its status and headers (framing
/// replaced), an empty body, the gateway's own headers for the unit that
/// gave it. Its status, or 0 when the client is gone.
async fn held(shared: &Shared, session: &mut Session, ctx: &mut Ctx, h: Held) -> u16 {
    ctx.decision = Some(h.decision);
    let mut head: ResponseHeader = *h.answer;
    head.remove_header(&http::header::TRANSFER_ENCODING);
    head.remove_header(&http::header::CONTENT_LENGTH);
    let status = head.status.as_u16();
    let written = async {
        head.insert_header(http::header::CONTENT_LENGTH, "0")?;
        render::response(shared, ctx, &mut head)?;
        let answer = Answer {
            head,
            body: Bytes::new(),
            keeps_connection: false,
        };
        send::send(session, answer, &ctx.ids.request_id).await
    };
    match written.await {
        Ok(()) => status,
        Err(_) => 0,
    }
}
