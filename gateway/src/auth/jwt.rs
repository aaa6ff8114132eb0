//! Verifying a JWT against one issuer (`auth/issuers/<name>`): the
//! issuer's JWK set, keyed by `kid`, its allowed algorithms, `iss`, `aud`
//! and leeway. Pure: no IO, the clock is an argument.
//!
//! What a token must pass, in order, each with its own [`AuthError`]:
//! its size; a header that parses, with an `alg` the issuer lists (`none`
//! in any letter case never parses); a `kid` of plain characters that names
//! one of the issuer's keys, whose own `alg` (when the JWK states one) is
//! the header's; the signature; `iss`, `aud`; `exp` (required) and `nbf`
//! within the leeway; the user claim. Header fields that point elsewhere
//! for a key (`jku`, `x5u`, an embedded `jwk`) are never read: the key is
//! always the issuer's.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};
use unit_router::jwks::{self, JwksError, KeySet};
use unit_router::spec::IssuerSpec;

/// Why a token is refused. The message is the RFC 6750
/// `error_description`: it names the check, never a key or a claim value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the token is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's algorithm is not accepted")]
    AlgorithmNotAccepted,
    #[error("the token has no usable key id")]
    BadKeyId,
    #[error("the token's key id is unknown")]
    UnknownKeyId,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token has no expiry")]
    NoExpiry,
    #[error("the token is from another issuer")]
    WrongIssuer,
    #[error("the token is for another audience")]
    WrongAudience,
    #[error("the token names no user")]
    NoUser,
}

/// Who a verified token says the caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The issuer's name (`auth/issuers/<name>`).
    pub issuer: String,
    /// The user claim's value.
    pub user: String,
    /// The tenant claim's value, when the issuer names one and it is set.
    pub tenant: Option<String>,
    /// Unix seconds after which the token is void.
    pub exp: i64,
    /// Every claim of the token (for the routes' `require_claims`).
    pub claims: Arc<Map<String, Value>>,
}

/// One issuer, ready to verify.
pub struct Issuer {
    /// Unique per [`Issuer::new`]: what verified tokens are remembered
    /// under ([`super::cache`]).
    id: u64,
    name: String,
    iss: String,
    aud: Vec<String>,
    algs: Vec<Algorithm>,
    keys: KeySet,
    user_claim: String,
    tenant_claim: Option<String>,
    leeway_s: u64,
    max_token_bytes: usize,
    /// The spec it was built from (to tell whether a new snapshot changes it).
    spec: IssuerSpec,
}

impl Issuer {
    /// The issuer `name` as the topology states it, verifying with `keys`
    /// (its inline keys, merged with those fetched from its `jwks_uri`).
    pub fn new(name: &str, spec: &IssuerSpec, keys: KeySet) -> Result<Self, JwksError> {
        let algs = jwks::algorithms(&spec.algs, spec.shared_secret)?;
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Ok(Issuer {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            name: name.to_owned(),
            iss: spec.iss.clone(),
            aud: spec.aud.clone(),
            algs,
            keys,
            user_claim: spec.user_claim.clone(),
            tenant_claim: spec.tenant_claim.clone(),
            leeway_s: spec.leeway_s,
            max_token_bytes: spec.max_token_bytes,
            spec: spec.clone(),
        })
    }

    /// The issuer with its inline keys only.
    pub fn from_spec(name: &str, spec: &IssuerSpec) -> Result<Self, JwksError> {
        let algs = jwks::algorithms(&spec.algs, spec.shared_secret)?;
        let keys = match &spec.jwks {
            Some(set) => KeySet::parse(set, &algs)?,
            None => KeySet::default(),
        };
        Self::new(name, spec, keys)
    }

    /// The spec it was built from.
    pub fn spec(&self) -> &IssuerSpec {
        &self.spec
    }

    /// The keys it verifies with.
    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    /// The `iss` its tokens carry.
    pub fn iss(&self) -> &str {
        &self.iss
    }

    /// The issuer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Which issuer this is (unique per [`Issuer::new`]).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Unix seconds from which a token expiring at `exp` is refused.
    pub fn void_from(&self, exp: i64) -> i64 {
        exp.saturating_add(i64::try_from(self.leeway_s).unwrap_or(i64::MAX))
    }

    /// Verify `token` at unix time `now`.
    pub fn verify(&self, token: &str, now: i64) -> Result<Identity, AuthError> {
        if token.len() > self.max_token_bytes {
            return Err(AuthError::TooLarge(self.max_token_bytes));
        }
        // The algorithm first, by name: `none` (any case) and names the
        // issuer does not list are refused before anything else is read.
        let alg = header_alg(token)?;
        if !self.algs.iter().any(|a| a == &alg) {
            return Err(AuthError::AlgorithmNotAccepted);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        if header.alg != alg {
            return Err(AuthError::Malformed);
        }
        let kid = header
            .kid
            .as_deref()
            .filter(|k| jwks::plain_kid(k))
            .ok_or(AuthError::BadKeyId)?;
        let key = self.keys.get(kid).ok_or(AuthError::UnknownKeyId)?;
        if key.alg.is_some_and(|a| a != header.alg) {
            return Err(AuthError::AlgorithmNotAccepted);
        }
        let mut v = Validation::new(header.alg);
        v.leeway = self.leeway_s;
        v.set_issuer(&[&self.iss]);
        // Time is checked below against `now`, not the system clock.
        v.validate_exp = false;
        v.validate_nbf = false;
        if self.aud.is_empty() {
            v.validate_aud = false;
            v.set_required_spec_claims(&["iss"]);
        } else {
            v.set_audience(&self.aud);
            v.set_required_spec_claims(&["iss", "aud"]);
        }
        let data =
            jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &v).map_err(|e| match e
                .kind()
            {
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
                ErrorKind::InvalidAudience => AuthError::WrongAudience,
                ErrorKind::MissingRequiredClaim(c) if c == "aud" => AuthError::WrongAudience,
                ErrorKind::MissingRequiredClaim(c) if c == "iss" => AuthError::WrongIssuer,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    AuthError::AlgorithmNotAccepted
                }
                _ => AuthError::Malformed,
            })?;
        let claims = data.claims;
        let exp = self.check_times(&claims, now)?;
        let user = claim_text(claims.get(&self.user_claim)).ok_or(AuthError::NoUser)?;
        let tenant = self
            .tenant_claim
            .as_ref()
            .and_then(|c| claim_text(claims.get(c)));
        Ok(Identity {
            issuer: self.name.clone(),
            user,
            tenant,
            exp,
            claims: Arc::new(claims),
        })
    }

    /// `exp` and `nbf` against `now`, with the leeway; the token's `exp`.
    fn check_times(&self, claims: &Map<String, Value>, now: i64) -> Result<i64, AuthError> {
        let leeway = i64::try_from(self.leeway_s).unwrap_or(i64::MAX);
        let exp = match claims.get("exp") {
            None => return Err(AuthError::NoExpiry),
            Some(v) => v.as_i64().ok_or(AuthError::Malformed)?,
        };
        if now >= self.void_from(exp) {
            return Err(AuthError::Expired);
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = nbf.as_i64().ok_or(AuthError::Malformed)?;
            if nbf.saturating_sub(leeway) > now {
                return Err(AuthError::NotYetValid);
            }
        }
        Ok(exp)
    }
}

/// The header's `alg`, as an algorithm this crate knows, or why not.
fn header_alg(token: &str) -> Result<Algorithm, AuthError> {
    use base64::Engine as _;
    let encoded = token.split('.').next().unwrap_or_default();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| AuthError::Malformed)?;
    let header: Map<String, Value> =
        serde_json::from_slice(&raw).map_err(|_| AuthError::Malformed)?;
    let name = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(AuthError::Malformed)?;
    Algorithm::from_str(name).map_err(|_| AuthError::AlgorithmNotAccepted)
}

/// The `iss` claim of a token, unverified: which of several issuers a
/// route trusts to verify it with (the verification then checks it).
pub fn unverified_iss(token: &str) -> Option<String> {
    use base64::Engine as _;
    let encoded = token.split('.').nth(1)?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .ok()?;
    #[derive(serde::Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    serde_json::from_slice::<Iss>(&raw).ok()?.iss
}

/// A claim usable as a key: a non-empty string, or an integer.
fn claim_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use base64::Engine as _;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    pub(crate) const RSA_PRIVATE: &str = include_str!("../../tests/fixtures/jwt/rsa-private.pem");
    const RSA_PUBLIC: &str = include_str!("../../tests/fixtures/jwt/rsa-public.pem");
    pub(crate) const EC_PRIVATE: &str = include_str!("../../tests/fixtures/jwt/ec-private.pem");
    const OTHER_EC_PRIVATE: &str = include_str!("../../tests/fixtures/jwt/other-ec-private.pem");
    const OTHER_EC_JWK: &str = include_str!("../../tests/fixtures/jwt/other-ec-public.jwk.json");
    const JWKS: &str = include_str!("../../tests/fixtures/jwt/jwks.json");
    pub(crate) const NOW: i64 = 1_800_000_000;

    fn spec(iss: &str, algs: &[&str], jwks: Value) -> IssuerSpec {
        serde_json::from_value(json!({
            "iss": iss,
            "aud": ["api"],
            "algs": algs,
            "jwks": jwks,
            "user_claim": "sub",
            "tenant_claim": "tenant",
            "leeway_s": 30
        }))
        .unwrap()
    }

    pub(crate) fn issuer() -> Issuer {
        let jwks: Value = serde_json::from_str(JWKS).unwrap();
        Issuer::from_spec(
            "corp",
            &spec("https://id.example.com", &["RS256", "ES256"], jwks),
        )
        .unwrap()
    }

    pub(crate) fn claims() -> Value {
        json!({"iss": "https://id.example.com", "aud": "api", "sub": "42", "tenant": "t1", "exp": NOW + 600})
    }

    pub(crate) fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, pem: &str) -> String {
        let mut h = Header::new(alg);
        h.kid = kid.map(str::to_owned);
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
            _ => EncodingKey::from_secret(pem.as_bytes()),
        };
        jsonwebtoken::encode(&h, claims, &key).unwrap()
    }

    fn rs(claims: &Value) -> String {
        sign(Algorithm::RS256, Some("rsa-1"), claims, RSA_PRIVATE)
    }

    fn b64(v: &Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    }

    /// A token with this header and these claims, signature `sig`.
    fn raw(header: &Value, claims: &Value, sig: &str) -> String {
        format!("{}.{}.{sig}", b64(header), b64(claims))
    }

    #[test]
    fn rs256_and_es256_tokens_verify_and_name_the_user_and_tenant() {
        let i = issuer();
        let want = Identity {
            issuer: "corp".into(),
            user: "42".into(),
            tenant: Some("t1".into()),
            exp: NOW + 600,
            claims: Arc::new(claims().as_object().unwrap().clone()),
        };
        assert_eq!(i.verify(&rs(&claims()), NOW), Ok(want.clone()));
        let es = sign(Algorithm::ES256, Some("ec-1"), &claims(), EC_PRIVATE);
        assert_eq!(i.verify(&es, NOW), Ok(want));
        // A numeric user claim is a user key too.
        let mut c = claims();
        c["sub"] = json!(7);
        assert_eq!(i.verify(&rs(&c), NOW).map(|id| id.user), Ok("7".into()));
    }

    #[test]
    fn alg_none_in_any_letter_case_is_refused() {
        let i = issuer();
        for none in ["none", "None", "NONE", "nOnE"] {
            let t = raw(&json!({"alg": none, "kid": "rsa-1"}), &claims(), "");
            assert_eq!(
                i.verify(&t, NOW),
                Err(AuthError::AlgorithmNotAccepted),
                "{none}"
            );
        }
    }

    #[test]
    fn an_hs256_token_signed_with_the_rsa_public_key_is_refused() {
        // Key confusion: the public key used as an HMAC secret.
        let t = sign(Algorithm::HS256, Some("rsa-1"), &claims(), RSA_PUBLIC);
        assert_eq!(
            issuer().verify(&t, NOW),
            Err(AuthError::AlgorithmNotAccepted)
        );
    }

    #[test]
    fn an_algorithm_other_than_the_keys_own_is_refused() {
        // ES256 is listed by the issuer, but rsa-1 is an RS256 key.
        let t = sign(Algorithm::ES256, Some("rsa-1"), &claims(), EC_PRIVATE);
        assert_eq!(
            issuer().verify(&t, NOW),
            Err(AuthError::AlgorithmNotAccepted)
        );
    }

    #[test]
    fn key_ids_that_are_unknown_missing_or_not_plain_are_refused() {
        let i = issuer();
        let unknown = sign(Algorithm::RS256, Some("rsa-2"), &claims(), RSA_PRIVATE);
        assert_eq!(i.verify(&unknown, NOW), Err(AuthError::UnknownKeyId));
        let missing = sign(Algorithm::RS256, None, &claims(), RSA_PRIVATE);
        assert_eq!(i.verify(&missing, NOW), Err(AuthError::BadKeyId));
        for kid in [
            "../../etc/passwd",
            "rsa-1' OR '1'='1",
            "a b",
            "rsa-1\u{0}",
            "",
        ] {
            let t = sign(Algorithm::RS256, Some(kid), &claims(), RSA_PRIVATE);
            assert_eq!(i.verify(&t, NOW), Err(AuthError::BadKeyId), "{kid:?}");
        }
    }

    #[test]
    fn keys_the_token_points_to_are_never_used() {
        // Signed with the attacker's key, which the header embeds (`jwk`)
        // and points to (`jku`, `x5u`), under the issuer's kid.
        let attacker: Value = serde_json::from_str(OTHER_EC_JWK).unwrap();
        let header = json!({
            "alg": "ES256", "kid": "ec-1", "jwk": attacker,
            "jku": "https://evil.example/jwks.json", "x5u": "https://evil.example/cert.pem"
        });
        let message = format!("{}.{}", b64(&header), b64(&claims()));
        let key = EncodingKey::from_ec_pem(OTHER_EC_PRIVATE.as_bytes()).unwrap();
        let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::ES256).unwrap();
        let t = format!("{message}.{sig}");
        assert_eq!(issuer().verify(&t, NOW), Err(AuthError::BadSignature));
    }

    #[test]
    fn expiry_and_not_before_are_checked_with_the_leeway() {
        let i = issuer();
        let at = |exp: i64, nbf: Option<i64>| {
            let mut c = claims();
            c["exp"] = json!(exp);
            if let Some(n) = nbf {
                c["nbf"] = json!(n);
            }
            i.verify(&rs(&c), NOW).map(|_| ())
        };
        assert_eq!(at(NOW - 29, None), Ok(()), "expired within the leeway");
        assert_eq!(at(NOW - 30, None), Err(AuthError::Expired));
        assert_eq!(
            at(NOW + 600, Some(NOW + 30)),
            Ok(()),
            "nbf within the leeway"
        );
        assert_eq!(at(NOW + 600, Some(NOW + 31)), Err(AuthError::NotYetValid));
        let mut c = claims();
        c.as_object_mut().unwrap().remove("exp");
        assert_eq!(i.verify(&rs(&c), NOW), Err(AuthError::NoExpiry));
        c["exp"] = json!("tomorrow");
        assert_eq!(i.verify(&rs(&c), NOW), Err(AuthError::Malformed));
    }

    #[test]
    fn issuer_and_audience_must_match() {
        let i = issuer();
        let with = |k: &str, v: Option<Value>| {
            let mut c = claims();
            match v {
                Some(v) => c[k] = v,
                None => {
                    c.as_object_mut().unwrap().remove(k);
                }
            }
            i.verify(&rs(&c), NOW)
        };
        assert_eq!(
            with("iss", Some(json!("https://evil.example"))),
            Err(AuthError::WrongIssuer)
        );
        assert_eq!(with("iss", None), Err(AuthError::WrongIssuer));
        assert_eq!(
            with("aud", Some(json!("other"))),
            Err(AuthError::WrongAudience)
        );
        assert_eq!(
            with("aud", Some(json!(["other", "api"]))).map(|_| ()),
            Ok(())
        );
        assert_eq!(with("aud", None), Err(AuthError::WrongAudience));
        assert_eq!(with("sub", None), Err(AuthError::NoUser));
        assert_eq!(with("sub", Some(json!(""))), Err(AuthError::NoUser));
    }

    #[test]
    fn tampered_malformed_and_oversized_tokens_are_refused() {
        let i = issuer();
        let good = rs(&claims());
        let mut parts: Vec<&str> = good.split('.').collect();
        let mut c = claims();
        c["sub"] = json!("1");
        let forged_claims = b64(&c);
        parts[1] = &forged_claims;
        assert_eq!(
            i.verify(&parts.join("."), NOW),
            Err(AuthError::BadSignature)
        );
        for bad in [
            "",
            "a.b",
            "a.b.c",
            "!!!.e30.",
            "e30.e30.",
            "eyJhbGciOiJSUzI1NiJ9.%%%.x",
        ] {
            assert!(
                matches!(
                    i.verify(bad, NOW),
                    Err(AuthError::Malformed | AuthError::BadKeyId)
                ),
                "{bad:?}"
            );
        }
        let mut c = claims();
        c["pad"] = json!("x".repeat(8 * 1024));
        assert_eq!(i.verify(&rs(&c), NOW), Err(AuthError::TooLarge(8 * 1024)));
    }

    #[test]
    fn a_token_of_one_issuer_is_refused_by_another() {
        // Another issuer trusting only the attacker's key, under the same kid.
        let other: Value = serde_json::from_str(OTHER_EC_JWK).unwrap();
        let b = Issuer::from_spec(
            "partner",
            &spec(
                "https://partner.example",
                &["ES256"],
                json!({"keys": [other]}),
            ),
        )
        .unwrap();
        let es = sign(Algorithm::ES256, Some("ec-1"), &claims(), EC_PRIVATE);
        assert_eq!(b.verify(&es, NOW), Err(AuthError::BadSignature));
        // And its tokens mean nothing to the first issuer.
        let mut c = claims();
        c["iss"] = json!("https://partner.example");
        let theirs = sign(Algorithm::ES256, Some("ec-1"), &c, OTHER_EC_PRIVATE);
        assert!(b.verify(&theirs, NOW).is_ok());
        assert_eq!(issuer().verify(&theirs, NOW), Err(AuthError::BadSignature));
    }

    #[test]
    fn a_shared_secret_issuer_verifies_hs256_and_nothing_else() {
        let secret = "a-shared-secret-of-thirty-two-b!";
        let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
        let spec = serde_json::from_value(json!({
            "iss": "https://hs.example.com", "algs": ["HS256"], "shared_secret": true,
            "jwks": {"keys": [{"kty": "oct", "kid": "s1", "k": k}]}
        }))
        .unwrap();
        let i = Issuer::from_spec("hs", &spec).unwrap();
        let mut c = claims();
        c["iss"] = json!("https://hs.example.com");
        let t = sign(Algorithm::HS256, Some("s1"), &c, secret);
        assert_eq!(i.verify(&t, NOW).map(|id| id.user), Ok("42".into()));
        let other = sign(
            Algorithm::HS256,
            Some("s1"),
            &c,
            "another-secret-of-thirty-two-by!",
        );
        assert_eq!(i.verify(&other, NOW), Err(AuthError::BadSignature));
        let rs = sign(Algorithm::RS256, Some("s1"), &c, RSA_PRIVATE);
        assert_eq!(i.verify(&rs, NOW), Err(AuthError::AlgorithmNotAccepted));
        // Without saying so, an issuer may not use HS at all.
        let mut loose = spec.clone();
        loose.shared_secret = false;
        assert!(Issuer::from_spec("hs", &loose).is_err());
    }
}
