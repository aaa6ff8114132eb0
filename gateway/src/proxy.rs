//! The Pingora `ProxyHttp` shell: `request_filter` gathers request facts and
//! asks the router; `upstream_peer` turns the decision into a peer (next
//! endpoint, then next unit); the failure hooks record failures and mark
//! retries; the response hooks add `x-unit-served-by`, the routing cookie
//! and the GSLB hint.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType};
use unit_router::spec::Policy;
use unit_router::{
    decide, locate, Decision, Dye, Facts, Listener, Reason, RouteError, RouteToken, UnitId,
};
use unitgate_geo::{GeoLookup, Location};

use crate::facts;
use crate::lb::Endpoint;
use crate::respond::{respond, respond_json, GwError};
use crate::state::{Plane, Shared};

/// One listener's proxy logic.
pub struct UnitProxy {
    pub shared: Arc<Shared>,
    pub listener: Listener,
}

/// Per-request state.
pub struct Ctx {
    started: Instant,
    plane: Option<Arc<Plane>>,
    decision: Option<Decision>,
    token_in: Option<RouteToken>,
    dye_in: Option<Dye>,
    location: Option<Location>,
    client_ip: Option<IpAddr>,
    set_cookie: Option<String>,
    hint: Option<String>,
    tried_units: Vec<UnitId>,
    tried_endpoints: Vec<SocketAddr>,
    current: Option<(Arc<Endpoint>, Instant)>,
    attempts: u8,
    upstream_status: Option<u16>,
    error: Option<GwError>,
}

impl UnitProxy {
    fn listener_name(&self) -> &'static str {
        match self.listener {
            Listener::Public => "public",
            Listener::Internal => "internal",
        }
    }

    /// Router facts for this request (borrowing the session and ctx).
    fn facts<'a>(
        &self,
        session: &'a Session,
        ctx: &'a Ctx,
        plane: &'a Plane,
        now: i64,
    ) -> Facts<'a> {
        let req = session.req_header();
        let topo = &plane.snap.topology;
        let header_user = req
            .headers
            .get(topo.cluster.user_header.as_str())
            .and_then(|v| v.to_str().ok());
        Facts {
            listener: self.listener,
            host: facts::host(req),
            path: req.uri.path(),
            method: req.method.as_str(),
            // Seam for the auth issue: the verified JWT user claim goes here.
            claim_user: None,
            token: ctx.token_in.as_ref(),
            header_user,
            country: ctx.location.as_ref().and_then(|l| l.country()),
            subdivision: ctx.location.as_ref().and_then(|l| l.subdivision()),
            dye: ctx.dye_in.as_ref(),
            exclude: &ctx.tried_units,
            here: plane.here,
            now,
        }
    }

    /// Ask the router, with the units already tried excluded.
    fn route(
        &self,
        session: &Session,
        ctx: &Ctx,
        plane: &Plane,
        now: i64,
    ) -> Result<Decision, RouteError> {
        let f = self.facts(session, ctx, plane, now);
        decide(&plane.snap.topology, &f, &plane.pools)
    }

    /// The routing cookie to set and the GSLB hint (public listener).
    fn token_and_hint(
        &self,
        plane: &Plane,
        f: &Facts<'_>,
        decision: Option<Decision>,
        now: i64,
    ) -> (Option<String>, Option<String>) {
        let topo = &plane.snap.topology;
        let Some(loc) = locate(topo, f) else {
            return (None, None);
        };
        let serving = topo.unit(loc.serving);
        // Shard- and region-routed users keep their place through the token.
        let keeps_token = decision
            .map(|d| topo.routes.get(d.route).policy)
            .is_some_and(|p| matches!(p, Policy::Shard | Policy::Region));
        let mut cookie = None;
        if keeps_token {
            let ttl = topo.cluster.token_ttl_s as i64;
            let fresh = f.token.is_some_and(|t| {
                t.unit == serving.name && t.shard == loc.shard && t.exp - now > ttl / 2
            });
            if !fresh {
                let tok = RouteToken::new(
                    loc.shard,
                    &serving.name,
                    topo.epoch,
                    now + ttl,
                    &self.shared.keys,
                );
                cookie = Some(format!(
                    "{}={}; Path=/; Max-Age={ttl}; HttpOnly; Secure; SameSite=Lax",
                    facts::COOKIE,
                    tok.encode(&self.shared.keys)
                ));
                self.shared
                    .metrics
                    .tokens
                    .with_label_values(&["issued"])
                    .inc();
            }
        }
        let hint = plane.here.region.filter(|&r| r != serving.region).map(|_| {
            let region = &topo.regions[serving.region.index()];
            let entry = region.entries.first().map(String::as_str).unwrap_or("");
            format!(
                "unit={}; region={}; entry={entry}; ttl={}",
                serving.name, region.name, self.shared.cfg.hint_ttl_s
            )
        });
        (cookie, hint)
    }

    async fn locate_endpoint(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        plane: &Plane,
        now: i64,
    ) -> Result<()> {
        let topo = &plane.snap.topology;
        let f = self.facts(session, ctx, plane, now);
        let Some(loc) = locate(topo, &f) else {
            return respond(session, &GwError::NoUnit).await;
        };
        let home = topo.unit(loc.home);
        let serving = topo.unit(loc.serving);
        let region = &topo.regions[serving.region.index()];
        let ttl = topo.cluster.token_ttl_s as i64;
        let tok = RouteToken::new(
            loc.shard,
            &serving.name,
            topo.epoch,
            now + ttl,
            &self.shared.keys,
        );
        let token = tok.encode(&self.shared.keys);
        self.shared
            .metrics
            .tokens
            .with_label_values(&["issued"])
            .inc();
        let body = serde_json::json!({
            "home": home.name,
            "unit": serving.name,
            "shard": loc.shard,
            "region": region.name,
            "entries": region.entries,
            "ttl": self.shared.cfg.hint_ttl_s,
            "token": token,
            "token_exp": now + ttl,
            "epoch": topo.epoch,
        });
        let cookie = format!(
            "{}={token}; Path=/; Max-Age={ttl}; HttpOnly; Secure; SameSite=Lax",
            facts::COOKIE
        );
        respond_json(session, 200, &body, &[("set-cookie", cookie)]).await
    }

    fn unit_name<'a>(&self, ctx: &'a Ctx, u: UnitId) -> &'a str {
        ctx.plane
            .as_ref()
            .map_or("", |p| p.snap.topology.unit(u).name.as_str())
    }

    /// Close the current attempt's bookkeeping.
    fn end_attempt(&self, ctx: &mut Ctx, outcome: Outcome) {
        let Some((ep, t0)) = ctx.current.take() else {
            return;
        };
        let label = match outcome {
            Outcome::Ok => {
                ep.end(t0.elapsed(), true, &self.shared.policy);
                "ok"
            }
            Outcome::Failed => {
                ep.end(t0.elapsed(), false, &self.shared.policy);
                ctx.tried_endpoints.push(ep.addr);
                "error"
            }
            Outcome::ClientGone => {
                ep.cancel();
                "client_gone"
            }
        };
        let plane = ctx.plane.clone();
        let unit = match (&plane, ctx.decision) {
            (Some(p), Some(d)) => p.snap.topology.unit(d.target).name.as_str(),
            _ => "",
        };
        self.shared
            .metrics
            .attempts
            .with_label_values(&[unit, label])
            .inc();
    }

    fn may_retry(&self, ctx: &Ctx, kind: &str) -> bool {
        if ctx.attempts >= self.shared.cfg.max_attempts {
            return false;
        }
        if !self.shared.budget.try_retry() {
            self.shared.metrics.retry_budget_exhausted.inc();
            return false;
        }
        self.shared.metrics.retries.with_label_values(&[kind]).inc();
        true
    }
}

/// How an upstream attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// The upstream failed (connect, transport, 5xx): counts against it.
    Failed,
    /// The client went away: says nothing about the upstream.
    ClientGone,
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn gw_error(e: RouteError) -> GwError {
    match e {
        RouteError::NoRoute => GwError::NoRoute,
        RouteError::NoUnit { .. } => GwError::NoUnit,
        RouteError::HopLimit { .. } => GwError::HopLimit,
    }
}

#[async_trait]
impl ProxyHttp for UnitProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            started: Instant::now(),
            plane: None,
            decision: None,
            token_in: None,
            dye_in: None,
            location: None,
            client_ip: None,
            set_cookie: None,
            hint: None,
            tried_units: Vec::new(),
            tried_endpoints: Vec::new(),
            current: None,
            attempts: 0,
            upstream_status: None,
            error: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let shared = &self.shared;
        shared.budget.deposit();
        if facts::head_size(session.req_header()) > shared.cfg.max_header_bytes {
            ctx.error = Some(GwError::HeadersTooLarge);
            respond(session, &GwError::HeadersTooLarge).await?;
            return Ok(true);
        }
        let Some(plane) = shared.plane.load_full() else {
            ctx.error = Some(GwError::NotReady);
            respond(session, &GwError::NotReady).await?;
            return Ok(true);
        };
        let now = now_s();
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let trusted = facts::peer_trusted(peer, &shared.cfg.trusted_proxies);
        {
            let req = session.req_header();
            let xff = req
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok());
            ctx.client_ip = facts::client_ip(peer, xff, &shared.cfg.trusted_proxies);
            match self.listener {
                Listener::Public => {
                    if let Some(raw) = facts::token(req) {
                        match RouteToken::decode(raw, &shared.keys, now) {
                            Ok(t) => {
                                shared.metrics.tokens.with_label_values(&["valid"]).inc();
                                ctx.token_in = Some(t);
                            }
                            Err(e) => {
                                tracing::debug!(error = %e, "routing token ignored");
                                shared.metrics.tokens.with_label_values(&["rejected"]).inc();
                            }
                        }
                    }
                }
                Listener::Internal => {
                    if let Some(b) = facts::baggage(req) {
                        match Dye::decode(&b, &shared.keys, now) {
                            Ok(Some(d)) => {
                                shared.metrics.dyes.with_label_values(&["verified"]).inc();
                                ctx.dye_in = Some(d);
                            }
                            Ok(None) => {}
                            Err(e) => {
                                tracing::debug!(error = %e, "dye ignored");
                                shared.metrics.dyes.with_label_values(&["rejected"]).inc();
                            }
                        }
                    }
                }
            }
        }
        // Untrusted input never reaches an upstream: internal headers go.
        facts::strip(session.req_header_mut(), trusted);
        ctx.location = match (&shared.geo, ctx.client_ip) {
            (Some(g), Some(ip)) => g.locate(ip),
            _ => None,
        };

        if self.listener == Listener::Public
            && session.req_header().uri.path() == "/_unitgate/locate"
            && session.req_header().method == http::Method::GET
        {
            self.locate_endpoint(session, ctx, &plane, now).await?;
            return Ok(true);
        }

        match self.route(session, ctx, &plane, now) {
            Ok(d) => ctx.decision = Some(d),
            Err(e) => {
                let err = gw_error(e);
                ctx.error = Some(err.clone());
                ctx.plane = Some(plane);
                respond(session, &err).await?;
                return Ok(true);
            }
        }
        if self.listener == Listener::Public {
            let (cookie, hint) = {
                let f = self.facts(session, ctx, &plane, now);
                self.token_and_hint(&plane, &f, ctx.decision, now)
            };
            ctx.set_cookie = cookie;
            ctx.hint = hint;
        }
        ctx.plane = Some(plane);
        Ok(false)
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let Some(plane) = ctx.plane.clone() else {
            return Err(Error::explain(ErrorType::InternalError, "no plane"));
        };
        let now = now_s();
        let topo = &plane.snap.topology;
        // Bounded: each turn either returns or excludes one more unit.
        for _ in 0..=topo.units.len() {
            let Some(d) = ctx.decision else { break };
            if let Some(pool) = plane.pools.get(d.target, d.service) {
                if let Some(ep) = pool.pick(&ctx.tried_endpoints) {
                    let s = &pool.settings;
                    let mut peer = HttpPeer::new(ep.addr, false, String::new());
                    peer.options.connection_timeout =
                        Some(Duration::from_millis(s.connect_timeout_ms));
                    peer.options.total_connection_timeout =
                        Some(Duration::from_millis(s.total_timeout_ms));
                    peer.options.read_timeout = Some(Duration::from_millis(s.read_timeout_ms));
                    peer.options.write_timeout = Some(Duration::from_millis(s.read_timeout_ms));
                    ep.begin();
                    ctx.current = Some((ep, Instant::now()));
                    ctx.attempts += 1;
                    return Ok(Box::new(peer));
                }
            }
            // No endpoint left in this unit: the next unit by the failover order.
            ctx.tried_units.push(d.target);
            match self.route(session, ctx, &plane, now) {
                Ok(n) => ctx.decision = Some(n),
                Err(e) => {
                    ctx.error = Some(gw_error(e));
                    break;
                }
            }
        }
        if ctx.error.is_none() {
            ctx.error = Some(GwError::NoUnit);
        }
        Err(Error::explain(
            ErrorType::HTTPStatus(503),
            "no unit can serve",
        ))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        up: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(d) = ctx.decision else { return Ok(()) };
        let now = now_s();
        // Dye: set when the request leaves its home; dropped once it is back.
        let dye = match (d.reason, &ctx.dye_in) {
            (Reason::Failover | Reason::Drain, _) => Some(Dye {
                shard: d.shard,
                home: self.unit_name(ctx, d.home).to_owned(),
                via: self.unit_name(ctx, d.target).to_owned(),
                reason: d.reason,
                hops: d.hops,
                exp: now + self.shared.cfg.dye_ttl_s as i64,
            }),
            // Held at the hop limit: keep the marks so the next call stays too.
            (Reason::Local, Some(din)) => Some(Dye {
                via: self.unit_name(ctx, d.target).to_owned(),
                exp: now + self.shared.cfg.dye_ttl_s as i64,
                ..din.clone()
            }),
            _ => None,
        };
        facts::strip_baggage(up);
        if let Some(dye) = dye {
            let existing = facts::baggage(up);
            up.remove_header("baggage");
            up.insert_header(
                "baggage",
                dye.merge_into(existing.as_deref(), &self.shared.keys),
            )?;
            self.shared.metrics.dyes.with_label_values(&["set"]).inc();
        }
        if let Some(ip) = ctx.client_ip {
            let xff = match up
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
            {
                Some(prev) => format!("{prev}, {ip}"),
                None => ip.to_string(),
            };
            up.insert_header("x-forwarded-for", xff)?;
        }
        if up.headers.get("x-forwarded-proto").is_none() {
            up.insert_header("x-forwarded-proto", "http")?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.upstream_status = Some(resp.status.as_u16());
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // Upstreams cannot speak for the gateway.
        let names: Vec<http::HeaderName> = resp
            .headers
            .keys()
            .filter(|k| k.as_str().starts_with("x-unit-"))
            .cloned()
            .collect();
        for n in names {
            resp.remove_header(&n);
        }
        if let Some(d) = ctx.decision {
            let name = self.unit_name(ctx, d.target).to_owned();
            resp.insert_header("x-unit-served-by", name)?;
        }
        if let Some(c) = ctx.set_cookie.take() {
            resp.append_header("set-cookie", c)?;
        }
        if let Some(h) = ctx.hint.take() {
            resp.insert_header("x-unit-hint", h)?;
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Nothing reached the upstream: any method may be retried.
        self.end_attempt(ctx, Outcome::Failed);
        let retry = self.may_retry(ctx, "connect");
        e.set_retry(retry);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        _client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer: {peer}"));
        if *e.esource() == ErrorSource::Downstream {
            // The client went away or sent garbage: not the upstream's fault,
            // and nobody is left to answer.
            self.end_attempt(ctx, Outcome::ClientGone);
            e.set_retry(false);
            return e;
        }
        self.end_attempt(ctx, Outcome::Failed);
        // Bytes may have reached the upstream: only idempotent methods are
        // sent again, and only with the whole body still buffered.
        let idempotent = session.req_header().method.is_idempotent();
        let retry = idempotent
            && !session.as_ref().retry_buffer_truncated()
            && ctx.upstream_status.is_none()
            && self.may_retry(ctx, "transport");
        e.set_retry(retry);
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let err = ctx.error.clone().unwrap_or_else(|| match e.etype() {
            ErrorType::ConnectTimedout => GwError::UpstreamTimeout,
            ErrorType::ReadTimedout | ErrorType::WriteTimedout => GwError::UpstreamTimeout,
            ErrorType::ConnectRefused | ErrorType::ConnectError | ErrorType::ConnectNoRoute => {
                GwError::UpstreamUnavailable
            }
            ErrorType::HTTPStatus(503) => GwError::NoUnit,
            _ => match e.esource() {
                ErrorSource::Upstream => GwError::UpstreamError,
                ErrorSource::Downstream => GwError::Internal,
                _ => GwError::Internal,
            },
        });
        let downstream_dead = *e.esource() == ErrorSource::Downstream
            && matches!(
                e.etype(),
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed
            );
        let code = if downstream_dead || session.response_written().is_some() {
            0
        } else {
            let _ = respond(session, &err).await;
            err.status()
        };
        ctx.error = Some(err);
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let outcome = match e {
            Some(e) if *e.esource() == ErrorSource::Downstream => Outcome::ClientGone,
            Some(_) => Outcome::Failed,
            None if ctx.upstream_status.is_some_and(|s| s >= 500) => Outcome::Failed,
            None => Outcome::Ok,
        };
        self.end_attempt(ctx, outcome);
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .or_else(|| ctx.error.as_ref().map(GwError::status))
            .unwrap_or(0);
        let (route, reason) = match (&ctx.plane, ctx.decision) {
            (Some(p), Some(d)) => (
                p.snap.topology.routes.get(d.route).name.as_str(),
                d.reason.as_str(),
            ),
            _ => ("", ctx.error.as_ref().map_or("", GwError::code)),
        };
        let m = &self.shared.metrics;
        m.requests
            .with_label_values(&[
                self.listener_name(),
                route,
                reason,
                status.to_string().as_str(),
            ])
            .inc();
        m.duration
            .with_label_values(&[self.listener_name()])
            .observe(ctx.started.elapsed().as_secs_f64());
    }
}
