//! Prometheus metrics of one gateway (its own registry, served on /metrics).

use pingora_prometheus::prometheus::{
    self, Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
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
    /// `tokens` by result, resolved once (the request path counts one per
    /// request).
    pub token: TokenCounters,
    pub dyes: IntCounterVec,
    /// `unitgate_headers_dropped_total{reason}`: request headers removed
    /// before the upstream by an input rule.
    pub headers_dropped: IntCounterVec,
    /// Of those, names with `_` (`reason="underscore"`), resolved once.
    pub underscore_dropped: IntCounter,
    /// `unitgate_send_timeouts_total{listener}`: responses ended because
    /// the client took nothing for `send_timeout_ms`.
    pub send_timeouts: IntCounterVec,
    /// `unitgate_access_log_dropped_total`: lines the access log's queue
    /// had no room for.
    pub access_log_dropped: IntCounter,
    pub connections: ConnectionMetrics,
    pub config: ConfigMetrics,
    pub auth: AuthCounters,
    pub quota: QuotaMetrics,
    pub resilience: ResilienceMetrics,
}

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
    fn new(r: &Registry) -> prometheus::Result<Self> {
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
    fn of(tokens: &IntCounterVec) -> Self {
        TokenCounters {
            valid: tokens.with_label_values(&["valid"]),
            rejected: tokens.with_label_values(&["rejected"]),
            issued: tokens.with_label_values(&["issued"]),
        }
    }
}

/// Client connections by listener.
pub struct ConnectionMetrics {
    pub open: IntGaugeVec,
    /// Open connections waiting for their next request (parked).
    pub idle: IntGaugeVec,
    pub refused: IntCounterVec,
    /// Request heads refused while being read (too large, too slow,
    /// malformed), by listener and reason.
    pub heads_refused: IntCounterVec,
    /// Connections closed below HTTP: TLS handshakes that failed or took
    /// too long, PROXY headers refused, HTTP/2 clients over a budget.
    pub edge_refused: IntCounterVec,
}

/// The config center's state, mirrored by the control thread.
pub struct ConfigMetrics {
    pub epoch: IntGauge,
    pub connected: IntGauge,
    pub rejected: IntGauge,
    pub relists: IntGauge,
}

impl ConnectionMetrics {
    fn new(r: &Registry) -> prometheus::Result<Self> {
        Ok(ConnectionMetrics {
            open: reg(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "unitgate_connections_open",
                        "Client connections open now, by listener",
                    ),
                    &["listener"],
                ),
            )?,
            idle: reg(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "unitgate_connections_idle",
                        "Client connections waiting for their next request, by listener (part of unitgate_connections_open)",
                    ),
                    &["listener"],
                ),
            )?,
            refused: reg(
                r,
                counters(
                    "unitgate_connections_refused_total",
                    "Connections closed on accept by listener and limit (listener, ip)",
                    &["listener", "limit"],
                ),
            )?,
            heads_refused: reg(
                r,
                counters(
                    "unitgate_request_heads_refused_total",
                    "Request heads refused while read, by listener and reason (too_large: 431, timeout: 408, malformed: 400, connect: 405)",
                    &["listener", "reason"],
                ),
            )?,
            edge_refused: reg(
                r,
                counters(
                    "unitgate_edge_refused_total",
                    "Connections closed below HTTP, by listener and reason (tls_handshake, tls_timeout, proxy_untrusted, proxy_header, h2_resets, h2_control, h2_timeout)",
                    &["listener", "reason"],
                ),
            )?,
        })
    }

    /// The HTTP/2 frame-guard counters of one listener.
    pub fn frame_counters(&self, listener: &str) -> crate::listen::h2_guard::FrameCounters {
        let c = |reason: &str| self.edge_refused.with_label_values(&[listener, reason]);
        crate::listen::h2_guard::FrameCounters {
            resets: c("h2_resets"),
            control: c("h2_control"),
            timeout: c("h2_timeout"),
        }
    }

    /// The head counters of one listener, labels resolved once.
    pub fn head_counters(&self, listener: &str) -> crate::listen::head::HeadCounters {
        let c = |reason: &str| self.heads_refused.with_label_values(&[listener, reason]);
        crate::listen::head::HeadCounters {
            too_large: c("too_large"),
            timeout: c("timeout"),
            malformed: c("malformed"),
            log: None,
        }
    }
}

impl AuthCounters {
    fn new(r: &Registry) -> prometheus::Result<Self> {
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

impl ConfigMetrics {
    fn new(r: &Registry) -> prometheus::Result<Self> {
        let gauge = |name: &str, help: &str| reg(r, IntGauge::new(name, help));
        Ok(ConfigMetrics {
            epoch: gauge("unitgate_config_epoch", "Epoch of the topology in force")?,
            connected: gauge(
                "unitgate_config_connected",
                "1 when the config source (etcd or file) is reachable",
            )?,
            rejected: gauge(
                "unitgate_config_rejected_changes",
                "Topology changes rejected by validation since start",
            )?,
            relists: gauge(
                "unitgate_config_compaction_relists",
                "Re-lists after the etcd watch revision was compacted",
            )?,
        })
    }
}

/// Register `c` in `r` and hand it back.
fn reg<C: prometheus::core::Collector + Clone + 'static>(
    r: &Registry,
    c: prometheus::Result<C>,
) -> prometheus::Result<C> {
    let c = c?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn counters(name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntCounterVec> {
    IntCounterVec::new(Opts::new(name, help), labels)
}

impl QuotaMetrics {
    fn new(r: &Registry) -> prometheus::Result<Self> {
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

/// A counter vector registered in `r`.
fn counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    reg(r, counters(name, help, labels))
}

/// `unitgate_request_duration_seconds` buckets, 0.5 ms to 10 s.
const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Metrics {
    /// Every metric, registered in a registry of its own.
    pub fn new() -> prometheus::Result<Self> {
        let r = Registry::new();
        let tokens = counter_vec(
            &r,
            "unitgate_routing_tokens_total",
            "Routing tokens by result (valid, rejected, issued)",
            &["result"],
        )?;
        let headers_dropped = counter_vec(
            &r,
            "unitgate_headers_dropped_total",
            "Request headers removed before the upstream, by reason (underscore: a name with '_')",
            &["reason"],
        )?;
        Ok(Metrics {
            send_timeouts: counter_vec(
                &r,
                "unitgate_send_timeouts_total",
                "Responses ended because the client took nothing for send_timeout_ms, by listener",
                &["listener"],
            )?,
            access_log_dropped: reg(
                &r,
                IntCounter::new(
                    "unitgate_access_log_dropped_total",
                    "Access-log lines dropped because the writer's queue was full",
                ),
            )?,
            underscore_dropped: headers_dropped.with_label_values(&["underscore"]),
            headers_dropped,
            token: TokenCounters::of(&tokens),
            tokens,
            requests: counter_vec(
                &r,
                "unitgate_requests_total",
                "Requests by listener, route, reason and status",
                &["listener", "route", "reason", "status"],
            )?,
            duration: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "unitgate_request_duration_seconds",
                        "Request duration at the gateway",
                    )
                    .buckets(DURATION_BUCKETS.to_vec()),
                    &["listener"],
                ),
            )?,
            attempts: counter_vec(
                &r,
                "unitgate_upstream_attempts_total",
                "Upstream attempts by unit and outcome",
                &["unit", "outcome"],
            )?,
            retries: counter_vec(
                &r,
                "unitgate_retries_total",
                "Retries by kind (connect, transport)",
                &["kind"],
            )?,
            retry_budget_exhausted: reg(
                &r,
                IntCounter::new(
                    "unitgate_retry_budget_exhausted_total",
                    "Retries refused because the retry budget was spent",
                ),
            )?,
            dyes: counter_vec(
                &r,
                "unitgate_dyes_total",
                "Dyes by result (verified, rejected, mismatched, set)",
                &["result"],
            )?,
            connections: ConnectionMetrics::new(&r)?,
            config: ConfigMetrics::new(&r)?,
            auth: AuthCounters::new(&r)?,
            resilience: ResilienceMetrics::new(&r)?,
            quota: QuotaMetrics::new(&r)?,
            registry: r,
        })
    }

    /// The text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}
