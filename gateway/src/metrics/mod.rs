//! Prometheus metrics of one gateway (its own registry, served on
//! /metrics): the request path's here, the edge's, the admission steps'
//! and the guards' in their own files; `forget` drops the series of
//! routes, units and services that left the topology. `docs/operations.md`
//! ("Metrics") lists every one.

use pingora_prometheus::prometheus::{
    self, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
};

mod admission;
mod edge;
pub mod families;
pub mod forget;
mod guards;

use families::Families;

pub use admission::{AuthCounters, QuotaMetrics, TokenCounters};
pub use edge::{ConfigMetrics, ConnectionMetrics};
pub use guards::ResilienceMetrics;

/// Every metric the gateway exports.
pub struct Metrics {
    /// Every family, rendered for `/metrics` ([`families`]).
    pub registry: families::Rendered,
    pub requests: IntCounterVec,
    /// `unitgate_request_duration_seconds{listener,route}`.
    pub duration: HistogramVec,
    /// `unitgate_upstream_duration_seconds{unit,service}`: each attempt's
    /// time to its upstream's answer head.
    pub upstream_duration: HistogramVec,
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

/// Register `c` in `r` and hand it back.
pub(crate) fn reg<C: prometheus::core::Collector + Clone + 'static>(
    r: &Families,
    c: prometheus::Result<C>,
) -> prometheus::Result<C> {
    let c = c?;
    r.register(&c)?;
    Ok(c)
}

pub(crate) fn counters(
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    IntCounterVec::new(Opts::new(name, help), labels)
}

/// A counter registered in `r`.
fn counter(r: &Families, name: &str, help: &str) -> prometheus::Result<IntCounter> {
    reg(r, IntCounter::new(name, help))
}

/// A counter vector registered in `r`.
fn counter_vec(
    r: &Families,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    reg(r, counters(name, help, labels))
}

/// `unitgate_request_duration_seconds` and
/// `unitgate_upstream_duration_seconds` buckets, 0.5 ms to the longest
/// deadline a route may have (`unit_router::MAX_ROUTE_TIMEOUT_MS`, 600 s).
const DURATION_BUCKETS: [f64; 20] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0,
    30.0, 60.0, 120.0, 300.0, 600.0,
];

/// The build: `unitgate_build_info{version,commit}` is 1.
fn build_info(r: &Families) -> prometheus::Result<()> {
    let info = reg(
        r,
        IntGaugeVec::new(
            Opts::new(
                "unitgate_build_info",
                "The gateway's version and commit (always 1)",
            ),
            &["version", "commit"],
        ),
    )?;
    let commit = env!("UNITGATE_COMMIT");
    info.with_label_values(&[env!("CARGO_PKG_VERSION"), commit])
        .set(1);
    Ok(())
}

/// A histogram vector of [`DURATION_BUCKETS`] registered in `r`.
fn durations(
    r: &Families,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<HistogramVec> {
    let opts = HistogramOpts::new(name, help).buckets(DURATION_BUCKETS.to_vec());
    reg(r, HistogramVec::new(opts, labels))
}

impl Metrics {
    /// Every metric, registered in a registry of its own.
    pub fn new() -> prometheus::Result<Self> {
        let r = Families::new();
        build_info(&r).and_then(|()| process(&r))?;
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
            access_log_dropped: counter(
                &r,
                "unitgate_access_log_dropped_total",
                "Access-log lines dropped because the writer's queue was full",
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
            duration: durations(
                &r,
                "unitgate_request_duration_seconds",
                "Request duration at the gateway, by listener and route",
                &["listener", "route"],
            )?,
            upstream_duration: durations(
                &r,
                "unitgate_upstream_duration_seconds",
                "Time from an attempt's start to its upstream's answer head, by unit and service",
                &["unit", "service"],
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
                "Retries by kind (connect, transport, status)",
                &["kind"],
            )?,
            retry_budget_exhausted: counter(
                &r,
                "unitgate_retry_budget_exhausted_total",
                "Retries refused because the retry budget was spent",
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
            registry: r.done(),
        })
    }

    /// The text exposition format.
    pub fn render(&self) -> Vec<u8> {
        self.registry.render()
    }
}

/// `process_*`: resident memory, CPU, open descriptors, start time.
fn process(r: &Families) -> prometheus::Result<()> {
    r.register_boxed(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))
}
