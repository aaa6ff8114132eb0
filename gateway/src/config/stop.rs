//! How the gateway stops on SIGTERM (`crate::stop`): `shutdown_delay_s`
//! (flag `--shutdown-delay-s`, default 5) it keeps serving with `/readyz`
//! at 503 so that balancers see it leave, then `grace_period_s` (flag
//! `--grace-period-s`, default 30) at most for the requests in flight.
//! And how it hands its listeners to a new gateway (`unitgate --upgrade`,
//! then SIGQUIT): over the Unix socket `upgrade_sock` (default
//! `<state_dir>/upgrade.sock`; with neither, no hand-over: a socket at a
//! fixed name in a shared directory could be taken by another local user
//! first, and with it the gateway's listeners).

use std::path::PathBuf;
use std::time::Duration;

use super::{invalid, within, ConfigError, FileConfig, Overrides};

/// The resolved stop settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    /// Serving on after SIGTERM, `/readyz` answering 503.
    pub delay: Duration,
    /// At most this long for the requests in flight once the listeners
    /// closed; what is still running then is cut.
    pub grace: Duration,
    /// Where a gateway started with `--upgrade` waits for this one's
    /// listening sockets (`None`: no hand-over).
    pub upgrade_sock: Option<PathBuf>,
}

/// The longest Unix socket path (`sun_path` holds 108 bytes with its NUL).
const MAX_SOCK_PATH: usize = 107;

/// The flags win over the file.
pub fn stop(file: &FileConfig, o: &Overrides) -> Result<Stop, ConfigError> {
    let delay = within(
        "shutdown_delay_s",
        o.shutdown_delay_s.or(file.shutdown_delay_s),
        5,
        0..=600,
    )?;
    let grace = within(
        "grace_period_s",
        o.grace_period_s.or(file.grace_period_s),
        30,
        0..=3600,
    )?;
    let upgrade_sock = match (file.upgrade_sock.clone(), &o.state_dir, &file.state_dir) {
        (Some(p), ..) => Some(p),
        (None, Some(d), _) | (None, None, Some(d)) => Some(d.join("upgrade.sock")),
        (None, None, None) => None,
    };
    if let Some(upgrade_sock) = upgrade_sock
        .as_ref()
        .filter(|p| p.as_os_str().len() > MAX_SOCK_PATH)
    {
        return Err(invalid(format!(
            "upgrade_sock: {} is longer than a Unix socket path may be ({MAX_SOCK_PATH} bytes)",
            upgrade_sock.display()
        )));
    }
    Ok(Stop {
        delay: Duration::from_secs(delay),
        grace: Duration::from_secs(grace),
        upgrade_sock,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_flags_over_the_file_and_bounds_naming_the_key() {
        let file = FileConfig {
            shutdown_delay_s: Some(2),
            grace_period_s: Some(40),
            ..FileConfig::default()
        };
        let s = stop(&FileConfig::default(), &Overrides::default()).unwrap();
        assert_eq!((s.delay.as_secs(), s.grace.as_secs()), (5, 30));
        let o = Overrides {
            shutdown_delay_s: Some(0),
            ..Overrides::default()
        };
        let s = stop(&file, &o).unwrap();
        assert_eq!((s.delay.as_secs(), s.grace.as_secs()), (0, 40));
        let bad = FileConfig {
            grace_period_s: Some(7200),
            ..FileConfig::default()
        };
        let e = stop(&bad, &Overrides::default()).unwrap_err().to_string();
        assert!(e.contains("grace_period_s: 7200"), "{e}");
        // The upgrade socket: under the state dir, unless given.
        let dirs = FileConfig {
            state_dir: Some("/var/lib/unitgate".into()),
            ..FileConfig::default()
        };
        let s = stop(&dirs, &Overrides::default()).unwrap();
        assert_eq!(
            s.upgrade_sock,
            Some(PathBuf::from("/var/lib/unitgate/upgrade.sock"))
        );
        let none = stop(&FileConfig::default(), &Overrides::default()).unwrap();
        assert_eq!(none.upgrade_sock, None);
        let long = FileConfig {
            upgrade_sock: Some(PathBuf::from(format!("/{}", "d".repeat(120)))),
            ..FileConfig::default()
        };
        let e = stop(&long, &Overrides::default()).unwrap_err().to_string();
        assert!(e.starts_with("upgrade_sock: "), "{e}");
    }
}
