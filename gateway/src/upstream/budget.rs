//! Retry budget: retries may add at most `percent`% to the request load
//! (plus a small reserve), so a failing unit cannot multiply traffic.

use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

const SCALE: i64 = 1000;
const CAP: i64 = 100 * SCALE;
const RESERVE: i64 = 10 * SCALE;

/// A token bucket fed by requests and drained by retries.
#[derive(Debug)]
pub struct RetryBudget {
    per_request: i64,
    balance: AtomicI64,
}

impl RetryBudget {
    pub fn new(percent: u32) -> Self {
        RetryBudget {
            per_request: i64::from(percent) * SCALE / 100,
            balance: AtomicI64::new(RESERVE),
        }
    }

    /// A request arrived.
    pub fn deposit(&self) {
        let _ = self
            .balance
            .fetch_update(Relaxed, Relaxed, |b| Some((b + self.per_request).min(CAP)));
    }

    /// Take one retry; false when the budget is spent.
    pub fn try_retry(&self) -> bool {
        self.balance
            .fetch_update(Relaxed, Relaxed, |b| (b >= SCALE).then_some(b - SCALE))
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_bounded_by_the_request_rate() {
        let b = RetryBudget::new(20);
        let mut retries = 0;
        for _ in 0..1000 {
            b.deposit();
            if b.try_retry() {
                retries += 1;
            }
        }
        // 20% of 1000 plus the reserve of 10.
        assert_eq!(retries, 210);
        assert!(!b.try_retry());
    }
}
