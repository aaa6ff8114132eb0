//! Synthetic topologies for benches and allocation tests: the large one
//! (100 units x 20 services x 500 routes over 5 regions and 10 datacenters)
//! and the same shape at any size.
//!
//! Only built for the crate's own tests or with the `test-support` feature.

use std::collections::BTreeMap;

use serde_json::json;

/// Key -> JSON of the large topology (1000 shards).
pub fn large_kv() -> BTreeMap<String, String> {
    sized_kv(100, 20, 500)
}

/// Key -> JSON of a synthetic topology: `units` shard units of 10 shards
/// each over 5 regions and 10 datacenters, each running `services`
/// services of two endpoints, and `routes` shard routes (one per service
/// and host, hosts `api<h>.example.com`).
pub fn sized_kv(units: usize, services: usize, routes: usize) -> BTreeMap<String, String> {
    let mut kv = BTreeMap::new();
    let mut put = |k: String, v: serde_json::Value| kv.insert(k, v.to_string());
    put(
        "cluster".into(),
        json!({"shards": units * 10, "shard_hash": "xxh3"}),
    );
    for r in 0..5 {
        put(
            format!("regions/r{r}"),
            json!({"entries":[format!("api-r{r}.example.com")]}),
        );
        for d in 0..2 {
            put(
                format!("datacenters/dc{}", r * 2 + d),
                json!({"region": format!("r{r}")}),
            );
        }
    }
    let service_map: serde_json::Map<_, _> = (0..services)
        .map(|s| {
            (
                format!("svc{s}"),
                json!({"endpoints":["127.0.0.1:9000","127.0.0.1:9001"]}),
            )
        })
        .collect();
    for u in 0..units {
        put(
            format!("units/u{u:03}"),
            json!({"dc": format!("dc{}", u % 10), "kind":"shard",
                   "failover":[format!("u{:03}", (u + 1) % units)], "services": service_map}),
        );
    }
    let ranges: Vec<_> = (0..units)
        .map(|u| json!({"from": u * 10, "to": u * 10 + 9, "unit": format!("u{u:03}")}))
        .collect();
    put("shardmap".into(), json!({ "ranges": ranges }));
    for r in 0..routes {
        let (h, p) = (r / services, r % services);
        put(
            format!("routes/h{h}-p{p}"),
            json!({"hosts":[format!("api{h}.example.com")],"path_prefix":format!("/v1/api{p}"),
                   "service":format!("svc{p}"),"policy":"shard"}),
        );
    }
    kv
}
