//! etcd over TLS with client certificates and user auth: a real etcd
//! serving `https://` that requires client certificates signed by a CA the
//! test makes, with user auth on (root and a password). A gateway and
//! `unitctl` (flags, then the environment) work against it; a wrong CA, a
//! wrong password, a missing client certificate and an `https://` endpoint
//! without TLS settings are each refused at start with the problem named.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use unitgate::tls::pki::LocalCa;
use unitgate_tests::gateway::{secrets_path, Gateway, GatewayArgs, Units};
use unitgate_tests::{free_port, Etcd, EtcdTls};

const PASSWORD: &str = "gateway-password-for-the-test";
const OPS_PASSWORD: &str = "ops-password-for-the-test";

/// A CA, etcd's server pair, a client pair, and a second CA nobody uses.
struct Pki {
    tls: EtcdTls,
    other_ca: PathBuf,
    password_file: PathBuf,
    wrong_password_file: PathBuf,
}

fn pki(dir: &Path) -> Pki {
    let ca = LocalCa::new("etcd test CA", 2).unwrap();
    let (server_cert, server_key) = ca
        .issue_into(dir, "etcd", &["127.0.0.1", "localhost"], 2)
        .unwrap();
    // A common name that is no etcd user: the certificate alone reaches
    // nothing once auth is on.
    let (client_cert, client_key) = ca.issue_into(dir, "client", &["client.test"], 2).unwrap();
    let ca_file = dir.join("ca.crt");
    std::fs::write(&ca_file, ca.cert_pem().unwrap()).unwrap();
    let other_ca = dir.join("other-ca.crt");
    let other = LocalCa::new("another CA", 2).unwrap();
    std::fs::write(&other_ca, other.cert_pem().unwrap()).unwrap();
    let password_file = dir.join("password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let wrong_password_file = dir.join("wrong-password");
    std::fs::write(&wrong_password_file, "not-the-password\n").unwrap();
    Pki {
        tls: EtcdTls {
            ca: ca_file,
            server_cert,
            server_key,
            client_cert,
            client_key,
        },
        other_ca,
        password_file,
        wrong_password_file,
    }
}

fn unitctl_bin() -> PathBuf {
    Path::new(common::BIN).with_file_name("unitctl")
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn unitctl(args: &[&str], envs: &[(&str, &str)]) -> Out {
    let mut cmd = Command::new(unitctl_bin());
    for v in [
        "UNITGATE_ETCD",
        "UNITCTL_ETCD_CA_FILE",
        "UNITCTL_ETCD_CERT_FILE",
        "UNITCTL_ETCD_KEY_FILE",
        "UNITCTL_ETCD_USER",
        "UNITCTL_ETCD_PASSWORD_FILE",
        "UNITCTL_ETCD_PASSWORD",
    ] {
        cmd.env_remove(v);
    }
    let o = cmd.args(args).envs(envs.iter().copied()).output().unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// The gateway's TLS and auth flags for this etcd.
fn access_flags(p: &Pki, ca: &Path, password: &Path) -> Vec<String> {
    access_flags_as(p, ca, password, "root")
}

fn access_flags_as(p: &Pki, ca: &Path, password: &Path, user: &str) -> Vec<String> {
    [
        ("--etcd-ca-file", ca),
        ("--etcd-cert-file", &p.tls.client_cert),
        ("--etcd-key-file", &p.tls.client_key),
        ("--etcd-password-file", password),
    ]
    .iter()
    .flat_map(|(f, v)| [f.to_string(), s(v)])
    .chain(["--etcd-user".to_owned(), user.to_owned()])
    .collect()
}

/// Run the gateway until it exits (at most 20 s): its exit code and
/// stderr. For starts that must fail.
fn gateway_refused(endpoint: &str, flags: &[String]) -> (i32, String) {
    gateway_refused_with(endpoint, flags, &[])
}

fn gateway_refused_with(endpoint: &str, flags: &[String], envs: &[(&str, &str)]) -> (i32, String) {
    let state = tempfile::tempdir().unwrap();
    let mut child = spawn_gateway(endpoint, flags, state.path(), Stdio::piped(), envs);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            return (status.code().unwrap_or(-1), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
            panic!("the gateway kept running with {flags:?}: {err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn_gateway(
    endpoint: &str,
    flags: &[String],
    state: &Path,
    stderr: Stdio,
    envs: &[(&str, &str)],
) -> std::process::Child {
    Command::new(common::BIN)
        .envs(envs.iter().copied())
        .args(["--etcd", endpoint, "--region", "cn-north", "--dc", "bj-a"])
        .arg("--secrets")
        .arg(secrets_path())
        .arg("--state-dir")
        .arg(state)
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--internal-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--admin-listen", &format!("127.0.0.1:{}", free_port())])
        .args(flags)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_and_unitctl_work_against_etcd_with_client_certificates_and_users() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let etcd = Etcd::start_tls(p.tls.clone()).await.unwrap();
    let units = Units::start().await;
    let topology = dir.path().join("topology.yaml");
    std::fs::write(&topology, units.topology(&[])).unwrap();
    let endpoint = etcd.endpoint();

    // unitctl with flags: auth turned on, the gateways' user `unitgate`
    // (read the prefix, write its registrations) and the operators'
    // `unitgate-ops` (read and write the prefix). Twice: the second run
    // adds nothing and sets the passwords again.
    let tls = [
        "--etcd-ca-file",
        &s(&p.tls.ca),
        "--etcd-cert-file",
        &s(&p.tls.client_cert),
        "--etcd-key-file",
        &s(&p.tls.client_key),
    ];
    let (root_file, ops_file) = (dir.path().join("root-password"), dir.path().join("ops"));
    std::fs::write(&root_file, "the-root-password\n").unwrap();
    std::fs::write(&ops_file, format!("{OPS_PASSWORD}\n")).unwrap();
    let mut setup = vec!["--etcd", endpoint.as_str()];
    setup.extend(tls);
    let pw = s(&p.password_file);
    setup.extend([
        "etcd-setup",
        "--root-password-file",
        root_file.to_str().unwrap(),
        "--gateway-password-file",
        &pw,
        "--ops-password-file",
        ops_file.to_str().unwrap(),
    ]);
    let out = unitctl(&setup, &[]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("user root added") && out.stdout.contains("auth on"),
        "{}",
        out.stdout
    );
    let out = unitctl(&setup, &[]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("user unitgate: password set") && !out.stdout.contains("added"),
        "{}",
        out.stdout
    );

    // As an operator, the password from the environment.
    let as_user = |user: &'static str, args: &[&str]| {
        let mut v = vec!["--etcd", endpoint.as_str(), "--etcd-user", user];
        v.extend(tls);
        v.extend(args);
        v.iter().map(|a| a.to_string()).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>, password: &str| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        unitctl(&args, &[("UNITCTL_ETCD_PASSWORD", password)])
    };
    let apply = ["apply", topology.to_str().unwrap()];
    let out = run(as_user("unitgate-ops", &apply), OPS_PASSWORD);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    // The gateways' user may not change the topology, and nobody reads
    // outside the prefix.
    let mut changed = std::fs::read_to_string(&topology).unwrap();
    changed.push_str(
        "\nroutes/extra: {hosts: [x.example], path_prefix: /x, service: orders, policy: shard}\n",
    );
    let changed_file = dir.path().join("changed.yaml");
    std::fs::write(&changed_file, changed).unwrap();
    let out = run(
        as_user("unitgate", &["apply", changed_file.to_str().unwrap()]),
        PASSWORD,
    );
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(out.stderr.contains("permission denied"), "{}", out.stderr);
    let out = run(
        as_user("unitgate-ops", &["--prefix", "/elsewhere", "status"]),
        OPS_PASSWORD,
    );
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("permission denied"), "{}", out.stderr);
    // The certificate alone (no user) reaches nothing.
    let mut bare = vec!["--etcd", endpoint.as_str()];
    bare.extend(tls);
    bare.push("status");
    let out = unitctl(&bare, &[]);
    assert_ne!(out.code, 0, "{}", out.stdout);

    // The gateway, every setting a flag, the password a file.
    let args = GatewayArgs {
        etcd: Some(endpoint.clone()),
        region: Some("cn-north".into()),
        dc: Some("bj-a".into()),
        extra: access_flags_as(&p, &p.tls.ca, &p.password_file, "unitgate"),
        ..GatewayArgs::default()
    };
    let gw = Gateway::start(Path::new(common::BIN), args).await.unwrap();
    let (status, body) = common::raw(
        &common::public(&gw),
        &[
            "GET /orders/7 HTTP/1.1",
            "host: api.example.com",
            "x-user-id: 7",
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // unitctl from the environment only: the watch and the registration
    // of the gateway run over TLS with auth (drain --wait needs both).
    let ca = s(&p.tls.ca);
    let (cert, key) = (s(&p.tls.client_cert), s(&p.tls.client_key));
    let ops = s(&ops_file);
    let env = [
        ("UNITGATE_ETCD", endpoint.as_str()),
        ("UNITCTL_ETCD_CA_FILE", ca.as_str()),
        ("UNITCTL_ETCD_CERT_FILE", cert.as_str()),
        ("UNITCTL_ETCD_KEY_FILE", key.as_str()),
        ("UNITCTL_ETCD_USER", "unitgate-ops"),
        ("UNITCTL_ETCD_PASSWORD_FILE", ops.as_str()),
    ];
    let out = unitctl(
        &[
            "drain",
            "dc",
            "sh-a",
            "--reason",
            "test",
            "--wait",
            "--timeout",
            "20s",
        ],
        &env,
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("1/1 gateways applied"),
        "{}",
        out.stderr
    );
    let out = unitctl(&["status", "-o", "json"], &env);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["gateways"][0]["state"], "up_to_date", "{v}");

    // The password is in no log line.
    assert!(!gw.log_tail().contains(PASSWORD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_password_or_certificate_is_a_clear_error_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let mut etcd = Etcd::start_tls(p.tls.clone()).await.unwrap();
    etcd.enable_auth(PASSWORD).await.unwrap();
    let endpoint = etcd.endpoint();

    // A CA that did not sign etcd's certificate.
    let (code, err) = gateway_refused(&endpoint, &access_flags(&p, &p.other_ca, &p.password_file));
    assert_ne!(code, 0);
    assert!(
        err.contains("refused the connection") && err.contains("certificate verify failed"),
        "{err}"
    );
    // Only etcd_ca_file is trusted, not the system's store: etcd's CA
    // there (OpenSSL's SSL_CERT_FILE) does not make a wrong etcd_ca_file
    // pass.
    let ca = s(&p.tls.ca);
    let (code, err) = gateway_refused_with(
        &endpoint,
        &access_flags(&p, &p.other_ca, &p.password_file),
        &[
            ("SSL_CERT_FILE", ca.as_str()),
            ("SSL_CERT_DIR", "/nonexistent"),
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("certificate verify failed"), "{err}");
    // The wrong password.
    let (code, err) = gateway_refused(
        &endpoint,
        &access_flags(&p, &p.tls.ca, &p.wrong_password_file),
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("refused the connection") && err.contains("authentication failed"),
        "{err}"
    );
    assert!(!err.contains("not-the-password"), "{err}");
    // No client certificate: etcd ends the handshake.
    let (code, err) = gateway_refused(
        &endpoint,
        &[
            "--etcd-ca-file".into(),
            s(&p.tls.ca),
            "--etcd-user".into(),
            "root".into(),
            "--etcd-password-file".into(),
            s(&p.password_file),
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("refused the connection"), "{err}");
    // https:// without TLS settings: refused before any connection.
    let (code, err) = gateway_refused(&endpoint, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("need etcd_ca_file"), "{err}");
    // A key that is not the certificate's.
    let mut flags = access_flags(&p, &p.tls.ca, &p.password_file);
    let at = flags.iter().position(|f| f == "--etcd-key-file").unwrap();
    flags[at + 1] = s(&p.tls.server_key);
    let (code, err) = gateway_refused(&endpoint, &flags);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("etcd_key_file") && err.contains("is not the key"),
        "{err}"
    );

    // unitctl says the same.
    let out = unitctl(
        &["status"],
        &[
            ("UNITGATE_ETCD", endpoint.as_str()),
            ("UNITCTL_ETCD_CA_FILE", &s(&p.tls.ca)),
            ("UNITCTL_ETCD_CERT_FILE", &s(&p.tls.client_cert)),
            ("UNITCTL_ETCD_KEY_FILE", &s(&p.tls.client_key)),
            ("UNITCTL_ETCD_USER", "root"),
            ("UNITCTL_ETCD_PASSWORD", "not-the-password"),
        ],
    );
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("refused the connection")
            && out.stderr.contains("authentication failed"),
        "{}",
        out.stderr
    );
    let out = unitctl(&["--etcd", &endpoint, "status"], &[]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("need etcd_ca_file"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_that_does_not_answer_is_no_start_up_error() {
    // Accepts and never answers (no TLS handshake): down, not refusing.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("https://{}", hole.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = hole.accept().await {
            conns.push(c);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let log = dir.path().join("gateway.log");
    let flags = access_flags(&p, &p.tls.ca, &p.password_file);
    let stderr = std::fs::File::create(&log).unwrap().into();
    let mut child = spawn_gateway(&endpoint, &flags, dir.path(), stderr, &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let serving = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("unitgate serving") || Instant::now() > deadline {
            break text;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the gateway exited ({status}): {text}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    held.abort();
    assert!(serving.contains("unitgate serving"), "{serving}");
    assert!(
        serving.contains("did not answer") || serving.contains("not reachable"),
        "{serving}"
    );
}
