//! How the gateway stops. SIGTERM: `/readyz` answers 503 at once and the
//! gateway serves on for `shutdown_delay_s`, so that balancers see it
//! leave; then its listeners close, idle connections are closed (HTTP/2:
//! GOAWAY), the requests in flight have `grace_period_s` to finish (the
//! stop ends as soon as no connection is left), its `gateways/<id>` key
//! is deleted, and it exits 0. A second SIGTERM, or a SIGINT, stops at
//! once. SIGQUIT is the framework's listener hand-over. SIGHUP never stops
//! it (it reopens the access log file).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

use crate::state::Shared;

/// Where the gateway is in stopping, shared by the signal watch, `/readyz`
/// and the registration.
#[derive(Debug)]
pub struct Stopping {
    begun: AtomicBool,
    /// True once the registration is to delete its key and end.
    leave: watch::Sender<bool>,
    /// The registration holds a key (etcd): leaving waits for it.
    registered: AtomicBool,
    /// The key is gone (or the registration gave up on it).
    left: AtomicBool,
}

impl Default for Stopping {
    fn default() -> Self {
        Stopping {
            begun: AtomicBool::new(false),
            leave: watch::channel(false).0,
            registered: AtomicBool::new(false),
            left: AtomicBool::new(false),
        }
    }
}

impl Stopping {
    /// The stop has begun: `/readyz` answers 503 from now on.
    pub fn begin(&self) {
        self.begun.store(true, Ordering::SeqCst);
    }

    pub fn begun(&self) -> bool {
        self.begun.load(Ordering::SeqCst)
    }

    /// The registration's side: told when to leave.
    pub fn leave_signal(&self) -> watch::Receiver<bool> {
        self.leave.subscribe()
    }

    /// The registration wrote its key (leaving will wait for its removal).
    pub fn registered(&self) {
        self.registered.store(true, Ordering::SeqCst);
    }

    /// The registration is over: its key deleted, or given up.
    pub fn left(&self) {
        self.left.store(true, Ordering::SeqCst);
    }

    /// Ask the registration to delete its key and wait for it, at most
    /// `wait` (the lease expires on its own otherwise).
    pub fn deregister(&self, wait: Duration) -> bool {
        self.leave.send_replace(true);
        if !self.registered.load(Ordering::SeqCst) {
            return true;
        }
        let until = Instant::now() + wait;
        while !self.left.load(Ordering::SeqCst) {
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }
}

/// A gateway started with `--upgrade` takes the running one's sockets
/// only with a topology in force (from its last-known-good file, its
/// topology file, or etcd): wait for one, at most `within`.
pub fn wait_for_topology(shared: &Shared, within: Duration) -> anyhow::Result<()> {
    let until = Instant::now() + within;
    while shared.plane.load().is_none() {
        if Instant::now() >= until {
            anyhow::bail!(
                "--upgrade: no topology within {within:?}; the running gateway keeps its sockets"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A stop signal, as forwarded to [`StopSignals::recv`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sig {
    Term,
    Int,
    Quit,
}

/// The stop signals, watched for the framework's server. One task holds
/// the signal streams for the life of the server and forwards what comes
/// (a signal between two calls of `recv` is kept, not lost); once a
/// graceful stop or a hand-over has begun, it ends the process at once on
/// a SIGTERM or SIGINT itself.
pub struct StopSignals {
    shared: Arc<Shared>,
    forwarded: tokio::sync::Mutex<Option<mpsc::UnboundedReceiver<Sig>>>,
    /// Set when `recv` hands the server a graceful stop or a hand-over.
    winding_down: Arc<AtomicBool>,
}

impl StopSignals {
    pub fn new(shared: Arc<Shared>) -> Self {
        StopSignals {
            shared,
            forwarded: tokio::sync::Mutex::new(None),
            winding_down: Arc::new(AtomicBool::new(false)),
        }
    }
}

#[async_trait]
impl ShutdownSignalWatch for StopSignals {
    async fn recv(&self) -> ShutdownSignal {
        // Called again when a hand-over failed: serving again.
        self.winding_down.store(false, Ordering::SeqCst);
        let mut forwarded = self.forwarded.lock().await;
        if forwarded.is_none() {
            *forwarded = forward(self.shared.clone(), self.winding_down.clone());
        }
        let Some(rx) = forwarded.as_mut() else {
            return std::future::pending().await;
        };
        match rx.recv().await {
            Some(Sig::Term) => {}
            Some(Sig::Int) => return at_once("SIGINT"),
            Some(Sig::Quit) => {
                tracing::info!("SIGQUIT: handing the listening sockets over");
                self.winding_down.store(true, Ordering::SeqCst);
                return ShutdownSignal::GracefulUpgrade;
            }
            None => return std::future::pending().await,
        }
        let stop = &self.shared.cfg.stop;
        self.shared.stopping.begin();
        tracing::info!(
            delay_s = stop.delay.as_secs(),
            grace_s = stop.grace.as_secs(),
            "SIGTERM: /readyz answers 503; serving on for shutdown_delay_s"
        );
        let delay = tokio::time::sleep(stop.delay);
        tokio::pin!(delay);
        loop {
            tokio::select! {
                () = &mut delay => break,
                sig = rx.recv() => match sig {
                    Some(Sig::Term) => return at_once("a second SIGTERM"),
                    Some(Sig::Int) => return at_once("SIGINT"),
                    // Already stopping: nothing to hand over.
                    Some(Sig::Quit) | None => {}
                },
            }
        }
        self.winding_down.store(true, Ordering::SeqCst);
        tracing::info!(
            grace_s = stop.grace.as_secs(),
            "listeners closing; the requests in flight have grace_period_s to finish"
        );
        ShutdownSignal::GracefulTerminate
    }
}

fn at_once(what: &str) -> ShutdownSignal {
    tracing::info!("{what}: stopping at once");
    ShutdownSignal::FastShutdown
}

/// Start the task that holds the signal streams (on the server's own
/// runtime) and forwards them; `None` if they cannot be watched.
fn forward(
    shared: Arc<Shared>,
    winding_down: Arc<AtomicBool>,
) -> Option<mpsc::UnboundedReceiver<Sig>> {
    let (mut term, mut int, mut quit) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::quit()),
    ) {
        (Ok(t), Ok(i), Ok(q)) => (t, i, q),
        (Err(e), ..) | (_, Err(e), _) | (.., Err(e)) => {
            tracing::error!(error = %e, "stop signals cannot be watched");
            return None;
        }
    };
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let sig = tokio::select! {
                Some(()) = term.recv() => Sig::Term,
                Some(()) = int.recv() => Sig::Int,
                Some(()) = quit.recv() => Sig::Quit,
                else => return,
            };
            if sig != Sig::Quit && winding_down.load(Ordering::SeqCst) {
                // During the grace period (or a hand-over): at once. The
                // access log's queued lines get 200 ms.
                tracing::info!("stop signal while winding down: stopping at once");
                shared.access.close(Duration::from_millis(200));
                std::process::exit(0);
            }
            if tx.send(sig).is_err() {
                return;
            }
        }
    });
    Some(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaving_waits_only_for_a_registration_that_holds_a_key() {
        let s = Stopping::default();
        let rx = s.leave_signal();
        assert!(
            s.deregister(Duration::from_secs(5)),
            "no key: nothing to wait for"
        );
        assert!(*rx.borrow(), "the registration is told to leave");
        let s = Arc::new(Stopping::default());
        s.registered();
        assert!(
            !s.deregister(Duration::from_millis(30)),
            "a key never deleted"
        );
        let t = std::thread::spawn({
            let s = s.clone();
            move || s.deregister(Duration::from_secs(10))
        });
        s.left();
        assert!(t.join().unwrap());
    }
}
