//! The bare Pingora proxy: one `upstream_peer` to one origin, nothing else,
//! Pingora's default settings and the system allocator. The bench harness
//! runs it beside unitgate so that every run measures the framework's own
//! ceiling on the same machine.
#![forbid(unsafe_code)]

use async_trait::async_trait;
use clap::Parser;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

/// A bare Pingora 0.9 reverse proxy to one origin.
#[derive(Debug, Parser)]
#[command(name = "bare-proxy")]
struct Args {
    /// Address to listen on (host:port).
    #[arg(long)]
    listen: String,
    /// Origin to proxy every request to (host:port).
    #[arg(long)]
    upstream: String,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Turn Pingora's work stealing off (on by default).
    #[arg(long)]
    no_work_stealing: bool,
}

struct Bare {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(&self, _: &mut Session, _: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let conf = ServerConf {
        threads: args.threads,
        work_stealing: !args.no_work_stealing,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut svc = http_proxy_service(
        &server.configuration,
        Bare {
            upstream: args.upstream,
        },
    );
    svc.add_tcp(&args.listen);
    server.add_service(svc);
    server.run_forever()
}
