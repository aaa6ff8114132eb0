//! `services/<name>` and `cluster.resilience`: each service's resilience
//! settings (deadline, retried statuses, breaker, limiter, slow start),
//! the cluster's defaults overlaid with the service's own, and the rules
//! on the result. Yields one [`Resilience`] per service of the snapshot.

use std::collections::BTreeMap;

use super::problems::Problems;
use super::units::Units;
use crate::error::TopologyError as E;
use crate::resilience::{Resilience, ResilienceSpec};

/// The resolved settings of every service, indexed by
/// [`crate::ServiceId`].
pub(super) fn check(
    cluster: Option<&ResilienceSpec>,
    specs: &BTreeMap<String, ResilienceSpec>,
    units: &Units,
    p: &mut Problems,
) -> Vec<Resilience> {
    let defaults = match cluster {
        Some(spec) => {
            let r = Resilience::default().overlay(spec);
            report("cluster", "resilience.", &r, p);
            r
        }
        None => Resilience::default(),
    };
    for name in specs.keys() {
        if !units.service_ids.contains_key(name) && !p.any_broken_under("units/") {
            p.push(E::UnknownService {
                key: format!("services/{name}"),
                service: name.clone(),
            });
        }
    }
    units
        .services
        .iter()
        .map(|name| match specs.get(name) {
            Some(spec) => {
                let r = defaults.overlay(spec);
                report(&format!("services/{name}"), "", &r, p);
                r
            }
            None => defaults.clone(),
        })
        .collect()
}

fn report(key: &str, prefix: &str, r: &Resilience, p: &mut Problems) {
    for (field, message) in r.problems() {
        p.invalid(key, &format!("{prefix}{field}"), message);
    }
}
