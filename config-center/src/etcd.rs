//! The etcd source: list the prefix at revision R, watch from R+1 with
//! progress notifications, apply each watch response as one batch, re-list
//! when the watch revision was compacted, reconnect with jittered exponential
//! backoff. A dropped watch resumes from the last revision seen, so no change
//! is lost; a revision etcd no longer has is recovered by re-listing.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, WatchOptions};
use rand::Rng;
use tokio::time::Instant;

use crate::center::ConfigCenter;
use crate::etcd_access::EtcdAccess;
use crate::etcd_check::{check_tls, describe, refused, TlsCheck};
use crate::kv::Kv;

/// Tunables of the etcd source.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// How often to ask etcd for watch progress; three silent periods in a
    /// row mean the connection is dead and is re-established.
    pub progress_interval: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// TLS and user, read again at each connect.
    pub access: Arc<EtcdAccess>,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            progress_interval: Duration::from_secs(2),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            access: Arc::new(EtcdAccess::default()),
        }
    }
}

/// The topology under `prefix` in the etcd cluster at `endpoints`.
#[derive(Debug, Clone)]
pub struct EtcdSource {
    endpoints: Vec<String>,
    prefix: String,
    opts: EtcdOptions,
}

/// Normalize a prefix to `/name` form (no trailing slash).
pub fn normalize_prefix(prefix: &str) -> String {
    format!("/{}", prefix.trim_matches('/'))
}

/// Connect to etcd with the given options.
pub async fn connect(
    endpoints: &[String],
    opts: &EtcdOptions,
) -> Result<Client, etcd_client::Error> {
    let co = ConnectOptions::new()
        .with_connect_timeout(opts.connect_timeout)
        .with_timeout(opts.request_timeout)
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
        .with_auto_token_refresh(true);
    Client::connect(endpoints, Some(opts.access.apply(co))).await
}

/// Why a first contact with etcd failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProbeError {
    /// etcd answered and refused the credentials or the trust (a wrong
    /// CA, certificate, user or password, or no permission on the prefix):
    /// retrying will not help.
    #[error("etcd at {endpoints} refused the connection: {reason}")]
    Refused { endpoints: String, reason: String },
    /// etcd could not be reached (down, or the network): worth retrying.
    #[error("etcd at {endpoints} not reachable: {reason}")]
    Unreachable { endpoints: String, reason: String },
}

/// Reach etcd as this process will, before relying on it: each endpoint
/// on its own and all at once (a member down neither hides another's
/// refusal nor slows the check), TLS first (`etcd_check::check_tls`),
/// then the user and a read of the prefix's key count. Any endpoint that
/// works is enough; else a refusal wins over "unreachable".
pub async fn probe(
    endpoints: &[String],
    prefix: &str,
    opts: &EtcdOptions,
) -> Result<(), ProbeError> {
    let mut set = tokio::task::JoinSet::new();
    for ep in endpoints {
        set.spawn(probe_endpoint(ep.clone(), prefix.to_owned(), opts.clone()));
    }
    let (mut refused, mut unreachable) = (None, None);
    while let Some(done) = set.join_next().await {
        match done {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e @ ProbeError::Refused { .. })) => refused = Some(e),
            Ok(Err(e)) => unreachable = Some(e),
            Err(e) => {
                unreachable = Some(ProbeError::Unreachable {
                    endpoints: endpoints.join(","),
                    reason: e.to_string(),
                })
            }
        }
    }
    Err(refused.or(unreachable).unwrap_or(ProbeError::Unreachable {
        endpoints: String::new(),
        reason: "no endpoint".into(),
    }))
}

/// One endpoint, up to three tries while it is only unreachable (a
/// refused client certificate may first show as a dropped connection).
async fn probe_endpoint(
    endpoint: String,
    prefix: String,
    opts: EtcdOptions,
) -> Result<(), ProbeError> {
    let mut last = None;
    for attempt in 0..3 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        match probe_once(&endpoint, &prefix, &opts).await {
            Ok(()) => return Ok(()),
            Err(e @ ProbeError::Refused { .. }) => return Err(e),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(ProbeError::Unreachable {
        endpoints: endpoint,
        reason: "no attempt".into(),
    }))
}

async fn probe_once(endpoint: &str, prefix: &str, opts: &EtcdOptions) -> Result<(), ProbeError> {
    let endpoints = vec![endpoint.to_owned()];
    let at = endpoint.to_owned();
    if opts.access.files().tls() {
        let (access, ep, wait) = (opts.access.clone(), at.clone(), opts.connect_timeout);
        let check = tokio::task::spawn_blocking(move || check_tls(&access, &ep, wait))
            .await
            .unwrap_or_else(|e| TlsCheck::Unreachable(e.to_string()));
        match check {
            TlsCheck::Accepted => {}
            TlsCheck::Refused(reason) => {
                return Err(ProbeError::Refused {
                    endpoints: at,
                    reason,
                })
            }
            TlsCheck::Unreachable(reason) => {
                return Err(ProbeError::Unreachable {
                    endpoints: at,
                    reason,
                })
            }
        }
    }
    let fail = |e: etcd_client::Error| {
        let (endpoints, reason) = (at.clone(), describe(&e));
        if refused(&e) {
            ProbeError::Refused { endpoints, reason }
        } else {
            ProbeError::Unreachable { endpoints, reason }
        }
    };
    let mut client = connect(&endpoints, opts).await.map_err(fail)?;
    let dir = format!("{}/", normalize_prefix(prefix));
    client
        .get(
            dir.as_str(),
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .map_err(fail)?;
    Ok(())
}

/// Read every pair under `prefix` (normalized): `(revision, pairs)`.
pub async fn list(client: &mut Client, prefix: &str) -> Result<(i64, Kv), etcd_client::Error> {
    list_changed(client, prefix)
        .await
        .map(|(rev, kv, _)| (rev, kv))
}

/// The same, and the newest `mod_revision` of a topology key (gateway
/// registrations excluded): the newest change a list can see (a delete
/// leaves no key behind).
pub async fn list_changed(
    client: &mut Client,
    prefix: &str,
) -> Result<(i64, Kv, i64), etcd_client::Error> {
    let dir = format!("{prefix}/");
    let resp = client
        .get(dir.as_str(), Some(GetOptions::new().with_prefix()))
        .await?;
    let rev = resp.header().map_or(0, |h| h.revision());
    let mut kv = Kv::new();
    let mut changed = 0;
    for p in resp.kvs() {
        if let (Ok(k), Ok(v)) = (p.key_str(), p.value_str()) {
            if let Some(rel) = k.strip_prefix(&dir) {
                if !rel.starts_with("gateways/") {
                    changed = changed.max(p.mod_revision());
                }
                kv.insert(rel.to_owned(), v.to_owned());
            }
        }
    }
    Ok((rev, kv, changed))
}

enum End {
    /// The watch revision is gone: re-list at once.
    Compacted(i64),
    Failed(String),
}

impl<E: std::fmt::Display> From<E> for End {
    fn from(e: E) -> Self {
        End::Failed(e.to_string())
    }
}

/// Jittered exponential backoff ("equal jitter").
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            next: min,
        }
    }
    fn reset(&mut self) {
        self.next = self.min;
    }
    fn step(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = d / 2;
        half + rand::rng().random_range(Duration::ZERO..=half)
    }
}

impl EtcdSource {
    pub fn new(endpoints: Vec<String>, prefix: &str, opts: EtcdOptions) -> Self {
        EtcdSource {
            endpoints,
            prefix: normalize_prefix(prefix),
            opts,
        }
    }

    /// Watch etcd forever, publishing into `center`. If `center` already
    /// holds a snapshot (last-known-good), the watch resumes after its epoch.
    pub async fn run(self, center: ConfigCenter) {
        center.set_source(format!("etcd {} {}", self.endpoints.join(","), self.prefix));
        let mut state: Option<(i64, Kv)> = center.current().map(|s| (s.epoch(), s.kv.clone()));
        let mut backoff = Backoff::new(self.opts.backoff_min, self.opts.backoff_max);
        loop {
            match self.session(&center, &mut state, &mut backoff).await {
                End::Compacted(at) => {
                    tracing::warn!(
                        compacted_at = at,
                        "etcd watch revision compacted; re-listing"
                    );
                    center.note_relist();
                    state = None;
                }
                End::Failed(e) => {
                    center.set_connected(false);
                    center.record_error(format!("etcd: {e}"));
                    let wait = backoff.step();
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "etcd session ended");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn session(
        &self,
        center: &ConfigCenter,
        state: &mut Option<(i64, Kv)>,
        backoff: &mut Backoff,
    ) -> End {
        let mut client = match connect(&self.endpoints, &self.opts).await {
            Ok(c) => c,
            Err(e) => {
                return End::Failed(format!(
                    "cannot reach {}: {}",
                    self.endpoints.join(","),
                    describe(&e)
                ))
            }
        };
        let (rev, mut kv) = match state.take() {
            Some(s) => s,
            None => match list_changed(&mut client, &self.prefix).await {
                Ok((rev, kv, changed)) => {
                    // Validation errors are recorded by the center; keep watching.
                    if center.apply(rev, kv.clone()).is_ok() {
                        center.set_change_revision(changed);
                    }
                    (rev, kv)
                }
                Err(e) => return End::Failed(format!("list {}: {}", self.prefix, describe(&e))),
            },
        };
        *state = Some((rev, kv.clone()));
        center.set_registrations(&kv);
        let dir = format!("{}/", self.prefix);
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(rev + 1)
            .with_progress_notify();
        let mut stream = match client.watch(dir.as_str(), Some(opts)).await {
            Ok(s) => s,
            Err(e) => return End::Failed(format!("watch {}: {}", self.prefix, describe(&e))),
        };
        let mut tick = tokio::time::interval(self.opts.progress_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heard = Instant::now();
        let mut rev = rev;
        loop {
            tokio::select! {
                msg = stream.message() => {
                    let resp = match msg {
                        Ok(Some(r)) => r,
                        Ok(None) => return End::Failed("watch stream closed".into()),
                        Err(e) => return e.into(),
                    };
                    heard = Instant::now();
                    if resp.compact_revision() > 0 {
                        return End::Compacted(resp.compact_revision());
                    }
                    if resp.canceled() {
                        return End::Failed(format!("watch canceled: {}", resp.cancel_reason()));
                    }
                    if resp.created() {
                        center.set_connected(true);
                        backoff.reset();
                    }
                    if resp.events().is_empty() {
                        continue; // created or progress notification
                    }
                    // Gateway registrations (written under leases by every
                    // gateway) are recorded but their updates do not make a
                    // new snapshot: otherwise gateways would chase each
                    // other's writes. A gateway joining (its key created) or
                    // leaving (deleted, or its lease expired) does: cluster
                    // quotas are split across the live gateways.
                    let only_registrations = resp.events().iter().all(|ev| {
                        let registration = ev
                            .kv()
                            .and_then(|p| p.key_str().ok())
                            .is_some_and(|k| k.strip_prefix(&dir).is_some_and(|r| r.starts_with("gateways/")));
                        let joined_or_left = ev.event_type() == EventType::Delete
                            || ev.kv().is_some_and(|p| p.version() == 1);
                        registration && !joined_or_left
                    });
                    let mut changed = 0;
                    for ev in resp.events() {
                        let Some(p) = ev.kv() else { continue };
                        let (Ok(k), Ok(v)) = (p.key_str(), p.value_str()) else { continue };
                        let Some(rel) = k.strip_prefix(&dir) else { continue };
                        if !rel.starts_with("gateways/") {
                            // A delete's event carries the delete's revision.
                            changed = changed.max(p.mod_revision());
                        }
                        match ev.event_type() {
                            EventType::Put => kv.insert(rel.to_owned(), v.to_owned()),
                            EventType::Delete => kv.remove(rel),
                        };
                    }
                    center.set_registrations(&kv);
                    if only_registrations {
                        // Keep the revision of the snapshot in force.
                        *state = Some((rev, kv.clone()));
                        continue;
                    }
                    rev = resp.header().map_or(rev, |h| h.revision());
                    *state = Some((rev, kv.clone()));
                    if center.apply(rev, kv.clone()).is_ok() && changed > 0 {
                        center.set_change_revision(changed);
                    }
                }
                _ = tick.tick() => {
                    if heard.elapsed() > self.opts.progress_interval * 3 {
                        return End::Failed("no progress from etcd".into());
                    }
                    if let Err(e) = stream.request_progress().await {
                        return e.into();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_and_backoff() {
        assert_eq!(normalize_prefix("unitgate/"), "/unitgate");
        assert_eq!(normalize_prefix("/a/b"), "/a/b");
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let steps: Vec<_> = (0..8).map(|_| b.step()).collect();
        assert!(steps[0] >= Duration::from_millis(50) && steps[0] <= Duration::from_millis(100));
        assert!(steps[7] >= Duration::from_millis(500) && steps[7] <= Duration::from_secs(1));
        b.reset();
        assert!(b.step() <= Duration::from_millis(100));
    }
}
