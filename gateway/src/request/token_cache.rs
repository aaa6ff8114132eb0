//! Routing tokens already verified on this worker thread.
//!
//! A client echoes the same routing token on every request until it is
//! re-issued, and verifying one costs a base64 decode, a JSON parse and an
//! HMAC (about a tenth of the gateway's instructions per request,
//! `docs/BENCHMARKS.md`). Each worker thread remembers the tokens it
//! verified in a small direct-mapped table: a request carrying exactly the
//! same token bytes, under the same keyring, skips all three and only has
//! the expiry checked again. Only tokens that verified enter, so forged
//! tokens cannot fill the table; its size is fixed ([`SLOTS`] entries of at
//! most `MAX_TOKEN_LEN` bytes each, per thread, [`crate::verified`]), and a
//! new token simply takes its slot. The answer is always the one [`RouteToken::decode`]
//! would give.

use std::cell::RefCell;

use unit_router::token::TokenError;
use unit_router::{Keyring, RouteToken};

use crate::verified::Verified;

/// Entries per worker thread.
pub const SLOTS: usize = 1024;

thread_local! {
    static CACHE: RefCell<Verified<RouteToken>> = RefCell::new(Verified::new(SLOTS));
}

/// `raw` verified under `keys` at unix time `now`: what
/// [`RouteToken::decode`] answers, remembered when it is a token.
pub fn verify(raw: &str, keys: &Keyring, now: i64) -> Result<RouteToken, TokenError> {
    CACHE.with(|cache| {
        cache
            .borrow_mut()
            .through(keys.id(), raw, now, TokenError::Expired, || {
                let token = RouteToken::decode(raw, keys, now)?;
                let exp = token.exp;
                Ok((token, exp))
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn keyring(active: &str, seeds: &[(&str, u8)]) -> Keyring {
        let keys: BTreeMap<String, Vec<u8>> = seeds
            .iter()
            .map(|(kid, b)| ((*kid).to_owned(), vec![*b; 32]))
            .collect();
        Keyring::new(active, keys).unwrap()
    }

    proptest! {
        /// Whatever the order of calls, keyrings and clocks, the cache
        /// answers what a fresh decode answers.
        #[test]
        fn answers_what_decode_answers(
            calls in proptest::collection::vec((0usize..6, 0usize..3, 0i64..3_000), 1..60)
        ) {
            let rings = [
                keyring("k1", &[("k1", 1)]),
                keyring("k2", &[("k1", 1), ("k2", 2)]),
                // Same kid as the first, another key.
                keyring("k1", &[("k1", 9)]),
            ];
            let mut tokens: Vec<String> = vec![
                RouteToken::new(Some(7), "bj-1", 1, 1_000, &rings[0]).encode(&rings[0]),
                RouteToken::new(Some(8), "bj-2", 1, 2_000, &rings[1]).encode(&rings[1]),
                RouteToken::new(None, "sh-1", 1, 2_500, &rings[2]).encode(&rings[2]),
                "not-a-token".to_owned(),
            ];
            // The first token with its signature's last character changed.
            let mut forged = tokens[0].clone();
            let last = if forged.ends_with('A') { "B" } else { "A" };
            forged.pop();
            forged.push_str(last);
            tokens.push(forged);
            tokens.push(tokens[1].clone());
            for (t, r, now) in calls {
                let (raw, keys) = (&tokens[t], &rings[r]);
                prop_assert_eq!(verify(raw, keys, now), RouteToken::decode(raw, keys, now));
            }
        }
    }

    #[test]
    fn a_remembered_token_still_expires() {
        let keys = keyring("k1", &[("k1", 1)]);
        let raw = RouteToken::new(Some(1), "bj-1", 1, 100, &keys).encode(&keys);
        assert!(verify(&raw, &keys, 99).is_ok());
        assert_eq!(verify(&raw, &keys, 100), Err(TokenError::Expired));
        // Another keyring that lacks the key never sees it as valid.
        let other = keyring("k1", &[("k1", 2)]);
        assert_eq!(verify(&raw, &other, 50), Err(TokenError::BadSignature));
    }
}
