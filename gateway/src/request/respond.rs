//! Errors the gateway answers itself, mapped to HTTP in this one place:
//! JSON `{"error":"<code>","message":"..."}` with the right status; to a
//! gRPC client (`content-type: application/grpc...`), a gRPC status in a
//! trailers-only answer (HTTP 200, `grpc-status`, `grpc-message`).

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use crate::auth::jwt::AuthError;
use crate::quota::gate::Exceeded;

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
    /// The route requires a token and none was sent (401, no `error`).
    TokenMissing,
    /// The token does not verify (401 `invalid_token`).
    TokenInvalid(AuthError),
    /// A malformed credential: two `Authorization` headers, an empty
    /// bearer token (400 `invalid_request`).
    CredentialMalformed,
    /// The token lacks a claim the route requires (403).
    Forbidden,
    /// A quota is exceeded (429).
    TooManyRequests(Exceeded),
    /// The service's concurrency limit shed the request (503).
    Overloaded,
}

impl GwError {
    pub fn status(&self) -> u16 {
        match self {
            GwError::BadRequest(_) | GwError::CredentialMalformed => 400,
            GwError::TokenMissing | GwError::TokenInvalid(_) => 401,
            GwError::Forbidden => 403,
            GwError::TooManyRequests(_) => 429,
            GwError::NoRoute => 404,
            GwError::MethodNotAllowed(_) => 405,
            GwError::ClientClosed => 499,
            GwError::RequestTimeout => 408,
            GwError::HeadersTooLarge => 431,
            GwError::PayloadTooLarge => 413,
            GwError::Deadline => 504,
            GwError::UpstreamUnavailable | GwError::UpstreamError => 502,
            GwError::NotReady | GwError::NoUnit | GwError::HopLimit | GwError::Overloaded => 503,
            GwError::UpstreamTimeout => 504,
            GwError::Internal => 500,
        }
    }

    /// Refusals of a well-formed request that the client may follow with
    /// another on the same connection (when it sent no body).
    pub fn keeps_connection(&self) -> bool {
        matches!(
            self,
            GwError::TokenMissing
                | GwError::TokenInvalid(_)
                | GwError::Forbidden
                | GwError::TooManyRequests(_)
                | GwError::Overloaded
        )
    }

    pub fn code(&self) -> &'static str {
        match self {
            GwError::NotReady => "not_ready",
            GwError::BadRequest(_) => "bad_request",
            GwError::TokenMissing => "unauthorized",
            GwError::TokenInvalid(_) => "invalid_token",
            GwError::CredentialMalformed => "invalid_request",
            GwError::Forbidden => "forbidden",
            GwError::TooManyRequests(_) => "rate_limited",
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
            GwError::Overloaded => "overloaded",
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            GwError::NotReady => "the gateway has no valid topology yet",
            GwError::BadRequest(e) => e.message(),
            GwError::TokenMissing => "this route requires a bearer token",
            GwError::TokenInvalid(_) => "the bearer token is not valid",
            GwError::CredentialMalformed => {
                "the Authorization header is malformed (one header, \"Bearer <token>\")"
            }
            GwError::Forbidden => "the token does not grant access to this route",
            GwError::TooManyRequests(_) => "too many requests: the route's quota is exhausted",
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
            GwError::Overloaded => "the service is overloaded; retry after a moment",
        }
    }
}

/// A JSON body.
pub fn json_body(code: &str, message: &str) -> Bytes {
    Bytes::from(serde_json::json!({ "error": code, "message": message }).to_string())
}

/// The JSON body of `err`: its code and message, and what the client needs
/// to act on it (why a token was refused, the quota exhausted).
fn error_body(err: &GwError) -> Bytes {
    let mut v = serde_json::json!({ "error": err.code(), "message": err.message() });
    match err {
        GwError::TokenInvalid(e) => v["detail"] = e.to_string().into(),
        GwError::TooManyRequests(x) => {
            v["quota"] = x.quota.as_str().into();
            v["retry_after_s"] = x.retry_after_s.into();
        }
        _ => {}
    }
    Bytes::from(v.to_string())
}

/// `WWW-Authenticate` of an auth refusal (RFC 6750 section 3).
fn challenge(err: &GwError) -> Option<String> {
    Some(match err {
        GwError::TokenMissing => "Bearer".to_owned(),
        GwError::TokenInvalid(e) => {
            format!("Bearer error=\"invalid_token\", error_description=\"{e}\"")
        }
        GwError::CredentialMalformed => {
            "Bearer error=\"invalid_request\", error_description=\"the Authorization header is malformed\"".to_owned()
        }
        GwError::Forbidden => {
            "Bearer error=\"insufficient_scope\", error_description=\"the token lacks a claim this route requires\"".to_owned()
        }
        _ => return None,
    })
}

impl GwError {
    /// The gRPC status code of this answer (grpc/doc/statuscodes.md).
    pub fn grpc_status(&self) -> u8 {
        match self {
            GwError::ClientClosed => 1,                                 // CANCELLED
            GwError::BadRequest(_) | GwError::CredentialMalformed => 3, // INVALID_ARGUMENT
            GwError::Deadline | GwError::UpstreamTimeout | GwError::RequestTimeout => 4, // DEADLINE_EXCEEDED
            GwError::Forbidden => 7, // PERMISSION_DENIED
            GwError::TooManyRequests(_) | GwError::PayloadTooLarge | GwError::HeadersTooLarge => 8, // RESOURCE_EXHAUSTED
            GwError::NoRoute | GwError::MethodNotAllowed(_) => 12, // UNIMPLEMENTED
            GwError::HopLimit | GwError::Internal => 13,           // INTERNAL
            GwError::NotReady
            | GwError::NoUnit
            | GwError::UpstreamUnavailable
            | GwError::UpstreamError
            | GwError::Overloaded => 14, // UNAVAILABLE
            GwError::TokenMissing | GwError::TokenInvalid(_) => 16, // UNAUTHENTICATED
        }
    }
}

/// Whether the request is a gRPC call (its errors are gRPC statuses).
pub fn is_grpc(session: &Session) -> bool {
    session
        .req_header()
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// `grpc-message`: percent-encoded outside printable ASCII (the gRPC
/// HTTP/2 spec).
fn grpc_message(m: &str) -> String {
    let mut out = String::with_capacity(m.len());
    for b in m.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether the request came with a body the gateway has not read. Such a
/// body would be drained before the connection is reused: an answer sent
/// before it closes the connection instead, whatever the body's size or
/// pace.
fn has_unread_body(session: &Session) -> bool {
    let req = &session.req_header().headers;
    req.contains_key(http::header::TRANSFER_ENCODING)
        || req
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

/// Write `err` as the whole response.
pub async fn respond(session: &mut Session, err: &GwError) -> pingora::Result<()> {
    let grpc = is_grpc(session);
    let body = if grpc { Bytes::new() } else { error_body(err) };
    let mut h = if grpc {
        let mut h = ResponseHeader::build(200, Some(8))?;
        h.insert_header("content-type", "application/grpc")?;
        h.insert_header("grpc-status", err.grpc_status().to_string())?;
        let message = match err {
            GwError::TokenInvalid(e) => format!("{}: {e}", err.message()),
            _ => err.message().to_owned(),
        };
        h.insert_header("grpc-message", grpc_message(&message))?;
        h.insert_header("x-unit-error", err.code())?;
        if !session.as_downstream().is_http2() {
            // HTTP/1 (gRPC-Web or a misdirected client): an empty body,
            // not one delimited by closing the connection.
            h.insert_header("content-length", "0")?;
        }
        h
    } else {
        let mut h = ResponseHeader::build(err.status(), Some(6))?;
        h.insert_header("content-type", "application/json")?;
        h.insert_header("content-length", body.len().to_string())?;
        h
    };
    h.insert_header("cache-control", "no-store")?;
    match err {
        GwError::NotReady | GwError::Overloaded => h.insert_header("retry-after", "1")?,
        GwError::MethodNotAllowed(allow) => h.insert_header("allow", allow.as_str())?,
        GwError::TooManyRequests(x) => {
            h.insert_header("retry-after", x.retry_after_s.to_string())?;
            h.insert_header("ratelimit-policy", x.limits.policy.as_str())?;
            h.insert_header("ratelimit", x.limits.state.as_str())?;
        }
        _ => {}
    }
    if let Some(c) = challenge(err) {
        h.insert_header("www-authenticate", c)?;
    }
    if !err.keeps_connection() || has_unread_body(session) {
        session.set_keepalive(None);
    }
    if grpc {
        // Trailers-only: the status rides on the one HEADERS frame.
        return session.write_response_header(Box::new(h), true).await;
    }
    session.write_response_header(Box::new(h), false).await?;
    session.write_response_body(Some(body), true).await
}

/// A 308 to `location` (the plain listener sending a host to HTTPS).
pub async fn respond_redirect(session: &mut Session, location: &str) -> pingora::Result<()> {
    let mut h = ResponseHeader::build(308, Some(3))?;
    h.insert_header("location", location)?;
    h.insert_header("content-length", "0")?;
    h.insert_header("cache-control", "no-store")?;
    if has_unread_body(session) {
        session.set_keepalive(None);
    }
    session.write_response_header(Box::new(h), true).await
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
