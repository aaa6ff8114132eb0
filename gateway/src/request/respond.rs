//! Errors the gateway answers itself, mapped to HTTP in this one place:
//! JSON `{"error":"<code>","message":"..."}` with the right status.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

/// An error answered by the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GwError {
    NotReady,
    /// The request line or `Host` breaks the edge input rules.
    BadRequest(unit_router::InputError),
    NoRoute,
    /// A route takes this path but not this method: the `Allow` value.
    MethodNotAllowed(String),
    NoUnit,
    HopLimit,
    HeadersTooLarge,
    /// The body is over the route's limit.
    PayloadTooLarge,
    /// The route's total time ran out across attempts.
    Deadline,
    UpstreamUnavailable,
    UpstreamTimeout,
    UpstreamError,
    Internal,
    /// The client went away before an answer (counted as 499, never sent).
    ClientClosed,
    /// The client was too slow sending its request.
    RequestTimeout,
}

impl GwError {
    pub fn status(&self) -> u16 {
        match self {
            GwError::BadRequest(_) => 400,
            GwError::NoRoute => 404,
            GwError::MethodNotAllowed(_) => 405,
            GwError::ClientClosed => 499,
            GwError::RequestTimeout => 408,
            GwError::HeadersTooLarge => 431,
            GwError::PayloadTooLarge => 413,
            GwError::Deadline => 504,
            GwError::UpstreamUnavailable | GwError::UpstreamError => 502,
            GwError::NotReady | GwError::NoUnit | GwError::HopLimit => 503,
            GwError::UpstreamTimeout => 504,
            GwError::Internal => 500,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            GwError::NotReady => "not_ready",
            GwError::BadRequest(_) => "bad_request",
            GwError::NoRoute => "no_route",
            GwError::MethodNotAllowed(_) => "method_not_allowed",
            GwError::ClientClosed => "client_closed",
            GwError::RequestTimeout => "request_timeout",
            GwError::NoUnit => "no_unit_available",
            GwError::HopLimit => "hop_limit",
            GwError::HeadersTooLarge => "headers_too_large",
            GwError::PayloadTooLarge => "payload_too_large",
            GwError::Deadline => "deadline_exceeded",
            GwError::UpstreamUnavailable => "upstream_unavailable",
            GwError::UpstreamTimeout => "upstream_timeout",
            GwError::UpstreamError => "upstream_error",
            GwError::Internal => "internal_error",
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            GwError::NotReady => "the gateway has no valid topology yet",
            GwError::BadRequest(e) => e.message(),
            GwError::NoRoute => "no route matches this request",
            GwError::MethodNotAllowed(_) => "this route does not take this method",
            GwError::ClientClosed => "the client closed the connection",
            GwError::RequestTimeout => "the request was not received in time",
            GwError::NoUnit => "no unit can serve this request right now",
            GwError::HopLimit => "the request reached the hop limit between units",
            GwError::HeadersTooLarge => "request headers are too large",
            GwError::PayloadTooLarge => "the request body is larger than this route takes",
            GwError::Deadline => "the request's time ran out before an upstream answered",
            GwError::UpstreamUnavailable => "the upstream service could not be reached",
            GwError::UpstreamTimeout => "the upstream service did not answer in time",
            GwError::UpstreamError => {
                "the upstream service sent a malformed answer or broke the connection"
            }
            GwError::Internal => "internal error",
        }
    }
}

/// A JSON body.
pub fn json_body(code: &str, message: &str) -> Bytes {
    Bytes::from(serde_json::json!({ "error": code, "message": message }).to_string())
}

/// Write `err` as the whole response.
pub async fn respond(session: &mut Session, err: &GwError) -> pingora::Result<()> {
    let body = json_body(err.code(), err.message());
    let mut h = ResponseHeader::build(err.status(), Some(4))?;
    h.insert_header("content-type", "application/json")?;
    h.insert_header("content-length", body.len().to_string())?;
    h.insert_header("cache-control", "no-store")?;
    match err {
        GwError::NotReady => h.insert_header("retry-after", "1")?,
        GwError::MethodNotAllowed(allow) => h.insert_header("allow", allow.as_str())?,
        _ => {}
    }
    session.set_keepalive(None);
    session.write_response_header(Box::new(h), false).await?;
    session.write_response_body(Some(body), true).await
}

/// Write a JSON value with `status`.
pub async fn respond_json(
    session: &mut Session,
    status: u16,
    value: &serde_json::Value,
    extra: &[(&str, String)],
) -> pingora::Result<()> {
    let body = Bytes::from(value.to_string());
    let mut h = ResponseHeader::build(status, Some(4 + extra.len()))?;
    h.insert_header("content-type", "application/json")?;
    h.insert_header("content-length", body.len().to_string())?;
    h.insert_header("cache-control", "no-store")?;
    for (k, v) in extra {
        h.append_header(k.to_string(), v.as_str())?;
    }
    session.write_response_header(Box::new(h), false).await?;
    session.write_response_body(Some(body), true).await
}
