//! A large synthetic topology for benches and allocation tests:
//! 100 units x 20 services x 500 routes over 5 regions and 10 datacenters.
//!
//! Only built for the crate's own tests or with the `test-support` feature.

use std::collections::BTreeMap;

use serde_json::json;

/// Key -> JSON of the large topology (1000 shards).
pub fn large_kv() -> BTreeMap<String, String> {
    let mut kv = BTreeMap::new();
    let mut put = |k: String, v: serde_json::Value| kv.insert(k, v.to_string());
    put(
        "cluster".into(),
        json!({"shards": 1000, "shard_hash": "xxh3"}),
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
    let services: serde_json::Map<_, _> = (0..20)
        .map(|s| {
            (
                format!("svc{s}"),
                json!({"endpoints":["127.0.0.1:9000","127.0.0.1:9001"]}),
            )
        })
        .collect();
    for u in 0..100 {
        put(
            format!("units/u{u:03}"),
            json!({"dc": format!("dc{}", u % 10), "kind":"shard",
                   "failover":[format!("u{:03}", (u + 1) % 100)], "services": services}),
        );
    }
    let ranges: Vec<_> = (0..100)
        .map(|u| json!({"from": u * 10, "to": u * 10 + 9, "unit": format!("u{u:03}")}))
        .collect();
    put("shardmap".into(), json!({ "ranges": ranges }));
    for h in 0..25 {
        for p in 0..20 {
            put(
                format!("routes/h{h}-p{p}"),
                json!({"hosts":[format!("api{h}.example.com")],"path_prefix":format!("/v1/api{p}"),
                       "service":format!("svc{p}"),"policy":"shard"}),
            );
        }
    }
    kv
}
