//! Assemble and run the gateway: check the configuration, load keys, geo,
//! certificates and the first topology, start the control plane, bind the
//! listeners (public, internal, admin, and a plain HTTP one beside an HTTPS
//! public listener), each behind its connection limits ([`limits`]), a
//! PROXY protocol header where configured ([`proxy_protocol`]), TLS
//! ([`crate::tls`]), and request-read bounds: HTTP/1 heads ([`head`]) or
//! HTTP/2 frames ([`h2_guard`]); idle connections parked between requests
//! ([`idle`]).

/// The traits of Pingora's `IO` that a connection wrapper (`Conn`,
/// `HeadGuard`, `FrameGuard`) passes to the stream under it, its `inner`
/// field: `delegate_to_inner!(Type: Trait, ...)`. Each wrapper writes the
/// ones it changes itself.
macro_rules! delegate_to_inner {
    ($t:ty: $($tr:ident),+ $(,)?) => { $( delegate_to_inner!(@ $tr $t); )+ };
    (@ Shutdown $t:ty) => {
        #[async_trait::async_trait]
        impl pingora::protocols::Shutdown for $t {
            async fn shutdown(&mut self) {
                pingora::protocols::Shutdown::shutdown(&mut *self.inner).await
            }
        }
    };
    (@ UniqueID $t:ty) => {
        impl pingora::protocols::UniqueID for $t {
            fn id(&self) -> pingora::protocols::UniqueIDType {
                pingora::protocols::UniqueID::id(&*self.inner)
            }
        }
    };
    (@ Ssl $t:ty) => {
        impl pingora::protocols::Ssl for $t {
            fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
                pingora::protocols::Ssl::get_ssl(&*self.inner)
            }
            fn get_ssl_digest(&self) -> Option<std::sync::Arc<pingora::protocols::tls::SslDigest>> {
                pingora::protocols::Ssl::get_ssl_digest(&*self.inner)
            }
            fn selected_alpn_proto(&self) -> Option<pingora::protocols::ALPN> {
                pingora::protocols::Ssl::selected_alpn_proto(&*self.inner)
            }
        }
    };
    (@ GetTimingDigest $t:ty) => {
        impl pingora::protocols::GetTimingDigest for $t {
            fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
                pingora::protocols::GetTimingDigest::get_timing_digest(&*self.inner)
            }
        }
    };
    (@ GetProxyDigest $t:ty) => {
        impl pingora::protocols::GetProxyDigest for $t {
            fn get_proxy_digest(
                &self,
            ) -> Option<std::sync::Arc<pingora::protocols::raw_connect::ProxyDigest>> {
                pingora::protocols::GetProxyDigest::get_proxy_digest(&*self.inner)
            }
        }
    };
    (@ GetSocketDigest $t:ty) => {
        impl pingora::protocols::GetSocketDigest for $t {
            fn get_socket_digest(&self) -> Option<std::sync::Arc<pingora::protocols::SocketDigest>> {
                pingora::protocols::GetSocketDigest::get_socket_digest(&*self.inner)
            }
        }
    };
}
use delegate_to_inner;

pub mod conn;
pub mod h2_guard;
pub mod head;
pub mod idle;
pub mod limits;
pub mod proxy_protocol;

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
    let mut binds = vec![
        ("--listen", cfg.listen),
        ("--internal-listen", cfg.internal_listen),
        ("--admin-listen", cfg.admin_listen),
    ];
    binds.extend(cfg.http_listen.map(|a| ("--http-listen", a)));
    for (flag, addr) in binds {
        std::net::TcpListener::bind(addr).map_err(|e| anyhow!("{flag} {addr}: {e}"))?;
    }
    let tls = match &cfg.tls {
        Some(t) => Some(crate::tls::reload::load(t).context("TLS certificates")?),
        None => None,
    };
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
    let shared = Shared::new(cfg, center, keys, geo, tls).context("metrics")?;
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
    let terminator = match &shared.tls {
        Some(certs) => Some(Arc::new(
            crate::tls::Terminator::new(certs.clone()).context("TLS settings")?,
        )),
        None => None,
    };
    let internal_tls = cfg.tls.as_ref().is_some_and(|t| t.internal);
    let trusted: Arc<[ipnet::IpNet]> = cfg.trusted_proxies.clone().into();
    let proxy_protocol = cfg.proxy_protocol.then_some(trusted);
    let redirect = Arc::new(crate::request::redirect::HttpsRedirect::new(
        cfg.https_redirect.clone(),
        cfg.listen.port(),
    ));
    let mut listeners = vec![
        ListenerPlan {
            name: "public",
            listener: Listener::Public,
            addr: cfg.listen,
            tls: terminator.clone(),
            proxy_protocol: proxy_protocol.clone(),
            h2c: false,
            redirect: None,
        },
        ListenerPlan {
            name: "internal",
            listener: Listener::Internal,
            addr: cfg.internal_listen,
            tls: terminator.clone().filter(|_| internal_tls),
            proxy_protocol: None,
            h2c: cfg.internal_h2c,
            redirect: None,
        },
    ];
    if let Some(addr) = cfg.http_listen {
        listeners.push(ListenerPlan {
            name: "http",
            listener: Listener::Public,
            addr,
            tls: None,
            proxy_protocol,
            h2c: false,
            // No listed host: nothing to look up on each request.
            redirect: (!cfg.https_redirect.is_empty()).then_some(redirect),
        });
    }
    for plan in listeners {
        let ListenerPlan {
            name,
            listener,
            addr,
            ..
        } = plan;
        let proxy = UnitProxy {
            shared: shared.clone(),
            listener,
            duration: shared.metrics.duration.with_label_values(&[name]),
            redirect: plan.redirect,
        };
        let mut app = http_proxy(&conf, proxy);
        app.h2_options = Some(h2_options(&cfg));
        let mut options = pingora::apps::HttpServerOptions::default();
        options.h2_idle_timeout = Some(std::time::Duration::from_secs(cfg.keepalive_idle_s));
        app.server_options = Some(options);
        let per_ip = match listener {
            Listener::Public => Some(cfg.max_connections_per_ip),
            // Unit services share a few addresses: no per-address limit.
            Listener::Internal => None,
        };
        let head_timeout = std::time::Duration::from_millis(cfg.header_timeout_ms);
        let app = limits::Limited {
            inner: Arc::new(app),
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
            edge: limits::Edge {
                tls: plan.tls,
                proxy_protocol: plan.proxy_protocol,
                h2: idle::H2c {
                    limits: cfg.h2,
                    timeout: head_timeout,
                    counters: Arc::new(shared.metrics.connections.frame_counters(name)),
                },
                h2c: plan.h2c,
                refused: shared.metrics.connections.edge_refused.clone(),
            },
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
        http = ?cfg.http_listen, tls = cfg.tls.is_some(), id = %cfg.id, "unitgate serving"
    );
    server.run_forever()
}

/// One proxy listener to bind.
struct ListenerPlan {
    name: &'static str,
    listener: Listener,
    addr: std::net::SocketAddr,
    tls: Option<Arc<crate::tls::Terminator>>,
    proxy_protocol: Option<Arc<[ipnet::IpNet]>>,
    h2c: bool,
    redirect: Option<Arc<crate::request::redirect::HttpsRedirect>>,
}

/// The HTTP/2 settings the gateway advertises: streams, flow control and
/// header lists bounded, the `h2` library's reset-stream bounds kept at
/// their (CVE-2023-44487-hardened) values (`docs/edge.md`).
fn h2_options(cfg: &Config) -> pingora::protocols::http::v2::server::H2Options {
    let mut o = pingora::protocols::http::v2::server::default_h2_options();
    let h2 = cfg.h2;
    o.max_concurrent_streams(h2.max_concurrent_streams)
        .initial_window_size(h2.stream_window)
        .initial_connection_window_size(h2.connection_window)
        .max_frame_size(16_384)
        .header_table_size(4_096)
        .max_header_list_size(u32::try_from(cfg.max_header_bytes).unwrap_or(u32::MAX))
        .max_send_buffer_size(256 * 1024)
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(Some(256))
        .max_concurrent_reset_streams(10);
    o
}
