//! TLS termination on the gateway's listeners, on Pingora's OpenSSL path
//! (linked against the system's libssl).
//!
//! - [`store`]: certificate files, chosen per connection by SNI.
//! - [`reload`]: the files watched and reloaded without a restart; a bad
//!   new file keeps the certificate it replaces and says why.
//! - [`Terminator`]: the one `SslAcceptor` (TLS 1.2 and 1.3 only, a modern
//!   cipher list, ALPN `h2` then `http/1.1`) and the handshake, run by the
//!   listener after a connection was admitted and within the head timeout,
//!   so a client that never finishes a handshake holds nothing for long.
//! - [`pki`]: a local CA for the demo and the tests.

pub mod pki;
pub mod reload;
pub mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use openssl::ssl::{
    select_next_proto, AlpnError, NameType, SslAcceptor, SslMethod, SslOptions, SslVersion,
};
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::server::handshake_with_callback;
use pingora::protocols::tls::TlsRef;
use pingora::protocols::Stream;
use pingora::tls::ext;

use crate::listen::conn::Conn;
use store::{CertError, CertStore, PairFiles};

/// TLS 1.2 suites: ECDHE with AEAD only (Mozilla "intermediate" without
/// the finite-field DHE ones).
pub const TLS12_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
/// TLS 1.3 suites.
pub const TLS13_SUITES: &str =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
/// ALPN, in the server's order of preference (wire format).
const ALPN_H2_H1: &[u8] = b"\x02h2\x08http/1.1";

/// Where the certificates come from (the `[tls]` section of the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// A directory of `<name>.crt` (or `.pem`) files beside `<name>.key`.
    pub cert_dir: Option<PathBuf>,
    /// Pairs listed one by one.
    pub certs: Vec<PairFiles>,
    /// A host name whose certificate is served to clients without a known
    /// SNI name; `None`: the first certificate by file name.
    pub default_host: Option<String>,
    /// TLS on the internal listener as well.
    pub internal: bool,
    /// How often the files are checked for changes.
    pub reload_interval: Duration,
}

impl TlsConfig {
    /// Every pair the config names now (a directory is listed afresh).
    pub fn pair_files(&self) -> Result<Vec<PairFiles>, CertError> {
        let mut pairs = self.certs.clone();
        if let Some(dir) = &self.cert_dir {
            let entries = std::fs::read_dir(dir).map_err(|e| CertError::Read {
                path: dir.display().to_string(),
                message: e.to_string(),
            })?;
            let mut found = Vec::new();
            for entry in entries.flatten() {
                let path = entry.path();
                let is_cert = matches!(
                    path.extension().and_then(|e| e.to_str()),
                    Some("crt" | "pem")
                );
                let key = path.with_extension("key");
                if is_cert && key.is_file() {
                    found.push(PairFiles { cert: path, key });
                }
            }
            if found.is_empty() && self.certs.is_empty() {
                return Err(CertError::EmptyDir {
                    dir: dir.display().to_string(),
                });
            }
            pairs.extend(found);
        }
        pairs.sort();
        pairs.dedup();
        Ok(pairs)
    }
}

/// The certificates served now, swapped whole on a reload.
pub struct Certificates {
    current: ArcSwap<CertStore>,
    status: ArcSwap<reload::TlsStatus>,
}

impl Certificates {
    pub fn current(&self) -> arc_swap::Guard<Arc<CertStore>> {
        self.current.load()
    }

    pub fn status(&self) -> Arc<reload::TlsStatus> {
        self.status.load_full()
    }
}

/// Picks each handshake's certificate from the current store by SNI.
struct BySni(Arc<Certificates>);

#[async_trait]
impl TlsAccept for BySni {
    async fn certificate_callback(&self, ssl: &mut TlsRef) {
        let sni = ssl.servername(NameType::HOST_NAME).map(str::to_owned);
        let store = self.0.current();
        let Some(pair) = store.select(sni.as_deref()) else {
            return; // no certificate: the handshake fails
        };
        let set = ext::ssl_use_certificate(ssl, &pair.leaf)
            .and_then(|()| {
                pair.chain
                    .iter()
                    .try_for_each(|c| ext::ssl_add_chain_cert(ssl, c))
            })
            .and_then(|()| ext::ssl_use_private_key(ssl, &pair.key));
        if let Err(e) = set {
            tracing::warn!(error = %e, "could not set the TLS certificate");
        }
    }
}

/// Why a TLS handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("TLS handshake not done within {0:?}")]
    Timeout(Duration),
    #[error("TLS handshake failed: {0}")]
    Failed(String),
    #[error("closed before a TLS hello")]
    Closed,
}

/// The server side of TLS for one or more listeners.
pub struct Terminator {
    acceptor: SslAcceptor,
    callbacks: BySni,
}

/// The acceptor's settings: protocol versions, suites, ALPN.
pub fn acceptor() -> Result<SslAcceptor, openssl::error::ErrorStack> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    b.set_max_proto_version(Some(SslVersion::TLS1_3))?;
    b.set_cipher_list(TLS12_CIPHERS)?;
    b.set_ciphersuites(TLS13_SUITES)?;
    b.set_options(SslOptions::NO_RENEGOTIATION | SslOptions::CIPHER_SERVER_PREFERENCE);
    b.set_alpn_select_callback(|_, offered| {
        select_next_proto(ALPN_H2_H1, offered).ok_or(AlpnError::NOACK)
    });
    Ok(b.build())
}

impl Terminator {
    pub fn new(certs: Arc<Certificates>) -> Result<Self, openssl::error::ErrorStack> {
        Ok(Terminator {
            acceptor: acceptor()?,
            callbacks: BySni(certs),
        })
    }

    /// Run the server handshake over `conn`, within `within`.
    pub async fn handshake(&self, conn: Conn, within: Duration) -> Result<Stream, HandshakeError> {
        match tokio::time::timeout(
            within,
            handshake_with_callback(&self.acceptor, conn, &self.callbacks),
        )
        .await
        {
            Err(_) => Err(HandshakeError::Timeout(within)),
            Ok(Err(e)) => Err(HandshakeError::Failed(e.to_string())),
            Ok(Ok(tls)) => Ok(Box::new(tls)),
        }
    }
}
