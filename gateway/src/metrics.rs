//! Prometheus metrics of one gateway (its own registry, served on /metrics).

use pingora_prometheus::prometheus::{
    self, Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// Every metric the gateway exports.
pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub attempts: IntCounterVec,
    pub retries: IntCounterVec,
    pub retry_budget_exhausted: IntCounter,
    pub tokens: IntCounterVec,
    pub dyes: IntCounterVec,
    pub config_epoch: IntGauge,
    pub config_connected: IntGauge,
    pub config_rejected: IntGauge,
    pub config_relists: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "unitgate_requests_total",
                "Requests by listener, route, reason and status",
            ),
            &["listener", "route", "reason", "status"],
        )
        .expect("metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "unitgate_request_duration_seconds",
                "Request duration at the gateway",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["listener"],
        )
        .expect("metric");
        let attempts = IntCounterVec::new(
            Opts::new(
                "unitgate_upstream_attempts_total",
                "Upstream attempts by unit and outcome",
            ),
            &["unit", "outcome"],
        )
        .expect("metric");
        let retries = IntCounterVec::new(
            Opts::new(
                "unitgate_retries_total",
                "Retries by kind (connect, transport)",
            ),
            &["kind"],
        )
        .expect("metric");
        let retry_budget_exhausted = IntCounter::new(
            "unitgate_retry_budget_exhausted_total",
            "Retries refused because the retry budget was spent",
        )
        .expect("metric");
        let tokens = IntCounterVec::new(
            Opts::new(
                "unitgate_routing_tokens_total",
                "Routing tokens by result (valid, rejected, issued)",
            ),
            &["result"],
        )
        .expect("metric");
        let dyes = IntCounterVec::new(
            Opts::new(
                "unitgate_dyes_total",
                "Dyes by result (verified, rejected, set)",
            ),
            &["result"],
        )
        .expect("metric");
        let config_epoch = IntGauge::new("unitgate_config_epoch", "Epoch of the topology in force")
            .expect("metric");
        let config_connected = IntGauge::new(
            "unitgate_config_connected",
            "1 when the config source (etcd or file) is reachable",
        )
        .expect("metric");
        let config_rejected = IntGauge::new(
            "unitgate_config_rejected_changes",
            "Topology changes rejected by validation since start",
        )
        .expect("metric");
        let config_relists = IntGauge::new(
            "unitgate_config_compaction_relists",
            "Re-lists after the etcd watch revision was compacted",
        )
        .expect("metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(attempts.clone()),
            Box::new(retries.clone()),
            Box::new(retry_budget_exhausted.clone()),
            Box::new(tokens.clone()),
            Box::new(dyes.clone()),
            Box::new(config_epoch.clone()),
            Box::new(config_connected.clone()),
            Box::new(config_rejected.clone()),
            Box::new(config_relists.clone()),
        ] {
            registry.register(c).expect("register metric");
        }
        Metrics {
            registry,
            requests,
            duration,
            attempts,
            retries,
            retry_budget_exhausted,
            tokens,
            dyes,
            config_epoch,
            config_connected,
            config_rejected,
            config_relists,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}
