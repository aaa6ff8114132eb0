//! The quota check of a routed request: every quota of the route counts
//! the request under its key, and all must allow it. What each key counts:
//!
//! - `ip`: the client IP (the trusted-proxy rule of `x-forwarded-for`).
//! - `user`: the verified JWT user on a route with auth; else the user key
//!   the router uses (the routing token's shard, else the user header),
//!   which a client can change at will; with none, the client IP. An
//!   unverified user key lets a client rotate keys to escape a per-user
//!   quota: pair such a quota with an `ip` quota.
//! - `tenant`: the verified tenant claim; with none, as `user`.
//! - `route`: the route itself (one counter for all its callers).
//!
//! The answer carries the `RateLimit-Policy` and `RateLimit` fields of
//! draft-ietf-httpapi-ratelimit-headers-09 for the quota closest to its
//! limit, and on refusal `Retry-After`.

use std::net::IpAddr;
use std::time::Duration;

use unit_router::policy::QuotaSubject;
use unit_router::routes::Route;
use unit_router::spec::QuotaKey;

use super::index::{Quota, Quotas};
use super::limiter::Verdict;
use crate::auth::jwt::Identity;

/// What a request is counted as.
pub struct Caller<'a> {
    pub ip: Option<IpAddr>,
    pub identity: Option<&'a Identity>,
    /// Who a per-user quota counts (`unit_router::policy::quota_subject`).
    pub subject: QuotaSubject<'a>,
}

/// The quota fields of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// `RateLimit-Policy`.
    pub policy: String,
    /// `RateLimit`.
    pub state: String,
}

/// A refusal: 429 with these fields and `Retry-After` seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    pub quota: String,
    pub limits: Limits,
    pub retry_after_s: u64,
}

/// Count the request against every quota of `route`.
pub fn check(
    route: &Route,
    quotas: &Quotas,
    caller: &Caller<'_>,
) -> Result<Option<Limits>, Exceeded> {
    let mut closest: Option<(u32, &Quota, u64)> = None;
    for name in &route.quotas {
        let Some(q) = quotas.get(name) else { continue };
        let verdict = count(q, route, caller);
        match verdict {
            Verdict::Allowed { remaining } => {
                if closest.is_none_or(|(r, _, _)| remaining < r) {
                    closest = Some((remaining, q, refill_s(q, remaining)));
                }
            }
            Verdict::Refused { retry_after } => {
                let s = ceil_s(retry_after);
                return Err(Exceeded {
                    quota: q.name.clone(),
                    limits: limits(q, 0, s),
                    retry_after_s: s,
                });
            }
        }
    }
    Ok(closest.map(|(r, q, t)| limits(q, r, t)))
}

fn count(q: &Quota, route: &Route, c: &Caller<'_>) -> Verdict {
    let l = &q.limiter;
    let by_user = || match c.subject {
        QuotaSubject::User(u) => l.check(("user", u)),
        QuotaSubject::Unverified(k) => l.check(("unverified", k)),
        QuotaSubject::Address => l.check(("ip", c.ip)),
    };
    match q.spec.key {
        QuotaKey::Ip => l.check(("ip", c.ip)),
        QuotaKey::Route => l.check(("route", route.name.as_str())),
        QuotaKey::User => by_user(),
        QuotaKey::Tenant => match c.identity.and_then(|i| i.tenant.as_deref()) {
            Some(t) => l.check(("tenant", t)),
            None => by_user(),
        },
    }
}

fn limits(q: &Quota, remaining: u32, reset_s: u64) -> Limits {
    Limits {
        policy: q.policy_header.clone(),
        state: format!("\"{}\";r={remaining};t={reset_s}", q.name),
    }
}

/// Seconds until a key with `remaining` left has its whole burst back.
fn refill_s(q: &Quota, remaining: u32) -> u64 {
    let s = q.limiter.share;
    let missing = u64::from(s.burst.saturating_sub(remaining));
    (missing * u64::from(s.per_s)).div_ceil(u64::from(s.rate.max(1)))
}

fn ceil_s(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}
