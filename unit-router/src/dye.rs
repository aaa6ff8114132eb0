//! The dye: marks carried in W3C `baggage` by a request that left its home unit.
//!
//! Entries: `ug.shard` (absent for region/center traffic), `ug.home`, `ug.via`,
//! `ug.reason`, `ug.hops`, `ug.sig`. `ug.sig` is `<kid>.<exp>.<base64url MAC>`,
//! an HMAC-SHA256 over every other entry, so a dye cannot be forged, edited or
//! replayed past `exp`. Decoding never panics; every bad input is a typed error.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;

use crate::keys::{valid_kid, Keyring};
use crate::reason::Reason;

const DOMAIN: &[u8] = b"unitgate dye v1\n";
/// Longest baggage header value inspected; longer ones are malformed.
pub const MAX_BAGGAGE_LEN: usize = 8192;

/// A request's dye.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dye {
    pub shard: Option<u32>,
    pub home: String,
    pub via: String,
    pub reason: Reason,
    pub hops: u8,
    /// Unix seconds after which the dye is void.
    pub exp: i64,
}

/// Why a dye was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DyeError {
    #[error("malformed dye: {0}")]
    Malformed(&'static str),
    #[error("unknown kid {0:?}")]
    UnknownKid(String),
    #[error("bad signature")]
    BadSignature,
    #[error("expired")]
    Expired,
}

/// Whether a value is safe to put in baggage unescaped.
fn plain(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Iterate `(key, value)` of baggage list members (properties dropped).
fn members(baggage: &str) -> impl Iterator<Item = (&str, &str)> {
    baggage.split(',').filter_map(|m| {
        let m = m.split(';').next().unwrap_or("");
        let (k, v) = m.split_once('=')?;
        Some((k.trim(), v.trim()))
    })
}

/// Whether a baggage key belongs to unitgate.
pub fn is_ug_key(key: &str) -> bool {
    key.trim().starts_with("ug.")
}

/// `baggage` without any `ug.*` member (the rest kept byte for byte).
pub fn strip(baggage: &str) -> String {
    baggage
        .split(',')
        .filter(|m| {
            let k = m.split(['=', ';']).next().unwrap_or("");
            !is_ug_key(k) && !m.trim().is_empty()
        })
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(",")
}

impl Dye {
    fn mac_input(&self, kid: &str) -> String {
        let shard = self.shard.map_or_else(|| "-".to_owned(), |s| s.to_string());
        format!(
            "{shard}\n{}\n{}\n{}\n{}\n{}\n{kid}",
            self.home,
            self.via,
            self.reason.as_str(),
            self.hops,
            self.exp
        )
    }

    /// The `ug.*` baggage members, signed with the active key.
    pub fn encode(&self, keys: &Keyring) -> String {
        debug_assert!(plain(&self.home) && plain(&self.via));
        let kid = keys.active_kid();
        let tag = B64.encode(keys.sign(&[DOMAIN, self.mac_input(kid).as_bytes()]));
        let shard = self
            .shard
            .map(|s| format!("ug.shard={s},"))
            .unwrap_or_default();
        format!(
            "{shard}ug.home={},ug.via={},ug.reason={},ug.hops={},ug.sig={kid}.{}.{tag}",
            self.home,
            self.via,
            self.reason.as_str(),
            self.hops,
            self.exp
        )
    }

    /// `baggage` with its `ug.*` members replaced by this dye.
    pub fn merge_into(&self, baggage: Option<&str>, keys: &Keyring) -> String {
        let rest = baggage.map(strip).unwrap_or_default();
        let dye = self.encode(keys);
        if rest.is_empty() {
            dye
        } else {
            format!("{rest},{dye}")
        }
    }

    /// The verified dye in a `baggage` header value, `Ok(None)` if it has none.
    pub fn decode(baggage: &str, keys: &Keyring, now: i64) -> Result<Option<Dye>, DyeError> {
        use DyeError::Malformed as M;
        if baggage.len() > MAX_BAGGAGE_LEN {
            return Err(M("baggage too long"));
        }
        let mut f: [Option<&str>; 6] = [None; 6];
        const NAMES: [&str; 6] = [
            "ug.shard",
            "ug.home",
            "ug.via",
            "ug.reason",
            "ug.hops",
            "ug.sig",
        ];
        let mut any = false;
        for (k, v) in members(baggage) {
            if !is_ug_key(k) {
                continue;
            }
            any = true;
            let i = NAMES
                .iter()
                .position(|n| *n == k)
                .ok_or(M("unknown ug.* entry"))?;
            if f[i].replace(v).is_some() {
                return Err(M("duplicate ug.* entry"));
            }
        }
        if !any {
            return Ok(None);
        }
        let [shard, home, via, reason, hops, sig] = f;
        fn need<'a>(v: Option<&'a str>, what: &'static str) -> Result<&'a str, DyeError> {
            v.filter(|v| plain(v)).ok_or(DyeError::Malformed(what))
        }
        let home = need(home, "ug.home missing or invalid")?;
        let via = need(via, "ug.via missing or invalid")?;
        let reason =
            Reason::parse(need(reason, "ug.reason missing")?).ok_or(M("ug.reason unknown"))?;
        let hops = need(hops, "ug.hops missing")?
            .parse()
            .map_err(|_| M("ug.hops not a number"))?;
        let shard = match shard {
            None => None,
            Some(s) => Some(s.parse().map_err(|_| M("ug.shard not a number"))?),
        };
        let mut sig = need(sig, "ug.sig missing")?.splitn(3, '.');
        let (Some(kid), Some(exp), Some(tag)) = (sig.next(), sig.next(), sig.next()) else {
            return Err(M("ug.sig is not kid.exp.mac"));
        };
        if !valid_kid(kid) {
            return Err(M("ug.sig kid invalid"));
        }
        let exp: i64 = exp.parse().map_err(|_| M("ug.sig exp not a number"))?;
        let tag = B64.decode(tag).map_err(|_| M("ug.sig mac not base64url"))?;
        let dye = Dye {
            shard,
            home: home.to_owned(),
            via: via.to_owned(),
            reason,
            hops,
            exp,
        };
        match keys.verify(kid, &[DOMAIN, dye.mac_input(kid).as_bytes()], &tag) {
            None => return Err(DyeError::UnknownKid(kid.to_owned())),
            Some(false) => return Err(DyeError::BadSignature),
            Some(true) => {}
        }
        if dye.exp <= now {
            return Err(DyeError::Expired);
        }
        Ok(Some(dye))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::test_keyring;
    use proptest::prelude::*;

    fn dye(shard: Option<u32>, hops: u8) -> Dye {
        Dye {
            shard,
            home: "bj-1".into(),
            via: "sh-1".into(),
            reason: Reason::Failover,
            hops,
            exp: 1_000,
        }
    }

    #[test]
    fn round_trip_keeps_foreign_baggage() {
        let k = test_keyring("k1");
        let d = dye(Some(12), 1);
        let b = d.merge_into(
            Some("userId=alice, ug.home=evil;p=1,ug.hops=0,tenant=t1"),
            &k,
        );
        assert!(b.starts_with("userId=alice,tenant=t1,ug.shard=12,"), "{b}");
        assert_eq!(Dye::decode(&b, &k, 999), Ok(Some(d)));
        assert_eq!(Dye::decode("userId=alice", &k, 0), Ok(None));
        assert_eq!(Dye::decode("", &k, 0), Ok(None));
    }

    #[test]
    fn rejections_are_typed() {
        let k = test_keyring("k1");
        let b = dye(None, 1).encode(&k);
        assert_eq!(Dye::decode(&b, &k, 1_000), Err(DyeError::Expired));
        let edited = b.replace("ug.hops=1", "ug.hops=0");
        assert_eq!(Dye::decode(&edited, &k, 0), Err(DyeError::BadSignature));
        let only_k3 = Keyring::new("k3", [("k3".to_owned(), vec![3; 32])].into()).unwrap();
        assert_eq!(
            Dye::decode(&b, &only_k3, 0),
            Err(DyeError::UnknownKid("k1".into()))
        );
        assert!(matches!(
            Dye::decode("ug.home=bj-1", &k, 0),
            Err(DyeError::Malformed(_))
        ));
        assert!(matches!(
            Dye::decode(&format!("{b},ug.hops=3"), &k, 0),
            Err(DyeError::Malformed(_))
        ));
        assert!(matches!(
            Dye::decode("ug.bogus=1", &k, 0),
            Err(DyeError::Malformed(_))
        ));
    }

    #[test]
    fn strip_removes_only_ug_members() {
        assert_eq!(strip("a=1, ug.x=2 ,b=3;p,ug.sig=z"), "a=1,b=3;p");
        assert_eq!(strip("ug.a=1"), "");
    }

    proptest! {
        #[test]
        fn decode_encode_is_identity(shard in proptest::option::of(0u32..65_536), home in "[a-z0-9-]{1,20}", via in "[a-z0-9-]{1,20}", hops in 0u8..9, exp in 1i64..i64::MAX) {
            let k = test_keyring("k2");
            let d = Dye { shard, home, via, reason: Reason::Drain, hops, exp };
            prop_assert_eq!(Dye::decode(&d.encode(&k), &k, exp - 1), Ok(Some(d)));
        }

        #[test]
        fn any_byte_flip_is_rejected(idx in any::<prop::sample::Index>(), bit in 0u8..8) {
            let k = test_keyring("k1");
            let s = dye(Some(5), 1).encode(&k);
            let mut bytes = s.into_bytes();
            let i = idx.index(bytes.len());
            bytes[i] ^= 1 << bit;
            let flipped = String::from_utf8_lossy(&bytes).into_owned();
            // A flip may turn the dye into foreign baggage (no ug.* left): then
            // there is no dye, which is also safe. It must never verify.
            prop_assert!(!matches!(Dye::decode(&flipped, &k, 0), Ok(Some(_))));
        }

        #[test]
        fn garbage_never_panics(s in ".{0,300}") {
            let k = test_keyring("k1");
            let _ = Dye::decode(&s, &k, 0);
        }
    }
}
