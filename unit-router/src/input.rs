//! Edge input rules, applied before a request is routed: the `Host` must be
//! a host name or an IP literal with an optional port, and the path is
//! normalised so that a route prefix is a real boundary.
//!
//! Path rule (documented in `docs/wire-contract.md`): percent-encoded
//! unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded once; an
//! encoded `/`, `\` or NUL, a raw `\` or `;` (path parameters, which some
//! servers strip and so would cross a route boundary), a malformed escape
//! or a control character is refused; then `.` and `..` segments are removed (RFC 3986
//! 5.2.4) and repeated slashes merged. Other escapes stay as sent. A path
//! that needs no change is returned borrowed (no allocation).

use std::borrow::Cow;

/// Why a request line is refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub enum InputError {
    NoHost,
    BadHost,
    NotAbsolute,
    BadEscape,
    EncodedSeparator,
    BadCharacter,
    /// The request body is malformed (framing, chunked encoding).
    BadBody,
    /// The user header appears more than once, or lists several values:
    /// routing on one and forwarding all would let the unit act on another
    /// user than the one the request was routed for.
    AmbiguousUser,
    /// The body's framing could be read two ways: `Transfer-Encoding` with
    /// `Content-Length`, or a transfer coding other than a single `chunked`.
    AmbiguousFraming,
    /// `grpc-timeout` or `x-request-timeout-ms` does not parse, or is sent
    /// twice.
    BadTimeout,
    /// A header name with `_` that a server folding `_` into `-` reads as
    /// `Content-Length` or `Transfer-Encoding` (`Transfer_Encoding`).
    UnderscoredFraming,
}

impl InputError {
    /// The message, as a static string (for error bodies).
    pub fn message(self) -> &'static str {
        match self {
            InputError::NoHost => "the Host header is missing",
            InputError::BadHost => {
                "the Host header is not a host name or IP address with an optional port"
            }
            InputError::NotAbsolute => "the path is not an absolute path",
            InputError::BadEscape => "the path has a malformed percent escape",
            InputError::EncodedSeparator => "the path has an encoded slash, backslash or NUL",
            InputError::BadBody => "the request body is malformed",
            InputError::AmbiguousUser => {
                "the user header must appear once, with one value"
            }
            InputError::AmbiguousFraming => {
                "the request framing is ambiguous: Transfer-Encoding must be a single 'chunked' and comes without Content-Length"
            }
            InputError::UnderscoredFraming => {
                "a header name with '_' reads as Content-Length or Transfer-Encoding where '_' is taken for '-'"
            }
            InputError::BadTimeout => {
                "the request's timeout is malformed or repeated (grpc-timeout: 1-8 digits and one of H M S m u n; x-request-timeout-ms: milliseconds)"
            }
            InputError::BadCharacter => {
                "the path has a backslash, a ';', a control character or bytes that are not UTF-8"
            }
        }
    }
}

/// Longest host name accepted (DNS: 253, plus a trailing dot and a port).
const MAX_HOST: usize = 260;

/// Check a `Host` value: a DNS-style name (labels of letters, digits, `-`
/// and `_`, 1-63 long, separated by single dots, an optional trailing dot),
/// an IPv4 address, or a bracketed IPv6 literal; then an optional `:port`.
pub fn check_host(host: &str) -> Result<(), InputError> {
    if host.is_empty() {
        return Err(InputError::NoHost);
    }
    if host.len() > MAX_HOST {
        return Err(InputError::BadHost);
    }
    let (name, port) = split_port(host)?;
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InputError::BadHost);
        }
        if p.parse::<u32>().map_or(true, |n| n == 0 || n > 65_535) {
            return Err(InputError::BadHost);
        }
    }
    if let Some(v6) = name.strip_prefix('[') {
        let inner = v6.strip_suffix(']').ok_or(InputError::BadHost)?;
        return inner
            .parse::<std::net::Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| InputError::BadHost);
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return Err(InputError::BadHost);
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(InputError::BadHost)
    }
}

/// `host[:port]` or `[v6][:port]`.
fn split_port(host: &str) -> Result<(&str, Option<&str>), InputError> {
    if host.starts_with('[') {
        let end = host.find(']').ok_or(InputError::BadHost)?;
        let (name, rest) = host.split_at(end + 1);
        return match rest.strip_prefix(':') {
            Some(p) => Ok((name, Some(p))),
            None if rest.is_empty() => Ok((name, None)),
            None => Err(InputError::BadHost),
        };
    }
    Ok(match host.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    })
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Normalise an absolute path (no query) by the rule of this module.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, InputError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(InputError::NotAbsolute);
    }
    let mut needs_work = false;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\\' | b';' => return Err(InputError::BadCharacter),
            _ if b.is_ascii_control() => return Err(InputError::BadCharacter),
            b'%' => needs_work = true,
            b'/' if matches!(bytes.get(i + 1), Some(b'/' | b'.')) => needs_work = true,
            _ => {}
        }
    }
    if !needs_work {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(bytes)?;
    let cleaned = remove_dot_segments(&decoded);
    if cleaned == path {
        Ok(Cow::Borrowed(path))
    } else {
        Ok(Cow::Owned(cleaned))
    }
}

/// Decode `%XX` of unreserved characters once; refuse encoded separators.
fn decode_unreserved(bytes: &[u8]) -> Result<String, InputError> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        let (Some(h), Some(l)) = (
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) else {
            return Err(InputError::BadEscape);
        };
        let v = h * 16 + l;
        if matches!(v, b'/' | b'\\' | 0) {
            return Err(InputError::EncodedSeparator);
        }
        if unreserved(v) {
            out.push(v);
        } else {
            out.extend_from_slice(&bytes[i..i + 3]);
        }
        i += 3;
    }
    // ASCII escapes were replaced by ASCII bytes: still UTF-8.
    String::from_utf8(out).map_err(|_| InputError::BadCharacter)
}

/// RFC 3986 5.2.4 on segments, with empty segments (repeated slashes)
/// merged; a trailing slash, or a trailing `.`/`..`, leaves a trailing slash.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." | "" => trailing_slash = i == last,
            ".." => {
                out.pop();
                trailing_slash = i == last;
            }
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut s = String::with_capacity(path.len());
    for seg in &out {
        s.push('/');
        s.push_str(seg);
    }
    if trailing_slash || out.is_empty() {
        s.push('/');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hosts() {
        for ok in [
            "api.example.com",
            "API.Example.COM.",
            "api.example.com:8080",
            "localhost",
            "127.0.0.1",
            "127.0.0.1:80",
            "[::1]",
            "[2001:db8::1]:443",
            "a_b.example.com",
        ] {
            assert_eq!(check_host(ok), Ok(()), "{ok}");
        }
        for bad in [
            "evil.com/.example.com",
            "evil.com#.example.com",
            "a..example.com",
            ".example.com",
            "evil.com@api.example.com",
            "api.example.com:",
            "api.example.com:99999",
            "api.example.com:0",
            "api.example.com:80:80",
            "api example.com",
            "[::1",
            "[::1]x",
            "[not-v6]",
            "%61pi.example.com",
        ] {
            assert_eq!(check_host(bad), Err(InputError::BadHost), "{bad}");
        }
        assert_eq!(check_host(""), Err(InputError::NoHost));
        assert_eq!(check_host(&"a".repeat(300)), Err(InputError::BadHost));
    }

    #[test]
    fn paths() {
        let n = |p: &str| normalize_path(p).map(Cow::into_owned);
        assert!(matches!(normalize_path("/orders/1"), Ok(Cow::Borrowed(_))));
        assert_eq!(n("/orders/../admin"), Ok("/admin".into()));
        assert_eq!(n("/orders/%2e%2e/config"), Ok("/config".into()));
        assert_eq!(n("/orders/%2E%2E/%2e%2e/x"), Ok("/x".into()));
        assert_eq!(n("/a/./b//c/"), Ok("/a/b/c/".into()));
        assert_eq!(n("/a/b/.."), Ok("/a/".into()));
        assert_eq!(n("/../../etc"), Ok("/etc".into()));
        assert_eq!(n("/%7Euser/%41"), Ok("/~user/A".into()));
        // Decoded once: an escaped percent stays escaped.
        assert_eq!(n("/a/%252e%252e/b"), Ok("/a/%252e%252e/b".into()));
        assert_eq!(n("/a%20b"), Ok("/a%20b".into()));
        assert_eq!(n("/a/%2f/b"), Err(InputError::EncodedSeparator));
        assert_eq!(n("/a/%5C/b"), Err(InputError::EncodedSeparator));
        assert_eq!(n("/a/%00"), Err(InputError::EncodedSeparator));
        assert_eq!(n("/a/%zz"), Err(InputError::BadEscape));
        assert_eq!(n("/a/%2"), Err(InputError::BadEscape));
        assert_eq!(n("/a\\..\\b"), Err(InputError::BadCharacter));
        assert_eq!(n("/orders/admin;x/y"), Err(InputError::BadCharacter));
        assert_eq!(n("/orders/x/..;/admin"), Err(InputError::BadCharacter));
        assert_eq!(n("orders"), Err(InputError::NotAbsolute));
        assert_eq!(n("/"), Ok("/".into()));
    }

    proptest! {
        #[test]
        fn normalised_paths_are_fixed_points_without_dot_segments(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("/"), Just("."), Just(".."), Just("%2e"), Just("%2E"), Just("%25"),
                    Just("%2f"), Just("%41"), Just("a"), Just("b"), Just("~"), Just(";"),
                ],
                0..16,
            )
        ) {
            let p = format!("/{}", parts.concat());
            if let Ok(once) = normalize_path(&p) {
                let twice = normalize_path(&once).map(Cow::into_owned);
                prop_assert_eq!(twice.as_deref(), Ok(&*once));
                prop_assert!(once.starts_with('/'));
                prop_assert!(!once.split('/').any(|s| s == ".." || s == "."));
                prop_assert!(!once.contains("//"));
            }
        }

        #[test]
        fn no_input_panics(h in ".{0,80}", p in ".{0,80}") {
            let _ = check_host(&h);
            let _ = normalize_path(&p);
        }
    }
}
