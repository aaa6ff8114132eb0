//! One section of the configuration each: the topology source, trusted
//! proxies, the listeners, TLS, HTTP/2 limits, the plain listener beside
//! HTTPS; each checked, each error naming its key or flag.

use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::IpNet;

use super::{
    addr, invalid, within, ConfigError, FileConfig, H2Limits, Overrides, TlsFile, TopologySource,
};

/// The topology source from flags over file.
pub(super) fn topology_source(
    topology_file: Option<PathBuf>,
    etcd: Option<Vec<String>>,
    prefix: String,
    access: config_center::etcd_access::AccessFiles,
) -> Result<TopologySource, ConfigError> {
    match (topology_file, etcd) {
        (Some(_), Some(_)) => Err(invalid("give either --topology-file or --etcd, not both")),
        (Some(_), None) if access != Default::default() => Err(invalid(
            "etcd_ca_file, etcd_cert_file, etcd_key_file, etcd_user and etcd_password_file need --etcd",
        )),
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
            access.check_endpoints(&e).map_err(|e| invalid(e.0))?;
            Ok(TopologySource::Etcd {
                endpoints: e,
                prefix,
                access,
            })
        }
        (None, None) => Err(invalid(
            "no topology source: give --topology-file PATH or --etcd URL (see --help)",
        )),
    }
}

/// Trusted proxy networks (CIDRs or single addresses).
pub(super) fn trusted_proxies(list: Option<Vec<String>>) -> Result<Vec<IpNet>, ConfigError> {
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

/// The three listeners, each on its own address.
pub(super) fn listeners(
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

pub(super) fn tls_config(t: Option<TlsFile>) -> Result<Option<crate::tls::TlsConfig>, ConfigError> {
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

pub(super) fn h2_limits(file: &FileConfig) -> Result<H2Limits, ConfigError> {
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

/// A flag's certificate directory replaces the file's, keeping the rest of
/// its `[tls]` section.
pub(super) fn merged_tls(flag: Option<TlsFile>, file: Option<TlsFile>) -> Option<TlsFile> {
    match (flag, file) {
        (Some(flag), Some(mut f)) => {
            f.cert_dir = flag.cert_dir.or(f.cert_dir);
            Some(f)
        }
        (flag, f) => flag.or(f),
    }
}

/// The plain listener beside an HTTPS public one, and the hosts it sends
/// to HTTPS.
pub(super) fn plain_listener(
    file: &mut FileConfig,
    o: &mut Overrides,
    tls: bool,
    taken: [SocketAddr; 3],
) -> Result<(Option<SocketAddr>, Vec<String>), ConfigError> {
    let http_listen = match o.http_listen.take().or(file.http_listen.take()) {
        None => None,
        Some(v) => {
            let a = addr("--http-listen", Some(v), "")?;
            if taken.contains(&a) {
                return Err(invalid(format!(
                    "--http-listen: {a} is already used by another listener"
                )));
            }
            if !tls {
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
    Ok((http_listen, https_redirect))
}

/// The gateway's id: given, or `<hostname>-<pid>`; no `/` or spaces.
pub(super) fn checked_id(id: Option<String>) -> Result<String, ConfigError> {
    let id = id.unwrap_or_else(default_id);
    if id.is_empty() || id.contains(['/', ' ']) {
        return Err(invalid(format!(
            "id: {id:?} must be non-empty without '/' or spaces"
        )));
    }
    Ok(id)
}

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
