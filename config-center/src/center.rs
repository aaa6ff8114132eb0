//! Validate, apply, publish: the one place a topology snapshot changes.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

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
    /// Another publish came first: the candidate was derived from a snapshot
    /// that is no longer in force (a re-evaluation, the file source's next
    /// epoch, the last-known-good snapshot at start), or it repeats the epoch
    /// in force but was built at an earlier time. Not counted as a rejection.
    #[error("change at epoch {epoch} superseded: another snapshot was published first")]
    Superseded { epoch: i64, current: Option<i64> },
}

/// What a publish requires of the snapshot in force. Checked under the
/// writer lock, together with the store, so no other publish can come
/// between the check and the store.
enum Expect {
    /// No snapshot in force yet.
    Empty,
    /// Exactly this snapshot in force (compared by pointer).
    Same(Arc<Snapshot>),
    /// No newer epoch in force; at the same epoch, no snapshot built later.
    NotNewer,
}

/// A validated candidate: built, not yet published.
struct Prepared {
    snap: Arc<Snapshot>,
    /// Unix seconds the topology was built at (drain deadlines are judged by it).
    now: i64,
    /// `None` keeps the origin of the snapshot in force (a re-evaluation).
    origin: Option<String>,
}

struct Inner {
    current: ArcSwapOption<Snapshot>,
    epoch_tx: watch::Sender<i64>,
    status: Mutex<Status>,
    /// Held by a publish from its check to its last-known-good write: the one
    /// writer of `current`, the applied part of `status`, `epoch_tx` and the
    /// last-known-good file.
    writer: Mutex<()>,
    state_dir: Option<PathBuf>,
    clock: Box<dyn Clock>,
    /// The etcd revision of the newest topology change in force (gateway
    /// registrations excluded), as its source knows it.
    change_revision: std::sync::atomic::AtomicI64,
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
                writer: Mutex::new(()),
                state_dir,
                clock: Box::new(clock),
                change_revision: std::sync::atomic::AtomicI64::new(0),
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
        self.status_lock().clone()
    }

    fn status_lock(&self) -> MutexGuard<'_, Status> {
        self.inner.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Validate and publish the pairs `kv` as of `epoch`. A rejected change
    /// leaves the snapshot in force untouched; so does a change older than
    /// the snapshot in force, even when it loses a race to a newer one.
    pub fn apply(&self, epoch: i64, kv: Kv) -> Result<Arc<Snapshot>, ApplyError> {
        // Cheap early answer; `publish` checks again under the writer lock.
        if let Some(current) = self.epoch().filter(|&c| epoch < c) {
            let e = ApplyError::Stale { epoch, current };
            self.note_rejection(&e);
            return Err(e);
        }
        let p = self.prepare(epoch, kv, Some("source"))?;
        self.publish(p, Expect::NotNewer)
    }

    /// Publish `kv` at the epoch after the one in force (1 for the first),
    /// unless it equals the pairs in force. Returns the epoch in force after.
    /// Choosing the epoch and publishing are one compare-and-swap, so two
    /// callers never publish the same epoch or undo each other.
    pub fn apply_next(&self, kv: Kv) -> Result<i64, ApplyError> {
        loop {
            let base = self.current();
            if let Some(b) = base.as_ref().filter(|b| b.kv == kv) {
                return Ok(b.epoch());
            }
            let epoch = base.as_ref().map_or(0, |b| b.epoch()) + 1;
            let p = self.prepare(epoch, kv.clone(), Some("source"))?;
            let expect = base.map_or(Expect::Empty, Expect::Same);
            match self.publish(p, expect) {
                Err(ApplyError::Superseded { .. }) => continue,
                r => return r.map(|s| s.epoch()),
            }
        }
    }

    /// Build and validate a candidate (no shared state changes, except the
    /// rejection count when it is invalid).
    fn prepare(&self, epoch: i64, kv: Kv, origin: Option<&str>) -> Result<Prepared, ApplyError> {
        let now = self.now();
        let topology = Topology::build(epoch, &kv, now).map_err(|errors| {
            let e = ApplyError::Invalid { epoch, errors };
            self.note_rejection(&e);
            e
        })?;
        Ok(Prepared {
            snap: Arc::new(Snapshot { topology, kv }),
            now,
            origin: origin.map(str::to_owned),
        })
    }

    /// Publish a candidate if the snapshot in force is still what `expect`
    /// says: check, store, status, notification and last-known-good write
    /// happen under the writer lock, as one step.
    fn publish(&self, p: Prepared, expect: Expect) -> Result<Arc<Snapshot>, ApplyError> {
        let _writer = self.inner.writer.lock().unwrap_or_else(|e| e.into_inner());
        let epoch = p.snap.epoch();
        let in_force = self.current();
        if let Err(e) = self.check(&p, &expect, in_force.as_ref()) {
            if matches!(e, ApplyError::Stale { .. }) {
                self.note_rejection(&e);
            } else {
                tracing::debug!(error = %e, "topology candidate dropped");
            }
            return Err(e);
        }
        for n in &p.snap.topology.notices {
            tracing::warn!(epoch, notice = %n, "topology applied with a notice");
        }
        self.inner.current.store(Some(p.snap.clone()));
        let origin = {
            let mut st = self.status_lock();
            let origin = p
                .origin
                .or_else(|| st.origin.clone())
                .unwrap_or_else(|| "source".into());
            st.epoch = Some(epoch);
            st.origin = Some(origin.clone());
            st.applied_at = Some(p.now);
            st.applied_changes += 1;
            st.notices = p.snap.topology.notices.clone();
            origin
        };
        tracing::info!(epoch, origin, "topology snapshot applied");
        self.inner.epoch_tx.send_replace(epoch);
        if origin != "last-known-good" {
            self.persist(&p.snap, p.now);
        }
        Ok(p.snap)
    }

    /// Whether `p` may replace `in_force` (called under the writer lock).
    fn check(
        &self,
        p: &Prepared,
        expect: &Expect,
        in_force: Option<&Arc<Snapshot>>,
    ) -> Result<(), ApplyError> {
        let epoch = p.snap.epoch();
        let current = in_force.map(|s| s.epoch());
        let superseded = ApplyError::Superseded { epoch, current };
        match (expect, in_force) {
            (Expect::Empty, None) | (Expect::NotNewer, None) => Ok(()),
            (Expect::Empty, Some(_)) | (Expect::Same(_), None) => Err(superseded),
            (Expect::Same(base), Some(cur)) if Arc::ptr_eq(base, cur) => Ok(()),
            (Expect::Same(_), Some(_)) => Err(superseded),
            (Expect::NotNewer, Some(cur)) if epoch < cur.epoch() => Err(ApplyError::Stale {
                epoch,
                current: cur.epoch(),
            }),
            (Expect::NotNewer, Some(cur)) if epoch == cur.epoch() => {
                // The same epoch holds the same pairs: keep the later build.
                let built_at = self.status_lock().applied_at.unwrap_or(i64::MIN);
                if p.now < built_at {
                    Err(superseded)
                } else {
                    Ok(())
                }
            }
            (Expect::NotNewer, Some(_)) => Ok(()),
        }
    }

    fn note_rejection(&self, e: &ApplyError) {
        tracing::error!(error = %e, "topology change rejected; last good snapshot stays in force");
        let mut st = self.status_lock();
        st.rejected_changes += 1;
        st.last_error = Some(e.to_string());
    }

    /// Write the last-known-good snapshot (called under the writer lock, so
    /// writes reach the disk in publish order).
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
        let published = self
            .prepare(stored.epoch, stored.kv, Some("last-known-good"))
            .and_then(|p| self.publish(p, Expect::Empty));
        match published {
            Ok(s) => Ok(Some(s.epoch())),
            // A source published first: its snapshot is newer than the file.
            Err(ApplyError::Superseded { .. }) => Ok(None),
            Err(e) => Err(format!("{}: {e}", lkg::path(dir).display())),
        }
    }

    /// Rebuild the snapshot in force from its own pairs (same epoch): drain
    /// `until` deadlines are re-evaluated. The rebuild replaces only the
    /// snapshot it was built from; if anything was published meanwhile, it is
    /// dropped (the newer snapshot was built later anyway).
    pub fn reevaluate(&self) {
        if let Some(base) = self.current() {
            let _ = self
                .prepare(base.epoch(), base.kv.clone(), None)
                .and_then(|p| self.publish(p, Expect::Same(base)));
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
        self.status_lock().source = source.into();
    }

    /// The etcd revision of the newest topology change in force: a put's
    /// or a delete's, registrations never (0: not known, or no etcd).
    /// The epoch can be newer: a list is taken at etcd's revision, which
    /// registrations move too.
    pub fn change_revision(&self) -> i64 {
        self.inner
            .change_revision
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Record it (the etcd source, once a change is published).
    pub fn set_change_revision(&self, rev: i64) {
        self.inner
            .change_revision
            .store(rev, std::sync::atomic::Ordering::SeqCst);
    }

    /// Record whether the source is reachable.
    pub fn set_connected(&self, connected: bool) {
        self.status_lock().connected = connected;
    }

    /// Record the registrations among `kv` (`gateways/<id>` keys), as
    /// they are now.
    pub fn set_registrations(&self, kv: &crate::kv::Kv) {
        let gateways = kv
            .range("gateways/".to_owned().."gateways0".to_owned())
            .filter_map(|(k, v)| {
                let id = k.strip_prefix("gateways/")?;
                Some((
                    id.to_owned(),
                    serde_json::from_str(v).unwrap_or(serde_json::Value::Null),
                ))
            })
            .collect();
        self.status_lock().gateways = gateways;
    }

    /// Record that the source re-listed after a compaction.
    pub fn note_relist(&self) {
        self.status_lock().compaction_relists += 1;
    }

    /// Record a source error (shown in status).
    pub fn record_error(&self, e: impl Into<String>) {
        self.status_lock().last_error = Some(e.into());
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

    /// The sample with sh-a drained: a different change than `sample()`.
    fn changed() -> Kv {
        let mut kv = sample();
        kv.insert("drain/dc/sh-a".into(), r#"{"reason":"test"}"#.into());
        kv
    }

    fn on_disk(dir: &tempfile::TempDir) -> lkg::Stored {
        lkg::read(dir.path())
            .unwrap()
            .expect("a last-known-good file")
    }

    /// The drain-expiry task rebuilds epoch 5 while a source publishes 6:
    /// the rebuild of 5, published last, must not bring 5 back.
    #[test]
    fn a_reevaluation_never_replaces_a_newer_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_800_000_000));
        let c = ConfigCenter::with_clock(Some(dir.path().into()), clock.clone());
        let rx = c.subscribe();
        c.apply(5, sample()).unwrap();

        // What `reevaluate` does, cut between its build and its publish.
        clock.set(1_800_000_001);
        let base = c.current().unwrap();
        let rebuilt = c.prepare(base.epoch(), base.kv.clone(), None).unwrap();
        c.apply(6, changed()).unwrap();
        let late = c.publish(rebuilt, Expect::Same(base));

        assert!(
            matches!(
                late,
                Err(ApplyError::Superseded {
                    epoch: 5,
                    current: Some(6)
                })
            ),
            "{late:?}"
        );
        assert_eq!(c.epoch(), Some(6));
        assert_eq!(c.current().unwrap().kv, changed());
        assert_eq!(*rx.borrow(), 6);
        let st = c.status();
        assert_eq!(st.epoch, Some(6));
        assert_eq!((st.applied_changes, st.rejected_changes), (2, 0));
        assert_eq!(st.last_error, None, "a dropped rebuild is no error");
        let stored = on_disk(&dir);
        assert_eq!((stored.epoch, stored.kv), (6, changed()));

        // With nothing published meanwhile, a re-evaluation does replace.
        c.reevaluate();
        assert_eq!(c.status().applied_changes, 3);
        assert_eq!(c.epoch(), Some(6));
    }

    /// A source change of epoch 5 that passed the early check loses the race
    /// to epoch 6: it is rejected as stale, not stored over 6.
    #[test]
    fn a_stale_source_change_never_replaces_a_newer_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let c = ConfigCenter::new(Some(dir.path().into()));
        let rx = c.subscribe();
        let slow = c.prepare(5, sample(), Some("source")).unwrap();
        c.apply(6, changed()).unwrap();
        let late = c.publish(slow, Expect::NotNewer);

        assert!(
            matches!(
                late,
                Err(ApplyError::Stale {
                    epoch: 5,
                    current: 6
                })
            ),
            "{late:?}"
        );
        assert_eq!(c.epoch(), Some(6));
        assert_eq!(*rx.borrow(), 6);
        let st = c.status();
        assert_eq!((st.applied_changes, st.rejected_changes), (1, 1));
        assert_eq!(on_disk(&dir).epoch, 6);
        // The early check answers the same without building.
        assert!(matches!(
            c.apply(4, sample()),
            Err(ApplyError::Stale {
                epoch: 4,
                current: 6
            })
        ));
        assert_eq!(c.status().rejected_changes, 2);
    }

    /// A source re-applies the epoch in force (a re-list at the same
    /// revision), built before a drain expired; the re-evaluation that saw
    /// the expiry came first and stays.
    #[test]
    fn a_same_epoch_change_built_earlier_never_replaces_a_later_build() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_800_000_000));
        let c = ConfigCenter::with_clock(Some(dir.path().into()), clock.clone());
        let mut kv = sample();
        kv.insert(
            "drain/unit/bj-1".into(),
            r#"{"until":"2027-01-15T08:00:01Z"}"#.into(),
        );
        c.apply(3, kv.clone()).unwrap();
        let bj1 = c.current().unwrap().topology.unit_id("bj-1").unwrap();
        let drained = |c: &ConfigCenter| c.current().unwrap().topology.unit(bj1).drain.is_some();

        let relisted = c.prepare(3, kv, Some("source")).unwrap();
        clock.set(1_800_000_001);
        c.reevaluate();
        assert!(!drained(&c), "the drain expired");
        let late = c.publish(relisted, Expect::NotNewer);

        assert!(
            matches!(late, Err(ApplyError::Superseded { epoch: 3, .. })),
            "{late:?}"
        );
        assert!(!drained(&c), "an expired drain is not brought back");
        let st = c.status();
        assert_eq!((st.applied_changes, st.rejected_changes), (2, 0));
        assert_eq!(st.applied_at, Some(1_800_000_001));
        assert_eq!(on_disk(&dir).written_at, 1_800_000_001);
    }

    /// The last-known-good file is read at start; a source publishes first.
    /// The file, even with a higher epoch, must not replace the source's.
    #[test]
    fn the_last_known_good_never_replaces_a_source_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        ConfigCenter::new(Some(dir.path().into()))
            .apply(9, changed())
            .unwrap();
        let c = ConfigCenter::new(Some(dir.path().into()));
        let stored = on_disk(&dir);
        let from_disk = c
            .prepare(stored.epoch, stored.kv, Some("last-known-good"))
            .unwrap();
        assert_eq!(c.apply_next(sample()).unwrap(), 1);
        let late = c.publish(from_disk, Expect::Empty);

        assert!(
            matches!(
                late,
                Err(ApplyError::Superseded {
                    epoch: 9,
                    current: Some(1)
                })
            ),
            "{late:?}"
        );
        assert_eq!(c.epoch(), Some(1));
        assert_eq!(c.status().origin.as_deref(), Some("source"));
        assert_eq!((on_disk(&dir).epoch, on_disk(&dir).kv), (1, sample()));
        assert_eq!(c.load_last_known_good(), Ok(None));
        assert_eq!(c.epoch(), Some(1));
    }

    #[test]
    fn apply_next_counts_from_the_snapshot_in_force() {
        let c = ConfigCenter::new(None);
        assert_eq!(c.apply_next(sample()).unwrap(), 1);
        assert_eq!(c.apply_next(sample()).unwrap(), 1, "same pairs, same epoch");
        c.reevaluate();
        assert_eq!(c.apply_next(changed()).unwrap(), 2);
        c.apply(40, sample()).unwrap();
        assert_eq!(c.apply_next(changed()).unwrap(), 41);
        let mut bad = changed();
        bad.insert("cluster".into(), "{".into());
        assert!(matches!(
            c.apply_next(bad),
            Err(ApplyError::Invalid { epoch: 42, .. })
        ));
        assert_eq!(c.epoch(), Some(41));
        let st = c.status();
        assert_eq!((st.applied_changes, st.rejected_changes), (5, 1));
    }
}
