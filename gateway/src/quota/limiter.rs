//! One quota's counters on this gateway: a keyed GCRA limiter (`governor`)
//! over 64-bit hashes of the keys (seeded per process, so clients cannot
//! aim collisions), with bounded memory.
//!
//! GCRA keeps one 8-byte arrival time per key, and a key idle for one
//! emission interval is indistinguishable from a fresh one, so forgetting
//! it loses nothing ([`Limiter::sweep`], every few seconds). Bound: once
//! the table holds more than `max_keys` keys (checked every
//! [`CHECK_EVERY`] decisions), the idle ones are dropped at once; if it is
//! still over, it is a flood of live keys and the table starts afresh
//! (counted in `unitgate_quota_resets_total`): at most `max_keys` +
//! [`CHECK_EVERY`] keys per quota, about 48 bytes each.

use std::hash::{BuildHasher, Hash};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

/// How many decisions pass between two looks at the table's size.
pub const CHECK_EVERY: u64 = 256;

type Table = RateLimiter<u64, DashMapStateStore<u64>, DefaultClock, StateInformationMiddleware>;

/// The limits one gateway enforces for a quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    /// Requests per `per_s` seconds.
    pub rate: u32,
    pub per_s: u32,
    /// Requests allowed at once.
    pub burst: u32,
}

impl Share {
    /// The governor quota: one request replenished every `per_s / rate`,
    /// `burst` at once.
    fn quota(self) -> Option<Quota> {
        let period = Duration::from_secs(u64::from(self.per_s)) / self.rate.max(1);
        Quota::with_period(period.max(Duration::from_nanos(1)))
            .map(|q| q.allow_burst(NonZeroU32::new(self.burst).unwrap_or(NonZeroU32::MIN)))
    }
}

/// A decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed; how many more are allowed right now.
    Allowed { remaining: u32 },
    /// Refused; when the next one is allowed.
    Refused { retry_after: Duration },
}

/// One quota's keyed counters.
pub struct Limiter {
    pub share: Share,
    table: ArcSwap<Table>,
    hasher: std::hash::RandomState,
    max_keys: usize,
    decisions: AtomicU64,
    resets: AtomicU64,
}

impl Limiter {
    /// Counters for `share`, holding at most about `max_keys` keys.
    pub fn new(share: Share, max_keys: usize) -> Option<Self> {
        let quota = share.quota()?;
        Some(Limiter {
            share,
            table: ArcSwap::from_pointee(table(quota)),
            hasher: std::hash::RandomState::new(),
            max_keys: max_keys.max(1),
            decisions: AtomicU64::new(0),
            resets: AtomicU64::new(0),
        })
    }

    /// Count one request of `key`.
    pub fn check(&self, key: impl Hash) -> Verdict {
        let h = self.hasher.hash_one(key);
        let n = self.decisions.fetch_add(1, Ordering::Relaxed);
        if n % CHECK_EVERY == CHECK_EVERY - 1 {
            self.bound();
        }
        let table = self.table.load();
        match table.check_key(&h) {
            Ok(snap) => Verdict::Allowed {
                remaining: snap.remaining_burst_capacity(),
            },
            Err(not_until) => Verdict::Refused {
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            },
        }
    }

    /// Keep the table within its bound (see the module doc).
    fn bound(&self) {
        let table = self.table.load();
        if table.len() <= self.max_keys {
            return;
        }
        table.retain_recent();
        if table.len() > self.max_keys {
            if let Some(q) = self.share.quota() {
                self.table.store(Arc::new(super::limiter::table(q)));
                self.resets.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    keys = table.len(),
                    max = self.max_keys,
                    "quota table over its bound with live keys: started afresh"
                );
            }
        }
    }

    /// Drop keys that are idle (indistinguishable from fresh) and give
    /// back their memory.
    pub fn sweep(&self) {
        let table = self.table.load();
        table.retain_recent();
        table.shrink_to_fit();
    }

    /// Keys held now.
    pub fn keys(&self) -> usize {
        self.table.load().len()
    }

    /// How many times the table started afresh (and takes the count).
    pub fn take_resets(&self) -> u64 {
        self.resets.swap(0, Ordering::Relaxed)
    }
}

fn table(q: Quota) -> Table {
    RateLimiter::dashmap(q).with_middleware::<StateInformationMiddleware>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(rate: u32, per_s: u32, burst: u32) -> Share {
        Share { rate, per_s, burst }
    }

    #[test]
    fn a_key_gets_its_burst_then_waits_for_the_rate() {
        // 60 per minute: one per second after the burst of 5.
        let l = Limiter::new(share(60, 60, 5), 1000).unwrap();
        for left in (0..5).rev() {
            assert_eq!(l.check("u1"), Verdict::Allowed { remaining: left });
        }
        let Verdict::Refused { retry_after } = l.check("u1") else {
            panic!("the sixth is over the burst");
        };
        assert!(retry_after <= Duration::from_secs(1) && retry_after > Duration::ZERO);
        // Another key has its own burst.
        assert_eq!(l.check("u2"), Verdict::Allowed { remaining: 4 });
    }

    #[test]
    fn a_hundred_thousand_distinct_keys_stay_within_the_bound() {
        let max = 10_000;
        let l = Limiter::new(share(10, 1, 10), max).unwrap();
        for i in 0..100_000u64 {
            l.check(i);
            assert!(
                l.keys() <= max + CHECK_EVERY as usize,
                "{} keys at {i}",
                l.keys()
            );
        }
        assert!(l.take_resets() > 0);
        // A key seen once is idle 100 ms later at 10/s: swept.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while l.keys() > 0 && std::time::Instant::now() < deadline {
            std::thread::yield_now();
            l.sweep();
        }
        assert_eq!(l.keys(), 0);
    }
}
