//! Validation: every broken rule yields its own error naming the key.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::json;
use unit_router::{Topology, TopologyError as E};

fn errors(kv: &std::collections::BTreeMap<String, String>) -> Vec<E> {
    Topology::build(1, kv, NOW).unwrap_err().0
}

fn one(kv: std::collections::BTreeMap<String, String>) -> E {
    let errs = errors(&kv);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    errs.into_iter().next().unwrap()
}

#[test]
fn sample_is_valid_and_indexed() {
    let t = sample();
    assert_eq!((t.regions.len(), t.dcs.len(), t.units.len()), (2, 3, 5));
    assert_eq!(t.services, ["config", "orders", "profile"]);
    assert_eq!(t.shard_owner(0), t.unit_id("bj-1"));
    assert_eq!(t.shard_owner(99), t.unit_id("sh-2"));
    assert_eq!(
        t.region_for(Some("CN"), Some("CN-SH")),
        t.region_id("cn-east")
    );
    assert_eq!(t.region_for(Some("CN"), None), t.region_id("cn-north"));
    assert_eq!(t.region_for(Some("FR"), None), None);
    assert!(t.notices.is_empty());
}

#[test]
fn shardmap_gap_and_overlap_are_named() {
    let kv = with(
        sample_kv(),
        "shardmap",
        json!({"ranges":[
        {"from":0,"to":24,"unit":"bj-1"},{"from":30,"to":74,"unit":"sh-1"},{"from":70,"to":99,"unit":"sh-2"}]}),
    );
    let errs = errors(&kv);
    assert!(errs.contains(&E::ShardGap { from: 25, to: 29 }), "{errs:?}");
    assert!(
        errs.contains(&E::ShardOverlap {
            from: 70,
            to: 74,
            units: "sh-1, sh-2".into()
        }),
        "{errs:?}"
    );
    assert!(errs[0].to_string().contains("shards 25-29 have no unit"));
}

#[test]
fn shardmap_bounds_kinds_and_units() {
    let m = |r: serde_json::Value| with(sample_kv(), "shardmap", json!({"ranges": r}));
    assert!(
        errors(&m(json!([{"from":0,"to":100,"unit":"bj-1"}]))).contains(&E::RangeOutOfBounds {
            from: 0,
            to: 100,
            last: 99
        })
    );
    assert!(errors(&m(json!([{"from":9,"to":0,"unit":"bj-1"}])))
        .contains(&E::ReversedRange { from: 9, to: 0 }));
    assert!(
        errors(&m(json!([{"from":0,"to":99,"unit":"ct-1"}]))).contains(&E::NotShardUnit {
            unit: "ct-1".into(),
            from: 0,
            to: 99
        })
    );
    assert!(
        errors(&m(json!([{"from":0,"to":99,"unit":"nope"}]))).contains(&E::UnknownUnit {
            key: "shardmap".into(),
            unit: "nope".into()
        })
    );
}

#[test]
fn unit_rules() {
    let unit = |v| with(sample_kv(), "units/bj-1", v);
    let base = |extra: serde_json::Value| {
        let mut u = json!({"dc":"bj-a","kind":"shard","services":{"orders":{"endpoints":["127.0.0.1:1"]},"profile":{}}});
        u.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        u
    };
    assert_eq!(
        one(unit(base(json!({"failover":["bj-1"]})))),
        E::FailoverToSelf {
            key: "units/bj-1".into()
        }
    );
    assert_eq!(
        one(unit(base(json!({"failover":["zz"]})))),
        E::UnknownFailover {
            key: "units/bj-1".into(),
            unit: "zz".into()
        }
    );
    assert_eq!(
        one(unit(base(json!({"dc":"mars"})))),
        E::UnknownDatacenter {
            key: "units/bj-1".into(),
            dc: "mars".into()
        }
    );
    assert_eq!(
        one(unit(base(
            json!({"services":{"orders":{"endpoints":["localhost"]},"profile":{}}})
        ))),
        E::InvalidEndpoint {
            key: "units/bj-1".into(),
            service: "orders".into(),
            endpoint: "localhost".into()
        }
    );
    assert!(
        matches!(one(unit(base(json!({"kind":"edge"})))), E::InvalidJson { key, .. } if key == "units/bj-1")
    );
    assert!(
        matches!(one(unit(base(json!({"extra":1})))), E::InvalidJson { key, .. } if key == "units/bj-1")
    );
}

#[test]
fn region_and_dc_rules() {
    assert_eq!(
        one(with(
            sample_kv(),
            "datacenters/bj-a",
            json!({"region":"eu"})
        )),
        E::UnknownRegion {
            key: "datacenters/bj-a".into(),
            region: "eu".into()
        }
    );
    let e = one(with(
        sample_kv(),
        "regions/cn-east",
        json!({"entries":["api-sh.example.com"],"countries":["CN"]}),
    ));
    // Regions are checked in name order: the later one is named.
    assert_eq!(
        e,
        E::DuplicateCountry {
            key: "regions/cn-north".into(),
            country: "CN".into(),
            other: "regions/cn-east".into()
        }
    );
    // A code listed twice in one region is named, not a claim by itself.
    let e = one(with(
        sample_kv(),
        "regions/cn-east",
        json!({"entries":["api-sh.example.com"],"countries":["JP","JP"]}),
    ));
    assert!(
        matches!(e, E::InvalidValue { ref key, ref field, .. } if key == "regions/cn-east" && field == "countries"),
        "{e:?}"
    );
    let e = one(with(sample_kv(), "regions/cn-east", json!({"entries":[]})));
    assert!(
        matches!(e, E::InvalidValue { ref key, ref field, .. } if key == "regions/cn-east" && field == "entries"),
        "{e:?}"
    );
}

#[test]
fn route_rules() {
    let route = |v| with(sample_kv(), "routes/x", v);
    assert_eq!(
        one(route(
            json!({"service":"","policy":"shard","path_prefix":"/x"})
        )),
        E::RouteWithoutService {
            key: "routes/x".into()
        }
    );
    assert_eq!(
        one(route(
            json!({"service":"billing","policy":"shard","path_prefix":"/x"})
        )),
        E::UnknownService {
            key: "routes/x".into(),
            service: "billing".into()
        }
    );
    // A quota or an issuer must exist.
    assert_eq!(
        one(route(
            json!({"service":"orders","policy":"shard","path_prefix":"/x","quota":"nope"})
        )),
        E::UnknownQuota {
            key: "routes/x".into(),
            quota: "nope".into()
        }
    );
    assert_eq!(
        one(with(
            sample_kv_without_auth(),
            "routes/x",
            json!({"service":"orders","policy":"shard","path_prefix":"/x","auth":"required"})
        )),
        E::AuthWithoutIssuer {
            key: "routes/x".into(),
            mode: "required".into()
        }
    );
    let e = one(route(
        json!({"service":"orders","policy":"shard","path_prefix":"x"}),
    ));
    assert!(matches!(e, E::InvalidValue { ref field, .. } if field == "path_prefix"));
    let e = one(route(
        json!({"hosts":["localhost"],"service":"orders","policy":"shard","path_prefix":"/orders"}),
    ));
    assert_eq!(
        e,
        E::ConflictingRoute {
            key: "routes/x".into(),
            other: "routes/orders".into()
        }
    );
    // Different methods on the same prefix do not conflict.
    let kv = route(
        json!({"hosts":["localhost"],"service":"orders","policy":"shard","path_prefix":"/config","methods":["POST"]}),
    );
    assert!(Topology::build(1, &kv, NOW).is_ok());
}

#[test]
fn route_limits_are_bounded() {
    let route = |extra: serde_json::Value| {
        let mut v = json!({"service":"orders","policy":"shard","path_prefix":"/x"});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        with(sample_kv(), "routes/x", v)
    };
    for (extra, field) in [
        (json!({"timeout_ms": 0}), "timeout_ms"),
        (json!({"timeout_ms": 600_001}), "timeout_ms"),
        (
            json!({"max_body_bytes": (64u64 << 30) + 1}),
            "max_body_bytes",
        ),
        (json!({"upstream_protocol": "h2"}), "upstream_sni"),
        (
            json!({"upstream_protocol": "h2", "upstream_sni": "a b"}),
            "upstream_sni",
        ),
        (json!({"upstream_sni": "orders.internal"}), "upstream_sni"),
        (
            json!({"hsts": {"max_age_s": 63_072_001u64}}),
            "hsts.max_age_s",
        ),
        (
            json!({"hsts": {"max_age_s": 31_536_000, "preload": true}}),
            "hsts.preload",
        ),
    ] {
        let e = one(route(extra.clone()));
        assert!(
            matches!(e, E::InvalidValue { ref key, field: ref f, .. } if key == "routes/x" && f == field),
            "{extra}: {e:?}"
        );
    }
    let kv = route(json!({"timeout_ms": 600_000, "max_body_bytes": 0}));
    let t = Topology::build(1, &kv, NOW).unwrap();
    let r = t.routes.routes().iter().find(|r| r.name == "x").unwrap();
    assert_eq!((r.timeout_ms, r.max_body_bytes), (Some(600_000), Some(0)));
    let kv = route(json!({
        "upstream_protocol": "h2", "upstream_sni": "orders.unit.internal",
        "hsts": {"max_age_s": 31_536_000, "include_subdomains": true, "preload": true}
    }));
    let t = Topology::build(1, &kv, NOW).unwrap();
    let r = t.routes.routes().iter().find(|r| r.name == "x").unwrap();
    assert_eq!(r.upstream_sni, "orders.unit.internal");
    assert_eq!(
        r.hsts.as_deref(),
        Some("max-age=31536000; includeSubDomains; preload")
    );
}

#[test]
fn resilience_settings_resolve_cluster_then_service_then_route() {
    let mut cluster: serde_json::Value = serde_json::from_str(&sample_kv()["cluster"]).unwrap();
    cluster["resilience"] = json!({"timeout_ms": 4000, "breaker": {"k": 2.0}});
    let kv = with(sample_kv(), "cluster", cluster);
    let kv = with(
        kv,
        "services/orders",
        json!({"retry_on": [503], "limiter": {"enabled": true}, "timeout_ms": 1500}),
    );
    let kv = with(
        kv,
        "routes/x",
        json!({"service": "orders", "policy": "shard", "path_prefix": "/x",
               "retry_on": [502, 429], "criticality": "critical",
               "retry_with_idempotency_key": true}),
    );
    let t = Topology::build(1, &kv, NOW).unwrap();
    let orders = t.resilience(t.service_id("orders").unwrap());
    let profile = t.resilience(t.service_id("profile").unwrap());
    assert_eq!(
        (orders.timeout_ms, profile.timeout_ms),
        (Some(1500), Some(4000))
    );
    assert_eq!(orders.retry_on, [503]);
    assert_eq!(profile.retry_on, [502, 503, 504]);
    assert_eq!((orders.breaker.k, profile.breaker.k), (2.0, 2.0));
    assert!(orders.limiter.enabled && !profile.limiter.enabled);
    let route = |name: &str| t.routes.routes().iter().find(|r| r.name == name).unwrap();
    let x = route("x");
    assert_eq!(x.retry_on, [429, 502]);
    assert_eq!(x.timeout_ms, Some(1500), "the service's deadline");
    assert!(x.retry_with_idempotency_key);
    assert_eq!(
        x.criticality,
        unit_router::resilience::Criticality::Critical
    );
    assert_eq!(route("orders").retry_on, [503]);
    assert_eq!(
        route("profile").timeout_ms,
        Some(4000),
        "the cluster's deadline"
    );
}

#[test]
fn resilience_values_are_checked_and_named() {
    for (key, v, field) in [
        ("services/orders", json!({"retry_on": [404]}), "retry_on"),
        ("services/orders", json!({"timeout_ms": 0}), "timeout_ms"),
        (
            "services/orders",
            json!({"breaker": {"k": 0.5}}),
            "breaker.k",
        ),
        (
            "services/orders",
            json!({"breaker": {"window_ms": 10}}),
            "breaker.window_ms",
        ),
        (
            "services/orders",
            json!({"limiter": {"min": 9, "initial": 3}}),
            "limiter",
        ),
        (
            "services/orders",
            json!({"limiter": {"queue_target_ms": 500}}),
            "limiter.queue_target_ms",
        ),
        (
            "services/orders",
            json!({"slow_start_ms": 700_000}),
            "slow_start_ms",
        ),
    ] {
        let e = one(with(sample_kv(), key, v.clone()));
        assert!(
            matches!(e, E::InvalidValue { key: ref k, field: ref f, .. } if k == key && f == field),
            "{v}: {e:?}"
        );
    }
    let mut cluster: serde_json::Value = serde_json::from_str(&sample_kv()["cluster"]).unwrap();
    cluster["resilience"] = json!({"limiter": {"tolerance": 0.5}});
    let e = one(with(sample_kv(), "cluster", cluster));
    assert!(
        matches!(e, E::InvalidValue { ref key, ref field, .. } if key == "cluster" && field == "resilience.limiter.tolerance"),
        "{e:?}"
    );
    let e = one(with(
        sample_kv(),
        "routes/x",
        json!({"service": "orders", "policy": "shard", "path_prefix": "/x", "retry_on": [200]}),
    ));
    assert!(
        matches!(e, E::InvalidValue { ref key, ref field, .. } if key == "routes/x" && field == "retry_on"),
        "{e:?}"
    );
    // A service no unit runs, and an unknown field.
    let e = one(with(sample_kv(), "services/billing", json!({})));
    assert_eq!(
        e,
        E::UnknownService {
            key: "services/billing".into(),
            service: "billing".into()
        }
    );
    let e = one(with(sample_kv(), "services/orders", json!({"retries": 3})));
    assert!(
        matches!(e, E::InvalidJson { ref key, .. } if key == "services/orders"),
        "{e:?}"
    );
}

/// The test issuer's public key (RS256), as a JWK set.
fn jwks() -> serde_json::Value {
    serde_json::from_str(include_str!("../../gateway/tests/fixtures/jwt/jwks.json")).unwrap()
}

fn issuer_json(extra: serde_json::Value) -> serde_json::Value {
    let mut i = json!({"iss":"https://id.example.com","algs":["RS256","ES256"],"jwks":jwks()});
    i.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    i
}

#[test]
fn routes_name_the_issuers_and_quotas_they_use() {
    let quota = json!({"key":"user","rate":100,"burst":200});
    let base = with(
        with(
            sample_kv_without_auth(),
            "auth/issuers/main",
            issuer_json(json!({})),
        ),
        "quotas/per-user",
        quota,
    );
    let orders = |extra: serde_json::Value| {
        let mut r = json!({"hosts":["api.example.com"],"path_prefix":"/orders","service":"orders","policy":"shard"});
        r.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        with(base.clone(), "routes/orders", r)
    };
    // Auth with every issuer, or named ones; one quota or several.
    let t = Topology::build(
        1,
        &orders(json!({"auth":"required","quota":"per-user","require_claims":{"scope":"orders"}})),
        NOW,
    )
    .unwrap();
    let r = t
        .routes
        .routes()
        .iter()
        .find(|r| r.name == "orders")
        .unwrap();
    assert_eq!(r.issuers, ["main"]);
    assert_eq!(r.quotas, ["per-user"]);
    assert_eq!(
        r.require_claims,
        [("scope".to_owned(), "orders".to_owned())]
    );
    assert_eq!(t.issuer_keys["main"].kids(), ["ec-1", "rsa-1"]);
    let both = with(
        orders(json!({"auth":"optional","issuers":["main"],"quota":["per-user","per-ip"]})),
        "quotas/per-ip",
        json!({"key":"ip","rate":10,"burst":10}),
    );
    let t = Topology::build(1, &both, NOW).unwrap();
    let r = t
        .routes
        .routes()
        .iter()
        .find(|r| r.name == "orders")
        .unwrap();
    assert_eq!(r.quotas, ["per-user", "per-ip"]);
    // References that do not resolve.
    assert_eq!(
        one(orders(json!({"auth":"required","issuers":["other"]}))),
        E::UnknownIssuer {
            key: "routes/orders".into(),
            issuer: "other".into()
        }
    );
    let e = one(orders(json!({"quota":"nope"})));
    assert_eq!(
        e,
        E::UnknownQuota {
            key: "routes/orders".into(),
            quota: "nope".into()
        }
    );
    assert_eq!(
        e.to_string(),
        "routes/orders: unknown quota \"nope\" (no quotas/nope)"
    );
    // Auth without any issuer in the topology.
    let mut none = orders(json!({"auth":"required"}));
    none.remove("auth/issuers/main");
    assert_eq!(
        one(none),
        E::AuthWithoutIssuer {
            key: "routes/orders".into(),
            mode: "required".into()
        }
    );
    // What only makes sense with auth, and lists that say nothing.
    for (extra, field) in [
        (json!({"issuers":["main"]}), "issuers"),
        (json!({"require_claims":{"scope":"x"}}), "require_claims"),
        (
            json!({"auth":"optional","require_claims":{"scope":"x"}}),
            "require_claims",
        ),
        (json!({"auth":"required","issuers":[]}), "issuers"),
        (json!({"quota":["per-user","per-user"]}), "quota"),
    ] {
        let e = one(orders(extra.clone()));
        assert!(
            matches!(e, E::InvalidValue { ref key, field: ref f, .. } if key == "routes/orders" && f == field),
            "{extra}: {e:?}"
        );
    }
    // A broken issuer is reported once, not again by the route using it.
    let broken = with(
        orders(json!({"auth":"required","issuers":["main"]})),
        "auth/issuers/main",
        issuer_json(json!({"algs":["HS256"]})),
    );
    let e = one(broken);
    assert!(
        matches!(e, E::InvalidValue { ref key, ref field, .. } if key == "auth/issuers/main" && field == "algs"),
        "{e:?}"
    );
}

#[test]
fn issuers_with_unusable_keys_or_mixed_algorithms_are_refused() {
    let cases = [
        (
            json!({"algs":["RS256","HS256"]}),
            "algs",
            "shared-secret algorithm",
        ),
        (
            json!({"algs":["HS256","RS256"],"shared_secret":true}),
            "algs",
            "lists only HS256",
        ),
        (json!({"algs":["none"]}), "algs", "is not one of"),
        (
            json!({"jwks":{"keys":[{"kty":"RSA","kid":"k","n":"@@","e":"AQAB"}]}}),
            "jwks",
            "not usable",
        ),
        (
            json!({"jwks":{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}}),
            "jwks",
            "no kid",
        ),
        (json!({"jwks":{"keys":"nope"}}), "jwks", "not a JWK set"),
        (
            json!({"algs":["ES256"]}),
            "jwks",
            "which the issuer does not list",
        ),
        (json!({"jwks":null}), "jwks", "give the keys inline"),
        (json!({"jwks_uri":"ftp://keys"}), "jwks_uri", "not an http"),
        (json!({"leeway_s":301}), "leeway_s", "over 300"),
        (
            json!({"max_token_bytes":0}),
            "max_token_bytes",
            "not within",
        ),
        (json!({"jwks_refresh_s":0}), "jwks_refresh_s", "not within"),
        (json!({"cookie":"a b"}), "cookie", "not a cookie name"),
    ];
    for (extra, field, says) in cases {
        let e = one(with(
            sample_kv(),
            "auth/issuers/main",
            issuer_json(extra.clone()),
        ));
        assert!(
            matches!(e, E::InvalidValue { ref key, field: ref f, ref message } if key == "auth/issuers/main" && f == field && message.contains(says)),
            "{extra}: {e:?}"
        );
    }
    // A shared-secret issuer with its secret inline, and a fetched-only one.
    let hs = json!({"iss":"https://hs.example.com","algs":["HS256"],"shared_secret":true,
        "jwks":{"keys":[{"kty":"oct","kid":"s1","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"}]}});
    let fetched = json!({"iss":"https://id.example.com","algs":["RS256"],"jwks_uri":"https://id.example.com/jwks.json"});
    let kv = with(
        with(sample_kv(), "auth/issuers/hs", hs),
        "auth/issuers/far",
        fetched,
    );
    let t = Topology::build(1, &kv, NOW).unwrap();
    assert_eq!(t.issuer_keys["hs"].kids(), ["s1"]);
    assert!(t.issuer_keys["far"].is_empty());
}

#[test]
fn issuer_and_quota_keys_are_still_validated() {
    let e = one(with(
        sample_kv(),
        "auth/issuers/main",
        issuer_json(json!({"iss":""})),
    ));
    assert!(
        matches!(e, E::InvalidValue { ref key, ref field, .. } if key == "auth/issuers/main" && field == "iss"),
        "{e:?}"
    );
    let e = one(with(
        sample_kv(),
        "quotas/q",
        json!({"key":"ip","rate":1,"burst":0}),
    ));
    assert!(
        matches!(e, E::InvalidValue { ref key, ref field, .. } if key == "quotas/q" && field == "burst"),
        "{e:?}"
    );
}

#[test]
fn center_policy_needs_a_center_unit() {
    let mut kv = sample_kv();
    kv.insert(
        "units/ct-1".into(),
        json!({"dc":"bj-b","kind":"shard","services":{"config":{}}}).to_string(),
    );
    let errs = errors(&kv);
    assert!(
        errs.contains(&E::CenterWithoutUnit {
            key: "routes/config".into()
        }),
        "{errs:?}"
    );
}

#[test]
fn missing_unknown_and_drain_keys() {
    let mut kv = sample_kv();
    kv.remove("cluster");
    assert_eq!(
        one(kv),
        E::MissingKey {
            key: "cluster".into()
        }
    );
    assert_eq!(
        one(with(sample_kv(), "routez/x", json!({}))),
        E::UnknownKey {
            key: "routez/x".into()
        }
    );
    assert_eq!(
        one(with(sample_kv(), "drain/dc/mars", json!({}))),
        E::UnknownDatacenter {
            key: "drain/dc/mars".into(),
            dc: "mars".into()
        }
    );
    let e = one(with(
        sample_kv(),
        "drain/unit/bj-1",
        json!({"until":"tomorrow"}),
    ));
    assert!(
        matches!(e, E::InvalidValue { ref key, ref field, .. } if key == "drain/unit/bj-1" && field == "until")
    );
    assert!(
        matches!(one(with(sample_kv(), "cluster", json!({"shards":0}))), E::InvalidValue { ref field, .. } if field == "shards")
    );
    assert!(matches!(
        one(with(sample_kv(), "units/Bad", json!({}))),
        E::InvalidName { .. }
    ));
}

#[test]
fn all_problems_are_reported_at_once() {
    let mut kv = with(sample_kv(), "datacenters/bj-a", json!({"region":"eu"}));
    kv = with(
        kv,
        "routes/x",
        json!({"service":"billing","policy":"shard"}),
    );
    kv = with(kv, "quotas/q", json!({"key":"user","rate":0,"burst":1}));
    // The dc, the route and the quota; bj-1 (in the broken dc) is not reported again.
    assert_eq!(errors(&kv).len(), 3, "{:#?}", errors(&kv));
}

#[test]
fn instances_merge_and_bad_ones_are_noticed() {
    let mut kv = sample_kv();
    kv.insert("instances/bj-1/orders/127.0.0.1:9999".into(), "{}".into());
    kv.insert("instances/zz/orders/127.0.0.1:9999".into(), "{}".into());
    let t = Topology::build(1, &kv, NOW).unwrap();
    let bj1 = t.unit(t.unit_id("bj-1").unwrap());
    assert_eq!(bj1.endpoints(t.service_id("orders").unwrap()).len(), 2);
    assert_eq!(t.notices.len(), 1, "{:?}", t.notices);
}

#[test]
fn route_prefixes_are_normalised_plain_paths() {
    for bad in [
        "/a/../b",
        "/a//b",
        "/%7Eu",
        "/v1/users:batch",
        "/a;b",
        "/a/./b",
    ] {
        let kv = with(
            sample_kv(),
            "routes/odd",
            json!({"service":"orders","policy":"shard","path_prefix": bad}),
        );
        let errs = Topology::build(1, &kv, NOW).unwrap_err();
        assert!(
            errs.iter()
                .any(|e| e.to_string().contains("routes/odd: path_prefix")),
            "{bad}: {errs}"
        );
    }
    let kv = with(
        sample_kv(),
        "routes/fine",
        json!({"service":"orders","policy":"shard","path_prefix": "/v1/a-b_c.d~e/"}),
    );
    assert!(Topology::build(1, &kv, NOW).is_ok());
}
