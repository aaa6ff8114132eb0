//! The routing token (`ug_route` cookie / `x-unit-route` header):
//! `base64url(json{v,shard,unit,epoch,exp,kid}) "." base64url(HMAC-SHA256)`.
//! Decoding never panics; every bad input is a typed error.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::keys::{valid_kid, Keyring};

const DOMAIN: &[u8] = b"unitgate route token v1\n";
/// Cookie carrying the routing token (browsers).
pub const COOKIE: &str = "ug_route";
/// Header carrying the routing token (mobile apps).
pub const HEADER: &str = "x-unit-route";
/// Longest token accepted; anything longer is malformed.
pub const MAX_TOKEN_LEN: usize = 1024;

/// What a routing token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteToken {
    pub v: u8,
    /// The user's shard (`None` for region-routed users).
    pub shard: Option<u32>,
    /// The unit serving the user's home traffic when the token was issued:
    /// the home unit, or the unit serving in its place while home is drained
    /// ([`crate::Affinity`]).
    pub unit: String,
    /// Topology epoch the token was issued on.
    pub epoch: i64,
    /// Unix seconds after which the token is void.
    pub exp: i64,
    pub kid: String,
}

/// Why a token was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("unsupported token version {0}")]
    Version(u8),
    #[error("unknown kid {0:?}")]
    UnknownKid(String),
    #[error("bad signature")]
    BadSignature,
    #[error("expired")]
    Expired,
}

impl RouteToken {
    /// A version-1 token signed by the keyring's active key.
    pub fn new(shard: Option<u32>, unit: &str, epoch: i64, exp: i64, keys: &Keyring) -> Self {
        RouteToken {
            v: 1,
            shard,
            unit: unit.to_owned(),
            epoch,
            exp,
            kid: keys.active_kid().to_owned(),
        }
    }

    /// Serialize and sign with the key named by `self.kid` (must be the active one).
    pub fn encode(&self, keys: &Keyring) -> String {
        // Plain fields: serialization cannot fail (an empty payload would not verify).
        let payload = B64.encode(serde_json::to_vec(self).unwrap_or_default());
        let tag = B64.encode(keys.sign(&[DOMAIN, payload.as_bytes()]));
        format!("{payload}.{tag}")
    }

    /// Read the payload of `s` without checking its signature or expiry:
    /// for operators' tools that explain what a client's token would do.
    /// Never route on an unverified token.
    pub fn decode_unverified(s: &str) -> Result<Self, TokenError> {
        if s.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let (payload, _) = s.split_once('.').ok_or(TokenError::Malformed)?;
        let json = B64.decode(payload).map_err(|_| TokenError::Malformed)?;
        serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)
    }

    /// Verify and decode `s` at unix time `now`.
    pub fn decode(s: &str, keys: &Keyring, now: i64) -> Result<Self, TokenError> {
        if s.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let (payload, tag) = s.split_once('.').ok_or(TokenError::Malformed)?;
        let json = B64.decode(payload).map_err(|_| TokenError::Malformed)?;
        let tag = B64.decode(tag).map_err(|_| TokenError::Malformed)?;
        let tok: RouteToken = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
        if tok.v != 1 {
            return Err(TokenError::Version(tok.v));
        }
        if !valid_kid(&tok.kid) {
            return Err(TokenError::Malformed);
        }
        match keys.verify(&tok.kid, &[DOMAIN, payload.as_bytes()], &tag) {
            None => return Err(TokenError::UnknownKid(tok.kid)),
            Some(false) => return Err(TokenError::BadSignature),
            Some(true) => {}
        }
        if tok.exp <= now {
            return Err(TokenError::Expired);
        }
        Ok(tok)
    }
}

/// The `Set-Cookie` value that carries an encoded token for `ttl_s` seconds.
pub fn set_cookie(encoded: &str, ttl_s: u64) -> String {
    format!("{COOKIE}={encoded}; Path=/; Max-Age={ttl_s}; HttpOnly; Secure; SameSite=Lax")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::test_keyring;
    use proptest::prelude::*;

    fn tok(shard: Option<u32>, unit: &str, epoch: i64, exp: i64) -> RouteToken {
        RouteToken::new(shard, unit, epoch, exp, &test_keyring("k1"))
    }

    #[test]
    fn round_trip_and_rotation() {
        let k1 = test_keyring("k1");
        let t = tok(Some(7), "bj-1", 42, 2_000);
        let s = t.encode(&k1);
        assert_eq!(RouteToken::decode(&s, &k1, 1_000), Ok(t.clone()));
        // After rotation to k2, k1 tokens still verify.
        let k2 = test_keyring("k2");
        assert_eq!(RouteToken::decode(&s, &k2, 1_000), Ok(t));
    }

    #[test]
    fn rejections_are_typed() {
        let k = test_keyring("k1");
        let s = tok(Some(7), "bj-1", 42, 2_000).encode(&k);
        assert_eq!(RouteToken::decode(&s, &k, 2_000), Err(TokenError::Expired));
        assert_eq!(RouteToken::decode("", &k, 0), Err(TokenError::Malformed));
        assert_eq!(
            RouteToken::decode("a.b.c", &k, 0),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            RouteToken::decode(&"x".repeat(5000), &k, 0),
            Err(TokenError::Malformed)
        );
        let only_k3 = Keyring::new("k3", [("k3".to_owned(), vec![3; 32])].into()).unwrap();
        assert_eq!(
            RouteToken::decode(&s, &only_k3, 0),
            Err(TokenError::UnknownKid("k1".into()))
        );
        // Same payload, signature from another key.
        let (payload, _) = s.split_once('.').unwrap();
        let forged = format!("{payload}.{}", B64.encode([0u8; 32]));
        assert_eq!(
            RouteToken::decode(&forged, &k, 0),
            Err(TokenError::BadSignature)
        );
        // A payload edited by the client.
        let mut t = tok(Some(7), "bj-1", 42, 2_000);
        t.unit = "sh-1".into();
        let edited = format!(
            "{}.{}",
            B64.encode(serde_json::to_vec(&t).unwrap()),
            s.split_once('.').unwrap().1
        );
        assert_eq!(
            RouteToken::decode(&edited, &k, 0),
            Err(TokenError::BadSignature)
        );
    }

    proptest! {
        #[test]
        fn decode_encode_is_identity(shard in proptest::option::of(0u32..65_536), unit in "[a-z0-9-]{1,20}", epoch in 0i64..i64::MAX, exp in 1i64..i64::MAX) {
            let k = test_keyring("k1");
            let t = tok(shard, &unit, epoch, exp);
            prop_assert_eq!(RouteToken::decode(&t.encode(&k), &k, exp - 1), Ok(t));
        }

        #[test]
        fn any_byte_flip_is_rejected(idx in any::<prop::sample::Index>(), bit in 0u8..8) {
            let k = test_keyring("k1");
            let s = tok(Some(3), "sh-2", 9, 5_000).encode(&k);
            let mut bytes = s.into_bytes();
            let i = idx.index(bytes.len());
            bytes[i] ^= 1 << bit;
            let flipped = String::from_utf8_lossy(&bytes).into_owned();
            prop_assert!(RouteToken::decode(&flipped, &k, 0).is_err());
        }

        #[test]
        fn garbage_never_panics(s in ".{0,300}") {
            let k = test_keyring("k1");
            prop_assert!(RouteToken::decode(&s, &k, 0).is_err());
        }
    }
}
