//! One admin request on a connection: read its head, answer it, hand the
//! connection back for the next one ([`crate::listen::idle`] parks it).
//!
//! Pingora's `ServeHttp` apps log every failed head read at ERROR
//! (`pingora_core::apps::http_app`), so each client that drops mid-head, and
//! each head the guard refuses, was an ERROR line. Here, as on the proxy
//! listeners, the connection pipeline counts what it refuses and a failed
//! read is logged at debug; a head the framework cannot parse gets the
//! gateway's JSON 400 through the head guard.

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use pingora::ErrorType;

use super::Admin;
use crate::access::entry::{millis, Stamp};
use crate::access::ids::new_request_id;
use crate::access::{Entry, Flags};
use crate::listen::signals;

#[async_trait]
impl HttpServerApp for Admin {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if !read_head(&mut session).await {
            return None;
        }
        signals::head_read();
        if *shutdown.borrow() {
            session.set_keepalive(None);
        }
        if !session.is_body_empty() {
            // No admin endpoint takes a body: answer without reading it,
            // and close (lingering, so the client reads the answer).
            session.set_keepalive(None);
            signals::linger_on_close();
        }
        let started = (std::time::Instant::now(), std::time::SystemTime::now());
        let request_id = new_request_id(rand::random());
        let req = session.req_header();
        let authorization = req
            .headers
            .get(http::header::AUTHORIZATION)
            .map(http::HeaderValue::as_bytes);
        let path = req.uri.path();
        let mut answer = if self.shared.admin_tokens.allows(path, authorization) {
            self.answer(path)
        } else {
            super::unauthorized()
        };
        if let Ok(v) = http::HeaderValue::from_str(&request_id) {
            answer.headers_mut().insert("x-request-id", v);
        }
        let status = answer.status().as_u16();
        let written = write(&mut session, answer).await;
        self.log(&session, status, started, request_id, written);
        if !written {
            return None;
        }
        let settings = HttpPersistentSettings::for_session(&session);
        match session.finish().await {
            Ok(reused) => reused.map(|s| ReusedHttpStream::from_reusable_stream(s, settings)),
            Err(e) => {
                tracing::debug!(error = %e, "admin connection not reusable");
                None
            }
        }
    }
}

impl Admin {
    /// The request's access-log line (`listener` `admin`).
    fn log(
        &self,
        session: &ServerSession,
        status: u16,
        (t0, arrived): (std::time::Instant, std::time::SystemTime),
        request_id: String,
        written: bool,
    ) {
        let access = &self.shared.access;
        if !access.enabled() {
            return;
        }
        let req = session.req_header();
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        access.write(Box::new(Entry {
            ts: Stamp(arrived),
            request_id,
            listener: "admin",
            proto: "http/1.1",
            method: req.method.as_str().to_owned(),
            host: crate::request::headers::host(req).to_owned(),
            path: req.uri.path().to_owned(),
            status: if written { status } else { 499 },
            error: (status == 401).then_some("unauthorized"),
            bytes_out: session.body_bytes_sent() as u64,
            duration_ms: millis(t0.elapsed()),
            client,
            flags: if written {
                Flags::default()
            } else {
                Flags::CLIENT_GONE
            },
            ..Entry::default()
        }));
    }
}

/// Read a request head; `false` when there is none to answer. A head the
/// framework cannot parse is answered 400 (the head guard writes the
/// gateway's JSON in place of the framework's); a head the guard refused
/// (431, 408) was answered and counted there; a client gone is just gone.
async fn read_head(session: &mut ServerSession) -> bool {
    match session.read_request().await {
        Ok(read) => read,
        Err(e) => {
            tracing::debug!(error = %e, "admin request head not read");
            if matches!(e.etype, ErrorType::InvalidHTTPHeader) {
                let _ = session.respond_error(400).await;
            }
            session.shutdown().await;
            false
        }
    }
}

/// Write `answer`; `false` if the client is gone.
async fn write(session: &mut ServerSession, answer: Response<Vec<u8>>) -> bool {
    let (parts, body) = answer.into_parts();
    let head: ResponseHeader = parts.into();
    let written = match session.write_response_header(Box::new(head)).await {
        Ok(()) => session.write_response_body(body.into(), true).await,
        Err(e) => Err(e),
    };
    if let Err(e) = written {
        tracing::debug!(error = %e, "admin answer not written");
        return false;
    }
    true
}
