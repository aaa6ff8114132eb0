//! A response that makes no progress toward the client is ended: the
//! connection's writes are watched, and once one has waited for the client
//! for `send_timeout_ms` without a byte taken, it fails with `TimedOut`
//! (the framework then closes the connection and drops the upstream one).
//! Any byte the client takes restarts the clock, so a slow client that
//! reads is never cut off by it. It covers every write of an HTTP/1
//! connection, the response head and the end of a chunked body included
//! (the framework's own write timeout, which bounds a whole write batch
//! rather than progress, is not used on HTTP/1).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// The clock of one connection's writes.
#[derive(Debug)]
pub struct SendWatch {
    timeout: Duration,
    /// Allocated on the first stall, then reset: one timer per connection.
    clock: Option<Pin<Box<Sleep>>>,
    stalled: bool,
}

impl SendWatch {
    pub fn new(timeout: Duration) -> Self {
        SendWatch {
            timeout,
            clock: None,
            stalled: false,
        }
    }

    /// Pass on the result of a write or flush of the inner stream:
    /// `Pending` starts (or keeps) the clock, progress stops it, and a
    /// clock run out turns `Pending` into `TimedOut`.
    pub fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<T>>,
        progressed: impl FnOnce(&T) -> bool,
    ) -> Poll<io::Result<T>> {
        match r {
            Poll::Pending => {
                if !self.stalled {
                    self.stalled = true;
                    let at = Instant::now() + self.timeout;
                    match self.clock.as_mut() {
                        Some(c) => c.as_mut().reset(at),
                        None => self.clock = Some(Box::pin(tokio::time::sleep_until(at))),
                    }
                }
                let out = self.clock.as_mut().map(|c| c.as_mut().poll(cx));
                if out.is_some_and(|p| p.is_ready()) {
                    self.stalled = false;
                    let e = io::Error::new(io::ErrorKind::TimedOut, SEND_TIMEOUT);
                    return Poll::Ready(Err(e));
                }
                Poll::Pending
            }
            Poll::Ready(Ok(v)) => {
                if progressed(&v) {
                    self.stalled = false;
                }
                Poll::Ready(Ok(v))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
    }
}

/// The error message of a write ended by the watch (how the request side
/// tells a send timeout from other write errors).
pub const SEND_TIMEOUT: &str = "no progress toward the client within send_timeout_ms";

/// Whether `e` (or what caused it) is a send timeout: the watch's, or the
/// framework's own write timeout.
pub fn is_send_timeout(e: &pingora::Error) -> bool {
    if *e.etype() == pingora::ErrorType::WriteTimedout {
        return true;
    }
    e.root_cause().to_string().contains(SEND_TIMEOUT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_write_without_progress_times_out_and_progress_stops_the_clock() {
        let t = Duration::from_millis(100);
        let mut w = SendWatch::new(t);
        let started = Instant::now();
        let r = std::future::poll_fn(|cx| w.watch::<usize>(cx, Poll::Pending, |n| *n > 0)).await;
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= t);
        // A stall, then a byte taken: the clock is stopped, not running on.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(w
            .watch::<usize>(&mut cx, Poll::Pending, |n| *n > 0)
            .is_pending());
        assert!(w.stalled);
        let r = w.watch(&mut cx, Poll::Ready(Ok(1usize)), |n| *n > 0);
        assert!(matches!(r, Poll::Ready(Ok(1))) && !w.stalled);
        // Nothing taken is no progress.
        assert!(w
            .watch::<usize>(&mut cx, Poll::Pending, |n| *n > 0)
            .is_pending());
        let _ = w.watch(&mut cx, Poll::Ready(Ok(0usize)), |n| *n > 0);
        assert!(w.stalled);
    }
}
