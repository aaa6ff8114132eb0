//! The adaptive concurrency limit of one (unit, service), and its
//! admission queue.
//!
//! **Limit** (the gradient algorithm of Netflix concurrency-limits, with
//! Vegas' no-load latency): every `window_ms` the limit `L` moves towards
//! `L * g + sqrt(L)`, smoothed by 0.2, where the gradient
//! `g = clamp((tolerance * min_rtt + 1 ms) / avg_rtt, 0.5, 1)` compares the
//! window's average latency with the lowest latency seen lately (the
//! upstream without a queue). A queue building at the upstream raises the
//! average and shrinks the limit; while latency stays flat the `sqrt(L)`
//! term probes for more. A window in which fewer than `L / 2` were ever in
//! flight does not grow it (the limit was not what held traffic back).
//!
//! **Admission**: a request of criticality `c` starts while fewer than
//! `L * share(c)` are in flight (0.75 sheddable, 1 default, 1.25
//! critical). Otherwise it waits in a CoDel queue (Facebook's adaptive
//! LIFO + CoDel, as bilibili describes): normally a request waits up to
//! `queue_interval_ms`, which absorbs a burst; once a request has waited
//! that long in vain or found the queue full within the last interval (the
//! queue stood: sustained overload), a request waits at most
//! `queue_target_ms`, the newest are served first and waiters older than
//! the target are dropped, so the ones still likely to be wanted go first
//! and a standing queue cannot form. A full queue, or a wait that runs
//! out, sheds the request at once (503).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use unit_router::resilience::{Criticality, Limiter as Settings};

/// The lowest latency is renewed this often (so that an upstream that got
/// slower for good is not held to its old speed forever).
const MIN_RTT_EPOCH_MS: u64 = 30_000;
/// Added to `tolerance * min_rtt`: below a millisecond latency jitter is
/// noise, not a queue.
const SLACK_US: f64 = 1_000.0;

fn share(c: Criticality) -> f64 {
    match c {
        Criticality::Sheddable => 0.75,
        Criticality::Default => 1.0,
        Criticality::Critical => 1.25,
    }
}

struct Waiter {
    since: Instant,
    criticality: Criticality,
    tx: oneshot::Sender<()>,
}

/// The limit and in-flight count of one (unit, service).
pub struct ConcurrencyLimit {
    origin: Instant,
    /// The limit, as f64 bits.
    limit: AtomicU64,
    inflight: AtomicU32,
    window_start_ms: AtomicU64,
    window_sum_us: AtomicU64,
    window_samples: AtomicU32,
    window_max_inflight: AtomicU32,
    min_rtt_us: AtomicU64,
    next_min_rtt_us: AtomicU64,
    min_rtt_epoch: AtomicU64,
    queued: AtomicUsize,
    /// When a request last waited out its longest wait or found the queue
    /// full, ms since `origin` + 1 (0: never): the queue stood that long.
    last_overflow_ms: AtomicU64,
    /// Touched only when a request must wait or a slot frees while some
    /// wait: never on the path of a request under the limit.
    #[allow(clippy::disallowed_types)]
    queue: std::sync::Mutex<VecDeque<Waiter>>,
    shed_full: AtomicU64,
    shed_wait: AtomicU64,
}

impl std::fmt::Debug for ConcurrencyLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConcurrencyLimit")
            .field("limit", &self.limit())
            .field("inflight", &self.inflight())
            .finish_non_exhaustive()
    }
}

/// Why a request was shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// Over the limit with the queue full (or no queue).
    Full,
    /// Waited in the queue for its longest wait without a slot freeing.
    Waited,
}

impl Shed {
    pub fn label(self) -> &'static str {
        match self {
            Shed::Full => "limit",
            Shed::Waited => "queue_timeout",
        }
    }
}

impl ConcurrencyLimit {
    pub fn new(origin: Instant, s: &Settings) -> Self {
        ConcurrencyLimit {
            origin,
            limit: AtomicU64::new(f64::from(s.initial).to_bits()),
            inflight: AtomicU32::new(0),
            window_start_ms: AtomicU64::new(0),
            window_sum_us: AtomicU64::new(0),
            window_samples: AtomicU32::new(0),
            window_max_inflight: AtomicU32::new(0),
            min_rtt_us: AtomicU64::new(u64::MAX),
            next_min_rtt_us: AtomicU64::new(u64::MAX),
            min_rtt_epoch: AtomicU64::new(0),
            queued: AtomicUsize::new(0),
            last_overflow_ms: AtomicU64::new(0),
            queue: Default::default(),
            shed_full: AtomicU64::new(0),
            shed_wait: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    pub fn limit(&self) -> f64 {
        f64::from_bits(self.limit.load(Relaxed))
    }

    pub fn inflight(&self) -> u32 {
        self.inflight.load(Relaxed)
    }

    pub fn queued(&self) -> usize {
        self.queued.load(Relaxed)
    }

    /// Requests shed since start: (queue full, wait ran out).
    pub fn shed_counts(&self) -> (u64, u64) {
        (self.shed_full.load(Relaxed), self.shed_wait.load(Relaxed))
    }

    /// The lowest recent latency, if any sample came in.
    pub fn min_rtt(&self) -> Option<Duration> {
        let v = self.min_rtt_us.load(Relaxed);
        (v != u64::MAX).then(|| Duration::from_micros(v))
    }

    fn threshold(&self, c: Criticality, s: &Settings) -> u32 {
        let l = self.limit().clamp(f64::from(s.min), f64::from(s.max));
        (l * share(c)).ceil().max(1.0) as u32
    }

    /// Take a slot if one is free for criticality `c`.
    fn try_take(&self, c: Criticality, s: &Settings) -> bool {
        let max = self.threshold(c, s);
        let ok = self
            .inflight
            .fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1));
        match ok {
            Ok(n) => {
                self.window_max_inflight.fetch_max(n + 1, Relaxed);
                true
            }
            Err(_) => false,
        }
    }

    /// Sustained overload: within the last interval a request waited out
    /// its longest wait, or found the queue full (the queue stood).
    fn overloaded(&self, s: &Settings) -> bool {
        let last = self.last_overflow_ms.load(Relaxed);
        last != 0 && self.now_ms() + 1 - last < s.queue_interval_ms
    }

    /// A request was shed: count it and mark the overload.
    fn overflow(&self, why: Shed) -> Shed {
        self.last_overflow_ms.store(self.now_ms() + 1, Relaxed);
        match why {
            Shed::Full => self.shed_full.fetch_add(1, Relaxed),
            Shed::Waited => self.shed_wait.fetch_add(1, Relaxed),
        };
        why
    }

    #[allow(clippy::disallowed_types)]
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Waiter>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take a slot, waiting in the queue if there is room and time (`left`:
    /// what is left of the request's deadline). The slot is given back
    /// through [`ConcurrencyLimit::release`].
    pub async fn acquire(&self, c: Criticality, s: &Settings, left: Duration) -> Result<(), Shed> {
        if self.try_take(c, s) {
            return Ok(());
        }
        let wait = if self.overloaded(s) {
            s.queue_target_ms
        } else {
            s.queue_interval_ms
        };
        let wait = Duration::from_millis(wait).min(left);
        if s.queue == 0 || wait.is_zero() {
            return Err(self.overflow(Shed::Full));
        }
        let (tx, mut rx) = oneshot::channel();
        {
            let mut q = self.lock();
            // Waiters whose wait ran out leave their entry behind.
            q.retain(|w| !w.tx.is_closed());
            if q.len() >= s.queue as usize {
                self.queued.store(q.len(), Relaxed);
                return Err(self.overflow(Shed::Full));
            }
            q.push_back(Waiter {
                since: Instant::now(),
                criticality: c,
                tx,
            });
            self.queued.store(q.len(), Relaxed);
        }
        // A slot may have freed between the first try and the enqueue.
        if self.try_take(c, s) {
            rx.close();
            if rx.try_recv().is_ok() {
                // A slot was handed over meanwhile too: give one back.
                self.release(None, s);
            }
            return Ok(());
        }
        match tokio::time::timeout(wait, &mut rx).await {
            Ok(Ok(())) => Ok(()),
            _ => {
                rx.close();
                if rx.try_recv().is_ok() {
                    // Handed over just as the wait ran out: take it.
                    return Ok(());
                }
                Err(self.overflow(Shed::Waited))
            }
        }
    }

    /// Give a slot back; `rtt`: the latency of the attempt that held it,
    /// when it says something about the upstream. A waiting request gets
    /// the slot: the newest under sustained overload, else the oldest; one
    /// that waited past the target under overload is dropped instead.
    pub fn release(&self, rtt: Option<Duration>, s: &Settings) {
        if let Some(rtt) = rtt {
            self.sample(rtt, s);
        }
        if self.queued.load(Relaxed) > 0 {
            let overloaded = self.overloaded(s);
            let target = Duration::from_millis(s.queue_target_ms);
            let mut q = self.lock();
            while let Some(w) = if overloaded {
                q.pop_back()
            } else {
                q.pop_front()
            } {
                if overloaded && w.since.elapsed() > target {
                    // Stale under overload: its waiter is shed (its send
                    // side dropped wakes it at once).
                    continue;
                }
                // A slot for criticality `w` is only handed over while the
                // count stays under its share.
                if self.inflight.load(Relaxed) > self.threshold(w.criticality, s) {
                    q.push_front(w);
                    break;
                }
                if w.tx.send(()).is_ok() {
                    self.queued.store(q.len(), Relaxed);
                    return;
                }
            }
            self.queued.store(q.len(), Relaxed);
        }
        let _ = self
            .inflight
            .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
    }

    /// Feed one latency sample; once per window the limit moves.
    fn sample(&self, rtt: Duration, s: &Settings) {
        let us = (rtt.as_micros() as u64).max(1);
        let now = self.now_ms();
        let epoch = now / MIN_RTT_EPOCH_MS;
        if self.min_rtt_epoch.load(Relaxed) != epoch
            && self.min_rtt_epoch.swap(epoch, Relaxed).ne(&epoch)
        {
            // A new epoch: the lowest of the last one stands until the
            // next, so old speed is forgotten after one or two epochs.
            let last = self.next_min_rtt_us.swap(u64::MAX, Relaxed);
            if last != u64::MAX {
                self.min_rtt_us.store(last, Relaxed);
            }
        }
        self.min_rtt_us.fetch_min(us, Relaxed);
        self.next_min_rtt_us.fetch_min(us, Relaxed);
        self.window_sum_us.fetch_add(us, Relaxed);
        self.window_samples.fetch_add(1, Relaxed);
        let start = self.window_start_ms.load(Relaxed);
        if now.saturating_sub(start) < s.window_ms
            || self
                .window_start_ms
                .compare_exchange(start, now, Relaxed, Relaxed)
                .is_err()
        {
            return;
        }
        // One caller per window gets here.
        let n = self.window_samples.swap(0, Relaxed);
        let sum = self.window_sum_us.swap(0, Relaxed);
        let peak = self
            .window_max_inflight
            .swap(self.inflight.load(Relaxed), Relaxed);
        if n == 0 {
            return;
        }
        let avg = sum as f64 / f64::from(n);
        let min = self.min_rtt_us.load(Relaxed) as f64;
        let limit = self.limit();
        let gradient = ((s.tolerance * min + SLACK_US) / avg).clamp(0.5, 1.0);
        if gradient >= 1.0 && f64::from(peak) < limit / 2.0 {
            // Not limited by the limit: no reason to grow it.
            return;
        }
        let target = limit * gradient + limit.sqrt();
        let next = (limit * 0.8 + target * 0.2).clamp(f64::from(s.min), f64::from(s.max));
        self.limit.store(next.to_bits(), Relaxed);
    }
}

/// A slot of a [`ConcurrencyLimit`], held for one attempt. Dropped
/// without [`Slot::release`] (a request torn down on an unforeseen path),
/// it is still given back, without a sample.
#[derive(Debug)]
pub struct Slot {
    limit: Option<Arc<ConcurrencyLimit>>,
    settings: Settings,
    started: Instant,
}

impl Slot {
    /// A slot just taken from `limit`.
    pub fn taken(limit: Arc<ConcurrencyLimit>, settings: Settings) -> Self {
        Slot {
            limit: Some(limit),
            settings,
            started: Instant::now(),
        }
    }

    /// Give the slot back; the attempt's latency is a sample when `sample`.
    pub fn release(mut self, sample: bool) {
        if let Some(limit) = self.limit.take() {
            let rtt = sample.then(|| self.started.elapsed());
            limit.release(rtt, &self.settings);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(limit) = self.limit.take() {
            limit.release(None, &self.settings);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use unit_router::resilience::Resilience;

    fn settings() -> Settings {
        let mut s = Resilience::default().limiter;
        s.enabled = true;
        s.initial = 10;
        s.min = 2;
        s.window_ms = 10;
        s
    }

    #[tokio::test]
    async fn over_the_limit_is_shed_by_criticality() {
        let mut s = settings();
        s.queue = 0;
        let l = ConcurrencyLimit::new(Instant::now(), &s);
        let left = Duration::from_secs(1);
        for _ in 0..8 {
            l.acquire(Criticality::Sheddable, &s, left).await.unwrap();
        }
        // Sheddable stops at ceil(0.75 * 10) = 8; default at 10; critical at 13.
        assert_eq!(
            l.acquire(Criticality::Sheddable, &s, left).await,
            Err(Shed::Full)
        );
        for _ in 0..2 {
            l.acquire(Criticality::Default, &s, left).await.unwrap();
        }
        assert!(l.acquire(Criticality::Default, &s, left).await.is_err());
        for _ in 0..3 {
            l.acquire(Criticality::Critical, &s, left).await.unwrap();
        }
        assert!(l.acquire(Criticality::Critical, &s, left).await.is_err());
        assert_eq!(l.inflight(), 13);
        l.release(None, &s);
        assert_eq!(l.inflight(), 12);
        // A slot dropped without release is given back all the same.
        let l = Arc::new(l);
        drop(Slot::taken(l.clone(), s));
        assert_eq!(l.inflight(), 11);
        Slot::taken(l.clone(), s).release(true);
        assert_eq!(l.inflight(), 10);
    }

    #[tokio::test]
    async fn a_queued_request_gets_the_next_free_slot() {
        let s = settings();
        let l = Arc::new(ConcurrencyLimit::new(Instant::now(), &s));
        let left = Duration::from_secs(1);
        for _ in 0..10 {
            l.acquire(Criticality::Default, &s, left).await.unwrap();
        }
        let waiting = {
            let l = l.clone();
            tokio::spawn(async move { l.acquire(Criticality::Default, &s, left).await })
        };
        unitgate_tests::eventually!(Duration::from_secs(2), l.queued() == 1, "queued");
        l.release(None, &s);
        assert_eq!(waiting.await.unwrap(), Ok(()));
        // The slot passed over: still 10 in flight.
        assert_eq!(l.inflight(), 10);
        assert_eq!(l.queued(), 0);
    }

    #[tokio::test]
    async fn a_wait_ends_at_the_interval() {
        let mut s = settings();
        s.queue_interval_ms = 30;
        let l = ConcurrencyLimit::new(Instant::now(), &s);
        let left = Duration::from_secs(1);
        for _ in 0..10 {
            l.acquire(Criticality::Default, &s, left).await.unwrap();
        }
        let t0 = Instant::now();
        assert_eq!(
            l.acquire(Criticality::Default, &s, left).await,
            Err(Shed::Waited)
        );
        assert!(t0.elapsed() < Duration::from_millis(500));
        assert_eq!(l.shed_counts(), (0, 1));
    }

    #[test]
    fn rising_latency_shrinks_the_limit_and_flat_latency_grows_it() {
        let s = settings();
        let l = ConcurrencyLimit::new(Instant::now() - Duration::from_secs(1), &s);
        // Keep the limit busy so growth is allowed.
        l.window_max_inflight.store(10, Relaxed);
        for _ in 0..5 {
            l.sample(Duration::from_millis(10), &s);
        }
        let start = l.limit();
        // Latency ten times the lowest: the limit falls window by window.
        for _ in 0..20 {
            l.window_start_ms.store(0, Relaxed);
            l.sample(Duration::from_millis(100), &s);
        }
        let low = l.limit();
        assert!(low < start, "{low} < {start}");
        assert!(low >= f64::from(s.min));
        // Back to the lowest latency, with traffic at the limit: it grows.
        for _ in 0..20 {
            l.window_start_ms.store(0, Relaxed);
            l.window_max_inflight.store(1_000, Relaxed);
            l.sample(Duration::from_millis(10), &s);
        }
        assert!(l.limit() > low);
    }
}
