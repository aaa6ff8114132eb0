//! Validation errors: one variant per broken rule, each naming the offending key.

use thiserror::Error;

/// One problem found while building a [`crate::Topology`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TopologyError {
    #[error("{key}: invalid JSON value: {message}")]
    InvalidJson { key: String, message: String },
    #[error("{key}: unknown key (expected cluster, regions/, datacenters/, units/, shardmap, routes/, services/, drain/dc/, drain/unit/, auth/issuers/, quotas/, gateways/ or instances/)")]
    UnknownKey { key: String },
    #[error("{key}: required key is missing")]
    MissingKey { key: String },
    #[error("{key}: invalid name {name:?} (use 1-63 of a-z, 0-9, '-', '_', '.')")]
    InvalidName { key: String, name: String },
    #[error("{key}: {field}: {message}")]
    InvalidValue {
        key: String,
        field: String,
        message: String,
    },
    #[error("{key}: country {country} is already claimed by {other}")]
    DuplicateCountry {
        key: String,
        country: String,
        other: String,
    },
    #[error("{key}: unknown region {region:?}")]
    UnknownRegion { key: String, region: String },
    #[error("{key}: unknown datacenter {dc:?}")]
    UnknownDatacenter { key: String, dc: String },
    #[error("{key}: unknown unit {unit:?}")]
    UnknownUnit { key: String, unit: String },
    #[error("{key}: failover to itself")]
    FailoverToSelf { key: String },
    #[error("{key}: failover to unknown unit {unit:?}")]
    UnknownFailover { key: String, unit: String },
    #[error("{key}: service {service}: invalid endpoint {endpoint:?} (expected ip:port)")]
    InvalidEndpoint {
        key: String,
        service: String,
        endpoint: String,
    },
    #[error("shardmap: range {from}-{to} is reversed")]
    ReversedRange { from: u32, to: u32 },
    #[error("shardmap: range {from}-{to} exceeds the last shard {last}")]
    RangeOutOfBounds { from: u32, to: u32, last: u32 },
    #[error("shardmap: unit {unit:?} of range {from}-{to} is not a shard unit")]
    NotShardUnit { unit: String, from: u32, to: u32 },
    #[error("shardmap: shards {from}-{to} have no unit (gap)")]
    ShardGap { from: u32, to: u32 },
    #[error("shardmap: shards {from}-{to} are assigned more than once (overlap: {units})")]
    ShardOverlap { from: u32, to: u32, units: String },
    #[error("{key}: route has no service")]
    RouteWithoutService { key: String },
    #[error("{key}: unknown service {service:?} (no unit runs it)")]
    UnknownService { key: String, service: String },
    #[error("{key}: policy center but no unit has kind center")]
    CenterWithoutUnit { key: String },
    #[error("{key}: unknown quota {quota:?} (no quotas/{quota})")]
    UnknownQuota { key: String, quota: String },
    #[error("{key}: unknown issuer {issuer:?} (no auth/issuers/{issuer})")]
    UnknownIssuer { key: String, issuer: String },
    #[error("{key}: auth {mode} but no issuer is configured under auth/issuers/")]
    AuthWithoutIssuer { key: String, mode: String },
    #[error("{key}: matches the same requests as {other}")]
    ConflictingRoute { key: String, other: String },
}

/// Every problem found in one candidate topology, in key order.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{} problem(s): {}", .0.len(), first_line(.0))]
pub struct ValidationErrors(pub Vec<TopologyError>);

fn first_line(errors: &[TopologyError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl ValidationErrors {
    /// The problems, one per line.
    pub fn iter(&self) -> impl Iterator<Item = &TopologyError> {
        self.0.iter()
    }
}
