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
//! The gateway sizes those reads. Each request's [`Flow`] counts the reads
//! of its unit's connection since the client's side last took something
//! ([`Flow::taken`]: the answer's head, or a chunk of its body). The first
//! read after a take may be [`Sizes::full`]. Before the next one, the
//! reading side yields once, so that the client's side can take what was
//! read; if it has still taken nothing, the read is only [`SLOW_READ`].
//! Reads are never held back here (a held read would run into the unit's
//! read timeout): once the queue is full the framework stops reading, and
//! the unit's bytes wait in the kernel. So a stalled response holds at most
//! two full reads and seven slow ones ([`Sizes::bound`]), while a client
//! that keeps up gets full reads.
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
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use tokio::task::Id;

/// A read while the client's side has taken nothing since the last one.
pub const SLOW_READ: usize = 1024;

/// Chunks the framework holds for one response at most (four queued, four
/// being written, one waiting to be queued).
const CHUNKS: usize = 9;

/// Full reads a stalled response can hold (see the module doc).
const FULL_CHUNKS: usize = 2;

/// The read sizes for a bound on what one stalled response holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// A read right after the client's side took a chunk.
    pub full: usize,
}

impl Sizes {
    /// The largest full read that keeps a stalled response within `bound`
    /// bytes, in whole KiB (at least [`SLOW_READ`]).
    pub fn within(bound: usize) -> Self {
        let slow = (CHUNKS - FULL_CHUNKS) * SLOW_READ;
        let full = bound.saturating_sub(slow) / FULL_CHUNKS;
        Sizes {
            full: (full / 1024 * 1024).max(SLOW_READ),
        }
    }

    /// What a stalled response holds at most with these sizes.
    pub fn bound(self) -> usize {
        FULL_CHUNKS * self.full + (CHUNKS - FULL_CHUNKS) * SLOW_READ
    }
}

/// One request's reads of its unit's answer.
#[derive(Debug)]
pub struct Flow {
    /// Reads since the client's side last took something.
    reads: AtomicU32,
    /// Whether the reading side has yielded since then.
    yielded: AtomicBool,
    /// Cleared when the request ends: a connection reused by the next
    /// request of the same task looks its flow up again.
    live: AtomicBool,
    sizes: Sizes,
}

/// What the unit's connection does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Read up to this many bytes.
    Read(usize),
    /// Let the client's side run first (once per take).
    Yield,
}

impl Flow {
    fn new(sizes: Sizes) -> Self {
        Flow {
            reads: AtomicU32::new(0),
            yielded: AtomicBool::new(false),
            live: AtomicBool::new(true),
            sizes,
        }
    }

    /// The next read, of at most `room` bytes.
    pub fn next(&self, room: usize) -> Next {
        if self.reads.load(Ordering::Relaxed) == 0 {
            return Next::Read(room.min(self.sizes.full));
        }
        if !self.yielded.swap(true, Ordering::Relaxed) {
            return Next::Yield;
        }
        Next::Read(room.min(SLOW_READ))
    }

    /// A read of the unit's connection returned bytes.
    pub fn read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }

    /// The client's side took something (or a new attempt starts).
    pub fn taken(&self) {
        self.reads.store(0, Ordering::Relaxed);
        self.yielded.store(false, Ordering::Relaxed);
    }

    /// Whether the request this flow belongs to is still running.
    pub fn live(&self) -> bool {
        self.live.load(Ordering::Relaxed)
    }
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
        for bound in [16 * 1024, 64 * 1024, 100_000, 1024 * 1024] {
            let s = Sizes::within(bound);
            assert!(s.bound() <= bound, "{bound}: {s:?} holds {}", s.bound());
            assert_eq!(s.full % 1024, 0);
        }
        assert_eq!(Sizes::within(64 * 1024).full, 28 * 1024);
        assert_eq!(Sizes::within(0).full, SLOW_READ);
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
        let full = Next::Read(28 * 1024);
        assert_eq!(flow.next(1 << 20), full);
        flow.read();
        // One yield, then slow reads until something is taken.
        assert_eq!(flow.next(1 << 20), Next::Yield);
        assert_eq!(flow.next(1 << 20), Next::Read(SLOW_READ));
        flow.read();
        assert_eq!(flow.next(100), Next::Read(100));
        guard.flow().taken();
        assert_eq!(flow.next(1 << 20), full);
        flow.read();
        assert_eq!(flow.next(1 << 20), Next::Yield);
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
