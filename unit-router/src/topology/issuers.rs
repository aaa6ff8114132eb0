//! `auth/issuers/<name>`: JWT issuers (issuer, audiences, algorithms, JWK
//! set inline and/or where to fetch it, claims, token limits). Every
//! inline key must be usable ([`crate::jwks`]); the parsed sets are kept
//! for the gateway.

use std::collections::BTreeMap;

use super::problems::Problems;
use crate::jwks::{self, KeySet};
use crate::spec::IssuerSpec;

/// Most clock skew an issuer may allow, seconds.
pub const MAX_LEEWAY_S: u64 = 300;
/// Largest token an issuer may allow, bytes (a header line's worth).
pub const MAX_TOKEN_BYTES: usize = 64 * 1024;
/// Bounds of `jwks_refresh_s`.
pub const JWKS_REFRESH_S: std::ops::RangeInclusive<u64> = 1..=86_400;

/// Check every issuer, in name order; the inline key set of each valid one.
pub(super) fn check(
    issuers: &BTreeMap<String, IssuerSpec>,
    p: &mut Problems,
) -> BTreeMap<String, KeySet> {
    let mut keys = BTreeMap::new();
    for (name, i) in issuers {
        let key = format!("auth/issuers/{name}");
        let before = p.count();
        let set = check_issuer(&key, i, p);
        if p.count() == before {
            keys.insert(name.clone(), set.unwrap_or_default());
        } else {
            p.mark_broken(key);
        }
    }
    keys
}

fn check_issuer(key: &str, i: &IssuerSpec, p: &mut Problems) -> Option<KeySet> {
    if i.iss.is_empty() {
        p.invalid(key, "iss", "must not be empty");
    }
    if i.user_claim.is_empty() {
        p.invalid(key, "user_claim", "must not be empty");
    }
    if i.tenant_claim.as_deref() == Some("") {
        p.invalid(key, "tenant_claim", "must not be empty (or leave it out)");
    }
    if i.leeway_s > MAX_LEEWAY_S {
        p.invalid(
            key,
            "leeway_s",
            format!("{} is over {MAX_LEEWAY_S}", i.leeway_s),
        );
    }
    if !(1..=MAX_TOKEN_BYTES).contains(&i.max_token_bytes) {
        p.invalid(
            key,
            "max_token_bytes",
            format!("{} is not within 1..={MAX_TOKEN_BYTES}", i.max_token_bytes),
        );
    }
    if !JWKS_REFRESH_S.contains(&i.jwks_refresh_s) {
        p.invalid(
            key,
            "jwks_refresh_s",
            format!(
                "{} is not within {}..={}",
                i.jwks_refresh_s,
                JWKS_REFRESH_S.start(),
                JWKS_REFRESH_S.end()
            ),
        );
    }
    if let Some(c) = &i.cookie {
        let token_char = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if c.is_empty() || !c.bytes().all(token_char) {
            p.invalid(key, "cookie", format!("{c:?} is not a cookie name"));
        }
    }
    check_uri(key, i, p);
    if i.jwks.is_none() && i.jwks_uri.is_none() {
        p.invalid(
            key,
            "jwks",
            "give the keys inline (jwks), a jwks_uri, or both",
        );
    }
    let algs = match jwks::algorithms(&i.algs, i.shared_secret) {
        Ok(a) => a,
        Err(e) => {
            p.invalid(key, "algs", e.to_string());
            return None;
        }
    };
    let set = i.jwks.as_ref().map(|v| KeySet::parse(v, &algs));
    match set {
        Some(Err(e)) => {
            p.invalid(key, "jwks", e.to_string());
            None
        }
        Some(Ok(s)) => Some(s),
        None => Some(KeySet::default()),
    }
}

fn check_uri(key: &str, i: &IssuerSpec, p: &mut Problems) {
    let Some(uri) = &i.jwks_uri else { return };
    if i.shared_secret {
        p.invalid(
            key,
            "jwks_uri",
            "a shared-secret issuer keeps its keys inline, never fetched",
        );
    }
    let rest = uri
        .strip_prefix("https://")
        .or_else(|| uri.strip_prefix("http://"));
    let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or(""));
    if host.is_none_or(str::is_empty) || uri.bytes().any(|b| b.is_ascii_whitespace()) {
        p.invalid(
            key,
            "jwks_uri",
            format!("{uri:?} is not an http:// or https:// URL"),
        );
    }
}
