//! The client protocol an end-to-end test runs over, so one test body runs
//! on both: HTTP/1.1 in the clear, or HTTP/2 (over TLS with ALPN on the
//! public listener, h2c on the internal one) against a gateway serving a
//! certificate of a local CA made for the test process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// How a test's client talks to the gateway.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Proto {
    /// HTTP/1.1, plain listeners.
    #[default]
    H1,
    /// HTTP/2: TLS on the public listener, h2c on the internal one.
    H2,
}

/// The test process's local CA and server certificate (for `localhost`,
/// `127.0.0.1` and `api.example.com`), made once by the gateway binary's
/// `demo-tls` command: `(ca.crt, certificate directory)`.
pub fn test_pki(bin: &Path) -> (PathBuf, PathBuf) {
    static PKI: OnceLock<(tempfile::TempDir, PathBuf, PathBuf)> = OnceLock::new();
    let (_, ca, certs) = PKI.get_or_init(|| {
        let dir = tempfile::tempdir().expect("pki dir");
        let out = Command::new(bin)
            .args(["demo-tls", "--out"])
            .arg(dir.path())
            .args(["--host", "localhost", "--host", "127.0.0.1"])
            .args(["--host", "api.example.com"])
            .output()
            .expect("run demo-tls");
        assert!(
            out.status.success(),
            "demo-tls: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ca = dir.path().join("ca.crt");
        let certs = dir.path().join("certs");
        (dir, ca, certs)
    });
    (ca.clone(), certs.clone())
}

/// An HTTP/2-only client trusting `ca` (prior knowledge: h2c on plain
/// URLs, ALPN `h2` on https ones), never following redirects.
pub fn h2_client(ca: &Path) -> reqwest::Client {
    thread_local! {
        static CACHED: std::cell::RefCell<Option<(PathBuf, reqwest::Client)>> =
            const { std::cell::RefCell::new(None) };
    }
    CACHED.with(|c| {
        let mut c = c.borrow_mut();
        match c.as_ref() {
            Some((p, client)) if p == ca => client.clone(),
            _ => {
                let client = build_h2_client(ca);
                *c = Some((ca.to_owned(), client.clone()));
                client
            }
        }
    })
}

fn build_h2_client(ca: &Path) -> reqwest::Client {
    let pem = std::fs::read(ca).expect("read ca");
    let cert = reqwest::Certificate::from_pem(&pem).expect("ca pem");
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .tls_built_in_root_certs(false)
        .add_root_certificate(cert)
        // The chain is checked, not the name: tests send many host names
        // (the SNI tests use a strict client).
        .danger_accept_invalid_hostnames(true)
        .dns_resolver(Arc::new(Loopback))
        .http2_prior_knowledge()
        .build()
        .expect("h2 client")
}

/// Run a test body once over HTTP/1.1 and once over HTTP/2: the test
/// becomes a module with the tests `http1` and `http2`.
#[macro_export]
macro_rules! both_protocols {
    ($(#[$m:meta])* async fn $name:ident($p:ident: Proto) $body:block) => {
        $(#[$m])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn http1() {
                body($crate::proto::Proto::H1).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn http2() {
                body($crate::proto::Proto::H2).await
            }
            async fn body($p: $crate::proto::Proto) $body
        }
    };
}

/// Every name resolves to 127.0.0.1 (the gateway under test).
struct Loopback;

impl Resolve for Loopback {
    fn resolve(&self, _name: Name) -> Resolving {
        let addrs: Addrs = Box::new(std::iter::once(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            0,
        ))));
        Box::pin(std::future::ready(Ok(addrs)))
    }
}

/// Send a request the way its test's protocol needs: over HTTP/2 a `Host`
/// header may not differ from `:authority` (RFC 9113 8.3.1; Pingora refuses
/// the request), so the header's host becomes the URL's (every name
/// resolves to the loopback gateway) and the header is dropped.
pub trait SendVia {
    fn send_via(
        self,
        proto: Proto,
    ) -> impl std::future::Future<Output = reqwest::Result<reqwest::Response>> + Send;
}

impl SendVia for reqwest::RequestBuilder {
    async fn send_via(self, proto: Proto) -> reqwest::Result<reqwest::Response> {
        let (client, req) = self.build_split();
        let mut req = req?;
        if proto == Proto::H2 {
            if let Some(host) = req.headers_mut().remove(reqwest::header::HOST) {
                let host = host.to_str().unwrap_or_default();
                let name = host.rsplit_once(':').map_or(host, |(n, _)| n).to_owned();
                let _ = req.url_mut().set_host(Some(&name));
            }
        }
        client.execute(req).await
    }
}
