//! The scripts (`scripts/`, `bench/run`) run the binaries where cargo put
//! them: `scripts/target-dir` says where that is, `CARGO_TARGET_DIR`
//! included, and no script names `target/debug` or `target/release`
//! itself.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use unitgate_tests::workspace;

/// `scripts/target-dir`'s answer with `CARGO_TARGET_DIR` set to `dir`, or
/// unset.
fn target_dir(dir: Option<&Path>) -> PathBuf {
    let mut cmd = Command::new(workspace().join("scripts/target-dir"));
    cmd.env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR");
    if let Some(d) = dir {
        cmd.env("CARGO_TARGET_DIR", d);
    }
    let out = cmd.output().expect("run scripts/target-dir");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

#[test]
fn scripts_find_the_binaries_in_cargos_target_dir() {
    // This test's own build: <target>/debug/unitgate.
    let bin = Path::new(env!("CARGO_BIN_EXE_unitgate"));
    let built = bin.parent().unwrap().parent().unwrap();
    let found = target_dir(Some(built));
    assert_eq!(found, built);
    assert!(found.join("debug/unitgate").is_file());
    let elsewhere = tempfile::tempdir().unwrap();
    assert_eq!(target_dir(Some(elsewhere.path())), elsewhere.path());
    let root = workspace().canonicalize().unwrap();
    assert_eq!(target_dir(None), root.join("target"));

    // The mistake itself: a binary path under ./target, which is not where
    // cargo builds with CARGO_TARGET_DIR set.
    let mut wrong = Vec::new();
    for dir in ["scripts", "bench", "deploy"] {
        for entry in std::fs::read_dir(workspace().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            for (n, line) in text.lines().enumerate() {
                let named = ["target/debug", "target/release", "target/$profile"]
                    .iter()
                    .any(|p| line.contains(p));
                if named && !line.trim_start().starts_with('#') {
                    wrong.push(format!("{}:{}: {line}", path.display(), n + 1));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
