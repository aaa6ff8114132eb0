//! Whom a per-user quota counts: the verified JWT user; else the unverified
//! user key the router uses (the routing token's shard, else the user
//! header), which a client can change at will; else the client address.

/// An unverified user key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UserKey<'a> {
    /// The shard of a valid routing token.
    Shard(u32),
    /// The value of the user header (`cluster.user_header`).
    Header(&'a str),
}

/// The unverified user key a request carries: the routing token's shard,
/// else the user header's value when not empty.
pub fn user_key<'a>(token_shard: Option<u32>, header: Option<&'a str>) -> Option<UserKey<'a>> {
    match token_shard {
        Some(s) => Some(UserKey::Shard(s)),
        None => header.filter(|h| !h.is_empty()).map(UserKey::Header),
    }
}

/// Who a per-user quota counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaSubject<'a> {
    /// The verified JWT user.
    User(&'a str),
    /// An unverified user key.
    Unverified(UserKey<'a>),
    /// The client address.
    Address,
}

/// Who a per-user quota counts: the verified user, else the unverified
/// user key, else the client address.
pub fn quota_subject<'a>(
    verified_user: Option<&'a str>,
    key: Option<UserKey<'a>>,
) -> QuotaSubject<'a> {
    match (verified_user, key) {
        (Some(u), _) => QuotaSubject::User(u),
        (None, Some(k)) => QuotaSubject::Unverified(k),
        (None, None) => QuotaSubject::Address,
    }
}
