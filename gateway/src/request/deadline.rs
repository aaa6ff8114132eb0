//! Client-supplied deadlines, and the time left forwarded upstream.
//!
//! A client may shorten a route's deadline (never lengthen it) with
//! `grpc-timeout` (gRPC's `1-8 digits` + `H M S m u n`) or with
//! `x-request-timeout-ms` (a plain number of milliseconds). Each upstream
//! attempt carries what is left of the request's time in
//! `x-request-timeout-ms`, and in `grpc-timeout` when the client sent one,
//! so that units can hand the deadline on to their own calls.

use std::time::Duration;

use http::HeaderName;
use pingora::http::RequestHeader;

pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
pub const X_REQUEST_TIMEOUT_MS: HeaderName = HeaderName::from_static("x-request-timeout-ms");

/// Where a client's deadline came from (to forward it the same way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Grpc,
    Millis,
}

/// A deadline header that does not parse, or appears twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadTimeout;

/// `grpc-timeout`: at most 8 digits and one unit letter.
pub fn parse_grpc(v: &str) -> Option<Duration> {
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `x-request-timeout-ms`: 1 to 10 digits.
pub fn parse_millis(v: &str) -> Option<Duration> {
    if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok().map(Duration::from_millis)
}

/// The client's deadline, if it sent one (`grpc-timeout` first).
pub fn of_request(req: &RequestHeader) -> Result<Option<(Duration, Source)>, BadTimeout> {
    for (name, source) in [
        (&GRPC_TIMEOUT, Source::Grpc),
        (&X_REQUEST_TIMEOUT_MS, Source::Millis),
    ] {
        let mut all = req.headers.get_all(name).iter();
        let Some(v) = all.next() else { continue };
        if all.next().is_some() {
            return Err(BadTimeout);
        }
        let v = v.to_str().map_err(|_| BadTimeout)?;
        let d = match source {
            Source::Grpc => parse_grpc(v),
            Source::Millis => parse_millis(v),
        };
        return d.map(|d| Some((d, source))).ok_or(BadTimeout);
    }
    Ok(None)
}

/// `left` as a `grpc-timeout` value (milliseconds, rounded down, at least 1).
pub fn grpc_value(left: Duration) -> String {
    format!("{}m", (left.as_millis() as u64).clamp(1, 99_999_999))
}

/// `left` as an `x-request-timeout-ms` value (rounded down, at least 1).
pub fn millis_value(left: Duration) -> String {
    (left.as_millis() as u64).max(1).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_by_unit() {
        assert_eq!(parse_grpc("300m"), Some(Duration::from_millis(300)));
        assert_eq!(parse_grpc("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc("5000u"), Some(Duration::from_millis(5)));
        for bad in ["", "m", "123456789m", "12x", "-1S", "1.5S", " 1S"] {
            assert_eq!(parse_grpc(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn millis_parse() {
        assert_eq!(parse_millis("250"), Some(Duration::from_millis(250)));
        assert_eq!(parse_millis("0"), Some(Duration::ZERO));
        for bad in ["", "1s", "12345678901", "+5"] {
            assert_eq!(parse_millis(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn one_header_at_most() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        assert_eq!(of_request(&req), Ok(None));
        req.append_header("x-request-timeout-ms", "100").unwrap();
        assert_eq!(
            of_request(&req),
            Ok(Some((Duration::from_millis(100), Source::Millis)))
        );
        req.append_header("x-request-timeout-ms", "200").unwrap();
        assert_eq!(of_request(&req), Err(BadTimeout));
        let mut g = RequestHeader::build("POST", b"/", None).unwrap();
        g.append_header("grpc-timeout", "1S").unwrap();
        g.append_header("x-request-timeout-ms", "5").unwrap();
        assert_eq!(
            of_request(&g),
            Ok(Some((Duration::from_secs(1), Source::Grpc)))
        );
    }

    #[test]
    fn forwarded_values() {
        assert_eq!(grpc_value(Duration::from_micros(1500)), "1m");
        assert_eq!(grpc_value(Duration::ZERO), "1m");
        assert_eq!(millis_value(Duration::from_millis(299)), "299");
    }
}
