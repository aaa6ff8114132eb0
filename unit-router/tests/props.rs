//! Property tests of the routing rules over generated topologies.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::json;
use unit_router::*;

const NOW: i64 = 1_800_000_000;

/// A random valid topology: `units` shard units over 3 dcs in 2 regions, a
/// shard map cut at random points, random failover lists, random drains.
fn topology() -> impl Strategy<Value = (BTreeMap<String, String>, Vec<bool>)> {
    (2usize..8, 1u32..200)
        .prop_flat_map(|(units, shards)| {
            (
                Just(units),
                Just(shards),
                proptest::collection::vec(0..shards, units - 1),
                proptest::collection::vec(proptest::collection::vec(0..units, 0..3), units),
                proptest::collection::vec(any::<bool>(), units),
            )
        })
        .prop_map(|(n, shards, mut cuts, failovers, drains)| {
            let mut kv = BTreeMap::new();
            let mut put = |k: &str, v: serde_json::Value| kv.insert(k.to_owned(), v.to_string());
            put("cluster", json!({"shards": shards}));
            put(
                "regions/r0",
                json!({"entries":["a.example.com"],"countries":["CN"]}),
            );
            put(
                "regions/r1",
                json!({"entries":["b.example.com"],"countries":["JP"]}),
            );
            put("datacenters/d0", json!({"region":"r0"}));
            put("datacenters/d1", json!({"region":"r0"}));
            put("datacenters/d2", json!({"region":"r1"}));
            for (i, f) in failovers.iter().enumerate() {
                let fo: Vec<String> = f
                    .iter()
                    .filter(|&&j| j != i)
                    .map(|j| format!("u{j}"))
                    .collect();
                put(
                    &format!("units/u{i}"),
                    json!({"dc": format!("d{}", i % 3), "kind":"shard", "failover": fo,
                           "services":{"s":{"endpoints":[format!("127.0.0.1:{}", 9000 + i)]}}}),
                );
            }
            // Cut [0, shards) into n contiguous ranges (some possibly empty).
            cuts.sort_unstable();
            let mut bounds = vec![0];
            bounds.extend(cuts);
            bounds.push(shards);
            let ranges: Vec<_> = bounds
                .windows(2)
                .enumerate()
                .filter(|(_, w)| w[0] < w[1])
                .map(|(i, w)| json!({"from": w[0], "to": w[1] - 1, "unit": format!("u{i}")}))
                .collect();
            put("shardmap", json!({ "ranges": ranges }));
            put(
                "routes/r",
                json!({"hosts":["a.example.com"],"path_prefix":"/","service":"s","policy":"shard"}),
            );
            for (i, d) in drains.iter().enumerate() {
                if *d {
                    put(&format!("drain/unit/u{i}"), json!({}));
                }
            }
            (kv, drains[..n].to_vec())
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_shard_has_exactly_one_home((kv, _) in topology()) {
        let t = Topology::build(1, &kv, NOW).unwrap();
        for s in 0..t.cluster.shards {
            let owner = t.shard_owner(s).unwrap();
            let covering = t.shard_ranges().iter().filter(|&&(a, b, _)| a <= s && s <= b).count();
            prop_assert_eq!(covering, 1);
            let key = s.to_string();
            let f = Facts { header_user: Some(&key), ..Facts::new(Listener::Public, "a.example.com", "/x", "GET", NOW) };
            let d = decide(&t, &f, &AllHealthy).unwrap();
            prop_assert_eq!(d.home, owner);
        }
    }

    #[test]
    fn a_drained_unit_is_never_a_target_while_an_alternative_exists((kv, _) in topology(), user in any::<u64>()) {
        let t = Topology::build(1, &kv, NOW).unwrap();
        // The never-strand rule keeps at least one unit active.
        let active: Vec<UnitId> = (0..t.units.len() as u16).map(UnitId).filter(|&u| !t.is_drained(u, NOW)).collect();
        prop_assert!(!active.is_empty());
        let key = user.to_string();
        let f = Facts { header_user: Some(&key), ..Facts::new(Listener::Public, "a.example.com", "/x", "GET", NOW) };
        let d = decide(&t, &f, &AllHealthy).unwrap();
        prop_assert!(!t.is_drained(d.target, NOW), "target {} is drained", t.unit(d.target).name);
        if d.target != d.home {
            prop_assert_eq!(d.reason, Reason::Drain);
            prop_assert!(t.is_drained(d.home, NOW));
        }
    }

    #[test]
    fn unhealthy_units_are_avoided_while_any_unit_is_healthy((kv, sick) in topology(), user in any::<u64>()) {
        let mut kv = kv;
        kv.retain(|k, _| !k.starts_with("drain/"));
        let t = Topology::build(1, &kv, NOW).unwrap();
        let sick: Vec<UnitId> = sick.iter().enumerate().filter(|(_, s)| **s).map(|(i, _)| UnitId(i as u16)).collect();
        let key = user.to_string();
        let f = Facts { header_user: Some(&key), ..Facts::new(Listener::Public, "a.example.com", "/x", "GET", NOW) };
        match decide(&t, &f, &Unhealthy(sick.clone())) {
            Ok(d) => {
                prop_assert!(!sick.contains(&d.target));
                prop_assert_eq!(d.reason == Reason::Failover, d.target != d.home);
            }
            Err(RouteError::NoUnit { .. }) => prop_assert_eq!(sick.len(), t.units.len()),
            Err(e) => prop_assert!(false, "unexpected {e:?}"),
        }
    }
}
