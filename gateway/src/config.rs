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
    pub max_attempts: Option<u8>,
    pub retry_budget_percent: Option<u32>,
    pub dye_ttl_s: Option<u64>,
    pub hint_ttl_s: Option<u64>,
    pub max_header_bytes: Option<usize>,
    pub eject_after_failures: Option<u32>,
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
    /// Upstream attempts per request, first one included.
    pub max_attempts: u8,
    /// Retries allowed as a percentage of recent requests (plus a floor).
    pub retry_budget_percent: u32,
    pub dye_ttl_s: u64,
    pub hint_ttl_s: u64,
    /// Request header block limit (431 above it).
    pub max_header_bytes: usize,
    /// Consecutive failures that eject an endpoint.
    pub eject_after_failures: u32,
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

impl Config {
    /// Merge file and flags and check the result.
    pub fn resolve(file: FileConfig, o: Overrides) -> Result<Config, ConfigError> {
        let topology_file = o.topology_file.or(file.topology_file);
        let etcd = o.etcd.or(file.etcd);
        let prefix = o
            .prefix
            .or(file.prefix)
            .unwrap_or_else(|| "/unitgate".into());
        let topology = match (topology_file, etcd) {
            (Some(_), Some(_)) => {
                return Err(invalid("give either --topology-file or --etcd, not both"))
            }
            (Some(f), None) => TopologySource::File(f),
            (None, Some(e)) if e.is_empty() => return Err(invalid("--etcd: no endpoint given")),
            (None, Some(e)) => {
                for ep in &e {
                    if !(ep.starts_with("http://") || ep.starts_with("https://")) {
                        return Err(invalid(format!(
                            "--etcd: {ep:?} must be an http:// or https:// URL"
                        )));
                    }
                }
                TopologySource::Etcd {
                    endpoints: e,
                    prefix,
                }
            }
            (None, None) => {
                return Err(invalid(
                    "no topology source: give --topology-file PATH or --etcd URL (see --help)",
                ))
            }
        };
        let trusted_proxies = o
            .trusted_proxies
            .or(file.trusted_proxies)
            .unwrap_or_default()
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                let s = s.trim();
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        invalid(format!(
                            "--trusted-proxies: {s:?} is not a CIDR or IP address"
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let max_attempts = file.max_attempts.unwrap_or(3);
        if !(1..=8).contains(&max_attempts) {
            return Err(invalid(format!(
                "max_attempts: {max_attempts} is not within 1..=8"
            )));
        }
        let retry_budget_percent = file.retry_budget_percent.unwrap_or(20);
        if retry_budget_percent > 100 {
            return Err(invalid(format!(
                "retry_budget_percent: {retry_budget_percent} is above 100"
            )));
        }
        let threads = file.threads.unwrap_or(2);
        if threads == 0 || threads > 256 {
            return Err(invalid(format!("threads: {threads} is not within 1..=256")));
        }
        let id = o.id.or(file.id).unwrap_or_else(default_id);
        if id.is_empty() || id.contains(['/', ' ']) {
            return Err(invalid(format!(
                "id: {id:?} must be non-empty without '/' or spaces"
            )));
        }
        let cfg = Config {
            id,
            region: o.region.or(file.region),
            dc: o.dc.or(file.dc),
            listen: addr("--listen", o.listen.or(file.listen), "127.0.0.1:8080")?,
            internal_listen: addr(
                "--internal-listen",
                o.internal_listen.or(file.internal_listen),
                "127.0.0.1:8081",
            )?,
            admin_listen: addr(
                "--admin-listen",
                o.admin_listen.or(file.admin_listen),
                "127.0.0.1:8082",
            )?,
            topology,
            secrets: o.secrets.or(file.secrets),
            geo_db: o.geo_db.or(file.geo_db),
            state_dir: o.state_dir.or(file.state_dir),
            trusted_proxies,
            threads,
            max_attempts,
            retry_budget_percent,
            dye_ttl_s: file.dye_ttl_s.unwrap_or(60),
            hint_ttl_s: file.hint_ttl_s.unwrap_or(unit_router::DEFAULT_HINT_TTL_S),
            max_header_bytes: file.max_header_bytes.unwrap_or(32 * 1024),
            eject_after_failures: file.eject_after_failures.unwrap_or(3).max(1),
        };
        let mut seen = std::collections::HashSet::new();
        for (n, a) in [
            ("listen", cfg.listen),
            ("internal-listen", cfg.internal_listen),
            ("admin-listen", cfg.admin_listen),
        ] {
            if !seen.insert(a) {
                return Err(invalid(format!(
                    "--{n}: {a} is already used by another listener"
                )));
            }
        }
        Ok(cfg)
    }
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
}
