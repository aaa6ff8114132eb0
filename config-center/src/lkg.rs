//! The last-known-good snapshot on disk: written atomically (a temp file of
//! its own, fsync, rename, fsync dir) on every applied change; loaded at
//! start when the config source cannot be reached. The center writes it under
//! its writer lock, so one center's writes land in publish order.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::kv::Kv;

/// File name inside the state dir.
pub const FILE_NAME: &str = "topology.lkg.json";

/// What is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    pub format: u32,
    pub epoch: i64,
    /// Where it came from (`etcd http://...`, `file ...`).
    pub source: String,
    /// Unix seconds when written.
    pub written_at: i64,
    pub kv: Kv,
}

/// Path of the snapshot in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// Atomically replace the snapshot in `dir`. Each write goes through a temp
/// file of its own (process id and a counter in the name), so two writers on
/// one dir (two centers, two processes) never truncate or rename each other's
/// half-written file: the snapshot on disk is always one whole write.
pub fn write(dir: &Path, stored: &Stored) -> std::io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    std::fs::create_dir_all(dir)?;
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!("{FILE_NAME}.{}.{seq}.tmp", std::process::id()));
    let written = write_new(&tmp, stored).and_then(|()| std::fs::rename(&tmp, path(dir)));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Create `tmp` (it must not exist), write `stored` and fsync it.
fn write_new(tmp: &Path, stored: &Stored) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(stored).map_err(std::io::Error::other)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()
}

/// Read the snapshot in `dir`; `Ok(None)` when there is none.
pub fn read(dir: &Path) -> Result<Option<Stored>, String> {
    let p = path(dir);
    match std::fs::read(&p) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: {e}", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let mut s = Stored {
            format: 1,
            epoch: 7,
            source: "test".into(),
            written_at: 1,
            kv: [("cluster".to_owned(), "{}".to_owned())].into(),
        };
        write(dir.path(), &s).unwrap();
        s.epoch = 8;
        write(dir.path(), &s).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(s));
        assert_eq!(files(dir.path()), [FILE_NAME], "no temp file left");
        std::fs::write(path(dir.path()), b"{not json").unwrap();
        assert!(read(dir.path()).is_err());
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Writers on one dir at once (two centers, two gateways sharing a state
    /// dir): every write succeeds and the file is always one whole snapshot.
    #[test]
    fn concurrent_writers_never_clobber_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let dir = dir.path().to_owned();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let s = Stored {
                            format: 1,
                            epoch: w * 1000 + i,
                            source: format!("writer {w}"),
                            written_at: i,
                            kv: [("cluster".to_owned(), "x".repeat(4096))].into(),
                        };
                        write(&dir, &s).unwrap();
                        let back = read(&dir).unwrap().unwrap();
                        assert_eq!(back.kv["cluster"].len(), 4096);
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        assert_eq!(files(dir.path()), [FILE_NAME], "no temp file left");
    }
}
