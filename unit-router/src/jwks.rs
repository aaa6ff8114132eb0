//! JWT issuers' algorithms and key sets, parsed: what `auth/issuers/<name>`
//! validation checks (a JWK set every key of which is usable for the
//! issuer's algorithms) and what the gateway verifies tokens with. Pure:
//! parsing only, no fetching.
//!
//! An issuer is asymmetric (RS, PS, ES, EdDSA: public keys, safe to keep in
//! etcd and to fetch from a `jwks_uri`) or, when it says so with
//! `shared_secret: true`, symmetric (HS, `oct` keys inline). It is never
//! both: a list mixing them is how RS-to-HS key confusion starts.

use std::collections::HashMap;
use std::str::FromStr;

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};

/// Asymmetric algorithms an issuer may list.
pub const ASYMMETRIC: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];
/// Symmetric algorithms, for an issuer with `shared_secret: true` only.
pub const SYMMETRIC: &[&str] = &["HS256", "HS384", "HS512"];

/// Why an issuer's algorithms or keys cannot verify anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("list at least one algorithm")]
    NoAlgorithm,
    #[error("{0:?} is not one of {list}", list = ASYMMETRIC.join(", "))]
    Algorithm(String),
    #[error("{0:?} is a shared-secret algorithm: only an issuer with \"shared_secret\": true may list HS256/HS384/HS512")]
    SymmetricNotDeclared(String),
    #[error("an issuer with \"shared_secret\": true lists only HS256, HS384 or HS512, not {0:?}")]
    AsymmetricWithSecret(String),
    #[error("not a JWK set ({{\"keys\":[...]}}): {0}")]
    NotASet(String),
    #[error("the key at keys[{0}] has no kid")]
    NoKid(usize),
    #[error("kid {0:?} is not 1-128 of A-Z a-z 0-9 . _ -")]
    BadKid(String),
    #[error("kid {0:?} appears twice")]
    DuplicateKid(String),
    #[error("key {kid:?} is not usable: {why}")]
    Key { kid: String, why: String },
    #[error("key {kid:?} is for {alg}, which the issuer does not list")]
    KeyAlgorithm { kid: String, alg: String },
    #[error(
        "key {kid:?} is a shared secret (kty oct) but the issuer is not a shared-secret issuer"
    )]
    SecretKey { kid: String },
    #[error("key {kid:?} is a public key but the issuer uses shared secrets (kty oct)")]
    PublicKey { kid: String },
}

/// Whether `kid` is plain: 1-128 of `A-Z a-z 0-9 . _ -`.
pub fn plain_kid(kid: &str) -> bool {
    (1..=128).contains(&kid.len())
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// An issuer's `algs`, checked: all asymmetric, or (with `shared_secret`)
/// all symmetric.
pub fn algorithms(names: &[String], shared_secret: bool) -> Result<Vec<Algorithm>, JwksError> {
    if names.is_empty() {
        return Err(JwksError::NoAlgorithm);
    }
    names
        .iter()
        .map(|n| {
            let sym = SYMMETRIC.contains(&n.as_str());
            let asym = ASYMMETRIC.contains(&n.as_str());
            match (sym, asym, shared_secret) {
                (true, _, false) => Err(JwksError::SymmetricNotDeclared(n.clone())),
                (_, true, true) => Err(JwksError::AsymmetricWithSecret(n.clone())),
                (false, false, _) => Err(JwksError::Algorithm(n.clone())),
                _ => Algorithm::from_str(n).map_err(|_| JwksError::Algorithm(n.clone())),
            }
        })
        .collect()
}

/// One verification key.
#[derive(Clone)]
pub struct Key {
    pub key: DecodingKey,
    /// The JWK's own `alg`, when it states one (a token must use it).
    pub alg: Option<Algorithm>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("alg", &self.alg).finish()
    }
}

/// Keys by `kid`.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, Key>,
}

impl KeySet {
    /// Parse a JWK set (`{"keys":[...]}`) for an issuer using `algs`. Every
    /// key must be usable: a plain, unique `kid`; an `alg` (when stated)
    /// the issuer lists; the key type the issuer's kind takes.
    pub fn parse(set: &serde_json::Value, algs: &[Algorithm]) -> Result<Self, JwksError> {
        let set: JwkSet =
            serde_json::from_value(set.clone()).map_err(|e| JwksError::NotASet(e.to_string()))?;
        let symmetric = algs
            .iter()
            .all(|a| matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512));
        let mut keys = HashMap::new();
        for (i, jwk) in set.keys.iter().enumerate() {
            let (kid, key) = key_of(i, jwk, algs, symmetric)?;
            if keys.insert(kid.clone(), key).is_some() {
                return Err(JwksError::DuplicateKid(kid));
            }
        }
        Ok(KeySet { keys })
    }

    /// Parse a JWK set published by an issuer (its `jwks_uri`): keys this
    /// issuer cannot use (another algorithm, an encryption key, no or an
    /// odd `kid`, a type it does not take, a repeated `kid`) are skipped
    /// and named in the second value, as identity providers publish keys
    /// for other uses beside theirs. An error when no usable key is left.
    pub fn parse_published(
        set: &serde_json::Value,
        algs: &[Algorithm],
    ) -> Result<(Self, Vec<String>), JwksError> {
        let set: JwkSet =
            serde_json::from_value(set.clone()).map_err(|e| JwksError::NotASet(e.to_string()))?;
        let symmetric = algs
            .iter()
            .all(|a| matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512));
        let mut keys = HashMap::new();
        let mut skipped = Vec::new();
        let mut last_error = None;
        for (i, jwk) in set.keys.iter().enumerate() {
            if matches!(
                jwk.common.public_key_use,
                Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
            ) {
                skipped.push(format!("keys[{i}]: an encryption key"));
                continue;
            }
            match key_of(i, jwk, algs, symmetric) {
                Ok((kid, key)) => match keys.entry(kid) {
                    std::collections::hash_map::Entry::Occupied(e) => {
                        skipped.push(format!("keys[{i}]: kid {:?} appears twice", e.key()));
                    }
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(key);
                    }
                },
                Err(e) => {
                    skipped.push(format!("keys[{i}]: {e}"));
                    last_error = Some(e);
                }
            }
        }
        if keys.is_empty() {
            return Err(last_error.unwrap_or(JwksError::NotASet("no keys".into())));
        }
        Ok((KeySet { keys }, skipped))
    }

    /// The key `kid`.
    pub fn get(&self, kid: &str) -> Option<&Key> {
        self.keys.get(kid)
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// No key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key ids, sorted.
    pub fn kids(&self) -> Vec<&str> {
        let mut k: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        k.sort_unstable();
        k
    }

    /// These keys and `other`'s; on a shared `kid`, this set's key wins.
    pub fn merged(&self, other: &KeySet) -> KeySet {
        let mut keys = other.keys.clone();
        keys.extend(self.keys.iter().map(|(k, v)| (k.clone(), v.clone())));
        KeySet { keys }
    }
}

fn key_of(
    i: usize,
    jwk: &Jwk,
    algs: &[Algorithm],
    symmetric: bool,
) -> Result<(String, Key), JwksError> {
    let kid = jwk.common.key_id.clone().ok_or(JwksError::NoKid(i))?;
    if !plain_kid(&kid) {
        return Err(JwksError::BadKid(kid));
    }
    let oct = matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_));
    if oct && !symmetric {
        return Err(JwksError::SecretKey { kid });
    }
    if !oct && symmetric {
        return Err(JwksError::PublicKey { kid });
    }
    let alg = match jwk.common.key_algorithm {
        Some(a) => {
            let name = a.to_string();
            let alg = Algorithm::from_str(&name).map_err(|_| JwksError::KeyAlgorithm {
                kid: kid.clone(),
                alg: name.clone(),
            })?;
            if !algs.contains(&alg) {
                return Err(JwksError::KeyAlgorithm { kid, alg: name });
            }
            Some(alg)
        }
        None => None,
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|e| JwksError::Key {
        kid: kid.clone(),
        why: e.to_string(),
    })?;
    Ok((kid, Key { key, alg }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn algorithm_lists_are_one_kind() {
        assert!(algorithms(&names(&["RS256", "ES256", "EdDSA"]), false).is_ok());
        assert!(algorithms(&names(&["HS256"]), true).is_ok());
        assert_eq!(
            algorithms(&names(&["RS256", "HS256"]), false),
            Err(JwksError::SymmetricNotDeclared("HS256".into()))
        );
        assert_eq!(
            algorithms(&names(&["HS256", "RS256"]), true),
            Err(JwksError::AsymmetricWithSecret("RS256".into()))
        );
        assert_eq!(
            algorithms(&names(&["none"]), false),
            Err(JwksError::Algorithm("none".into()))
        );
        assert_eq!(algorithms(&[], false), Err(JwksError::NoAlgorithm));
    }

    #[test]
    fn key_sets_refuse_unusable_keys() {
        let rs = [Algorithm::RS256];
        let hs = [Algorithm::HS256];
        let secret = json!({"kty":"oct","kid":"s1","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"});
        let broken_rsa = json!({"kty":"RSA","kid":"r1","n":"!!","e":"AQAB"});
        let cases = [
            (json!({"nokeys": 1}), &rs[..], "not a JWK set"),
            (json!({"keys":[{"kty":"oct","k":"AA"}]}), &hs[..], "no kid"),
            (json!({"keys":[secret]}), &rs[..], "shared secret"),
            (json!({"keys":[broken_rsa.clone()]}), &rs[..], "not usable"),
            (
                json!({"keys":[{"kty":"oct","kid":"a/../b","k":"AA"}]}),
                &hs[..],
                "is not 1-128",
            ),
        ];
        for (set, algs, why) in cases {
            let e = KeySet::parse(&set, algs).unwrap_err().to_string();
            assert!(e.contains(why), "{set}: {e}");
        }
        let ok = KeySet::parse(&json!({"keys":[secret]}), &hs).unwrap();
        assert_eq!(ok.kids(), ["s1"]);
        // Published sets skip what the issuer cannot use, and keep the rest.
        let published = json!({"keys":[
            {"kty":"oct","kid":"enc","use":"enc","k":"AA"},
            {"kty":"oct","k":"AA"},
            secret,
            secret,
        ]});
        let (keys, skipped) = KeySet::parse_published(&published, &hs).unwrap();
        assert_eq!(keys.kids(), ["s1"]);
        assert_eq!(skipped.len(), 3, "{skipped:?}");
        assert!(KeySet::parse_published(&json!({"keys":[broken_rsa]}), &rs).is_err());
        let twice = json!({"keys":[secret, secret]});
        assert_eq!(
            KeySet::parse(&twice, &hs).unwrap_err(),
            JwksError::DuplicateKid("s1".into())
        );
    }
}
