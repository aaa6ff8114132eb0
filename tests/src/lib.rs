//! Test harness for unitgate's end-to-end tests: a real `etcd` on free
//! loopback ports with a temp data dir (stopped on drop), and a bounded
//! wait-until-condition helper instead of sleeps.
// Test helpers: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use etcd_client::{Client, GetOptions, PutOptions};

pub mod gateway;
pub mod geo;
pub mod proto;
pub mod stream_unit;

/// Wait until `cond` holds, polling every 10 ms, failing after `timeout`.
#[macro_export]
macro_rules! eventually {
    ($timeout:expr, $cond:expr, $($msg:tt)+) => {{
        let deadline = std::time::Instant::now() + $timeout;
        loop {
            if $cond {
                break;
            }
            if std::time::Instant::now() > deadline {
                panic!("not true within {:?}: {}", $timeout, format!($($msg)+));
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }};
}

/// A free loopback TCP port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port")
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The sample topology document.
pub fn sample_path() -> PathBuf {
    workspace().join("deploy/local/topology.yaml")
}

/// A real etcd server on loopback.
pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    /// Serving clients over TLS with client certificates required.
    tls: Option<EtcdTls>,
    /// User auth enabled: the root user's password.
    root_password: Option<String>,
}

/// The files of an etcd serving TLS and asking clients for certificates
/// signed by `ca` (made by the test).
#[derive(Debug, Clone)]
pub struct EtcdTls {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// What the harness's own client presents.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Etcd {
    /// Start etcd (binary from `$UNITGATE_ETCD_BIN`, else `etcd` on PATH)
    /// and wait until it answers.
    pub async fn start() -> Result<Self> {
        Self::start_with(None).await
    }

    /// Start etcd serving TLS to clients with certificates signed by the
    /// given CA only (`--client-cert-auth`).
    pub async fn start_tls(tls: EtcdTls) -> Result<Self> {
        Self::start_with(Some(tls)).await
    }

    async fn start_with(tls: Option<EtcdTls>) -> Result<Self> {
        let mut last = None;
        for _ in 0..3 {
            let mut e = Etcd {
                child: None,
                dir: tempfile::tempdir()?,
                client_port: free_port(),
                peer_port: free_port(),
                tls: tls.clone(),
                root_password: None,
            };
            match e.launch().await {
                Ok(()) => return Ok(e),
                Err(err) => last = Some(err),
            }
        }
        Err(last.expect("tried"))
    }

    /// `http://127.0.0.1:<port>` (`https://` when serving TLS)
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// Turn user auth on: a `root` user with `password` and the root role.
    /// The harness's own client logs in as root from then on.
    pub async fn enable_auth(&mut self, password: &str) -> Result<()> {
        let mut c = self.client().await?;
        c.user_add("root", password, None).await?;
        c.user_grant_role("root", "root").await?;
        c.auth_enable().await?;
        self.root_password = Some(password.to_owned());
        Ok(())
    }

    /// What this server asks of a client, as the harness's own client
    /// meets it.
    fn access(&self) -> Result<config_center::etcd_access::AccessFiles> {
        use config_center::etcd_access::{AccessFiles, PasswordSource};
        let password = match &self.root_password {
            Some(p) => {
                let f = self.dir.path().join("root-password");
                std::fs::write(&f, p)?;
                Some(PasswordSource::File(f))
            }
            None => None,
        };
        Ok(AccessFiles {
            ca_file: self.tls.as_ref().map(|t| t.ca.clone()),
            cert_file: self.tls.as_ref().map(|t| t.client_cert.clone()),
            key_file: self.tls.as_ref().map(|t| t.client_key.clone()),
            user: self.root_password.as_ref().map(|_| "root".to_owned()),
            password,
        })
    }

    async fn launch(&mut self) -> Result<()> {
        let bin = std::env::var("UNITGATE_ETCD_BIN").unwrap_or_else(|_| "etcd".into());
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.dir.path().join("etcd.log"))?;
        let mut tls_args: Vec<String> = Vec::new();
        if let Some(t) = &self.tls {
            for (flag, path) in [
                ("--cert-file", &t.server_cert),
                ("--key-file", &t.server_key),
                ("--trusted-ca-file", &t.ca),
            ] {
                tls_args.push(flag.to_owned());
                tls_args.push(path.display().to_string());
            }
            tls_args.push("--client-cert-auth".to_owned());
        }
        let child = Command::new(&bin)
            .args(["--name", "test"])
            .args(&tls_args)
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &self.endpoint()])
            .args(["--advertise-client-urls", &self.endpoint()])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("test={peer}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {bin} (install etcd-server)"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let log =
                    std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
                bail!(
                    "etcd exited with {status}: {}",
                    log.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
                );
            }
            if let Ok(mut c) = self.client().await {
                if c.status().await.is_ok() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                self.stop();
                bail!("etcd did not answer within 20s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A client of this server (with its certificate and root's
    /// password when it asks for them).
    pub async fn client(&self) -> Result<Client> {
        let opts = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1))
            .with_timeout(Duration::from_secs(5));
        let access = config_center::etcd_access::EtcdAccess::load(self.access()?)?;
        Ok(Client::connect([self.endpoint()], Some(access.apply(opts))).await?)
    }

    /// Kill the server (data dir kept).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same ports and data.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop();
        self.launch().await
    }

    /// Put `key` (relative to `/unitgate/`) = `value`; returns the revision.
    pub async fn put(&self, key: &str, value: &str) -> Result<i64> {
        let r = self
            .client()
            .await?
            .put(format!("/unitgate/{key}"), value, None::<PutOptions>)
            .await?;
        Ok(r.header().map_or(0, |h| h.revision()))
    }

    /// Delete `key` (relative to `/unitgate/`); returns the revision.
    pub async fn delete(&self, key: &str) -> Result<i64> {
        let r = self
            .client()
            .await?
            .delete(format!("/unitgate/{key}"), None)
            .await?;
        Ok(r.header().map_or(0, |h| h.revision()))
    }

    /// Put every pair of a key -> JSON map; returns the last revision.
    pub async fn put_all<'a>(
        &self,
        kv: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Result<i64> {
        let mut rev = 0;
        for (k, v) in kv {
            rev = self.put(k, v).await?;
        }
        Ok(rev)
    }

    /// Compact the history up to the current revision.
    pub async fn compact(&self) -> Result<i64> {
        let mut c = self.client().await?;
        let rev = c
            .get("/", Some(GetOptions::new().with_count_only()))
            .await?
            .header()
            .map_or(0, |h| h.revision());
        c.compact(
            rev,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await?;
        Ok(rev)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}
