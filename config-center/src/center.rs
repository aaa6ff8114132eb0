//! Validate, apply, publish: the one place a topology snapshot changes.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use tokio::sync::watch;
use unit_router::{Topology, ValidationErrors};

use crate::clock::{Clock, SystemClock};
use crate::kv::Kv;
use crate::lkg;
use crate::status::Status;

/// A published snapshot: the validated topology and the raw pairs it came from.
#[derive(Debug)]
pub struct Snapshot {
    pub topology: Topology,
    pub kv: Kv,
}

impl Snapshot {
    pub fn epoch(&self) -> i64 {
        self.topology.epoch
    }
}

/// Why a change was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("change at epoch {epoch} rejected: {errors}")]
    Invalid {
        epoch: i64,
        errors: ValidationErrors,
    },
    #[error("change at epoch {epoch} is older than the snapshot in force ({current})")]
    Stale { epoch: i64, current: i64 },
}

struct Inner {
    current: ArcSwapOption<Snapshot>,
    epoch_tx: watch::Sender<i64>,
    status: Mutex<Status>,
    state_dir: Option<PathBuf>,
    clock: Box<dyn Clock>,
}

/// The snapshot holder shared by sources, the data plane and the admin API.
#[derive(Clone)]
pub struct ConfigCenter {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ConfigCenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigCenter")
            .field("epoch", &self.epoch())
            .finish()
    }
}

impl ConfigCenter {
    /// A center with no snapshot yet. With `state_dir`, every applied change
    /// is persisted there as the last-known-good snapshot.
    pub fn new(state_dir: Option<PathBuf>) -> Self {
        Self::with_clock(state_dir, SystemClock)
    }

    /// Same, with a clock of the caller's.
    pub fn with_clock(state_dir: Option<PathBuf>, clock: impl Clock) -> Self {
        let (epoch_tx, _) = watch::channel(0);
        ConfigCenter {
            inner: Arc::new(Inner {
                current: ArcSwapOption::empty(),
                epoch_tx,
                status: Mutex::new(Status {
                    source: "none".into(),
                    ..Status::default()
                }),
                state_dir,
                clock: Box::new(clock),
            }),
        }
    }

    /// The snapshot in force (one atomic load; `None` before the first).
    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.inner.current.load_full()
    }

    /// Epoch of the snapshot in force.
    pub fn epoch(&self) -> Option<i64> {
        self.inner.current.load().as_ref().map(|s| s.epoch())
    }

    /// A receiver that changes on every publish (its value is the new epoch).
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.inner.epoch_tx.subscribe()
    }

    /// Unix seconds now, by this center's clock.
    pub fn now(&self) -> i64 {
        self.inner.clock.now()
    }

    /// A copy of the status.
    pub fn status(&self) -> Status {
        self.inner.status.lock().expect("status lock").clone()
    }

    /// Validate and publish the pairs `kv` as of `epoch`. A rejected change
    /// leaves the snapshot in force untouched.
    pub fn apply(&self, epoch: i64, kv: Kv) -> Result<Arc<Snapshot>, ApplyError> {
        self.apply_from(epoch, kv, "source")
    }

    fn apply_from(&self, epoch: i64, kv: Kv, origin: &str) -> Result<Arc<Snapshot>, ApplyError> {
        if let Some(current) = self.epoch() {
            if epoch < current {
                let e = ApplyError::Stale { epoch, current };
                self.note_rejection(&e);
                return Err(e);
            }
        }
        let now = self.now();
        let topology = match Topology::build(epoch, &kv, now) {
            Ok(t) => t,
            Err(errors) => {
                let e = ApplyError::Invalid { epoch, errors };
                self.note_rejection(&e);
                return Err(e);
            }
        };
        for n in &topology.notices {
            tracing::warn!(epoch, notice = %n, "topology applied with a notice");
        }
        let snap = Arc::new(Snapshot { topology, kv });
        self.inner.current.store(Some(snap.clone()));
        {
            let mut st = self.inner.status.lock().expect("status lock");
            st.epoch = Some(epoch);
            st.origin = Some(origin.to_owned());
            st.applied_at = Some(now);
            st.applied_changes += 1;
            st.notices = snap.topology.notices.clone();
        }
        tracing::info!(epoch, origin, "topology snapshot applied");
        self.inner.epoch_tx.send_replace(epoch);
        if origin != "last-known-good" {
            self.persist(&snap, now);
        }
        Ok(snap)
    }

    fn note_rejection(&self, e: &ApplyError) {
        tracing::error!(error = %e, "topology change rejected; last good snapshot stays in force");
        let mut st = self.inner.status.lock().expect("status lock");
        st.rejected_changes += 1;
        st.last_error = Some(e.to_string());
    }

    fn persist(&self, snap: &Snapshot, now: i64) {
        let Some(dir) = &self.inner.state_dir else {
            return;
        };
        let stored = lkg::Stored {
            format: 1,
            epoch: snap.epoch(),
            source: self.status().source,
            written_at: now,
            kv: snap.kv.clone(),
        };
        if let Err(e) = lkg::write(dir, &stored) {
            tracing::error!(dir = %dir.display(), error = %e, "could not write the last-known-good snapshot");
            self.record_error(format!("writing last-known-good snapshot: {e}"));
        }
    }

    /// Load the last-known-good snapshot from the state dir, if there is one
    /// and no snapshot is in force. Returns its epoch.
    pub fn load_last_known_good(&self) -> Result<Option<i64>, String> {
        let Some(dir) = &self.inner.state_dir else {
            return Ok(None);
        };
        let Some(stored) = lkg::read(dir)? else {
            return Ok(None);
        };
        if self.epoch().is_some() {
            return Ok(None);
        }
        self.apply_from(stored.epoch, stored.kv, "last-known-good")
            .map(|s| Some(s.epoch()))
            .map_err(|e| format!("{}: {e}", lkg::path(dir).display()))
    }

    /// Rebuild the snapshot in force from its own pairs (same epoch): drain
    /// `until` deadlines are re-evaluated.
    pub fn reevaluate(&self) {
        if let Some(s) = self.current() {
            let origin = self.status().origin.unwrap_or_else(|| "source".into());
            let _ = self.apply_from(s.epoch(), s.kv.clone(), &origin);
        }
    }

    /// Re-evaluate the snapshot whenever a drain's `until` passes. Runs forever.
    pub async fn run_drain_expiry(self) {
        let mut rx = self.subscribe();
        loop {
            let next = self.current().and_then(|s| s.topology.next_drain_change());
            let wait = match next {
                Some(t) => {
                    let secs = (t - self.now()).max(0) as u64;
                    tokio::time::Duration::from_secs(secs) + tokio::time::Duration::from_millis(50)
                }
                None => tokio::time::Duration::from_secs(3600),
            };
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(wait) => {
                    if next.is_some_and(|t| self.now() >= t) {
                        self.reevaluate();
                    }
                }
            }
        }
    }

    /// Describe the source (shown in status).
    pub fn set_source(&self, source: impl Into<String>) {
        self.inner.status.lock().expect("status lock").source = source.into();
    }

    /// Record whether the source is reachable.
    pub fn set_connected(&self, connected: bool) {
        self.inner.status.lock().expect("status lock").connected = connected;
    }

    /// Record that the source re-listed after a compaction.
    pub fn note_relist(&self) {
        self.inner
            .status
            .lock()
            .expect("status lock")
            .compaction_relists += 1;
    }

    /// Record a source error (shown in status).
    pub fn record_error(&self, e: impl Into<String>) {
        self.inner.status.lock().expect("status lock").last_error = Some(e.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn sample() -> Kv {
        crate::kv::parse_document(include_str!("../../deploy/local/topology.yaml"), "sample")
            .unwrap()
    }

    #[test]
    fn invalid_change_keeps_the_last_good_snapshot() {
        let c = ConfigCenter::new(None);
        let rx = c.subscribe();
        c.apply(5, sample()).unwrap();
        assert_eq!(*rx.borrow(), 5);
        let mut bad = sample();
        bad.insert("units/bj-1".into(), "{".into());
        let err = c.apply(6, bad).unwrap_err();
        assert!(err.to_string().contains("units/bj-1"), "{err}");
        assert_eq!(c.epoch(), Some(5));
        let st = c.status();
        assert_eq!((st.rejected_changes, st.applied_changes), (1, 1));
        assert!(st.last_error.unwrap().contains("units/bj-1"));
        assert!(matches!(
            c.apply(4, sample()),
            Err(ApplyError::Stale { .. })
        ));
    }

    #[test]
    fn applied_changes_are_persisted_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let c = ConfigCenter::new(Some(dir.path().into()));
        c.apply(9, sample()).unwrap();
        let fresh = ConfigCenter::new(Some(dir.path().into()));
        assert_eq!(fresh.load_last_known_good(), Ok(Some(9)));
        assert_eq!(fresh.status().origin.as_deref(), Some("last-known-good"));
        assert_eq!(fresh.current().unwrap().kv, sample());
    }

    #[tokio::test]
    async fn drain_expiry_is_reevaluated() {
        let clock = Arc::new(ManualClock::new(1_800_000_000));
        let c = ConfigCenter::with_clock(None, clock.clone());
        let mut kv = sample();
        kv.insert(
            "drain/unit/bj-1".into(),
            r#"{"until":"2027-01-15T08:00:01Z"}"#.into(),
        );
        c.apply(3, kv).unwrap();
        let bj1 = c.current().unwrap().topology.unit_id("bj-1").unwrap();
        assert!(c.current().unwrap().topology.unit(bj1).drain.is_some());
        clock.set(1_800_000_001);
        let task = tokio::spawn(c.clone().run_drain_expiry());
        let deadline = tokio::time::Instant::now() + tokio::time::Duration::from_secs(10);
        while c.current().unwrap().topology.unit(bj1).drain.is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "drain expiry not re-evaluated"
            );
            tokio::time::sleep(tokio::time::Duration::from_millis(10)).await;
        }
        assert_eq!(c.status().applied_changes, 2);
        task.abort();
    }
}
