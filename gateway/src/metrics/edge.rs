//! Client connections by listener, and the config center's state.

use pingora_prometheus::prometheus::{
    self, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};

use super::{counters, reg, Families};

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
    /// `unitgate_tls_certificate_expiry_timestamp_seconds{cert,name}`:
    /// each served certificate's notAfter (set when scraped).
    pub cert_expiry: IntGaugeVec,
}

/// The config center's state, mirrored by the control thread.
pub struct ConfigMetrics {
    pub epoch: IntGauge,
    /// `unitgate_config_change_revision`: the etcd revision of the newest
    /// topology change applied (puts and deletes alike): equal on every
    /// gateway that is up to date.
    pub change_revision: IntGauge,
    /// `unitgate_ready{region,dc}`: 1 while `/readyz` answers 200.
    pub ready: IntGaugeVec,
    pub connected: IntGauge,
    /// `unitgate_config_rejected_changes_total` (mirrored: raised by what
    /// the config center counted since the last mirror).
    pub rejected: IntCounter,
    /// `unitgate_config_compaction_relists_total` (mirrored the same way).
    pub relists: IntCounter,
}

impl ConnectionMetrics {
    pub(super) fn new(r: &Families) -> prometheus::Result<Self> {
        Ok(ConnectionMetrics {
            cert_expiry: reg(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "unitgate_tls_certificate_expiry_timestamp_seconds",
                        "When each served certificate expires (notAfter, Unix seconds), by certificate file and its first name",
                    ),
                    &["cert", "name"],
                ),
            )?,
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

impl ConfigMetrics {
    pub(super) fn new(r: &Families) -> prometheus::Result<Self> {
        let gauge = |name: &str, help: &str| reg(r, IntGauge::new(name, help));
        Ok(ConfigMetrics {
            epoch: gauge("unitgate_config_epoch", "Epoch of the topology in force")?,
            change_revision: gauge(
                "unitgate_config_change_revision",
                "etcd revision of the newest topology change applied (the same on every up-to-date gateway)",
            )?,
            ready: reg(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "unitgate_ready",
                        "1 while /readyz answers 200 (a topology in force, not stopping), by the gateway's region and dc",
                    ),
                    &["region", "dc"],
                ),
            )?,
            connected: gauge(
                "unitgate_config_connected",
                "1 when the config source (etcd or file) is reachable",
            )?,
            rejected: reg(
                r,
                IntCounter::new(
                    "unitgate_config_rejected_changes_total",
                    "Topology changes rejected by validation",
                ),
            )?,
            relists: reg(
                r,
                IntCounter::new(
                    "unitgate_config_compaction_relists_total",
                    "Re-lists after the etcd watch revision was compacted",
                ),
            )?,
        })
    }
}
