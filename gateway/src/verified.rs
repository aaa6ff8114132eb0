//! What passed a costly verification, remembered: a fixed direct-mapped
//! table keyed by the exact bytes verified and the scope they were verified
//! under (a keyring, an issuer), each entry valid until a given time.
//!
//! Clients send the same signed token on every request until it is
//! re-issued; verifying it each time (decode, parse, signature) costs more
//! than the rest of the request's own logic. Only what verified is put in,
//! so forged input cannot fill the table; a new entry takes its slot; the
//! table never grows. Each worker thread keeps its own (no locks): the
//! users declare a `thread_local!` of it.

use std::hash::{BuildHasher, RandomState};

/// A remembered verification, or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hit<T> {
    /// Verified before, still valid now.
    Valid(T),
    /// Verified before, no longer valid.
    Expired,
    /// Not remembered.
    Miss,
}

struct Entry<T> {
    scope: u64,
    raw: Box<str>,
    value: T,
    /// Valid while `now < until` (unix seconds).
    until: i64,
}

/// The table.
pub struct Verified<T> {
    /// Keyed per table, so which inputs share a slot cannot be chosen.
    hasher: RandomState,
    slots: Vec<Option<Entry<T>>>,
}

impl<T: Clone> Verified<T> {
    /// A table of `slots` entries (at least one).
    pub fn new(slots: usize) -> Self {
        Verified {
            hasher: RandomState::new(),
            slots: (0..slots.max(1)).map(|_| None).collect(),
        }
    }

    fn slot(&self, raw: &str) -> usize {
        (self.hasher.hash_one(raw) as usize) % self.slots.len()
    }

    /// What was remembered for `raw` verified under `scope`, at `now`.
    pub fn get(&self, scope: u64, raw: &str, now: i64) -> Hit<T> {
        match &self.slots[self.slot(raw)] {
            Some(e) if e.scope == scope && *e.raw == *raw => {
                if now < e.until {
                    Hit::Valid(e.value.clone())
                } else {
                    Hit::Expired
                }
            }
            _ => Hit::Miss,
        }
    }

    /// `raw` verified under `scope` at `now`: the remembered answer, or
    /// `verify`'s (the value, and until when it is valid), remembered when
    /// it verified. A remembered entry that has expired answers `expired`.
    pub fn through<E>(
        &mut self,
        scope: u64,
        raw: &str,
        now: i64,
        expired: E,
        verify: impl FnOnce() -> Result<(T, i64), E>,
    ) -> Result<T, E> {
        match self.get(scope, raw, now) {
            Hit::Valid(value) => Ok(value),
            Hit::Expired => Err(expired),
            Hit::Miss => {
                let (value, until) = verify()?;
                self.put(scope, raw, value.clone(), until);
                Ok(value)
            }
        }
    }

    /// Remember that `raw` verified under `scope` as `value`, valid while
    /// `now < until`.
    pub fn put(&mut self, scope: u64, raw: &str, value: T, until: i64) {
        let slot = self.slot(raw);
        self.slots[slot] = Some(Entry {
            scope,
            raw: raw.into(),
            value,
            until,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_need_the_same_bytes_and_scope_and_expire() {
        let mut t = Verified::new(8);
        assert_eq!(t.get(1, "a", 0), Hit::<u8>::Miss);
        t.put(1, "a", 7, 100);
        assert_eq!(t.get(1, "a", 99), Hit::Valid(7));
        assert_eq!(t.get(1, "a", 100), Hit::Expired);
        assert_eq!(t.get(2, "a", 0), Hit::Miss, "another scope");
        assert_eq!(t.get(1, "b", 0), Hit::Miss, "other bytes");
        // One slot: a new entry takes it.
        let mut one = Verified::new(0);
        one.put(1, "a", 1, 10);
        one.put(1, "b", 2, 10);
        assert_eq!(one.get(1, "a", 0), Hit::Miss);
        assert_eq!(one.get(1, "b", 0), Hit::Valid(2));
    }
}
