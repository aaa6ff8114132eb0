//! The errors the gateway answers itself, and the one table that says, for
//! each, its HTTP status, its `error` code (the JSON `error` field and the
//! `x-unit-error` header), its message (the JSON `message` and the
//! `grpc-message`) and its gRPC status (grpc/doc/statuscodes.md).

use crate::auth::jwt::AuthError;
use crate::quota::gate::Exceeded;

/// An error answered by the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GwError {
    NotReady,
    /// The request line or `Host` breaks the edge input rules.
    BadRequest(unit_router::InputError),
    /// A request head the framework could not parse.
    MalformedHead,
    NoRoute,
    /// A route takes this path but not this method: the `Allow` value.
    MethodNotAllowed(String),
    /// A `CONNECT` request: the gateway is no forward proxy.
    ConnectUnsupported,
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
    /// The client was too slow sending its request body.
    RequestTimeout,
    /// The client was too slow sending its request head.
    HeadTimeout,
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

/// gRPC status codes the gateway answers with.
mod grpc {
    pub const CANCELLED: u8 = 1;
    pub const INVALID_ARGUMENT: u8 = 3;
    pub const DEADLINE_EXCEEDED: u8 = 4;
    pub const PERMISSION_DENIED: u8 = 7;
    pub const RESOURCE_EXHAUSTED: u8 = 8;
    pub const UNIMPLEMENTED: u8 = 12;
    pub const INTERNAL: u8 = 13;
    pub const UNAVAILABLE: u8 = 14;
    pub const UNAUTHENTICATED: u8 = 16;
}

/// One row of the table: everything an answer says about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub status: u16,
    pub code: &'static str,
    pub grpc: u8,
    pub message: &'static str,
}

const fn row(status: u16, code: &'static str, grpc: u8, message: &'static str) -> Row {
    Row {
        status,
        code,
        grpc,
        message,
    }
}

/// The table: one row per error.
#[rustfmt::skip]
mod table {
    use super::grpc as g;
    use super::{row, Row};

    pub const NOT_READY: Row = row(503, "not_ready", g::UNAVAILABLE, "the gateway has no valid topology yet");
    /// Its message is the input rule's.
    pub const BAD_REQUEST: Row = row(400, "bad_request", g::INVALID_ARGUMENT, "the request breaks the edge input rules");
    pub const MALFORMED_HEAD: Row = row(400, "bad_request", g::INVALID_ARGUMENT, "the request head is malformed");
    pub const NO_ROUTE: Row = row(404, "no_route", g::UNIMPLEMENTED, "no route matches this request");
    pub const METHOD_NOT_ALLOWED: Row = row(405, "method_not_allowed", g::UNIMPLEMENTED, "this route does not take this method");
    pub const CONNECT_UNSUPPORTED: Row = row(405, "method_not_allowed", g::UNIMPLEMENTED, "CONNECT is not supported");
    pub const NO_UNIT: Row = row(503, "no_unit_available", g::UNAVAILABLE, "no unit can serve this request right now");
    pub const HOP_LIMIT: Row = row(503, "hop_limit", g::INTERNAL, "the request reached the hop limit between units");
    pub const HEADERS_TOO_LARGE: Row = row(431, "headers_too_large", g::RESOURCE_EXHAUSTED, "request headers are too large");
    pub const PAYLOAD_TOO_LARGE: Row = row(413, "payload_too_large", g::RESOURCE_EXHAUSTED, "the request body is larger than this route takes");
    pub const DEADLINE: Row = row(504, "deadline_exceeded", g::DEADLINE_EXCEEDED, "the request's time ran out before an upstream answered");
    pub const UPSTREAM_UNAVAILABLE: Row = row(502, "upstream_unavailable", g::UNAVAILABLE, "the upstream service could not be reached");
    pub const UPSTREAM_TIMEOUT: Row = row(504, "upstream_timeout", g::DEADLINE_EXCEEDED, "the upstream service did not answer in time");
    pub const UPSTREAM_ERROR: Row = row(502, "upstream_error", g::UNAVAILABLE, "the upstream service sent a malformed answer or broke the connection");
    pub const INTERNAL: Row = row(500, "internal_error", g::INTERNAL, "internal error");
    pub const CLIENT_CLOSED: Row = row(499, "client_closed", g::CANCELLED, "the client closed the connection");
    pub const REQUEST_TIMEOUT: Row = row(408, "request_timeout", g::DEADLINE_EXCEEDED, "the request was not received in time");
    pub const HEAD_TIMEOUT: Row = row(408, "request_timeout", g::DEADLINE_EXCEEDED, "the request headers were not received in time");
    pub const TOKEN_MISSING: Row = row(401, "unauthorized", g::UNAUTHENTICATED, "this route requires a bearer token");
    pub const TOKEN_INVALID: Row = row(401, "invalid_token", g::UNAUTHENTICATED, "the bearer token is not valid");
    pub const CREDENTIAL_MALFORMED: Row = row(400, "invalid_request", g::INVALID_ARGUMENT, "the Authorization header is malformed (one header, \"Bearer <token>\")");
    pub const FORBIDDEN: Row = row(403, "forbidden", g::PERMISSION_DENIED, "the token does not grant access to this route");
    pub const TOO_MANY_REQUESTS: Row = row(429, "rate_limited", g::RESOURCE_EXHAUSTED, "too many requests: the route's quota is exhausted");
    pub const OVERLOADED: Row = row(503, "overloaded", g::UNAVAILABLE, "the service is overloaded; retry after a moment");
}

impl GwError {
    /// This error's row of the table.
    pub fn row(&self) -> Row {
        match self {
            GwError::NotReady => table::NOT_READY,
            GwError::BadRequest(e) => Row {
                message: e.message(),
                ..table::BAD_REQUEST
            },
            GwError::MalformedHead => table::MALFORMED_HEAD,
            GwError::NoRoute => table::NO_ROUTE,
            GwError::MethodNotAllowed(_) => table::METHOD_NOT_ALLOWED,
            GwError::ConnectUnsupported => table::CONNECT_UNSUPPORTED,
            GwError::NoUnit => table::NO_UNIT,
            GwError::HopLimit => table::HOP_LIMIT,
            GwError::HeadersTooLarge => table::HEADERS_TOO_LARGE,
            GwError::PayloadTooLarge => table::PAYLOAD_TOO_LARGE,
            GwError::Deadline => table::DEADLINE,
            GwError::UpstreamUnavailable => table::UPSTREAM_UNAVAILABLE,
            GwError::UpstreamTimeout => table::UPSTREAM_TIMEOUT,
            GwError::UpstreamError => table::UPSTREAM_ERROR,
            GwError::Internal => table::INTERNAL,
            GwError::ClientClosed => table::CLIENT_CLOSED,
            GwError::RequestTimeout => table::REQUEST_TIMEOUT,
            GwError::HeadTimeout => table::HEAD_TIMEOUT,
            GwError::TokenMissing => table::TOKEN_MISSING,
            GwError::TokenInvalid(_) => table::TOKEN_INVALID,
            GwError::CredentialMalformed => table::CREDENTIAL_MALFORMED,
            GwError::Forbidden => table::FORBIDDEN,
            GwError::TooManyRequests(_) => table::TOO_MANY_REQUESTS,
            GwError::Overloaded => table::OVERLOADED,
        }
    }

    pub fn status(&self) -> u16 {
        self.row().status
    }

    pub fn code(&self) -> &'static str {
        self.row().code
    }

    pub fn message(&self) -> &'static str {
        self.row().message
    }

    pub fn grpc_status(&self) -> u8 {
        self.row().grpc
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

    /// A failure to get an answer from upstreams (as opposed to the
    /// client's fault or a refusal of the gateway's own): a real upstream
    /// answer held back for a retry beats it.
    pub fn is_upstream_failure(&self) -> bool {
        matches!(
            self,
            GwError::NoUnit
                | GwError::Deadline
                | GwError::UpstreamUnavailable
                | GwError::UpstreamTimeout
                | GwError::UpstreamError
        )
    }

    /// The client's doing (gone, too slow, over a limit): logged at debug,
    /// never blamed on an upstream.
    pub fn is_client_fault(&self) -> bool {
        matches!(
            self,
            GwError::ClientClosed | GwError::PayloadTooLarge | GwError::RequestTimeout
        )
    }

    /// What the client needs beyond the code and message to act on the
    /// error: why a token was refused, the quota exhausted.
    pub fn detail(&self) -> Option<String> {
        match self {
            GwError::TokenInvalid(e) => Some(e.to_string()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_one_status() {
        let all = [
            GwError::NotReady,
            GwError::MalformedHead,
            GwError::NoRoute,
            GwError::ConnectUnsupported,
            GwError::NoUnit,
            GwError::HopLimit,
            GwError::HeadersTooLarge,
            GwError::PayloadTooLarge,
            GwError::Deadline,
            GwError::UpstreamUnavailable,
            GwError::UpstreamTimeout,
            GwError::UpstreamError,
            GwError::Internal,
            GwError::ClientClosed,
            GwError::RequestTimeout,
            GwError::HeadTimeout,
            GwError::TokenMissing,
            GwError::CredentialMalformed,
            GwError::Forbidden,
            GwError::Overloaded,
        ];
        let mut seen = std::collections::HashMap::new();
        for e in all {
            let r = e.row();
            assert!((100..=599).contains(&r.status), "{e:?}");
            assert!(!r.message.is_empty() && (1..=16).contains(&r.grpc), "{e:?}");
            let prev = seen.insert(r.code, r.status);
            assert!(
                prev.is_none_or(|s| s == r.status),
                "{} has two statuses",
                r.code
            );
        }
    }
}
