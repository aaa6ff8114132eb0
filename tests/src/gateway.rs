//! A real `unitgate` process for tests, and wiremock servers standing in for
//! every (unit, service) endpoint of the sample topology.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::proto::{h2_client, test_pki, Proto};
use crate::{free_port, sample_path, workspace};

/// Sample endpoints: (unit, service) -> address in `deploy/local/topology.yaml`.
pub const SAMPLE_ENDPOINTS: [(&str, &str, &str); 9] = [
    ("bj-1", "orders", "127.0.0.1:18101"),
    ("bj-1", "profile", "127.0.0.1:18102"),
    ("bj-2", "orders", "127.0.0.1:18201"),
    ("bj-2", "profile", "127.0.0.1:18202"),
    ("sh-1", "orders", "127.0.0.1:18301"),
    ("sh-1", "profile", "127.0.0.1:18302"),
    ("sh-2", "orders", "127.0.0.1:18401"),
    ("sh-2", "profile", "127.0.0.1:18402"),
    ("ct-1", "config", "127.0.0.1:18501"),
];

/// Wiremock upstreams for the sample topology, each answering 200 with its
/// unit name in the body and in `x-upstream-unit`.
pub struct Units {
    pub servers: BTreeMap<(String, String), MockServer>,
}

impl Units {
    /// Start one server per sample endpoint.
    pub async fn start() -> Self {
        let mut servers = BTreeMap::new();
        for (unit, service, _) in SAMPLE_ENDPOINTS {
            let s = MockServer::start().await;
            Mock::given(any())
                .respond_with(
                    ResponseTemplate::new(200)
                        .insert_header("x-upstream-unit", unit)
                        .insert_header("x-unit-served-by", "upstream-must-not-set-this")
                        .set_body_string(format!("{unit}/{service}")),
                )
                .mount(&s)
                .await;
            servers.insert((unit.to_owned(), service.to_owned()), s);
        }
        Units { servers }
    }

    /// The server of (unit, service).
    pub fn get(&self, unit: &str, service: &str) -> &MockServer {
        &self.servers[&(unit.to_owned(), service.to_owned())]
    }

    /// The sample topology with these servers as endpoints; `down` units get
    /// a closed port instead.
    pub fn topology(&self, down: &[&str]) -> String {
        let mut text = std::fs::read_to_string(sample_path()).expect("sample topology");
        for (unit, service, addr) in SAMPLE_ENDPOINTS {
            let to = if down.contains(&unit) {
                format!("127.0.0.1:{}", free_port())
            } else {
                self.get(unit, service).address().to_string()
            };
            text = text.replace(addr, &to);
        }
        text
    }

    /// Requests received by (unit, service), active health checks excluded.
    pub async fn received(&self, unit: &str, service: &str) -> Vec<wiremock::Request> {
        let all = self
            .get(unit, service)
            .received_requests()
            .await
            .unwrap_or_default();
        all.into_iter()
            .filter(|r| r.url.path() != "/healthz")
            .collect()
    }
}

/// A running gateway process (killed on drop).
pub struct Gateway {
    child: Option<Child>,
    pub public: SocketAddr,
    pub internal: SocketAddr,
    pub admin: SocketAddr,
    pub state_dir: tempfile::TempDir,
    /// The gateway's stderr (its diagnostic log).
    pub log: PathBuf,
    /// What the test's clients speak; with [`Proto::H2`] the public
    /// listener serves TLS (certificate of [`test_pki`]).
    pub proto: Proto,
    /// The CA of the gateway's certificate (with TLS on).
    pub ca: Option<PathBuf>,
    /// How it was started, to start its successor ([`Gateway::upgrade`]).
    launch: Launch,
}

/// A gateway's command line and environment.
#[derive(Debug, Clone)]
struct Launch {
    program: std::ffi::OsString,
    args: Vec<std::ffi::OsString>,
    envs: Vec<(std::ffi::OsString, std::ffi::OsString)>,
}

/// What to start a gateway with (besides fresh loopback ports).
#[derive(Debug, Clone, Default)]
pub struct GatewayArgs {
    pub topology_file: Option<PathBuf>,
    pub etcd: Option<String>,
    pub region: Option<String>,
    pub dc: Option<String>,
    pub geo_db: Option<PathBuf>,
    pub trusted_proxies: Option<String>,
    pub extra: Vec<String>,
    /// HTTP/2 turns TLS on for the public listener.
    pub proto: Proto,
    /// Environment variables of the process.
    pub env: Vec<(String, String)>,
    /// The secrets file (`None`: the demo keys).
    pub secrets: Option<PathBuf>,
}

/// The demo keys (tests only).
pub fn secrets_path() -> PathBuf {
    workspace().join("deploy/local/secrets.toml")
}

/// The demo keyring, read from [`secrets_path`] (format: see gateway `secrets.rs`).
pub fn test_keyring() -> unit_router::Keyring {
    use base64::Engine;
    let text = std::fs::read_to_string(secrets_path()).expect("secrets file");
    let v: toml::Value = toml::from_str(&text).expect("secrets toml");
    let keys = v["keys"]
        .as_table()
        .expect("[keys]")
        .iter()
        .map(|(k, v)| {
            let b = v
                .as_str()
                .expect("key string")
                .trim_start_matches("base64:");
            let key = base64::engine::general_purpose::STANDARD
                .decode(b)
                .expect("base64 key");
            (k.clone(), key)
        })
        .collect();
    unit_router::Keyring::new(v["active"].as_str().expect("active"), keys).expect("demo keyring")
}

impl Gateway {
    /// Start `bin` and wait until `/readyz` answers 200.
    pub async fn start(bin: &Path, a: GatewayArgs) -> Result<Self> {
        Self::start_in(bin, a, tempfile::tempdir()?).await
    }

    /// Same, with a given state dir (to restart from its last-known-good file).
    /// A port taken between picking and binding is retried with new ports.
    pub async fn start_in(
        bin: &Path,
        a: GatewayArgs,
        mut state_dir: tempfile::TempDir,
    ) -> Result<Self> {
        for attempt in 1..=4 {
            match Self::launch(bin, &a, state_dir).await {
                Ok(g) => return Ok(g),
                Err((e, dir))
                    if attempt < 4 && e.to_string().contains("Address already in use") =>
                {
                    state_dir = dir
                }
                Err((e, _)) => return Err(e),
            }
        }
        unreachable!("the loop returns")
    }

    async fn launch(
        bin: &Path,
        a: &GatewayArgs,
        state_dir: tempfile::TempDir,
    ) -> Result<Self, (anyhow::Error, tempfile::TempDir)> {
        match Self::spawn(bin, a, &state_dir) {
            Err(e) => Err((e, state_dir)),
            Ok((child, public, internal, admin, log, launch)) => {
                let ca = (a.proto == Proto::H2).then(|| test_pki(bin).0);
                let g = Gateway {
                    child: Some(child),
                    public,
                    internal,
                    admin,
                    state_dir,
                    log,
                    proto: a.proto,
                    ca,
                    launch,
                };
                g.wait_ready().await
            }
        }
    }

    fn spawn(
        bin: &Path,
        a: &GatewayArgs,
        state_dir: &tempfile::TempDir,
    ) -> Result<(Child, SocketAddr, SocketAddr, SocketAddr, PathBuf, Launch)> {
        // Three different ports: a port freed by one pick can be the next.
        let public = free_port();
        let internal = std::iter::repeat_with(free_port)
            .take(100)
            .find(|&p| p != public)
            .unwrap_or(public);
        let admin = std::iter::repeat_with(free_port)
            .take(100)
            .find(|&p| p != public && p != internal)
            .unwrap_or(internal);
        let log = state_dir.path().join("gateway.log");
        let mut cmd = Command::new(bin);
        cmd.args(["--listen", &format!("127.0.0.1:{public}")])
            .args(["--internal-listen", &format!("127.0.0.1:{internal}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .arg("--secrets")
            .arg(a.secrets.clone().unwrap_or_else(secrets_path))
            .arg("--state-dir")
            .arg(state_dir.path())
            .args(["--id", &format!("test-gw-{public}")]);
        if let Some(f) = &a.topology_file {
            cmd.arg("--topology-file").arg(f);
        }
        if let Some(e) = &a.etcd {
            cmd.args(["--etcd", e]);
        }
        for (flag, v) in [
            ("--region", &a.region),
            ("--dc", &a.dc),
            ("--trusted-proxies", &a.trusted_proxies),
        ] {
            if let Some(v) = v {
                cmd.args([flag, v]);
            }
        }
        if let Some(g) = &a.geo_db {
            cmd.arg("--geo-db").arg(g);
        }
        if a.proto == Proto::H2 {
            cmd.arg("--tls-cert-dir").arg(test_pki(bin).1);
        }
        // Tests stop gateways at once unless they test the delay.
        if !a.extra.iter().any(|x| x == "--shutdown-delay-s") {
            cmd.args(["--shutdown-delay-s", "0"]);
        }
        cmd.args(&a.extra);
        cmd.env("RUST_LOG", "info,pingora_core=warn,pingora_proxy=warn");
        cmd.envs(a.env.iter().map(|(k, v)| (k, v)));
        let launch = Launch {
            program: cmd.get_program().to_owned(),
            args: cmd.get_args().map(ToOwned::to_owned).collect(),
            envs: cmd
                .get_envs()
                .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
                .collect(),
        };
        let child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let ip = [127, 0, 0, 1];
        Ok((
            child,
            (ip, public).into(),
            (ip, internal).into(),
            (ip, admin).into(),
            log,
            launch,
        ))
    }

    async fn wait_ready(mut self) -> Result<Self, (anyhow::Error, tempfile::TempDir)> {
        match self.poll_ready().await {
            Ok(()) => Ok(self),
            Err(e) => {
                self.stop();
                let dir =
                    std::mem::replace(&mut self.state_dir, tempfile::tempdir().expect("tempdir"));
                Err((e, dir))
            }
        }
    }

    async fn poll_ready(&mut self) -> Result<()> {
        let g = self;
        let http = client();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = g.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("gateway exited with {st}: {}", g.log_tail());
            }
            if let Ok(r) = http.get(format!("http://{}/readyz", g.admin)).send().await {
                // Pingora binds each service on its own: ready once the
                // proxy listeners accept too.
                if r.status() == 200
                    && tokio::net::TcpStream::connect(g.public).await.is_ok()
                    && tokio::net::TcpStream::connect(g.internal).await.is_ok()
                {
                    g.settle(&http, deadline).await;
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("gateway not ready within 30s: {}", g.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait (until `deadline`) for the gateway to have closed the probe
    /// connections of the readiness check, so that a test starts with no
    /// connection of ours counted against its limits.
    async fn settle(&self, http: &reqwest::Client, deadline: Instant) {
        let open = |m: &str| {
            m.lines()
                .filter(|l| l.starts_with("unitgate_connections_open{"))
                // The admin listener's own: the one asking.
                .filter(|l| !l.contains("listener=\"admin\""))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        };
        while Instant::now() < deadline {
            let url = format!("http://{}/metrics", self.admin);
            if let Ok(r) = http.get(url).send().await {
                if r.text().await.is_ok_and(|m| open(&m) == 0.0) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The gateway's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Start this gateway's successor: the same command line plus
    /// `--upgrade` (same ports, state dir and upgrade socket), its log in
    /// `log`. It takes the listening sockets once this one gets SIGQUIT.
    pub fn upgrade(&self, log: &Path) -> Result<Child> {
        std::process::Command::new(&self.launch.program)
            .args(&self.launch.args)
            .arg("--upgrade")
            .envs(self.launch.envs.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log)?)
            .spawn()
            .context("start the successor")
    }

    /// Take `child` (the successor of [`Gateway::upgrade`]) as this
    /// gateway's process once the old one has exited.
    pub fn adopt(&mut self, child: Child, log: PathBuf) {
        self.stop();
        self.child = Some(child);
        self.log = log;
    }

    /// Send the gateway `signal` (`TERM`, `INT`) and wait until it exits,
    /// at most `deadline`: its exit status, or `None` if it still runs.
    pub fn signal_and_wait(
        &mut self,
        signal: &str,
        deadline: Duration,
    ) -> Option<std::process::ExitStatus> {
        self.signal(signal);
        self.wait_exit(deadline)
    }

    /// Send the gateway `signal` (`TERM`, `INT`, `HUP`, ...).
    pub fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            let _ = std::process::Command::new("kill")
                .args([format!("-{signal}"), pid.to_string()])
                .status();
        }
    }

    /// Wait until the gateway exits, at most `deadline`: its exit status,
    /// or `None` if it still runs.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let until = std::time::Instant::now() + deadline;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if std::time::Instant::now() > until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Resident memory of the gateway process in KiB (Linux `/proc`).
    pub fn rss_kib(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// The last lines of the gateway's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    pub fn url(&self, path: &str) -> String {
        match self.proto {
            Proto::H1 => format!("http://{}{path}", self.public),
            Proto::H2 => format!("https://{}{path}", self.public),
        }
    }

    /// A client speaking the gateway's [`Proto`] (on both proxy
    /// listeners: HTTPS or h2c as the URL says).
    pub fn http(&self) -> reqwest::Client {
        match (&self.ca, self.proto) {
            (Some(ca), Proto::H2) => h2_client(ca),
            _ => client(),
        }
    }

    pub fn internal_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.internal)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// GET an admin path: `(status, body)`.
    pub async fn admin(&self, path: &str) -> (u16, String) {
        let r = client()
            .get(self.admin_url(path))
            .send()
            .await
            .expect("admin request");
        let status = r.status().as_u16();
        (status, r.text().await.expect("admin body"))
    }

    /// `/status` as JSON.
    pub async fn status(&self) -> serde_json::Value {
        let text = client()
            .get(self.admin_url("/status"))
            .send()
            .await
            .expect("status")
            .text()
            .await
            .expect("status body");
        serde_json::from_str(&text).expect("status json")
    }

    /// The topology epoch in force (0 before the first).
    pub async fn epoch(&self) -> i64 {
        self.status().await["epoch"].as_i64().unwrap_or(0)
    }

    /// Kill the process and keep its state dir.
    pub fn kill(mut self) -> tempfile::TempDir {
        self.stop();
        let dir = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self.state_dir, dir)
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An HTTP client that never follows redirects or keeps cookies: one per
/// thread, since building one loads the system's root certificates (TLS is
/// on in the workspace's reqwest), which takes a worker thread for a
/// noticeable time. A test's threads belong to its own runtime, so a client
/// never outlives the runtime its connections run on.
pub fn client() -> reqwest::Client {
    thread_local! {
        static CLIENT: reqwest::Client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client");
    }
    CLIENT.with(Clone::clone)
}
