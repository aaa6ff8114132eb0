//! Gateway configuration: a TOML file (`--config`) overridden by flags.
//! Every problem is one clear line; nothing starts on a bad config.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

fn invalid(m: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(m.into())
}

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
    pub secrets: Option<PathBuf>,
    pub geo_db: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub trusted_proxies: Option<Vec<String>>,
    pub threads: Option<usize>,
    pub work_stealing: Option<bool>,
    pub max_attempts: Option<u8>,
    pub max_connections: Option<u32>,
    pub max_connections_per_ip: Option<u32>,
    pub keepalive_idle_s: Option<u64>,
    pub retry_budget_percent: Option<u32>,
    pub dye_ttl_s: Option<u64>,
    pub hint_ttl_s: Option<u64>,
    pub max_header_bytes: Option<usize>,
    pub header_timeout_ms: Option<u64>,
    pub read_buffer_bytes: Option<usize>,
    pub body_read_timeout_ms: Option<u64>,
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

/// HTTP/2 limits of a connection (`docs/edge.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H2Limits {
    /// Streams open at once on one connection.
    pub max_concurrent_streams: u32,
    /// Flow-control window of one stream, and of the whole connection.
    pub stream_window: u32,
    pub connection_window: u32,
    /// Stream resets a client may send in a burst (refilled at a tenth of
    /// it per second): rapid reset (CVE-2023-44487) closes the connection.
    pub max_resets: u32,
    /// Control frames (SETTINGS, PING, PRIORITY, empty DATA) a client may
    /// send in a burst (refilled at a tenth of it per second).
    pub max_control_frames: u32,
}

/// Where the topology comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopologySource {
    File(PathBuf),
    Etcd {
        endpoints: Vec<String>,
        prefix: String,
    },
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub id: String,
    pub region: Option<String>,
    pub dc: Option<String>,
    pub listen: SocketAddr,
    pub internal_listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub topology: TopologySource,
    pub secrets: Option<PathBuf>,
    pub geo_db: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub trusted_proxies: Vec<IpNet>,
    pub threads: usize,
    /// Let idle worker threads steal tasks from busy ones (Pingora's
    /// `work_stealing`). Off by default: each connection stays on the thread
    /// that accepted it, which measured faster (docs/BENCHMARKS.md).
    pub work_stealing: bool,
    /// Upstream attempts per request, first one included.
    pub max_attempts: u8,
    /// Connections open at once on each listener.
    pub max_connections: u32,
    /// Connections open at once from one client address (public listener).
    pub max_connections_per_ip: u32,
    /// How long a client connection may sit idle between requests.
    pub keepalive_idle_s: u64,
    /// Retries allowed as a percentage of recent requests (plus a floor).
    pub retry_budget_percent: u32,
    pub dye_ttl_s: u64,
    pub hint_ttl_s: u64,
    /// Bytes of one request head, enforced while reading (431 above it).
    pub max_header_bytes: usize,
    /// Time to receive a whole request head, from its first byte (from
    /// accept for a connection's first request); 408 after it.
    pub header_timeout_ms: u64,
    /// Pingora's per-connection read buffer below the HTTP parser on the
    /// proxy listeners (Pingora's own default: 64 KiB a connection).
    pub read_buffer_bytes: usize,
    /// Longest wait for the next piece of a request body (408 after it).
    pub body_read_timeout_ms: u64,
    /// Request body limit of a route that sets none (413 above it).
    pub max_body_bytes: u64,
    /// Total time of a request across attempts, for a route that sets none
    /// (504 after it).
    pub request_timeout_ms: u64,
    /// Consecutive failures that eject an endpoint.
    pub eject_after_failures: u32,
    /// Error rate (percent, over at least 20 requests in 10 s) that ejects
    /// an endpoint; 0: none.
    pub eject_error_rate_percent: u32,
    /// Keys one quota's counters hold at most on this gateway (see
    /// `quota/limiter.rs` for the bound).
    pub quota_max_keys: usize,
    /// Forward request headers whose name has `_`, except those spelling
    /// a framing, user or identity header (`request/headers.rs`); off:
    /// they are dropped and counted.
    pub forward_underscore_headers: bool,
    /// Certificates; `None`: plain HTTP listeners.
    pub tls: Option<crate::tls::TlsConfig>,
    /// The plain HTTP listener beside an HTTPS public one.
    pub http_listen: Option<SocketAddr>,
    /// Host patterns the plain listener redirects to HTTPS (`*`, exact
    /// names, `*.example.com`).
    pub https_redirect: Vec<String>,
    pub proxy_protocol: bool,
    pub internal_h2c: bool,
    pub h2: H2Limits,
}

/// Values given on the command line: a partial configuration that wins
/// over the file, field by field.
pub type Overrides = FileConfig;

fn addr(name: &str, v: Option<String>, default: &str) -> Result<SocketAddr, ConfigError> {
    let v = v.unwrap_or_else(|| default.to_owned());
    v.parse()
        .map_err(|_| invalid(format!("{name}: {v:?} is not an ip:port address")))
}

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

/// The topology source from flags over file.
fn topology_source(
    topology_file: Option<PathBuf>,
    etcd: Option<Vec<String>>,
    prefix: String,
) -> Result<TopologySource, ConfigError> {
    match (topology_file, etcd) {
        (Some(_), Some(_)) => Err(invalid("give either --topology-file or --etcd, not both")),
        (Some(f), None) => Ok(TopologySource::File(f)),
        (None, Some(e)) if e.is_empty() => Err(invalid("--etcd: no endpoint given")),
        (None, Some(e)) => {
            if let Some(ep) = e
                .iter()
                .find(|ep| !(ep.starts_with("http://") || ep.starts_with("https://")))
            {
                return Err(invalid(format!(
                    "--etcd: {ep:?} must be an http:// or https:// URL"
                )));
            }
            Ok(TopologySource::Etcd {
                endpoints: e,
                prefix,
            })
        }
        (None, None) => Err(invalid(
            "no topology source: give --topology-file PATH or --etcd URL (see --help)",
        )),
    }
}

/// Trusted proxy networks (CIDRs or single addresses).
fn trusted_proxies(list: Option<Vec<String>>) -> Result<Vec<IpNet>, ConfigError> {
    list.unwrap_or_default()
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    invalid(format!(
                        "--trusted-proxies: {s:?} is not a CIDR or IP address"
                    ))
                })
        })
        .collect()
}

/// `v`, or `default`, if within `range`; else an error naming `name`.
fn within<T>(
    name: &str,
    v: Option<T>,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    let v = v.unwrap_or(default);
    if range.contains(&v) {
        Ok(v)
    } else {
        Err(invalid(format!(
            "{name}: {v} is not within {}..={}",
            range.start(),
            range.end()
        )))
    }
}

/// The three listeners, each on its own address.
fn listeners(
    file: &mut FileConfig,
    o: &mut Overrides,
) -> Result<(SocketAddr, SocketAddr, SocketAddr), ConfigError> {
    let listen = addr(
        "--listen",
        o.listen.take().or(file.listen.take()),
        "127.0.0.1:8080",
    )?;
    let internal = addr(
        "--internal-listen",
        o.internal_listen.take().or(file.internal_listen.take()),
        "127.0.0.1:8081",
    )?;
    let admin = addr(
        "--admin-listen",
        o.admin_listen.take().or(file.admin_listen.take()),
        "127.0.0.1:8082",
    )?;
    if internal == listen {
        return Err(invalid(format!(
            "--internal-listen: {internal} is already used by another listener"
        )));
    }
    if admin == listen || admin == internal {
        return Err(invalid(format!(
            "--admin-listen: {admin} is already used by another listener"
        )));
    }
    Ok((listen, internal, admin))
}

fn tls_config(t: Option<TlsFile>) -> Result<Option<crate::tls::TlsConfig>, ConfigError> {
    let Some(t) = t else { return Ok(None) };
    if t.cert_dir.is_none() && t.certs.is_empty() {
        return Err(invalid(
            "tls: give cert_dir (or --tls-cert-dir) or [[tls.certs]] entries",
        ));
    }
    Ok(Some(crate::tls::TlsConfig {
        cert_dir: t.cert_dir,
        certs: t
            .certs
            .into_iter()
            .map(|c| crate::tls::store::PairFiles {
                cert: c.cert,
                key: c.key,
            })
            .collect(),
        default_host: t.default_host,
        internal: t.internal.unwrap_or(false),
        reload_interval: std::time::Duration::from_millis(within(
            "tls.reload_interval_ms",
            t.reload_interval_ms,
            2_000,
            100..=3_600_000,
        )?),
    }))
}

fn h2_limits(file: &FileConfig) -> Result<H2Limits, ConfigError> {
    Ok(H2Limits {
        max_concurrent_streams: within(
            "h2_max_concurrent_streams",
            file.h2_max_concurrent_streams,
            100,
            1..=10_000,
        )?,
        stream_window: within(
            "h2_stream_window_bytes",
            file.h2_stream_window_bytes,
            256 * 1024,
            65_535..=16 * 1024 * 1024,
        )?,
        connection_window: within(
            "h2_connection_window_bytes",
            file.h2_connection_window_bytes,
            1024 * 1024,
            65_535..=64 * 1024 * 1024,
        )?,
        max_resets: within("h2_max_resets", file.h2_max_resets, 1_000, 10..=100_000)?,
        max_control_frames: within(
            "h2_max_control_frames",
            file.h2_max_control_frames,
            1_000,
            10..=100_000,
        )?,
    })
}

impl Config {
    /// The keep-alive timeout of the framework's HTTP/1 session. Idle time
    /// between requests is bounded where the connection is parked
    /// (`keepalive_idle_s`, `listen/idle.rs`); the framework applies this
    /// one to every read of a request head, which must not cut a head off
    /// before the head guard's `header_timeout_ms` answers 408.
    pub fn session_keepalive_s(&self) -> u64 {
        self.keepalive_idle_s
            .max(self.header_timeout_ms.div_ceil(1000))
    }

    /// Merge file and flags and check the result.
    pub fn resolve(mut file: FileConfig, mut o: Overrides) -> Result<Config, ConfigError> {
        let prefix = o
            .prefix
            .take()
            .or(file.prefix.take())
            .unwrap_or_else(|| "/unitgate".into());
        let topology = topology_source(
            o.topology_file.take().or(file.topology_file.take()),
            o.etcd.take().or(file.etcd.take()),
            prefix,
        )?;
        let trusted_proxies =
            trusted_proxies(o.trusted_proxies.take().or(file.trusted_proxies.take()))?;
        let retry_budget_percent = within(
            "retry_budget_percent",
            file.retry_budget_percent,
            20,
            0..=100,
        )?;
        let id = o.id.take().or(file.id.take()).unwrap_or_else(default_id);
        if id.is_empty() || id.contains(['/', ' ']) {
            return Err(invalid(format!(
                "id: {id:?} must be non-empty without '/' or spaces"
            )));
        }
        let (listen, internal_listen, admin_listen) = listeners(&mut file, &mut o)?;
        // A flag's certificate directory replaces the file's, keeping the
        // rest of its [tls] section.
        let tls_file = match (o.tls.take(), file.tls.take()) {
            (Some(flag), Some(mut f)) => {
                f.cert_dir = flag.cert_dir.or(f.cert_dir);
                Some(f)
            }
            (flag, f) => flag.or(f),
        };
        let tls = tls_config(tls_file)?;
        let http_listen = match o.http_listen.take().or(file.http_listen.take()) {
            None => None,
            Some(v) => {
                let a = addr("--http-listen", Some(v), "")?;
                if [listen, internal_listen, admin_listen].contains(&a) {
                    return Err(invalid(format!(
                        "--http-listen: {a} is already used by another listener"
                    )));
                }
                if tls.is_none() {
                    return Err(invalid(
                        "--http-listen: a second plain listener needs TLS on the public one (--tls-cert-dir or [tls])",
                    ));
                }
                Some(a)
            }
        };
        let https_redirect = file.https_redirect.take().unwrap_or_default();
        if !https_redirect.is_empty() && http_listen.is_none() {
            return Err(invalid(
                "https_redirect: it applies to the plain listener, give http_listen too",
            ));
        }
        if let Some(h) = https_redirect
            .iter()
            .find(|h| h.is_empty() || h.contains(['/', ' ', ':']))
        {
            return Err(invalid(format!(
                "https_redirect: {h:?} is not a host name, `*` or `*.domain`"
            )));
        }
        let proxy_protocol = file.proxy_protocol.unwrap_or(false);
        if proxy_protocol && trusted_proxies.is_empty() {
            return Err(invalid(
                "proxy_protocol: name the load balancers it is taken from in trusted_proxies",
            ));
        }
        let h2 = h2_limits(&file)?;
        let forward_underscore_headers = o
            .forward_underscore_headers
            .or(file.forward_underscore_headers)
            .unwrap_or(false);
        Ok(Config {
            id,
            region: o.region.or(file.region),
            dc: o.dc.or(file.dc),
            listen,
            internal_listen,
            admin_listen,
            tls,
            http_listen,
            https_redirect,
            proxy_protocol,
            internal_h2c: file.internal_h2c.unwrap_or(true),
            h2,
            forward_underscore_headers,
            topology,
            secrets: o.secrets.or(file.secrets),
            geo_db: o.geo_db.or(file.geo_db),
            state_dir: o.state_dir.or(file.state_dir),
            trusted_proxies,
            threads: within("threads", file.threads, 2, 1..=256)?,
            work_stealing: file.work_stealing.unwrap_or(false),
            max_attempts: within("max_attempts", file.max_attempts, 3, 1..=8)?,
            max_connections: within(
                "max_connections",
                file.max_connections,
                10_000,
                1..=1_000_000,
            )?,
            keepalive_idle_s: within("keepalive_idle_s", file.keepalive_idle_s, 30, 1..=3600)?,
            max_connections_per_ip: within(
                "max_connections_per_ip",
                file.max_connections_per_ip,
                256,
                1..=1_000_000,
            )?,
            retry_budget_percent,
            dye_ttl_s: file.dye_ttl_s.unwrap_or(60),
            hint_ttl_s: file.hint_ttl_s.unwrap_or(unit_router::DEFAULT_HINT_TTL_S),
            max_header_bytes: within(
                "max_header_bytes",
                file.max_header_bytes,
                32 * 1024,
                1024..=1024 * 1024,
            )?,
            header_timeout_ms: within(
                "header_timeout_ms",
                file.header_timeout_ms,
                5_000,
                100..=120_000,
            )?,
            read_buffer_bytes: within(
                "read_buffer_bytes",
                file.read_buffer_bytes,
                0,
                0..=1024 * 1024,
            )?,
            body_read_timeout_ms: within(
                "body_read_timeout_ms",
                file.body_read_timeout_ms,
                15_000,
                100..=600_000,
            )?,
            max_body_bytes: within(
                "max_body_bytes",
                file.max_body_bytes,
                DEFAULT_MAX_BODY_BYTES,
                0..=unit_router::MAX_BODY_BYTES,
            )?,
            request_timeout_ms: within(
                "request_timeout_ms",
                file.request_timeout_ms,
                30_000,
                100..=unit_router::MAX_ROUTE_TIMEOUT_MS,
            )?,
            eject_after_failures: file.eject_after_failures.unwrap_or(3).max(1),
            eject_error_rate_percent: within(
                "eject_error_rate_percent",
                file.eject_error_rate_percent,
                50,
                0..=100,
            )?,
            quota_max_keys: within(
                "quota_max_keys",
                file.quota_max_keys,
                100_000,
                1_000..=10_000_000,
            )?,
        })
    }
}

/// Body limit of a route that sets none: 8 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 8 * 1024 * 1024;

fn default_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let host = if host.is_empty() {
        "gateway".to_owned()
    } else {
        host
    };
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_only(topo: &str) -> Overrides {
        Overrides {
            topology_file: Some(topo.into()),
            ..Overrides::default()
        }
    }

    #[test]
    fn flags_override_the_file_and_errors_are_specific() {
        let f: FileConfig =
            toml::from_str("listen = \"127.0.0.1:9000\"\nregion = \"cn-north\"\n").unwrap();
        let o = Overrides {
            listen: Some("127.0.0.1:9100".into()),
            ..file_only("t.yaml")
        };
        let c = Config::resolve(f, o).unwrap();
        assert_eq!(c.listen.port(), 9100);
        assert_eq!(c.region.as_deref(), Some("cn-north"));

        let err = |f: &str, o: Overrides| {
            Config::resolve(toml::from_str(f).unwrap(), o)
                .unwrap_err()
                .to_string()
        };
        assert!(err("", Overrides::default()).contains("no topology source"));
        assert!(err("listen = \"nope\"", file_only("t"))
            .contains("--listen: \"nope\" is not an ip:port"));
        let o = Overrides {
            trusted_proxies: Some(vec!["10.0.0.0/33".into()]),
            ..file_only("t")
        };
        assert!(err("", o).contains("--trusted-proxies: \"10.0.0.0/33\""));
        let o = Overrides {
            etcd: Some(vec!["127.0.0.1:2379".into()]),
            ..Overrides::default()
        };
        assert!(err("", o).contains("must be an http://"));
        let o = Overrides {
            admin_listen: Some("127.0.0.1:8080".into()),
            ..file_only("t")
        };
        assert!(err("", o).contains("already used"));
        assert!(toml::from_str::<FileConfig>("bogus = 1").is_err());
    }

    #[test]
    fn underscore_headers_are_dropped_unless_the_file_or_the_flag_says() {
        let resolve = |f: &str, o: Overrides| Config::resolve(toml::from_str(f).unwrap(), o);
        assert!(
            !resolve("", file_only("t"))
                .unwrap()
                .forward_underscore_headers
        );
        let on = "forward_underscore_headers = true";
        assert!(
            resolve(on, file_only("t"))
                .unwrap()
                .forward_underscore_headers
        );
        let flag = Overrides {
            forward_underscore_headers: Some(true),
            ..file_only("t")
        };
        assert!(resolve("", flag).unwrap().forward_underscore_headers);
    }
}
