//! The health seam: which unit/service pairs have a healthy endpoint.

use crate::ids::{ServiceId, UnitId};

/// A view of endpoint health, provided by the data plane.
pub trait HealthView {
    /// Whether `unit` has at least one healthy endpoint for `service`.
    fn healthy(&self, unit: UnitId, service: ServiceId) -> bool;
}

/// Every unit is healthy (planning tools, `unitctl explain`).
#[derive(Debug, Clone, Copy, Default)]
pub struct AllHealthy;

impl HealthView for AllHealthy {
    fn healthy(&self, _: UnitId, _: ServiceId) -> bool {
        true
    }
}

/// Every unit is healthy except the listed ones (tests, what-if queries).
#[derive(Debug, Clone, Default)]
pub struct Unhealthy(pub Vec<UnitId>);

impl HealthView for Unhealthy {
    fn healthy(&self, unit: UnitId, _: ServiceId) -> bool {
        !self.0.contains(&unit)
    }
}
