//! The answer when no route takes a request: 405 with `Allow` when the path
//! is routed for other methods, else 404.

use crate::routes::{Listener, RouteTable};

/// Why no route takes a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unrouted {
    /// No route takes this host, path and listener: 404.
    NoRoute,
    /// Routes take them with other methods: 405 with this `Allow` value,
    /// e.g. `"GET, POST"`.
    MethodNotAllowed(String),
}

/// No route takes the request: 405 with `Allow` when some route takes this
/// host/path/listener with other methods ([`RouteTable::allowed_methods`],
/// joined with `", "`), else 404.
pub fn unrouted(routes: &RouteTable, host: &str, path: &str, listener: Listener) -> Unrouted {
    let allow = routes.allowed_methods(host, path, listener);
    if allow.is_empty() {
        Unrouted::NoRoute
    } else {
        Unrouted::MethodNotAllowed(allow.join(", "))
    }
}
