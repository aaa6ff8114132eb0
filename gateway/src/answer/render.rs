//! Answers built from the error table or from the request path's own
//! replies: JSON `{"error","message",...}` with the error's status, or, to a
//! gRPC client, a trailers-only gRPC status (HTTP 200, `grpc-status`,
//! `grpc-message`, no body); the 308 of the HTTPS redirect; a JSON value.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::Result;

use super::error::GwError;

/// The shape of the answer a request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Json,
    /// A gRPC call: errors are gRPC statuses. `http2`: the status rides on
    /// the one HEADERS frame; over HTTP/1 (gRPC-Web or a misdirected
    /// client) the empty body is delimited by `content-length: 0`.
    Grpc {
        http2: bool,
    },
}

impl Form {
    /// The form for a request with this `content-type`.
    pub fn of(content_type: Option<&[u8]>, http2: bool) -> Form {
        match content_type {
            Some(ct) if ct.starts_with(b"application/grpc") => Form::Grpc { http2 },
            _ => Form::Json,
        }
    }
}

/// A whole answer: its head and body, and whether the connection may carry
/// another request after it.
#[derive(Debug)]
pub struct Answer {
    pub head: ResponseHeader,
    pub body: Bytes,
    pub keeps_connection: bool,
}

/// The answer to `err` in `form`.
pub fn error(err: &GwError, form: Form, request_id: &str) -> Result<Answer> {
    let row = err.row();
    let (mut h, body) = match form {
        Form::Grpc { http2 } => {
            let mut h = ResponseHeader::build(200, Some(8))?;
            h.insert_header("content-type", "application/grpc")?;
            h.insert_header("grpc-status", row.grpc.to_string())?;
            let message = match err.detail() {
                Some(d) => format!("{}: {d}", row.message),
                None => row.message.to_owned(),
            };
            h.insert_header("grpc-message", grpc_message(&message))?;
            h.insert_header("x-unit-error", row.code)?;
            if !http2 {
                h.insert_header("content-length", "0")?;
            }
            (h, Bytes::new())
        }
        Form::Json => {
            let body = json_body(err, request_id);
            let mut h = ResponseHeader::build(row.status, Some(6))?;
            h.insert_header("content-type", "application/json")?;
            h.insert_header("content-length", body.len().to_string())?;
            (h, body)
        }
    };
    h.insert_header("cache-control", "no-store")?;
    if !request_id.is_empty() {
        h.insert_header("x-request-id", request_id)?;
    }
    match err {
        GwError::NotReady | GwError::Overloaded => h.insert_header("retry-after", "1")?,
        GwError::MethodNotAllowed(allow) => h.insert_header("allow", allow.as_str())?,
        GwError::TooManyRequests(x) => {
            h.insert_header("retry-after", x.retry_after_s.to_string())?;
            h.insert_header("ratelimit-policy", x.limits.policy.as_str())?;
            h.insert_header("ratelimit", x.limits.state.as_str())?;
        }
        _ => {}
    }
    if let Some(c) = challenge(err) {
        h.insert_header("www-authenticate", c)?;
    }
    Ok(Answer {
        head: h,
        body,
        keeps_connection: err.keeps_connection(),
    })
}

/// A 308 to `location` (the plain listener sending a host to HTTPS).
pub fn redirect(location: &str) -> Result<Answer> {
    let mut h = ResponseHeader::build(308, Some(3))?;
    h.insert_header("location", location)?;
    h.insert_header("content-length", "0")?;
    h.insert_header("cache-control", "no-store")?;
    Ok(Answer {
        head: h,
        body: Bytes::new(),
        keeps_connection: true,
    })
}

/// A JSON value with `status` and `extra` headers.
pub fn json(status: u16, value: &serde_json::Value, extra: &[(&str, String)]) -> Result<Answer> {
    let body = Bytes::from(value.to_string());
    let mut h = ResponseHeader::build(status, Some(4 + extra.len()))?;
    h.insert_header("content-type", "application/json")?;
    h.insert_header("content-length", body.len().to_string())?;
    h.insert_header("cache-control", "no-store")?;
    for (k, v) in extra {
        h.append_header(k.to_string(), v.as_str())?;
    }
    Ok(Answer {
        head: h,
        body,
        keeps_connection: true,
    })
}

/// `answer` as HTTP/1.1 bytes that close the connection: what a
/// connection guard writes in place of the framework's own answer, before
/// any session exists.
pub fn wire(answer: &Answer) -> Bytes {
    let h = &answer.head;
    let reason = h.status.canonical_reason().unwrap_or("");
    let mut out = format!("HTTP/1.1 {} {reason}\r\n", h.status.as_u16()).into_bytes();
    for (name, value) in h.headers.iter() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"connection: close\r\n\r\n");
    out.extend_from_slice(&answer.body);
    out.into()
}

/// The JSON body of `err`: its code and message, and what the client needs
/// to act on it (why a token was refused, the quota exhausted).
fn json_body(err: &GwError, request_id: &str) -> Bytes {
    let row = err.row();
    let mut v = serde_json::json!({ "error": row.code, "message": row.message });
    if !request_id.is_empty() {
        v["request_id"] = request_id.into();
    }
    if let Some(d) = err.detail() {
        v["detail"] = d.into();
    }
    if let GwError::TooManyRequests(x) = err {
        v["quota"] = x.quota.as_str().into();
        v["retry_after_s"] = x.retry_after_s.into();
    }
    Bytes::from(v.to_string())
}

/// `WWW-Authenticate` of an auth refusal (RFC 6750 section 3).
fn challenge(err: &GwError) -> Option<String> {
    Some(match err {
        GwError::TokenMissing => "Bearer".to_owned(),
        GwError::TokenInvalid(e) => {
            format!("Bearer error=\"invalid_token\", error_description=\"{e}\"")
        }
        GwError::CredentialMalformed => {
            "Bearer error=\"invalid_request\", error_description=\"the Authorization header is malformed\"".to_owned()
        }
        GwError::Forbidden => {
            "Bearer error=\"insufficient_scope\", error_description=\"the token lacks a claim this route requires\"".to_owned()
        }
        _ => return None,
    })
}

/// `grpc-message`: percent-encoded outside printable ASCII (the gRPC
/// HTTP/2 spec).
fn grpc_message(m: &str) -> String {
    let mut out = String::with_capacity(m.len());
    for b in m.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_grpc_say_the_same_code_and_message() {
        let err = GwError::NoUnit;
        let j = error(&err, Form::Json, "").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&j.body).unwrap();
        let g = error(&err, Form::Grpc { http2: true }, "").unwrap();
        let hv = |a: &Answer, n: &str| a.head.headers.get(n).unwrap().to_str().unwrap().to_owned();
        assert_eq!(j.head.status.as_u16(), 503);
        assert_eq!(v["error"], hv(&g, "x-unit-error"));
        assert_eq!(v["message"], hv(&g, "grpc-message"));
        assert_eq!(hv(&g, "grpc-status"), "14");
        assert!(g.body.is_empty() && g.head.headers.get("content-length").is_none());
    }

    #[test]
    fn the_wire_form_closes_and_carries_the_body() {
        let a = error(&GwError::HeadersTooLarge, Form::Json, "").unwrap();
        let w = wire(&a);
        let text = std::str::from_utf8(&w).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nconnection: close\r\n\r\n{"), "{text}");
        assert!(
            text.ends_with(
                r#""error":"headers_too_large","message":"request headers are too large"}"#
            ),
            "{text}"
        );
    }
}
