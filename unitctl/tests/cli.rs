//! Every `unitctl` command, as a real process against a real etcd.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use unitgate_tests::{sample_path, Etcd};

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn unitctl(etcd: Option<&Etcd>, args: &[&str]) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_unitctl"));
    cmd.env_remove("UNITGATE_ETCD");
    if let Some(e) = etcd {
        cmd.env("UNITGATE_ETCD", e.endpoint());
    }
    let o = cmd.args(args).output().expect("run unitctl");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn sample() -> String {
    sample_path().display().to_string()
}

#[test]
fn validate_reports_a_summary_or_every_problem() {
    let ok = unitctl(None, &["validate", &sample()]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert!(
        ok.stdout
            .contains("valid: 2 regions, 3 datacenters, 5 units, 3 services, 100 shards, 5 routes"),
        "{}",
        ok.stdout
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("gap.yaml");
    let text = std::fs::read_to_string(sample_path())
        .unwrap()
        .replace(
            "{from: 25, to: 49, unit: bj-2}",
            "{from: 30, to: 49, unit: bj-2}",
        )
        .replace("failover: [bj-1, sh-2]", "failover: [bj-2, sh-2]");
    std::fs::write(&bad, text).unwrap();
    let out = unitctl(None, &["validate", bad.to_str().unwrap()]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("2 problem(s)"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("shardmap: shards 25-29 have no unit (gap)"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("units/bj-2: failover to itself"),
        "{}",
        out.stderr
    );

    let missing = unitctl(None, &["validate", "/nonexistent/t.yaml"]);
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.starts_with("unitctl: "),
        "{}",
        missing.stderr
    );
    assert_eq!(
        missing.stderr.trim().lines().count(),
        1,
        "{}",
        missing.stderr
    );

    let bad_arg = unitctl(None, &["drain", "region", "x"]);
    assert_eq!(bad_arg.code, 2);
    assert!(
        bad_arg.stderr.contains("invalid value 'region'"),
        "{}",
        bad_arg.stderr
    );
}

#[test]
fn unreachable_etcd_is_said_as_such() {
    let port = unitgate_tests::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let file = sample();
    for args in [
        vec!["status"],
        vec!["drain", "dc", "bj-a"],
        vec!["apply", file.as_str()],
    ] {
        let mut a = vec!["--etcd", url.as_str()];
        a.extend(args.iter().copied());
        let out = unitctl(None, &a);
        assert_eq!(out.code, 1);
        assert!(
            out.stderr.contains(&format!("cannot reach etcd at {url}")),
            "{}",
            out.stderr
        );
    }
}

#[test]
fn validate_refuses_issuers_that_cannot_verify_anything() {
    let dir = tempfile::tempdir().unwrap();
    let sample_text = std::fs::read_to_string(sample_path()).unwrap();
    for (from, to, says) in [
        (
            "algs: [RS256]",
            "algs: [RS256, HS256]",
            "auth/issuers/demo: algs: \"HS256\" is a shared-secret algorithm",
        ),
        (
            "kid: demo-1, alg: RS256, use: sig, e: AQAB,",
            "kid: demo-1, alg: RS256, use: sig, e: \"!!\",",
            "auth/issuers/demo: jwks: key \"demo-1\" is not usable",
        ),
        (
            "kid: demo-1,",
            "kid: \"../demo\",",
            "auth/issuers/demo: jwks: kid \"../demo\" is not 1-128",
        ),
    ] {
        assert!(sample_text.contains(from), "{from}");
        let bad = dir.path().join("issuer.yaml");
        std::fs::write(&bad, sample_text.replace(from, to)).unwrap();
        let out = unitctl(None, &["validate", bad.to_str().unwrap()]);
        assert_eq!(out.code, 1, "{to}: {}", out.stdout);
        assert!(out.stderr.contains(says), "{to}: {}", out.stderr);
    }
}

#[test]
fn explain_shows_the_issuer_and_quotas_of_a_request_with_a_token() {
    let file = sample();
    let key = sample_path().with_file_name("demo-jwt-private.pem");
    let token = unitctl(
        None,
        &[
            "token",
            "--key",
            key.to_str().unwrap(),
            "--kid",
            "demo-1",
            "--iss",
            "https://id.demo.unitgate.invalid",
            "--aud",
            "api",
            "--sub",
            "42",
        ],
    );
    assert_eq!(token.code, 0, "{}", token.stderr);
    let jwt = token.stdout.trim();
    let args = [
        "--file",
        &file,
        "explain",
        "--host",
        "api.example.com",
        "--path",
        "/account/me",
        "--user",
        "60",
        "--jwt",
        jwt,
    ];
    let out = unitctl(None, &args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for line in [
        "key       token user \"42\" -> shard 42",
        "home      bj-2 (dc bj-b, region cn-north)",
        "auth      required, issuers demo",
        "token     issuer demo (https://id.demo.unitgate.invalid), user claim sub = \"42\"",
        "quota     per-user: 5 per 1 s, burst 10, by the verified user, across the cluster",
        "quota     per-ip: 50 per 1 s, burst 100, by the client ip, on each gateway",
    ] {
        assert!(out.stdout.contains(line), "{line}\n{}", out.stdout);
    }
    // No token on the required route: the gateway's 401 is named.
    let out = unitctl(None, &args[..args.len() - 2]);
    assert!(
        out.stdout
            .contains("token     none: the gateway answers 401"),
        "{}",
        out.stdout
    );
    // A malformed token is a clear error.
    let mut bad = args;
    bad[args.len() - 1] = "not-a-jwt";
    let out = unitctl(None, &bad);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("--jwt: not a JWT"), "{}", out.stderr);
}

#[test]
fn explain_reads_a_file_without_etcd() {
    let file = sample();
    let args = [
        "--file",
        &file,
        "explain",
        "--host",
        "api.example.com",
        "--path",
        "/orders/9",
        "--user",
        "60",
    ];
    let out = unitctl(None, &args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("home      sh-1 (dc sh-a, region cn-east)"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("reason    shard"), "{}", out.stdout);

    // --ip is located with a real mmdb (GeoIP2 schema).
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("city.mmdb");
    unitgate_tests::geo::write_geoip2(
        &db,
        &[
            ("10.1.0.0/16", "CN", Some("SH")),
            ("10.2.0.0/16", "CN", Some("BJ")),
        ],
    );
    let db = db.to_str().unwrap();
    for (ip, home) in [("10.1.0.9", "sh-1"), ("10.2.0.9", "bj-1")] {
        let args = [
            "--file",
            &file,
            "explain",
            "--host",
            "api.example.com",
            "--path",
            "/profile",
            "--ip",
            ip,
            "--geo-db",
            db,
        ];
        let out = unitctl(None, &args);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(
            out.stdout.contains(&format!("home      {home}")),
            "{}",
            out.stdout
        );
        assert!(out.stdout.contains("reason    region"), "{}", out.stdout);
    }
    let args = [
        "--file",
        &file,
        "explain",
        "--host",
        "api.example.com",
        "--path",
        "/",
        "--ip",
        "10.1.0.9",
    ];
    let no_db = unitctl(None, &args);
    assert_eq!(no_db.code, 1);
    assert!(
        no_db.stderr.contains("--ip needs --geo-db"),
        "{}",
        no_db.stderr
    );

    let none = unitctl(
        None,
        &[
            "--file",
            &file,
            "explain",
            "--host",
            "other.org",
            "--path",
            "/",
        ],
    );
    assert_eq!(none.code, 1, "refused, not a usage error");
    assert!(none.stdout.contains("no route"), "{}", none.stdout);
}

#[test]
fn explain_shows_the_cookie_and_hint_the_gateway_renders() {
    let file = sample();
    let explain = |path: &str, extra: &[&str]| {
        let mut args = vec![
            "--file",
            file.as_str(),
            "explain",
            "--host",
            "api.example.com",
            "--path",
            path,
            "--user",
            "60",
            "--dc",
            "bj-a",
        ];
        args.extend_from_slice(extra);
        let out = unitctl(None, &args);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.stdout
    };
    // Shard route from cn-north: home sh-1 in cn-east, hinted there; the
    // token records the shard and the user's region unit here.
    let out = explain("/orders/1", &[]);
    assert!(
        out.contains("cookie    ug_route=<token shard 60, unit bj-1>; Path=/; Max-Age=86400; HttpOnly; Secure; SameSite=Lax"),
        "{out}"
    );
    assert!(
        out.contains("hint      unit=sh-1; region=cn-east; entry=api-sh.example.com; ttl=300"),
        "{out}"
    );
    // Region route: served in this region, and the cookie says so.
    let out = explain("/profile/1", &["--hint-ttl", "60"]);
    let target = out
        .lines()
        .find_map(|l| l.strip_prefix("target    "))
        .and_then(|l| l.split(' ').next())
        .unwrap()
        .to_owned();
    assert!(target.starts_with("bj-"), "{out}");
    assert!(
        out.contains(&format!("<token shard 60, unit {target}>")),
        "{out}"
    );
    assert!(out.contains("hint      none"), "{out}");
    // The client echoing that token keeps it.
    let keys = unit_router::Keyring::new("k", [("k".to_owned(), vec![7; 32])].into()).unwrap();
    let tok = unit_router::RouteToken::new(Some(60), &target, 1, i64::MAX / 2, &keys);
    let out = explain("/profile/1", &["--token", &tok.encode(&keys)]);
    assert!(out.contains("cookie    keep the client's token"), "{out}");
    // An expired token is ignored, as the gateway ignores it.
    let old = unit_router::RouteToken::new(Some(60), &target, 1, 1, &keys);
    let out = explain("/profile/1", &["--token", &old.encode(&keys)]);
    assert!(out.contains("token     expired: ignored"), "{out}");
    assert!(out.contains("cookie    ug_route=<token"), "{out}");
    // Center traffic gets no token.
    let out = explain("/config", &[]);
    assert!(out.contains("cookie    none"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_drain_status_explain_undrain() {
    let etcd = Etcd::start().await.unwrap();
    let e = Some(&etcd);
    let file = sample();
    // A dry run says what would change and writes nothing.
    let dry = unitctl(e, &["apply", &file, "--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(dry.stdout.contains("+ routes/orders"), "{}", dry.stdout);
    assert!(
        dry.stdout
            .contains("dry run: 20 to add, 0 to change, 0 to remove"),
        "{}",
        dry.stdout
    );
    let none = etcd
        .client()
        .await
        .unwrap()
        .get(
            "/unitgate/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    assert!(none.kvs().is_empty(), "a dry run wrote nothing");
    let out = unitctl(e, &["apply", &file]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("20 put, 0 deleted"), "{}", out.stdout);
    assert!(unitctl(e, &["apply", &file]).stdout.contains("no changes"));
    // A changed key is shown as changed, a pruned one as removed.
    let dir = tempfile::tempdir().unwrap();
    let changed = dir.path().join("changed.yaml");
    let text = std::fs::read_to_string(sample_path()).unwrap();
    let text = text.replace("routes/nearby:", "routes/nearby-renamed:");
    std::fs::write(&changed, text).unwrap();
    let dry = unitctl(
        e,
        &["apply", changed.to_str().unwrap(), "--prune", "--dry-run"],
    );
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(
        dry.stdout.contains("+ routes/nearby-renamed") && dry.stdout.contains("- routes/nearby\n"),
        "{}",
        dry.stdout
    );

    // Before: shard 60 is served at home.
    let explain = [
        "explain",
        "--host",
        "api.example.com",
        "--path",
        "/orders/1",
        "--user",
        "60",
    ];
    let before = unitctl(e, &explain);
    assert!(
        before.stdout.contains("target    sh-1") && before.stdout.contains("reason    shard"),
        "{}",
        before.stdout
    );
    // The same, as JSON for scripts.
    let json = unitctl(e, &[&explain[..], &["-o", "json"]].concat());
    assert_eq!(json.code, 0, "{}", json.stderr);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["reason"], "shard", "{v}");
    assert!(v["target"].as_str().unwrap().starts_with("sh-1"), "{v}");

    let out = unitctl(
        e,
        &[
            "drain",
            "dc",
            "sh-a",
            "--reason",
            "power work",
            "--ttl",
            "2h",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("drained dc sh-a (units: sh-1, sh-2)"),
        "{}",
        out.stdout
    );

    let st = unitctl(e, &["status"]);
    assert_eq!(st.code, 0, "{}", st.stderr);
    assert!(
        st.stdout
            .contains("dc sh-a  DRAINED (reason \"power work\""),
        "{}",
        st.stdout
    );
    assert!(
        st.stdout.contains("unit sh-1     shard  shards 50-74 (25)"),
        "{}",
        st.stdout
    );
    assert!(
        st.stdout.contains("DRAINED by drain/dc/sh-a"),
        "{}",
        st.stdout
    );
    assert!(st.stdout.contains("dc bj-a  active"), "{}", st.stdout);
    let js = unitctl(e, &["status", "-o", "json"]);
    assert_eq!(js.code, 0, "{}", js.stderr);
    let v: serde_json::Value = serde_json::from_str(&js.stdout).unwrap();
    assert_eq!(v["drains"][0]["key"], "drain/dc/sh-a", "{v}");
    assert_eq!(v["drains"][0]["reason"], "power work", "{v}");
    assert_eq!(v["gateways"], serde_json::json!([]), "{v}");

    // Traffic for sh-a's shards moves to the failover units.
    let after = unitctl(e, &explain);
    assert!(after.stdout.contains("home      sh-1"), "{}", after.stdout);
    assert!(
        after
            .stdout
            .contains("target    bj-1 (dc bj-a, region cn-north)"),
        "{}",
        after.stdout
    );
    assert!(after.stdout.contains("reason    drain"), "{}", after.stdout);
    let after99 = unitctl(
        e,
        &[
            "explain",
            "--host",
            "api.example.com",
            "--path",
            "/orders",
            "--user",
            "99",
        ],
    );
    assert!(
        after99.stdout.contains("target    bj-2"),
        "{}",
        after99.stdout
    );

    // A drain that strands shards is refused, naming them, and nothing is written.
    assert_eq!(unitctl(e, &["drain", "unit", "bj-1"]).code, 0);
    let refused = unitctl(e, &["drain", "unit", "bj-2"]);
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains(
            "refusing to write drain/unit/bj-2: it would leave shards 0-99 without a unit"
        ),
        "{}",
        refused.stderr
    );
    let keys = etcd
        .client()
        .await
        .unwrap()
        .get("/unitgate/drain/unit/bj-2", None)
        .await
        .unwrap();
    assert!(keys.kvs().is_empty());
    // --force writes it; gateways keep the last unit active.
    let forced = unitctl(e, &["drain", "unit", "bj-2", "--force"]);
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    let st = unitctl(e, &["status"]);
    assert!(
        st.stdout
            .contains("notice  drain/unit/bj-2: unit bj-2 stays active"),
        "{}",
        st.stdout
    );

    // Unknown names are said as such.
    let unknown = unitctl(e, &["drain", "dc", "mars"]);
    assert_eq!(unknown.code, 1);
    assert!(
        unknown
            .stderr
            .contains("unknown datacenter \"mars\" (known: bj-a, bj-b, sh-a)"),
        "{}",
        unknown.stderr
    );

    for (k, n) in [("unit", "bj-2"), ("unit", "bj-1"), ("dc", "sh-a")] {
        let out = unitctl(e, &["undrain", k, n]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(
            out.stdout.contains(&format!("undrained {n}")),
            "{}",
            out.stdout
        );
    }
    assert!(unitctl(e, &["undrain", "dc", "sh-a"])
        .stdout
        .contains("is not drained"));
    let back = unitctl(e, &explain);
    assert!(
        back.stdout.contains("target    sh-1") && back.stdout.contains("reason    shard"),
        "{}",
        back.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_prune_keeps_runtime_keys_and_refuses_invalid_files() {
    let etcd = Etcd::start().await.unwrap();
    let e = Some(&etcd);
    let file = sample();
    assert_eq!(unitctl(e, &["apply", &file]).code, 0);
    etcd.put(
        "routes/old",
        r#"{"hosts":["old.example.com"],"service":"orders","policy":"shard"}"#,
    )
    .await
    .unwrap();
    assert_eq!(unitctl(e, &["drain", "dc", "sh-a"]).code, 0);

    // Without --prune the extra route stays.
    assert!(unitctl(e, &["apply", &file]).stdout.contains("no changes"));
    let out = unitctl(e, &["apply", &file, "--prune"]);
    assert!(out.stdout.contains("0 put, 1 deleted"), "{}", out.stdout);
    let c = &mut etcd.client().await.unwrap();
    assert!(c
        .get("/unitgate/routes/old", None)
        .await
        .unwrap()
        .kvs()
        .is_empty());
    assert_eq!(
        c.get("/unitgate/drain/dc/sh-a", None)
            .await
            .unwrap()
            .kvs()
            .len(),
        1
    );

    // An invalid file writes nothing.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let text = std::fs::read_to_string(sample_path())
        .unwrap()
        .replace("service: config", "service: nope");
    std::fs::write(&bad, text).unwrap();
    let out = unitctl(e, &["apply", bad.to_str().unwrap()]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("routes/config: unknown service \"nope\""),
        "{}",
        out.stderr
    );
    assert_eq!(
        c.get("/unitgate/routes/config", None)
            .await
            .unwrap()
            .kvs()
            .len(),
        1
    );
}
