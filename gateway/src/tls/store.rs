//! The certificates the gateway serves, by host name: PEM certificate
//! chains and their keys read from files, each certificate serving the DNS
//! names of its subjectAltName (its common name when it has none), a
//! wildcard `*.example.com` covering one label. [`CertStore::select`] picks
//! the certificate for a TLS client's SNI name; a client that sends none,
//! or a name no certificate covers, gets the default one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

/// Why a certificate file pair cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("{path}: {message}")]
    Read { path: String, message: String },
    #[error("{path}: no PEM certificate in it")]
    NoCertificate { path: String },
    #[error("{path}: not a PEM private key: {message}")]
    BadKey { path: String, message: String },
    #[error("{key}: this key does not belong to the certificate in {cert}")]
    KeyMismatch { cert: String, key: String },
    #[error(
        "{path}: the certificate names no DNS host (no subjectAltName DNS entry, no common name)"
    )]
    NoNames { path: String },
    #[error("{dir}: no certificate pair (<name>.crt or <name>.pem beside <name>.key)")]
    EmptyDir { dir: String },
    #[error("default certificate {0:?}: no certificate covers this name")]
    NoDefault(String),
}

/// Where one certificate and its key are read from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PairFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// One certificate chain with its key, ready to hand to a handshake.
pub struct CertPair {
    pub files: PairFiles,
    /// Lower-case DNS names, wildcards as `*.example.com`.
    pub names: Vec<String>,
    pub leaf: X509,
    /// Intermediates, in file order after the leaf.
    pub chain: Vec<X509>,
    pub key: PKey<Private>,
    /// The leaf's notAfter, as OpenSSL prints it.
    pub not_after: String,
}

impl std::fmt::Debug for CertPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertPair")
            .field("files", &self.files)
            .field("names", &self.names)
            .field("not_after", &self.not_after)
            .finish()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    // Certificate files are small; a huge one is a mistake, not a chain.
    const MAX: u64 = 1 << 20;
    let meta = std::fs::metadata(path).map_err(|e| CertError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    if meta.len() > MAX {
        return Err(CertError::Read {
            path: path.display().to_string(),
            message: format!("{} bytes is over the 1 MiB a PEM file may have", meta.len()),
        });
    }
    std::fs::read(path).map_err(|e| CertError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

impl CertPair {
    /// Read and check one pair: a chain whose first certificate is the
    /// leaf, a key that matches it, and at least one DNS name.
    pub fn load(files: &PairFiles) -> Result<CertPair, CertError> {
        let cert_path = files.cert.display().to_string();
        let key_path = files.key.display().to_string();
        let mut certs = X509::stack_from_pem(&read(&files.cert)?).map_err(|e| CertError::Read {
            path: cert_path.clone(),
            message: format!("not a PEM certificate chain: {e}"),
        })?;
        if certs.is_empty() {
            return Err(CertError::NoCertificate { path: cert_path });
        }
        let leaf = certs.remove(0);
        let key =
            PKey::private_key_from_pem(&read(&files.key)?).map_err(|e| CertError::BadKey {
                path: key_path.clone(),
                message: e.to_string(),
            })?;
        let matches = leaf
            .public_key()
            .map(|public| public.public_eq(&key))
            .unwrap_or(false);
        if !matches {
            return Err(CertError::KeyMismatch {
                cert: cert_path,
                key: key_path,
            });
        }
        let names = dns_names(&leaf);
        if names.is_empty() {
            return Err(CertError::NoNames { path: cert_path });
        }
        Ok(CertPair {
            files: files.clone(),
            names,
            not_after: leaf.not_after().to_string(),
            leaf,
            chain: certs,
            key,
        })
    }

    /// Whether this certificate covers `host` (lower-case).
    pub fn covers(&self, host: &str) -> bool {
        self.names.iter().any(|n| name_covers(n, host))
    }
}

/// The certificate's DNS names: subjectAltName DNS entries, else its CN.
fn dns_names(leaf: &X509) -> Vec<String> {
    let mut names: Vec<String> = leaf
        .subject_alt_names()
        .map(|sans| {
            sans.iter()
                .filter_map(|n| n.dnsname().map(str::to_ascii_lowercase))
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        names.extend(
            leaf.subject_name()
                .entries_by_nid(Nid::COMMONNAME)
                .filter_map(|e| e.data().to_string().ok())
                .map(|s| s.to_ascii_lowercase())
                .filter(|s| !s.is_empty() && !s.contains(' ')),
        );
    }
    names.sort();
    names.dedup();
    names
}

/// `*.example.com` covers `a.example.com`, not `example.com` nor
/// `a.b.example.com` (RFC 6125 6.4.3).
pub fn name_covers(name: &str, host: &str) -> bool {
    match name.strip_prefix("*.") {
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => name == host,
    }
}

/// All served certificates, indexed by name.
#[derive(Debug)]
pub struct CertStore {
    pairs: Vec<Arc<CertPair>>,
    exact: HashMap<String, usize>,
    /// `example.com` for a certificate naming `*.example.com`.
    wildcard: HashMap<String, usize>,
    default: usize,
}

impl CertStore {
    /// Index `pairs` (sorted by file; the first to name a host serves it).
    /// `default`: a host name whose certificate serves clients without a
    /// known SNI name; `None`: the first pair.
    pub fn new(mut pairs: Vec<Arc<CertPair>>, default: Option<&str>) -> Result<Self, CertError> {
        pairs.sort_by(|a, b| a.files.cmp(&b.files));
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (i, p) in pairs.iter().enumerate() {
            for n in &p.names {
                match n.strip_prefix("*.") {
                    Some(suffix) => wildcard.entry(suffix.to_owned()).or_insert(i),
                    None => exact.entry(n.clone()).or_insert(i),
                };
            }
        }
        let mut store = CertStore {
            pairs,
            exact,
            wildcard,
            default: 0,
        };
        if let Some(host) = default {
            let host = host.to_ascii_lowercase();
            store.default = store
                .find(&host)
                .ok_or_else(|| CertError::NoDefault(host.clone()))?;
        }
        Ok(store)
    }

    fn find(&self, host: &str) -> Option<usize> {
        self.exact.get(host).copied().or_else(|| {
            let (label, parent) = host.split_once('.')?;
            if label.is_empty() {
                return None;
            }
            self.wildcard.get(parent).copied()
        })
    }

    /// The certificate for a client that sent `sni`. `None` only when the
    /// store is empty.
    pub fn select(&self, sni: Option<&str>) -> Option<&Arc<CertPair>> {
        let i = sni
            .map(|s| s.trim_end_matches('.').to_ascii_lowercase())
            .and_then(|s| self.find(&s))
            .unwrap_or(self.default);
        self.pairs.get(i)
    }

    pub fn pairs(&self) -> &[Arc<CertPair>] {
        &self.pairs
    }

    pub fn default_pair(&self) -> Option<&Arc<CertPair>> {
        self.pairs.get(self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        assert!(name_covers("*.example.com", "a.example.com"));
        assert!(!name_covers("*.example.com", "example.com"));
        assert!(!name_covers("*.example.com", "a.b.example.com"));
        assert!(!name_covers("*.example.com", ".example.com"));
        assert!(name_covers("api.example.com", "api.example.com"));
        assert!(!name_covers("api.example.com", "web.example.com"));
    }
}
