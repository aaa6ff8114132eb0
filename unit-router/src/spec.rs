//! Wire models: the JSON value of each etcd key under the prefix, decoded as-is.
//!
//! These are the contract of DESIGN.md "etcd layout". They carry no cross-key
//! meaning; [`crate::Topology`] validates them together and builds indexes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::resilience::{BreakerSpec, Criticality, LimiterSpec, ResilienceSpec};

/// `cluster`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    #[serde(default = "default_shards")]
    pub shards: u32,
    #[serde(default)]
    pub shard_hash: ShardHash,
    #[serde(default = "default_user_header")]
    pub user_header: String,
    #[serde(default = "default_token_ttl")]
    pub token_ttl_s: u64,
    #[serde(default = "default_max_hops")]
    pub max_hops: u8,
    /// Defaults of every service's resilience settings (`services/<name>`
    /// overrides them field by field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resilience: Option<ResilienceSpec>,
}

fn default_shards() -> u32 {
    100
}
fn default_user_header() -> String {
    "x-user-id".to_owned()
}
fn default_token_ttl() -> u64 {
    86_400
}
fn default_max_hops() -> u8 {
    2
}

/// How a user key becomes a shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShardHash {
    /// Decimal keys: `key mod N`; any other key: `xxh3(key) mod N`.
    #[default]
    Mod,
    /// Every key: `xxh3_64(key bytes) mod N`.
    Xxh3,
}

/// `regions/<region>`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionSpec {
    pub entries: Vec<String>,
    #[serde(default)]
    pub countries: Vec<String>,
    #[serde(default)]
    pub subdivisions: Vec<String>,
}

/// `datacenters/<dc>`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatacenterSpec {
    pub region: String,
}

/// `units/<unit>`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitSpec {
    pub dc: String,
    pub kind: UnitKind,
    #[serde(default)]
    pub failover: Vec<String>,
    #[serde(default)]
    pub services: BTreeMap<String, ServiceSpec>,
}

/// Whether a unit serves a range of shards or the global (non-shardable) data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnitKind {
    Shard,
    Center,
}

/// One service inside a unit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// `ip:port` of each endpoint.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Path of the active health check (`GET`); none: passive health only.
    #[serde(default)]
    pub health_path: Option<String>,
    /// Interval of the active health check.
    #[serde(default = "default_health_interval")]
    pub health_interval_ms: u64,
    /// TCP connect timeout per attempt.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// Timeout of each read from the upstream.
    #[serde(default = "default_read_timeout")]
    pub read_timeout_ms: u64,
    /// Timeout of the whole connection set-up, TCP connect and (later) TLS
    /// handshake together: Pingora's `total_connection_timeout`. Not a
    /// deadline for the request. Read under its old name `total_timeout_ms`
    /// too, so that a topology written before the rename stays valid.
    #[serde(default = "default_total_connect_timeout", alias = "total_timeout_ms")]
    pub total_connect_timeout_ms: u64,
}

fn default_health_interval() -> u64 {
    2_000
}
fn default_connect_timeout() -> u64 {
    1_000
}
fn default_read_timeout() -> u64 {
    10_000
}
fn default_total_connect_timeout() -> u64 {
    3_000
}

/// `shardmap`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardMapSpec {
    pub ranges: Vec<ShardRangeSpec>,
}

/// One inclusive range of the shard map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardRangeSpec {
    pub from: u32,
    pub to: u32,
    pub unit: String,
}

/// `routes/<name>`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Exact hosts or `*.suffix` wildcards; empty matches any host.
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default = "default_prefix")]
    pub path_prefix: String,
    /// `null` matches any method.
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    pub service: String,
    pub policy: Policy,
    /// Whether a verified JWT is required, optional or not asked for.
    #[serde(default)]
    pub auth: AuthMode,
    /// The issuers (`auth/issuers/<name>`) whose tokens the route takes;
    /// none: every issuer of the topology.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuers: Option<Vec<String>>,
    /// Claims a verified token must carry for this route (403 otherwise):
    /// claim name to value. A string claim matches when equal or, for a
    /// space-separated list such as `scope`, when it holds the value; an
    /// array claim when one element is equal.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub require_claims: BTreeMap<String, String>,
    /// The quota (`quotas/<name>`) or quotas the route is counted against;
    /// a request must pass every one.
    #[serde(default, skip_serializing_if = "QuotaRefs::is_empty")]
    pub quota: QuotaRefs,
    #[serde(default)]
    pub listener: ListenerScope,
    /// Request body limit in bytes (413 above it); none: the gateway's
    /// `max_body_bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// Total time of a request across all its attempts (504 after it);
    /// none: the service's `timeout_ms`, else the gateway's
    /// `request_timeout_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Upstream statuses after which an idempotent request is tried again
    /// elsewhere; none: the service's `retry_on`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<Vec<u16>>,
    /// A non-idempotent request that carries an `Idempotency-Key` header
    /// may be sent again too (the units must honour the key).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retry_with_idempotency_key: bool,
    /// Which requests a service sheds first when overloaded.
    #[serde(default, skip_serializing_if = "is_default_criticality")]
    pub criticality: Criticality,
    /// What the route's service speaks: `http1` (default), `h2c` (HTTP/2
    /// with prior knowledge, e.g. gRPC), `h2` (HTTP/2 over TLS).
    #[serde(default, skip_serializing_if = "UpstreamProtocol::is_default")]
    pub upstream_protocol: UpstreamProtocol,
    /// With `h2`: the name the endpoints' certificates must carry (sent as
    /// SNI and verified); required there, refused elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_sni: Option<String>,
    /// `Strict-Transport-Security` on the route's HTTPS answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsts: Option<HstsSpec>,
}

/// The protocol the gateway speaks to a route's service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    H2c,
    H2,
}

impl UpstreamProtocol {
    fn is_default(&self) -> bool {
        *self == UpstreamProtocol::Http1
    }
}

/// HSTS (RFC 6797) of a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HstsSpec {
    pub max_age_s: u64,
    #[serde(default)]
    pub include_subdomains: bool,
    #[serde(default)]
    pub preload: bool,
}

impl HstsSpec {
    /// The header value.
    pub fn header_value(&self) -> String {
        let mut v = format!("max-age={}", self.max_age_s);
        if self.include_subdomains {
            v.push_str("; includeSubDomains");
        }
        if self.preload {
            v.push_str("; preload");
        }
        v
    }
}

fn is_default_criticality(c: &Criticality) -> bool {
    *c == Criticality::Default
}

fn default_prefix() -> String {
    "/".to_owned()
}

/// How a route finds the home unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    Shard,
    Region,
    Center,
    Local,
}

/// Whether a route demands a verified JWT.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    Required,
    Optional,
    #[default]
    None,
}

/// Which listener a route is reachable on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerScope {
    #[default]
    Public,
    Internal,
    Both,
}

/// `drain/dc/<dc>` and `drain/unit/<unit>`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainSpec {
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub by: String,
    /// RFC 3339; past it the drain no longer applies.
    #[serde(default)]
    pub until: Option<String>,
}

/// `auth/issuers/<name>`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSpec {
    /// The `iss` claim its tokens carry.
    pub iss: String,
    /// Audiences: a token must name one of them (none: `aud` not checked).
    #[serde(default)]
    pub aud: Vec<String>,
    /// Allowed algorithms: asymmetric ones, or with `shared_secret` HS ones.
    pub algs: Vec<String>,
    /// The JWK set, inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<serde_json::Value>,
    /// Where to fetch the JWK set (in the background, never on the request
    /// path); merged with `jwks`, the inline key winning on a shared `kid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// How often the `jwks_uri` set is fetched again, and the least time
    /// between two fetches caused by unknown key ids.
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh_s: u64,
    /// The claim that names the user (the shard routing key).
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    /// The claim that names the tenant (for `key: tenant` quotas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_claim: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, seconds.
    #[serde(default = "default_leeway")]
    pub leeway_s: u64,
    /// The largest token taken from this issuer, bytes.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    /// A cookie that may carry the token when no `Authorization: Bearer`
    /// header does (browsers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// The issuer signs with a secret it shares with the gateway (HS256,
    /// HS384, HS512 with `oct` keys inline); never mixed with public keys.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared_secret: bool,
}

fn default_jwks_refresh() -> u64 {
    300
}
fn default_max_token_bytes() -> usize {
    8 * 1024
}

fn default_user_claim() -> String {
    "sub".to_owned()
}
fn default_leeway() -> u64 {
    30
}

/// `quotas/<name>`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaSpec {
    pub key: QuotaKey,
    pub rate: u32,
    #[serde(default = "default_per_s")]
    pub per_s: u32,
    pub burst: u32,
    #[serde(default)]
    pub scope: QuotaScope,
}

fn default_per_s() -> u32 {
    1
}

/// A route's quotas: `"name"` or `["name", ...]` on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "OneOrMany", into = "OneOrMany")]
pub struct QuotaRefs(pub Vec<String>);

impl QuotaRefs {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    None(()),
    One(String),
    Many(Vec<String>),
}

impl From<OneOrMany> for QuotaRefs {
    fn from(v: OneOrMany) -> Self {
        QuotaRefs(match v {
            OneOrMany::None(()) => Vec::new(),
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        })
    }
}

impl From<QuotaRefs> for OneOrMany {
    fn from(q: QuotaRefs) -> Self {
        match <[String; 1]>::try_from(q.0) {
            Ok([one]) => OneOrMany::One(one),
            Err(v) if v.is_empty() => OneOrMany::None(()),
            Err(v) => OneOrMany::Many(v),
        }
    }
}

/// What a quota counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaKey {
    User,
    Tenant,
    Ip,
    Route,
}

/// Where a quota's counters live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaScope {
    Cluster,
    #[default]
    Gateway,
}

/// `gateways/<id>`: written by each gateway under a lease.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewaySpec {
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub dc: String,
    #[serde(default)]
    pub applied_epoch: i64,
    /// The etcd revision of the newest topology change in force at the
    /// gateway (a put's or a delete's; registrations never): at most
    /// `applied_epoch`, which a list takes at etcd's revision.
    #[serde(default)]
    pub change_revision: i64,
    /// When the gateway applied `applied_epoch` (RFC 3339, UTC); empty
    /// from gateways that predate it.
    #[serde(default)]
    pub applied_at: String,
    #[serde(default)]
    pub started_at: String,
    #[serde(default)]
    pub version: String,
}
