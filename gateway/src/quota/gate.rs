//! The quota check of a routed request: every quota of the route counts
//! the request under its key, and all must allow it. What each key counts:
//!
//! - `ip`: the client IP (the trusted-proxy rule of `x-forwarded-for`).
//! - `user`: the verified JWT user on a route with auth; else the user
//!   header (`cluster.user_header`), which a client can change at will;
//!   with none, the client IP. The routing token is never a key: every
//!   user of a shard has the same one. An unverified user key lets a
//!   client rotate keys to escape a per-user quota: pair such a quota with
//!   an `ip` quota.
//! - `tenant`: the verified tenant claim; with none, as `user`.
//! - `route`: the route itself (one counter for all its callers).
//!
//! Counting spends a request, so the order matters: the `ip` quotas count
//! first, then the others as listed; the first refusal stops the count. A
//! request refused by an address quota spends nothing of a per-user one
//! (nor creates its key).
//!
//! The answer carries the `RateLimit-Policy` and `RateLimit` fields of
//! draft-ietf-httpapi-ratelimit-headers-09 for the quota closest to its
//! limit (the first listed of equals), and on refusal `Retry-After`.

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

/// Count the request against every quota of `route`, in [`counting_order`].
pub fn check(
    route: &Route,
    quotas: &Quotas,
    caller: &Caller<'_>,
) -> Result<Option<Limits>, Exceeded> {
    // (remaining, place in the route's list, quota)
    let mut closest: Option<(u32, usize, &Quota)> = None;
    for (place, q) in counting_order(route, quotas) {
        match count(q, route, caller) {
            Verdict::Allowed { remaining } => {
                if closest.is_none_or(|(r, p, _)| (remaining, place) < (r, p)) {
                    closest = Some((remaining, place, q));
                }
            }
            Verdict::Refused { retry_after } => return Err(exceeded(q, retry_after)),
        }
    }
    Ok(closest.map(|(r, _, q)| limits(q, r, refill_s(q, r))))
}

/// The route's quotas in the order they count: those keyed by `ip` first,
/// then the rest as listed; each with its place in the route's list.
fn counting_order<'q>(
    route: &'q Route,
    quotas: &'q Quotas,
) -> impl Iterator<Item = (usize, &'q Quota)> + 'q {
    let listed = move |by_address: bool| {
        let found = move |(place, name): (usize, &String)| Some((place, &**quotas.get(name)?));
        let wanted = move |(_, q): &(usize, &Quota)| (q.spec.key == QuotaKey::Ip) == by_address;
        route
            .quotas
            .iter()
            .enumerate()
            .filter_map(found)
            .filter(wanted)
    };
    listed(true).chain(listed(false))
}

/// The refusal by `q`, its next request `retry_after` away.
fn exceeded(q: &Quota, retry_after: Duration) -> Exceeded {
    let s = ceil_s(retry_after);
    Exceeded {
        quota: q.name.clone(),
        limits: limits(q, 0, s),
        retry_after_s: s,
    }
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
