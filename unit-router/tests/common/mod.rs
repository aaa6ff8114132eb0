//! Shared fixtures: the sample topology as a key -> JSON map.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]

use std::collections::BTreeMap;

use serde_json::{json, Value};
use unit_router::Topology;

pub const NOW: i64 = 1_800_000_000;

pub fn sample_kv() -> BTreeMap<String, String> {
    let text = include_str!("../../../deploy/local/topology.yaml");
    let map: BTreeMap<String, Value> = serde_yaml_ng::from_str(text).unwrap();
    map.into_iter().map(|(k, v)| (k, v.to_string())).collect()
}

/// The sample without its auth and quotas (the demo issuer, its quotas and
/// the route using them).
pub fn sample_kv_without_auth() -> BTreeMap<String, String> {
    let mut kv = sample_kv();
    kv.retain(|k, _| {
        !(k.starts_with("auth/") || k.starts_with("quotas/") || k == "routes/account")
    });
    kv
}

pub fn sample() -> Topology {
    Topology::build(1, &sample_kv(), NOW).unwrap()
}

pub fn with(mut kv: BTreeMap<String, String>, key: &str, v: Value) -> BTreeMap<String, String> {
    kv.insert(key.to_owned(), v.to_string());
    kv
}

pub fn drained(key: &str) -> (String, String) {
    (
        key.to_owned(),
        json!({"reason": "test", "by": "test"}).to_string(),
    )
}
