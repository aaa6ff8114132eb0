//! `units/<unit>` and `instances/<unit>/<service>/<addr>`: each unit's
//! datacenter, kind, failover list and services (endpoints and timeouts),
//! registered instances merged into the static endpoints, and the fallback
//! order the router walks when a unit cannot serve.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;

use super::decode::{valid_name, Instance};
use super::problems::Problems;
use super::regions::Places;
use crate::drain::Drain;
use crate::error::TopologyError as E;
use crate::ids::{DcId, RegionId, ServiceId, UnitId};
use crate::spec::{ServiceSpec, UnitKind, UnitSpec};

/// A service as run by one unit: endpoints (static and registered) and settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitService {
    pub endpoints: Vec<SocketAddr>,
    pub health_path: Option<String>,
    pub health_interval_ms: u64,
    pub connect_timeout_ms: u64,
    pub read_timeout_ms: u64,
    pub total_connect_timeout_ms: u64,
}

/// A unit with its services resolved to ids.
#[derive(Debug, Clone)]
pub struct Unit {
    pub name: String,
    pub dc: DcId,
    pub region: RegionId,
    pub kind: UnitKind,
    pub failover: Vec<UnitId>,
    /// Indexed by [`ServiceId`]; `None` where the unit does not run it.
    pub services: Vec<Option<UnitService>>,
    /// Target order when this unit cannot serve: its failover list, then
    /// same-kind units of its region, then any same-kind unit.
    pub fallback: Vec<UnitId>,
    /// The drain in force for this unit, if any (see `Topology::is_drained`).
    pub drain: Option<Drain>,
}

impl Unit {
    /// Whether the unit runs `service`.
    pub fn runs(&self, service: ServiceId) -> bool {
        self.services
            .get(service.index())
            .is_some_and(Option::is_some)
    }

    /// Endpoints of `service` in this unit (empty if it does not run it).
    pub fn endpoints(&self, service: ServiceId) -> &[SocketAddr] {
        self.service(service).map_or(&[], |s| &s.endpoints)
    }

    /// `service` as run by this unit.
    pub fn service(&self, service: ServiceId) -> Option<&UnitService> {
        self.services.get(service.index()).and_then(Option::as_ref)
    }
}

/// The units, validated, with the service names they run interned.
#[derive(Debug)]
pub(super) struct Units {
    /// Indexed by [`UnitId`], in name order.
    pub(super) units: Vec<Unit>,
    pub(super) index: HashMap<String, UnitId>,
    /// Service names in name order, indexed by [`ServiceId`].
    pub(super) services: Vec<String>,
    pub(super) service_ids: BTreeMap<String, ServiceId>,
    /// Units of kind center, by name.
    pub(super) centers: Vec<UnitId>,
    /// Instance registrations that were ignored, one line each.
    pub(super) notices: Vec<String>,
}

/// What a unit may refer to.
struct Names<'a> {
    places: &'a Places,
    index: &'a HashMap<String, UnitId>,
    service_ids: &'a BTreeMap<String, ServiceId>,
}

/// Check every unit against the datacenters and each other, merge the
/// registered instances, and compute the fallback orders.
pub(super) fn check(
    specs: &BTreeMap<String, UnitSpec>,
    instances: &[Instance],
    places: &Places,
    p: &mut Problems,
) -> Units {
    let service_ids = intern_services(specs);
    let index: HashMap<String, UnitId> = specs
        .keys()
        .enumerate()
        .map(|(i, name)| (name.clone(), UnitId(i as u16)))
        .collect();
    let names = Names {
        places,
        index: &index,
        service_ids: &service_ids,
    };
    let mut units: Vec<Unit> = specs
        .iter()
        .map(|(name, u)| check_unit(name, u, &names, p))
        .collect();
    let mut notices = Vec::new();
    merge_instances(instances, &index, &service_ids, &mut units, &mut notices);
    compute_fallbacks(&mut units);
    let centers = (0..units.len())
        .filter(|&i| units[i].kind == UnitKind::Center)
        .map(|i| UnitId(i as u16))
        .collect();
    Units {
        units,
        index,
        services: service_ids.keys().cloned().collect(),
        service_ids,
        centers,
        notices,
    }
}

/// Every service name any unit runs, numbered in name order for stable ids.
fn intern_services(specs: &BTreeMap<String, UnitSpec>) -> BTreeMap<String, ServiceId> {
    let names: BTreeSet<&String> = specs.values().flat_map(|u| u.services.keys()).collect();
    names
        .into_iter()
        .enumerate()
        .map(|(i, s)| (s.clone(), ServiceId(i as u16)))
        .collect()
}

fn check_unit(name: &str, u: &UnitSpec, names: &Names<'_>, p: &mut Problems) -> Unit {
    let key = format!("units/{name}");
    let (dc, region) = match names.places.dc_ids.get(&u.dc) {
        Some(&dc) => (dc, names.places.dcs[dc.index()].region),
        None => {
            p.push_ref(
                &format!("datacenters/{}", u.dc),
                E::UnknownDatacenter {
                    key: key.clone(),
                    dc: u.dc.clone(),
                },
            );
            (DcId(0), RegionId(0))
        }
    };
    let failover = resolve_failover(&key, name, &u.failover, names.index, p);
    let mut services = vec![None; names.service_ids.len()];
    for (s, spec) in &u.services {
        services[names.service_ids[s].index()] = Some(check_service(&key, s, spec, p));
    }
    Unit {
        name: name.to_owned(),
        dc,
        region,
        kind: u.kind,
        failover,
        services,
        fallback: Vec::new(),
        drain: None,
    }
}

/// The failover list as ids, without duplicates.
fn resolve_failover(
    key: &str,
    name: &str,
    list: &[String],
    index: &HashMap<String, UnitId>,
    p: &mut Problems,
) -> Vec<UnitId> {
    let mut failover = Vec::new();
    for f in list {
        if f == name {
            p.push(E::FailoverToSelf {
                key: key.to_owned(),
            });
        } else if let Some(&id) = index.get(f) {
            if !failover.contains(&id) {
                failover.push(id);
            }
        } else {
            p.push_ref(
                &format!("units/{f}"),
                E::UnknownFailover {
                    key: key.to_owned(),
                    unit: f.clone(),
                },
            );
        }
    }
    failover
}

fn check_service(key: &str, s: &str, spec: &ServiceSpec, p: &mut Problems) -> UnitService {
    if !valid_name(s) {
        p.push(E::InvalidName {
            key: key.to_owned(),
            name: s.to_owned(),
        });
    }
    let mut endpoints = Vec::with_capacity(spec.endpoints.len());
    for ep in &spec.endpoints {
        match ep.parse::<SocketAddr>() {
            Ok(a) => endpoints.push(a),
            Err(_) => p.push(E::InvalidEndpoint {
                key: key.to_owned(),
                service: s.to_owned(),
                endpoint: ep.clone(),
            }),
        }
    }
    if let Some(path) = spec.health_path.as_ref().filter(|h| !h.starts_with('/')) {
        p.invalid(
            key,
            "health_path",
            format!("{s}: {path:?} must start with '/'"),
        );
    }
    for (field, v) in [
        ("health_interval_ms", spec.health_interval_ms),
        ("connect_timeout_ms", spec.connect_timeout_ms),
        ("read_timeout_ms", spec.read_timeout_ms),
        ("total_connect_timeout_ms", spec.total_connect_timeout_ms),
    ] {
        if !(10..=600_000).contains(&v) {
            p.invalid(key, field, format!("{s}: {v} is not within 10..=600000"));
        }
    }
    UnitService {
        endpoints,
        health_path: spec.health_path.clone(),
        health_interval_ms: spec.health_interval_ms,
        connect_timeout_ms: spec.connect_timeout_ms,
        read_timeout_ms: spec.read_timeout_ms,
        total_connect_timeout_ms: spec.total_connect_timeout_ms,
    }
}

/// Add registered instances to the endpoints of services their unit
/// declares; anything else is ignored with a notice (never fatal: instances
/// come and go under leases).
fn merge_instances(
    instances: &[Instance],
    index: &HashMap<String, UnitId>,
    service_ids: &BTreeMap<String, ServiceId>,
    units: &mut [Unit],
    notices: &mut Vec<String>,
) {
    for Instance {
        key,
        unit,
        service,
        addr,
    } in instances
    {
        let (Some(u), Some(s)) = (index.get(unit), service_ids.get(service)) else {
            notices.push(format!(
                "{key}: ignored: unit or service is not in the topology"
            ));
            continue;
        };
        let Ok(a) = addr.parse::<SocketAddr>() else {
            notices.push(format!("{key}: ignored: {addr:?} is not ip:port"));
            continue;
        };
        match &mut units[u.index()].services[s.index()] {
            Some(svc) if !svc.endpoints.contains(&a) => svc.endpoints.push(a),
            Some(_) => {}
            None => notices.push(format!(
                "{key}: ignored: unit {unit} does not declare service {service}"
            )),
        }
    }
}

/// Each unit's fallback: its failover list, then same-kind units of its
/// region, then any other same-kind unit, each once, never itself.
fn compute_fallbacks(units: &mut [Unit]) {
    // One pass per unit over all units, with a bitmap of those already in
    // the order: O(units^2) (a search of the order instead made it cubic,
    // about 0.5 s for 1,000 units).
    let mut seen = vec![false; units.len()];
    for i in 0..units.len() {
        let (kind, region) = (units[i].kind, units[i].region);
        seen.fill(false);
        seen[i] = true;
        let mut order: Vec<UnitId> = Vec::with_capacity(units.len());
        for &id in &units[i].failover {
            if !std::mem::replace(&mut seen[id.index()], true) {
                order.push(id);
            }
        }
        for same_region_only in [true, false] {
            for (j, u) in units.iter().enumerate() {
                if u.kind == kind
                    && (!same_region_only || u.region == region)
                    && !std::mem::replace(&mut seen[j], true)
                {
                    order.push(UnitId(j as u16));
                }
            }
        }
        order.shrink_to_fit();
        units[i].fallback = order;
    }
}
