//! `unitctl token` (sign a JWT for tests and the demo) and the auth and
//! quota lines of `unitctl explain`.

use crate::report::Report;
use std::str::FromStr;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};
use unit_router::routes::Route;
use unit_router::spec::{AuthMode, QuotaKey, QuotaScope};
use unit_router::Topology;

use crate::cli::TokenArgs;

/// Sign the token `a` describes; print it.
pub fn token(a: &TokenArgs, now: i64) -> Result<i32> {
    let alg = Algorithm::from_str(&a.alg)
        .map_err(|_| anyhow!("--alg: {:?} is not a JWT algorithm", a.alg))?;
    let pem =
        std::fs::read(&a.key).with_context(|| format!("--key: cannot read {}", a.key.display()))?;
    let key = match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => EncodingKey::from_rsa_pem(&pem),
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            Ok(EncodingKey::from_secret(&pem))
        }
    }
    .map_err(|e| anyhow!("--key: not a {:?} private key: {e}", alg))?;
    let mut claims = Map::new();
    claims.insert("iss".into(), a.iss.clone().into());
    claims.insert("sub".into(), a.sub.clone().into());
    match a.aud.len() {
        0 => {}
        1 => {
            claims.insert("aud".into(), a.aud[0].clone().into());
        }
        _ => {
            claims.insert("aud".into(), a.aud.clone().into());
        }
    }
    if let Some(t) = &a.tenant {
        claims.insert("tenant".into(), t.clone().into());
    }
    for c in &a.claims {
        let Some((k, v)) = c.split_once('=') else {
            bail!("--claim: {c:?} is not name=value");
        };
        claims.insert(k.to_owned(), v.to_owned().into());
    }
    claims.insert("iat".into(), now.into());
    let ttl = i64::try_from(a.ttl.as_secs()).unwrap_or(i64::MAX);
    claims.insert("exp".into(), now.saturating_add(ttl).into());
    let mut h = Header::new(alg);
    h.kid = Some(a.kid.clone());
    let t = jsonwebtoken::encode(&h, &claims, &key).map_err(|e| anyhow!("signing: {e}"))?;
    println!("{t}");
    Ok(0)
}

/// The claims of a JWT, unverified.
pub fn claims_of(jwt: &str) -> Result<Map<String, Value>> {
    let part = jwt
        .split('.')
        .nth(1)
        .ok_or_else(|| anyhow!("--jwt: not a JWT (header.claims.signature)"))?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| anyhow!("--jwt: the claims are not base64url"))?;
    serde_json::from_slice(&raw).map_err(|_| anyhow!("--jwt: the claims are not a JSON object"))
}

/// The issuer of `route` a token claiming `iss` would be verified by.
fn issuer_for<'a>(topo: &'a Topology, route: &'a Route, iss: Option<&str>) -> Option<&'a str> {
    route
        .issuers
        .iter()
        .find(|n| route.issuers.len() == 1 || topo.issuers.get(*n).map(|s| s.iss.as_str()) == iss)
        .map(String::as_str)
}

/// The user key a token gives on `route`, if it would verify (by its
/// claims; the signature is the gateway's to check).
pub fn claim_user(topo: &Topology, route: &Route, claims: &Map<String, Value>) -> Option<String> {
    let iss = claims.get("iss").and_then(Value::as_str);
    let spec = topo.issuers.get(issuer_for(topo, route, iss)?)?;
    match claims.get(&spec.user_claim)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Print what auth and which quotas apply to a request on `route`.
pub fn print(
    out: &mut Report,
    topo: &Topology,
    route: &Route,
    claims: Option<&Map<String, Value>>,
    now: i64,
) {
    match route.auth {
        AuthMode::None => out.add("auth", "none"),
        mode => {
            let mode = if mode == AuthMode::Required {
                "required"
            } else {
                "optional"
            };
            out.add(
                "auth",
                format!("{mode}, issuers {}", route.issuers.join(", ")),
            );
            for (c, v) in &route.require_claims {
                out.add("", format!("requires claim {c} = {v:?} (403 without)"));
            }
            match claims {
                None if mode == "required" => out.add("token", "none: the gateway answers 401"),
                None => out.add("token", "none: served without a verified user"),
                Some(c) => {
                    let iss = c.get("iss").and_then(Value::as_str);
                    match issuer_for(topo, route, iss) {
                        None => out.add(
                            "token",
                            format!("iss {iss:?} is none of the route's issuers: 401"),
                        ),
                        Some(name) => {
                            let spec = &topo.issuers[name];
                            let exp = c.get("exp").and_then(Value::as_i64);
                            let state = match exp {
                                None => "no exp: 401".to_owned(),
                                Some(e) if e + spec.leeway_s as i64 <= now => {
                                    format!("expired at {e}: 401")
                                }
                                Some(e) => format!("expires in {} s", e - now),
                            };
                            out.add("token", format!(
                                "issuer {name} ({}), user claim {} = {}, {state}; signature not checked here",
                                spec.iss,
                                spec.user_claim,
                                c.get(&spec.user_claim).map_or("(missing: 401)".into(), Value::to_string)
                            ));
                        }
                    }
                }
            }
        }
    }
    if route.quotas.is_empty() {
        out.add("quotas", "none");
    }
    let live = topo.gateways.len().max(1) as u32;
    for name in &route.quotas {
        let Some(q) = topo.quotas.get(name) else {
            continue;
        };
        let key = match q.key {
            QuotaKey::Ip => "the client ip",
            QuotaKey::Route => "the route (all callers together)",
            QuotaKey::User if route.auth == AuthMode::Required => "the verified user",
            QuotaKey::User => "the verified user, else the user header, else the client ip",
            QuotaKey::Tenant => "the verified tenant, else as user",
        };
        let share = match q.scope {
            QuotaScope::Gateway => "on each gateway".to_owned(),
            QuotaScope::Cluster => format!(
                "across the cluster: {live} live gateway(s), each {} per {} s, burst {}",
                q.rate.div_ceil(live),
                q.per_s,
                q.burst.div_ceil(live)
            ),
        };
        out.add(
            "quota",
            format!(
                "{name}: {} per {} s, burst {}, by {key}, {share}",
                q.rate, q.per_s, q.burst
            ),
        );
    }
}
