//! JWTs already verified on this worker thread.
//!
//! A client sends the same bearer token on every request until it renews
//! it, and verifying one (an RSA or ECDSA signature, the claims) costs far
//! more than routing the request. Each worker thread remembers the tokens
//! it verified, by exact bytes and issuer ([`crate::verified`]); a token
//! seen again skips the verification and only has its expiry (with the
//! issuer's leeway) checked. Only tokens that verified enter. Bound:
//! [`SLOTS`] entries of at most the issuer's `max_token_bytes` (8 KiB by
//! default) each, per thread (about 8 MiB at worst, typical tokens 1 KiB). The
//! answer is always the one [`Issuer::verify`] would give.

use std::cell::RefCell;
use std::sync::Arc;

use super::jwt::{AuthError, Identity, Issuer};
use crate::verified::{Hit, Verified};

/// Entries per worker thread.
pub const SLOTS: usize = 1024;

thread_local! {
    static CACHE: RefCell<Verified<Arc<Identity>>> = RefCell::new(Verified::new(SLOTS));
}

/// `token` verified by `issuer` at unix time `now`, remembered when valid.
pub fn verify(issuer: &Issuer, token: &str, now: i64) -> Result<Arc<Identity>, AuthError> {
    CACHE.with(|cache| {
        cache
            .borrow_mut()
            .through(issuer.id(), token, now, AuthError::Expired, || {
                let id = issuer.verify(token, now)?;
                let until = issuer.void_from(id.exp);
                Ok((Arc::new(id), until))
            })
    })
}

/// Whether `issuer` verified `token` on this thread and it is still valid.
pub fn remembered(issuer: &Issuer, token: &str, now: i64) -> bool {
    CACHE.with(|cache| matches!(cache.borrow().get(issuer.id(), token, now), Hit::Valid(_)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::jwt::tests::{claims, issuer, sign, EC_PRIVATE, NOW, RSA_PRIVATE};
    use jsonwebtoken::Algorithm;
    use proptest::prelude::*;
    use serde_json::json;
    use std::sync::OnceLock;

    /// Tokens signed once (RSA signing is slow in a debug build).
    fn tokens() -> &'static Vec<String> {
        static TOKENS: OnceLock<Vec<String>> = OnceLock::new();
        TOKENS.get_or_init(|| {
            let mut short = claims();
            short["exp"] = json!(NOW + 100);
            let rs = sign(Algorithm::RS256, Some("rsa-1"), &claims(), RSA_PRIVATE);
            let mut tampered = rs.clone();
            tampered.pop();
            tampered.push(if rs.ends_with('A') { 'B' } else { 'A' });
            vec![
                rs,
                sign(Algorithm::RS256, Some("rsa-1"), &short, RSA_PRIVATE),
                sign(Algorithm::ES256, Some("ec-1"), &claims(), EC_PRIVATE),
                tampered,
                "not.a.token".to_owned(),
            ]
        })
    }

    /// The same keys and claims, no leeway: the same token's expiry comes
    /// 30 s earlier here than under [`issuer`].
    fn strict_issuer() -> Issuer {
        let jwks: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/jwt/jwks.json")).unwrap();
        let spec = serde_json::from_value(json!({
            "iss": "https://id.example.com", "aud": ["api"], "algs": ["RS256", "ES256"],
            "jwks": jwks, "user_claim": "sub", "tenant_claim": "tenant", "leeway_s": 0
        }))
        .unwrap();
        Issuer::from_spec("strict", &spec).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Whatever the order of calls, issuers and clocks (around the
        /// expiry and its leeway), the cache answers what a fresh
        /// verification answers.
        #[test]
        fn answers_what_verify_answers(
            calls in proptest::collection::vec((0usize..5, 0usize..2, 0i64..800), 1..40)
        ) {
            // A token verified under one issuer is remembered under that
            // one only (the other's leeway differs).
            let issuers = [issuer(), strict_issuer()];
            for (t, i, dt) in calls {
                let (token, issuer) = (&tokens()[t], &issuers[i]);
                let now = NOW + dt;
                prop_assert_eq!(verify(issuer, token, now).map(|i| (*i).clone()), issuer.verify(token, now));
            }
        }
    }
}
