//! Client-side adaptive throttling per (unit, service), the circuit
//! breaker of the Google SRE book ("Handling Overload") as go-kratos ships
//! it: over a sliding window the gateway counts the requests it meant to
//! send and the ones the upstream accepted, and refuses a request locally
//! with probability `max(0, (requests - k * accepts) / (requests + 1))`.
//!
//! A refused request counts as a request that was not accepted, so a unit
//! that fails everything sees only a trickle of probes; once the probes
//! succeed the ratio falls and traffic returns by itself. No states, no
//! timers: the ratio is the state. Lock-free, sliding over ten buckets.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use unit_router::resilience::Breaker as Settings;

const BUCKETS: usize = 10;

#[derive(Debug, Default)]
struct Bucket {
    /// Which bucket period the counts belong to (`now_ms / bucket_ms`).
    period: AtomicU64,
    requests: AtomicU32,
    accepts: AtomicU32,
}

/// The throttle of one (unit, service).
#[derive(Debug)]
pub struct Breaker {
    buckets: [Bucket; BUCKETS],
    origin: Instant,
    /// Requests refused locally since start (for metrics).
    refused: AtomicU64,
    /// The bucket period of the last failure + 1 (0: none yet): with none
    /// in the window the ratio is 0 without summing the buckets.
    last_failure: AtomicU64,
}

/// What the window holds now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub requests: u32,
    pub accepts: u32,
    /// The probability a request is refused now.
    pub drop_ratio: f64,
}

impl Breaker {
    pub fn new(origin: Instant) -> Self {
        Breaker {
            buckets: Default::default(),
            origin,
            refused: AtomicU64::new(0),
            last_failure: AtomicU64::new(0),
        }
    }

    fn period(&self, s: &Settings) -> u64 {
        let bucket_ms = (s.window_ms / BUCKETS as u64).max(1);
        self.origin.elapsed().as_millis() as u64 / bucket_ms
    }

    /// Count one request to the upstream: `accepted` when it answered
    /// (anything but a failure).
    pub fn record(&self, accepted: bool, s: &Settings) {
        if !s.enabled {
            return;
        }
        let now = self.period(s);
        let b = &self.buckets[(now % BUCKETS as u64) as usize];
        let seen = b.period.load(Relaxed);
        if seen != now
            && b.period
                .compare_exchange(seen, now, Relaxed, Relaxed)
                .is_ok()
        {
            // This bucket held counts of an older period: start it afresh.
            b.requests.store(0, Relaxed);
            b.accepts.store(0, Relaxed);
        }
        b.requests.fetch_add(1, Relaxed);
        if accepted {
            b.accepts.fetch_add(1, Relaxed);
        } else if self.last_failure.load(Relaxed) != now + 1 {
            self.last_failure.store(now + 1, Relaxed);
        }
    }

    /// A request refused locally: it counts as not accepted.
    pub fn refused(&self, s: &Settings) {
        self.refused.fetch_add(1, Relaxed);
        self.record(false, s);
    }

    /// Requests refused locally since start.
    pub fn refused_total(&self) -> u64 {
        self.refused.load(Relaxed)
    }

    /// The counts of the window and the drop ratio they give.
    pub fn window(&self, s: &Settings) -> Window {
        if !s.enabled {
            return Window {
                requests: 0,
                accepts: 0,
                drop_ratio: 0.0,
            };
        }
        let now = self.period(s);
        let (mut requests, mut accepts) = (0u32, 0u32);
        for b in &self.buckets {
            let p = b.period.load(Relaxed);
            if p <= now && now - p < BUCKETS as u64 {
                requests = requests.saturating_add(b.requests.load(Relaxed));
                accepts = accepts.saturating_add(b.accepts.load(Relaxed));
            }
        }
        let drop_ratio = if requests < s.min_requests {
            0.0
        } else {
            let r = f64::from(requests);
            ((r - s.k * f64::from(accepts)) / (r + 1.0)).max(0.0)
        };
        Window {
            requests,
            accepts,
            drop_ratio,
        }
    }

    /// Whether a request whose uniform draw in `[0, 1)` is `draw` may go.
    pub fn admits(&self, draw: f64, s: &Settings) -> bool {
        if !s.enabled {
            return true;
        }
        // The common case, a window without a failure: nothing to sum.
        let last = self.last_failure.load(Relaxed);
        if last == 0 || self.period(s) >= last - 1 + BUCKETS as u64 {
            return true;
        }
        draw >= self.window(s).drop_ratio
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use unit_router::resilience::Resilience;

    #[test]
    fn failures_raise_the_drop_ratio_and_successes_bring_it_down() {
        let s = Resilience::default().breaker;
        let b = Breaker::new(Instant::now());
        // Under min_requests nothing is refused.
        for _ in 0..(s.min_requests - 1) {
            b.record(false, &s);
        }
        assert_eq!(b.window(&s).drop_ratio, 0.0);
        for _ in 0..81 {
            b.record(false, &s);
        }
        let w = b.window(&s);
        assert_eq!((w.requests, w.accepts), (100, 0));
        assert!((w.drop_ratio - 100.0 / 101.0).abs() < 1e-9);
        assert!(!b.admits(0.5, &s));
        assert!(b.admits(0.999, &s));
        // Recovery: k * accepts overtakes requests.
        for _ in 0..200 {
            b.record(true, &s);
        }
        assert_eq!(b.window(&s).drop_ratio, 0.0);
        assert!(b.admits(0.0, &s));
    }

    #[test]
    fn a_healthy_upstream_is_never_throttled() {
        let s = Resilience::default().breaker;
        let b = Breaker::new(Instant::now());
        for i in 0..1000 {
            // 10 % errors: requests < 1.5 * accepts.
            b.record(i % 10 != 0, &s);
        }
        assert_eq!(b.window(&s).drop_ratio, 0.0);
    }

    #[test]
    fn old_buckets_leave_the_window() {
        let mut s = Resilience::default().breaker;
        s.window_ms = 1_000;
        let origin = Instant::now() - std::time::Duration::from_secs(5);
        let b = Breaker::new(origin);
        // Counts written in a period 3 s ago are outside a 1 s window.
        let old = b.period(&s) - 30;
        let bucket = &b.buckets[(old % BUCKETS as u64) as usize];
        bucket.period.store(old, Relaxed);
        bucket.requests.store(500, Relaxed);
        assert_eq!(b.window(&s).requests, 0);
        b.record(false, &s);
        assert_eq!(b.window(&s).requests, 1);
    }
}
