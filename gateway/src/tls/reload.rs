//! Certificates reloaded without a restart. The files are checked every
//! `reload_interval` (size, modification time and inode of each, a few
//! `stat` calls); a changed pair is read and checked, and the store is
//! swapped whole, so a handshake sees either the old set or the new one.
//!
//! A pair that no longer loads (a key that does not match its new
//! certificate, a half-written file, garbage) keeps the certificate it was
//! serving, and the reason is logged and shown in `/status` until the
//! files are fixed. At start, any bad file is an error: nothing serves.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Serialize;

use super::store::{CertError, CertPair, CertStore, PairFiles};
use super::{Certificates, TlsConfig};

/// What identifies a file's content without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime_ns: i128,
    ino: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: m.len(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        ino: m.ino(),
    })
}

/// One served certificate, as `/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CertInfo {
    pub cert: String,
    pub key: String,
    pub names: Vec<String>,
    pub not_after: String,
    pub default: bool,
}

/// The certificates served and the problems of the last check.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TlsStatus {
    pub certificates: Vec<CertInfo>,
    /// Why files are not served as they are on disk (empty: all good).
    pub errors: Vec<String>,
    pub reloads: u64,
}

fn status_of(store: &CertStore, errors: Vec<String>, reloads: u64) -> TlsStatus {
    let default = store.default_pair().map(|p| p.files.clone());
    TlsStatus {
        certificates: store
            .pairs()
            .iter()
            .map(|p| CertInfo {
                cert: p.files.cert.display().to_string(),
                key: p.files.key.display().to_string(),
                names: p.names.clone(),
                not_after: p.not_after.clone(),
                default: Some(&p.files) == default.as_ref(),
            })
            .collect(),
        errors,
        reloads,
    }
}

/// The stamps of a pair's certificate and key files.
type Stamps = (Option<Stamp>, Option<Stamp>);

/// The reload loop's state: what each pair was loaded from.
pub struct Reloader {
    config: TlsConfig,
    loaded: HashMap<PairFiles, (Stamps, Arc<CertPair>)>,
    reloads: u64,
    last_errors: Vec<String>,
}

/// Load every certificate; any problem is an error.
pub fn load(config: &TlsConfig) -> Result<(Arc<Certificates>, Reloader), CertError> {
    let mut loaded = HashMap::new();
    let mut pairs = Vec::new();
    for files in config.pair_files()? {
        let stamps = (stamp(&files.cert), stamp(&files.key));
        let pair = Arc::new(CertPair::load(&files)?);
        pairs.push(pair.clone());
        loaded.insert(files, (stamps, pair));
    }
    let store = CertStore::new(pairs, config.default_host.as_deref())?;
    let status = status_of(&store, Vec::new(), 0);
    let certs = Arc::new(Certificates {
        current: ArcSwap::from_pointee(store),
        status: ArcSwap::from_pointee(status),
    });
    Ok((
        certs,
        Reloader {
            config: config.clone(),
            loaded,
            reloads: 0,
            last_errors: Vec::new(),
        },
    ))
}

impl Reloader {
    pub fn interval(&self) -> std::time::Duration {
        self.config.reload_interval
    }

    /// Check the files; swap in what changed. Returns whether the served
    /// set changed.
    pub fn check(&mut self, certs: &Certificates) -> bool {
        let mut errors = Vec::new();
        let files = match self.config.pair_files() {
            Ok(f) => f,
            Err(e) => {
                errors.push(format!("{e}; serving the certificates loaded before"));
                self.report(certs, errors);
                return false;
            }
        };
        let mut next = HashMap::new();
        for f in files {
            let stamps = (stamp(&f.cert), stamp(&f.key));
            let old = self.loaded.get(&f);
            if let Some((s, pair)) = old.filter(|(s, _)| *s == stamps) {
                next.insert(f, (*s, pair.clone()));
                continue;
            }
            match CertPair::load(&f) {
                Ok(pair) => {
                    next.insert(f, (stamps, Arc::new(pair)));
                }
                Err(e) => match old {
                    Some((s, pair)) => {
                        errors.push(format!("{e}; still serving the certificate loaded before"));
                        next.insert(f, (*s, pair.clone()));
                    }
                    None => errors.push(format!("{e}; not served")),
                },
            }
        }
        // Changed: a pair came, went, or was loaded afresh (a bad new file
        // that is not served changes nothing).
        let changed = next.len() != self.loaded.len()
            || next.iter().any(|(f, (_, p))| {
                self.loaded
                    .get(f)
                    .is_none_or(|(_, old)| !Arc::ptr_eq(p, old))
            });
        if !changed {
            self.report(certs, errors);
            return false;
        }
        let pairs: Vec<_> = next.values().map(|(_, p)| p.clone()).collect();
        if pairs.is_empty() {
            errors.push("no usable certificate left; serving the ones loaded before".into());
            self.report(certs, errors);
            return false;
        }
        match CertStore::new(pairs, self.config.default_host.as_deref()) {
            Ok(store) => {
                self.reloads += 1;
                self.loaded = next;
                let names: Vec<String> = store.pairs().iter().map(|p| p.names.join(",")).collect();
                tracing::info!(certificates = ?names, "TLS certificates reloaded");
                certs.current.store(Arc::new(store));
                self.last_errors.clear();
                self.report(certs, errors);
                true
            }
            Err(e) => {
                errors.push(format!("{e}; serving the certificates loaded before"));
                self.report(certs, errors);
                false
            }
        }
    }

    fn report(&mut self, certs: &Certificates, errors: Vec<String>) {
        if errors != self.last_errors {
            for e in &errors {
                tracing::warn!(error = %e, "TLS certificate not reloaded");
            }
            self.last_errors = errors.clone();
        }
        let status = status_of(&certs.current(), errors, self.reloads);
        certs.status.store(Arc::new(status));
    }
}
