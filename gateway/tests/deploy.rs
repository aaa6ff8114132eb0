//! deploy/ against the gateway it deploys: every metric the Grafana
//! dashboard and the alert rules use is one a running gateway exports (a
//! renamed metric fails here), and the configuration files of the
//! Kubernetes base and the systemd host are ones the gateway reads. The
//! files themselves are checked with kubectl, kubernetes-validate,
//! promtool and systemd-analyze by `deploy/check`.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use unitgate::config::{read_file, Config, Overrides, TopologySource};
use unitgate_tests::gateway::Units;
use unitgate_tests::workspace;

/// Every `unitgate_*` and `process_*` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for prefix in ["unitgate_", "process_"] {
        let mut rest = text;
        while let Some(at) = rest.find(prefix) {
            let before = rest[..at].chars().next_back();
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                names.insert(tail[..end].to_owned());
            }
            rest = &tail[end..];
        }
    }
    names
}

/// The families a scrape names (`# TYPE` lines), with a histogram's
/// series names.
fn exported(scrape: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in scrape.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        names.insert(name.to_owned());
        if kind == "histogram" {
            for s in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{s}"));
            }
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_the_alerts_use_is_exported() {
    let dir = tempfile::tempdir().unwrap();
    let units = Units::start().await;
    let gw = common::start(units.topology(&[]), dir.path()).await;
    let scrape = gw.admin("/metrics").await.1;
    let have = exported(&scrape);
    assert!(have.contains("unitgate_requests_total"), "{scrape}");

    let monitoring = workspace().join("deploy/monitoring");
    for file in ["grafana-dashboard.json", "alerts.yml", "alerts_test.yml"] {
        let text = std::fs::read_to_string(monitoring.join(file)).unwrap();
        let used = metric_names(&text);
        assert!(used.len() >= 5, "{file} names only {used:?}");
        let missing: Vec<_> = used.difference(&have).collect();
        assert!(
            missing.is_empty(),
            "{file} uses metrics the gateway does not export: {missing:?}"
        );
    }
    // The scan finds what a query names, and only that.
    assert_eq!(
        metric_names("rate(unitgate_shed_total{x=\"a\"}[5m]) / my_unitgate_x"),
        BTreeSet::from(["unitgate_shed_total".to_owned()])
    );
}

#[test]
fn the_kubernetes_and_systemd_configurations_are_read_by_the_gateway() {
    // Kubernetes: region, dc, id and etcd come from the pod's flags.
    let base = workspace().join("deploy/kubernetes/base/unitgate.toml");
    let o = Overrides {
        etcd: Some(vec!["https://etcd-client.unitgate.svc:2379".into()]),
        region: Some("cn-north".into()),
        dc: Some("bj-a".into()),
        id: Some("unitgate-7d9f-x2".into()),
        ..Overrides::default()
    };
    let c = Config::resolve(read_file(&base).unwrap(), o).unwrap();
    assert!(c.admin_lock.token_file.is_some());
    assert!(
        matches!(c.topology, TopologySource::Etcd { ref access, .. } if access.user.as_deref() == Some("unitgate"))
    );
    assert_eq!((c.stop.delay.as_secs(), c.stop.grace.as_secs()), (5, 30));
    // The host: everything in the file.
    let host = workspace().join("deploy/systemd/unitgate.toml");
    let c = Config::resolve(read_file(&host).unwrap(), Overrides::default()).unwrap();
    assert_eq!(c.listen.port(), 443);
    assert_eq!(
        c.stop.upgrade_sock.as_deref(),
        Some(std::path::Path::new("/var/lib/unitgate/upgrade.sock")),
        "deploy/systemd/unitgate-upgrade waits for this socket"
    );
    let helper =
        std::fs::read_to_string(workspace().join("deploy/systemd/unitgate-upgrade")).unwrap();
    assert!(helper.contains("sock=/var/lib/unitgate/upgrade.sock"));
}
