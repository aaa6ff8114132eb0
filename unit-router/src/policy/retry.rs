//! Retry rules: whether a request an upstream may already have seen may be
//! sent once more, and which upstream statuses a route retries elsewhere.

use crate::routes::Route;

/// The request header that opts a non-idempotent request into retries.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// What is known about a request that an upstream may already have seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resend {
    /// The method is idempotent (RFC 9110 §9.2.2).
    pub idempotent_method: bool,
    /// The request carries an [`IDEMPOTENCY_KEY`] header.
    pub idempotency_key: bool,
    /// The whole body is still buffered, so it can be sent again.
    pub body_buffered: bool,
}

/// Whether the request may be sent once more after bytes of it reached an
/// upstream: an idempotent method, or an `Idempotency-Key` on a route with
/// `retry_with_idempotency_key`; and the whole body still buffered.
pub fn may_send_again(route: &Route, r: Resend) -> bool {
    let keyed = r.idempotency_key && route.retry_with_idempotency_key;
    (r.idempotent_method || keyed) && r.body_buffered
}

/// Whether an upstream answer with `status` is one the route retries
/// elsewhere (`route.retry_on` is sorted).
pub fn retryable_status(route: &Route, status: u16) -> bool {
    route.retry_on.binary_search(&status).is_ok()
}
