//! How a client of etcd knows etcd and proves who it is: the CA that signed
//! etcd's certificate, a client certificate and key, a user and password.
//!
//! [`AccessFiles`] names where they come from (config keys `etcd_ca_file`,
//! `etcd_cert_file`, `etcd_key_file`, `etcd_user`, `etcd_password_file`);
//! [`EtcdAccess::load`] reads and checks them once at start, each error
//! naming the key. They are read again at every (re)connect, so rotated
//! files apply without a restart; a file that went bad meanwhile keeps the
//! last good material (and says so). The password never appears in a
//! `Debug` or an error.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use etcd_client::{ConnectOptions, OpenSslClientConfig};
use openssl::error::ErrorStack;
use openssl::pkey::PKey;
use openssl::ssl::{SslConnector, SslConnectorBuilder, SslMethod};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::X509;

/// Where the password comes from: a file, or an environment variable
/// (the CLI's `UNITCTL_ETCD_PASSWORD`), never a command-line argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    File(PathBuf),
    Env(String),
}

/// The settings, as configured: paths and a user name, no secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessFiles {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<PasswordSource>,
}

/// Why the settings cannot be used; the message names the key.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct AccessError(pub String);

fn err(m: impl Into<String>) -> AccessError {
    AccessError(m.into())
}

impl AccessFiles {
    /// Any TLS setting given.
    pub fn tls(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }

    /// The settings fit the endpoints: all `https://` (then `etcd_ca_file`
    /// is required) or all `http://` (then no TLS file is given). Checked
    /// at start, so an `https://` endpoint never fails at first use.
    pub fn check_endpoints(&self, endpoints: &[String]) -> Result<(), AccessError> {
        let https = endpoints
            .iter()
            .filter(|e| e.starts_with("https://"))
            .count();
        if https > 0 && https < endpoints.len() {
            return Err(err(
                "etcd: mix of https:// and http:// endpoints; use one scheme for all",
            ));
        }
        if https > 0 && self.ca_file.is_none() {
            return Err(err(
                "etcd: https:// endpoints need etcd_ca_file (--etcd-ca-file): the CA that signed etcd's certificate",
            ));
        }
        if https == 0 && self.tls() {
            return Err(err(
                "etcd_ca_file, etcd_cert_file and etcd_key_file are for https:// endpoints; the etcd endpoints are http://",
            ));
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(err(
                "etcd_cert_file and etcd_key_file go together: give both or neither",
            ));
        }
        if https == 0 && self.user.is_some() {
            if let Some(ep) = endpoints.iter().find(|e| !loopback(e)) {
                return Err(err(format!(
                    "etcd_user: {ep} is http://: the password would cross the network in clear text; use https:// endpoints (etcd_ca_file), or a loopback one"
                )));
            }
        }
        if self.user.is_some() != self.password.is_some() {
            return Err(err(
                "etcd_user and etcd_password_file go together: give both or neither",
            ));
        }
        Ok(())
    }
}

/// `host` and `host:port` of an `http(s)://host:port[/...]` endpoint
/// (brackets of an IPv6 host dropped from `host`).
pub(crate) fn authority(endpoint: &str) -> (&str, &str) {
    let authority = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(h, _)| h)
        .trim_matches(['[', ']']);
    (host, authority)
}

/// Whether an endpoint names this machine.
fn loopback(endpoint: &str) -> bool {
    let (host, _) = authority(endpoint);
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// What was read off the files.
#[derive(Clone, Default)]
struct Material {
    ca: Vec<X509>,
    client: Option<(Vec<X509>, PKey<openssl::pkey::Private>)>,
    user: Option<(String, String)>,
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>, AccessError> {
    std::fs::read(path).map_err(|e| err(format!("{key}: {}: {e}", path.display())))
}

fn certificates(key: &str, path: &Path) -> Result<Vec<X509>, AccessError> {
    let pem = read(key, path)?;
    match X509::stack_from_pem(&pem) {
        Ok(c) if !c.is_empty() => Ok(c),
        _ => Err(err(format!(
            "{key}: {} holds no PEM certificate",
            path.display()
        ))),
    }
}

/// A password as the files or the environment hold it now (a trailing
/// newline dropped; empty is an error naming where it came from).
pub fn password(source: &PasswordSource) -> Result<String, AccessError> {
    let (text, what) = match source {
        PasswordSource::File(p) => {
            let bytes = read("etcd_password_file", p)?;
            let text = String::from_utf8(bytes)
                .map_err(|_| err(format!("etcd_password_file: {} is not UTF-8", p.display())))?;
            (text, format!("etcd_password_file: {}", p.display()))
        }
        PasswordSource::Env(var) => (
            std::env::var(var).map_err(|_| err(format!("{var} is not set")))?,
            var.clone(),
        ),
    };
    let text = text.trim_end_matches(['\r', '\n']).to_owned();
    if text.is_empty() {
        return Err(err(format!("{what} is empty")));
    }
    Ok(text)
}

impl Material {
    /// Trust the configured CA and nothing else (not the system's store:
    /// a certificate some public CA issued for etcd's name must not pass),
    /// and present the client certificate with its chain.
    fn configure(&self, b: &mut SslConnectorBuilder) -> Result<(), ErrorStack> {
        let mut store = X509StoreBuilder::new()?;
        for ca in &self.ca {
            store.add_cert(ca.clone())?;
        }
        b.set_cert_store(store.build());
        if let Some((chain, key)) = &self.client {
            b.set_certificate(&chain[0])?;
            for extra in &chain[1..] {
                b.add_extra_chain_cert(extra.clone())?;
            }
            b.set_private_key(key)?;
        }
        Ok(())
    }

    fn read(files: &AccessFiles) -> Result<Material, AccessError> {
        let ca = match &files.ca_file {
            Some(p) => certificates("etcd_ca_file", p)?,
            None => Vec::new(),
        };
        let client = match (&files.cert_file, &files.key_file) {
            (Some(c), Some(k)) => {
                let chain = certificates("etcd_cert_file", c)?;
                let key = PKey::private_key_from_pem(&read("etcd_key_file", k)?).map_err(|_| {
                    err(format!(
                        "etcd_key_file: {} holds no PEM private key",
                        k.display()
                    ))
                })?;
                let matches = chain[0]
                    .public_key()
                    .is_ok_and(|public| public.public_eq(&key));
                if !matches {
                    return Err(err(format!(
                        "etcd_key_file: {} is not the key of etcd_cert_file {}",
                        k.display(),
                        c.display()
                    )));
                }
                Some((chain, key))
            }
            _ => None,
        };
        let user = match (&files.user, &files.password) {
            (Some(u), Some(_)) if u.is_empty() => return Err(err("etcd_user is empty")),
            (Some(u), Some(p)) => Some((u.clone(), password(p)?)),
            _ => None,
        };
        Ok(Material { ca, client, user })
    }
}

/// The loaded settings, shared by every connection a process makes.
pub struct EtcdAccess {
    files: AccessFiles,
    last_good: ArcSwap<Material>,
}

impl std::fmt::Debug for EtcdAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdAccess")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Default for EtcdAccess {
    /// Plain `http://`, no user.
    fn default() -> Self {
        EtcdAccess {
            files: AccessFiles::default(),
            last_good: ArcSwap::from_pointee(Material::default()),
        }
    }
}

impl EtcdAccess {
    /// Read and check every file now.
    pub fn load(files: AccessFiles) -> Result<Arc<EtcdAccess>, AccessError> {
        let m = Material::read(&files)?;
        Ok(Arc::new(EtcdAccess {
            files,
            last_good: ArcSwap::from_pointee(m),
        }))
    }

    pub fn files(&self) -> &AccessFiles {
        &self.files
    }

    /// The material as the files hold it now, or the last good one.
    fn current(&self) -> Arc<Material> {
        match Material::read(&self.files) {
            Ok(m) => {
                let m = Arc::new(m);
                self.last_good.store(m.clone());
                m
            }
            Err(e) => {
                tracing::warn!(error = %e, "etcd credentials not re-read; using the last good ones");
                self.last_good.load_full()
            }
        }
    }

    /// `co` with TLS and the user, as the files hold them now.
    pub fn apply(&self, co: ConnectOptions) -> ConnectOptions {
        let m = self.current();
        let mut co = co;
        if let Some((user, password)) = &m.user {
            co = co.with_user(user.clone(), password.clone());
        }
        if self.files.tls() {
            let tls = m.clone();
            co = co.with_openssl_tls(
                OpenSslClientConfig::default().manually(move |b| tls.configure(b)),
            );
        }
        co
    }

    /// A connector as [`EtcdAccess::apply`] sets up (for the start-up
    /// check of `etcd_check.rs`).
    pub(crate) fn connector(&self) -> Result<SslConnector, ErrorStack> {
        let mut b = SslConnector::builder(SslMethod::tls_client())?;
        b.set_alpn_protos(b"\x02h2")?;
        self.current().configure(&mut b)?;
        Ok(b.build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn settings_must_fit_the_endpoints() {
        let none = AccessFiles::default();
        assert!(none
            .check_endpoints(&eps(&["http://127.0.0.1:2379"]))
            .is_ok());
        let e = none
            .check_endpoints(&eps(&["https://127.0.0.1:2379"]))
            .unwrap_err();
        assert!(e.0.contains("need etcd_ca_file"), "{e}");
        let e = none
            .check_endpoints(&eps(&["https://a:1", "http://b:1"]))
            .unwrap_err();
        assert!(e.0.contains("mix of https"), "{e}");
        let ca = AccessFiles {
            ca_file: Some("ca.pem".into()),
            ..AccessFiles::default()
        };
        assert!(ca.check_endpoints(&eps(&["https://a:1"])).is_ok());
        let e = ca.check_endpoints(&eps(&["http://a:1"])).unwrap_err();
        assert!(e.0.contains("are for https://"), "{e}");
        let half = AccessFiles {
            cert_file: Some("c.pem".into()),
            ..ca.clone()
        };
        let e = half.check_endpoints(&eps(&["https://a:1"])).unwrap_err();
        assert!(e.0.contains("go together"), "{e}");
        let user = AccessFiles {
            user: Some("root".into()),
            ..AccessFiles::default()
        };
        let e = user
            .check_endpoints(&eps(&["http://127.0.0.1:1"]))
            .unwrap_err();
        assert!(e.0.contains("etcd_password_file"), "{e}");
        let user = AccessFiles {
            password: Some(PasswordSource::File("pw".into())),
            ..user
        };
        assert!(user
            .check_endpoints(&eps(&["http://127.0.0.1:1", "http://[::1]:2"]))
            .is_ok());
        assert!(user
            .check_endpoints(&eps(&["http://localhost:2379"]))
            .is_ok());
        let e = user
            .check_endpoints(&eps(&["http://etcd.example:2379"]))
            .unwrap_err();
        assert!(e.0.contains("clear text"), "{e}");
    }

    #[test]
    fn bad_files_are_named_and_the_password_is_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let e = EtcdAccess::load(AccessFiles {
            ca_file: Some(junk.clone()),
            ..AccessFiles::default()
        })
        .unwrap_err();
        assert!(
            e.0.starts_with("etcd_ca_file: ") && e.0.contains("no PEM certificate"),
            "{e}"
        );
        let e = EtcdAccess::load(AccessFiles {
            ca_file: Some(dir.path().join("missing.pem")),
            ..AccessFiles::default()
        })
        .unwrap_err();
        assert!(e.0.contains("missing.pem"), "{e}");

        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret-value\n").unwrap();
        let access = EtcdAccess::load(AccessFiles {
            user: Some("root".into()),
            password: Some(PasswordSource::File(pw.clone())),
            ..AccessFiles::default()
        })
        .unwrap();
        assert_eq!(
            access.current().user.as_ref().map(|u| u.1.as_str()),
            Some("s3cret-value")
        );
        assert!(!format!("{access:?}").contains("s3cret"));

        // A password file emptied later keeps the last good password.
        std::fs::write(&pw, "").unwrap();
        assert_eq!(
            access.current().user.as_ref().map(|u| u.1.as_str()),
            Some("s3cret-value")
        );
        let e = EtcdAccess::load(access.files().clone()).unwrap_err();
        assert!(e.0.contains("is empty"), "{e}");
    }
}
