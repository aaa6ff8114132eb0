//! `routes/<name>`: what a route matches (hosts, path prefix, methods,
//! listener), the service and policy it routes to, who may call it (auth,
//! issuers, required claims), the quotas it is counted against, and
//! conflicts between routes. Yields the validated routes the route table
//! indexes.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::problems::Problems;
use super::units::Units;
use crate::error::TopologyError as E;
use crate::ids::ServiceId;
use crate::resilience::{Resilience, ResilienceSpec};
use crate::routes::Route;
use crate::spec::{AuthMode, IssuerSpec, ListenerScope, Policy, QuotaSpec, RouteSpec};

/// What routes may refer to besides units: issuers and quotas, by name.
pub(super) struct Refs<'a> {
    pub units: &'a Units,
    pub issuers: &'a BTreeMap<String, IssuerSpec>,
    pub quotas: &'a BTreeMap<String, QuotaSpec>,
    /// Each service's resolved settings, by [`ServiceId`].
    pub resilience: &'a [Resilience],
}

/// Check every route, in name order, then conflicts between the valid ones.
pub(super) fn check(
    specs: &BTreeMap<String, RouteSpec>,
    refs: &Refs<'_>,
    p: &mut Problems,
) -> Vec<Route> {
    let routes: Vec<Route> = specs
        .iter()
        .filter_map(|(name, r)| check_route(name, r, refs, p))
        .collect();
    check_conflicts(&routes, p);
    routes
}

fn check_route(name: &str, r: &RouteSpec, refs: &Refs<'_>, p: &mut Problems) -> Option<Route> {
    let key = format!("routes/{name}");
    let before = p.count();
    let units = refs.units;
    let (hosts, methods) = check_match(&key, r, p);
    let service = resolve_service(&key, r, units, p);
    if r.policy == Policy::Center && units.centers.is_empty() && !p.any_broken_under("units/") {
        p.push(E::CenterWithoutUnit { key: key.clone() });
    }
    let issuers = check_auth(&key, r, refs.issuers, p);
    check_quotas(&key, r, refs.quotas, p);
    check_limits(&key, r, p);
    let own = ResilienceSpec {
        retry_on: r.retry_on.clone(),
        ..ResilienceSpec::default()
    };
    let service_settings = service
        .and_then(|s| refs.resilience.get(s.index()))
        .cloned()
        .unwrap_or_default();
    let settings = service_settings.overlay(&own);
    if r.retry_on.is_some() {
        for (field, message) in settings.problems() {
            if field == "retry_on" {
                p.invalid(&key, field, message);
            }
        }
    }
    if p.count() != before {
        return None;
    }
    Some(Route {
        name: name.to_owned(),
        hosts,
        path_prefix: r.path_prefix.clone(),
        methods,
        service: service?,
        service_name: r.service.clone(),
        policy: r.policy,
        auth: r.auth,
        issuers,
        require_claims: r.require_claims.clone().into_iter().collect(),
        quotas: r.quota.0.clone(),
        listener: r.listener,
        max_body_bytes: r.max_body_bytes,
        timeout_ms: r.timeout_ms.or(settings.timeout_ms),
        retry_on: settings.retry_on,
        retry_with_idempotency_key: r.retry_with_idempotency_key,
        criticality: r.criticality,
        upstream_protocol: r.upstream_protocol,
        upstream_sni: r.upstream_sni.clone().unwrap_or_default(),
        hsts: r.hsts.as_ref().map(|h| h.header_value()),
    })
}

/// The request side: path prefix, hosts (lower-cased) and methods (upper-cased).
fn check_match(key: &str, r: &RouteSpec, p: &mut Problems) -> (Vec<String>, Option<Vec<String>>) {
    let prefix = &r.path_prefix;
    let plain = prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'.' | b'_' | b'~'));
    if !prefix.starts_with('/') {
        p.invalid(
            key,
            "path_prefix",
            format!("{prefix:?} must start with '/'"),
        );
    } else if !plain || crate::input::normalize_path(prefix).ok().as_deref() != Some(prefix) {
        // Requests are matched on normalised paths: any other prefix would
        // never match, or would match differently from what the unit sees.
        p.invalid(
            key,
            "path_prefix",
            format!(
                "{prefix:?} must be a normalised path of letters, digits, '-', '.', '_', '~' and '/' (no '.' or '..' segments, no '//')"
            ),
        );
    }
    for h in &r.hosts {
        let bare = h.strip_prefix("*.").unwrap_or(h);
        if bare.is_empty() || bare.contains(['*', '/', ' ', ':']) {
            p.invalid(key, "hosts", format!("{h:?} is not a host or *.suffix"));
        }
    }
    let hosts = r.hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
    let methods = r.methods.as_ref().map(|ms| {
        for m in ms {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
                p.invalid(key, "methods", format!("{m:?} is not an HTTP method"));
            }
        }
        ms.iter()
            .map(|m| m.to_ascii_uppercase())
            .collect::<Vec<_>>()
    });
    if methods.as_ref().is_some_and(Vec::is_empty) {
        p.invalid(
            key,
            "methods",
            "an empty list matches nothing; use null for any",
        );
    }
    (hosts, methods)
}

/// The route's service, which some unit must run.
fn resolve_service(key: &str, r: &RouteSpec, units: &Units, p: &mut Problems) -> Option<ServiceId> {
    if r.service.is_empty() {
        p.push(E::RouteWithoutService {
            key: key.to_owned(),
        });
        return None;
    }
    if let Some(&s) = units.service_ids.get(&r.service) {
        return Some(s);
    }
    // A broken unit may be the one that runs it: already reported.
    if !p.any_broken_under("units/") {
        p.push(E::UnknownService {
            key: key.to_owned(),
            service: r.service.clone(),
        });
    }
    None
}

/// The route's own limits, where it sets them.
fn check_limits(key: &str, r: &RouteSpec, p: &mut Problems) {
    if let Some(t) = r.timeout_ms {
        if !(1..=crate::MAX_ROUTE_TIMEOUT_MS).contains(&t) {
            p.invalid(
                key,
                "timeout_ms",
                format!("{t} is not within 1..={}", crate::MAX_ROUTE_TIMEOUT_MS),
            );
        }
    }
    match (r.upstream_protocol, &r.upstream_sni) {
        (crate::spec::UpstreamProtocol::H2, None) => p.invalid(
            key,
            "upstream_sni",
            "required with upstream_protocol h2: the name the units' certificates are verified against",
        ),
        (crate::spec::UpstreamProtocol::H2, Some(n))
            if crate::input::check_host(n).is_err() || n.contains(':') =>
        {
            p.invalid(key, "upstream_sni", format!("{n:?} is not a host name"))
        }
        (crate::spec::UpstreamProtocol::H2, Some(_)) | (_, None) => {}
        (_, Some(_)) => p.invalid(
            key,
            "upstream_sni",
            "only with upstream_protocol h2 (TLS to the units)",
        ),
    }
    if let Some(h) = &r.hsts {
        // Two years: the longest max-age browsers' preload lists ask for.
        if h.max_age_s > 63_072_000 {
            p.invalid(
                key,
                "hsts.max_age_s",
                format!("{} is over 63072000 (two years)", h.max_age_s),
            );
        }
        if h.preload && (!h.include_subdomains || h.max_age_s < 31_536_000) {
            p.invalid(
                key,
                "hsts.preload",
                "preload needs include_subdomains and max_age_s of at least 31536000",
            );
        }
    }
    if let Some(b) = r.max_body_bytes {
        if b > crate::MAX_BODY_BYTES {
            p.invalid(
                key,
                "max_body_bytes",
                format!("{b} is over {}", crate::MAX_BODY_BYTES),
            );
        }
    }
}

/// Who may call the route: with `auth` required or optional, the issuers
/// it trusts (named ones, else every issuer; at least one), and the claims
/// it requires; without auth, neither.
fn check_auth(
    key: &str,
    r: &RouteSpec,
    issuers: &BTreeMap<String, IssuerSpec>,
    p: &mut Problems,
) -> Vec<String> {
    let mode = match r.auth {
        AuthMode::Required => "required",
        AuthMode::Optional => "optional",
        AuthMode::None => {
            if r.issuers.is_some() {
                p.invalid(
                    key,
                    "issuers",
                    "the route has auth none: set auth to required or optional, or remove issuers",
                );
            }
            if !r.require_claims.is_empty() {
                p.invalid(
                    key,
                    "require_claims",
                    "the route has auth none: set auth to required, or remove require_claims",
                );
            }
            return Vec::new();
        }
    };
    if r.auth == AuthMode::Optional && !r.require_claims.is_empty() {
        p.invalid(
            key,
            "require_claims",
            "a route that requires claims must have auth required",
        );
    }
    for (claim, value) in &r.require_claims {
        if claim.is_empty() || value.is_empty() {
            p.invalid(
                key,
                "require_claims",
                "claim names and values must not be empty",
            );
        }
    }
    let names: Vec<String> = match &r.issuers {
        Some(list) => {
            if list.is_empty() {
                p.invalid(
                    key,
                    "issuers",
                    "an empty list trusts no issuer; leave it out to trust every issuer",
                );
            }
            for n in list {
                if !issuers.contains_key(n) {
                    p.push_ref(
                        &format!("auth/issuers/{n}"),
                        E::UnknownIssuer {
                            key: key.to_owned(),
                            issuer: n.clone(),
                        },
                    );
                }
            }
            list.clone()
        }
        None => issuers.keys().cloned().collect(),
    };
    if names.is_empty() && r.issuers.is_none() && !p.any_broken_under("auth/issuers/") {
        p.push(E::AuthWithoutIssuer {
            key: key.to_owned(),
            mode: mode.to_owned(),
        });
    }
    names
}

/// The route's quotas, which must exist, each named once.
fn check_quotas(key: &str, r: &RouteSpec, quotas: &BTreeMap<String, QuotaSpec>, p: &mut Problems) {
    let mut seen = HashSet::new();
    for q in &r.quota.0 {
        if !seen.insert(q) {
            p.invalid(key, "quota", format!("{q:?} is listed twice"));
        } else if !quotas.contains_key(q) {
            p.push_ref(
                &format!("quotas/{q}"),
                E::UnknownQuota {
                    key: key.to_owned(),
                    quota: q.clone(),
                },
            );
        }
    }
}

/// Two routes conflict when some request would match both equally well:
/// a shared host (or both host-less), the same prefix, overlapping methods
/// and listeners.
fn check_conflicts(routes: &[Route], p: &mut Problems) {
    let mut seen: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
    for (i, r) in routes.iter().enumerate() {
        let hosts: Vec<&str> = if r.hosts.is_empty() {
            vec![""]
        } else {
            r.hosts.iter().map(String::as_str).collect()
        };
        let mut reported = HashSet::new();
        for h in hosts {
            let bucket = seen.entry((h, r.path_prefix.as_str())).or_default();
            for &j in bucket.iter() {
                let o = &routes[j];
                if overlap(r, o) && reported.insert(j) {
                    p.push(E::ConflictingRoute {
                        key: format!("routes/{}", r.name),
                        other: format!("routes/{}", o.name),
                    });
                }
            }
            bucket.push(i);
        }
    }
}

/// Whether two routes with a shared host and prefix admit a common listener and method.
fn overlap(a: &Route, b: &Route) -> bool {
    use ListenerScope as L;
    let listeners = a.listener == L::Both || b.listener == L::Both || a.listener == b.listener;
    let methods = match (&a.methods, &b.methods) {
        (Some(x), Some(y)) => x.iter().any(|m| y.contains(m)),
        (None, None) => true,
        _ => false,
    };
    listeners && methods
}
