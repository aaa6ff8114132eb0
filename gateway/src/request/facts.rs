//! The request's facts, gathered once in `request_filter`: the time, the
//! peer and the client IP, its location, the verified routing token
//! (public listener) or the verified dye (internal listener), with their
//! metrics. The request line and the user header are borrowed from the
//! request header when the router asks ([`RequestFacts::for_router`]),
//! never copied.

use std::net::IpAddr;
use std::sync::Arc;

use pingora::http::RequestHeader;
use pingora::proxy::Session;
use unit_router::{Dye, Facts, Listener, RouteId, RouteToken, UnitId};
use unitgate_geo::{GeoLookup, Location};

use unit_router::resilience::Criticality;

use crate::access::ids::{self, Ids, Trace};
use crate::auth::jwt::Identity;
use crate::request::{headers, token_cache};
use crate::state::{Plane, Shared};

/// What the gateway knows about one request beyond its header.
#[derive(Debug, Default)]
pub struct RequestFacts {
    /// Unix seconds when the request arrived.
    pub now: i64,
    /// The address the request came from as the gateway sees it: the
    /// socket peer, or the client of a PROXY protocol header.
    pub peer: Option<IpAddr>,
    pub client_ip: Option<IpAddr>,
    /// The socket peer is a trusted proxy (its `x-forwarded-*` are kept).
    pub peer_trusted: bool,
    pub location: Option<Location>,
    /// A verified, unexpired routing token (public listener).
    pub token: Option<RouteToken>,
    /// A verified, unexpired dye (internal listener).
    pub dye: Option<Dye>,
    /// The route the request matched (set once matched).
    pub route: Option<RouteId>,
    /// The identity of a verified JWT (routes with auth).
    pub identity: Option<Arc<Identity>>,
    /// `x-unit-criticality` of a trusted caller on the internal listener.
    pub criticality: Option<Criticality>,
    /// The request came over TLS.
    pub tls: bool,
}

/// Unix seconds now.
pub fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl RequestFacts {
    /// Gather the facts of the request in `session` (before stripping).
    pub fn gather(shared: &Shared, listener: Listener, session: &Session, plane: &Plane) -> Self {
        let now = now_s();
        let req = session.req_header();
        let nets = &shared.cfg.trusted_proxies;
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let xff = headers::forwarded_for(req);
        let client_ip = headers::client_ip(peer, xff.as_deref(), nets);
        let location = match (&shared.geo, client_ip) {
            (Some(g), Some(ip)) => g.locate(ip),
            _ => None,
        };
        let (token, dye) = match listener {
            Listener::Public => (verified_token(shared, req, now), None),
            Listener::Internal => (None, verified_dye(shared, req, plane, now)),
        };
        // Internal callers only: on the public listener it is stripped unread.
        let criticality = match listener {
            Listener::Public => None,
            Listener::Internal => req
                .headers
                .get("x-unit-criticality")
                .and_then(|v| Criticality::parse(v.to_str().ok()?)),
        };
        RequestFacts {
            now,
            peer,
            client_ip,
            peer_trusted: headers::peer_trusted(peer, nets),
            location,
            token,
            dye,
            route: None,
            identity: None,
            criticality,
            tls: session.digest().is_some_and(|d| d.ssl_digest.is_some()),
        }
    }

    /// The router's view of the request: these facts plus the request line
    /// and user header of `req`, with the units in `exclude` already tried.
    pub fn for_router<'a>(
        &'a self,
        listener: Listener,
        req: &'a RequestHeader,
        plane: &'a Plane,
        exclude: &'a [UnitId],
    ) -> Facts<'a> {
        let user_header = plane.snap.topology.cluster.user_header.as_str();
        Facts {
            listener,
            host: headers::host(req),
            path: req.uri.path(),
            method: req.method.as_str(),
            claim_user: self.identity.as_ref().map(|i| i.user.as_str()),
            token: self.token.as_ref(),
            header_user: req.headers.get(user_header).and_then(|v| v.to_str().ok()),
            country: self.location.as_ref().and_then(|l| l.country()),
            subdivision: self.location.as_ref().and_then(|l| l.subdivision()),
            dye: self.dye.as_ref(),
            exclude,
            here: plane.here,
            now: self.now,
        }
    }
}

/// The request's id and trace context (`access/ids.rs`), read before
/// anything can refuse the request. A caller's `x-request-id` is kept from
/// a trusted proxy and on the internal listener. A trace the gateway
/// starts is sampled at `otlp_sampling_ratio` when spans are exported,
/// never otherwise.
pub fn identify(shared: &Shared, listener: Listener, session: &Session) -> Ids {
    let req = session.req_header();
    let peer = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    let trusted =
        listener == Listener::Internal || headers::peer_trusted(peer, &shared.cfg.trusted_proxies);
    let request_id = req
        .headers
        .get("x-request-id")
        .filter(|_| trusted)
        .and_then(|v| ids::well_formed_request_id(v.as_bytes()))
        .map_or_else(|| ids::new_request_id(rand::random()), str::to_owned);
    let traceparent = req.headers.get("traceparent").map(|v| v.as_bytes());
    let new_id = ids::nonzero(rand::random);
    let ratio = shared.cfg.observe.otlp_sampling_ratio;
    let sample = shared.spans.is_some() && rand::random::<f64>() < ratio;
    let trace = Trace::of(traceparent, new_id, ids::nonzero(rand::random), sample);
    Ids { request_id, trace }
}

fn verified_token(shared: &Shared, req: &RequestHeader, now: i64) -> Option<RouteToken> {
    let raw = headers::token(req)?;
    let counts = &shared.metrics.token;
    match token_cache::verify(raw, &shared.keys.load(), now) {
        Ok(t) => {
            counts.valid.inc();
            Some(t)
        }
        Err(e) => {
            tracing::debug!(error = %e, "routing token ignored");
            counts.rejected.inc();
            None
        }
    }
}

/// The dye of an internal request, if it verifies and fits the request:
/// when both the dye and the request's user header name a shard, they must
/// be the same (a dye replayed on another user's call is ignored).
fn verified_dye(shared: &Shared, req: &RequestHeader, plane: &Plane, now: i64) -> Option<Dye> {
    let baggage = headers::baggage(req)?;
    let dyes = &shared.metrics.dyes;
    match Dye::decode(&baggage, &shared.keys.load(), now) {
        Ok(Some(d)) => {
            let topo = &plane.snap.topology;
            let user_shard = req
                .headers
                .get(topo.cluster.user_header.as_str())
                .and_then(|v| v.to_str().ok())
                .filter(|k| !k.is_empty())
                .map(|k| topo.shard_of(k));
            if user_shard
                .zip(d.shard)
                .is_some_and(|(user, dyed)| user != dyed)
            {
                tracing::debug!("dye ignored: it is for another user's shard");
                dyes.with_label_values(&["mismatched"]).inc();
                return None;
            }
            dyes.with_label_values(&["verified"]).inc();
            Some(d)
        }
        Ok(None) => None,
        Err(e) => {
            tracing::debug!(error = %e, "dye ignored");
            dyes.with_label_values(&["rejected"]).inc();
            None
        }
    }
}
