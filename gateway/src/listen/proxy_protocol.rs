//! The PROXY protocol (v1 text, v2 binary) on a listener behind an L4 load
//! balancer: the balancer opens each connection with a header naming the
//! client's address, read here before anything else (before TLS), parsed
//! by `ppp`. Exactly the header's bytes are read, never more: what follows
//! is the client's (a TLS ClientHello or an HTTP request).
//!
//! A listener that takes the header requires it, and only from the
//! trusted proxies (`trusted_proxies`): a connection from anywhere else, or
//! without a well-formed header in time, is closed. A v2 `LOCAL` header
//! (the balancer's own health check) or a v1 `UNKNOWN` one keeps the
//! socket's address.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ppp::{v1, v2};
use tokio::io::AsyncReadExt;

use pingora::protocols::Stream;

/// Longest v1 header (the spec's 107 bytes, CRLF included).
const V1_MAX: usize = 107;
/// Longest v2 header accepted: 16 bytes and addresses, plus TLVs.
const V2_MAX: usize = 16 + 512;
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// Why a connection's PROXY header was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyHeaderError {
    #[error("no PROXY header within {0:?}")]
    Timeout(Duration),
    #[error("connection closed before the PROXY header ended")]
    Closed,
    #[error("not a PROXY protocol header")]
    Missing,
    #[error("PROXY header over {0} bytes")]
    TooLong(usize),
    #[error("malformed PROXY header: {0}")]
    Malformed(String),
    #[error("a PROXY header from {0}, which is not a trusted proxy")]
    Untrusted(IpAddr),
}

/// The addresses a header gave: `None` for `LOCAL`/`UNKNOWN`.
pub type Addresses = Option<(SocketAddr, SocketAddr)>;

/// Read one PROXY header off `stream` within `within`.
pub async fn read_header(
    stream: &mut Stream,
    within: Duration,
) -> Result<Addresses, ProxyHeaderError> {
    tokio::time::timeout(within, read(stream))
        .await
        .map_err(|_| ProxyHeaderError::Timeout(within))?
}

async fn fill(stream: &mut Stream, buf: &mut [u8]) -> Result<(), ProxyHeaderError> {
    stream
        .read_exact(buf)
        .await
        .map(|_| ())
        .map_err(|_| ProxyHeaderError::Closed)
}

async fn read(stream: &mut Stream) -> Result<Addresses, ProxyHeaderError> {
    // Both versions' shortest header is longer than 8 bytes.
    let mut head = vec![0u8; 8];
    fill(stream, &mut head).await?;
    if head.starts_with(b"PROXY ") {
        // v1: up to CRLF, a byte at a time (no byte past the header).
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n") {
            if head.len() >= V1_MAX {
                return Err(ProxyHeaderError::TooLong(V1_MAX));
            }
            fill(stream, &mut b).await?;
            head.push(b[0]);
        }
        let header = v1::Header::try_from(head.as_slice())
            .map_err(|e| ProxyHeaderError::Malformed(e.to_string()))?;
        return Ok(match header.addresses {
            v1::Addresses::Tcp4(a) => Some((
                (a.source_address, a.source_port).into(),
                (a.destination_address, a.destination_port).into(),
            )),
            v1::Addresses::Tcp6(a) => Some((
                (a.source_address, a.source_port).into(),
                (a.destination_address, a.destination_port).into(),
            )),
            v1::Addresses::Unknown => None,
        });
    }
    if !V2_SIGNATURE.starts_with(&head) {
        return Err(ProxyHeaderError::Missing);
    }
    head.resize(16, 0);
    fill(stream, &mut head[8..]).await?;
    if &head[..12] != V2_SIGNATURE {
        return Err(ProxyHeaderError::Missing);
    }
    let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
    if 16 + len > V2_MAX {
        return Err(ProxyHeaderError::TooLong(V2_MAX));
    }
    head.resize(16 + len, 0);
    fill(stream, &mut head[16..]).await?;
    let header = v2::Header::try_from(head.as_slice())
        .map_err(|e| ProxyHeaderError::Malformed(e.to_string()))?;
    if header.command == v2::Command::Local {
        return Ok(None);
    }
    Ok(match header.addresses {
        v2::Addresses::IPv4(a) => Some((
            (a.source_address, a.source_port).into(),
            (a.destination_address, a.destination_port).into(),
        )),
        v2::Addresses::IPv6(a) => Some((
            (a.source_address, a.source_port).into(),
            (a.destination_address, a.destination_port).into(),
        )),
        v2::Addresses::Unspecified | v2::Addresses::Unix(_) => None,
    })
}
