//! Writing an answer into a proxy session: the one way the request path
//! answers a client itself. An answer sent before a request body was read
//! closes the connection (the body would otherwise be drained first,
//! whatever its size or pace), and a gRPC status goes out trailers-only.
//!
//! An answer without a body is written as one header task that ends the
//! stream: the framework's `write_response_header` drops the end-of-stream
//! flag on HTTP/2, and a stream left open when the request ends is reset
//! with CANCEL, which a gRPC client reads as `CANCELLED` whatever status
//! the headers carried.

use pingora::protocols::http::HttpTask;
use pingora::proxy::Session;
use pingora::Result;

use super::error::GwError;
use super::render::{self, Answer, Form};

/// The form of the answers to the request in `session`.
pub fn form_of(session: &Session) -> Form {
    let ct = session
        .req_header()
        .headers
        .get(http::header::CONTENT_TYPE)
        .map(|v| v.as_bytes());
    Form::of(ct, session.as_downstream().is_http2())
}

/// Whether the request came with a body the gateway has not read.
pub fn has_unread_body(session: &Session) -> bool {
    let req = &session.req_header().headers;
    req.contains_key(http::header::TRANSFER_ENCODING)
        || req
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

/// Write `answer` as the whole response, with the request's id.
pub async fn send(session: &mut Session, mut answer: Answer, request_id: &str) -> Result<()> {
    if !request_id.is_empty() {
        answer.head.insert_header("x-request-id", request_id)?;
    }
    if !answer.keeps_connection || has_unread_body(session) {
        session.set_keepalive(None);
    }
    if answer.body.is_empty() {
        let head = HttpTask::Header(Box::new(answer.head), true);
        return session.write_response_tasks(vec![head]).await.map(|_| ());
    }
    session
        .write_response_header(Box::new(answer.head), false)
        .await?;
    session.write_response_body(Some(answer.body), true).await
}

/// Answer `err` in the request's form.
pub async fn error(session: &mut Session, err: &GwError, request_id: &str) -> Result<()> {
    let answer = render::error(err, form_of(session), request_id)?;
    send(session, answer, request_id).await
}
