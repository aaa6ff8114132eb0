//! The `unitgate` binary.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use unitgate::config::{read_file, Config, FileConfig, LogFormat, Overrides};

/// jemalloc as the allocator, with its background threads returning freed
/// pages: the memory a burst of connections took goes back once they close
/// (glibc's malloc kept it, 2,000 idle connections left 58 MB behind;
/// mimalloc purges only when its threads allocate again;
/// `docs/security.md`).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// unitgate: edge API gateway for unit-based multi-active deployments.
///
/// Routes each request to the user's home unit (by shard or region), keeps
/// users there with a signed routing cookie, hints clients at their regional
/// entry, fails over between units with a signed dye, and follows drains
/// written to etcd. Flags override the --config file.
#[derive(Debug, Parser)]
#[command(name = "unitgate", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// TOML configuration file (every key optional; flags win).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Topology from a YAML/JSON file (hot-reloaded), no etcd needed.
    #[arg(long, conflicts_with = "etcd")]
    topology_file: Option<PathBuf>,
    /// Topology from etcd (comma-separated endpoints, http://host:port).
    #[arg(long, value_delimiter = ',')]
    etcd: Option<Vec<String>>,
    /// Key prefix of the topology in etcd [default: /unitgate].
    #[arg(long)]
    prefix: Option<String>,
    /// The CA that signed etcd's certificate (PEM; https:// endpoints).
    #[arg(long)]
    etcd_ca_file: Option<PathBuf>,
    /// A client certificate for etcd (PEM, with --etcd-key-file).
    #[arg(long)]
    etcd_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long)]
    etcd_key_file: Option<PathBuf>,
    /// etcd user (with --etcd-password-file).
    #[arg(long)]
    etcd_user: Option<String>,
    /// A file holding the etcd user's password (never the password itself).
    #[arg(long)]
    etcd_password_file: Option<PathBuf>,
    /// Bearer tokens the admin listener requires for everything but
    /// /healthz, /readyz and /gslb/dc/<dc> (one a line; reloaded).
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// Serve the admin listener on a non-loopback address without a token.
    #[arg(long)]
    admin_insecure: bool,
    /// Public listener, for untrusted clients [default: 127.0.0.1:8080].
    #[arg(long)]
    listen: Option<String>,
    /// Internal listener, for services inside units [default: 127.0.0.1:8081].
    #[arg(long)]
    internal_listen: Option<String>,
    /// Admin listener: /healthz /readyz /status /metrics /gslb/dc/<dc> [default: 127.0.0.1:8082].
    #[arg(long)]
    admin_listen: Option<String>,
    /// Region this gateway serves (GSLB hints, policy region fallback).
    #[arg(long)]
    region: Option<String>,
    /// Datacenter this gateway runs in (policy local, hop-limit fallback).
    #[arg(long)]
    dc: Option<String>,
    /// Gateway id for registration [default: <hostname>-<pid>].
    #[arg(long)]
    id: Option<String>,
    /// TOML file with the routing-token and dye HMAC keys by kid
    /// (else UNITGATE_KEYS / UNITGATE_ACTIVE_KID).
    #[arg(long)]
    secrets: Option<PathBuf>,
    /// GeoIP database: GeoIP2/GeoLite2 City/Country or ip-location-db mmdb (hot-reloaded).
    #[arg(long)]
    geo_db: Option<PathBuf>,
    /// Directory for the last-known-good topology snapshot.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Peers whose X-Forwarded-For is believed (comma-separated CIDRs or IPs).
    #[arg(long, value_delimiter = ',')]
    trusted_proxies: Option<Vec<String>>,
    /// TLS on the public listener: a directory of <name>.crt (or .pem)
    /// beside <name>.key files, chosen by SNI, reloaded when they change.
    #[arg(long)]
    tls_cert_dir: Option<PathBuf>,
    /// A plain HTTP listener beside the HTTPS public one (needs TLS).
    #[arg(long)]
    http_listen: Option<String>,
    /// Forward request headers whose name has '_' (dropped by default);
    /// those spelling a framing, user or identity header never are.
    #[arg(long)]
    forward_underscore_headers: bool,
    /// End a response that makes no progress toward the client for this
    /// long (milliseconds; default 30000).
    #[arg(long)]
    send_timeout_ms: Option<u64>,
    /// After SIGTERM, serve on this long with /readyz answering 503, so
    /// balancers see the gateway leave (seconds; default 5).
    #[arg(long)]
    shutdown_delay_s: Option<u64>,
    /// Then at most this long for the requests in flight (seconds;
    /// default 30). A second SIGTERM or a SIGINT stops at once.
    #[arg(long)]
    grace_period_s: Option<u64>,
    /// Take the listening sockets of the gateway running with the same
    /// config (over its upgrade_sock) once it gets SIGQUIT: a new version
    /// with no connection refused.
    #[arg(long)]
    upgrade: bool,
    /// Where the access log goes: stdout, a file's path (reopened on
    /// SIGHUP), or off [default: stdout].
    #[arg(long)]
    access_log: Option<String>,
    /// The diagnostic log's lines on stderr: text or json [default: text].
    #[arg(long)]
    log_format: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve demo unit services for every endpoint of a topology file.
    DemoUnits {
        #[arg(long)]
        topology: PathBuf,
        /// Units to leave down (comma-separated), to show failover.
        #[arg(long, value_delimiter = ',')]
        down: Vec<String>,
    },
    /// Make a local CA and a server certificate for the demo (local use
    /// only): <out>/ca.crt, <out>/certs/demo.{crt,key}. Kept if present.
    DemoTls {
        #[arg(long)]
        out: PathBuf,
        /// Names the certificate serves (DNS names or IP addresses).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
    },
}

fn fail(e: impl std::fmt::Display) -> ! {
    eprintln!("unitgate: {e}");
    std::process::exit(2);
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::DemoUnits { topology, down }) => {
            init_logging(LogFormat::Text);
            if let Err(e) = unitgate::demo::run(&topology, &down) {
                fail(format!("{e:#}"));
            }
            return;
        }
        Some(Command::DemoTls { out, hosts }) => {
            let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
            match unitgate::tls::pki::demo(&out, &hosts) {
                Ok(ca) => println!("{}", ca.display()),
                Err(e) => fail(e),
            }
            return;
        }
        None => {}
    }
    let file = match &cli.config {
        Some(p) => read_file(p).unwrap_or_else(|e| fail(e)),
        None => FileConfig::default(),
    };
    let o = Overrides {
        id: cli.id,
        region: cli.region,
        dc: cli.dc,
        listen: cli.listen,
        internal_listen: cli.internal_listen,
        admin_listen: cli.admin_listen,
        topology_file: cli.topology_file,
        etcd: cli.etcd,
        prefix: cli.prefix,
        etcd_ca_file: cli.etcd_ca_file,
        etcd_cert_file: cli.etcd_cert_file,
        etcd_key_file: cli.etcd_key_file,
        etcd_user: cli.etcd_user,
        etcd_password_file: cli.etcd_password_file,
        admin_token_file: cli.admin_token_file,
        admin_insecure: cli.admin_insecure.then_some(true),
        secrets: cli.secrets,
        geo_db: cli.geo_db,
        state_dir: cli.state_dir,
        trusted_proxies: cli.trusted_proxies,
        http_listen: cli.http_listen,
        forward_underscore_headers: cli.forward_underscore_headers.then_some(true),
        send_timeout_ms: cli.send_timeout_ms,
        shutdown_delay_s: cli.shutdown_delay_s,
        grace_period_s: cli.grace_period_s,
        access_log: cli.access_log,
        log_format: cli.log_format,
        tls: cli.tls_cert_dir.map(|d| unitgate::config::TlsFile {
            cert_dir: Some(d),
            ..Default::default()
        }),
        ..Overrides::default()
    };
    let cfg = Config::resolve(file, o).unwrap_or_else(|e| fail(e));
    let format = cfg.observe.log_format;
    let (shared, notes) =
        unitgate::server::prepare(cfg, cli.upgrade).unwrap_or_else(|e| fail(format!("{e:#}")));
    // Logging starts after the start-up checks: a bad start is one line.
    init_logging(format);
    for n in notes {
        tracing::warn!("{n}");
    }
    match unitgate::server::run(shared, cli.upgrade) {
        Err(e) => fail(format!("{e:#}")),
        Ok(never) => match never {},
    }
}

fn init_logging(format: LogFormat) {
    // pingora_proxy's own lines are client noise (an ERROR per client that
    // drops mid-head): the gateway logs failed requests itself.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,pingora_core=warn,pingora_proxy=off")
    });
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => log.init(),
        LogFormat::Json => log.json().flatten_event(true).init(),
    }
}
