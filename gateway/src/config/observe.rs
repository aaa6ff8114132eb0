//! What the gateway records of the requests it serves: the access log
//! (`access_log`, flag `--access-log`: `stdout`, a file's path, or `off`;
//! `access_log_user`: whether lines name the verified user).

use super::{invalid, ConfigError, FileConfig, Overrides};
use crate::access::Target;

/// The resolved recording settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observe {
    pub access_log: Target,
    /// Lines carry `user` (the verified JWT user); off: the field is left
    /// out.
    pub access_log_user: bool,
}

/// `access_log` (the flag wins; default `stdout`) and `access_log_user`
/// (default on).
pub fn observe(file: &FileConfig, o: &Overrides) -> Result<Observe, ConfigError> {
    let access_log = match o.access_log.as_ref().or(file.access_log.as_ref()) {
        Some(v) => Target::parse(v).map_err(invalid)?,
        None => Target::Stdout,
    };
    Ok(Observe {
        access_log,
        access_log_user: file.access_log_user.unwrap_or(true),
    })
}
