//! What the config center reports about itself (`/status`, metrics, logs).

use serde::Serialize;

/// A point-in-time view of the config center.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Status {
    /// `etcd <endpoints> <prefix>`, `file <path>` or `none`.
    pub source: String,
    /// Whether the source is reachable and being watched.
    pub connected: bool,
    /// Epoch of the snapshot in force (none before the first valid one).
    pub epoch: Option<i64>,
    /// Where the snapshot in force came from: `source` or `last-known-good`.
    pub origin: Option<String>,
    /// Unix seconds of the last applied change.
    pub applied_at: Option<i64>,
    /// The last error (source or validation), if any.
    pub last_error: Option<String>,
    /// Changes rejected by validation since start.
    pub rejected_changes: u64,
    /// Changes applied since start.
    pub applied_changes: u64,
    /// Times the watch revision was compacted and the prefix was re-listed.
    pub compaction_relists: u64,
    /// Notices of the snapshot in force (drains kept out, instances ignored).
    pub notices: Vec<String>,
    /// The gateways registered now (`gateways/<id>`, etcd only), each as
    /// it last wrote itself (`applied_epoch` among it): updated on every
    /// write, unlike the snapshot's copy, which changes only when one
    /// joins or leaves.
    pub gateways: std::collections::BTreeMap<String, serde_json::Value>,
}
