//! How much of a unit's answer the gateway may hold for a client that is
//! not taking it: backpressure from the client's side of a request to the
//! unit's connection.
//!
//! The framework (Pingora 0.9) carries an answer from the unit's connection
//! to the client's through a queue of up to four chunks, with up to four
//! more being written and one more waiting to be queued: nine chunks, each
//! as large as one read of the unit's socket (up to 64 KiB). Toward a
//! client that takes nothing, all nine fill: hundreds of KiB per stream.
//!
//! The gateway sizes those reads by a budget ([`Sizes::budget`]). Each
//! request's [`Flow`] counts the bytes read off its unit's connection that
//! the client's side has not yet taken ([`Flow::read`], [`Flow::taken`]:
//! the answer's head, or a chunk of its body, with its chunked framing),
//! beyond the answer's first [`FIRST`] bytes (an answer that small is read
//! as the framework reads it). A read may take what is left of the budget. Once it is spent, a read waits
//! until the client's side takes something, but never longer than
//! [`Sizes::trickle`] (a quarter of the unit's read timeout, at most
//! 100 ms: a longer wait would fail the answer), after which it reads
//! [`SLOW_READ`] bytes; once the queue is full the framework stops
//! reading, and the unit's bytes wait in the kernel. So a stalled response
//! holds at most its first bytes, the budget queued, a budget's worth being
//! written and nine slow reads ([`Sizes::bound`]), while a client that keeps up frees
//! the budget as it is read, and reads stay large.
//!
//! The connection finds its request's flow by the task that reads it: a
//! request's hooks and its upstream reads run in one task (HTTP/1.1: the
//! connection's; HTTP/2: the stream's), so [`FlowGuard::register`] files
//! the flow under the current task and [`current`] finds it. The table is
//! the worker thread's own, so the request path takes no lock. A worker
//! runs its tasks to the end (`work_stealing = false`, the default); with
//! work stealing on, a request moved to another thread is read at the
//! framework's own sizes, and its entry is swept from the first thread's
//! table later.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use atomic_waker::AtomicWaker;
use tokio::task::Id;

/// A read once the budget is spent.
pub const SLOW_READ: usize = 1024;

/// The first bytes of each answer the budget does not count until the
/// client's side has taken them: an answer of up to this much is read as
/// fast as the framework reads it.
pub const FIRST: usize = 64 * 1024;

/// The longest wait of a read for the client's side ([`Sizes::trickle`]).
const MAX_TRICKLE: Duration = Duration::from_millis(100);

/// Chunks the framework holds for one response at most (four queued, four
/// being written, one waiting to be queued).
const CHUNKS: usize = 9;

/// The read budget for a bound on what one stalled response holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// Bytes read and not yet taken that a read may bring the total to.
    pub budget: usize,
    /// How long a read waits for the client's side to take something once
    /// the budget is spent, before it reads [`SLOW_READ`] bytes anyway.
    pub trickle: Duration,
}

impl Sizes {
    /// The largest budget that keeps a stalled response within `bound`
    /// bytes, in whole KiB (at least [`SLOW_READ`]).
    pub fn within(bound: usize) -> Self {
        let budget = bound.saturating_sub(FIRST + CHUNKS * SLOW_READ) / 2;
        Sizes {
            budget: (budget / 1024 * 1024).max(SLOW_READ),
            trickle: MAX_TRICKLE,
        }
    }

    /// The same, each wait under `read_timeout`, the unit's read timeout
    /// (a read that waited past it would fail the answer).
    pub fn reading_within(self, read_timeout: Duration) -> Self {
        Sizes {
            trickle: (read_timeout / 4).clamp(Duration::from_millis(1), MAX_TRICKLE),
            ..self
        }
    }

    /// What a stalled response holds at most: the budget queued, a
    /// budget's worth taken and being written, the first [`FIRST`] bytes,
    /// and a slow read in each of the nine chunks.
    pub fn bound(self) -> usize {
        2 * self.budget + FIRST + CHUNKS * SLOW_READ
    }
}

/// One request's reads of its unit's answer.
#[derive(Debug)]
pub struct Flow {
    /// Bytes read off the unit's connection and not yet taken.
    queued: AtomicUsize,
    /// Bytes of the answer taken so far (up to [`FIRST`]).
    taken: AtomicUsize,
    /// The answer's body comes in chunked framing.
    chunked: AtomicBool,
    /// The client's side has taken the answer's head.
    head: AtomicBool,
    /// Cleared when the request ends: a connection reused by the next
    /// request of the same task looks its flow up again.
    live: AtomicBool,
    /// The read waiting for the client's side to take something.
    waiting: AtomicWaker,
    budget: usize,
    /// [`Sizes::trickle`] of the current attempt, in microseconds.
    trickle_us: AtomicU64,
}

impl Flow {
    fn new(sizes: Sizes) -> Self {
        Flow {
            queued: AtomicUsize::new(0),
            taken: AtomicUsize::new(0),
            chunked: AtomicBool::new(false),
            head: AtomicBool::new(false),
            live: AtomicBool::new(true),
            waiting: AtomicWaker::new(),
            budget: sizes.budget,
            trickle_us: AtomicU64::new(micros(sizes.trickle)),
        }
    }

    /// How much the next read may take, of `room` bytes; `None` once the
    /// budget is spent: the read waits until something is taken (`waker`
    /// is woken) or [`Sizes::trickle`] passes, then reads [`SLOW_READ`].
    pub fn next(&self, room: usize, waker: &Waker) -> Option<usize> {
        let left = self.left();
        if left > 0 {
            return Some(room.min(left));
        }
        if !self.head.load(Ordering::Relaxed) {
            // The head is still being read (however long the unit made
            // it): nothing waits for the client yet, the framework caps it.
            return Some(room.min(SLOW_READ));
        }
        self.waiting.register(waker);
        // Taken meanwhile: no wake is lost.
        match self.left() {
            0 => None,
            left => Some(room.min(left)),
        }
    }

    /// What is left of the budget, the answer's first bytes not yet taken
    /// counted in.
    fn left(&self) -> usize {
        let queued = self.queued.load(Ordering::Acquire);
        let first = FIRST - self.taken.load(Ordering::Relaxed);
        (self.budget + first).saturating_sub(queued)
    }

    pub fn trickle(&self) -> Duration {
        Duration::from_micros(self.trickle_us.load(Ordering::Relaxed))
    }

    /// A read of the unit's connection returned `n` bytes.
    pub fn read(&self, n: usize) {
        self.queued.fetch_add(n, Ordering::AcqRel);
    }

    /// The client's side took the answer's head, `bytes` long on the wire,
    /// its body `chunked` or not.
    pub fn head_taken(&self, bytes: usize, chunked: bool) {
        self.chunked.store(chunked, Ordering::Relaxed);
        self.head.store(true, Ordering::Relaxed);
        self.take(bytes);
    }

    /// The client's side took `len` bytes of the body (with their framing,
    /// when chunked: a chunk's size line and its two line ends).
    pub fn taken(&self, len: usize) {
        let framing = if self.chunked.load(Ordering::Relaxed) {
            hex_digits(len) + 4
        } else {
            0
        };
        self.take(len + framing);
    }

    /// A new attempt starts, its waits sized by its own read timeout:
    /// nothing of it is queued yet.
    pub fn restart(&self, sizes: Sizes) {
        self.trickle_us
            .store(micros(sizes.trickle), Ordering::Relaxed);
        self.head.store(false, Ordering::Relaxed);
        self.queued.store(0, Ordering::Relaxed);
        self.taken.store(0, Ordering::Relaxed);
        self.chunked.store(false, Ordering::Relaxed);
    }

    fn take(&self, n: usize) {
        // One task updates a flow: plain loads and stores.
        let taken = self.taken.load(Ordering::Relaxed);
        self.taken.store((taken + n).min(FIRST), Ordering::Relaxed);
        let queued = self.queued.load(Ordering::Acquire);
        self.queued
            .store(queued.saturating_sub(n), Ordering::Release);
        self.waiting.wake();
    }

    /// Whether the request this flow belongs to is still running.
    pub fn live(&self) -> bool {
        self.live.load(Ordering::Relaxed)
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Hex digits of a chunk's size line.
fn hex_digits(len: usize) -> usize {
    (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize
}

/// One worker thread's flows by task, and the size at which dead entries
/// (of requests that ended on another thread) are swept next.
#[derive(Default)]
struct Table {
    flows: HashMap<Id, Arc<Flow>>,
    sweep_at: usize,
}

thread_local! {
    static FLOWS: RefCell<Table> = RefCell::default();
}

/// A request's flow, filed under its task while the request runs.
#[derive(Debug)]
pub struct FlowGuard {
    task: Id,
    flow: Arc<Flow>,
}

impl FlowGuard {
    /// File a new flow under the current task (`None` outside a task).
    pub fn register(sizes: Sizes) -> Option<Self> {
        let task = tokio::task::try_id()?;
        let flow = Arc::new(Flow::new(sizes));
        FLOWS.with_borrow_mut(|t| {
            if t.flows.len() >= t.sweep_at {
                t.flows.retain(|_, f| f.live());
                t.sweep_at = (2 * t.flows.len()).max(64);
            }
            t.flows.insert(task, flow.clone());
        });
        Some(FlowGuard { task, flow })
    }

    pub fn flow(&self) -> &Flow {
        &self.flow
    }
}

impl Drop for FlowGuard {
    fn drop(&mut self) {
        self.flow.live.store(false, Ordering::Relaxed);
        // Only its own: the task's next request may have filed one since.
        let _ = FLOWS.try_with(|t| {
            let mut t = t.borrow_mut();
            if t.flows
                .get(&self.task)
                .is_some_and(|f| Arc::ptr_eq(f, &self.flow))
            {
                t.flows.remove(&self.task);
            }
        });
    }
}

/// The flow of the request the current task is running, if any.
pub fn current() -> Option<Arc<Flow>> {
    let task = tokio::task::try_id()?;
    FLOWS.with_borrow(|t| t.flows.get(&task).cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_keep_a_stalled_response_within_its_bound() {
        for bound in [96 * 1024, 128 * 1024, 200_000, 1024 * 1024] {
            let s = Sizes::within(bound);
            assert!(s.bound() <= bound, "{bound}: {s:?} holds {}", s.bound());
            assert_eq!(s.budget % 1024, 0);
        }
        assert_eq!(Sizes::within(128 * 1024).budget, 27 * 1024);
        assert_eq!(Sizes::within(0).budget, SLOW_READ);
    }

    #[test]
    fn chunk_size_lines_are_counted() {
        assert_eq!(hex_digits(0), 1);
        assert_eq!(hex_digits(15), 1);
        assert_eq!(hex_digits(16), 2);
        assert_eq!(hex_digits(0xffff), 4);
        assert_eq!(hex_digits(0x10000), 5);
    }

    /// A waker that counts its wakes.
    struct Count(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn reads_take_what_is_left_of_the_budget_then_wait() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let flow = Flow::new(Sizes::within(128 * 1024));
        let budget = 27 * 1024;
        let next = |room| flow.next(room, &waker);
        // The first bytes are not counted.
        assert_eq!(next(1 << 20), Some(budget + FIRST));
        assert_eq!(next(100), Some(100));
        // A head longer than all of that is read on, a little at a time,
        // with no wait: no one takes anything before the head is whole.
        flow.read(budget + FIRST);
        assert_eq!(next(1 << 20), Some(SLOW_READ));
        flow.restart(Sizes::within(128 * 1024));
        flow.read(200);
        flow.head_taken(200, false);
        flow.read(FIRST - 200);
        flow.taken(FIRST - 200);
        assert_eq!(next(1 << 20), Some(budget));
        flow.read(20_000);
        assert_eq!(next(1 << 20), Some(budget - 20_000));
        flow.read(budget - 20_000);
        // Spent: the read waits, and a take wakes it.
        assert_eq!(next(1 << 20), None);
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        flow.read(SLOW_READ);
        flow.taken(10_000);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(next(1 << 20), Some(10_000 - SLOW_READ));
        // Chunked framing is taken with its chunk: 0x2710 is 4 digits.
        flow.restart(Sizes::within(128 * 1024).reading_within(Duration::from_millis(40)));
        assert_eq!(flow.trickle(), Duration::from_millis(10));
        flow.head_taken(0, true);
        flow.read(10_000 + 8);
        flow.taken(10_000);
        assert_eq!(next(1 << 20), Some(budget + FIRST - 10_008));
    }

    #[test]
    fn a_wait_stays_well_under_the_read_timeout() {
        let s = Sizes::within(64 * 1024);
        assert_eq!(s.trickle, MAX_TRICKLE);
        let t = |ms| s.reading_within(Duration::from_millis(ms)).trickle;
        assert_eq!(t(60_000), MAX_TRICKLE);
        assert_eq!(t(200), Duration::from_millis(50));
        assert_eq!(t(2), Duration::from_millis(1));
    }

    #[tokio::test]
    async fn a_flow_is_found_by_its_task_until_its_request_ends() {
        // In a task, as a request is (the test's own future is none).
        tokio::spawn(filed_and_found()).await.unwrap();
    }

    async fn filed_and_found() {
        assert!(current().is_none());
        let guard = FlowGuard::register(Sizes::within(64 * 1024)).unwrap();
        let flow = current().expect("filed under this task");
        flow.read(5);
        assert_eq!(guard.flow().queued.load(Ordering::Relaxed), 5);
        // Another task sees none of it.
        let other = tokio::spawn(async { current().is_none() });
        assert!(other.await.unwrap());
        // The next request of the task files its own; the old guard's drop
        // leaves it in place.
        let next = FlowGuard::register(Sizes::within(64 * 1024)).unwrap();
        drop(guard);
        assert!(!flow.live());
        let found = current().unwrap();
        assert!(Arc::ptr_eq(&found, &next.flow));
        drop(next);
        assert!(current().is_none());
    }

    #[tokio::test]
    async fn entries_of_requests_that_ended_elsewhere_are_swept() {
        tokio::spawn(async {
            let sizes = Sizes::within(64 * 1024);
            let mine = FlowGuard::register(sizes).unwrap();
            // Requests that end on another thread leave their entries here.
            for _ in 0..200 {
                let g = tokio::spawn(async move { FlowGuard::register(sizes).unwrap() });
                let g = g.await.unwrap();
                std::thread::spawn(move || drop(g)).join().unwrap();
            }
            let left = FLOWS.with_borrow(|t| t.flows.len());
            assert!(left <= 64, "{left} entries left of 201");
            // A running request's entry is never swept.
            assert!(current().is_some_and(|f| std::ptr::eq(&*f, mine.flow())));
        })
        .await
        .unwrap();
    }
}
