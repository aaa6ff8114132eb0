//! What the admission steps count: auth results, quota decisions and
//! routing tokens.

use pingora_prometheus::prometheus::{self, IntCounter, IntCounterVec, IntGaugeVec, Opts};

use super::{counters, reg, Families};

/// `unitgate_auth_total` by result, resolved once.
pub struct AuthCounters {
    pub vec: IntCounterVec,
    /// A token verified (or was remembered as verified).
    pub valid: IntCounter,
    /// No token on an optional route.
    pub anonymous: IntCounter,
    /// No token on a required route (401).
    pub missing: IntCounter,
    /// A token that did not verify (401), or a malformed credential (400).
    pub invalid: IntCounter,
    /// A valid token without a claim the route requires (403).
    pub forbidden: IntCounter,
}

/// Quota decisions and counters.
pub struct QuotaMetrics {
    /// `unitgate_quota_refused_total{quota}`.
    pub refused: IntCounterVec,
    /// `unitgate_quota_keys{quota}`: keys held by its counters.
    pub keys: IntGaugeVec,
    /// `unitgate_quota_resets_total{quota}`: counters started afresh under
    /// a flood of live keys.
    pub resets: IntCounterVec,
}

/// `unitgate_routing_tokens_total` by result.
pub struct TokenCounters {
    pub valid: IntCounter,
    pub rejected: IntCounter,
    pub issued: IntCounter,
}

impl TokenCounters {
    pub(super) fn of(tokens: &IntCounterVec) -> Self {
        TokenCounters {
            valid: tokens.with_label_values(&["valid"]),
            rejected: tokens.with_label_values(&["rejected"]),
            issued: tokens.with_label_values(&["issued"]),
        }
    }
}

impl AuthCounters {
    pub(super) fn new(r: &Families) -> prometheus::Result<Self> {
        let vec = reg(
            r,
            counters(
                "unitgate_auth_total",
                "Auth checks on routes with auth, by result (valid, anonymous, missing, invalid, forbidden)",
                &["result"],
            ),
        )?;
        let c = |l: &str| vec.with_label_values(&[l]);
        Ok(AuthCounters {
            valid: c("valid"),
            anonymous: c("anonymous"),
            missing: c("missing"),
            invalid: c("invalid"),
            forbidden: c("forbidden"),
            vec,
        })
    }
}

impl QuotaMetrics {
    pub(super) fn new(r: &Families) -> prometheus::Result<Self> {
        Ok(QuotaMetrics {
            refused: reg(
                r,
                counters(
                    "unitgate_quota_refused_total",
                    "Requests refused with 429, by quota",
                    &["quota"],
                ),
            )?,
            keys: reg(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "unitgate_quota_keys",
                        "Keys held by a quota's counters on this gateway",
                    ),
                    &["quota"],
                ),
            )?,
            resets: reg(
                r,
                counters(
                    "unitgate_quota_resets_total",
                    "Times a quota's counters started afresh under a flood of distinct live keys",
                    &["quota"],
                ),
            )?,
        })
    }
}
