//! `auth/issuers/<name>`: JWT issuers (issuer, audiences, algorithms, JWK
//! set, claims). Validated on their own; no route may use them yet (see
//! [`crate::TopologyError::NotEnforced`]).

use std::collections::BTreeMap;

use super::problems::Problems;
use crate::spec::IssuerSpec;

/// Signature algorithms an issuer may list (asymmetric only).
const ALGS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// Check every issuer, in name order.
pub(super) fn check(issuers: &BTreeMap<String, IssuerSpec>, p: &mut Problems) {
    for (name, i) in issuers {
        check_issuer(&format!("auth/issuers/{name}"), i, p);
    }
}

fn check_issuer(key: &str, i: &IssuerSpec, p: &mut Problems) {
    if i.iss.is_empty() {
        p.invalid(key, "iss", "must not be empty");
    }
    if i.algs.is_empty() {
        p.invalid(key, "algs", "list at least one algorithm");
    }
    for a in &i.algs {
        if !ALGS.contains(&a.as_str()) {
            p.invalid(
                key,
                "algs",
                format!("{a:?} is not one of {}", ALGS.join(", ")),
            );
        }
    }
    if !i.jwks.get("keys").is_some_and(serde_json::Value::is_array) {
        p.invalid(key, "jwks", "must be a JWK set: {\"keys\":[...]}");
    }
    if i.user_claim.is_empty() {
        p.invalid(key, "user_claim", "must not be empty");
    }
}
