//! The last-known-good snapshot on disk: written atomically (temp file, fsync,
//! rename, fsync dir) on every applied change; loaded at start when the
//! config source cannot be reached.

use std::io::Write;
use std::path::{Path, PathBuf};

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

/// Atomically replace the snapshot in `dir`.
pub fn write(dir: &Path, stored: &Stored) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let final_path = path(dir);
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(stored).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &final_path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
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
        assert!(!dir.path().join(format!("{FILE_NAME}.tmp")).exists());
        std::fs::write(path(dir.path()), b"{not json").unwrap();
        assert!(read(dir.path()).is_err());
    }
}
