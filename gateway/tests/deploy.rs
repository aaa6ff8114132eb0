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
    assert!(helper.contains("sock=${UNITGATE_UPGRADE_SOCK:-/var/lib/unitgate/upgrade.sock}"));
}

/// `deploy/systemd/unitgate-upgrade` as systemd runs it for `systemctl
/// reload`: MAINPID in its environment, NOTIFY_SOCKET where systemd
/// listens (here a datagram socket of the test's). A new process takes
/// the running gateway's sockets, the old one exits, and systemd is told
/// the new main PID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_systemd_reload_helper_hands_over_and_names_the_new_main_pid() {
    use std::os::unix::net::UnixDatagram;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    assert!(
        Command::new("systemd-notify")
            .arg("--help")
            .output()
            .is_ok(),
        "systemd-notify missing: scripts/install-deps --deploy"
    );
    let dir = tempfile::tempdir().unwrap();
    let units = Units::start().await;
    let topology = dir.path().join("topology.yaml");
    std::fs::write(&topology, units.topology(&[])).unwrap();
    let port = || format!("127.0.0.1:{}", unitgate_tests::free_port());
    let (public, admin) = (port(), port());
    let config = dir.path().join("unitgate.toml");
    std::fs::write(
        &config,
        format!(
            "listen = {public:?}\ninternal_listen = {:?}\nadmin_listen = {admin:?}\n\
             topology_file = {:?}\nsecrets = {:?}\nstate_dir = {:?}\nshutdown_delay_s = 0\n\
             region = \"cn-north\"\ndc = \"bj-a\"\naccess_log = \"off\"\n",
            port(),
            topology.display().to_string(),
            unitgate_tests::gateway::secrets_path()
                .display()
                .to_string(),
            dir.path().display().to_string(),
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("old.log")).unwrap();
    let mut old = Command::new(common::BIN)
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let ready = |http: reqwest::Client, admin: String| async move {
        http.get(format!("http://{admin}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    };
    unitgate_tests::eventually!(
        Duration::from_secs(20),
        ready(http.clone(), admin.clone()).await,
        "the first gateway is ready"
    );

    let notify = dir.path().join("notify.sock");
    let systemd = UnixDatagram::bind(&notify).unwrap();
    systemd
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // systemd's side: read every message (systemd-notify then sends a
    // BARRIER=1 with a file descriptor and waits until it is closed, which
    // reading the datagram without taking the descriptor does).
    let (tx, messages) = std::sync::mpsc::channel();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reading = stop.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while !reading.load(std::sync::atomic::Ordering::SeqCst) {
            if let Ok(n) = systemd.recv(&mut buf) {
                let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    });
    // Its output to a file: the new gateway it starts keeps the stream.
    let helper_log = dir.path().join("helper.log");
    let status = Command::new(workspace().join("deploy/systemd/unitgate-upgrade"))
        .arg(&config)
        .env("MAINPID", old.id().to_string())
        .env("NOTIFY_SOCKET", &notify)
        .env("UNITGATE_BIN", common::BIN)
        .env("UNITGATE_UPGRADE_SOCK", dir.path().join("upgrade.sock"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&helper_log).unwrap())
        .status()
        .unwrap();
    let said = std::fs::read_to_string(&helper_log).unwrap_or_default();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    reader.join().unwrap();
    let messages: Vec<String> = messages.try_iter().collect();
    let new: i32 = messages
        .iter()
        .find_map(|m| m.trim().strip_prefix("MAINPID=")?.parse().ok())
        .unwrap_or_else(|| panic!("no MAINPID message: {messages:?}; {said}"));
    // The new gateway is no child of this test: stopped however it ends.
    struct Stop(i32);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = Command::new("kill").arg(self.0.to_string()).status();
        }
    }
    let _new = Stop(new);
    assert!(status.success(), "{said}");
    assert_ne!(new as u32, old.id());
    // The old process exits 0; the new one answers on the same listeners.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = old.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the old gateway did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "old gateway: {status}");
    assert!(ready(http.clone(), admin.clone()).await, "{said}");
    let (code, _) = common::raw(
        &public,
        &[
            "GET /orders/7 HTTP/1.1",
            "host: api.example.com",
            "x-user-id: 7",
        ],
    )
    .await;
    assert_eq!(code, 200);
}
