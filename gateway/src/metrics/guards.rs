//! Breakers and concurrency limits per (unit, service).

use pingora_prometheus::prometheus::{self, GaugeVec, IntCounterVec, IntGaugeVec, Opts};

use super::{counters, reg, Families};

/// Breakers and concurrency limits per (unit, service).
pub struct ResilienceMetrics {
    /// `unitgate_breaker_refused_total{unit,service}`: requests the
    /// breaker sent elsewhere (or failed fast).
    pub breaker_refused: IntCounterVec,
    /// `unitgate_breaker_drop_ratio{unit,service}` (mirrored on scrape).
    pub drop_ratio: GaugeVec,
    /// `unitgate_shed_total{unit,service,reason}`: requests shed with 503.
    pub shed: IntCounterVec,
    /// `unitgate_concurrency_limit{unit,service}` (mirrored on scrape).
    pub limit: GaugeVec,
    /// `unitgate_upstream_inflight{unit,service}` (mirrored on scrape).
    pub inflight: IntGaugeVec,
}

impl ResilienceMetrics {
    pub(super) fn new(r: &Families) -> prometheus::Result<Self> {
        let us = &["unit", "service"];
        Ok(ResilienceMetrics {
            breaker_refused: reg(
                r,
                counters(
                    "unitgate_breaker_refused_total",
                    "Requests the (unit, service) breaker refused: sent to the failover unit, or failed fast",
                    us,
                ),
            )?,
            drop_ratio: reg(
                r,
                GaugeVec::new(
                    Opts::new(
                        "unitgate_breaker_drop_ratio",
                        "Probability that the (unit, service) breaker refuses a request now (0: closed)",
                    ),
                    us,
                ),
            )?,
            shed: reg(
                r,
                counters(
                    "unitgate_shed_total",
                    "Requests shed with 503 by the (unit, service) concurrency limit, by reason (limit, queue_timeout)",
                    &["unit", "service", "reason"],
                ),
            )?,
            limit: reg(
                r,
                GaugeVec::new(
                    Opts::new(
                        "unitgate_concurrency_limit",
                        "The adaptive concurrency limit of a (unit, service) with a limiter",
                    ),
                    us,
                ),
            )?,
            inflight: reg(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "unitgate_upstream_inflight",
                        "Attempts in flight to a (unit, service) with a limiter",
                    ),
                    us,
                ),
            )?,
        })
    }
}
