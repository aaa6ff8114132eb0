//! Request policies the gateway applies around a routing decision, as pure
//! functions over the route and what is known of the request:
//!
//! - `retry`: whether a request may be sent again, and which upstream
//!   statuses a route retries elsewhere.
//! - `criticality`: how much a request matters when its service sheds.
//! - `quota_key`: whom a per-user quota counts.
//! - `unrouted`: 405 versus 404 when no route takes a request.

pub mod criticality;
pub mod quota_key;
pub mod retry;
pub mod unrouted;

pub use criticality::criticality;
pub use quota_key::{quota_subject, user_key, QuotaSubject, UserKey};
pub use retry::{may_send_again, retryable_status, Resend, IDEMPOTENCY_KEY};
pub use unrouted::{unrouted, Unrouted};
