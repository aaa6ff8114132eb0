//! Who a request is, end to end: its `x-request-id` and its W3C trace
//! context (`traceparent`, `tracestate`).
//!
//! - **Request id.** A well-formed `x-request-id` (1-128 characters of
//!   `A-Z a-z 0-9 - _ . : / + =`) is kept when it comes from a trusted proxy
//!   (`trusted_proxies`) or over the internal listener (a unit's service
//!   passing its caller's id on); any other is replaced by 32 random hex
//!   digits. The id goes upstream, back on every answer, into the access
//!   log and every error body.
//! - **Trace context.** A valid `traceparent` is continued: same trace id
//!   and sampled flag, the gateway's server span a child of the client's
//!   span, and each upstream attempt a child of the server span, whose id
//!   goes upstream as the parent. An absent or invalid one starts a new
//!   trace (its `tracestate` is then dropped, as the W3C spec says).
//!
//! Pure parsing and formatting: no IO, no clock.

/// Longest `x-request-id` kept.
pub const MAX_REQUEST_ID: usize = 128;

/// A request id the gateway keeps, if `v` is one.
pub fn well_formed_request_id(v: &[u8]) -> Option<&str> {
    let ok = |b: &u8| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(b);
    if v.is_empty() || v.len() > MAX_REQUEST_ID || !v.iter().all(ok) {
        return None;
    }
    std::str::from_utf8(v).ok()
}

/// A fresh request id: 128 random bits as 32 lowercase hex digits.
pub fn new_request_id(bits: u128) -> String {
    to_hex(&bits.to_be_bytes())
}

/// A request's id and trace context.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ids {
    pub request_id: String,
    pub trace: Trace,
}

/// A W3C trace context as the gateway carries it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Trace {
    pub trace_id: [u8; 16],
    /// The caller's span, when the trace was continued.
    pub parent: Option<[u8; 8]>,
    /// The gateway's server span.
    pub span: [u8; 8],
    pub sampled: bool,
}

/// A `traceparent` header value, if valid: (trace id, parent id, flags).
/// Version `00` is exactly 55 characters; a later version may carry more
/// after a `-`; `ff`, an all-zero id and upper-case hex are invalid.
pub fn parse_traceparent(v: &[u8]) -> Option<([u8; 16], [u8; 8], u8)> {
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let version = hex::<1>(&v[0..2])?[0];
    if version == 0xff || (version == 0 && v.len() != 55) || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    let trace_id = hex::<16>(&v[3..35])?;
    let parent = hex::<8>(&v[36..52])?;
    let flags = hex::<1>(&v[53..55])?[0];
    if trace_id == [0; 16] || parent == [0; 8] {
        return None;
    }
    Some((trace_id, parent, flags))
}

/// Lowercase hex digits into `N` bytes.
fn hex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// Bytes as lowercase hex.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    push_hex(&mut s, bytes);
    s
}

/// Bytes as lowercase hex onto `s` (by table: on every request, where
/// the formatting machinery costs more than the rest of the id).
fn push_hex(s: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
}

impl Trace {
    /// The trace a request is part of: `traceparent` continued when valid,
    /// else a new one (`new_id`, never all zero, sampled when `sample`).
    /// `span` is the gateway's server span id (never all zero).
    pub fn of(traceparent: Option<&[u8]>, new_id: [u8; 16], span: [u8; 8], sample: bool) -> Self {
        match traceparent.and_then(parse_traceparent) {
            Some((trace_id, parent, flags)) => Trace {
                trace_id,
                parent: Some(parent),
                span,
                sampled: flags & 1 == 1,
            },
            None => Trace {
                trace_id: new_id,
                parent: None,
                span,
                sampled: sample,
            },
        }
    }

    /// The trace id as 32 hex digits.
    pub fn trace_id(&self) -> String {
        to_hex(&self.trace_id)
    }

    /// The trace was continued from the client's `traceparent`.
    pub fn continued(&self) -> bool {
        self.parent.is_some()
    }

    /// The `traceparent` sent upstream by the attempt whose span is `span`.
    pub fn traceparent(&self, span: [u8; 8]) -> String {
        let mut s = String::with_capacity(55);
        s.push_str("00-");
        push_hex(&mut s, &self.trace_id);
        s.push('-');
        push_hex(&mut s, &span);
        s.push_str(if self.sampled { "-01" } else { "-00" });
        s
    }
}

/// Random bytes that are not all zero (a valid W3C id).
pub fn nonzero<const N: usize>(mut draw: impl FnMut() -> [u8; N]) -> [u8; N] {
    loop {
        let id = draw();
        if id != [0; N] {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_continued() {
        let t = Trace::of(Some(VALID.as_bytes()), [7; 16], [9; 8], false);
        assert_eq!(to_hex(&t.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            t.parent,
            Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
        );
        assert!(t.sampled && t.continued());
        assert_eq!(
            t.traceparent([1; 8]),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0101010101010101-01"
        );
    }

    #[test]
    fn invalid_traceparents_start_a_new_trace() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            let t = Trace::of(Some(bad.as_bytes()), [7; 16], [9; 8], false);
            assert_eq!(t.trace_id, [7; 16], "{bad}");
            assert!(!t.continued() && !t.sampled, "{bad}");
        }
        // A later version may carry more fields.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-x";
        assert!(parse_traceparent(later.as_bytes()).is_some());
    }

    #[test]
    fn request_ids_are_kept_only_when_well_formed() {
        assert_eq!(
            well_formed_request_id(b"abc-123_x.y:z/+="),
            Some("abc-123_x.y:z/+=")
        );
        for bad in [&b""[..], b"a b", b"a\"b", b"a,b", b"\xff", &[b'a'; 129]] {
            assert_eq!(well_formed_request_id(bad), None);
        }
        assert_eq!(new_request_id(0xab), format!("{:0>32}", "ab"));
    }

    proptest! {
        #[test]
        fn what_is_sent_upstream_parses_back(
            id in any::<[u8; 16]>(),
            span in any::<[u8; 8]>(),
            sampled: bool,
        ) {
            prop_assume!(id != [0; 16] && span != [0; 8]);
            let t = Trace { trace_id: id, parent: None, span, sampled };
            let header = t.traceparent(span);
            let (trace_id, parent, flags) = parse_traceparent(header.as_bytes()).unwrap();
            prop_assert_eq!((trace_id, parent, flags & 1 == 1), (id, span, sampled));
        }

        #[test]
        fn no_input_panics(v in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = parse_traceparent(&v);
            let _ = well_formed_request_id(&v);
        }
    }
}
