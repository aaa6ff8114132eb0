//! A bad configuration exits non-zero with one clear line and serves nothing.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use unitgate_tests::sample_path;

/// Free loopback ports for the three listeners, so that no case depends on
/// a fixed port being free (the cases that fail before binding, `--config`
/// and `--listen`, go as they are).
/// Three different free ports: a port freed by one pick can be the next
/// (two listeners on one port are refused before the error under test).
fn free_listeners() -> Vec<String> {
    let mut ports: Vec<u16> = Vec::new();
    for _ in 0..100 {
        let p = unitgate_tests::free_port();
        if !ports.contains(&p) {
            ports.push(p);
        }
        if ports.len() == 3 {
            break;
        }
    }
    ["--listen", "--internal-listen", "--admin-listen"]
        .into_iter()
        .zip(ports)
        .flat_map(|(flag, port)| [flag.to_owned(), format!("127.0.0.1:{port}")])
        .collect()
}

fn run(args: &[&str]) -> (i32, String) {
    let with_ports = !args.iter().any(|a| *a == "--config" || *a == "--listen");
    let ports = if with_ports {
        free_listeners()
    } else {
        Vec::new()
    };
    let o = Command::new(env!("CARGO_BIN_EXE_unitgate"))
        .args(ports)
        .args(args)
        .env_remove("UNITGATE_KEYS")
        .output()
        .expect("run unitgate");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).trim().to_owned(),
    )
}

#[test]
fn bad_flags_and_files_are_one_clear_line() {
    let topo = sample_path().display().to_string();
    let secrets = unitgate_tests::gateway::secrets_path()
        .display()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let bad_topo = dir.path().join("bad.yaml");
    std::fs::write(&bad_topo, "cluster: {shards: 0}\n").unwrap();
    let bad_toml = dir.path().join("gw.toml");
    std::fs::write(&bad_toml, "listen = 8080\n").unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "--topology-file",
                &topo,
                "--secrets",
                &secrets,
                "--listen",
                "nope",
            ],
            "--listen: \"nope\" is not an ip:port address",
        ),
        (vec!["--secrets", &secrets], "no topology source"),
        (vec!["--topology-file", &topo], "no routing-token keys"),
        (
            vec![
                "--topology-file",
                "/nonexistent.yaml",
                "--secrets",
                &secrets,
            ],
            "--topology-file: /nonexistent.yaml",
        ),
        (
            vec![
                "--topology-file",
                bad_topo.to_str().unwrap(),
                "--secrets",
                &secrets,
            ],
            "cluster: shards: 0 is not within",
        ),
        (
            vec!["--config", bad_toml.to_str().unwrap()],
            "gw.toml: invalid type",
        ),
        (
            vec![
                "--topology-file",
                &topo,
                "--secrets",
                &secrets,
                "--trusted-proxies",
                "10.0.0.0/99",
            ],
            "--trusted-proxies",
        ),
        (
            vec![
                "--topology-file",
                &topo,
                "--secrets",
                &secrets,
                "--geo-db",
                "/nonexistent.mmdb",
            ],
            "--geo-db",
        ),
    ];
    for (args, want) in cases {
        let (code, err) = run(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.starts_with("unitgate: ") && err.contains(want),
            "{args:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
}
