//! One routing decision on 100 units x 20 services x 500 routes.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use unit_router::fixture::large_kv;
use unit_router::*;

const NOW: i64 = 1_800_000_000;

fn bench(c: &mut Criterion) {
    let t = Topology::build(1, &large_kv(), NOW).unwrap();
    let keys = Keyring::new("k1", [("k1".to_owned(), vec![9; 32])].into()).unwrap();
    let f = Facts {
        header_user: Some("user-829341"),
        ..Facts::new(
            Listener::Public,
            "API17.example.com:443",
            "/v1/api13/orders/77",
            "GET",
            NOW,
        )
    };
    let sick = Unhealthy(vec![t.shard_owner(t.shard_of("user-829341")).unwrap()]);
    c.bench_function("decide/shard_by_header", |b| {
        b.iter(|| decide(black_box(&t), black_box(&f), &AllHealthy).unwrap())
    });
    c.bench_function("decide/failover", |b| {
        b.iter(|| decide(black_box(&t), black_box(&f), &sick).unwrap())
    });
    let tok = RouteToken::new(Some(17), "u001", 1, NOW + 60, &keys).encode(&keys);
    c.bench_function("token/decode", |b| {
        b.iter(|| RouteToken::decode(black_box(&tok), &keys, NOW).unwrap())
    });
    // Baseline in the same run: one HashMap lookup of the host alone.
    let hosts: std::collections::HashMap<String, u32> = (0..25)
        .map(|h| (format!("api{h}.example.com"), h))
        .collect();
    c.bench_function("baseline/host_hashmap_lookup", |b| {
        b.iter(|| hosts.get(black_box("api17.example.com")).copied())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
