//! The kernel's queue toward a client: at most [`UNSENT`] bytes of it may
//! wait unsent (`TCP_NOTSENT_LOWAT`), so that a client that stops reading
//! holds kilobytes of kernel memory, not the megabytes the send buffer
//! grows to. Bytes in flight (sent, not yet acknowledged) are not limited:
//! a fast client over a long path keeps its full window.

use std::os::fd::BorrowedFd;

use pingora::protocols::Stream;
use socket2::SockRef;

/// Unsent bytes the kernel queues toward one client before the gateway's
/// writes wait.
pub const UNSENT: u32 = 16 * 1024;

/// Limit the unsent queue of an accepted TCP connection (anything else is
/// left as it is).
#[allow(unsafe_code)]
pub fn limit(stream: &Stream) {
    // An accepted socket's id is its descriptor.
    let fd = stream.id();
    if fd < 0 {
        return;
    }
    // SAFETY: `fd` is the open socket `stream` owns, borrowed no longer
    // than this call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    if let Err(e) = SockRef::from(&fd).set_tcp_notsent_lowat(UNSENT) {
        tracing::debug!(error = %e, "TCP_NOTSENT_LOWAT not set");
    }
}
