//! The auth check of a routed request: the token (an `Authorization:
//! Bearer` header, else a cookie one of the route's issuers names), the
//! issuer among those the route trusts, the verification (remembered per
//! worker thread), and the route's required claims. Pure apart from the
//! per-thread cache: the answer for a request is a function of its header,
//! the route, the issuers and the time.

use std::sync::Arc;

use http::header::AUTHORIZATION;
use pingora::http::RequestHeader;
use serde_json::Value;
use unit_router::routes::Route;
use unit_router::spec::AuthMode;

use super::cache;
use super::fetch::Fetched;
use super::index::AuthIndex;
use super::jwt::{unverified_iss, AuthError, Identity, Issuer};
use crate::request::headers;

/// Why a request is refused by the route's auth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No token on a route that requires one (401, no `error`).
    Missing,
    /// More than one `Authorization` header, or a bearer credential that is
    /// empty (400 `invalid_request`).
    BadRequest,
    /// The token does not verify (401 `invalid_token`).
    Invalid(AuthError),
    /// The token verifies but lacks a claim the route requires (403
    /// `insufficient_scope`); the claim's name.
    Forbidden(String),
}

/// The request's verified identity under `route`: `None` on a route without
/// auth, or an optional one called without a token.
pub fn check(
    route: &Route,
    req: &RequestHeader,
    index: &AuthIndex,
    fetched: &Fetched,
    now: i64,
) -> Result<Option<Arc<Identity>>, Refusal> {
    if route.auth == AuthMode::None {
        return Ok(None);
    }
    let Some(token) = token(route, req, index)? else {
        return match route.auth {
            AuthMode::Required => Err(Refusal::Missing),
            _ => Ok(None),
        };
    };
    let issuer = pick(route, token, index, now)?;
    let id = match issuer.map(|i| (i, cache::verify(i, token, now))) {
        Some((_, Ok(id))) => id,
        Some((i, Err(AuthError::UnknownKeyId))) => {
            if i.spec().jwks_uri.is_some() {
                fetched.unknown_kid();
            }
            return Err(Refusal::Invalid(AuthError::UnknownKeyId));
        }
        Some((_, Err(e))) => return Err(Refusal::Invalid(e)),
        None => return Err(Refusal::Invalid(AuthError::WrongIssuer)),
    };
    for (claim, want) in &route.require_claims {
        if !claim_holds(id.claims.get(claim), want) {
            return Err(Refusal::Forbidden(claim.clone()));
        }
    }
    Ok(Some(id))
}

/// The bearer token: from the one `Authorization` header, else from a
/// cookie named by one of the route's issuers. A header with another
/// scheme (`Basic`) is no token.
fn token<'a>(
    route: &Route,
    req: &'a RequestHeader,
    index: &AuthIndex,
) -> Result<Option<&'a str>, Refusal> {
    let mut auth = req.headers.get_all(AUTHORIZATION).iter();
    if let Some(v) = auth.next() {
        if auth.next().is_some() {
            return Err(Refusal::BadRequest);
        }
        let v = v.to_str().map_err(|_| Refusal::BadRequest)?;
        let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            let t = rest.trim_matches(' ');
            if t.is_empty() || t.contains(' ') {
                return Err(Refusal::BadRequest);
            }
            return Ok(Some(t));
        }
    }
    for name in &route.issuers {
        let cookie = index.get(name).and_then(|i| i.spec().cookie.as_deref());
        if let Some(t) = cookie.and_then(|c| headers::cookie(req, c)) {
            if !t.is_empty() {
                return Ok(Some(t));
            }
        }
    }
    Ok(None)
}

/// The issuer to verify `token` with: the route's one issuer, else one
/// that already verified this token on this thread, else the one whose
/// `iss` the token claims (the verification checks the claim).
fn pick<'a>(
    route: &Route,
    token: &str,
    index: &'a AuthIndex,
    now: i64,
) -> Result<Option<&'a Issuer>, Refusal> {
    let trusted = || route.issuers.iter().filter_map(|n| index.get(n));
    if route.issuers.len() == 1 {
        return Ok(trusted().next().map(|i| &**i));
    }
    if let Some(i) = trusted().find(|i| cache::remembered(i, token, now)) {
        return Ok(Some(i));
    }
    let Some(iss) = unverified_iss(token) else {
        return Err(Refusal::Invalid(AuthError::Malformed));
    };
    Ok(trusted().find(|i| i.iss() == iss).map(|i| &**i))
}

/// Whether a claim holds `want`: an equal string or number, a string of
/// space-separated values (`scope`) holding it, an array with an equal
/// element.
fn claim_holds(v: Option<&Value>, want: &str) -> bool {
    match v {
        Some(Value::String(s)) => s == want || s.split(' ').any(|p| p == want),
        Some(Value::Array(a)) => a
            .iter()
            .any(|e| claim_holds(Some(e), want) && !e.is_array()),
        Some(Value::Number(n)) => n.to_string() == want,
        Some(Value::Bool(b)) => b.to_string() == want,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn required_claims_match_values_lists_and_scopes() {
        assert!(claim_holds(Some(&json!("admin")), "admin"));
        assert!(claim_holds(
            Some(&json!("read orders:write")),
            "orders:write"
        ));
        assert!(!claim_holds(
            Some(&json!("read orders:writer")),
            "orders:write"
        ));
        assert!(claim_holds(Some(&json!(["a", "b"])), "b"));
        assert!(!claim_holds(Some(&json!([["b"]])), "b"));
        assert!(claim_holds(Some(&json!(true)), "true"));
        assert!(claim_holds(Some(&json!(7)), "7"));
        assert!(!claim_holds(None, "x"));
        assert!(!claim_holds(Some(&json!({"b": 1})), "b"));
    }
}
