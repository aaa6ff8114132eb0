//! How the gateway protects each upstream service: the default deadline,
//! which answers are retried, the circuit breaker, the adaptive concurrency
//! limit with its admission queue, and the slow start of endpoints.
//!
//! On the wire ([`ResilienceSpec`]) every field is optional: `cluster`'s
//! `resilience` holds the defaults and `services/<name>` overrides them
//! field by field. [`Resilience`] is the resolved, validated result, one
//! per service of a snapshot. The algorithms are explained in
//! `docs/resilience.md`.

use serde::{Deserialize, Serialize};

/// `cluster.resilience` and `services/<name>`: every field optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResilienceSpec {
    /// Total time of a request across its attempts, for routes of the
    /// service that set no `timeout_ms` of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Upstream statuses after which an idempotent request goes to the
    /// next endpoint or unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<Vec<u16>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limiter: Option<LimiterSpec>,
    /// How long an endpoint that is new or back from ejection takes to get
    /// its full share of traffic (0: at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_start_ms: Option<u64>,
}

/// Adaptive throttling per (unit, service) (Google SRE book, "Handling
/// Overload"): a request is refused locally with probability
/// `max(0, (requests - k * accepts) / (requests + 1))` over the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The multiplier `k`: lower is more aggressive (1.1 .. 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<f64>,
    /// The sliding window the counts cover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_ms: Option<u64>,
    /// Below this many requests in the window the breaker never refuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u32>,
}

/// The adaptive concurrency limit per (unit, service) (the gradient
/// algorithm of Netflix concurrency-limits) and its CoDel admission queue.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimiterSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
    /// How much the recent latency may exceed the long-term one before the
    /// limit shrinks (a ratio, 1 .. 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
    /// How often the limit is recomputed from the latency samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_ms: Option<u64>,
    /// How many requests may wait for a free slot (0: none wait, the excess
    /// is shed at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<u32>,
    /// CoDel's target: under sustained overload a request waits at most
    /// this long, and the newest are served first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_target_ms: Option<u64>,
    /// CoDel's interval: the longest wait while the queue keeps emptying,
    /// and how long it must stay non-empty to count as overloaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_interval_ms: Option<u64>,
}

/// The resolved settings of one service.
#[derive(Debug, Clone, PartialEq)]
pub struct Resilience {
    /// `None`: the gateway's `request_timeout_ms`.
    pub timeout_ms: Option<u64>,
    /// Sorted, without duplicates.
    pub retry_on: Vec<u16>,
    pub breaker: Breaker,
    pub limiter: Limiter,
    pub slow_start_ms: u64,
}

/// Resolved [`BreakerSpec`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Breaker {
    pub enabled: bool,
    pub k: f64,
    pub window_ms: u64,
    pub min_requests: u32,
}

/// Resolved [`LimiterSpec`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limiter {
    pub enabled: bool,
    pub initial: u32,
    pub min: u32,
    pub max: u32,
    pub tolerance: f64,
    pub window_ms: u64,
    pub queue: u32,
    pub queue_target_ms: u64,
    pub queue_interval_ms: u64,
}

impl Default for Resilience {
    fn default() -> Self {
        Resilience {
            timeout_ms: None,
            retry_on: vec![502, 503, 504],
            breaker: Breaker {
                enabled: true,
                k: 1.5,
                window_ms: 10_000,
                min_requests: 20,
            },
            limiter: Limiter {
                enabled: false,
                initial: 50,
                min: 4,
                max: 1_000,
                tolerance: 2.0,
                window_ms: 100,
                queue: 64,
                queue_target_ms: 5,
                queue_interval_ms: 100,
            },
            slow_start_ms: 10_000,
        }
    }
}

impl Resilience {
    /// `self` with the fields `spec` sets replaced.
    pub fn overlay(&self, spec: &ResilienceSpec) -> Resilience {
        let mut r = self.clone();
        if let Some(t) = spec.timeout_ms {
            r.timeout_ms = Some(t);
        }
        if let Some(codes) = &spec.retry_on {
            let mut codes = codes.clone();
            codes.sort_unstable();
            codes.dedup();
            r.retry_on = codes;
        }
        if let Some(b) = &spec.breaker {
            let d = &mut r.breaker;
            d.enabled = b.enabled.unwrap_or(d.enabled);
            d.k = b.k.unwrap_or(d.k);
            d.window_ms = b.window_ms.unwrap_or(d.window_ms);
            d.min_requests = b.min_requests.unwrap_or(d.min_requests);
        }
        if let Some(l) = &spec.limiter {
            let d = &mut r.limiter;
            d.enabled = l.enabled.unwrap_or(d.enabled);
            d.initial = l.initial.unwrap_or(d.initial);
            d.min = l.min.unwrap_or(d.min);
            d.max = l.max.unwrap_or(d.max);
            d.tolerance = l.tolerance.unwrap_or(d.tolerance);
            d.window_ms = l.window_ms.unwrap_or(d.window_ms);
            d.queue = l.queue.unwrap_or(d.queue);
            d.queue_target_ms = l.queue_target_ms.unwrap_or(d.queue_target_ms);
            d.queue_interval_ms = l.queue_interval_ms.unwrap_or(d.queue_interval_ms);
        }
        if let Some(s) = spec.slow_start_ms {
            r.slow_start_ms = s;
        }
        r
    }

    /// Every rule the resolved settings break, as (field, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let mut bad = |field: &'static str, msg: String| out.push((field, msg));
        if let Some(t) = self.timeout_ms {
            if t == 0 || t > crate::MAX_ROUTE_TIMEOUT_MS {
                bad(
                    "timeout_ms",
                    format!("{t} is not within 1..={}", crate::MAX_ROUTE_TIMEOUT_MS),
                );
            }
        }
        for &c in &self.retry_on {
            if !(c == 408 || c == 429 || (500..=599).contains(&c)) {
                bad(
                    "retry_on",
                    format!("{c} is not a retryable status (408, 429 or 500-599)"),
                );
            }
        }
        let b = &self.breaker;
        if !(1.1..=10.0).contains(&b.k) {
            bad("breaker.k", format!("{} is not within 1.1..=10", b.k));
        }
        if !(1_000..=600_000).contains(&b.window_ms) {
            bad(
                "breaker.window_ms",
                format!("{} is not within 1000..=600000", b.window_ms),
            );
        }
        if !(1..=1_000_000).contains(&b.min_requests) {
            bad(
                "breaker.min_requests",
                format!("{} is not within 1..=1000000", b.min_requests),
            );
        }
        let l = &self.limiter;
        if l.min == 0 || l.min > l.initial || l.initial > l.max || l.max > 100_000 {
            bad(
                "limiter",
                format!(
                    "min {} <= initial {} <= max {} must hold, with min >= 1 and max <= 100000",
                    l.min, l.initial, l.max
                ),
            );
        }
        if !(1.0..=10.0).contains(&l.tolerance) {
            bad(
                "limiter.tolerance",
                format!("{} is not within 1..=10", l.tolerance),
            );
        }
        if !(10..=60_000).contains(&l.window_ms) {
            bad(
                "limiter.window_ms",
                format!("{} is not within 10..=60000", l.window_ms),
            );
        }
        if l.queue > 100_000 {
            bad("limiter.queue", format!("{} is above 100000", l.queue));
        }
        if l.queue_target_ms == 0 || l.queue_target_ms > l.queue_interval_ms {
            bad(
                "limiter.queue_target_ms",
                format!(
                    "{} must be at least 1 and at most queue_interval_ms ({})",
                    l.queue_target_ms, l.queue_interval_ms
                ),
            );
        }
        if l.queue_interval_ms > 60_000 {
            bad(
                "limiter.queue_interval_ms",
                format!("{} is above 60000", l.queue_interval_ms),
            );
        }
        if self.slow_start_ms > 600_000 {
            bad(
                "slow_start_ms",
                format!("{} is above 600000", self.slow_start_ms),
            );
        }
        out
    }
}

/// How much a route's requests matter when a service sheds load: the
/// least critical go first.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Criticality {
    Sheddable,
    #[default]
    Default,
    Critical,
}

impl Criticality {
    pub fn as_str(self) -> &'static str {
        match self {
            Criticality::Sheddable => "sheddable",
            Criticality::Default => "default",
            Criticality::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sheddable" => Some(Criticality::Sheddable),
            "default" => Some(Criticality::Default),
            "critical" => Some(Criticality::Critical),
            _ => None,
        }
    }

    /// One level up (a request already shuttled from another unit is shed
    /// after the fresh ones of its route).
    pub fn raised(self) -> Self {
        match self {
            Criticality::Sheddable => Criticality::Default,
            _ => Criticality::Critical,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_fields_override_the_cluster_defaults_one_by_one() {
        let cluster = Resilience::default().overlay(&ResilienceSpec {
            timeout_ms: Some(2_000),
            breaker: Some(BreakerSpec {
                k: Some(2.0),
                ..BreakerSpec::default()
            }),
            ..ResilienceSpec::default()
        });
        let svc = cluster.overlay(&ResilienceSpec {
            retry_on: Some(vec![504, 502, 504]),
            breaker: Some(BreakerSpec {
                min_requests: Some(5),
                ..BreakerSpec::default()
            }),
            ..ResilienceSpec::default()
        });
        assert_eq!(svc.timeout_ms, Some(2_000));
        assert_eq!(svc.retry_on, vec![502, 504]);
        assert_eq!((svc.breaker.k, svc.breaker.min_requests), (2.0, 5));
        assert!(svc.problems().is_empty());
    }

    #[test]
    fn bad_values_are_named() {
        let r = Resilience::default().overlay(&ResilienceSpec {
            retry_on: Some(vec![404]),
            limiter: Some(LimiterSpec {
                min: Some(100),
                initial: Some(10),
                ..LimiterSpec::default()
            }),
            ..ResilienceSpec::default()
        });
        let fields: Vec<_> = r.problems().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, vec!["retry_on", "limiter"]);
    }
}
