//! One access-log line: what the gateway knew of a request when it ended,
//! with the field names of `docs/operations.md` ("Reading the access
//! log"). Built on the request path from owned values and serialised by
//! the writer thread: the time, the trace id, the client address and the
//! flags are kept as they are and formatted there, not on the request path.

use std::net::IpAddr;
use std::time::SystemTime;

use serde::{Serialize, Serializer};

use super::Flags;

/// When a request arrived, written as RFC 3339 with milliseconds, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp(pub SystemTime);

impl Default for Stamp {
    fn default() -> Self {
        Stamp(SystemTime::UNIX_EPOCH)
    }
}

impl Serialize for Stamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // A clock set before 1970 is written as 1970 (the formatter
        // refuses earlier times).
        let t = self.0.max(SystemTime::UNIX_EPOCH);
        s.collect_str(&humantime::format_rfc3339_millis(t))
    }
}

/// A trace id, written as 32 lowercase hex digits.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TraceId(pub [u8; 16]);

impl Serialize for TraceId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::ids::to_hex(&self.0))
    }
}

/// One request, as the access log records it.
#[derive(Debug, Default, Serialize)]
pub struct Entry {
    /// When the request arrived: RFC 3339, milliseconds, UTC.
    pub ts: Stamp,
    pub request_id: String,
    pub trace_id: Option<TraceId>,
    /// `public`, `internal`, `http` (the plain listener beside HTTPS) or
    /// `admin`.
    pub listener: &'static str,
    /// `http/1.0`, `http/1.1` or `h2`.
    pub proto: &'static str,
    /// The TLS version (`TLSv1.3`), `null` over plain TCP.
    pub tls: Option<String>,
    pub method: String,
    pub host: String,
    /// The normalised path, without its query.
    pub path: String,
    pub route: Option<String>,
    /// The status the client got; 499 when it went away first; 0 when
    /// nothing could be answered.
    pub status: u16,
    /// gRPC calls: the `grpc-status` the client got, when one was seen.
    pub grpc_status: Option<u32>,
    /// Request body bytes read, response body bytes sent.
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_ms: f64,
    /// The last attempt's time to its upstream's answer head.
    pub upstream_ms: Option<f64>,
    pub shard: Option<u32>,
    pub home: Option<String>,
    /// The unit that served (or last tried) the request.
    pub unit: Option<String>,
    pub reason: Option<&'static str>,
    pub attempts: u8,
    /// The release lane (always `null` until lanes exist).
    pub lane: Option<String>,
    /// The client address the gateway believes.
    pub client: Option<IpAddr>,
    /// The verified JWT user; the field is left out with
    /// `access_log_user = false`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<Option<String>>,
    /// The gateway's error code (`x-unit-error`), `null` when none.
    pub error: Option<&'static str>,
    /// [`Flags`] codes, comma-separated.
    pub flags: Flags,
}

/// Milliseconds, to the microsecond.
pub fn millis(d: std::time::Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

impl Entry {
    /// The line, newline included.
    pub fn line(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        self.write_line(&mut out);
        out
    }

    /// The line appended to `out` (the writer's scratch buffer): the
    /// serialiser writes into the `Vec` itself, each small piece of the
    /// line an inlined copy rather than a call through `dyn Write`.
    pub fn write_line(&self, out: &mut Vec<u8>) {
        // Writing into a Vec fails only if a Serialize impl does, and
        // none of the line's does.
        let _ = serde_json::to_writer(&mut *out, self);
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_named_as_documented() {
        let e = Entry {
            request_id: "r".into(),
            user: Some(None),
            ..Entry::default()
        };
        let v: serde_json::Value = serde_json::from_slice(&e.line()).unwrap();
        let mut names: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        names.sort_unstable();
        let mut want = vec![
            "ts",
            "request_id",
            "trace_id",
            "listener",
            "proto",
            "tls",
            "method",
            "host",
            "path",
            "route",
            "status",
            "grpc_status",
            "bytes_in",
            "bytes_out",
            "duration_ms",
            "upstream_ms",
            "shard",
            "home",
            "unit",
            "reason",
            "attempts",
            "lane",
            "client",
            "user",
            "error",
            "flags",
        ];
        want.sort_unstable();
        assert_eq!(names, want);
        // Left out when the user is not to be logged.
        let e = Entry::default();
        let v: serde_json::Value = serde_json::from_slice(&e.line()).unwrap();
        assert!(v.get("user").is_none());
    }

    #[test]
    fn times_ids_addresses_and_flags_are_written_as_text() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_765_000_000_123);
        assert_eq!(
            serde_json::to_value(Stamp(t)).unwrap(),
            "2025-12-06T05:46:40.123Z"
        );
        let id = TraceId([0xab; 16]);
        assert_eq!(serde_json::to_value(id).unwrap(), "ab".repeat(16));
        let e = Entry {
            client: Some("2001:db8::1".parse().unwrap()),
            flags: Flags::FAILOVER,
            ..Entry::default()
        };
        let v: serde_json::Value = serde_json::from_slice(&e.line()).unwrap();
        assert_eq!(
            (v["client"].as_str(), v["flags"].as_str()),
            (Some("2001:db8::1"), Some("FO"))
        );
        assert_eq!(millis(std::time::Duration::from_micros(1500)), 1.5);
    }
}
