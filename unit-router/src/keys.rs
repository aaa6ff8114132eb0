//! HMAC-SHA256 keys by `kid`, for the routing token and the dye. One key signs;
//! every listed key verifies, so keys rotate without invalidating live tokens.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a keyring could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    #[error("no keys")]
    Empty,
    #[error("signing kid {0:?} is not among the keys")]
    UnknownActive(String),
    #[error("kid {0:?} must be 1-32 of A-Z, a-z, 0-9, '-', '_'")]
    BadKid(String),
    #[error("key {0:?} is shorter than 32 bytes")]
    ShortKey(String),
    #[error("key {0:?} is not a usable HMAC key")]
    BadKey(String),
}

/// The signing key and every key accepted for verification, each keyed
/// into its HMAC state once (signing and verifying clone that state).
#[derive(Clone)]
pub struct Keyring {
    /// Unique per [`Keyring::new`] (clones share it: same keys).
    id: u64,
    active: String,
    signer: HmacSha256,
    keys: BTreeMap<String, HmacSha256>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("active", &self.active)
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Whether `kid` is a usable key id.
pub fn valid_kid(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= 32
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Keyring {
    /// Keys by kid; `active` signs.
    pub fn new(active: &str, keys: BTreeMap<String, Vec<u8>>) -> Result<Self, KeyringError> {
        if keys.is_empty() {
            return Err(KeyringError::Empty);
        }
        for (kid, key) in &keys {
            if !valid_kid(kid) {
                return Err(KeyringError::BadKid(kid.clone()));
            }
            if key.len() < 32 {
                return Err(KeyringError::ShortKey(kid.clone()));
            }
        }
        let keys = keys
            .into_iter()
            .map(|(kid, key)| match HmacSha256::new_from_slice(&key) {
                Ok(mac) => Ok((kid, mac)),
                Err(_) => Err(KeyringError::BadKey(kid)),
            })
            .collect::<Result<BTreeMap<_, _>, _>>()?;
        let signer = keys
            .get(active)
            .cloned()
            .ok_or_else(|| KeyringError::UnknownActive(active.to_owned()))?;
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Ok(Keyring {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            active: active.to_owned(),
            signer,
            keys,
        })
    }

    /// Which keyring this is: two keyrings with the same id hold the same
    /// keys (what a cache of verified tokens is keyed by).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The signing kid.
    pub fn active_kid(&self) -> &str {
        &self.active
    }

    /// Every kid accepted for verification (the active one included).
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// MAC of `parts` (domain-separated by the caller) with the signing key.
    pub(crate) fn sign(&self, parts: &[&[u8]]) -> Vec<u8> {
        let mut mac = self.signer.clone();
        for p in parts {
            mac.update(p);
        }
        mac.finalize().into_bytes().to_vec()
    }

    /// Constant-time check of `tag` over `parts` with key `kid`.
    /// `None` when the kid is unknown.
    pub(crate) fn verify(&self, kid: &str, parts: &[&[u8]], tag: &[u8]) -> Option<bool> {
        let mut mac = self.keys.get(kid)?.clone();
        for p in parts {
            mac.update(p);
        }
        Some(mac.verify_slice(tag).is_ok())
    }
}

#[cfg(test)]
pub(crate) fn test_keyring(active: &str) -> Keyring {
    let keys = [("k1", [1u8; 32]), ("k2", [2u8; 32])]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_vec()))
        .collect();
    Keyring::new(active, keys).unwrap()
}
