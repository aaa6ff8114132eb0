//! The TOML file (`--config`) and the flags that override it field by
//! field ([`Overrides`]).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;

/// The TOML file. Every field is optional; flags override.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub id: Option<String>,
    pub region: Option<String>,
    pub dc: Option<String>,
    pub listen: Option<String>,
    pub internal_listen: Option<String>,
    pub admin_listen: Option<String>,
    pub topology_file: Option<PathBuf>,
    pub etcd: Option<Vec<String>>,
    pub prefix: Option<String>,
    /// etcd over TLS with auth (`config/access.rs`).
    pub etcd_ca_file: Option<PathBuf>,
    pub etcd_cert_file: Option<PathBuf>,
    pub etcd_key_file: Option<PathBuf>,
    pub etcd_user: Option<String>,
    pub etcd_password_file: Option<PathBuf>,
    /// Bearer tokens the admin listener requires (`admin/token.rs`).
    pub admin_token_file: Option<PathBuf>,
    /// An admin listener on a non-loopback address without a token.
    pub admin_insecure: Option<bool>,
    pub secrets: Option<PathBuf>,
    pub geo_db: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub trusted_proxies: Option<Vec<String>>,
    pub threads: Option<usize>,
    pub work_stealing: Option<bool>,
    pub max_attempts: Option<u8>,
    pub max_connections: Option<u32>,
    pub max_connections_per_ip: Option<u32>,
    pub admin_max_connections: Option<u32>,
    pub admin_max_connections_per_ip: Option<u32>,
    pub keepalive_idle_s: Option<u64>,
    pub retry_budget_percent: Option<u32>,
    pub dye_ttl_s: Option<u64>,
    pub hint_ttl_s: Option<u64>,
    pub max_header_bytes: Option<usize>,
    pub header_timeout_ms: Option<u64>,
    pub read_buffer_bytes: Option<usize>,
    pub body_read_timeout_ms: Option<u64>,
    pub send_timeout_ms: Option<u64>,
    /// Serving on after SIGTERM with `/readyz` at 503 (`config/stop.rs`).
    pub shutdown_delay_s: Option<u64>,
    /// At most this long for the requests in flight when stopping.
    pub grace_period_s: Option<u64>,
    /// Where a new gateway (`--upgrade`) takes this one's listeners.
    pub upgrade_sock: Option<PathBuf>,
    /// `stdout`, a file's path, or `off` (`config/observe.rs`).
    pub access_log: Option<String>,
    pub access_log_user: Option<bool>,
    /// `text` or `json` (`config/observe.rs`).
    pub log_format: Option<String>,
    pub otlp_endpoint: Option<String>,
    pub otlp_sampling_ratio: Option<f64>,
    pub response_buffer_bytes: Option<usize>,
    pub max_body_bytes: Option<u64>,
    pub request_timeout_ms: Option<u64>,
    pub eject_after_failures: Option<u32>,
    pub eject_error_rate_percent: Option<u32>,
    pub quota_max_keys: Option<usize>,
    /// Forward request headers whose name has `_` (else dropped; nginx's
    /// `underscores_in_headers`).
    pub forward_underscore_headers: Option<bool>,
    /// TLS on the public listener (and optionally the internal one).
    pub tls: Option<TlsFile>,
    /// A plain HTTP listener beside the HTTPS public one.
    pub http_listen: Option<String>,
    /// Hosts the plain listener redirects to HTTPS (`*`: every host).
    pub https_redirect: Option<Vec<String>>,
    /// The public listeners take a PROXY protocol header (v1 or v2) from
    /// the trusted proxies before anything else.
    pub proxy_protocol: Option<bool>,
    /// HTTP/2 with prior knowledge (h2c) on the plain internal listener.
    pub internal_h2c: Option<bool>,
    pub h2_max_concurrent_streams: Option<u32>,
    pub h2_stream_window_bytes: Option<u32>,
    pub h2_connection_window_bytes: Option<u32>,
    pub h2_max_resets: Option<u32>,
    pub h2_max_control_frames: Option<u32>,
}

/// One certificate and its key, listed in `[[tls.certs]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The `[tls]` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub cert_dir: Option<PathBuf>,
    #[serde(default)]
    pub certs: Vec<CertFiles>,
    pub default_host: Option<String>,
    pub internal: Option<bool>,
    pub reload_interval_ms: Option<u64>,
}

/// Values given on the command line: a partial configuration that wins
/// over the file, field by field.
pub type Overrides = FileConfig;

/// Read the TOML file.
pub fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::File {
        path: path.display().to_string(),
        message: e.message().to_owned(),
    })
}
