//! Drain by one `etcdctl put` under load, undrain, etcd stopped mid-test,
//! and a restart from the last-known-good snapshot: the gateway process
//! against a real etcd and wiremock units.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use unitgate_tests::gateway::{client, Gateway, GatewayArgs, Units};
use unitgate_tests::{eventually, Etcd};

const BIN: &str = env!("CARGO_BIN_EXE_unitgate");

struct Sample {
    sent: Instant,
    status: u16,
    served_by: String,
}

/// `etcdctl put|del` as ops would type it; returns the revision.
fn etcdctl(etcd: &Etcd, args: &[&str]) -> i64 {
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &etcd.endpoint(), "-w", "json"])
        .args(args)
        .output()
        .expect("run etcdctl (install etcd-client)");
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("etcdctl json");
    v["header"]["revision"].as_i64().expect("revision")
}

async fn served(gw: &Gateway, user: &str) -> (u16, String) {
    let r = client()
        .get(gw.url("/orders/1"))
        .header("host", "api.example.com")
        .header("x-user-id", user)
        .send()
        .await
        .expect("request");
    let by = r
        .headers()
        .get("x-unit-served-by")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (r.status().as_u16(), by)
}

/// Send `token` (no user header): who served, and the token set in return.
async fn token_after(
    gw: &Gateway,
    keys: &unit_router::Keyring,
    token: String,
) -> (String, Option<unit_router::RouteToken>) {
    let r = client()
        .get(gw.url("/orders/1"))
        .header("host", "api.example.com")
        .header("x-unit-route", token)
        .send()
        .await
        .unwrap();
    let by = r.headers()["x-unit-served-by"].to_str().unwrap().to_owned();
    let tok = r.headers().get("set-cookie").map(|c| {
        let raw = c
            .to_str()
            .unwrap()
            .strip_prefix("ug_route=")
            .unwrap()
            .split(';')
            .next()
            .unwrap();
        unit_router::RouteToken::decode(raw, keys, 0).unwrap()
    });
    (by, tok)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_by_one_etcd_key_under_load_loses_nothing() {
    let etcd = Etcd::start().await.unwrap();
    let units = Units::start().await;
    let kv = config_center::kv::parse_document(&units.topology(&[]), "t").unwrap();
    let first = etcd.put_all(&kv).await.unwrap();
    let args = GatewayArgs {
        etcd: Some(etcd.endpoint()),
        region: Some("cn-north".into()),
        dc: Some("bj-a".into()),
        ..GatewayArgs::default()
    };
    let gw = Arc::new(Gateway::start(Path::new(BIN), args).await.unwrap());
    eventually!(
        Duration::from_secs(10),
        gw.epoch().await >= first,
        "topology applied"
    );

    // Load: 8 workers over all 100 shards, bounded in time and count.
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..8u32 {
        let (gw, stop) = (gw.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut i = w;
            while !stop.load(Ordering::Relaxed) && out.len() < 20_000 {
                let sent = Instant::now();
                let (status, served_by) = served(&gw, &(i % 100).to_string()).await;
                out.push(Sample {
                    sent,
                    status,
                    served_by,
                });
                i += 8;
            }
            out
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;

    // The one key ops write.
    let put_at = Instant::now();
    let rev = etcdctl(
        &etcd,
        &[
            "put",
            "/unitgate/drain/dc/sh-a",
            r#"{"reason":"test","by":"ci"}"#,
        ],
    );
    let mut applied_at = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if gw.epoch().await >= rev {
            applied_at = Some(Instant::now());
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let applied_at = applied_at.expect("drain applied within 5s");
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Relaxed);
    let mut samples = Vec::new();
    for w in workers {
        samples.extend(w.await.unwrap());
    }

    let drained = |u: &str| u == "sh-1" || u == "sh-2";
    let failed: Vec<_> = samples.iter().filter(|s| s.status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed",
        failed.len(),
        samples.len()
    );
    let late: Vec<_> = samples
        .iter()
        .filter(|s| s.sent > applied_at && drained(&s.served_by))
        .collect();
    assert!(
        late.is_empty(),
        "{} requests reached sh-a after the drain applied",
        late.len()
    );
    assert!(
        samples
            .iter()
            .any(|s| s.sent < put_at && drained(&s.served_by)),
        "sh-a served before"
    );
    assert!(
        samples.iter().filter(|s| s.sent > applied_at).count() > 50,
        "load continued after the drain"
    );
    let last_to_drained = samples
        .iter()
        .filter(|s| drained(&s.served_by))
        .map(|s| s.sent)
        .max()
        .unwrap();
    eprintln!(
        "drain: {} requests, all 200; key write -> applied (seen in /status) {:?}; key write -> last request sent to sh-a {:?}",
        samples.len(),
        applied_at - put_at,
        last_to_drained.saturating_duration_since(put_at)
    );
    let st = gw.status().await;
    assert_eq!(st["dcs"]["sh-a"], "drained");
    let gslb = client()
        .get(gw.admin_url("/gslb/dc/sh-a"))
        .send()
        .await
        .unwrap();
    assert_eq!(gslb.status(), 503);

    // A drain moves requests, not tokens: a client's token is kept (it
    // records the user's shard and region unit, neither of which a drain
    // changes), and the request is served by the unit serving in sh-1's place.
    let keys = unitgate_tests::gateway::test_keyring();
    let held =
        unit_router::RouteToken::new(Some(60), "bj-1", first, i64::MAX / 2, &keys).encode(&keys);
    let (by, tok) = token_after(&gw, &keys, held.clone()).await;
    assert_eq!((by.as_str(), tok), ("bj-1", None));

    // The gateway registered under gateways/<id> with the applied epoch.
    let mut c = etcd.client().await.unwrap();
    let reg = c
        .get(
            "/unitgate/gateways/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    assert_eq!(reg.kvs().len(), 1);

    // Undrain brings traffic back home.
    etcdctl(&etcd, &["del", "/unitgate/drain/dc/sh-a"]);
    eventually!(
        Duration::from_secs(5),
        served(&gw, "60").await.1 == "sh-1",
        "sh-1 serves again"
    );
    // ...and the same token now comes home with it, still unchanged.
    let (by, tok) = token_after(&gw, &keys, held).await;
    assert_eq!((by.as_str(), tok), ("sh-1", None));
    assert_eq!(
        client()
            .get(gw.admin_url("/gslb/dc/sh-a"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_stopped_keeps_routing_and_a_restart_uses_last_known_good() {
    let mut etcd = Etcd::start().await.unwrap();
    let units = Units::start().await;
    let kv = config_center::kv::parse_document(&units.topology(&[]), "t").unwrap();
    etcd.put_all(&kv).await.unwrap();
    let rev = etcd.put("drain/unit/sh-2", "{}").await.unwrap();
    let args = GatewayArgs {
        etcd: Some(etcd.endpoint()),
        region: Some("cn-north".into()),
        dc: Some("bj-a".into()),
        ..GatewayArgs::default()
    };
    let gw = Gateway::start(Path::new(BIN), args.clone()).await.unwrap();
    eventually!(Duration::from_secs(10), gw.epoch().await >= rev, "applied");
    assert_eq!(served(&gw, "99").await, (200, "bj-2".to_owned()));

    etcd.stop();
    eventually!(
        Duration::from_secs(15),
        gw.status().await["config_center"]["connected"] == false,
        "disconnection visible in /status"
    );
    let m = gw.admin("/metrics").await.1;
    assert!(m.contains("unitgate_config_connected 0"), "{m}");
    for (user, unit) in [("60", "sh-1"), ("99", "bj-2"), ("3", "bj-1")] {
        assert_eq!(
            served(&gw, user).await,
            (200, unit.to_owned()),
            "user {user}"
        );
    }

    // A restarted gateway, etcd still down, serves from its last-known-good
    // file: the snapshot it had applied (its own registration made one
    // after `rev`).
    let applied = gw.epoch().await;
    assert!(applied >= rev);
    let state = gw.kill();
    let gw = Gateway::start_in(Path::new(BIN), args, state)
        .await
        .unwrap();
    assert_eq!(gw.epoch().await, applied);
    assert_eq!(
        gw.status().await["config_center"]["origin"],
        "last-known-good"
    );
    assert_eq!(served(&gw, "99").await, (200, "bj-2".to_owned()));

    // etcd returns with a change made meanwhile; the gateway catches up.
    etcd.restart().await.unwrap();
    let undrained = etcd.delete("drain/unit/sh-2").await.unwrap();
    eventually!(
        Duration::from_secs(20),
        gw.epoch().await >= undrained,
        "caught up"
    );
    assert_eq!(served(&gw, "99").await, (200, "sh-2".to_owned()));
}
