//! Reading and cleaning request headers at the edge: the client IP (socket
//! or trusted proxy chain), the routing token (cookie or header), the
//! baggage, and the stripping of every internal header an untrusted client
//! could forge. Pure functions over a request header.

use std::borrow::Cow;
use std::fmt::Write;
use std::net::IpAddr;

use http::header::{HeaderName, COOKIE, HOST};
use ipnet::IpNet;
use pingora::http::RequestHeader;
use unit_router::dye;
use unit_router::input::{check_host, normalize_path, InputError};
use unit_router::token::{COOKIE as ROUTE_COOKIE, HEADER as ROUTE_HEADER};

/// Header names used on every request, parsed once (a `&str` name is
/// parsed on each lookup).
pub const BAGGAGE: HeaderName = HeaderName::from_static("baggage");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
/// The verified JWT's user claim, set by the gateway only.
pub const X_AUTH_USER: HeaderName = HeaderName::from_static("x-auth-user");
/// The verified JWT's tenant claim, set by the gateway only.
pub const X_AUTH_TENANT: HeaderName = HeaderName::from_static("x-auth-tenant");
/// The issuer (`auth/issuers/<name>`) that verified the token.
pub const X_AUTH_ISSUER: HeaderName = HeaderName::from_static("x-auth-issuer");

fn trusted(ip: IpAddr, nets: &[IpNet]) -> bool {
    nets.iter().any(|n| n.contains(&ip))
}

/// Whether the direct peer is a trusted proxy.
pub fn peer_trusted(peer: Option<IpAddr>, nets: &[IpNet]) -> bool {
    peer.is_some_and(|p| trusted(p, nets))
}

/// The client IP: the socket peer, or, when the peer is a trusted proxy,
/// the right-most `X-Forwarded-For` address that is not itself trusted.
pub fn client_ip(peer: Option<IpAddr>, xff: Option<&str>, nets: &[IpNet]) -> Option<IpAddr> {
    let peer = peer?;
    if !trusted(peer, nets) {
        return Some(peer);
    }
    let mut last = peer;
    for hop in xff.unwrap_or("").rsplit(',') {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            return Some(last);
        };
        if !trusted(ip, nets) {
            return Some(ip);
        }
        last = ip;
    }
    Some(last)
}

/// The whole `x-forwarded-for` chain: every line of it, joined as one
/// list (borrowed when there is one line).
pub fn forwarded_for(req: &RequestHeader) -> Option<Cow<'_, str>> {
    let mut lines = values(req, &X_FORWARDED_FOR);
    let first = lines.next()?;
    match lines.next() {
        None => Some(Cow::Borrowed(first)),
        Some(second) => {
            let rest: Vec<&str> = [first, second].into_iter().chain(lines).collect();
            Some(Cow::Owned(rest.join(", ")))
        }
    }
}

/// The `x-forwarded-for` sent upstream: the chain the request came with
/// (only a trusted proxy's is left by [`strip`]), then `peer`, the address
/// the gateway got the request from (nginx's `$proxy_add_x_forwarded_for`).
pub fn forwarded_for_upstream(req: &RequestHeader, peer: IpAddr) -> String {
    // Built in one buffer: this runs on every request.
    let mut out = list(req, &X_FORWARDED_FOR);
    if !out.is_empty() {
        out.push_str(", ");
    }
    let _ = write!(out, "{peer}");
    out
}

/// Every visible-ASCII value of `name`, as one comma-separated list.
fn list(req: &RequestHeader, name: &HeaderName) -> String {
    let mut out = String::with_capacity(64);
    for v in values(req, name) {
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(v);
    }
    out
}

/// The scheme of the hop the gateway got the request on.
pub fn scheme(tls: bool) -> &'static str {
    if tls {
        "https"
    } else {
        "http"
    }
}

/// The `forwarded` sent upstream (RFC 7239): the elements the request came
/// with (only a trusted proxy's are left by [`strip`]; every line, as one
/// list), then the gateway's own for the hop it got the request on,
/// `for=<peer>;proto=<scheme>` (an IPv6 peer quoted as `"[v6]"`, none known
/// as `unknown`).
pub fn forwarded_upstream(req: &RequestHeader, peer: Option<IpAddr>, tls: bool) -> String {
    let mut out = list(req, &FORWARDED);
    if !out.is_empty() {
        out.push_str(", ");
    }
    out.push_str("for=");
    let _ = match peer {
        Some(IpAddr::V4(ip)) => write!(out, "{ip}"),
        Some(IpAddr::V6(ip)) => write!(out, "\"[{ip}]\""),
        None => write!(out, "unknown"),
    };
    out.push_str(";proto=");
    out.push_str(scheme(tls));
    out
}

/// Every value of header `name` that is visible ASCII.
fn values<'a>(req: &'a RequestHeader, name: &HeaderName) -> impl Iterator<Item = &'a str> {
    req.headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
}

/// Value of cookie `name` in any `Cookie` header.
pub fn cookie<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    values(req, &COOKIE)
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == name).then(|| v.trim().trim_matches('"'))
        })
}

/// The routing token the client echoed (cookie first, then header).
pub fn token(req: &RequestHeader) -> Option<&str> {
    cookie(req, ROUTE_COOKIE)
        .or_else(|| req.headers.get(ROUTE_HEADER).and_then(|v| v.to_str().ok()))
}

/// Remove every `x-unit-*` and `x-auth-*` header (the identity the gateway
/// asserts after verifying a token), every `ug.*` baggage entry, the routing
/// cookie, and, unless the peer is a trusted proxy, every `x-forwarded-*`,
/// `forwarded`, `x-real-ip`, `true-client-ip`, `x-client-ip` and
/// `cf-connecting-ip` header (client identity is the gateway's to assert).
pub fn strip(req: &mut RequestHeader, peer_trusted: bool) {
    let names: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|k| {
            let k = k.as_str();
            k.starts_with("x-unit-")
                || k.starts_with("x-auth-")
                || (!peer_trusted
                    && (k.starts_with("x-forwarded-")
                        || matches!(
                            k,
                            "forwarded"
                                | "x-real-ip"
                                | "true-client-ip"
                                | "x-client-ip"
                                | "cf-connecting-ip"
                        )))
        })
        .cloned()
        .collect();
    for n in names {
        req.remove_header(&n);
    }
    strip_baggage(req);
    strip_route_cookie(req);
}

/// Remove the routing cookie from every `Cookie` header (other cookies are
/// kept as sent; a header left empty goes).
pub fn strip_route_cookie(req: &mut RequestHeader) {
    if !values(req, &COOKIE).any(|v| v.split(';').any(is_route_cookie)) {
        return;
    }
    // Values that are not visible ASCII cannot hold our cookie: kept as sent.
    let kept: Vec<http::HeaderValue> = req
        .headers
        .get_all(&COOKIE)
        .iter()
        .filter_map(|raw| {
            let Ok(v) = raw.to_str() else {
                return Some(raw.clone());
            };
            let rest: Vec<&str> = v
                .split(';')
                .filter(|c| !is_route_cookie(c))
                .map(str::trim)
                .collect();
            http::HeaderValue::from_str(&rest.join("; "))
                .ok()
                .filter(|v| !v.is_empty())
        })
        .collect();
    req.remove_header(&COOKIE);
    for v in kept {
        let _ = req.append_header("cookie", v);
    }
}

fn is_route_cookie(c: &str) -> bool {
    c.trim()
        .split_once('=')
        .is_some_and(|(k, _)| k.trim() == ROUTE_COOKIE)
}

/// Remove every `ug.*` entry from `baggage` (the header goes if nothing is left).
pub fn strip_baggage(req: &mut RequestHeader) {
    let kept: Vec<String> = values(req, &BAGGAGE)
        .map(dye::strip)
        .filter(|v| !v.is_empty())
        .collect();
    if req.headers.get(&BAGGAGE).is_none() {
        return;
    }
    req.remove_header(&BAGGAGE);
    if !kept.is_empty() {
        let _ = req.insert_header("baggage", kept.join(","));
    }
}

/// The whole `baggage` value (several headers joined).
pub fn baggage(req: &RequestHeader) -> Option<String> {
    let v: Vec<&str> = values(req, &BAGGAGE).collect();
    (!v.is_empty()).then(|| v.join(","))
}

/// Apply the edge input rules to the request line: the host must be valid,
/// the target must be origin-form (or absolute-form, which Pingora has
/// already checked against `Host`) in UTF-8, and the path is normalised.
/// Afterwards the upstream request line is exactly the path the router
/// sees (origin-form, the query kept as sent).
pub fn check_request_line(req: &mut RequestHeader) -> Result<(), InputError> {
    let host_header = req.headers.get(&HOST);
    if host_header.is_some_and(|h| h.to_str().is_err()) {
        return Err(InputError::BadHost);
    }
    check_host(host(req))?;
    let raw = req.raw_path();
    let Ok(raw) = std::str::from_utf8(raw) else {
        return Err(InputError::BadCharacter);
    };
    let absolute = raw.starts_with("http://") || raw.starts_with("https://");
    if !raw.starts_with('/') && !absolute {
        return Err(InputError::NotAbsolute);
    }
    let path = normalize_path(req.uri.path())?;
    let pq = match req.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.into_owned(),
    };
    if !absolute && raw == pq {
        return Ok(());
    }
    let mut parts = req.uri.clone().into_parts();
    parts.path_and_query = Some(pq.parse().map_err(|_| InputError::BadCharacter)?);
    if host_header.is_some() {
        // HTTP/1: the Host header names the authority; send origin-form.
        parts.scheme = None;
        parts.authority = None;
    }
    let uri = http::Uri::from_parts(parts).map_err(|_| InputError::BadCharacter)?;
    req.set_uri(uri);
    Ok(())
}

/// Refuse the framings request smuggling lives on. With `Transfer-Encoding`
/// present the only accepted value is one `chunked`, and no
/// `Content-Length` may come with it. Pingora drops `Content-Length` from
/// the parsed header when both are sent, so the raw head (`raw_head`) is
/// where that shape is seen. Pingora itself refuses differing or
/// malformed `Content-Length` values and a repeated `Host`.
pub fn check_framing(req: &RequestHeader, raw_head: Option<&[u8]>) -> Result<(), InputError> {
    let mut te = req.headers.get_all(http::header::TRANSFER_ENCODING).iter();
    let Some(first) = te.next() else {
        return Ok(());
    };
    let single_chunked = te.next().is_none()
        && first
            .to_str()
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
    let with_length = raw_head.is_some_and(|raw| {
        raw.split(|&b| b == b'\n')
            .any(|line| line.len() >= 15 && line[..15].eq_ignore_ascii_case(b"content-length:"))
    });
    if single_chunked && !with_length {
        Ok(())
    } else {
        Err(InputError::AmbiguousFraming)
    }
}

/// The user header (`cluster.user_header`) appears at most once, with one
/// value (no list): the request is routed on it, and the unit must see the
/// same key.
pub fn one_user_key(req: &RequestHeader, name: &str) -> Result<(), InputError> {
    let mut all = req.headers.get_all(name).iter();
    let first = all.next();
    if all.next().is_some() || first.is_some_and(|v| v.as_bytes().contains(&b',')) {
        return Err(InputError::AmbiguousUser);
    }
    Ok(())
}

/// Header names with `_`. A unit behind a CGI/WSGI-style server reads
/// `X_Auth_User` as `x-auth-user` (nginx drops such names unless
/// `underscores_in_headers` is on), so a `_` name could carry framing or
/// identity past the gateway's rules. One whose `-` spelling is
/// `Content-Length` or `Transfer-Encoding` is refused; one spelling the user
/// header beside the user header is a second user key (refused); the rest
/// are removed, unless `forward` is on, which forwards those not spelling
/// a header the gateway owns ([`owned`]). `Host`, `Connection` and the
/// other names without `-` have no `_` spelling. The number removed.
pub fn underscored(
    req: &mut RequestHeader,
    user_header: &str,
    forward: bool,
) -> Result<u64, InputError> {
    let names: Vec<HeaderName> = req
        .headers
        .keys()
        .filter(|k| k.as_str().contains('_') && !k.as_str().eq_ignore_ascii_case(user_header))
        .cloned()
        .collect();
    let mut dropped = 0;
    for name in names {
        let dashed = name.as_str().replace('_', "-");
        if matches!(dashed.as_str(), "content-length" | "transfer-encoding") {
            return Err(InputError::UnderscoredFraming);
        }
        let user = dashed.eq_ignore_ascii_case(user_header);
        if user && req.headers.contains_key(user_header) {
            return Err(InputError::AmbiguousUser);
        }
        if forward && !user && !owned(&dashed) {
            continue;
        }
        dropped += req.headers.get_all(&name).iter().count() as u64;
        req.remove_header(&name);
    }
    Ok(dropped)
}

/// Headers the gateway reads or asserts itself: their `_` spellings are
/// never forwarded, whatever `forward_underscore_headers` says.
fn owned(dashed: &str) -> bool {
    ["x-unit-", "x-auth-", "x-forwarded-"]
        .iter()
        .any(|p| dashed.starts_with(p))
        || matches!(
            dashed,
            "x-real-ip"
                | "true-client-ip"
                | "x-client-ip"
                | "cf-connecting-ip"
                | "x-request-id"
                | "x-request-timeout-ms"
                | "grpc-timeout"
        )
}

/// A `Content-Length` (Pingora has already refused differing or malformed
/// values) is sent upstream as one plain decimal number: `005` or a
/// repeated `5, 5` could be read otherwise by the unit's server.
pub fn canonical_length(req: &mut RequestHeader) -> Result<(), InputError> {
    let cl = http::header::CONTENT_LENGTH;
    let mut values = req.headers.get_all(&cl).iter();
    let Some(first) = values.next() else {
        return Ok(());
    };
    let plain =
        |v: &http::HeaderValue| !v.is_empty() && v.as_bytes().iter().all(u8::is_ascii_digit);
    let simple = plain(first) && first.as_bytes()[0] != b'0' || first.as_bytes() == b"0";
    if simple && values.next().is_none() {
        return Ok(());
    }
    let n = first
        .to_str()
        .ok()
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or(InputError::AmbiguousFraming)?;
    req.insert_header(cl, n.to_string())
        .map_err(|_| InputError::AmbiguousFraming)
}

/// Size of the request head in bytes (name + value of every header, and the URI).
pub fn head_size(req: &RequestHeader) -> usize {
    let uri = req.uri.path_and_query().map_or(0, |p| p.as_str().len())
        + req.uri.authority().map_or(0, |a| a.as_str().len());
    uri + req
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
}

/// The request host: the `Host` header, else the URI authority (HTTP/2).
pub fn host(req: &RequestHeader) -> &str {
    req.headers
        .get(&HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri.host())
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets() -> Vec<IpNet> {
        vec!["10.0.0.0/8".parse().unwrap()]
    }

    #[test]
    fn client_ip_walks_only_trusted_hops() {
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        // Untrusted peer: its forwarded-for is ignored.
        assert_eq!(
            client_ip(ip("203.0.113.9"), Some("1.2.3.4"), &nets()),
            ip("203.0.113.9")
        );
        // Trusted peer: right-most untrusted hop.
        assert_eq!(
            client_ip(
                ip("10.0.0.1"),
                Some("1.2.3.4, 198.51.100.7, 10.0.0.2"),
                &nets()
            ),
            ip("198.51.100.7")
        );
        assert_eq!(client_ip(ip("10.0.0.1"), None, &nets()), ip("10.0.0.1"));
        assert_eq!(
            client_ip(ip("10.0.0.1"), Some("garbage, 10.0.0.3"), &nets()),
            ip("10.0.0.3")
        );
    }

    #[test]
    fn the_peer_is_appended_to_the_whole_forwarded_chain() {
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let mut r = RequestHeader::build("GET", b"/x", None).unwrap();
        assert_eq!(forwarded_for_upstream(&r, peer), "10.0.0.1");
        r.append_header("x-forwarded-for", "1.2.3.4").unwrap();
        assert_eq!(forwarded_for_upstream(&r, peer), "1.2.3.4, 10.0.0.1");
        r.append_header("x-forwarded-for", "5.6.7.8, 9.9.9.9")
            .unwrap();
        assert_eq!(
            forwarded_for(&r).as_deref(),
            Some("1.2.3.4, 5.6.7.8, 9.9.9.9")
        );
        assert_eq!(
            forwarded_for_upstream(&r, peer),
            "1.2.3.4, 5.6.7.8, 9.9.9.9, 10.0.0.1"
        );
    }

    #[test]
    fn the_gateways_forwarded_element_ends_the_chain() {
        let mut r = RequestHeader::build("GET", b"/x", None).unwrap();
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(
            forwarded_upstream(&r, Some(v4), false),
            "for=10.0.0.1;proto=http"
        );
        assert_eq!(
            forwarded_upstream(&r, Some(v6), true),
            "for=\"[2001:db8::1]\";proto=https"
        );
        assert_eq!(
            forwarded_upstream(&r, None, true),
            "for=unknown;proto=https"
        );
        r.append_header("forwarded", "for=192.0.2.60;proto=https;by=203.0.113.43")
            .unwrap();
        r.append_header("forwarded", "for=198.51.100.17, for=_hidden")
            .unwrap();
        assert_eq!(
            forwarded_upstream(&r, Some(v4), true),
            "for=192.0.2.60;proto=https;by=203.0.113.43, for=198.51.100.17, for=_hidden, for=10.0.0.1;proto=https"
        );
    }

    #[test]
    fn strip_removes_internal_headers() {
        let mut r = RequestHeader::build("GET", b"/x", None).unwrap();
        r.insert_header("x-unit-served-by", "evil").unwrap();
        r.insert_header("X-Unit-Hint", "evil").unwrap();
        r.insert_header("x-forwarded-for", "1.1.1.1").unwrap();
        r.insert_header("forwarded", "for=1.1.1.1").unwrap();
        r.insert_header("x-real-ip", "1.1.1.1").unwrap();
        r.insert_header("baggage", "ug.home=bj-1,tenant=t1,ug.hops=0")
            .unwrap();
        r.insert_header("x-user-id", "42").unwrap();
        r.insert_header("cookie", "a=1; ug_route=tok; b=2").unwrap();
        assert_eq!(token(&r), Some("tok"));
        strip(&mut r, false);
        let names: Vec<&str> = r.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(r.headers.get("baggage").unwrap(), "tenant=t1");
        assert_eq!(r.headers.get("cookie").unwrap(), "a=1; b=2");
        let mut t = RequestHeader::build("GET", b"/x", None).unwrap();
        t.insert_header("x-forwarded-for", "1.1.1.1").unwrap();
        t.insert_header("baggage", "ug.home=x").unwrap();
        strip(&mut t, true);
        assert!(t.headers.get("x-forwarded-for").is_some());
        assert!(t.headers.get("baggage").is_none());
    }

    #[test]
    fn framing_is_a_single_chunked_without_length() {
        let req = |te: &[&str]| {
            let mut r = RequestHeader::build("POST", b"/", None).unwrap();
            for v in te {
                r.append_header("transfer-encoding", *v).unwrap();
            }
            r
        };
        let raw = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(check_framing(&req(&[]), None), Ok(()));
        assert_eq!(check_framing(&req(&["chunked"]), Some(raw)), Ok(()));
        assert_eq!(check_framing(&req(&["Chunked "]), None), Ok(()));
        let with_cl = b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n";
        let bad = [
            check_framing(&req(&["chunked"]), Some(with_cl)),
            check_framing(&req(&["gzip, chunked"]), None),
            check_framing(&req(&["chunked", "chunked"]), None),
            check_framing(&req(&["chunked, chunked"]), None),
            check_framing(&req(&["identity"]), None),
        ];
        for r in bad {
            assert_eq!(r, Err(InputError::AmbiguousFraming));
        }
    }

    #[test]
    fn one_user_key_and_one_plain_length() {
        let mut r = RequestHeader::build("POST", b"/", None).unwrap();
        assert_eq!(one_user_key(&r, "x-user-id"), Ok(()));
        r.append_header("x-user-id", "42").unwrap();
        assert_eq!(one_user_key(&r, "x-user-id"), Ok(()));
        r.append_header("x-user-id", "80").unwrap();
        assert_eq!(
            one_user_key(&r, "x-user-id"),
            Err(InputError::AmbiguousUser)
        );
        let mut r = RequestHeader::build("POST", b"/", None).unwrap();
        r.append_header("x-user-id", "42, 80").unwrap();
        assert_eq!(
            one_user_key(&r, "x-user-id"),
            Err(InputError::AmbiguousUser)
        );

        for (sent, want) in [
            (&["5"][..], "5"),
            (&["0"][..], "0"),
            (&["005"][..], "5"),
            (&["5", "5"][..], "5"),
            (&["5, 5"][..], "5"),
        ] {
            let mut r = RequestHeader::build("POST", b"/", None).unwrap();
            for v in sent {
                r.append_header("content-length", *v).unwrap();
            }
            canonical_length(&mut r).unwrap();
            let got: Vec<_> = r.headers.get_all("content-length").iter().collect();
            assert_eq!(got, [want], "{sent:?}");
        }
    }

    #[test]
    fn underscored_names_are_refused_dropped_or_forwarded() {
        let req = |names: &[&str]| {
            let mut r = RequestHeader::build("GET", b"/", None).unwrap();
            for n in names {
                r.append_header(n.to_string(), "1").unwrap();
            }
            r
        };
        let names = |r: &RequestHeader| {
            let mut v: Vec<String> = r.headers.keys().map(|k| k.to_string()).collect();
            v.sort();
            v
        };
        for forward in [false, true] {
            for framing in ["Transfer_Encoding", "content_length", "Content_Length"] {
                let got = underscored(&mut req(&[framing]), "x-user-id", forward);
                assert_eq!(got, Err(InputError::UnderscoredFraming), "{framing}");
            }
            let mut r = req(&["x-user-id", "X_User_Id"]);
            let got = underscored(&mut r, "x-user-id", forward);
            assert_eq!(got, Err(InputError::AmbiguousUser));
        }
        let mut r = req(&["x_note", "X_Auth_User", "x_user_id", "x-ok", "x_note"]);
        assert_eq!(underscored(&mut r, "x-user-id", false), Ok(4));
        assert_eq!(names(&r), ["x-ok"]);
        let mut r = req(&[
            "x_note",
            "X_Auth_User",
            "x_user_id",
            "x_forwarded_for",
            "x-ok",
        ]);
        assert_eq!(underscored(&mut r, "x-user-id", true), Ok(3));
        assert_eq!(names(&r), ["x-ok", "x_note"]);
        // A user header whose own name has `_` is the user header.
        let mut r = req(&["x_uid"]);
        assert_eq!(underscored(&mut r, "x_uid", false), Ok(0));
    }

    #[test]
    fn the_request_line_is_checked_and_normalised() {
        let mut r = RequestHeader::build("GET", b"/orders/%2e%2e/config?a=%2e", None).unwrap();
        r.insert_header("host", "api.example.com").unwrap();
        check_request_line(&mut r).unwrap();
        assert_eq!(r.uri.to_string(), "/config?a=%2e");
        let mut r = RequestHeader::build("GET", b"/orders/1", None).unwrap();
        r.insert_header("host", "evil.com/.example.com").unwrap();
        assert_eq!(check_request_line(&mut r), Err(InputError::BadHost));
        let mut r = RequestHeader::build("GET", b"/a/%2F/b", None).unwrap();
        r.insert_header("host", "api.example.com").unwrap();
        assert_eq!(
            check_request_line(&mut r),
            Err(InputError::EncodedSeparator)
        );
    }

    #[test]
    fn the_routing_cookie_never_reaches_the_upstream() {
        let mut r = RequestHeader::build("GET", b"/x", None).unwrap();
        r.append_header("cookie", "ug_route=t1").unwrap();
        r.append_header("cookie", "sid=9;ug_route=t2 ; theme=dark")
            .unwrap();
        r.append_header("cookie", "xug_route=keep").unwrap();
        strip_route_cookie(&mut r);
        let v: Vec<&str> = r
            .headers
            .get_all("cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(v, ["sid=9; theme=dark", "xug_route=keep"]);
        // Nothing to do: headers untouched, byte for byte.
        let mut r = RequestHeader::build("GET", b"/x", None).unwrap();
        r.append_header("cookie", "a=1;b=2").unwrap();
        strip_route_cookie(&mut r);
        assert_eq!(r.headers.get("cookie").unwrap(), "a=1;b=2");
        // A value that is not visible ASCII is kept as sent.
        let mut r = RequestHeader::build("GET", b"/x", None).unwrap();
        let raw = http::HeaderValue::from_bytes(b"n=\xe4").unwrap();
        r.append_header("cookie", raw.clone()).unwrap();
        r.append_header("cookie", "ug_route=t").unwrap();
        strip_route_cookie(&mut r);
        let v: Vec<_> = r.headers.get_all("cookie").iter().cloned().collect();
        assert_eq!(v, [raw]);
    }

    #[test]
    fn baggage_that_is_not_ascii_never_passes_unstripped() {
        let mut r = RequestHeader::build("GET", b"/x", None).unwrap();
        let raw = http::HeaderValue::from_bytes(b"ug.home=x,\xe4=1").unwrap();
        r.append_header("baggage", raw).unwrap();
        strip_baggage(&mut r);
        assert!(r.headers.get("baggage").is_none());
    }
}
