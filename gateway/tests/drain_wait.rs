//! Drains an operator can wait for: two real gateways on a real etcd,
//! `unitctl drain --wait` and `unitctl undrain --wait` as real processes.
//! With one gateway paused (SIGSTOP) the wait times out with exit 3 naming
//! it; once it runs again (SIGCONT) the wait succeeds. `unitctl status`
//! judges the paused gateway behind after an undrain (a delete, which moves
//! no key's revision).
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use unitgate_tests::gateway::{Gateway, GatewayArgs, Units};
use unitgate_tests::{eventually, Etcd};

/// `unitctl`, built beside the gateway (`cargo test --workspace` builds it).
fn unitctl_bin() -> PathBuf {
    let bin = Path::new(common::BIN).with_file_name("unitctl");
    assert!(
        bin.exists(),
        "{} missing: build it (cargo build -p unitctl)",
        bin.display()
    );
    bin
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
    took: Duration,
}

fn unitctl(etcd: &Etcd, args: &[&str]) -> Out {
    let started = Instant::now();
    let o = Command::new(unitctl_bin())
        .env("UNITGATE_ETCD", etcd.endpoint())
        .args(args)
        .output()
        .expect("run unitctl");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        took: started.elapsed(),
    }
}

async fn gateway(etcd: &Etcd, dc: &str) -> Gateway {
    let args = GatewayArgs {
        etcd: Some(etcd.endpoint()),
        region: Some("cn-north".into()),
        dc: Some(dc.into()),
        ..GatewayArgs::default()
    };
    Gateway::start(Path::new(common::BIN), args).await.unwrap()
}

/// The gateway's id as registered (the harness names it by its port).
fn id(gw: &Gateway) -> String {
    format!("test-gw-{}", common::public(gw).rsplit(':').next().unwrap())
}

/// `unitctl drain dc sh-a --wait --timeout <timeout>`.
fn drain_sh_a(etcd: &Etcd, timeout: &str) -> Out {
    unitctl(
        etcd,
        &[
            "drain",
            "dc",
            "sh-a",
            "--reason",
            "test",
            "--wait",
            "--timeout",
            timeout,
        ],
    )
}

/// Each registered gateway's `state` in `unitctl status -o json`.
fn states(etcd: &Etcd) -> Vec<(String, String)> {
    let out = unitctl(etcd, &["status", "-o", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    v["gateways"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["id"].as_str().unwrap().to_owned(),
                g["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_and_undrain_wait_for_every_gateway_and_name_the_one_that_lags() {
    let etcd = Etcd::start().await.unwrap();
    let units = Units::start().await;
    let kv = config_center::kv::parse_document(&units.topology(&[]), "t").unwrap();
    etcd.put_all(&kv).await.unwrap();
    let a = gateway(&etcd, "bj-a").await;
    let b = gateway(&etcd, "sh-a").await;
    let (ida, idb) = (id(&a), id(&b));
    eventually!(
        Duration::from_secs(10),
        states(&etcd).len() == 2,
        "both registered"
    );

    // Both running: the wait returns once both applied the drain.
    let out = unitctl(
        &etcd,
        &["drain", "dc", "sh-a", "--reason", "test", "--wait"],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("2/2 gateways applied"),
        "{}",
        out.stderr
    );
    assert!(out.took < Duration::from_secs(10), "took {:?}", out.took);
    println!("drain --wait, two gateways: {:?}", out.took);
    let out = unitctl(&etcd, &["undrain", "dc", "sh-a", "--wait"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    println!("undrain --wait, two gateways: {:?}", out.took);

    // One paused: the drain is written, the wait times out naming it.
    b.signal("STOP");
    let out = drain_sh_a(&etcd, "2s");
    b.signal("CONT");
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(&idb) && !out.stderr.contains(&ida),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("1/2 gateways applied"),
        "{}",
        out.stderr
    );
    println!(
        "drain --wait --timeout 2s, one gateway paused: exit 3 after {:?}",
        out.took
    );
    // Running again, it catches up: the same drain waited for succeeds.
    let out = drain_sh_a(&etcd, "20s");
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);

    // The same for an undrain, a delete: the paused gateway is not up to
    // date in status although no key moved.
    b.signal("STOP");
    let out = unitctl(
        &etcd,
        &["undrain", "dc", "sh-a", "--wait", "--timeout", "1s"],
    );
    let seen = states(&etcd);
    b.signal("CONT");
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains(&idb), "{}", out.stderr);
    let of = |id: &str| seen.iter().find(|(i, _)| i == id).map(|(_, s)| s.clone());
    assert_eq!(of(&ida).as_deref(), Some("up_to_date"), "{seen:?}");
    assert!(
        matches!(of(&idb).as_deref(), Some("behind" | "gone")),
        "{seen:?}"
    );
    // Once it runs again, waiting on the undrain (already written) succeeds.
    let out = unitctl(
        &etcd,
        &["undrain", "dc", "sh-a", "--wait", "--timeout", "20s"],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("is not drained"), "{}", out.stdout);
    eventually!(
        Duration::from_secs(10),
        states(&etcd).iter().all(|(_, s)| s == "up_to_date"),
        "both up to date again"
    );
}
