//! Assemble and run the gateway: check the configuration, load keys, geo and
//! the first topology, start the control plane, bind the three listeners,
//! each behind its connection limits ([`limits`]) and request-head bounds
//! ([`head`]), idle connections parked between requests ([`idle`]).

pub mod head;
pub mod idle;
pub mod limits;

use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use config_center::file::FileSource;
use config_center::ConfigCenter;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::proxy::http_proxy;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::listening::Service;
use unit_router::Listener;
use unitgate_geo::MmdbGeo;

use crate::admin::Admin;
use crate::config::{Config, TopologySource};
use crate::request::proxy::UnitProxy;
use crate::state::Shared;

/// Everything that can fail before serving, with a clear message. Returns
/// the shared state and notes to log once logging is up (logging starts
/// after these checks, so a bad start-up is exactly one line).
pub fn prepare(cfg: Config) -> Result<(Arc<Shared>, Vec<String>)> {
    let mut notes = Vec::new();
    for (flag, addr) in [
        ("--listen", cfg.listen),
        ("--internal-listen", cfg.internal_listen),
        ("--admin-listen", cfg.admin_listen),
    ] {
        std::net::TcpListener::bind(addr).map_err(|e| anyhow!("{flag} {addr}: {e}"))?;
    }
    let env: std::collections::HashMap<String, String> = std::env::vars().collect();
    let keys = crate::secrets::load(cfg.secrets.as_deref(), &env).map_err(|e| anyhow!(e))?;
    let geo = match &cfg.geo_db {
        Some(p) => Some(Arc::new(MmdbGeo::open(p).context("--geo-db")?)),
        None => None,
    };
    let center = ConfigCenter::new(cfg.state_dir.clone());
    match center.load_last_known_good() {
        Ok(Some(epoch)) => notes.push(format!(
            "loaded the last-known-good snapshot (epoch {epoch})"
        )),
        Ok(None) => {}
        Err(e) => notes.push(format!("last-known-good snapshot not loaded: {e}")),
    }
    if let TopologySource::File(path) = &cfg.topology {
        if let Err(e) = FileSource::new(path, std::time::Duration::from_secs(1)).load(&center) {
            if center.current().is_none() {
                return Err(anyhow!("--topology-file: {e}"));
            }
            notes.push(format!(
                "topology file not applied, serving the last-known-good snapshot: {e}"
            ));
        }
    }
    let shared = Shared::new(cfg, center, keys, geo).context("metrics")?;
    shared.refresh_plane();
    Ok((shared, notes))
}

/// Serve forever (returns only if the control thread cannot start).
pub fn run(shared: Arc<Shared>) -> Result<std::convert::Infallible> {
    let cfg = shared.cfg.clone();
    crate::control::start(shared.clone()).context("starting the control thread")?;
    let conf = ServerConf {
        threads: cfg.threads,
        work_stealing: cfg.work_stealing,
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(10),
        max_retries: usize::from(cfg.max_attempts),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let conf = server.configuration.clone();
    for (name, listener, addr) in [
        ("public", Listener::Public, cfg.listen),
        ("internal", Listener::Internal, cfg.internal_listen),
    ] {
        let proxy = UnitProxy {
            shared: shared.clone(),
            listener,
            duration: shared.metrics.duration.with_label_values(&[name]),
        };
        let per_ip = match listener {
            Listener::Public => Some(cfg.max_connections_per_ip),
            // Unit services share a few addresses: no per-address limit.
            Listener::Internal => None,
        };
        let app = limits::Limited {
            inner: Arc::new(http_proxy(&conf, proxy)),
            counts: limits::ConnCounts::new(limits::ConnLimits {
                per_listener: cfg.max_connections,
                per_ip,
            }),
            head: head::HeadLimits {
                max_bytes: cfg.max_header_bytes,
                timeout: std::time::Duration::from_millis(cfg.header_timeout_ms),
            },
            head_counters: Arc::new(shared.metrics.connections.head_counters(name)),
            parking: idle::Parking {
                first: std::time::Duration::from_millis(cfg.header_timeout_ms),
                between: std::time::Duration::from_secs(cfg.keepalive_idle_s),
                session_keepalive_s: cfg.session_keepalive_s(),
                parked: shared.metrics.connections.idle.with_label_values(&[name]),
            },
            listener: name,
            refused: shared.metrics.connections.refused.clone(),
            open: shared.metrics.connections.open.with_label_values(&[name]),
        };
        let mut svc = Service::new(name.to_owned(), app);
        // No read buffer below the parser by default: the head guard's cap
        // is then what a connection holds (Pingora's default 64 KiB buffer
        // would sit under it on every connection, idle ones included).
        let buffers = L4BufferSettings::default().read(cfg.read_buffer_bytes);
        svc.add_listener(ListenerConfig::tcp(addr.to_string()).l4_buffer(buffers));
        server.add_service(svc);
    }
    let mut admin = Service::new(
        "admin".to_owned(),
        Admin {
            shared: shared.clone(),
        },
    );
    admin.add_tcp(&cfg.admin_listen.to_string());
    server.add_service(admin);
    tracing::info!(
        public = %cfg.listen, internal = %cfg.internal_listen, admin = %cfg.admin_listen,
        id = %cfg.id, "unitgate serving"
    );
    server.run_forever()
}
