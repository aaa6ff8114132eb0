//! What the gateway records of the requests it serves: the access log
//! (`access_log`, flag `--access-log`: `stdout`, a file's path, or `off`;
//! `access_log_user`: whether lines name the verified user), and the shape
//! of its diagnostic log on stderr (`log_format`, flag `--log-format`:
//! `text` or `json`); spans over OTLP (`otlp_endpoint`, the collector's
//! base URL; `otlp_sampling_ratio`, 0.0-1.0, default 0.01, for the traces
//! the gateway starts).

use super::{invalid, ConfigError, FileConfig, Overrides};
use crate::access::Target;

/// The resolved recording settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Observe {
    pub access_log: Target,
    /// Lines carry `user` (the verified JWT user); off: the field is left
    /// out.
    pub access_log_user: bool,
    pub log_format: LogFormat,
    /// The OTLP collector's base URL (`<it>/v1/traces`); `None`: no spans.
    pub otlp_endpoint: Option<String>,
    /// The share of the traces the gateway starts that are sampled.
    pub otlp_sampling_ratio: f64,
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
    let otlp_endpoint = file.otlp_endpoint.clone().filter(|e| !e.is_empty());
    if let Some(e) = &otlp_endpoint {
        if !(e.starts_with("http://") || e.starts_with("https://"))
            || e.parse::<http::Uri>().is_err()
        {
            return Err(invalid(format!(
                "otlp_endpoint: {e:?} is not an http(s) URL"
            )));
        }
    }
    let ratio = file.otlp_sampling_ratio.unwrap_or(0.01);
    if !(0.0..=1.0).contains(&ratio) {
        return Err(invalid(format!(
            "otlp_sampling_ratio: {ratio} is not within 0.0..=1.0"
        )));
    }
    Ok(Observe {
        access_log,
        access_log_user: file.access_log_user.unwrap_or(true),
        log_format,
        otlp_endpoint,
        otlp_sampling_ratio: ratio,
    })
}
