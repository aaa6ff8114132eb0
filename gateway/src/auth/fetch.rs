//! JWK sets fetched from the issuers' `jwks_uri`, in the background: on
//! start (retried every [`MIN_RETRY`] until one arrives), every
//! `jwks_refresh_s`, and early when a token names a key id the issuer does
//! not have (at most once per `jwks_refresh_s`, so forged key ids cannot
//! turn the gateway against the issuer).
//! Never on the request path: a request only raises a flag. A fetch that
//! fails (refused, timeout, an error status, a body that is not a usable
//! JWK set, over the size cap) keeps the last good set and is retried at
//! the next turn.
//! The sets are the fetcher's own table: every change bumps its version,
//! which wakes the plane's one writer ([`Fetched::changes`]); that writer
//! builds the issuers from the sets ([`crate::state::Shared::refresh_plane`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
#[allow(clippy::disallowed_types)]
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use unit_router::jwks::{self, KeySet};
use unit_router::spec::IssuerSpec;

/// The largest JWK set body taken, bytes.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// How long one fetch may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// One issuer's fetched set.
#[derive(Clone)]
pub struct FetchedSet {
    pub uri: String,
    pub keys: KeySet,
    /// Bumped on every change of the set (1 for the first).
    pub version: u64,
}

/// What the fetcher holds and the request path signals.
pub struct Fetched {
    /// Written by the fetcher, read by the plane's writer; the request
    /// path only raises `unknown_kid`.
    #[allow(clippy::disallowed_types)]
    sets: Mutex<HashMap<String, FetchedSet>>,
    /// Bumped with every change of `sets` (0: none yet), under its lock.
    version: watch::Sender<u64>,
    /// A token named a key id some issuer did not have.
    unknown_kid: AtomicBool,
}

impl Default for Fetched {
    fn default() -> Self {
        Fetched {
            sets: HashMap::new().into(),
            version: watch::Sender::new(0),
            unknown_kid: AtomicBool::new(false),
        }
    }
}

impl Fetched {
    /// The version of the sets: a rebuild that reads it first, then the
    /// sets, holds them at least as new as this.
    pub fn version(&self) -> u64 {
        *self.version.borrow()
    }

    /// Told of every change of the sets (from now on).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// The set fetched for issuer `name` from `uri`, if any.
    pub fn get(&self, name: &str, uri: &str) -> Option<FetchedSet> {
        let sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        sets.get(name).filter(|s| s.uri == uri).cloned()
    }

    /// A token named a key id unknown to an issuer that fetches its keys:
    /// ask for an early fetch (cheap; the fetcher rate-limits).
    pub fn unknown_kid(&self) {
        self.unknown_kid.store(true, Ordering::Relaxed);
    }

    /// Store a set for `name` when it differs from the one held (by key
    /// ids and the raw set); whether it changed.
    pub(crate) fn store(&self, name: &str, uri: &str, keys: KeySet, raw_same: bool) -> bool {
        let mut sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        let prev = sets.get(name).filter(|s| s.uri == uri);
        if raw_same && prev.is_some() {
            return false;
        }
        let version = prev.map_or(1, |p| p.version + 1);
        sets.insert(
            name.to_owned(),
            FetchedSet {
                uri: uri.to_owned(),
                keys,
                version,
            },
        );
        self.version.send_modify(|v| *v += 1);
        true
    }

    /// Forget sets of issuers that no longer fetch.
    fn retain(&self, live: &HashMap<String, String>) {
        let mut sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        let before = sets.len();
        sets.retain(|name, s| live.get(name) == Some(&s.uri));
        if sets.len() != before {
            self.version.send_modify(|v| *v += 1);
        }
    }
}

/// Why a fetch gave nothing usable.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("answered {0}")]
    Status(u16),
    #[error("the set is over {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Keys(#[from] jwks::JwksError),
}

/// The fetch loop's state per issuer.
struct Turn {
    last_try: Option<Instant>,
    /// The last fetch caused by an unknown key id.
    last_early: Option<Instant>,
    /// The last set stored, and the algorithms it was parsed for.
    last_raw: Option<(serde_json::Value, Vec<String>)>,
}

/// Fetches the sets of every issuer with a `jwks_uri`.
pub struct Fetcher {
    client: reqwest::Client,
    turns: HashMap<String, Turn>,
}

impl Fetcher {
    pub fn new() -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("unitgate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Fetcher {
            client,
            turns: HashMap::new(),
        })
    }

    /// One turn: fetch every issuer's set that is due (never fetched, its
    /// interval passed, or an unknown kid was seen and its interval since
    /// the last try passed). A changed set bumps the table's version.
    pub async fn turn(
        &mut self,
        issuers: &[(String, IssuerSpec)],
        fetched: &Fetched,
        now: Instant,
    ) {
        let early = fetched.unknown_kid.swap(false, Ordering::Relaxed);
        let live: HashMap<String, String> = issuers
            .iter()
            .filter_map(|(n, s)| Some((n.clone(), s.jwks_uri.clone()?)))
            .collect();
        fetched.retain(&live);
        self.turns.retain(|n, _| live.contains_key(n));
        for (name, spec) in issuers {
            let Some(uri) = &spec.jwks_uri else { continue };
            let every = Duration::from_secs(spec.jwks_refresh_s);
            let turn = self.turns.entry(name.clone()).or_insert(Turn {
                last_try: None,
                last_early: None,
                last_raw: None,
            });
            let missing = fetched.get(name, uri).is_none();
            // Until a first set is in, retry more often.
            let wait = if missing { MIN_RETRY.min(every) } else { every };
            let since =
                |t: Option<Instant>, d: Duration| t.is_none_or(|t| now.duration_since(t) >= d);
            let periodic = since(turn.last_try, wait);
            let on_unknown = early && since(turn.last_early, every);
            if !periodic && !on_unknown {
                continue;
            }
            if on_unknown && !periodic {
                turn.last_early = Some(now);
            }
            turn.last_try = Some(now);
            match fetch(&self.client, uri, spec).await {
                Ok((raw, keys)) => {
                    let parsed = (raw, spec.algs.clone());
                    let same = turn.last_raw.as_ref() == Some(&parsed);
                    if fetched.store(name, uri, keys, same) {
                        tracing::info!(issuer = %name, uri = %uri, "JWK set fetched");
                    }
                    turn.last_raw = Some(parsed);
                }
                Err(e) => {
                    tracing::warn!(issuer = %name, uri = %uri, error = %e, "JWK set fetch failed; the last good set stays");
                }
            }
        }
    }
}

/// How often a set that never arrived is tried again (at most).
pub const MIN_RETRY: Duration = Duration::from_secs(10);

async fn fetch(
    client: &reqwest::Client,
    uri: &str,
    spec: &IssuerSpec,
) -> Result<(serde_json::Value, KeySet), FetchError> {
    let mut resp = client.get(uri).send().await?;
    if !resp.status().is_success() {
        return Err(FetchError::Status(resp.status().as_u16()));
    }
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
    {
        return Err(FetchError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(FetchError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    let raw: serde_json::Value = serde_json::from_slice(&body)?;
    let algs = jwks::algorithms(&spec.algs, spec.shared_secret)?;
    let (keys, skipped) = KeySet::parse_published(&raw, &algs)?;
    if !skipped.is_empty() {
        tracing::debug!(uri = %uri, ?skipped, "JWK set: keys this issuer cannot use skipped");
    }
    Ok((raw, keys))
}

/// Run the fetcher until shutdown: a turn every second (cheap when nothing
/// is due). It stores only into `fetched`; the plane's writer picks the
/// changes up.
pub async fn run(
    fetched: Arc<Fetched>,
    issuers: impl Fn() -> Vec<(String, IssuerSpec)>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut fetcher = match Fetcher::new() {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, "JWK set fetcher cannot start; jwks_uri keys are not fetched");
            return;
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let list = issuers();
        fetcher.turn(&list, &fetched, Instant::now()).await;
    }
}
