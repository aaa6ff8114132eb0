//! The issuers of one topology snapshot, ready to verify: built off the
//! request path when a snapshot is applied or a fetched JWK set changes,
//! and swapped in whole as part of the plane ([`crate::state::Plane`]).
//! An issuer whose spec and keys did not change is carried over as it is,
//! so the tokens it verified stay remembered ([`super::cache`]); one whose
//! keys changed (a rotation) starts afresh.

use std::collections::HashMap;
use std::sync::Arc;

use unit_router::Topology;

use super::fetch::Fetched;
use super::jwt::Issuer;

/// The issuers in force, by name.
#[derive(Default)]
pub struct AuthIndex {
    issuers: HashMap<String, Built>,
}

impl std::fmt::Debug for AuthIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.issuers.keys()).finish()
    }
}

struct Built {
    issuer: Arc<Issuer>,
    /// The fetched set's version it was built with (0: none).
    fetched: u64,
}

impl AuthIndex {
    /// The issuers of `topo`: inline keys merged with what `fetched` holds
    /// for their `jwks_uri` (the inline key wins on a shared `kid`).
    pub fn build(topo: &Topology, fetched: &Fetched, old: Option<&AuthIndex>) -> Self {
        let mut issuers = HashMap::new();
        for (name, spec) in &topo.issuers {
            let inline = topo.issuer_keys.get(name).cloned().unwrap_or_default();
            let got = spec
                .jwks_uri
                .as_deref()
                .and_then(|uri| fetched.get(name, uri));
            let version = got.as_ref().map_or(0, |g| g.version);
            let kept = old
                .and_then(|o| o.issuers.get(name))
                .filter(|b| b.fetched == version && b.issuer.spec() == spec);
            if let Some(b) = kept {
                issuers.insert(
                    name.clone(),
                    Built {
                        issuer: b.issuer.clone(),
                        fetched: version,
                    },
                );
                continue;
            }
            let keys = match &got {
                Some(g) => inline.merged(&g.keys),
                None => inline,
            };
            match Issuer::new(name, spec, keys) {
                Ok(i) => {
                    issuers.insert(
                        name.clone(),
                        Built {
                            issuer: Arc::new(i),
                            fetched: version,
                        },
                    );
                }
                // Validated with the topology: cannot happen; refuse its
                // tokens rather than guess.
                Err(e) => tracing::error!(issuer = %name, error = %e, "issuer unusable"),
            }
        }
        AuthIndex { issuers }
    }

    /// The issuer `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Issuer>> {
        self.issuers.get(name).map(|b| &b.issuer)
    }
}
