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
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;

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

/// The stop signals, watched for the framework's server.
pub struct StopSignals {
    pub shared: Arc<Shared>,
}

#[async_trait]
impl ShutdownSignalWatch for StopSignals {
    async fn recv(&self) -> ShutdownSignal {
        let (mut term, mut int, mut quit) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) {
            (Ok(t), Ok(i), Ok(q)) => (t, i, q),
            (Err(e), ..) | (_, Err(e), _) | (.., Err(e)) => {
                tracing::error!(error = %e, "stop signals cannot be watched");
                return std::future::pending().await;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => return at_once("SIGINT"),
            _ = quit.recv() => return ShutdownSignal::GracefulUpgrade,
        }
        let stop = &self.shared.cfg.stop;
        self.shared.stopping.begin();
        tracing::info!(
            delay_s = stop.delay.as_secs(),
            grace_s = stop.grace.as_secs(),
            "SIGTERM: /readyz answers 503; serving on for shutdown_delay_s"
        );
        tokio::select! {
            () = tokio::time::sleep(stop.delay) => {}
            _ = term.recv() => return at_once("a second SIGTERM"),
            _ = int.recv() => return at_once("SIGINT"),
        }
        tokio::spawn(cut_short(self.shared.clone(), term, int));
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

/// During the grace period, a second SIGTERM or a SIGINT ends the process
/// at once (the access log's queued lines get 200 ms).
async fn cut_short(shared: Arc<Shared>, mut term: Signal, mut int: Signal) {
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("stop signal during the grace period: stopping at once");
    shared.access.close(Duration::from_millis(200));
    std::process::exit(0);
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
