//! Whom a per-user quota counts: the verified JWT user; else the user key
//! the request carries (the user header), which a client can change at
//! will; else the client address. A routing token is never a quota key:
//! its shard is the same for every user of the shard.

/// An unverified user key: the value of the user header
/// (`cluster.user_header`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserKey<'a>(pub &'a str);

/// The unverified user key a request carries: the user header's value,
/// when not empty.
pub fn user_key(header: Option<&str>) -> Option<UserKey<'_>> {
    header.filter(|h| !h.is_empty()).map(UserKey)
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
