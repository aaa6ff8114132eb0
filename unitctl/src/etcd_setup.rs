//! `unitctl etcd-setup`: turn on etcd's user auth for unitgate, and run
//! again to change the user's password. Idempotent. It makes a `root`
//! user (password from `--root-password-file`) with the root role, a role
//! `unitgate` that may read and write the prefix and nothing else, and the
//! user of `--etcd-user` with that role and the password of
//! `--etcd-password-file` (or `UNITCTL_ETCD_PASSWORD`); then it enables
//! auth. Once auth is on it logs in as root to do the same. Passwords are
//! read from files or the environment, never taken as arguments.

use anyhow::{anyhow, bail, Context, Result};
use config_center::etcd::{self, normalize_prefix, EtcdOptions};
use config_center::etcd_access::{describe, AccessFiles, EtcdAccess, PasswordSource};
use etcd_client::{Client, Permission};

use crate::cli::Target;

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

pub async fn etcd_setup(t: &Target, root_password_file: &std::path::Path) -> Result<i32> {
    let user_files = t.access();
    let (Some(user), Some(password)) = (user_files.user.clone(), user_files.password.clone())
    else {
        bail!("etcd-setup: give the user to make (--etcd-user) and its password (--etcd-password-file or UNITCTL_ETCD_PASSWORD)");
    };
    if user == "root" {
        bail!("etcd-setup: --etcd-user must not be root: the gateways get only the prefix");
    }
    let anonymous = AccessFiles {
        user: None,
        password: None,
        ..user_files.clone()
    };
    let as_root = AccessFiles {
        user: Some("root".into()),
        password: Some(PasswordSource::File(root_password_file.to_owned())),
        ..user_files
    };
    // Both passwords now: a missing file is an error before any write.
    let user_password = secret(&password)?;
    let root_password = secret(&PasswordSource::File(root_password_file.to_owned()))
        .context("--root-password-file")?;

    // Without a password: auth is off, or the client certificate's common
    // name is a user etcd lets manage users (etcd takes it as the user
    // under --client-cert-auth). Else log in as root.
    let mut c = connect(t, anonymous).await?;
    let anonymous_admin = c.user_list().await.is_ok();
    if anonymous_admin {
        match c.user_add("root", root_password.as_str(), None).await {
            Ok(_) => println!("user root added"),
            Err(e) if exists(&e) => {}
            Err(e) => bail!("adding user root: {}", describe(&e)),
        }
        c.user_grant_role("root", "root")
            .await
            .map_err(|e| anyhow!("granting root the root role: {}", describe(&e)))?;
    } else {
        c = connect(t, as_root)
            .await
            .context("auth is on: logging in as root")?;
    }
    let prefix = format!("{}/", normalize_prefix(&t.prefix));
    match c.role_add("unitgate").await {
        Ok(_) => println!("role unitgate added"),
        Err(e) if exists(&e) => {}
        Err(e) => bail!("adding role unitgate: {}", describe(&e)),
    }
    c.role_grant_permission(
        "unitgate",
        Permission::read_write(prefix.as_str()).with_prefix(),
    )
    .await
    .map_err(|e| anyhow!("granting unitgate {prefix}: {}", describe(&e)))?;
    match c
        .user_add(user.as_str(), user_password.as_str(), None)
        .await
    {
        Ok(_) => println!("user {user} added"),
        Err(e) if exists(&e) => {
            c.user_change_password(user.as_str(), user_password.as_str())
                .await
                .map_err(|e| anyhow!("changing {user}'s password: {}", describe(&e)))?;
            println!("user {user}: password set");
        }
        Err(e) => bail!("adding user {user}: {}", describe(&e)),
    }
    c.user_grant_role(user.as_str(), "unitgate")
        .await
        .map_err(|e| anyhow!("granting {user} the unitgate role: {}", describe(&e)))?;
    // A no-op when it is on already.
    c.auth_enable()
        .await
        .map_err(|e| anyhow!("enabling auth: {}", describe(&e)))?;
    println!("auth on");
    println!("{user} may read and write {prefix}*");
    Ok(0)
}

/// A password, as the gateway would read it (trailing newline dropped).
fn secret(source: &PasswordSource) -> Result<String> {
    let files = AccessFiles {
        user: Some("x".into()),
        password: Some(source.clone()),
        ..AccessFiles::default()
    };
    EtcdAccess::load(files)
        .map_err(|e| anyhow!("{e}"))?
        .password()
        .ok_or_else(|| anyhow!("no password"))
}
