//! The config center against a real etcd.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use config_center::etcd::{EtcdOptions, EtcdSource};
use config_center::kv::read_document;
use config_center::ConfigCenter;
use unitgate_tests::{eventually, sample_path, Etcd};

fn fast() -> EtcdOptions {
    EtcdOptions {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(2),
        progress_interval: Duration::from_millis(300),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        ..EtcdOptions::default()
    }
}

fn source(etcd: &Etcd) -> EtcdSource {
    EtcdSource::new(vec![etcd.endpoint()], "/unitgate", fast())
}

fn drained(c: &ConfigCenter, unit: &str) -> bool {
    c.current().is_some_and(|s| {
        let t = &s.topology;
        t.unit_id(unit).is_some_and(|u| t.is_drained(u, c.now()))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_key_is_applied_by_a_running_subscriber_within_a_second() {
    let etcd = Etcd::start().await.unwrap();
    let rev = etcd
        .put_all(&read_document(&sample_path()).unwrap())
        .await
        .unwrap();
    let c = ConfigCenter::new(None);
    let task = tokio::spawn(source(&etcd).run(c.clone()));
    eventually!(
        Duration::from_secs(10),
        c.epoch() == Some(rev),
        "initial list applied"
    );
    eventually!(Duration::from_secs(10), c.status().connected, "connected");

    let mut rx = c.subscribe();
    rx.borrow_and_update();
    let t0 = Instant::now();
    let rev = etcd
        .put("drain/dc/sh-a", r#"{"reason":"test"}"#)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(1), rx.changed())
        .await
        .expect("applied within 1s")
        .unwrap();
    let took = t0.elapsed();
    assert_eq!(c.epoch(), Some(rev));
    assert!(drained(&c, "sh-1") && drained(&c, "sh-2") && !drained(&c, "bj-1"));
    eprintln!("drain key write -> snapshot applied: {took:?}");

    etcd.delete("drain/dc/sh-a").await.unwrap();
    eventually!(
        Duration::from_secs(2),
        !drained(&c, "sh-1"),
        "undrain applied"
    );
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_change_is_rejected_and_the_last_good_stays() {
    let etcd = Etcd::start().await.unwrap();
    let good = etcd
        .put_all(&read_document(&sample_path()).unwrap())
        .await
        .unwrap();
    let c = ConfigCenter::new(None);
    let task = tokio::spawn(source(&etcd).run(c.clone()));
    eventually!(
        Duration::from_secs(10),
        c.epoch() == Some(good),
        "initial list applied"
    );

    etcd.put(
        "shardmap",
        r#"{"ranges":[{"from":0,"to":49,"unit":"bj-1"}]}"#,
    )
    .await
    .unwrap();
    eventually!(
        Duration::from_secs(5),
        c.status().rejected_changes == 1,
        "rejection counted"
    );
    assert_eq!(c.epoch(), Some(good));
    let err = c.status().last_error.unwrap();
    assert!(err.contains("shards 50-99 have no unit"), "{err}");
    // The snapshot in force still routes shard 60 to sh-1.
    let t = &c.current().unwrap().topology;
    assert_eq!(t.shard_owner(60), t.unit_id("sh-1"));

    // A later change that makes the whole valid again is applied.
    let fixed = etcd
        .put(
            "shardmap",
            r#"{"ranges":[{"from":0,"to":49,"unit":"bj-1"},{"from":50,"to":99,"unit":"sh-2"}]}"#,
        )
        .await
        .unwrap();
    eventually!(
        Duration::from_secs(5),
        c.epoch() == Some(fixed),
        "fix applied"
    );
    let t = &c.current().unwrap().topology;
    assert_eq!(t.shard_owner(60), t.unit_id("sh-2"));
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_loses_no_change() {
    let etcd = Etcd::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let first = etcd
        .put_all(&read_document(&sample_path()).unwrap())
        .await
        .unwrap();

    // A watcher that is caught up survives a compaction during its watch.
    let c = ConfigCenter::new(Some(dir.path().into()));
    let task = tokio::spawn(source(&etcd).run(c.clone()));
    eventually!(
        Duration::from_secs(10),
        c.epoch() == Some(first),
        "initial list applied"
    );
    etcd.put("drain/unit/bj-1", "{}").await.unwrap();
    etcd.compact().await.unwrap();
    let r = etcd.put("drain/unit/sh-2", "{}").await.unwrap();
    eventually!(
        Duration::from_secs(5),
        c.epoch() == Some(r),
        "changes around the compaction applied"
    );
    assert!(drained(&c, "bj-1") && drained(&c, "sh-2"));
    assert_eq!(
        c.status().compaction_relists,
        0,
        "a caught-up watch is not disturbed"
    );
    // Abort ends the task at its next await: wait for that, so that the
    // changes below land while no watcher runs.
    task.abort();
    let _ = task.await;

    // While no watcher runs, changes land and the history is compacted past
    // the last-known-good epoch. A new center resumes from that epoch, finds
    // it compacted, re-lists, and ends with every change.
    etcd.delete("drain/unit/bj-1").await.unwrap();
    etcd.put("drain/dc/bj-b", r#"{"reason":"x"}"#)
        .await
        .unwrap();
    etcd.put("quotas/new", r#"{"key":"ip","rate":5,"burst":5}"#)
        .await
        .unwrap();
    let last = etcd.compact().await.unwrap();
    let fresh = ConfigCenter::new(Some(dir.path().into()));
    assert_eq!(fresh.load_last_known_good().unwrap(), Some(r));
    let task = tokio::spawn(source(&etcd).run(fresh.clone()));
    eventually!(
        Duration::from_secs(10),
        fresh.epoch() == Some(last),
        "re-listed after compaction"
    );
    let snap = fresh.current().unwrap();
    assert!(!drained(&fresh, "bj-1"));
    assert!(drained(&fresh, "sh-2") && drained(&fresh, "bj-2"));
    assert!(snap.topology.quotas.contains_key("new"));
    assert_eq!(fresh.status().compaction_relists, 1);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_down_keeps_the_snapshot_and_a_new_center_starts_from_last_known_good() {
    let mut etcd = Etcd::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    etcd.put_all(&read_document(&sample_path()).unwrap())
        .await
        .unwrap();
    let rev = etcd.put("drain/dc/sh-a", "{}").await.unwrap();
    let c = ConfigCenter::new(Some(dir.path().into()));
    let task = tokio::spawn(source(&etcd).run(c.clone()));
    eventually!(
        Duration::from_secs(10),
        c.epoch() == Some(rev) && c.status().connected,
        "applied"
    );

    etcd.stop();
    eventually!(
        Duration::from_secs(10),
        !c.status().connected,
        "disconnection noticed"
    );
    assert_eq!(c.epoch(), Some(rev), "snapshot kept while etcd is down");
    assert!(drained(&c, "sh-1"));
    assert!(c.status().last_error.unwrap().contains("etcd"));

    // A new center (a restarted gateway) with etcd still down.
    let fresh = ConfigCenter::new(Some(dir.path().into()));
    assert_eq!(fresh.load_last_known_good().unwrap(), Some(rev));
    let task2 = tokio::spawn(source(&etcd).run(fresh.clone()));
    assert_eq!(fresh.status().origin.as_deref(), Some("last-known-good"));
    assert!(drained(&fresh, "sh-1"));

    // etcd returns with a change made meanwhile: both catch up.
    etcd.restart().await.unwrap();
    let rev2 = etcd.delete("drain/dc/sh-a").await.unwrap();
    eventually!(
        Duration::from_secs(15),
        fresh.epoch() == Some(rev2) && fresh.status().connected,
        "fresh caught up"
    );
    eventually!(
        Duration::from_secs(15),
        c.epoch() == Some(rev2),
        "old caught up"
    );
    assert!(!drained(&fresh, "sh-1"));
    task.abort();
    task2.abort();
}
