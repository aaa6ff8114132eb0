//! The common decision path allocates nothing (counted by a global allocator).
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use unit_router::fixture::large_kv;
use unit_router::*;

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn decide_does_not_allocate() {
    let t = Topology::build(1, &large_kv(), 0).unwrap();
    let f = Facts {
        header_user: Some("user-829341"),
        ..Facts::new(
            Listener::Public,
            "API17.example.com:443",
            "/v1/api13/orders/77",
            "GET",
            0,
        )
    };
    let sick = Unhealthy(vec![t.shard_owner(t.shard_of("user-829341")).unwrap()]);
    let before = ALLOCS.load(Ordering::SeqCst);
    for _ in 0..100 {
        let d = decide(&t, &f, &AllHealthy).unwrap();
        assert_eq!(d.reason, Reason::Shard);
        let d = decide(&t, &f, &sick).unwrap();
        assert_eq!(d.reason, Reason::Failover);
    }
    assert_eq!(ALLOCS.load(Ordering::SeqCst) - before, 0);
}
