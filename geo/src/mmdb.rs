//! The mmdb reader with hot reload.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use maxminddb::Reader;
use serde::Deserialize;

use crate::{GeoLookup, Location};

/// Why a database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("{path}: {message}")]
    Open { path: String, message: String },
}

#[derive(Deserialize)]
struct Iso<'a> {
    #[serde(borrow)]
    iso_code: Option<&'a str>,
}

/// The fields read, from either schema.
#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow)]
    country: Option<Iso<'a>>,
    #[serde(borrow)]
    subdivisions: Option<Vec<Iso<'a>>>,
    #[serde(borrow)]
    country_code: Option<&'a str>,
}

/// Identity of the file on disk, to notice replacement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
    })
}

/// A MaxMind-format database file, hot-reloadable.
pub struct MmdbGeo {
    path: PathBuf,
    reader: ArcSwap<Reader<Vec<u8>>>,
    stamp: Mutex<Option<Stamp>>,
}

impl std::fmt::Debug for MmdbGeo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmdbGeo").field("path", &self.path).finish()
    }
}

fn open(path: &Path) -> Result<Reader<Vec<u8>>, GeoError> {
    Reader::open_readfile(path).map_err(|e| GeoError::Open {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

impl MmdbGeo {
    /// Open `path` (GeoIP2/GeoLite2 or ip-location-db mmdb).
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, GeoError> {
        let path = path.into();
        let st = stamp(&path);
        let reader = open(&path)?;
        Ok(MmdbGeo {
            path,
            reader: ArcSwap::from_pointee(reader),
            stamp: Mutex::new(st),
        })
    }

    /// The file in use.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `database_type` and `build_epoch` of the database in force.
    pub fn describe(&self) -> (String, u64) {
        let r = self.reader.load();
        (r.metadata().database_type.clone(), r.metadata().build_epoch)
    }

    /// Reopen the file if it changed on disk. `Ok(true)` when a new database
    /// is in force; on error the old one stays.
    pub fn reload_if_changed(&self) -> Result<bool, GeoError> {
        let now = stamp(&self.path);
        let mut last = self.stamp.lock().unwrap_or_else(|e| e.into_inner());
        if now.is_none() || now == *last {
            return Ok(false);
        }
        *last = now;
        let reader = open(&self.path)?;
        self.reader.store(Arc::new(reader));
        Ok(true)
    }
}

impl GeoLookup for MmdbGeo {
    fn locate(&self, ip: IpAddr) -> Option<Location> {
        let reader = self.reader.load();
        let rec: Record = reader.lookup(ip).ok()?.decode().ok()??;
        let country = rec
            .country
            .as_ref()
            .and_then(|c| c.iso_code)
            .or(rec.country_code);
        let sub = rec
            .subdivisions
            .as_ref()
            .and_then(|s| s.first())
            .and_then(|s| s.iso_code);
        let loc = Location::new(country, sub);
        loc.country().map(|_| loc)
    }
}
