//! The routing decision on the sample topology.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::json;
use unit_router::drain::would_strand;
use unit_router::*;

fn facts<'a>(path: &'a str) -> Facts<'a> {
    Facts::new(Listener::Public, "api.example.com", path, "GET", NOW)
}

fn name(t: &Topology, u: UnitId) -> &str {
    &t.unit(u).name
}

#[test]
fn shard_policy_follows_the_shard_map() {
    let t = sample();
    for user in 0..1000u32 {
        let key = user.to_string();
        let f = Facts {
            header_user: Some(&key),
            ..facts("/orders/1")
        };
        let d = decide(&t, &f, &AllHealthy).unwrap();
        assert_eq!(d.shard, Some(user % 100));
        assert_eq!(Some(d.home), t.shard_owner(user % 100));
        assert_eq!((d.target, d.reason, d.hops), (d.home, Reason::Shard, 0));
    }
}

#[test]
fn key_precedence_claim_token_header() {
    let t = sample();
    let keys = unit_router::Keyring::new("k", [("k".to_owned(), vec![7; 32])].into()).unwrap();
    let tok = RouteToken::new(Some(60), "sh-1", 1, NOW + 10, &keys);
    let f = Facts {
        header_user: Some("5"),
        token: Some(&tok),
        ..facts("/orders")
    };
    assert_eq!(decide(&t, &f, &AllHealthy).unwrap().shard, Some(60));
    let f = Facts {
        claim_user: Some("80"),
        ..f
    };
    let d = decide(&t, &f, &AllHealthy).unwrap();
    assert_eq!((d.shard, d.key_source), (Some(80), KeySource::Claim));
}

#[test]
fn no_key_falls_back_to_region_then_here() {
    let t = sample();
    let f = Facts {
        country: Some("CN"),
        subdivision: Some("CN-SH"),
        ..facts("/orders")
    };
    let d = decide(&t, &f, &AllHealthy).unwrap();
    assert_eq!((name(&t, d.home), d.reason), ("sh-1", Reason::Region));
    let here = Here::resolve(&t, None, Some("bj-b"));
    let f = Facts {
        here,
        ..facts("/profile")
    };
    assert_eq!(name(&t, decide(&t, &f, &AllHealthy).unwrap().home), "bj-1");
}

#[test]
fn region_policy_is_sticky_through_the_token() {
    let t = sample();
    let keys = unit_router::Keyring::new("k", [("k".to_owned(), vec![7; 32])].into()).unwrap();
    let tok = RouteToken::new(None, "bj-2", 1, NOW + 10, &keys);
    let f = Facts {
        token: Some(&tok),
        country: Some("JP"),
        ..facts("/profile")
    };
    assert_eq!(name(&t, decide(&t, &f, &AllHealthy).unwrap().home), "bj-2");
}

#[test]
fn center_and_local_policies() {
    let t = sample();
    let d = decide(&t, &facts("/config"), &AllHealthy).unwrap();
    assert_eq!((name(&t, d.target), d.reason), ("ct-1", Reason::Center));
    let f = Facts {
        here: Here::resolve(&t, None, Some("sh-a")),
        ..facts("/nearby")
    };
    let d = decide(&t, &f, &AllHealthy).unwrap();
    assert_eq!((name(&t, d.target), d.reason), ("sh-1", Reason::Local));
    assert_eq!(
        decide(
            &t,
            &Facts {
                method: "POST",
                ..facts("/config")
            },
            &AllHealthy
        ),
        Err(RouteError::NoRoute)
    );
}

#[test]
fn failover_follows_the_failover_list() {
    let t = sample();
    let bj1 = t.unit_id("bj-1").unwrap();
    let bj2 = t.unit_id("bj-2").unwrap();
    let f = Facts {
        header_user: Some("3"),
        ..facts("/orders")
    };
    let d = decide(&t, &f, &Unhealthy(vec![bj1])).unwrap();
    assert_eq!(
        (d.home, d.target, d.reason, d.hops),
        (bj1, bj2, Reason::Failover, 1)
    );
    // Excluding the units already tried moves on down the list.
    let d = decide(
        &t,
        &Facts {
            exclude: &[bj2],
            ..f
        },
        &Unhealthy(vec![bj1]),
    )
    .unwrap();
    assert_eq!(name(&t, d.target), "sh-1");
}

#[test]
fn drained_dc_moves_its_shards_to_the_failover_unit() {
    let mut kv = sample_kv();
    let (k, v) = drained("drain/dc/sh-a");
    kv.insert(k, v);
    let t = Topology::build(2, &kv, NOW).unwrap();
    for user in [50u32, 74, 75, 99] {
        let key = user.to_string();
        let d = decide(
            &t,
            &Facts {
                header_user: Some(&key),
                ..facts("/orders")
            },
            &AllHealthy,
        )
        .unwrap();
        let want = if user < 75 { "bj-1" } else { "bj-2" };
        assert_eq!(
            (name(&t, d.target), d.reason),
            (want, Reason::Drain),
            "user {user}"
        );
    }
}

#[test]
fn drain_until_expires() {
    let kv = with(
        sample_kv(),
        "drain/unit/bj-1",
        json!({"until": "2027-01-15T09:00:00Z"}),
    );
    let t = Topology::build(2, &kv, NOW).unwrap();
    let until = NOW + 3600; // NOW is 2027-01-15T08:00:00Z
    assert_eq!(t.next_drain_change(), Some(until));
    let bj1 = t.unit_id("bj-1").unwrap();
    assert!(t.is_drained(bj1, until - 1));
    assert!(!t.is_drained(bj1, until));
    let f = Facts {
        header_user: Some("1"),
        now: until,
        ..facts("/orders")
    };
    assert_eq!(decide(&t, &f, &AllHealthy).unwrap().reason, Reason::Shard);
}

#[test]
fn a_drain_that_strands_a_shard_is_applied_only_where_it_leaves_a_unit() {
    let mut kv = sample_kv();
    for k in ["drain/dc/bj-a", "drain/dc/sh-a", "drain/unit/bj-2"] {
        let (k, v) = drained(k);
        kv.insert(k, v);
    }
    let t = Topology::build(3, &kv, NOW).unwrap();
    // bj-a, sh-a drained; bj-2 must stay: it is the last shard unit.
    assert!(!t.is_drained(t.unit_id("bj-2").unwrap(), NOW));
    assert!(t.is_drained(t.unit_id("sh-2").unwrap(), NOW));
    assert_eq!(t.notices.len(), 1, "{:?}", t.notices);
    assert!(
        t.notices[0].contains("drain/unit/bj-2: unit bj-2 stays active"),
        "{:?}",
        t.notices
    );
    for user in 0..100u32 {
        let key = user.to_string();
        let d = decide(
            &t,
            &Facts {
                header_user: Some(&key),
                ..facts("/orders")
            },
            &AllHealthy,
        )
        .unwrap();
        assert_eq!(name(&t, d.target), "bj-2");
    }
}

#[test]
fn would_strand_names_the_shards() {
    let t = sample();
    assert!(would_strand(&t, &DrainTarget::Dc("sh-a".into()), NOW).is_empty());
    let s = would_strand(&t, &DrainTarget::Dc("bj-b".into()), NOW);
    assert!(s.shards.is_empty() && s.center, "{s:?}");
    let mut kv = sample_kv();
    let (k, v) = drained("drain/dc/sh-a");
    kv.insert(k, v);
    let t = Topology::build(2, &kv, NOW).unwrap();
    let s = would_strand(&t, &DrainTarget::Unit("bj-1".into()), NOW);
    assert!(s.is_empty(), "{s}");
    let mut kv2 = kv.clone();
    let (k, v) = drained("drain/unit/bj-1");
    kv2.insert(k, v);
    let t = Topology::build(3, &kv2, NOW).unwrap();
    let s = would_strand(&t, &DrainTarget::Dc("bj-b".into()), NOW);
    assert_eq!(s.shards, vec![(0, 99)]);
    assert_eq!(s.to_string(), "shards 0-99, center traffic");
}

#[test]
fn a_dye_goes_back_home_and_respects_the_hop_limit() {
    let t = sample();
    let sh1 = t.unit_id("sh-1").unwrap();
    let bj1 = t.unit_id("bj-1").unwrap();
    let here = Here::resolve(&t, None, Some("sh-a"));
    let dye = Dye {
        shard: Some(3),
        home: "bj-1".into(),
        via: "sh-1".into(),
        reason: Reason::Failover,
        hops: 1,
        exp: NOW + 30,
    };
    let base = Facts {
        listener: Listener::Internal,
        dye: Some(&dye),
        here,
        ..facts("/orders")
    };
    let d = decide(&t, &base, &AllHealthy).unwrap();
    assert_eq!((d.target, d.reason, d.hops), (bj1, Reason::Return, 2));
    // Home still down: stays where it is, no new hop.
    let d = decide(&t, &base, &Unhealthy(vec![bj1])).unwrap();
    assert_eq!((d.target, d.reason, d.hops), (sh1, Reason::Failover, 1));
    // At the hop cap the request is served locally, never moved again.
    let capped = Dye {
        hops: 2,
        ..dye.clone()
    };
    let d = decide(
        &t,
        &Facts {
            dye: Some(&capped),
            ..base
        },
        &AllHealthy,
    )
    .unwrap();
    assert_eq!((d.target, d.reason, d.hops), (sh1, Reason::Local, 2));
    // ...and refused when the local unit cannot serve either.
    let r = decide(
        &t,
        &Facts {
            dye: Some(&capped),
            ..base
        },
        &Unhealthy(vec![sh1]),
    );
    assert!(matches!(r, Err(RouteError::HopLimit { .. })), "{r:?}");
}

#[test]
fn no_unit_when_nothing_can_serve() {
    let t = sample();
    let all: Vec<UnitId> = (0..t.units.len() as u16).map(UnitId).collect();
    let r = decide(
        &t,
        &Facts {
            header_user: Some("1"),
            ..facts("/orders")
        },
        &Unhealthy(all),
    );
    assert!(matches!(r, Err(RouteError::NoUnit { home: Some(_), .. })));
}

#[test]
fn locate_reports_home_and_the_unit_now_serving() {
    let t = sample();
    let f = Facts {
        header_user: Some("60"),
        ..facts("/anything")
    };
    let l = locate(&t, &f).unwrap();
    assert_eq!(
        (l.shard, name(&t, l.home), name(&t, l.serving)),
        (Some(60), "sh-1", "sh-1")
    );
    let mut kv = sample_kv();
    let (k, v) = drained("drain/dc/sh-a");
    kv.insert(k, v);
    let t = Topology::build(2, &kv, NOW).unwrap();
    let l = locate(&t, &f).unwrap();
    assert_eq!((name(&t, l.home), name(&t, l.serving)), ("sh-1", "bj-1"));
    let f = Facts {
        country: Some("JP"),
        ..facts("/")
    };
    assert_eq!(name(&t, locate(&t, &f).unwrap().home), "sh-1");
}

fn keys() -> Keyring {
    Keyring::new("k", [("k".to_owned(), vec![7; 32])].into()).unwrap()
}

/// The token a public client would get back from decision `d`.
fn token_of(t: &Topology, d: &Decision) -> Option<RouteToken> {
    d.token_to_issue()
        .map(|a| RouteToken::new(a.shard, name(t, a.unit), t.epoch, NOW + 86_400, &keys()))
}

#[test]
fn a_region_route_keeps_the_user_where_it_served_them() {
    // A region route with a user key: served in this gateway's region
    // (cn-north). The token names that unit, so the next request with the
    // token is served by the same unit, with no new cookie and no hint to
    // the shard owner's region.
    let t = sample();
    let here = Here::resolve(&t, Some("cn-north"), Some("bj-a"));
    let first = Facts {
        header_user: Some("60"),
        here,
        ..facts("/profile/1")
    };
    let d1 = decide(&t, &first, &AllHealthy).unwrap();
    let served = name(&t, d1.target);
    assert_eq!(t.region_id("cn-north"), Some(t.unit(d1.target).region));
    let tok = token_of(&t, &d1).expect("a first request gets a token");
    assert_eq!((tok.shard, tok.unit.as_str()), (Some(60), served));
    assert_eq!(d1.hint(), None);
    let again = Facts {
        token: Some(&tok),
        here,
        ..facts("/profile/1")
    };
    let d2 = decide(&t, &again, &AllHealthy).unwrap();
    assert_eq!(name(&t, d2.target), served);
    assert_eq!(d2.token_to_issue(), None, "the token is kept");
    assert_eq!(d2.hint(), None);
}

#[test]
fn shard_and_region_routes_mint_the_same_token() {
    // Whichever route a user calls first, the token is the same, and each
    // route keeps it: no route moves the user because another wrote it.
    let t = sample();
    let here = Here::resolve(&t, Some("cn-north"), Some("bj-a"));
    let user = |path| Facts {
        header_user: Some("60"),
        here,
        ..facts(path)
    };
    let by_orders = token_of(&t, &decide(&t, &user("/orders/1"), &AllHealthy).unwrap()).unwrap();
    let by_profile = token_of(&t, &decide(&t, &user("/profile/1"), &AllHealthy).unwrap()).unwrap();
    assert_eq!(
        (by_orders.shard, &by_orders.unit),
        (by_profile.shard, &by_profile.unit)
    );
    for path in ["/orders/1", "/profile/1", "/orders/2"] {
        let f = Facts {
            token: Some(&by_orders),
            ..user(path)
        };
        let d = decide(&t, &f, &AllHealthy).unwrap();
        assert_eq!(d.token_to_issue(), None, "{path}");
    }
    // ...and the shard route still goes to the shard's home, the region
    // route to the region unit.
    let f = Facts {
        token: Some(&by_orders),
        here,
        ..facts("/orders/1")
    };
    assert_eq!(
        name(&t, decide(&t, &f, &AllHealthy).unwrap().target),
        "sh-1"
    );
    let f = Facts {
        token: Some(&by_orders),
        here,
        ..facts("/profile/1")
    };
    assert_eq!(
        name(&t, decide(&t, &f, &AllHealthy).unwrap().target),
        by_orders.unit
    );
}

#[test]
fn shard_routes_hint_home_and_neither_failover_nor_drain_rewrites_the_token() {
    let t = sample();
    let here = Here::resolve(&t, Some("cn-north"), Some("bj-a"));
    let f = Facts {
        header_user: Some("60"),
        here,
        ..facts("/orders/1")
    };
    let d = decide(&t, &f, &AllHealthy).unwrap();
    assert_eq!(d.hint().map(|u| name(&t, u)), Some("sh-1"));
    assert_eq!(
        hint_value(&t, d.hint().unwrap(), 300),
        "unit=sh-1; region=cn-east; entry=api-sh.example.com; ttl=300"
    );
    let tok = token_of(&t, &d).unwrap();
    // Home down (health): served elsewhere, the token is kept, and no hint
    // points at a unit that cannot serve.
    let sh1 = t.unit_id("sh-1").unwrap();
    let f = Facts {
        token: Some(&tok),
        ..f
    };
    let d = decide(&t, &f, &Unhealthy(vec![sh1])).unwrap();
    assert_eq!((name(&t, d.target), d.reason), ("bj-1", Reason::Failover));
    assert_eq!(d.token_to_issue(), None);
    assert_eq!(d.hint(), None);
    // Home drained: served by the drain target, hinted there (here it is
    // in this gateway's region: no hint), the token kept.
    let mut kv = sample_kv();
    let (k, v) = drained("drain/dc/sh-a");
    kv.insert(k, v);
    let t = Topology::build(2, &kv, NOW).unwrap();
    let d = decide(&t, &f, &AllHealthy).unwrap();
    assert_eq!((name(&t, d.target), d.reason), ("bj-1", Reason::Drain));
    assert_eq!(d.token_to_issue(), None);
    assert_eq!(d.hint(), None);
    // The same drain seen from cn-east: hinted to cn-north, where bj-1 is.
    let f = Facts {
        here: Here::resolve(&t, Some("cn-east"), Some("sh-a")),
        ..f
    };
    let d = decide(&t, &f, &AllHealthy).unwrap();
    assert_eq!(d.hint().map(|u| name(&t, u)), Some("bj-1"));
}

#[test]
fn a_drained_region_unit_gets_its_users_back_after_the_undrain() {
    let t = sample();
    let here = Here::resolve(&t, Some("cn-north"), Some("bj-a"));
    let first = Facts {
        here,
        ..facts("/profile/1")
    };
    let d = decide(&t, &first, &AllHealthy).unwrap();
    let tok = token_of(&t, &d).unwrap();
    let unit = tok.unit.clone();
    let again = Facts {
        token: Some(&tok),
        here,
        ..facts("/profile/1")
    };
    let mut kv = sample_kv();
    kv.insert(format!("drain/unit/{unit}"), "{}".into());
    let drained_t = Topology::build(2, &kv, NOW).unwrap();
    let d = decide(&drained_t, &again, &AllHealthy).unwrap();
    assert_ne!(name(&drained_t, d.target), unit);
    assert_eq!(d.reason, Reason::Drain);
    assert_eq!(
        d.token_to_issue(),
        None,
        "the drain does not rewrite the token"
    );
    // Undrained: back at the same unit.
    let d = decide(&t, &again, &AllHealthy).unwrap();
    assert_eq!(name(&t, d.target), unit);
}

#[test]
fn tokens_and_hints_are_for_public_shard_and_region_routes_only() {
    let t = sample();
    let here = Here::resolve(&t, Some("cn-north"), Some("bj-a"));
    for path in ["/config", "/nearby"] {
        let f = Facts {
            header_user: Some("60"),
            here,
            ..facts(path)
        };
        let d = decide(&t, &f, &AllHealthy).unwrap();
        assert_eq!(d.affinity, None, "{path}");
    }
    let f = Facts {
        header_user: Some("60"),
        here,
        listener: Listener::Internal,
        ..facts("/orders/1")
    };
    assert_eq!(decide(&t, &f, &AllHealthy).unwrap().affinity, None);
    // A token past half its life is renewed.
    let d = decide(
        &t,
        &Facts {
            header_user: Some("60"),
            here,
            ..facts("/orders/1")
        },
        &AllHealthy,
    )
    .unwrap();
    let fresh = token_of(&t, &d).unwrap();
    let old = RouteToken::new(fresh.shard, &fresh.unit, 1, NOW + 100, &keys());
    let f = Facts {
        token: Some(&old),
        here,
        ..facts("/orders/1")
    };
    let d = decide(&t, &f, &AllHealthy).unwrap();
    assert!(d.token_to_issue().is_some());
}

#[test]
fn locate_agrees_with_decide_on_shard_routes() {
    let t = sample();
    let mut kv = sample_kv();
    let (k, v) = drained("drain/unit/sh-2");
    kv.insert(k, v);
    let drained_t = Topology::build(2, &kv, NOW).unwrap();
    let here = Here::resolve(&t, Some("cn-north"), Some("bj-a"));
    for t in [&t, &drained_t] {
        for user in 0..200u32 {
            let key = user.to_string();
            let f = Facts {
                header_user: Some(&key),
                here,
                ..facts("/orders/1")
            };
            let d = decide(t, &f, &AllHealthy).unwrap();
            let l = locate(t, &f).unwrap();
            assert_eq!(
                (l.shard, l.home, l.serving),
                (d.shard, d.home, d.target),
                "user {user}"
            );
            assert_eq!(Some(l.affinity), d.affinity, "user {user}");
        }
    }
}

#[test]
fn the_dye_is_read_off_the_decision() {
    let t = sample();
    let sh2 = t.unit_id("sh-2").unwrap();
    let f = Facts {
        header_user: Some("99"),
        ..facts("/orders/1")
    };
    let d = decide(&t, &f, &Unhealthy(vec![sh2])).unwrap();
    let dye = d.dye(&t, None, NOW + 60).expect("dyed on failover");
    assert_eq!(
        (
            dye.shard,
            dye.home.as_str(),
            dye.via.as_str(),
            dye.reason,
            dye.hops
        ),
        (Some(99), "sh-2", "bj-2", Reason::Failover, 1)
    );
    let home = decide(&t, &f, &AllHealthy).unwrap();
    assert_eq!(home.dye(&t, None, NOW + 60), None);
}
