//! Demo unit services: one small HTTP server per endpoint of a topology,
//! answering every request with its unit, service and what it received
//! (method, path, user header, baggage). Used by the README demo.

use std::collections::BTreeSet;
use std::path::Path;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::listening::Service;
use serde_json::json;

/// One demo endpoint.
pub struct DemoUnit {
    pub unit: String,
    pub service: String,
    pub addr: String,
}

#[async_trait]
impl ServeHttp for DemoUnit {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let header = |n: &str| {
            req.headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let body = json!({
            "unit": self.unit,
            "service": self.service,
            "endpoint": self.addr,
            "method": req.method.as_str(),
            "path": req.uri.to_string(),
            "user": header("x-user-id"),
            "baggage": header("baggage"),
            "forwarded_for": header("x-forwarded-for"),
            "x-auth-user": header("x-auth-user"),
            "x-auth-tenant": header("x-auth-tenant"),
            "x-auth-issuer": header("x-auth-issuer"),
        })
        .to_string()
            + "\n";
        crate::admin::reply(200, "application/json", body.into_bytes())
    }
}

/// Serve every endpoint of the topology file except those of `down` units.
pub fn run(topology: &Path, down: &[String]) -> anyhow::Result<()> {
    let kv = config_center::kv::read_document(topology)?;
    let topo = unit_router::Topology::build(0, &kv, 0)
        .map_err(|e| anyhow::anyhow!("{}: {e}", topology.display()))?;
    let known: BTreeSet<&str> = topo.units.iter().map(|u| u.name.as_str()).collect();
    for d in down {
        if !known.contains(d.as_str()) {
            anyhow::bail!("--down: unknown unit {d:?}");
        }
    }
    let conf = ServerConf {
        threads: 1,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    for u in topo.units.iter().filter(|u| !down.contains(&u.name)) {
        for (s, name) in topo.services.iter().enumerate() {
            for ep in u.endpoints(unit_router::ServiceId(s as u16)) {
                let addr = ep.to_string();
                std::net::TcpListener::bind(ep)
                    .map_err(|e| anyhow::anyhow!("demo unit {} {name} on {addr}: {e}", u.name))?;
                let app = DemoUnit {
                    unit: u.name.clone(),
                    service: name.clone(),
                    addr: addr.clone(),
                };
                let mut svc = Service::new(format!("{}-{name}", u.name), app);
                svc.add_tcp(&addr);
                server.add_service(svc);
                println!("demo unit {:<5} {:<8} on {addr}", u.name, name);
            }
        }
    }
    server.run_forever()
}
