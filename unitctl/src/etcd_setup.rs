//! `unitctl etcd-setup`: turn on etcd's user auth for unitgate, and run
//! again to set the passwords (rotation). Idempotent. It makes
//! - `root` (the root role), password from `--root-password-file`;
//! - role `unitgate-gateway`: read the prefix, write only
//!   `<prefix>/gateways/` (a gateway's registration), and the gateways'
//!   user (`--gateway-user`, default `unitgate`) with it;
//! - role `unitgate-ops`: read and write the prefix (apply, drain), and
//!   the operators' user (`--ops-user`, default `unitgate-ops`) with it;
//!
//! then enables auth. It connects with the TLS settings of the global
//! flags and no user while auth is off (any client certificate of etcd's
//! CA may then manage users), as `root` once it is on. Passwords are read
//! from files, never taken as arguments.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use config_center::etcd::{self, normalize_prefix, EtcdOptions};
use config_center::etcd_access::{password, AccessFiles, EtcdAccess, PasswordSource};
use config_center::etcd_check::{describe, refused};
use etcd_client::{Client, Permission};

use crate::cli::{EtcdSetupArgs, Target};

/// Whether an etcd error says the thing is already there.
fn exists(e: &etcd_client::Error) -> bool {
    describe(e).contains("already exists")
}

async fn connect(t: &Target, files: AccessFiles) -> Result<Client> {
    files.check_endpoints(&t.etcd).map_err(|e| anyhow!("{e}"))?;
    let opts = EtcdOptions {
        access: EtcdAccess::load(files).map_err(|e| anyhow!("{e}"))?,
        ..EtcdOptions::default()
    };
    etcd::connect(&t.etcd, &opts)
        .await
        .map_err(|e| anyhow!("etcd at {}: {}", t.etcd.join(","), describe(&e)))
}

/// A password as the gateway reads it (trailing newline dropped).
fn secret(flag: &str, path: &Path) -> Result<String> {
    password(&PasswordSource::File(path.to_owned())).map_err(|e| anyhow!("{flag}: {e}"))
}

/// Add `user` with `password`, or set the password of the one there.
async fn user(c: &mut Client, user: &str, password: &str) -> Result<()> {
    match c.user_add(user, password, None).await {
        Ok(_) => println!("user {user} added"),
        Err(e) if exists(&e) => {
            c.user_change_password(user, password)
                .await
                .map_err(|e| anyhow!("setting {user}'s password: {}", describe(&e)))?;
            println!("user {user}: password set");
        }
        Err(e) => bail!("adding user {user}: {}", describe(&e)),
    }
    Ok(())
}

/// Add `role` (if new) with `grants` (key, read-write?), and give it to `user`.
async fn role(c: &mut Client, role: &str, grants: &[(&str, bool)], user: &str) -> Result<()> {
    match c.role_add(role).await {
        Ok(_) => println!("role {role} added"),
        Err(e) if exists(&e) => {}
        Err(e) => bail!("adding role {role}: {}", describe(&e)),
    }
    for (key, write) in grants {
        let p = if *write {
            Permission::read_write(*key)
        } else {
            Permission::read(*key)
        };
        c.role_grant_permission(role, p.with_prefix())
            .await
            .map_err(|e| anyhow!("granting {role} {key}: {}", describe(&e)))?;
    }
    c.user_grant_role(user, role)
        .await
        .map_err(|e| anyhow!("granting {user} the role {role}: {}", describe(&e)))?;
    Ok(())
}

pub async fn etcd_setup(t: &Target, a: &EtcdSetupArgs) -> Result<i32> {
    for name in [&a.gateway_user, &a.ops_user] {
        if name.is_empty() || name == "root" || a.gateway_user == a.ops_user {
            bail!("etcd-setup: the gateway and ops users must be two users, neither root");
        }
    }
    // Every password first: a missing file is an error before any write.
    let root_password = secret("--root-password-file", &a.root_password_file)?;
    let gateway_password = secret("--gateway-password-file", &a.gateway_password_file)?;
    let ops_password = secret("--ops-password-file", &a.ops_password_file)?;
    let tls_only = AccessFiles {
        user: None,
        password: None,
        ..t.access()
    };
    let as_root = AccessFiles {
        user: Some("root".into()),
        password: Some(PasswordSource::File(a.root_password_file.clone())),
        ..tls_only.clone()
    };
    let mut c = connect(t, tls_only).await?;
    match c.user_list().await {
        // Auth off (or a certificate naming an administrator).
        Ok(_) => {}
        Err(e) if refused(&e) => {
            c = connect(t, as_root)
                .await
                .context("auth is on: logging in as root")?;
        }
        Err(e) => bail!("etcd at {}: {}", t.etcd.join(","), describe(&e)),
    }
    user(&mut c, "root", &root_password).await?;
    c.user_grant_role("root", "root")
        .await
        .map_err(|e| anyhow!("granting root the root role: {}", describe(&e)))?;
    let prefix = format!("{}/", normalize_prefix(&t.prefix));
    let registrations = format!("{prefix}gateways/");
    user(&mut c, &a.gateway_user, &gateway_password).await?;
    role(
        &mut c,
        "unitgate-gateway",
        &[(prefix.as_str(), false), (registrations.as_str(), true)],
        &a.gateway_user,
    )
    .await?;
    user(&mut c, &a.ops_user, &ops_password).await?;
    role(
        &mut c,
        "unitgate-ops",
        &[(prefix.as_str(), true)],
        &a.ops_user,
    )
    .await?;
    // A no-op when it is on already.
    c.auth_enable()
        .await
        .map_err(|e| anyhow!("enabling auth: {}", describe(&e)))?;
    println!("auth on");
    println!(
        "{} may read {prefix}* and write {registrations}*; {} may read and write {prefix}*",
        a.gateway_user, a.ops_user
    );
    Ok(0)
}
