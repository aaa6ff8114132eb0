//! Gateway configuration: a TOML file (`--config`) overridden by flags.
//! Every problem is one clear line; nothing starts on a bad config.

use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::IpNet;

mod access;
mod file;
mod observe;
mod sections;
mod stop;

pub use access::AdminLock;
pub use file::{read_file, CertFiles, FileConfig, Overrides, TlsFile};
pub use observe::{LogFormat, Observe};
use sections::{
    checked_id, h2_limits, listeners, merged_tls, plain_listener, tls_config, topology_source,
    trusted_proxies,
};
pub use stop::Stop;

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
    /// Control frames (SETTINGS, PING, PRIORITY, empty DATA, WINDOW_UPDATEs
    /// under 1,024 bytes) a client may send in a burst (refilled at a tenth
    /// of it per second).
    pub max_control_frames: u32,
}

/// Where the topology comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopologySource {
    File(PathBuf),
    Etcd {
        endpoints: Vec<String>,
        prefix: String,
        /// TLS and user, as paths (read at start).
        access: config_center::etcd_access::AccessFiles,
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
    /// `admin_token_file`, `admin_insecure`.
    pub admin_lock: AdminLock,
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
    /// Connections open at once on the admin listener, and from one client
    /// address there (GSLB checkers and scrapers: a few addresses).
    pub admin_max_connections: u32,
    pub admin_max_connections_per_ip: u32,
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
    /// How long a response may make no progress toward the client before
    /// it is ended (HTTP/2: its stream reset; HTTP/1.1: the connection
    /// closed).
    pub send_timeout_ms: u64,
    /// How a SIGTERM stops the gateway (`shutdown_delay_s`, `grace_period_s`).
    pub stop: Stop,
    /// What one response read off an HTTP/1.1 unit may hold in the gateway
    /// while its client takes nothing ([`crate::upstream::flow`]).
    pub response_buffer_bytes: usize,
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
    /// The access log.
    pub observe: Observe,
}

fn addr(name: &str, v: Option<String>, default: &str) -> Result<SocketAddr, ConfigError> {
    let v = v.unwrap_or_else(|| default.to_owned());
    v.parse()
        .map_err(|_| invalid(format!("{name}: {v:?} is not an ip:port address")))
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

/// `within(name, value, default, range)` with the field's own name.
macro_rules! within {
    ($file:ident . $key:ident, $default:expr, $range:expr) => {
        within(stringify!($key), $file.$key, $default, $range)
    };
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
        let topology = source(&mut file, &mut o)?;
        let trusted_proxies =
            trusted_proxies(o.trusted_proxies.take().or(file.trusted_proxies.take()))?;
        let retry_budget_percent = within!(file.retry_budget_percent, 20, 0..=100)?;
        let (send_timeout_ms, response_buffer_bytes) = sends(&file, &o)?;
        let observe = observe::observe(&file, &o)?;
        let stop = stop::stop(&file, &o)?;
        let id = checked_id(o.id.take().or(file.id.take()))?;
        let (listen, internal_listen, admin_listen) = listeners(&mut file, &mut o)?;
        let admin_lock = access::admin_lock(&mut file, &mut o, admin_listen)?;
        let tls_file = merged_tls(o.tls.take(), file.tls.take());
        let tls = tls_config(tls_file)?;
        let (http_listen, https_redirect) = plain_listener(
            &mut file,
            &mut o,
            tls.is_some(),
            [listen, internal_listen, admin_listen],
        )?;
        let proxy_protocol = proxy_protocol(file.proxy_protocol, &trusted_proxies)?;
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
            admin_lock,
            tls,
            http_listen,
            https_redirect,
            proxy_protocol,
            internal_h2c: file.internal_h2c.unwrap_or(true),
            h2,
            observe,
            forward_underscore_headers,
            topology,
            secrets: o.secrets.or(file.secrets),
            geo_db: o.geo_db.or(file.geo_db),
            state_dir: o.state_dir.or(file.state_dir),
            trusted_proxies,
            threads: within!(file.threads, 2, 1..=256)?,
            work_stealing: file.work_stealing.unwrap_or(false),
            max_attempts: within!(file.max_attempts, 3, 1..=8)?,
            max_connections: within!(file.max_connections, 10_000, 1..=1_000_000)?,
            keepalive_idle_s: within!(file.keepalive_idle_s, 30, 1..=3600)?,
            max_connections_per_ip: within!(file.max_connections_per_ip, 256, 1..=1_000_000)?,
            admin_max_connections: within!(file.admin_max_connections, 256, 1..=100_000)?,
            admin_max_connections_per_ip: within!(
                file.admin_max_connections_per_ip,
                64,
                1..=100_000
            )?,
            retry_budget_percent,
            dye_ttl_s: file.dye_ttl_s.unwrap_or(60),
            hint_ttl_s: file.hint_ttl_s.unwrap_or(unit_router::DEFAULT_HINT_TTL_S),
            max_header_bytes: within!(file.max_header_bytes, 32 * 1024, 1024..=1024 * 1024)?,
            header_timeout_ms: within!(file.header_timeout_ms, 5_000, 100..=120_000)?,
            read_buffer_bytes: within!(file.read_buffer_bytes, 0, 0..=1024 * 1024)?,
            body_read_timeout_ms: within!(file.body_read_timeout_ms, 15_000, 100..=600_000)?,
            send_timeout_ms,
            stop,
            response_buffer_bytes,
            max_body_bytes: within!(
                file.max_body_bytes,
                DEFAULT_MAX_BODY_BYTES,
                0..=unit_router::MAX_BODY_BYTES
            )?,
            request_timeout_ms: within!(
                file.request_timeout_ms,
                30_000,
                100..=unit_router::MAX_ROUTE_TIMEOUT_MS
            )?,
            eject_after_failures: file.eject_after_failures.unwrap_or(3).max(1),
            eject_error_rate_percent: within!(file.eject_error_rate_percent, 50, 0..=100)?,
            quota_max_keys: within!(file.quota_max_keys, 100_000, 1_000..=10_000_000)?,
        })
    }
}

/// The topology source and etcd prefix, flags over file.
/// How the gateway sends answers to clients that do not take them:
/// `send_timeout_ms` (the flag wins) and `response_buffer_bytes`.
fn sends(file: &FileConfig, o: &Overrides) -> Result<(u64, usize), ConfigError> {
    let send_timeout_ms = within(
        "send_timeout_ms",
        o.send_timeout_ms.or(file.send_timeout_ms),
        30_000,
        100..=600_000,
    )?;
    let buffer = within!(
        file.response_buffer_bytes,
        128 * 1024,
        96 * 1024..=4 * 1024 * 1024
    )?;
    Ok((send_timeout_ms, buffer))
}

fn source(file: &mut FileConfig, o: &mut Overrides) -> Result<TopologySource, ConfigError> {
    let prefix = o
        .prefix
        .take()
        .or(file.prefix.take())
        .unwrap_or_else(|| "/unitgate".into());
    let access = access::etcd_access(file, o);
    topology_source(
        o.topology_file.take().or(file.topology_file.take()),
        o.etcd.take().or(file.etcd.take()),
        prefix,
        access,
    )
}

/// PROXY protocol headers are taken only from named load balancers.
fn proxy_protocol(on: Option<bool>, trusted: &[IpNet]) -> Result<bool, ConfigError> {
    let on = on.unwrap_or(false);
    if on && trusted.is_empty() {
        return Err(invalid(
            "proxy_protocol: name the load balancers it is taken from in trusted_proxies",
        ));
    }
    Ok(on)
}

/// Body limit of a route that sets none: 8 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 8 * 1024 * 1024;

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
    fn admin_connection_limits_have_defaults_and_bounds() {
        let resolve = |f: &str| Config::resolve(toml::from_str(f).unwrap(), file_only("t"));
        let c = resolve("").unwrap();
        assert_eq!(
            (c.admin_max_connections, c.admin_max_connections_per_ip),
            (256, 64)
        );
        let c = resolve("admin_max_connections = 8\nadmin_max_connections_per_ip = 2").unwrap();
        assert_eq!(
            (c.admin_max_connections, c.admin_max_connections_per_ip),
            (8, 2)
        );
        let e = resolve("admin_max_connections_per_ip = 0").unwrap_err();
        assert_eq!(
            e.to_string(),
            "admin_max_connections_per_ip: 0 is not within 1..=100000"
        );
    }

    #[test]
    fn the_response_buffer_has_a_default_and_bounds() {
        let resolve = |f: &str| Config::resolve(toml::from_str(f).unwrap(), file_only("t"));
        assert_eq!(resolve("").unwrap().response_buffer_bytes, 128 * 1024);
        let c = resolve("response_buffer_bytes = 1048576").unwrap();
        assert_eq!(c.response_buffer_bytes, 1 << 20);
        let e = resolve("response_buffer_bytes = 65536").unwrap_err();
        assert_eq!(
            e.to_string(),
            "response_buffer_bytes: 65536 is not within 98304..=4194304"
        );
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
