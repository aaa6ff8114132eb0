//! What the gateway records of the requests it serves: the access log
//! (`access_log`, flag `--access-log`: `stdout`, a file's path, or `off`;
//! `access_log_user`: whether lines name the verified user), and the shape
//! of its diagnostic log on stderr (`log_format`, flag `--log-format`:
//! `text` or `json`).

use super::{invalid, ConfigError, FileConfig, Overrides};
use crate::access::Target;

/// The resolved recording settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observe {
    pub access_log: Target,
    /// Lines carry `user` (the verified JWT user); off: the field is left
    /// out.
    pub access_log_user: bool,
    pub log_format: LogFormat,
}

/// The diagnostic log's lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`).
    Json,
}

/// `access_log` (the flag wins; default `stdout`) and `access_log_user`
/// (default on).
pub fn observe(file: &FileConfig, o: &Overrides) -> Result<Observe, ConfigError> {
    let access_log = match o.access_log.as_ref().or(file.access_log.as_ref()) {
        Some(v) => Target::parse(v).map_err(invalid)?,
        None => Target::Stdout,
    };
    let log_format = match o.log_format.as_deref().or(file.log_format.as_deref()) {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(invalid(format!(
                "log_format: {other:?} is not text or json"
            )))
        }
    };
    Ok(Observe {
        access_log,
        access_log_user: file.access_log_user.unwrap_or(true),
        log_format,
    })
}
