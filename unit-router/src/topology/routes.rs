//! `routes/<name>`: what a route matches (hosts, path prefix, methods,
//! listener), the service and policy it routes to, the fail-closed rule for
//! what the gateway does not enforce yet (route auth and quotas), and
//! conflicts between routes. Yields the validated routes the route table
//! indexes.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::problems::Problems;
use super::units::Units;
use crate::error::TopologyError as E;
use crate::ids::ServiceId;
use crate::routes::Route;
use crate::spec::{AuthMode, ListenerScope, Policy, RouteSpec};

/// Check every route, in name order, then conflicts between the valid ones.
pub(super) fn check(
    specs: &BTreeMap<String, RouteSpec>,
    units: &Units,
    p: &mut Problems,
) -> Vec<Route> {
    let routes: Vec<Route> = specs
        .iter()
        .filter_map(|(name, r)| check_route(name, r, units, p))
        .collect();
    check_conflicts(&routes, p);
    routes
}

fn check_route(name: &str, r: &RouteSpec, units: &Units, p: &mut Problems) -> Option<Route> {
    let key = format!("routes/{name}");
    let before = p.count();
    let (hosts, methods) = check_match(&key, r, p);
    let service = resolve_service(&key, r, units, p);
    if r.policy == Policy::Center && units.centers.is_empty() && !p.any_broken_under("units/") {
        p.push(E::CenterWithoutUnit { key: key.clone() });
    }
    fail_closed(&key, r, p);
    check_limits(&key, r, p);
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
        quota: r.quota.clone(),
        listener: r.listener,
        max_body_bytes: r.max_body_bytes,
        timeout_ms: r.timeout_ms,
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

/// Fail closed: a route may not ask for what the gateway does not enforce
/// yet (JWT auth, quotas), rather than be served without it.
fn fail_closed(key: &str, r: &RouteSpec, p: &mut Problems) {
    let auth = match r.auth {
        AuthMode::Required => Some("required"),
        AuthMode::Optional => Some("optional"),
        AuthMode::None => None,
    };
    let asked = [("auth", auth), ("quota", r.quota.as_deref())];
    for (field, value) in asked {
        if let Some(value) = value {
            p.push(E::NotEnforced {
                key: key.to_owned(),
                field: field.to_owned(),
                value: value.to_owned(),
            });
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
