//! The quotas of one topology snapshot with this gateway's share of each:
//! `scope: gateway` quotas are enforced whole by every gateway; `scope:
//! cluster` ones are split across the live gateways (those registered
//! under `gateways/<id>` with a lease), each enforcing `ceil(rate / n)`
//! and `ceil(burst / n)`, with no counter shared on the request path. A
//! quota whose share did not change keeps its counters across snapshots;
//! one whose share changed (edited, a gateway joined or left) starts
//! afresh.

use std::collections::HashMap;
use std::sync::Arc;

use unit_router::spec::{QuotaScope, QuotaSpec};
use unit_router::Topology;

use super::limiter::{Limiter, Share};

/// The quotas in force, by name.
#[derive(Default)]
pub struct Quotas {
    by_name: HashMap<String, Arc<Quota>>,
}

impl std::fmt::Debug for Quotas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.by_name.keys()).finish()
    }
}

/// One quota as this gateway enforces it.
pub struct Quota {
    pub name: String,
    pub spec: QuotaSpec,
    /// Live gateways it is split across (1 for `scope: gateway`).
    pub gateways: u32,
    pub limiter: Limiter,
    /// `RateLimit-Policy` for it: `"<name>";q=<rate>;w=<per_s>`.
    pub policy_header: String,
}

/// This gateway's share of `spec` when split across `n` gateways.
pub fn share_of(spec: &QuotaSpec, n: u32) -> Share {
    let n = match spec.scope {
        QuotaScope::Gateway => 1,
        QuotaScope::Cluster => n.max(1),
    };
    Share {
        rate: spec.rate.div_ceil(n),
        per_s: spec.per_s,
        burst: spec.burst.div_ceil(n),
    }
}

impl Quotas {
    /// The quotas of `topo`, split across its live gateways, carrying over
    /// the counters of `old` where the share is the same.
    pub fn build(topo: &Topology, old: Option<&Quotas>, max_keys: usize) -> Self {
        let live = u32::try_from(topo.gateways.len()).unwrap_or(u32::MAX);
        let mut by_name = HashMap::new();
        for (name, spec) in &topo.quotas {
            let share = share_of(spec, live);
            let kept = old
                .and_then(|o| o.by_name.get(name))
                .filter(|q| q.limiter.share == share && q.spec == *spec);
            if let Some(q) = kept {
                by_name.insert(name.clone(), q.clone());
                continue;
            }
            let Some(limiter) = Limiter::new(share, max_keys) else {
                tracing::error!(quota = %name, "quota unusable");
                continue;
            };
            let gateways = match spec.scope {
                QuotaScope::Gateway => 1,
                QuotaScope::Cluster => live.max(1),
            };
            tracing::info!(quota = %name, rate = share.rate, per_s = share.per_s, burst = share.burst, gateways, "quota in force");
            by_name.insert(
                name.clone(),
                Arc::new(Quota {
                    name: name.clone(),
                    spec: spec.clone(),
                    gateways,
                    policy_header: format!("\"{name}\";q={};w={}", share.rate, share.per_s),
                    limiter,
                }),
            );
        }
        Quotas { by_name }
    }

    /// The quota `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Quota>> {
        self.by_name.get(name)
    }

    /// Every quota.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Quota>> {
        self.by_name.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use unit_router::spec::QuotaKey;

    #[test]
    fn cluster_quotas_are_split_across_live_gateways() {
        let spec = QuotaSpec {
            key: QuotaKey::User,
            rate: 100,
            per_s: 60,
            burst: 21,
            scope: QuotaScope::Cluster,
        };
        assert_eq!(
            share_of(&spec, 0),
            Share {
                rate: 100,
                per_s: 60,
                burst: 21
            }
        );
        assert_eq!(
            share_of(&spec, 2),
            Share {
                rate: 50,
                per_s: 60,
                burst: 11
            }
        );
        assert_eq!(
            share_of(&spec, 3),
            Share {
                rate: 34,
                per_s: 60,
                burst: 7
            }
        );
        let local = QuotaSpec {
            scope: QuotaScope::Gateway,
            ..spec
        };
        assert_eq!(
            share_of(&local, 3),
            Share {
                rate: 100,
                per_s: 60,
                burst: 21
            }
        );
    }
}
