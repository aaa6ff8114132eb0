//! The locked admin listener: with `admin_token_file`, everything but
//! `/healthz`, `/readyz` and `/gslb/dc/<dc>` needs `Authorization: Bearer`
//! with a token of the file; the file rotates without a restart; an admin
//! listener other hosts reach needs a token or `admin_insecure`.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use unitgate_tests::eventually;
use unitgate_tests::gateway::Units;

const FIRST: &str = "first-admin-token-0123456789abcdef";
const SECOND: &str = "second-admin-token-0123456789abcdef";

/// The status of `GET path` on the admin listener, with `token` if given,
/// and the answer's text.
async fn get(admin: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let line = format!("GET {path} HTTP/1.1");
    let auth = token.map(|t| format!("authorization: Bearer {t}"));
    let mut head = vec![line.as_str(), "host: admin"];
    head.extend(auth.as_deref());
    common::raw(admin, &head).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_listed_bearer_token_opens_the_admin_endpoints_and_tokens_rotate() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("admin-tokens");
    std::fs::write(&tokens, format!("# ops\n{FIRST}\n")).unwrap();
    let units = Units::start().await;
    let access = dir.path().join("access.log");
    let config = format!(
        "admin_token_file = {:?}\naccess_log = {:?}\n",
        tokens.display().to_string(),
        access.display().to_string()
    );
    let gw = common::start_with(units.topology(&[]), dir.path(), &config).await;
    let admin = gw.admin.to_string();

    // Open to balancers and DNS checkers.
    for path in ["/healthz", "/readyz", "/gslb/dc/bj-a"] {
        assert_eq!(get(&admin, path, None).await.0, 200, "{path}");
    }
    // Everything else is locked, unknown paths too (no 404 to probe with).
    for path in ["/status", "/metrics", "/", "/no-such-endpoint"] {
        let (status, text) = get(&admin, path, None).await;
        assert_eq!(status, 401, "{path}: {text}");
        assert!(text.contains("www-authenticate: Bearer"), "{text}");
        assert!(text.contains(r#""error":"unauthorized""#), "{text}");
        assert_eq!(get(&admin, path, Some(SECOND)).await.0, 401, "{path}");
    }
    let (status, text) = get(&admin, "/status", Some(FIRST)).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"units\""), "{text}");
    let (status, text) = get(&admin, "/metrics", Some(FIRST)).await;
    assert_eq!(status, 200);
    assert!(text.contains("unitgate_build_info"), "{text}");
    assert_eq!(get(&admin, "/", Some(FIRST)).await.0, 200);
    let (status, _) = common::raw(
        &admin,
        &[
            "GET /status HTTP/1.1",
            "host: admin",
            &format!("authorization: Basic {FIRST}"),
        ],
    )
    .await;
    assert_eq!(status, 401);

    // Rotation with an overlap: both tokens, then only the new one.
    std::fs::write(&tokens, format!("{FIRST}\n{SECOND}\n")).unwrap();
    eventually!(
        Duration::from_secs(5),
        get(&admin, "/status", Some(SECOND)).await.0 == 200,
        "the second token is taken"
    );
    assert_eq!(get(&admin, "/status", Some(FIRST)).await.0, 200);
    std::fs::write(&tokens, format!("{SECOND}\n")).unwrap();
    eventually!(
        Duration::from_secs(5),
        get(&admin, "/status", Some(FIRST)).await.0 == 401,
        "the first token is dropped"
    );
    // A file that does not load keeps the tokens in force.
    std::fs::write(&tokens, "too-short\n").unwrap();
    gw.signal("HUP");
    eventually!(
        Duration::from_secs(5),
        gw.log_tail().contains("admin tokens not reloaded"),
        "the bad file is logged"
    );
    assert_eq!(get(&admin, "/status", Some(SECOND)).await.0, 200);
    assert!(!gw.log_tail().contains(SECOND), "a token was logged");
    // The refusals are in the access log with their error code.
    let refused = || {
        std::fs::read_to_string(&access)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|l| {
                l["listener"] == "admin"
                    && l["status"] == 401
                    && l["error"] == "unauthorized"
                    && l["path"] == "/status"
            })
    };
    eventually!(
        Duration::from_secs(5),
        refused(),
        "a 401 line in the access log"
    );
}

#[test]
fn an_admin_listener_other_hosts_reach_needs_a_token_or_admin_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let topology = dir.path().join("t.yaml");
    std::fs::copy(unitgate_tests::sample_path(), &topology).unwrap();
    // Refused while the configuration is read: nothing is bound.
    let out = Command::new(common::BIN)
        .args(["--topology-file", topology.to_str().unwrap()])
        .args(["--admin-listen", "0.0.0.0:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--admin-listen: 0.0.0.0:1 is reachable from other hosts")
            && err.contains("admin_token_file")
            && err.contains("admin_insecure"),
        "{err}"
    );
    // A token file that holds no token is refused at start.
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "# nothing yet\n").unwrap();
    let port = || format!("127.0.0.1:{}", unitgate_tests::free_port());
    let out = Command::new(common::BIN)
        .args(["--topology-file", topology.to_str().unwrap()])
        .args(["--admin-listen", &port(), "--listen", &port()])
        .args(["--internal-listen", &port()])
        .args(["--admin-token-file", empty.to_str().unwrap()])
        .arg("--secrets")
        .arg(unitgate_tests::gateway::secrets_path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("admin_token_file") && err.contains("holds no token"),
        "{err}"
    );
}
