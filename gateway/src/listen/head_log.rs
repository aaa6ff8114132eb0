//! The access-log line of a request head the head guard refused (431, 408,
//! or the gateway's 400 for a head the framework could not parse): no
//! request reached the proxy hooks, so only the connection is known.

use std::time::{Duration, SystemTime};

use pingora::protocols::Stream;

use crate::access::entry::{millis, Stamp};
use crate::access::{AccessLog, Entry, Flags};
use crate::answer::GwError;

/// Where a listener's refused heads are logged.
#[derive(Debug, Clone)]
pub struct HeadLog {
    pub access: AccessLog,
    /// The listener's name, as in every other line.
    pub listener: &'static str,
}

impl HeadLog {
    /// Log `err`, the answer to a head on `io` that was `reading` for this
    /// long, under `request_id`.
    pub fn refused(&self, io: &Stream, err: &GwError, reading: Duration, request_id: &str) {
        if !self.access.enabled() {
            return;
        }
        let peer = io
            .get_socket_digest()
            .and_then(|d| d.peer_addr().cloned())
            .and_then(|a| a.as_inet().map(|a| a.ip()));
        let tls = io.get_ssl_digest().map(|d| d.version.to_string());
        let arrived = SystemTime::now()
            .checked_sub(reading)
            .unwrap_or(SystemTime::now());
        self.access.write(Box::new(Entry {
            ts: Stamp(arrived),
            request_id: request_id.to_owned(),
            listener: self.listener,
            proto: "http/1.1",
            tls,
            status: err.status(),
            duration_ms: millis(reading),
            client: peer,
            error: Some(err.code()),
            flags: Flags::of_error(err),
            ..Entry::default()
        }));
    }
}
