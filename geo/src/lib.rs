//! Client IP -> ISO 3166 country and subdivision, from MaxMind-format
//! databases. Two schemas are read: GeoIP2/GeoLite2 City and Country
//! (`country.iso_code`, `subdivisions[0].iso_code`) and the flat schema of
//! ip-location-db (`country_code`). The database file hot-reloads: a new
//! file that does not open keeps the old one in force.
#![forbid(unsafe_code)]

mod location;
mod mmdb;

pub use location::Location;
pub use mmdb::{GeoError, MmdbGeo};

use std::collections::HashMap;
use std::net::IpAddr;

/// The geo seam used by the gateway and `unitctl`.
pub trait GeoLookup: Send + Sync {
    /// Where `ip` is, if known.
    fn locate(&self, ip: IpAddr) -> Option<Location>;
}

/// Fixed answers by address (tests, tools).
#[derive(Debug, Clone, Default)]
pub struct FixedGeo(pub HashMap<IpAddr, Location>);

impl GeoLookup for FixedGeo {
    fn locate(&self, ip: IpAddr) -> Option<Location> {
        self.0.get(&ip).copied()
    }
}
