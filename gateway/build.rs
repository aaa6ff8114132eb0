//! The commit the gateway is built from, for `unitgate_build_info`:
//! `UNITGATE_COMMIT` when set (a release build outside a checkout), else
//! `git rev-parse`, else "unknown".

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=UNITGATE_COMMIT");
    // The commit moves when HEAD or the branch it names does.
    for f in ["../.git/HEAD", "../.git/refs/heads", "../.git/packed-refs"] {
        if std::path::Path::new(f).exists() {
            println!("cargo:rerun-if-changed={f}");
        }
    }
    let commit = std::env::var("UNITGATE_COMMIT").ok().or_else(|| {
        let out = Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()?;
        let s = String::from_utf8(out.stdout).ok()?;
        Some(s.trim().to_owned()).filter(|s| out.status.success() && !s.is_empty())
    });
    println!(
        "cargo:rustc-env=UNITGATE_COMMIT={}",
        commit.as_deref().unwrap_or("unknown")
    );
}
