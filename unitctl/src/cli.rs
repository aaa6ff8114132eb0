//! Command-line grammar.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Operate a unitgate deployment: its topology in etcd, drains, routing.
#[derive(Debug, Parser)]
#[command(
    name = "unitctl",
    version,
    about,
    after_help = "Exit status: 0 done; 1 refused or failed (an invalid topology, etcd unreachable, a drain that would strand shards); 2 usage (a bad command line); 3 timed out waiting (--wait: the gateways that had not applied the change are named)."
)]
pub struct Cli {
    #[command(flatten)]
    pub target: Target,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the topology is read from and written to.
#[derive(Debug, Args)]
pub struct Target {
    /// etcd endpoint(s), comma-separated.
    #[arg(
        long,
        global = true,
        env = "UNITGATE_ETCD",
        default_value = "http://127.0.0.1:2379",
        value_delimiter = ','
    )]
    pub etcd: Vec<String>,
    /// Key prefix of the topology in etcd.
    #[arg(long, global = true, default_value = "/unitgate")]
    pub prefix: String,
    /// Read the topology from this file instead of etcd (status, explain).
    #[arg(long, global = true)]
    pub file: Option<PathBuf>,
    /// The CA that signed etcd's certificate (PEM; https:// endpoints).
    #[arg(long, global = true, env = "UNITCTL_ETCD_CA_FILE")]
    pub etcd_ca_file: Option<PathBuf>,
    /// A client certificate for etcd (PEM, with --etcd-key-file).
    #[arg(long, global = true, env = "UNITCTL_ETCD_CERT_FILE")]
    pub etcd_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, global = true, env = "UNITCTL_ETCD_KEY_FILE")]
    pub etcd_key_file: Option<PathBuf>,
    /// etcd user; its password from --etcd-password-file or the
    /// environment variable UNITCTL_ETCD_PASSWORD, never a flag.
    #[arg(long, global = true, env = "UNITCTL_ETCD_USER")]
    pub etcd_user: Option<String>,
    /// A file holding the etcd user's password.
    #[arg(long, global = true, env = "UNITCTL_ETCD_PASSWORD_FILE")]
    pub etcd_password_file: Option<PathBuf>,
}

/// The environment variable a password may come from.
pub const PASSWORD_ENV: &str = "UNITCTL_ETCD_PASSWORD";

impl Target {
    /// TLS and user for etcd: flags, else the environment.
    pub fn access(&self) -> config_center::etcd_access::AccessFiles {
        use config_center::etcd_access::{AccessFiles, PasswordSource};
        let password = match &self.etcd_password_file {
            Some(p) => Some(PasswordSource::File(p.clone())),
            None if self.etcd_user.is_some() && std::env::var_os(PASSWORD_ENV).is_some() => {
                Some(PasswordSource::Env(PASSWORD_ENV.to_owned()))
            }
            None => None,
        };
        AccessFiles {
            ca_file: self.etcd_ca_file.clone(),
            cert_file: self.etcd_cert_file.clone(),
            key_file: self.etcd_key_file.clone(),
            user: self.etcd_user.clone(),
            password,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a topology file: exit 0 with a summary, or 1 with every problem.
    Validate { file: PathBuf },
    /// Validate a topology file, show which keys it adds, changes and
    /// removes, then write them to etcd in one transaction.
    Apply {
        file: PathBuf,
        /// Also delete topology keys absent from the file (never drain/,
        /// gateways/ or instances/ keys).
        #[arg(long)]
        prune: bool,
        /// Show what would change and write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Drain a datacenter or unit: no new request goes to it.
    Drain {
        kind: Kind,
        name: String,
        /// Why (shown in status).
        #[arg(long, default_value = "")]
        reason: String,
        /// Lift the drain by itself after this long (e.g. 30m, 2h).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<std::time::Duration>,
        /// Write the drain even if it leaves shards without a unit.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        wait: Wait,
    },
    /// Remove a drain.
    Undrain {
        kind: Kind,
        name: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Show epoch, regions, datacenters, units with drain state, shard
    /// ownership and registered gateways (up to date, behind or gone).
    Status {
        /// `text`, or `json` for scripts.
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: Output,
    },
    /// Show how a request would be routed on the current topology, with
    /// the auth and quotas that apply to it.
    Explain {
        #[command(flatten)]
        args: Box<ExplainArgs>,
        /// `text`, or `json` for scripts.
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: Output,
    },
    /// Sign a JWT with a private key (PEM), for tests and the demo: prints
    /// the token.
    Token(Box<TokenArgs>),
    /// Turn on etcd's user auth for unitgate (idempotent; run again to set
    /// the passwords): root, the gateways' user (read the prefix, write
    /// only its registrations), the operators' user (read and write the
    /// prefix), then auth enable.
    EtcdSetup(Box<EtcdSetupArgs>),
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The private key, PEM (RSA or EC; for HS256 the secret's bytes).
    #[arg(long)]
    pub key: PathBuf,
    /// Signature algorithm.
    #[arg(long, default_value = "RS256")]
    pub alg: String,
    /// The key id (`kid`) the issuer's JWK set lists the key under.
    #[arg(long)]
    pub kid: String,
    #[arg(long)]
    pub iss: String,
    /// Audience (repeat for several).
    #[arg(long)]
    pub aud: Vec<String>,
    /// The user (`sub`).
    #[arg(long)]
    pub sub: String,
    /// A tenant claim (`tenant`).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Extra claims as name=value (repeat), e.g. scope=orders:write.
    #[arg(long = "claim")]
    pub claims: Vec<String>,
    /// Lifetime (e.g. 10m, 1h).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub ttl: std::time::Duration,
}

/// `unitctl etcd-setup`: the users and their passwords (files only).
#[derive(Debug, Args)]
pub struct EtcdSetupArgs {
    /// The root user's password.
    #[arg(long, env = "UNITCTL_ETCD_ROOT_PASSWORD_FILE")]
    pub root_password_file: PathBuf,
    /// The gateways' user.
    #[arg(long, default_value = "unitgate")]
    pub gateway_user: String,
    /// Its password.
    #[arg(long, env = "UNITCTL_ETCD_GATEWAY_PASSWORD_FILE")]
    pub gateway_password_file: PathBuf,
    /// The operators' user (unitctl apply, drain, undrain).
    #[arg(long, default_value = "unitgate-ops")]
    pub ops_user: String,
    /// Its password.
    #[arg(long, env = "UNITCTL_ETCD_OPS_PASSWORD_FILE")]
    pub ops_password_file: PathBuf,
}

/// Waiting for the gateways after a change.
#[derive(Debug, Clone, Copy, Args)]
pub struct Wait {
    /// Return once every registered gateway applied the change (exit 3,
    /// naming the others, if they have not within --timeout).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits (e.g. 30s, 2m).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, requires = "wait")]
    pub timeout: std::time::Duration,
}

/// How `status` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// What a drain names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    Dc,
    Unit,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[arg(long)]
    pub host: String,
    #[arg(long)]
    pub path: String,
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// The user key (as sent in the cluster's user header).
    #[arg(long)]
    pub user: Option<String>,
    /// The client's IP address, located with --geo-db.
    #[arg(long, conflicts_with_all = ["country", "subdivision"])]
    pub ip: Option<std::net::IpAddr>,
    /// GeoIP database (GeoIP2/GeoLite2 or ip-location-db mmdb) for --ip.
    #[arg(long, env = "UNITGATE_GEO_DB")]
    pub geo_db: Option<PathBuf>,
    /// The client's ISO country code (as GeoIP would give it).
    #[arg(long)]
    pub country: Option<String>,
    /// The client's ISO 3166-2 subdivision, e.g. CN-BJ.
    #[arg(long)]
    pub subdivision: Option<String>,
    /// The listener the request arrives on.
    #[arg(long, value_enum, default_value = "public")]
    pub listener: ListenerArg,
    /// The datacenter of the deciding gateway (for policy local).
    #[arg(long)]
    pub dc: Option<String>,
    /// The region of the deciding gateway (defaults to its dc's region).
    #[arg(long)]
    pub region: Option<String>,
    /// The routing token the client echoes (as in its `ug_route` cookie);
    /// its signature is not checked here.
    #[arg(long)]
    pub token: Option<String>,
    /// A bearer token (JWT) the request carries: its issuer and user claim
    /// are shown and the user routes the request; its signature is not
    /// checked here.
    #[arg(long)]
    pub jwt: Option<String>,
    /// The hint TTL the gateway is configured with (`hint_ttl_s`).
    #[arg(long, default_value_t = unit_router::DEFAULT_HINT_TTL_S)]
    pub hint_ttl: u64,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ListenerArg {
    Public,
    Internal,
}
