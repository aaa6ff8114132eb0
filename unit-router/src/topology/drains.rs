//! `drain/dc/<dc>` and `drain/unit/<unit>`: each drain key must name an
//! existing datacenter or unit and carry a valid `until`. Which units the
//! valid drains take out of service is decided later, on the indexed
//! topology, by the drain rules ([`crate::drain`]).

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::decode::RawDrain;
use super::problems::Problems;
use super::regions::Places;
use super::units::Units;
use crate::drain::{Drain, DrainTarget};
use crate::error::TopologyError as E;

/// Parse an RFC 3339 instant into unix seconds.
pub fn parse_rfc3339(s: &str) -> Result<i64, String> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|e| format!("{s:?} is not RFC 3339: {e}"))
}

/// Check every drain key, in key order; the valid ones, decoded.
pub(super) fn check(
    raw: &[RawDrain],
    places: &Places,
    units: &Units,
    p: &mut Problems,
) -> Vec<Drain> {
    raw.iter()
        .filter_map(|d| check_drain(d, places, units, p))
        .collect()
}

fn check_drain(d: &RawDrain, places: &Places, units: &Units, p: &mut Problems) -> Option<Drain> {
    let key = d.key.clone();
    match &d.target {
        DrainTarget::Dc(dc) if !places.dc_ids.contains_key(dc) => {
            p.push(E::UnknownDatacenter {
                key,
                dc: dc.clone(),
            });
            return None;
        }
        DrainTarget::Unit(unit) if !units.index.contains_key(unit) => {
            p.push(E::UnknownUnit {
                key,
                unit: unit.clone(),
            });
            return None;
        }
        _ => {}
    }
    match d.spec.until.as_deref().map(parse_rfc3339).transpose() {
        Ok(until) => Some(Drain {
            key,
            target: d.target.clone(),
            reason: d.spec.reason.clone(),
            by: d.spec.by.clone(),
            until,
        }),
        Err(m) => {
            p.invalid(&key, "until", m);
            None
        }
    }
}
