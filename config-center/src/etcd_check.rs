//! The check a process makes of etcd before it relies on it: can the
//! credentials work? A refusal (a CA etcd's certificate does not chain
//! to, a client certificate etcd does not take, a wrong password, no
//! permission on the prefix) is worth stopping for; etcd down or
//! unreachable is not (retrying helps). Only what etcd or the TLS
//! verification said counts as a refusal: a connection that drops or
//! times out is "unreachable", whatever the phase.

use std::net::ToSocketAddrs;
use std::time::Duration;

use openssl::ssl::{ErrorCode, HandshakeError};

use crate::etcd_access::{authority, EtcdAccess};

/// What a TLS handshake with one endpoint found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsCheck {
    /// The handshake went through and etcd kept the connection open.
    Accepted,
    /// Our verification of etcd's certificate failed, or etcd refused
    /// ours with an alert (a wrong CA; a client certificate etcd does not
    /// take, or none where it wants one).
    Refused(String),
    /// No connection, or it dropped or went silent: down or unreachable.
    Unreachable(String),
}

/// Whether an OpenSSL error is a verdict: the verification of the peer's
/// certificate failed, or the peer sent an alert. An unexpected EOF or a
/// reset is not (a balancer without a backend, a restarting etcd).
fn verdict(e: &openssl::ssl::Error) -> bool {
    let Some(stack) = e.ssl_error() else {
        return false;
    };
    stack.errors().iter().any(|err| {
        let reason = err.reason().unwrap_or_default().to_ascii_lowercase();
        reason.contains("alert") || reason.contains("certificate verify failed")
    })
}

/// Shake hands with `endpoint` (`https://host:port`) as a client of etcd
/// will, and wait a moment for etcd's verdict on the client certificate:
/// under TLS 1.3 a refusal comes after the handshake, as an alert that
/// etcd-client's errors do not always carry. Blocking: for start-up.
pub fn check_tls(access: &EtcdAccess, endpoint: &str, wait: Duration) -> TlsCheck {
    let (host, authority) = authority(endpoint);
    let addr = match authority.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(a)) => a,
        Ok(None) => return TlsCheck::Unreachable(format!("{authority}: no address")),
        Err(e) => return TlsCheck::Unreachable(format!("{authority}: {e}")),
    };
    let tcp = match std::net::TcpStream::connect_timeout(&addr, wait) {
        Ok(t) => t,
        Err(e) => return TlsCheck::Unreachable(e.to_string()),
    };
    let _ = tcp.set_read_timeout(Some(wait));
    let _ = tcp.set_write_timeout(Some(wait));
    let connector = match access.connector() {
        Ok(c) => c,
        Err(e) => return TlsCheck::Refused(e.to_string()),
    };
    let mut tls = match connector.connect(host, tcp) {
        Ok(s) => s,
        Err(HandshakeError::Failure(mid)) if verdict(mid.error()) => {
            let v = mid.ssl().verify_result();
            let verify = if v.as_raw() != 0 {
                format!(" ({})", v.error_string())
            } else {
                String::new()
            };
            return TlsCheck::Refused(format!("TLS handshake: {}{verify}", mid.error()));
        }
        Err(HandshakeError::Failure(mid)) => {
            return TlsCheck::Unreachable(format!("TLS handshake: {}", mid.error()))
        }
        Err(HandshakeError::WouldBlock(_)) => {
            return TlsCheck::Unreachable("TLS handshake: no answer in time".into())
        }
        Err(e) => return TlsCheck::Refused(format!("TLS handshake: {e}")),
    };
    // The session tickets come, then nothing: accepted. A refusal comes
    // within a round trip.
    let _ = tls
        .get_ref()
        .set_read_timeout(Some(wait.min(Duration::from_millis(500))));
    let mut buf = [0u8; 256];
    match tls.ssl_read(&mut buf) {
        Ok(_) => TlsCheck::Accepted,
        Err(e) if verdict(&e) => TlsCheck::Refused(format!("after the TLS handshake: {e}")),
        Err(e) if e.code() == ErrorCode::WANT_READ => TlsCheck::Accepted,
        Err(e) => match e.io_error().map(std::io::Error::kind) {
            Some(std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                TlsCheck::Accepted
            }
            _ => TlsCheck::Unreachable(format!("after the TLS handshake: {e}")),
        },
    }
}

/// Whether an error says etcd refused these credentials or this trust (a
/// wrong CA, certificate or password: no retry will help) rather than
/// that it could not be reached.
pub fn refused(e: &etcd_client::Error) -> bool {
    let text = describe(e).to_ascii_lowercase();
    [
        "authentication failed",
        "invalid user",
        "permission denied",
        "user name is empty",
        "user name not found",
        "certificate verify failed",
        "alert",
    ]
    .iter()
    .any(|w| text.contains(w))
}

/// The error with its causes, one line: etcd-client's own text stops at
/// "transport error", the reason (a TLS alert, a refused connection) is
/// in its sources.
pub fn describe(e: &etcd_client::Error) -> String {
    let (mut text, mut source) = match e {
        etcd_client::Error::GRpcStatus(s) => (s.message().to_owned(), std::error::Error::source(s)),
        other => (other.to_string(), std::error::Error::source(other)),
    };
    for _ in 0..8 {
        let Some(s) = source else { break };
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn endpoints_split_into_host_and_authority() {
        assert_eq!(
            authority("https://etcd-0.etcd.unitgate.svc:2379"),
            ("etcd-0.etcd.unitgate.svc", "etcd-0.etcd.unitgate.svc:2379")
        );
        assert_eq!(authority("https://[::1]:2379/"), ("::1", "[::1]:2379"));
    }

    #[test]
    fn a_peer_that_closes_mid_handshake_is_unreachable_not_refusing() {
        // Accepts, reads the ClientHello, closes: a balancer without a
        // backend.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let at = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            if let Ok((mut c, _)) = l.accept() {
                let mut buf = [0u8; 512];
                let _ = c.read(&mut buf);
            }
        });
        let access = EtcdAccess::default();
        let got = check_tls(&access, &format!("https://{at}"), Duration::from_secs(2));
        t.join().unwrap();
        assert!(matches!(got, TlsCheck::Unreachable(_)), "{got:?}");
    }
}
