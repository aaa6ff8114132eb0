//! Who may talk to what: the gateway's credentials for etcd
//! (`etcd_ca_file`, `etcd_cert_file`, `etcd_key_file`, `etcd_user`,
//! `etcd_password_file`) and the lock on the admin listener
//! (`admin_token_file`, `admin_insecure`). Checked here without reading a
//! file; the files are read at start (`server::prepare`).

use std::net::SocketAddr;
use std::path::PathBuf;

use config_center::etcd_access::{AccessFiles, PasswordSource};

use super::{invalid, ConfigError, FileConfig, Overrides};

/// The etcd credentials, flags over file, as paths and a user name.
pub(super) fn etcd_access(file: &mut FileConfig, o: &mut Overrides) -> AccessFiles {
    AccessFiles {
        ca_file: o.etcd_ca_file.take().or(file.etcd_ca_file.take()),
        cert_file: o.etcd_cert_file.take().or(file.etcd_cert_file.take()),
        key_file: o.etcd_key_file.take().or(file.etcd_key_file.take()),
        user: o.etcd_user.take().or(file.etcd_user.take()),
        password: o
            .etcd_password_file
            .take()
            .or(file.etcd_password_file.take())
            .map(PasswordSource::File),
    }
}

/// The admin listener's lock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminLock {
    /// Bearer tokens, one a line (`admin/token.rs`); `None`: open.
    pub token_file: Option<PathBuf>,
    /// Serve it open on a non-loopback address on purpose.
    pub insecure: bool,
}

/// `admin_token_file` and `admin_insecure`: an admin listener on an
/// address other machines reach needs a token, unless said otherwise.
pub(super) fn admin_lock(
    file: &mut FileConfig,
    o: &mut Overrides,
    admin: SocketAddr,
) -> Result<AdminLock, ConfigError> {
    let lock = AdminLock {
        token_file: o.admin_token_file.take().or(file.admin_token_file.take()),
        insecure: o.admin_insecure.or(file.admin_insecure).unwrap_or(false),
    };
    if lock.token_file.is_none() && !lock.insecure && !admin.ip().is_loopback() {
        return Err(invalid(format!(
            "--admin-listen: {admin} is reachable from other hosts and serves /status and /metrics: \
             set admin_token_file (--admin-token-file) to require a bearer token, \
             or admin_insecure = true (--admin-insecure) to leave it open on purpose"
        )));
    }
    Ok(lock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reachable_admin_listener_needs_a_token_or_says_it_is_open() {
        let lock = |f: &str, addr: &str| {
            let mut file: FileConfig = toml::from_str(f).unwrap();
            admin_lock(&mut file, &mut Overrides::default(), addr.parse().unwrap())
        };
        assert_eq!(lock("", "127.0.0.1:8082").unwrap(), AdminLock::default());
        assert_eq!(lock("", "[::1]:8082").unwrap(), AdminLock::default());
        let e = lock("", "0.0.0.0:8082").unwrap_err().to_string();
        assert!(
            e.contains("admin_token_file") && e.contains("admin_insecure"),
            "{e}"
        );
        assert!(
            lock("admin_insecure = true", "0.0.0.0:8082")
                .unwrap()
                .insecure
        );
        let l = lock("admin_token_file = \"/run/t\"", "10.0.0.1:8082").unwrap();
        assert_eq!(l.token_file, Some(PathBuf::from("/run/t")));
    }
}
