//! Routing-token and dye keys rotated without a restart, under load: the
//! secrets file is rewritten (k1 -> k1+k2 with k2 active -> k2 alone);
//! tokens and dyes signed with k1 keep working during the overlap, new
//! tokens are signed with k2, no request fails and no token is rejected
//! until k1 is dropped; a file that does not load keeps the keys in force
//! and says why in `/status`; SIGHUP reads the file again and does not
//! stop the gateway.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use unit_router::{Dye, Keyring, Reason, RouteToken};
use unitgate_tests::eventually;
use unitgate_tests::gateway::{client, Gateway, GatewayArgs, Units};

fn key(seed: u8) -> Vec<u8> {
    vec![seed; 32]
}

fn secrets(active: &str, kids: &[(&str, u8)]) -> String {
    let mut s = format!("active = \"{active}\"\n[keys]\n");
    for (kid, seed) in kids {
        s.push_str(&format!("{kid} = \"hex:{}\"\n", hex(&key(*seed))));
    }
    s
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn ring(active: &str, kids: &[(&str, u8)]) -> Keyring {
    let keys: BTreeMap<String, Vec<u8>> = kids
        .iter()
        .map(|(k, s)| ((*k).to_owned(), key(*s)))
        .collect();
    Keyring::new(active, keys).unwrap()
}

/// `/status`'s `keys` (kids only).
async fn keys_status(gw: &Gateway) -> serde_json::Value {
    gw.status().await["keys"].clone()
}

/// `unitgate_routing_tokens_total{result}`.
async fn tokens(gw: &Gateway, result: &str) -> f64 {
    counter(gw, "unitgate_routing_tokens_total", result).await
}

/// `name{result}`, a counter of the gateway's.
async fn counter(gw: &Gateway, name: &str, result: &str) -> f64 {
    let (_, m) = gw.admin("/metrics").await;
    let want = format!("{name}{{result=\"{result}\"}} ");
    m.lines()
        .find_map(|l| l.strip_prefix(want.as_str()))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// A routed GET for user 42 with `cookie`: the status and the new token
/// the gateway set, if any.
async fn get(gw: &Gateway, cookie: Option<&str>) -> (u16, Option<String>) {
    let mut r = client()
        .get(gw.url("/orders/1"))
        .header("host", "api.example.com")
        .header("x-user-id", "42");
    if let Some(c) = cookie {
        r = r.header("cookie", format!("ug_route={c}"));
    }
    let r = r.send().await.unwrap();
    let set = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok()?.strip_prefix("ug_route="))
        .map(|v| v.split(';').next().unwrap_or_default().to_owned())
        .next();
    (r.status().as_u16(), set)
}

/// The unit that served a call with `baggage` (a dye home to sh-1 for
/// shard 60) on the internal listener.
async fn served_dyed(gw: &Gateway, baggage: &str) -> String {
    let r = client()
        .get(gw.internal_url("/orders/9"))
        .header("host", "api.example.com")
        .header("baggage", baggage)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.headers()["x-unit-served-by"].to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_rotate_under_load_without_a_restart_or_a_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secrets.toml");
    std::fs::write(&file, secrets("k1", &[("k1", 1)])).unwrap();
    let units = Units::start().await;
    let topo = dir.path().join("topology.yaml");
    std::fs::write(&topo, units.topology(&[])).unwrap();
    let gw = Gateway::start(
        Path::new(common::BIN),
        GatewayArgs {
            topology_file: Some(topo),
            region: Some("cn-north".into()),
            dc: Some("bj-a".into()),
            secrets: Some(file.clone()),
            ..GatewayArgs::default()
        },
    )
    .await
    .unwrap();
    let gw_ref = &gw;
    assert_eq!(keys_status(gw_ref).await["active_kid"], "k1");

    // A token and a dye signed with k1.
    let (status, old) = get(gw_ref, None).await;
    assert_eq!(status, 200);
    let old = old.expect("a token issued");
    RouteToken::decode(&old, &ring("k1", &[("k1", 1)]), 0).expect("signed with k1");
    let dye = Dye {
        shard: Some(60),
        home: "sh-1".into(),
        via: "bj-1".into(),
        reason: Reason::Failover,
        hops: 1,
        exp: i64::MAX,
    };
    let old_dye = dye.merge_into(None, &ring("k1", &[("k1", 1)]));
    assert_eq!(served_dyed(gw_ref, &old_dye).await, "sh-1");

    // Load: the old token echoed by 8 clients while the keys rotate.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let url = gw.url("/orders/1");
    let mut load = Vec::new();
    for _ in 0..8 {
        let (stop, sent, failed, url, old) = (
            stop.clone(),
            sent.clone(),
            failed.clone(),
            url.clone(),
            old.clone(),
        );
        load.push(tokio::spawn(async move {
            let c = client();
            for _ in 0..100_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let r = c
                    .get(&url)
                    .header("host", "api.example.com")
                    .header("x-user-id", "42")
                    .header("cookie", format!("ug_route={old}"))
                    .send()
                    .await;
                sent.fetch_add(1, Ordering::Relaxed);
                if !r.is_ok_and(|r| r.status() == 200) {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    // Step 1: k2 added and made active, k1 still accepted.
    std::fs::write(&file, secrets("k2", &[("k1", 1), ("k2", 2)])).unwrap();
    eventually!(
        Duration::from_secs(5),
        keys_status(gw_ref).await["active_kid"] == "k2",
        "k2 active without a restart"
    );
    assert_eq!(
        keys_status(gw_ref).await["accepted_kids"],
        serde_json::json!(["k1", "k2"])
    );
    // New tokens are signed with k2; the old token and dye still work.
    let (_, new) = get(gw_ref, None).await;
    let new = new.expect("a token issued");
    RouteToken::decode(&new, &ring("k2", &[("k2", 2)]), 0).expect("signed with k2");
    assert!(RouteToken::decode(&new, &ring("k1", &[("k1", 1)]), 0).is_err());
    assert_eq!(get(gw_ref, Some(&old)).await.0, 200);
    assert_eq!(
        served_dyed(gw_ref, &old_dye).await,
        "sh-1",
        "a k1 dye during the overlap"
    );

    // A file that does not load keeps the keys in force and says why.
    std::fs::write(&file, "active = \"k9\"\n[keys]\nk9 = \"c2hvcnQ=\"\n").unwrap();
    eventually!(
        Duration::from_secs(5),
        keys_status(gw_ref).await["reload_error"].is_string(),
        "the bad file is reported"
    );
    let ks = keys_status(gw_ref).await;
    assert!(
        ks["reload_error"]
            .as_str()
            .unwrap()
            .contains("shorter than 32 bytes"),
        "{ks}"
    );
    assert_eq!(ks["active_kid"], "k2");
    assert!(
        !ks.to_string().contains(&hex(&key(2))),
        "no key material in /status"
    );

    // SIGHUP reads the file again (fixed meanwhile) and stops nothing;
    // neither do SIGUSR1 and SIGUSR2.
    std::fs::write(&file, secrets("k2", &[("k1", 1), ("k2", 2)])).unwrap();
    gw.signal("HUP");
    gw.signal("USR1");
    gw.signal("USR2");
    let gw_ref = &gw;
    eventually!(
        Duration::from_secs(5),
        keys_status(gw_ref).await["reload_error"].is_null(),
        "the fixed file is in force"
    );
    tokio::time::sleep(Duration::from_millis(300)).await; // load across the SIGHUP
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(sent > 50, "load ran: {sent}");
    assert_eq!(failed, 0, "{failed} of {sent} failed");
    assert_eq!(
        tokens(gw_ref, "rejected").await,
        0.0,
        "no token rejected during the overlap"
    );
    assert_eq!(
        counter(gw_ref, "unitgate_dyes_total", "rejected").await,
        0.0
    );

    // Step 2: k1 dropped: its token is no longer accepted (re-issued with
    // k2), its dye no longer honoured.
    std::fs::write(&file, secrets("k2", &[("k2", 2)])).unwrap();
    eventually!(
        Duration::from_secs(5),
        keys_status(gw_ref).await["accepted_kids"] == serde_json::json!(["k2"]),
        "k1 dropped"
    );
    let (status, reissued) = get(gw_ref, Some(&old)).await;
    assert_eq!(status, 200);
    RouteToken::decode(&reissued.expect("re-issued"), &ring("k2", &[("k2", 2)]), 0).unwrap();
    assert!(tokens(gw_ref, "rejected").await >= 1.0);
    served_dyed(gw_ref, &old_dye).await;
    assert_eq!(
        counter(gw_ref, "unitgate_dyes_total", "rejected").await,
        1.0,
        "a k1 dye after k1 was dropped"
    );
}
