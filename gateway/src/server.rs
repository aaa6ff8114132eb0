//! Assemble and run the gateway: check the configuration, load keys, geo,
//! certificates and the first topology ([`prepare`]), start the control
//! plane, and bind the listeners (public, internal, admin, and a plain HTTP
//! one beside an HTTPS public listener), each behind its connection
//! pipeline ([`crate::listen::pipeline`]) ([`run`]).

use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use config_center::file::FileSource;
use config_center::ConfigCenter;
use pingora::apps::HttpServerApp;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::proxy::{http_proxy, HttpProxy};
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::listening::Service;
use unit_router::Listener;
use unitgate_geo::MmdbGeo;

use crate::admin::Admin;
use crate::config::{Config, TopologySource};
use crate::listen::pipeline::{self, ConnectionPipeline};
use crate::listen::{admission, head, idle};
use crate::request::proxy::UnitProxy;
use crate::state::Shared;

/// Everything that can fail before serving, with a clear message. Returns
/// the shared state and notes to log once logging is up (logging starts
/// after these checks, so a bad start-up is exactly one line).
/// `upgrade`: the listening sockets come from the running gateway, so the
/// addresses are taken and not tried.
pub fn prepare(cfg: Config, upgrade: bool) -> Result<(Arc<Shared>, Vec<String>)> {
    let mut notes = Vec::new();
    let mut binds = vec![
        ("--listen", cfg.listen),
        ("--internal-listen", cfg.internal_listen),
        ("--admin-listen", cfg.admin_listen),
    ];
    binds.extend(cfg.http_listen.map(|a| ("--http-listen", a)));
    for (flag, addr) in binds.into_iter().filter(|_| !upgrade) {
        std::net::TcpListener::bind(addr).map_err(|e| anyhow!("{flag} {addr}: {e}"))?;
    }
    let tls = match &cfg.tls {
        Some(t) => Some(crate::tls::reload::load(t).context("TLS certificates")?),
        None => None,
    };
    let env: std::collections::HashMap<String, String> = std::env::vars().collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let keys = crate::secrets::LiveKeys::start(cfg.secrets.as_deref(), &env, now)
        .map_err(|e| anyhow!(e))?;
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
    let shared = Shared::new(cfg, center, keys, geo, tls)?;
    if let TopologySource::Etcd {
        endpoints, prefix, ..
    } = &shared.cfg.topology
    {
        probe_etcd(&shared, endpoints, prefix, &mut notes)?;
    }
    shared.refresh_plane();
    Ok((shared, notes))
}

/// Reach etcd once before serving: credentials or a CA it refuses are a
/// start-up error naming the problem; etcd down is not (the gateway
/// serves its last-known-good snapshot and keeps trying).
fn probe_etcd(
    shared: &Shared,
    endpoints: &[String],
    prefix: &str,
    notes: &mut Vec<String>,
) -> Result<()> {
    use config_center::etcd::{probe, EtcdOptions, ProbeError};
    let opts = EtcdOptions {
        access: shared.etcd_access.clone(),
        ..EtcdOptions::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("a runtime for the etcd check")?;
    // Each endpoint is tried three times at most, 2 s to connect each time.
    let budget = std::time::Duration::from_secs(10);
    let checked =
        rt.block_on(async { tokio::time::timeout(budget, probe(endpoints, prefix, &opts)).await });
    // A TLS check still blocked in its thread is not waited for.
    rt.shutdown_background();
    match checked {
        Ok(Ok(())) => {}
        Ok(Err(e @ ProbeError::Refused { .. })) => return Err(anyhow!("--etcd: {e}")),
        Ok(Err(e @ ProbeError::Unreachable { .. })) => {
            notes.push(format!("{e}; retrying in the background"));
        }
        Err(_) => notes.push(format!(
            "etcd at {} did not answer within {budget:?}; retrying in the background",
            endpoints.join(",")
        )),
    }
    Ok(())
}

/// Serve until stopped (returns only if the gateway cannot start).
/// `upgrade`: take the listening sockets of the running gateway once it
/// gets SIGQUIT, after the topology is loaded.
pub fn run(shared: Arc<Shared>, upgrade: bool) -> Result<std::convert::Infallible> {
    let cfg = shared.cfg.clone();
    crate::control::start(shared.clone()).context("starting the control thread")?;
    let upgrade_sock = cfg
        .stop
        .upgrade_sock
        .as_ref()
        .map(|p| p.display().to_string());
    if upgrade {
        let Some(sock) = &upgrade_sock else {
            bail!("--upgrade needs --state-dir or upgrade_sock: where the running gateway hands its sockets over");
        };
        crate::stop::wait_for_topology(&shared, std::time::Duration::from_secs(30))?;
        tracing::info!(
            sock,
            "topology loaded; waiting for the running gateway's sockets (send it SIGQUIT)"
        );
    }
    let conf = ServerConf {
        threads: cfg.threads,
        work_stealing: cfg.work_stealing,
        // The grace period ends early once no connection is left
        // (`drained`); what still runs after it is cut.
        grace_period_seconds: Some(cfg.stop.grace.as_secs()),
        graceful_shutdown_timeout_seconds: Some(1),
        max_retries: usize::from(cfg.max_attempts),
        // No socket: a SIGQUIT has nowhere to send the listeners and the
        // gateway keeps serving.
        upgrade_sock: upgrade_sock.unwrap_or_default(),
        ..ServerConf::default()
    };
    let opt = pingora::server::configuration::Opt {
        upgrade,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    let conf = server.configuration.clone();
    // Every client connection, from accept: the stop waits for none left.
    let live = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for plan in plans(&shared)? {
        server.add_service(proxy_service(&shared, &conf, plan, &live));
    }
    server.add_service(admin_service(&shared, &live));
    tracing::info!(
        public = %cfg.listen, internal = %cfg.internal_listen, admin = %cfg.admin_listen,
        http = ?cfg.http_listen, tls = cfg.tls.is_some(), id = %cfg.id, "unitgate serving"
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(crate::stop::StopSignals::new(shared.clone())),
        drained: Some(Box::new(move || {
            live.load(std::sync::atomic::Ordering::SeqCst) == 0
        })),
    });
    // The listeners are closed and their requests ended: the registration
    // goes, and the lines and spans still queued go out, before the
    // process does.
    if !shared
        .stopping
        .deregister(std::time::Duration::from_secs(2))
    {
        tracing::warn!(
            "gateways/{} not deleted within 2 s; its lease expires on its own",
            cfg.id
        );
    }
    shared.access.close(std::time::Duration::from_secs(2));
    if let Some(spans) = &shared.spans {
        spans.shutdown();
    }
    std::process::exit(0)
}

/// The proxy listeners to bind: public, internal, and the plain HTTP one
/// beside an HTTPS public listener.
fn plans(shared: &Shared) -> Result<Vec<ListenerPlan>> {
    let cfg = &shared.cfg;
    let terminator = match &shared.tls {
        Some(certs) => Some(Arc::new(
            crate::tls::Terminator::new(certs.clone()).context("TLS settings")?,
        )),
        None => None,
    };
    let internal_tls = cfg.tls.as_ref().is_some_and(|t| t.internal);
    let trusted: Arc<[ipnet::IpNet]> = cfg.trusted_proxies.clone().into();
    let proxy_protocol = cfg.proxy_protocol.then_some(trusted);
    let limits = admission::ConnLimits {
        per_listener: cfg.max_connections,
        per_ip: Some(cfg.max_connections_per_ip),
    };
    let mut listeners = vec![
        ListenerPlan {
            listener: Listener::Public,
            gate: Gate {
                name: "public",
                addr: cfg.listen,
                limits,
                tls: terminator.clone(),
                proxy_protocol: proxy_protocol.clone(),
                h2c: false,
            },
            redirect: None,
        },
        ListenerPlan {
            listener: Listener::Internal,
            gate: Gate {
                name: "internal",
                addr: cfg.internal_listen,
                // Unit services share a few addresses: no per-address limit.
                limits: admission::ConnLimits {
                    per_ip: None,
                    ..limits
                },
                tls: terminator.filter(|_| internal_tls),
                proxy_protocol: None,
                h2c: cfg.internal_h2c,
            },
            redirect: None,
        },
    ];
    if let Some(addr) = cfg.http_listen {
        let redirect = Arc::new(crate::request::redirect::HttpsRedirect::new(
            cfg.https_redirect.clone(),
            cfg.listen.port(),
        ));
        listeners.push(ListenerPlan {
            listener: Listener::Public,
            gate: Gate {
                name: "http",
                addr,
                limits,
                tls: None,
                proxy_protocol,
                h2c: false,
            },
            // No listed host: nothing to look up on each request.
            redirect: (!cfg.https_redirect.is_empty()).then_some(redirect),
        });
    }
    Ok(listeners)
}

/// One proxy listener: the proxy app behind its connection pipeline.
fn proxy_service(
    shared: &Arc<Shared>,
    conf: &Arc<ServerConf>,
    plan: ListenerPlan,
    live: &Arc<std::sync::atomic::AtomicUsize>,
) -> Service<ConnectionPipeline<HttpProxy<UnitProxy>>> {
    let cfg = &shared.cfg;
    let name = plan.gate.name;
    let proxy = UnitProxy {
        shared: shared.clone(),
        listener: plan.listener,
        name,
        redirect: plan.redirect,
    };
    let mut app = http_proxy(conf, proxy);
    app.h2_options = Some(h2_options(cfg));
    let mut options = pingora::apps::HttpServerOptions::default();
    options.h2_idle_timeout = Some(std::time::Duration::from_secs(cfg.keepalive_idle_s));
    // CONNECT reaches the hooks, which refuse it with the gateway's own
    // 405 (the framework would answer it before them, in its own shape).
    options.allow_connect_method_proxying = true;
    app.server_options = Some(options);
    gated(shared, plan.gate, app, live)
}

/// The admin listener: the admin app behind a connection pipeline of its
/// own limits and the edge's head bounds; plain HTTP/1 only.
fn admin_service(
    shared: &Arc<Shared>,
    live: &Arc<std::sync::atomic::AtomicUsize>,
) -> Service<ConnectionPipeline<Admin>> {
    let cfg = &shared.cfg;
    let gate = Gate {
        name: "admin",
        addr: cfg.admin_listen,
        limits: admission::ConnLimits {
            per_listener: cfg.admin_max_connections,
            per_ip: Some(cfg.admin_max_connections_per_ip),
        },
        tls: None,
        proxy_protocol: None,
        h2c: false,
    };
    let admin = Admin {
        shared: shared.clone(),
    };
    gated(shared, gate, admin, live)
}

/// `app` behind the connection pipeline of `gate` (admission, TLS, head
/// and frame guards, idle parking, its metrics labelled with the
/// listener's name), listening on `gate.addr`.
fn gated<A>(
    shared: &Shared,
    gate: Gate,
    app: A,
    live: &Arc<std::sync::atomic::AtomicUsize>,
) -> Service<ConnectionPipeline<A>>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    let cfg = &shared.cfg;
    let name = gate.name;
    let head_timeout = std::time::Duration::from_millis(cfg.header_timeout_ms);
    let connections = &shared.metrics.connections;
    let app = ConnectionPipeline {
        inner: Arc::new(app),
        counts: admission::ConnCounts::new(gate.limits),
        head: head::HeadLimits {
            max_bytes: cfg.max_header_bytes,
            timeout: head_timeout,
            send_timeout: std::time::Duration::from_millis(cfg.send_timeout_ms),
        },
        head_counters: Arc::new(head::HeadCounters {
            log: Some(head::HeadLog {
                access: shared.access.clone(),
                listener: name,
            }),
            ..connections.head_counters(name)
        }),
        parking: idle::Parking {
            first: head_timeout,
            between: std::time::Duration::from_secs(cfg.keepalive_idle_s),
            session_keepalive_s: cfg.session_keepalive_s(),
            parked: connections.idle.with_label_values(&[name]),
        },
        listener: name,
        refused: connections.refused.clone(),
        open: connections.open.with_label_values(&[name]),
        live: live.clone(),
        edge: pipeline::Edge {
            tls: gate.tls,
            proxy_protocol: gate.proxy_protocol,
            h2: idle::H2c {
                limits: cfg.h2,
                timeout: head_timeout,
                counters: Arc::new(connections.frame_counters(name)),
            },
            h2c: gate.h2c,
            refused: connections.edge_refused.clone(),
        },
    };
    let mut svc = Service::new(name.to_owned(), app);
    // No read buffer below the parser by default: the head guard's cap is
    // then what a connection holds (Pingora's default 64 KiB buffer would
    // sit under it on every connection, idle ones included).
    let buffers = L4BufferSettings::default().read(cfg.read_buffer_bytes);
    svc.add_listener(ListenerConfig::tcp(gate.addr.to_string()).l4_buffer(buffers));
    svc
}

/// One proxy listener to bind: its connections, and what its requests
/// are routed as.
struct ListenerPlan {
    listener: Listener,
    gate: Gate,
    redirect: Option<Arc<crate::request::redirect::HttpsRedirect>>,
}

/// A listener's connection side: its name (the metrics' `listener`
/// label), address, connection limits and what it speaks below HTTP/1.
struct Gate {
    name: &'static str,
    addr: std::net::SocketAddr,
    limits: admission::ConnLimits,
    tls: Option<Arc<crate::tls::Terminator>>,
    proxy_protocol: Option<Arc<[ipnet::IpNet]>>,
    h2c: bool,
}

/// Bytes one HTTP/2 stream may queue toward the client's socket: one
/// frame (more did not download faster, `buffering::measure_downloads`).
const H2_SEND_BUFFER: usize = 16 * 1024;

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
        // What one stream may queue ahead of the connection's socket: a
        // client that opened its window and stopped reading its socket
        // holds this much per stream (`docs/security.md`).
        .max_send_buffer_size(H2_SEND_BUFFER)
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(Some(256))
        .max_concurrent_reset_streams(10);
    o
}
