//! The admin listener: the status page at `/`, `/healthz`, `/readyz` (ready once a valid snapshot is
//! in force), `/status` (JSON), `/metrics` (Prometheus) and `/gslb/dc/<dc>`
//! (200 when the dc takes traffic, 503 when drained) for DNS GSLB checks.
//! GSLB checkers reach it in production: it sits behind the same
//! connection pipeline as the proxy listeners, with its own connection
//! limits ([`crate::server`]); `serve.rs` reads each request and answers it.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, LazyLock};

use http::{header, HeaderValue, Response, StatusCode};
use serde_json::{json, Value};
use unit_router::{ServiceId, UnitId};

use crate::state::{Plane, Shared};
use crate::upstream::pool::Pool;

mod serve;
pub mod token;

/// The admin HTTP app.
pub struct Admin {
    pub shared: Arc<Shared>,
}

/// A whole response (`status` is one of the gateway's own, always valid).
pub fn reply(status: u16, ctype: &'static str, body: Vec<u8>) -> Response<Vec<u8>> {
    let len = body.len();
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// 401 for a locked endpoint asked without a valid bearer token.
pub fn unauthorized() -> Response<Vec<u8>> {
    let mut r = json_reply(
        401,
        &json!({"error": "unauthorized", "message": "this admin endpoint needs Authorization: Bearer <token> (admin_token_file)"}),
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"unitgate-admin\""),
    );
    r
}

/// The status page: one HTML file, its script and style inline, that
/// refreshes from `/status` every second (`status_page.html`).
const STATUS_PAGE: &str = include_str!("status_page.html");

/// Its Content-Security-Policy: nothing runs or styles the page but its
/// own inline script and style (by their hashes), nothing is fetched but
/// the admin listener's `/status`.
static STATUS_PAGE_CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    let csp = format!(
        "default-src 'none'; script-src '{}'; style-src '{}'; connect-src 'self'; \
         img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        inline_hash(STATUS_PAGE, "script"),
        inline_hash(STATUS_PAGE, "style")
    );
    HeaderValue::from_str(&csp).unwrap_or(HeaderValue::from_static("default-src 'none'"))
});

/// The CSP source of the first inline `<tag>` element of `html`:
/// `sha256-` and the base64 SHA-256 of its text.
fn inline_hash(html: &str, tag: &str) -> String {
    use base64::Engine;
    let open = format!("<{tag}>");
    let text = html
        .split_once(&open)
        .and_then(|(_, rest)| rest.split_once(&format!("</{tag}>")))
        .map_or("", |(text, _)| text);
    let digest = openssl::sha::sha256(text.as_bytes());
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

fn status_page() -> Response<Vec<u8>> {
    let mut r = reply(
        200,
        "text/html; charset=utf-8",
        STATUS_PAGE.as_bytes().to_vec(),
    );
    r.headers_mut()
        .insert(header::CONTENT_SECURITY_POLICY, STATUS_PAGE_CSP.clone());
    r
}

fn json_reply(status: u16, v: &Value) -> Response<Vec<u8>> {
    reply(status, "application/json", v.to_string().into_bytes())
}

impl Admin {
    fn status(&self) -> Value {
        let s = &self.shared;
        let cfg = &s.cfg;
        let plane = s.plane.load_full();
        let plane = plane.as_deref();
        let now = s.center.now();
        json!({
            "id": cfg.id,
            "version": env!("CARGO_PKG_VERSION"),
            "region": cfg.region,
            "dc": cfg.dc,
            "started_at": s.started_at,
            "ready": plane.is_some(),
            "epoch": plane.map(|p| p.snap.epoch()),
            "config_center": s.center.status(),
            "dcs": plane.map_or_else(serde_json::Map::new, |p| dcs_status(p, now)),
            "datacenters": plane.map_or_else(Vec::new, datacenters),
            "drains": plane.map_or_else(Vec::new, |p| drains(p, now)),
            "units": plane.map_or_else(Vec::new, |p| units_status(p, now)),
            "issuers": plane.map_or_else(serde_json::Map::new, issuers_status),
            "quotas": plane.map_or_else(serde_json::Map::new, quotas_status),
            "tls": s.tls.as_ref().map(|t| t.status().as_ref().clone()),
            "keys": s.keys.status(),
        })
    }

    fn gslb(&self, dc: &str) -> Response<Vec<u8>> {
        let Some(plane) = self.shared.plane.load_full() else {
            return json_reply(503, &json!({"dc": dc, "state": "not_ready"}));
        };
        let t = &plane.snap.topology;
        match t.dc_id(dc) {
            None => json_reply(
                404,
                &json!({"error": "unknown_dc", "message": format!("no datacenter {dc:?}")}),
            ),
            Some(id) if t.is_dc_drained(id, self.shared.center.now()) => json_reply(
                503,
                &json!({"dc": dc, "state": "drained", "epoch": t.epoch}),
            ),
            Some(_) => json_reply(200, &json!({"dc": dc, "state": "active", "epoch": t.epoch})),
        }
    }

    /// The answer to a request for `path` (any method: every endpoint
    /// only reads).
    pub fn answer(&self, path: &str) -> Response<Vec<u8>> {
        match path {
            "/" => status_page(),
            "/healthz" => json_reply(200, &json!({"status": "ok"})),
            "/readyz" => {
                if self.shared.stopping.begun() {
                    json_reply(503, &json!({"status": "stopping"}))
                } else if self.shared.plane.load().is_some() {
                    json_reply(200, &json!({"status": "ready"}))
                } else {
                    json_reply(503, &json!({"status": "not_ready"}))
                }
            }
            "/status" => json_reply(200, &self.status()),
            "/metrics" => {
                self.shared.mirror_config_status();
                self.shared.mirror_guards();
                self.shared.mirror_certificates();
                reply(
                    200,
                    "text/plain; version=0.0.4",
                    self.shared.metrics.render(),
                )
            }
            p => match p.strip_prefix("/gslb/dc/") {
                Some(dc) if !dc.is_empty() && !dc.contains('/') => self.gslb(dc),
                _ => json_reply(
                    404,
                    &json!({"error": "not_found", "message": format!("no admin endpoint {p}")}),
                ),
            },
        }
    }
}

/// A (unit, service) breaker: `closed` while it refuses nothing, `open`
/// while it refuses a share of requests (`drop_ratio`).
fn breaker_status(pool: &Pool) -> Value {
    let s = &pool.resilience.breaker;
    if !s.enabled {
        return json!({"state": "disabled"});
    }
    let w = pool.guard.breaker.window(s);
    json!({
        "state": if w.drop_ratio > 0.0 { "open" } else { "closed" },
        "drop_ratio": w.drop_ratio,
        "requests": w.requests,
        "accepts": w.accepts,
        "refused_total": pool.guard.breaker.refused_total(),
    })
}

/// A (unit, service) concurrency limit and its queue.
fn limiter_status(pool: &Pool) -> Value {
    let s = &pool.resilience.limiter;
    if !s.enabled {
        return json!({"enabled": false});
    }
    let l = &pool.guard.limit;
    let (full, waited) = l.shed_counts();
    json!({
        "enabled": true,
        "limit": l.limit(),
        "inflight": l.inflight(),
        "queued": l.queued(),
        "min_rtt_us": l.min_rtt().map(|d| d.as_micros() as u64),
        "shed_total": {"limit": full, "queue_timeout": waited},
    })
}

/// Each quota with this gateway's share of it and the keys it holds.
fn quotas_status(plane: &Plane) -> serde_json::Map<String, Value> {
    let mut quotas = serde_json::Map::new();
    for q in plane.quotas.all() {
        let sh = q.limiter.share;
        quotas.insert(
            q.name.clone(),
            json!({"key": q.spec.key, "scope": q.spec.scope, "gateways": q.gateways,
                   "rate": sh.rate, "per_s": sh.per_s, "burst": sh.burst,
                   "keys": q.limiter.keys()}),
        );
    }
    quotas
}

/// Each issuer with the key ids it verifies with.
fn issuers_status(plane: &Plane) -> serde_json::Map<String, Value> {
    let mut issuers = serde_json::Map::new();
    for name in plane.snap.topology.issuers.keys() {
        let v = match plane.auth.get(name) {
            Some(i) => json!({"iss": i.iss(), "kids": i.keys().kids()}),
            None => json!({"error": "unusable"}),
        };
        issuers.insert(name.clone(), v);
    }
    issuers
}

/// Each unit, its drain and its services' endpoints, breakers and limits.
fn units_status(plane: &Plane, now: i64) -> Vec<Value> {
    let t = &plane.snap.topology;
    let mut units = Vec::new();
    for (i, u) in t.units.iter().enumerate() {
        let id = UnitId(i as u16);
        let mut services = serde_json::Map::new();
        for (si, name) in t.services.iter().enumerate() {
            let Some(pool) = plane.pools.get(id, ServiceId(si as u16)) else {
                continue;
            };
            let eps: Vec<Value> = pool
                .endpoints
                .iter()
                .map(|e| {
                    json!({"addr": e.addr.to_string(), "healthy": e.is_healthy(), "ejected": e.is_ejected(),
                           "inflight": e.inflight(), "ewma_us": e.ewma_us(),
                           "weight": e.weight(pool.resilience.slow_start_ms)})
                })
                .collect();
            services.insert(
                name.clone(),
                json!({"healthy": pool.any_healthy(), "endpoints": eps,
                       "breaker": breaker_status(pool),
                       "limiter": limiter_status(pool),
                       "served_total": pool.guard.served.load(Relaxed),
                       "dyed_total": pool.guard.dyed.load(Relaxed)}),
            );
        }
        units.push(json!({
            "name": u.name,
            "dc": t.dcs[u.dc.index()].name,
            "region": t.regions[u.region.index()].name,
            "kind": format!("{:?}", u.kind).to_lowercase(),
            "drained": t.is_drained(id, now),
            "drain": u.drain.as_ref().map(|d| json!({"key": d.key, "reason": d.reason, "by": d.by, "until": d.until})),
            "services": services,
        }));
    }
    units
}

/// Each dc: `active` or `drained`.
fn dcs_status(plane: &Plane, now: i64) -> serde_json::Map<String, Value> {
    let t = &plane.snap.topology;
    let mut dcs = serde_json::Map::new();
    for (i, d) in t.dcs.iter().enumerate() {
        let drained = t.is_dc_drained(unit_router::DcId(i as u16), now);
        dcs.insert(
            d.name.clone(),
            json!(if drained { "drained" } else { "active" }),
        );
    }
    dcs
}

/// Each dc with its region, in topology order (the status page's tree).
fn datacenters(plane: &Plane) -> Vec<Value> {
    let t = &plane.snap.topology;
    t.dcs
        .iter()
        .map(|d| json!({"name": d.name, "region": t.regions[d.region.index()].name}))
        .collect()
}

/// Every drain record, and whether it applies now (`until` not passed).
fn drains(plane: &Plane, now: i64) -> Vec<Value> {
    plane
        .snap
        .topology
        .drains
        .iter()
        .map(|d| {
            json!({"key": d.key, "reason": d.reason, "by": d.by, "until": d.until,
                   "active": d.until.is_none_or(|u| u > now)})
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csp_hashes_the_pages_one_script_and_one_style() {
        // sha256("abc"), the standard test vector.
        assert_eq!(
            inline_hash("<p><script>abc</script>", "script"),
            "sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
        for tag in ["script", "style"] {
            assert_eq!(STATUS_PAGE.matches(&format!("<{tag}")).count(), 1, "{tag}");
        }
        let csp = STATUS_PAGE_CSP.to_str().unwrap();
        assert!(!csp.contains("unsafe"), "{csp}");
        assert!(csp.contains(&inline_hash(STATUS_PAGE, "script")), "{csp}");
    }
}
