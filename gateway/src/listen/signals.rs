//! What the request side may tell the connection its request came on,
//! without knowing what that connection is: its head has been read (the
//! head limits stop applying), or the gateway answered before reading the
//! body (the close lingers, so the client reads the answer instead of a
//! reset). The connection pipeline puts a connection's [`HeadSignals`] in
//! scope of the task that serves its HTTP/1 requests ([`scope`]); HTTP/2
//! streams run in tasks of their own and have none (their framing has its
//! own limits), and the signals are then no-ops.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

/// Phase of a guarded HTTP/1 connection.
pub(super) const ARMED: u8 = 0; // a new head may start; clock not running
pub(super) const HEAD: u8 = 1; // reading a head
pub(super) const BODY: u8 = 2; // head parsed: body and response, nothing enforced

/// The state a connection's head guard shares with its requests.
#[derive(Debug)]
pub struct HeadSignals {
    phase: AtomicU8,
    linger: AtomicBool,
}

impl HeadSignals {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(HeadSignals {
            phase: AtomicU8::new(HEAD),
            linger: AtomicBool::new(false),
        })
    }

    pub(super) fn phase(&self) -> u8 {
        self.phase.load(Ordering::Acquire)
    }

    pub(super) fn set_phase(&self, phase: u8) {
        self.phase.store(phase, Ordering::Release);
    }

    /// The request is over: the next bytes are the next request's head.
    pub(super) fn rearm(&self) {
        self.set_phase(ARMED);
    }

    /// Take the linger request (set by [`linger_on_close`]).
    pub(super) fn take_linger(&self) -> bool {
        self.linger.swap(false, Ordering::AcqRel)
    }
}

tokio::task_local! {
    static CONNECTION: Arc<HeadSignals>;
}

/// Run `serve` with `signals` as the connection of the requests it serves.
pub(super) async fn scope<F: Future>(signals: Option<Arc<HeadSignals>>, serve: F) -> F::Output {
    match signals {
        Some(s) => CONNECTION.scope(s, serve).await,
        None => serve.await,
    }
}

/// The request's head is in: its size and time limits stop applying until
/// the connection is handed back for its next request.
pub fn head_read() {
    let _ = CONNECTION.try_with(|s| s.set_phase(BODY));
}

/// The gateway answered without reading the request body: drain a little
/// of it on close so the answer is not lost to a reset.
pub fn linger_on_close() {
    let _ = CONNECTION.try_with(|s| s.linger.store(true, Ordering::Release));
}
