//! A local certificate authority for the demo and the tests: a CA and
//! server certificates it signs, written as PEM files that the certificate
//! store reads like any other. Never for production: its keys are written
//! unencrypted next to the certificates.

use std::path::{Path, PathBuf};

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
};
use openssl::x509::{X509Name, X509};

/// Why the files could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("openssl: {0}")]
    Ssl(#[from] ErrorStack),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// A CA key and certificate.
pub struct LocalCa {
    key: PKey<Private>,
    cert: X509,
}

fn p256() -> Result<PKey<Private>, ErrorStack> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    PKey::from_ec_key(EcKey::generate(&group)?)
}

fn serial() -> Result<Asn1Integer, ErrorStack> {
    let mut bn = BigNum::new()?;
    bn.rand(127, MsbOption::MAYBE_ZERO, false)?;
    bn.to_asn1_integer()
}

fn name(cn: &str) -> Result<X509Name, ErrorStack> {
    let mut n = X509Name::builder()?;
    n.append_entry_by_nid(Nid::COMMONNAME, cn)?;
    Ok(n.build())
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), PkiError> {
    std::fs::write(path, bytes).map_err(|source| PkiError::Io {
        path: path.display().to_string(),
        source,
    })
}

impl LocalCa {
    /// A new CA valid for `days`.
    pub fn new(common_name: &str, days: u32) -> Result<Self, PkiError> {
        let key = p256()?;
        let mut b = X509::builder()?;
        b.set_version(2)?;
        b.set_serial_number(&*serial()?)?;
        let subject = name(common_name)?;
        b.set_subject_name(&subject)?;
        b.set_issuer_name(&subject)?;
        b.set_pubkey(&key)?;
        b.set_not_before(&*Asn1Time::days_from_now(0)?)?;
        b.set_not_after(&*Asn1Time::days_from_now(days)?)?;
        b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()?,
        )?;
        b.sign(&key, MessageDigest::sha256())?;
        Ok(LocalCa {
            key,
            cert: b.build(),
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> Result<Vec<u8>, PkiError> {
        Ok(self.cert.to_pem()?)
    }

    /// A certificate for `hosts` (DNS names or IP addresses; the first is
    /// its common name), valid for `days`, for a server or a client:
    /// (certificate PEM, key PEM).
    pub fn issue(&self, hosts: &[&str], days: u32) -> Result<(Vec<u8>, Vec<u8>), PkiError> {
        let key = p256()?;
        let mut b = X509::builder()?;
        b.set_version(2)?;
        b.set_serial_number(&*serial()?)?;
        b.set_subject_name(&*name(hosts.first().copied().unwrap_or("localhost"))?)?;
        b.set_issuer_name(self.cert.subject_name())?;
        b.set_pubkey(&key)?;
        b.set_not_before(&*Asn1Time::days_from_now(0)?)?;
        b.set_not_after(&*Asn1Time::days_from_now(days)?)?;
        b.append_extension(BasicConstraints::new().critical().build()?)?;
        b.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .key_agreement()
                .build()?,
        )?;
        // Server and client: the same pair serves a listener, or proves a
        // client to a server asking for certificates (etcd's tests).
        b.append_extension(
            ExtendedKeyUsage::new()
                .server_auth()
                .client_auth()
                .build()?,
        )?;
        let mut san = SubjectAlternativeName::new();
        for h in hosts {
            if h.parse::<std::net::IpAddr>().is_ok() {
                san.ip(h);
            } else {
                san.dns(h);
            }
        }
        let san = san.build(&b.x509v3_context(Some(&self.cert), None))?;
        b.append_extension(san)?;
        b.sign(&self.key, MessageDigest::sha256())?;
        Ok((b.build().to_pem()?, key.private_key_to_pem_pkcs8()?))
    }

    /// Write `<dir>/<stem>.crt` and `<dir>/<stem>.key` for `hosts`.
    pub fn issue_into(
        &self,
        dir: &Path,
        stem: &str,
        hosts: &[&str],
        days: u32,
    ) -> Result<(PathBuf, PathBuf), PkiError> {
        let (cert, key) = self.issue(hosts, days)?;
        let (c, k) = (
            dir.join(format!("{stem}.crt")),
            dir.join(format!("{stem}.key")),
        );
        write(&c, &cert)?;
        write(&k, &key)?;
        Ok((c, k))
    }
}

/// Make `<out>/ca.crt` and, under `<out>/certs/`, one pair for `hosts`
/// (the demo's layout); an existing `ca.crt` is kept as it is.
pub fn demo(out: &Path, hosts: &[&str]) -> Result<PathBuf, PkiError> {
    let ca_path = out.join("ca.crt");
    let certs = out.join("certs");
    if ca_path.exists() && certs.join("demo.crt").exists() {
        return Ok(ca_path);
    }
    std::fs::create_dir_all(&certs).map_err(|source| PkiError::Io {
        path: certs.display().to_string(),
        source,
    })?;
    let ca = LocalCa::new("unitgate demo CA (local only)", 365)?;
    ca.issue_into(&certs, "demo", hosts, 365)?;
    write(&ca_path, &ca.cert_pem()?)?;
    Ok(ca_path)
}
