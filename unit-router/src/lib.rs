//! unitgate's routing core.
//!
//! Pure domain logic, no IO: the topology model and its validation
//! ([`Topology::build`]), shard hashing, route matching, the routing decision
//! ([`decide()`]) with failover, drain and return-home rules, the signed
//! routing token and dye codecs, and the request policies around a decision
//! ([`policy`]: retries, criticality, the quota key, 404 versus 405).
//! Deterministic, property-tested and benched; the config center and the
//! gateway are thin shells around it.
#![forbid(unsafe_code)]

pub mod decide;
pub mod drain;
pub mod dye;
pub mod error;
#[cfg(any(test, feature = "test-support"))]
#[doc(hidden)]
pub mod fixture;
pub mod health;
pub mod ids;
pub mod input;
pub mod jwks;
pub mod keys;
pub mod policy;
pub mod reason;
pub mod resilience;
pub mod routes;
pub mod shard;
pub mod spec;
pub mod token;
pub mod topology;

/// The longest total time a route may give a request (10 minutes).
pub const MAX_ROUTE_TIMEOUT_MS: u64 = 600_000;
/// The largest body limit a route may set (64 GiB).
pub const MAX_BODY_BYTES: u64 = 64 << 30;

pub use decide::{
    decide, decide_route, hint_value, locate, Affinity, Decision, Facts, Here, KeySource, Located,
    RouteError, DEFAULT_HINT_TTL_S,
};
pub use drain::{Drain, DrainTarget, Stranded};
pub use dye::{Dye, DyeError};
pub use error::{TopologyError, ValidationErrors};
pub use health::{AllHealthy, HealthView, Unhealthy};
pub use ids::{DcId, RegionId, RouteId, ServiceId, UnitId};
pub use input::InputError;
pub use keys::{Keyring, KeyringError};
pub use reason::Reason;
pub use routes::Listener;
pub use token::{RouteToken, TokenError};
pub use topology::Topology;
