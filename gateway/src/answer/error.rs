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

impl GwError {
    /// This error's row of the table.
    pub fn row(&self) -> Row {
        use grpc::*;
        match self {
            GwError::NotReady => row(
                503,
                "not_ready",
                UNAVAILABLE,
                "the gateway has no valid topology yet",
            ),
            GwError::BadRequest(e) => row(400, "bad_request", INVALID_ARGUMENT, e.message()),
            GwError::MalformedHead => row(
                400,
                "bad_request",
                INVALID_ARGUMENT,
                "the request head is malformed",
            ),
            GwError::NoRoute => row(
                404,
                "no_route",
                UNIMPLEMENTED,
                "no route matches this request",
            ),
            GwError::MethodNotAllowed(_) => row(
                405,
                "method_not_allowed",
                UNIMPLEMENTED,
                "this route does not take this method",
            ),
            GwError::ConnectUnsupported => row(
                405,
                "method_not_allowed",
                UNIMPLEMENTED,
                "CONNECT is not supported",
            ),
            GwError::NoUnit => row(
                503,
                "no_unit_available",
                UNAVAILABLE,
                "no unit can serve this request right now",
            ),
            GwError::HopLimit => row(
                503,
                "hop_limit",
                INTERNAL,
                "the request reached the hop limit between units",
            ),
            GwError::HeadersTooLarge => row(
                431,
                "headers_too_large",
                RESOURCE_EXHAUSTED,
                "request headers are too large",
            ),
            GwError::PayloadTooLarge => row(
                413,
                "payload_too_large",
                RESOURCE_EXHAUSTED,
                "the request body is larger than this route takes",
            ),
            GwError::Deadline => row(
                504,
                "deadline_exceeded",
                DEADLINE_EXCEEDED,
                "the request's time ran out before an upstream answered",
            ),
            GwError::UpstreamUnavailable => row(
                502,
                "upstream_unavailable",
                UNAVAILABLE,
                "the upstream service could not be reached",
            ),
            GwError::UpstreamTimeout => row(
                504,
                "upstream_timeout",
                DEADLINE_EXCEEDED,
                "the upstream service did not answer in time",
            ),
            GwError::UpstreamError => row(
                502,
                "upstream_error",
                UNAVAILABLE,
                "the upstream service sent a malformed answer or broke the connection",
            ),
            GwError::Internal => row(500, "internal_error", INTERNAL, "internal error"),
            GwError::ClientClosed => row(
                499,
                "client_closed",
                CANCELLED,
                "the client closed the connection",
            ),
            GwError::RequestTimeout => row(
                408,
                "request_timeout",
                DEADLINE_EXCEEDED,
                "the request was not received in time",
            ),
            GwError::HeadTimeout => row(
                408,
                "request_timeout",
                DEADLINE_EXCEEDED,
                "the request headers were not received in time",
            ),
            GwError::TokenMissing => row(
                401,
                "unauthorized",
                UNAUTHENTICATED,
                "this route requires a bearer token",
            ),
            GwError::TokenInvalid(_) => row(
                401,
                "invalid_token",
                UNAUTHENTICATED,
                "the bearer token is not valid",
            ),
            GwError::CredentialMalformed => row(
                400,
                "invalid_request",
                INVALID_ARGUMENT,
                "the Authorization header is malformed (one header, \"Bearer <token>\")",
            ),
            GwError::Forbidden => row(
                403,
                "forbidden",
                PERMISSION_DENIED,
                "the token does not grant access to this route",
            ),
            GwError::TooManyRequests(_) => row(
                429,
                "rate_limited",
                RESOURCE_EXHAUSTED,
                "too many requests: the route's quota is exhausted",
            ),
            GwError::Overloaded => row(
                503,
                "overloaded",
                UNAVAILABLE,
                "the service is overloaded; retry after a moment",
            ),
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
