//! The file source: one YAML/JSON document of key -> value pairs (the embedded
//! default, no etcd needed), hot-reloaded when its content changes.
//!
//! The file is polled (content compared, not mtime), which also catches
//! editors that replace the file and Kubernetes ConfigMap symlink swaps.
//! Each applied change gets the next epoch after the one in force.

use std::path::PathBuf;
use std::time::Duration;

use crate::center::{ApplyError, ConfigCenter};
use crate::kv::{read_document, DocumentError};

/// Why the file could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum FileSourceError {
    #[error(transparent)]
    Document(#[from] DocumentError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

/// A topology file, polled for changes.
#[derive(Debug, Clone)]
pub struct FileSource {
    path: PathBuf,
    interval: Duration,
}

impl FileSource {
    pub fn new(path: impl Into<PathBuf>, interval: Duration) -> Self {
        FileSource {
            path: path.into(),
            interval,
        }
    }

    /// Read, validate and publish the file now. Returns the new epoch.
    pub fn load(&self, center: &ConfigCenter) -> Result<i64, FileSourceError> {
        center.set_source(format!("file {}", self.path.display()));
        let kv = match read_document(&self.path) {
            Ok(kv) => kv,
            Err(e) => {
                center.set_connected(false);
                center.record_error(e.to_string());
                return Err(e.into());
            }
        };
        center.set_connected(true);
        // The epoch after the one in force, chosen and published as one step.
        Ok(center.apply_next(kv)?)
    }

    /// Poll the file forever, applying each change.
    pub async fn run(self, center: ConfigCenter) {
        let mut last: Option<Vec<u8>> = None;
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let bytes = match tokio::fs::read(&self.path).await {
                Ok(b) => b,
                Err(e) => {
                    if last.is_some() {
                        tracing::warn!(path = %self.path.display(), error = %e, "topology file unreadable; keeping the snapshot in force");
                        center.set_connected(false);
                        center.record_error(format!("{}: {e}", self.path.display()));
                        last = None;
                    }
                    continue;
                }
            };
            if last.as_deref() == Some(&bytes[..]) {
                continue;
            }
            last = Some(bytes);
            if let Err(e) = self.load(&center) {
                tracing::warn!(error = %e, "topology file change not applied");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("../../deploy/local/topology.yaml");

    #[tokio::test]
    async fn hot_reload_applies_good_changes_and_keeps_the_last_good() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("topology.yaml");
        std::fs::write(&path, SAMPLE).unwrap();
        let c = ConfigCenter::new(None);
        let src = FileSource::new(&path, Duration::from_millis(20));
        assert_eq!(src.load(&c).unwrap(), 1);
        let task = tokio::spawn(src.run(c.clone()));
        let mut rx = c.subscribe();

        // A drain appended to the file is applied.
        std::fs::write(
            &path,
            format!("{SAMPLE}\ndrain/dc/sh-a: {{reason: test}}\n"),
        )
        .unwrap();
        tokio::time::timeout(Duration::from_secs(10), rx.changed())
            .await
            .unwrap()
            .unwrap();
        let snap = c.current().unwrap();
        let sh1 = snap.topology.unit_id("sh-1").unwrap();
        assert!(snap.topology.unit(sh1).drain.is_some());

        // A broken file is rejected; the drain stays in force.
        std::fs::write(&path, "cluster: {shards: 0}\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while c.status().rejected_changes == 0 {
            assert!(std::time::Instant::now() < deadline, "broken file not seen");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(c.epoch(), Some(2));
        assert!(c.status().last_error.unwrap().contains("cluster: shards"));
        task.abort();
    }
}
