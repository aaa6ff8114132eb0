//! Route matching: host (exact, then `*.suffix`, then any), longest path prefix
//! on a segment boundary, method, listener. Built once per snapshot.

use std::collections::HashMap;

use crate::ids::{RouteId, ServiceId};
use crate::resilience::Criticality;
use crate::spec::{AuthMode, ListenerScope, Policy, UpstreamProtocol};

/// The listener a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Public,
    Internal,
}

impl ListenerScope {
    fn admits(self, l: Listener) -> bool {
        matches!(
            (self, l),
            (ListenerScope::Both, _)
                | (ListenerScope::Public, Listener::Public)
                | (ListenerScope::Internal, Listener::Internal)
        )
    }
}

/// A validated route.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub hosts: Vec<String>,
    pub path_prefix: String,
    /// Upper-case method names; `None` = any.
    pub methods: Option<Vec<String>>,
    pub service: ServiceId,
    pub service_name: String,
    pub policy: Policy,
    pub auth: AuthMode,
    /// The issuers whose tokens the route takes (empty without auth).
    pub issuers: Vec<String>,
    /// Claims a verified token must carry (name, value), sorted by name.
    pub require_claims: Vec<(String, String)>,
    /// The quotas the route is counted against, by name.
    pub quotas: Vec<String>,
    pub listener: ListenerScope,
    /// Request body limit; `None`: the gateway's default.
    pub max_body_bytes: Option<u64>,
    /// Total time across attempts (the route's, else its service's);
    /// `None`: the gateway's default.
    pub timeout_ms: Option<u64>,
    /// Upstream statuses retried elsewhere (the route's, else its
    /// service's), sorted.
    pub retry_on: Vec<u16>,
    /// A request with an `Idempotency-Key` may be sent again whatever its
    /// method.
    pub retry_with_idempotency_key: bool,
    pub criticality: Criticality,
    pub upstream_protocol: UpstreamProtocol,
    /// The name the endpoints' certificates are verified against (`h2`).
    pub upstream_sni: String,
    /// The `Strict-Transport-Security` value sent over HTTPS, if any.
    pub hsts: Option<String>,
}

impl Route {
    fn admits(&self, path: &str, method: &str, listener: Listener) -> bool {
        self.listener.admits(listener)
            && prefix_matches(&self.path_prefix, path)
            && self
                .methods
                .as_ref()
                .is_none_or(|ms| ms.iter().any(|m| m == method))
    }
}

/// `/orders` matches `/orders`, `/orders/1`, `/orders?x`, not `/ordersx`.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => {
            prefix.ends_with('/')
                || rest.is_empty()
                || rest.starts_with('/')
                || rest.starts_with('?')
        }
    }
}

/// The route index of one snapshot.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    /// Exact host -> routes, longest prefix first.
    exact: HashMap<Box<str>, Vec<RouteId>>,
    /// `(".example.com", routes)`, longest suffix first.
    wildcard: Vec<(Box<str>, Vec<RouteId>)>,
    /// Routes with no host, longest prefix first.
    any: Vec<RouteId>,
}

impl RouteTable {
    /// Index `routes` (already validated).
    pub fn new(routes: Vec<Route>) -> Self {
        let mut exact: HashMap<Box<str>, Vec<RouteId>> = HashMap::new();
        let mut wild: HashMap<Box<str>, Vec<RouteId>> = HashMap::new();
        let mut any = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            let id = RouteId(i as u16);
            if r.hosts.is_empty() {
                any.push(id);
            }
            for h in &r.hosts {
                match h.strip_prefix('*') {
                    Some(suffix) => wild.entry(suffix.into()).or_default().push(id),
                    None => exact.entry(h.as_str().into()).or_default().push(id),
                }
            }
        }
        let order = |ids: &mut Vec<RouteId>| {
            ids.sort_by(|a, b| {
                let (ra, rb) = (&routes[a.index()], &routes[b.index()]);
                rb.path_prefix
                    .len()
                    .cmp(&ra.path_prefix.len())
                    .then_with(|| rb.methods.is_some().cmp(&ra.methods.is_some()))
                    .then_with(|| ra.name.cmp(&rb.name))
            })
        };
        exact.values_mut().for_each(order);
        order(&mut any);
        let mut wildcard: Vec<_> = wild
            .into_iter()
            .map(|(s, mut ids)| {
                order(&mut ids);
                (s, ids)
            })
            .collect();
        wildcard.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Self {
            routes,
            exact,
            wildcard,
            any,
        }
    }

    /// All routes, by id.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Route `id`.
    pub fn get(&self, id: RouteId) -> &Route {
        &self.routes[id.index()]
    }

    /// The route for a request. `host` may carry a port and any case.
    pub fn find(
        &self,
        host: &str,
        path: &str,
        method: &str,
        listener: Listener,
    ) -> Option<RouteId> {
        let mut buf = [0u8; 256];
        let host = normalize_host(host, &mut buf);
        let pick = |ids: &[RouteId]| {
            ids.iter()
                .copied()
                .find(|id| self.routes[id.index()].admits(path, method, listener))
        };
        if let Some(h) = host {
            if let Some(id) = self.exact.get(h).and_then(|ids| pick(ids)) {
                return Some(id);
            }
            for (suffix, ids) in &self.wildcard {
                if h.len() > suffix.len() && h.ends_with(&**suffix) {
                    if let Some(id) = pick(ids) {
                        return Some(id);
                    }
                }
            }
        }
        pick(&self.any)
    }

    /// When no route takes `method`: the methods routes for this host, path
    /// and listener do take (the `Allow` of a 405), in a stable order; empty
    /// when no route matches the path at all (a 404). Off the hot path.
    pub fn allowed_methods(&self, host: &str, path: &str, listener: Listener) -> Vec<&str> {
        let mut buf = [0u8; 256];
        let host = normalize_host(host, &mut buf);
        let host_ok = |r: &Route| {
            r.hosts.is_empty()
                || host.is_some_and(|h| {
                    r.hosts.iter().any(|rh| match rh.strip_prefix('*') {
                        Some(suffix) => h.len() > suffix.len() && h.ends_with(suffix),
                        None => rh == h,
                    })
                })
        };
        let mut out: Vec<&str> = self
            .routes
            .iter()
            .filter(|r| {
                host_ok(r) && r.listener.admits(listener) && prefix_matches(&r.path_prefix, path)
            })
            .flat_map(|r| r.methods.iter().flatten().map(String::as_str))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// Lower-case `host` without its port into `buf`; `None` when it is unusable.
fn normalize_host<'b>(host: &str, buf: &'b mut [u8; 256]) -> Option<&'b str> {
    let host = match host.rsplit_once(':') {
        Some((h, port)) if !h.ends_with(']') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        Some((h, port)) if h.ends_with(']') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > buf.len() {
        return None;
    }
    for (d, s) in buf.iter_mut().zip(host.bytes()) {
        *d = s.to_ascii_lowercase();
    }
    std::str::from_utf8(&buf[..host.len()]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_methods_name_what_the_path_takes() {
        let t = RouteTable::new(vec![
            route(
                "get",
                &["api.example.com"],
                "/c",
                Some(&["GET", "HEAD"]),
                ListenerScope::Public,
            ),
            route(
                "post",
                &["*.example.com"],
                "/c",
                Some(&["POST"]),
                ListenerScope::Public,
            ),
            route(
                "internal",
                &["api.example.com"],
                "/c",
                Some(&["PUT"]),
                ListenerScope::Internal,
            ),
        ]);
        assert_eq!(
            t.find("api.example.com", "/c", "DELETE", Listener::Public),
            None
        );
        assert_eq!(
            t.allowed_methods("API.example.com:80", "/c/1", Listener::Public),
            ["GET", "HEAD", "POST"]
        );
        assert!(t
            .allowed_methods("api.example.com", "/x", Listener::Public)
            .is_empty());
        assert!(t
            .allowed_methods("other.org", "/c", Listener::Public)
            .is_empty());
    }

    fn route(
        name: &str,
        hosts: &[&str],
        prefix: &str,
        methods: Option<&[&str]>,
        l: ListenerScope,
    ) -> Route {
        Route {
            name: name.into(),
            hosts: hosts.iter().map(|s| s.to_string()).collect(),
            path_prefix: prefix.into(),
            methods: methods.map(|m| m.iter().map(|s| s.to_string()).collect()),
            service: ServiceId(0),
            service_name: "svc".into(),
            policy: Policy::Shard,
            auth: AuthMode::None,
            issuers: Vec::new(),
            require_claims: Vec::new(),
            quotas: Vec::new(),
            max_body_bytes: None,
            timeout_ms: None,
            retry_on: vec![502, 503, 504],
            retry_with_idempotency_key: false,
            criticality: Criticality::Default,
            upstream_protocol: UpstreamProtocol::Http1,
            upstream_sni: String::new(),
            hsts: None,
            listener: l,
        }
    }

    fn table() -> RouteTable {
        RouteTable::new(vec![
            route(
                "root",
                &["api.example.com"],
                "/",
                None,
                ListenerScope::Public,
            ),
            route(
                "orders",
                &["api.example.com"],
                "/orders",
                None,
                ListenerScope::Public,
            ),
            route(
                "orders-post",
                &["api.example.com"],
                "/orders",
                Some(&["POST"]),
                ListenerScope::Public,
            ),
            route(
                "orders-items",
                &["api.example.com"],
                "/orders/items",
                None,
                ListenerScope::Both,
            ),
            route("wild", &["*.example.com"], "/", None, ListenerScope::Public),
            route("internal", &[], "/internal", None, ListenerScope::Internal),
        ])
    }

    fn name(t: &RouteTable, host: &str, path: &str, method: &str, l: Listener) -> Option<String> {
        t.find(host, path, method, l)
            .map(|id| t.get(id).name.clone())
    }

    #[test]
    fn longest_prefix_on_segment_boundary() {
        let t = table();
        let p = Listener::Public;
        assert_eq!(
            name(&t, "api.example.com", "/orders/items/3", "GET", p).unwrap(),
            "orders-items"
        );
        assert_eq!(
            name(&t, "api.example.com", "/orders/3", "GET", p).unwrap(),
            "orders"
        );
        assert_eq!(
            name(&t, "api.example.com", "/ordersx", "GET", p).unwrap(),
            "root"
        );
        assert_eq!(
            name(&t, "api.example.com", "/orders?x=1", "GET", p).unwrap(),
            "orders"
        );
    }

    #[test]
    fn method_and_listener_filter() {
        let t = table();
        assert_eq!(
            name(&t, "api.example.com", "/orders", "POST", Listener::Public).unwrap(),
            "orders-post"
        );
        // Methods are case-sensitive (RFC 9110): `post` is another method.
        assert_ne!(
            name(&t, "api.example.com", "/orders", "post", Listener::Public).as_deref(),
            Some("orders-post")
        );
        assert_eq!(
            name(&t, "api.example.com", "/orders", "GET", Listener::Internal),
            None
        );
        assert_eq!(
            name(
                &t,
                "api.example.com",
                "/orders/items",
                "GET",
                Listener::Internal
            )
            .unwrap(),
            "orders-items"
        );
        assert_eq!(
            name(&t, "svc.local", "/internal/x", "GET", Listener::Internal).unwrap(),
            "internal"
        );
        assert_eq!(
            name(&t, "svc.local", "/internal/x", "GET", Listener::Public),
            None
        );
    }

    #[test]
    fn host_case_port_and_wildcards() {
        let t = table();
        let p = Listener::Public;
        assert_eq!(
            name(&t, "API.Example.COM:8443", "/orders", "GET", p).unwrap(),
            "orders"
        );
        assert_eq!(
            name(&t, "api.example.com.", "/orders", "GET", p).unwrap(),
            "orders"
        );
        assert_eq!(
            name(&t, "m.example.com", "/orders", "GET", p).unwrap(),
            "wild"
        );
        assert_eq!(name(&t, "example.com", "/orders", "GET", p), None);
        assert_eq!(name(&t, "other.org", "/", "GET", p), None);
        assert_eq!(name(&t, "", "/", "GET", p), None);
    }
}
