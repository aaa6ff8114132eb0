//! The validated topology snapshot and its per-snapshot indexes.
//!
//! [`Topology::build`] decodes every key under the prefix, validates them
//! together (collecting every problem, each naming its key) and builds the
//! indexes the request path uses. A topology that exists is valid.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::drain::{self, Drain, DrainTarget};
use crate::error::{TopologyError as E, ValidationErrors};
use crate::ids::{DcId, RegionId, ServiceId, UnitId};
use crate::routes::{Route, RouteTable};
use crate::shard::shard_of;
use crate::spec::*;

/// Validated `cluster` settings.
pub type Cluster = ClusterSpec;

/// A region.
#[derive(Debug, Clone)]
pub struct Region {
    pub name: String,
    pub entries: Vec<String>,
    pub countries: Vec<String>,
    pub subdivisions: Vec<String>,
}

/// A datacenter.
#[derive(Debug, Clone)]
pub struct Datacenter {
    pub name: String,
    pub region: RegionId,
}

/// A service as run by one unit: endpoints (static and registered) and settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitService {
    pub endpoints: Vec<SocketAddr>,
    pub health_path: Option<String>,
    pub health_interval_ms: u64,
    pub connect_timeout_ms: u64,
    pub read_timeout_ms: u64,
    pub total_timeout_ms: u64,
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
    /// The drain in force for this unit, if any (see [`Topology::is_drained`]).
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

/// A validated, indexed topology snapshot.
#[derive(Debug)]
pub struct Topology {
    pub epoch: i64,
    pub cluster: Cluster,
    pub regions: Vec<Region>,
    pub dcs: Vec<Datacenter>,
    pub units: Vec<Unit>,
    pub services: Vec<String>,
    pub routes: RouteTable,
    pub issuers: BTreeMap<String, IssuerSpec>,
    pub quotas: BTreeMap<String, QuotaSpec>,
    pub gateways: BTreeMap<String, GatewaySpec>,
    /// Every drain key as written (including expired and overridden ones).
    pub drains: Vec<Drain>,
    /// Things applied differently from how they were written (logged, counted).
    pub notices: Vec<String>,
    shard_owner: Vec<UnitId>,
    unit_index: HashMap<String, UnitId>,
    region_by_country: HashMap<String, RegionId>,
    region_by_subdivision: HashMap<String, RegionId>,
    centers: Vec<UnitId>,
    next_drain_change: Option<i64>,
}

/// Decoded but not yet cross-checked keys.
#[derive(Default)]
struct Raw {
    cluster: Option<ClusterSpec>,
    shardmap: Option<ShardMapSpec>,
    regions: BTreeMap<String, RegionSpec>,
    dcs: BTreeMap<String, DatacenterSpec>,
    units: BTreeMap<String, UnitSpec>,
    routes: BTreeMap<String, RouteSpec>,
    drains: Vec<(String, DrainTarget, DrainSpec)>,
    issuers: BTreeMap<String, IssuerSpec>,
    quotas: BTreeMap<String, QuotaSpec>,
    gateways: BTreeMap<String, GatewaySpec>,
    instances: Vec<(String, String, String, String)>,
    /// Keys that failed on their own: references to them are not reported again.
    broken: HashSet<String>,
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, value: &str, errs: &mut Vec<E>) -> Option<T> {
    match serde_json::from_str(value) {
        Ok(v) => Some(v),
        Err(e) => {
            errs.push(E::InvalidJson {
                key: key.to_owned(),
                message: e.to_string(),
            });
            None
        }
    }
}

fn named<T>(key: &str, name: &str, value: &str, errs: &mut Vec<E>, into: &mut BTreeMap<String, T>)
where
    T: serde::de::DeserializeOwned,
{
    if !valid_name(name) {
        errs.push(E::InvalidName {
            key: key.to_owned(),
            name: name.to_owned(),
        });
        return;
    }
    if let Some(v) = decode(key, value, errs) {
        into.insert(name.to_owned(), v);
    }
}

/// Push `e` unless it only repeats that `referenced` is itself broken.
fn push_ref(errs: &mut Vec<E>, broken: &HashSet<String>, referenced: &str, e: E) {
    if !broken.contains(referenced) {
        errs.push(e);
    }
}

fn decode_all(kv: &BTreeMap<String, String>, errs: &mut Vec<E>) -> Raw {
    let mut raw = Raw::default();
    for (key, value) in kv {
        let before = errs.len();
        let parts: Vec<&str> = key.split('/').collect();
        match parts.as_slice() {
            ["cluster"] => raw.cluster = decode(key, value, errs),
            ["shardmap"] => raw.shardmap = decode(key, value, errs),
            ["regions", n] => named(key, n, value, errs, &mut raw.regions),
            ["datacenters", n] => named(key, n, value, errs, &mut raw.dcs),
            ["units", n] => named(key, n, value, errs, &mut raw.units),
            ["routes", n] => named(key, n, value, errs, &mut raw.routes),
            ["auth", "issuers", n] => named(key, n, value, errs, &mut raw.issuers),
            ["quotas", n] => named(key, n, value, errs, &mut raw.quotas),
            ["drain", kind @ ("dc" | "unit"), n] => {
                if let Some(spec) = decode::<DrainSpec>(key, value, errs) {
                    let target = if *kind == "dc" {
                        DrainTarget::Dc((*n).to_owned())
                    } else {
                        DrainTarget::Unit((*n).to_owned())
                    };
                    raw.drains.push((key.clone(), target, spec));
                }
            }
            // Written by gateways under leases: informational, never fatal.
            ["gateways", n] => {
                if let Ok(g) = serde_json::from_str(value) {
                    raw.gateways.insert((*n).to_owned(), g);
                }
            }
            // Registered by instances under leases; merged below.
            ["instances", unit, service, addr] => raw.instances.push((
                key.clone(),
                (*unit).to_owned(),
                (*service).to_owned(),
                (*addr).to_owned(),
            )),
            _ => errs.push(E::UnknownKey { key: key.clone() }),
        }
        if errs.len() != before {
            raw.broken.insert(key.clone());
        }
    }
    raw
}

fn invalid(key: &str, field: &str, message: impl Into<String>) -> E {
    E::InvalidValue {
        key: key.to_owned(),
        field: field.to_owned(),
        message: message.into(),
    }
}

/// Parse an RFC 3339 instant into unix seconds.
pub fn parse_rfc3339(s: &str) -> Result<i64, String> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|e| format!("{s:?} is not RFC 3339: {e}"))
}

impl Topology {
    /// Build and validate a snapshot of the keys under the prefix (keys are
    /// relative to it) as of revision `epoch`, at unix time `now`.
    pub fn build(
        epoch: i64,
        kv: &BTreeMap<String, String>,
        now: i64,
    ) -> Result<Self, ValidationErrors> {
        let mut errs = Vec::new();
        let raw = decode_all(kv, &mut errs);
        let topo = Self::check(epoch, raw, now, &mut errs);
        match topo {
            Some(t) if errs.is_empty() => Ok(t),
            _ => Err(ValidationErrors(errs)),
        }
    }

    fn check(epoch: i64, mut raw: Raw, now: i64, errs: &mut Vec<E>) -> Option<Self> {
        let cluster_ok = raw.cluster.is_some();
        let cluster = match raw.cluster.clone() {
            Some(c) => c,
            None => {
                if !errs
                    .iter()
                    .any(|e| matches!(e, E::InvalidJson { key, .. } if key == "cluster"))
                {
                    errs.push(E::MissingKey {
                        key: "cluster".into(),
                    });
                }
                ClusterSpec {
                    shards: 1,
                    shard_hash: ShardHash::Mod,
                    user_header: "x-user-id".into(),
                    token_ttl_s: 1,
                    max_hops: 0,
                }
            }
        };
        let before = errs.len();
        check_cluster(&cluster, errs);
        let cluster_ok = cluster_ok && errs.len() == before;

        // Regions and their geo indexes.
        let mut regions = Vec::new();
        let mut region_ids = HashMap::new();
        let mut region_by_country = HashMap::new();
        let mut region_by_subdivision = HashMap::new();
        for (name, r) in &raw.regions {
            let key = format!("regions/{name}");
            let id = RegionId(regions.len() as u16);
            if r.entries.is_empty() {
                errs.push(invalid(
                    &key,
                    "entries",
                    "at least one entry host is required",
                ));
            }
            for e in &r.entries {
                if e.is_empty() || e.contains(['/', ' ', ':']) {
                    errs.push(invalid(
                        &key,
                        "entries",
                        format!("{e:?} is not a host name"),
                    ));
                }
            }
            for c in &r.countries {
                if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
                    errs.push(invalid(
                        &key,
                        "countries",
                        format!("{c:?} is not an ISO 3166-1 alpha-2 code"),
                    ));
                } else if let Some(&other) = region_by_country.get(c) {
                    errs.push(E::DuplicateCountry {
                        key: key.clone(),
                        country: c.clone(),
                        other: format!("regions/{}", regions_name(&regions, other)),
                    });
                } else {
                    region_by_country.insert(c.clone(), id);
                }
            }
            for s in &r.subdivisions {
                if !s.contains('-') || s.len() < 4 {
                    errs.push(invalid(
                        &key,
                        "subdivisions",
                        format!("{s:?} is not an ISO 3166-2 code like CN-BJ"),
                    ));
                } else if let Some(&other) = region_by_subdivision.get(s) {
                    errs.push(E::DuplicateCountry {
                        key: key.clone(),
                        country: s.clone(),
                        other: format!("regions/{}", regions_name(&regions, other)),
                    });
                } else {
                    region_by_subdivision.insert(s.clone(), id);
                }
            }
            region_ids.insert(name.clone(), id);
            regions.push(Region {
                name: name.clone(),
                entries: r.entries.iter().map(|e| e.to_ascii_lowercase()).collect(),
                countries: r.countries.clone(),
                subdivisions: r.subdivisions.clone(),
            });
        }

        // Datacenters.
        let mut dcs = Vec::new();
        let mut dc_ids = HashMap::new();
        for (name, d) in &raw.dcs {
            match region_ids.get(&d.region) {
                Some(&region) => {
                    dc_ids.insert(name.clone(), DcId(dcs.len() as u16));
                    dcs.push(Datacenter {
                        name: name.clone(),
                        region,
                    });
                }
                None => {
                    let key = format!("datacenters/{name}");
                    push_ref(
                        errs,
                        &raw.broken,
                        &format!("regions/{}", d.region),
                        E::UnknownRegion {
                            key: key.clone(),
                            region: d.region.clone(),
                        },
                    );
                    raw.broken.insert(key);
                }
            }
        }

        // Services are interned across all units (and instance registrations).
        let mut service_ids: BTreeMap<String, ServiceId> = BTreeMap::new();
        for u in raw.units.values() {
            for s in u.services.keys() {
                let next = ServiceId(service_ids.len() as u16);
                service_ids.entry(s.clone()).or_insert(next);
            }
        }
        // Re-number in name order for stable ids.
        for (i, id) in service_ids.values_mut().enumerate() {
            *id = ServiceId(i as u16);
        }
        let services: Vec<String> = service_ids.keys().cloned().collect();

        // Units (failover and fallback resolved after all ids exist).
        let mut unit_index = HashMap::new();
        for (i, name) in raw.units.keys().enumerate() {
            unit_index.insert(name.clone(), UnitId(i as u16));
        }
        let mut units = Vec::new();
        for (name, u) in &raw.units {
            let key = format!("units/{name}");
            let (dc, region) = match dc_ids.get(&u.dc) {
                Some(&dc) => (dc, dcs[dc.index()].region),
                None => {
                    push_ref(
                        errs,
                        &raw.broken,
                        &format!("datacenters/{}", u.dc),
                        E::UnknownDatacenter {
                            key: key.clone(),
                            dc: u.dc.clone(),
                        },
                    );
                    (DcId(0), RegionId(0))
                }
            };
            let mut failover = Vec::new();
            for f in &u.failover {
                if f == name {
                    errs.push(E::FailoverToSelf { key: key.clone() });
                } else if let Some(&id) = unit_index.get(f) {
                    if !failover.contains(&id) {
                        failover.push(id);
                    }
                } else {
                    push_ref(
                        errs,
                        &raw.broken,
                        &format!("units/{f}"),
                        E::UnknownFailover {
                            key: key.clone(),
                            unit: f.clone(),
                        },
                    );
                }
            }
            let mut svcs = vec![None; services.len()];
            for (s, spec) in &u.services {
                if !valid_name(s) {
                    errs.push(E::InvalidName {
                        key: key.clone(),
                        name: s.clone(),
                    });
                }
                let mut eps = Vec::with_capacity(spec.endpoints.len());
                for ep in &spec.endpoints {
                    match ep.parse::<SocketAddr>() {
                        Ok(a) => eps.push(a),
                        Err(_) => errs.push(E::InvalidEndpoint {
                            key: key.clone(),
                            service: s.clone(),
                            endpoint: ep.clone(),
                        }),
                    }
                }
                if let Some(p) = &spec.health_path {
                    if !p.starts_with('/') {
                        errs.push(invalid(
                            &key,
                            "health_path",
                            format!("{s}: {p:?} must start with '/'"),
                        ));
                    }
                }
                for (field, v) in [
                    ("health_interval_ms", spec.health_interval_ms),
                    ("connect_timeout_ms", spec.connect_timeout_ms),
                    ("read_timeout_ms", spec.read_timeout_ms),
                    ("total_timeout_ms", spec.total_timeout_ms),
                ] {
                    if !(10..=600_000).contains(&v) {
                        errs.push(invalid(
                            &key,
                            field,
                            format!("{s}: {v} is not within 10..=600000"),
                        ));
                    }
                }
                svcs[service_ids[s].index()] = Some(UnitService {
                    endpoints: eps,
                    health_path: spec.health_path.clone(),
                    health_interval_ms: spec.health_interval_ms,
                    connect_timeout_ms: spec.connect_timeout_ms,
                    read_timeout_ms: spec.read_timeout_ms,
                    total_timeout_ms: spec.total_timeout_ms,
                });
            }
            units.push(Unit {
                name: name.clone(),
                dc,
                region,
                kind: u.kind,
                failover,
                services: svcs,
                fallback: Vec::new(),
                drain: None,
            });
        }
        let mut notices = Vec::new();
        merge_instances(
            &raw.instances,
            &unit_index,
            &service_ids,
            &mut units,
            &mut notices,
        );
        compute_fallbacks(&mut units);
        let centers: Vec<UnitId> = (0..units.len())
            .filter(|&i| units[i].kind == UnitKind::Center)
            .map(|i| UnitId(i as u16))
            .collect();

        // Shard map.
        let shard_owner = match &raw.shardmap {
            Some(_) if !cluster_ok => Vec::new(),
            Some(m) => check_shardmap(m, cluster.shards, &unit_index, &units, &raw.broken, errs),
            None => {
                if !errs
                    .iter()
                    .any(|e| matches!(e, E::InvalidJson { key, .. } if key == "shardmap"))
                {
                    errs.push(E::MissingKey {
                        key: "shardmap".into(),
                    });
                }
                Vec::new()
            }
        };

        // Issuers and quotas.
        for (name, i) in &raw.issuers {
            check_issuer(&format!("auth/issuers/{name}"), i, errs);
        }
        for (name, q) in &raw.quotas {
            let key = format!("quotas/{name}");
            if q.rate == 0 {
                errs.push(invalid(&key, "rate", "must be at least 1"));
            }
            if q.per_s == 0 {
                errs.push(invalid(&key, "per_s", "must be at least 1"));
            }
            if q.burst == 0 {
                errs.push(invalid(&key, "burst", "must be at least 1"));
            }
        }

        // Routes.
        let mut routes = Vec::new();
        for (name, r) in &raw.routes {
            let key = format!("routes/{name}");
            if let Some(route) = check_route(&key, name, r, &raw, &service_ids, &centers, errs) {
                routes.push(route);
            }
        }
        check_route_conflicts(&routes, errs);

        // Drains.
        let mut drains = Vec::new();
        for (key, target, spec) in &raw.drains {
            let exists = match target {
                DrainTarget::Dc(d) => dc_ids.contains_key(d),
                DrainTarget::Unit(u) => unit_index.contains_key(u),
            };
            if !exists {
                errs.push(match target {
                    DrainTarget::Dc(d) => E::UnknownDatacenter {
                        key: key.clone(),
                        dc: d.clone(),
                    },
                    DrainTarget::Unit(u) => E::UnknownUnit {
                        key: key.clone(),
                        unit: u.clone(),
                    },
                });
                continue;
            }
            let until = match spec.until.as_deref().map(parse_rfc3339).transpose() {
                Ok(u) => u,
                Err(m) => {
                    errs.push(invalid(key, "until", m));
                    continue;
                }
            };
            drains.push(Drain {
                key: key.clone(),
                target: target.clone(),
                reason: spec.reason.clone(),
                by: spec.by.clone(),
                until,
            });
        }

        if !errs.is_empty() {
            return None;
        }
        let mut topo = Topology {
            epoch,
            cluster,
            regions,
            dcs,
            units,
            services,
            routes: RouteTable::new(routes),
            issuers: raw.issuers,
            quotas: raw.quotas,
            gateways: raw.gateways,
            drains,
            notices,
            shard_owner,
            unit_index,
            region_by_country,
            region_by_subdivision,
            centers,
            next_drain_change: None,
        };
        topo.next_drain_change = drain::apply(&mut topo, now);
        Some(topo)
    }

    /// Unit by name.
    pub fn unit_id(&self, name: &str) -> Option<UnitId> {
        self.unit_index.get(name).copied()
    }

    /// Unit `id`.
    pub fn unit(&self, id: UnitId) -> &Unit {
        &self.units[id.index()]
    }

    /// Service by name.
    pub fn service_id(&self, name: &str) -> Option<ServiceId> {
        self.services
            .binary_search_by(|s| s.as_str().cmp(name))
            .ok()
            .map(|i| ServiceId(i as u16))
    }

    /// Region by name.
    pub fn region_id(&self, name: &str) -> Option<RegionId> {
        self.regions
            .iter()
            .position(|r| r.name == name)
            .map(|i| RegionId(i as u16))
    }

    /// Datacenter by name.
    pub fn dc_id(&self, name: &str) -> Option<DcId> {
        self.dcs
            .iter()
            .position(|d| d.name == name)
            .map(|i| DcId(i as u16))
    }

    /// Region of a client from its ISO country and subdivision (`CN-BJ`):
    /// a subdivision match wins over a country match.
    pub fn region_for(&self, country: Option<&str>, subdivision: Option<&str>) -> Option<RegionId> {
        subdivision
            .and_then(|s| self.region_by_subdivision.get(s))
            .or_else(|| country.and_then(|c| self.region_by_country.get(c)))
            .copied()
    }

    /// Shard of a user key.
    pub fn shard_of(&self, key: &str) -> u32 {
        shard_of(self.cluster.shard_hash, key, self.cluster.shards)
    }

    /// Owner of `shard` in the shard map.
    pub fn shard_owner(&self, shard: u32) -> Option<UnitId> {
        self.shard_owner.get(shard as usize).copied()
    }

    /// Center units, by name.
    pub fn centers(&self) -> &[UnitId] {
        &self.centers
    }

    /// Whether `unit` is drained at unix time `now`.
    pub fn is_drained(&self, unit: UnitId, now: i64) -> bool {
        self.units[unit.index()]
            .drain
            .as_ref()
            .is_some_and(|d| d.in_force(now))
    }

    /// Whether every unit of `dc` is drained at `now` (and it has units).
    pub fn is_dc_drained(&self, dc: DcId, now: i64) -> bool {
        let mut any = false;
        for (i, u) in self.units.iter().enumerate() {
            if u.dc == dc {
                any = true;
                if !self.is_drained(UnitId(i as u16), now) {
                    return false;
                }
            }
        }
        any || self.drains.iter().any(|d| {
            d.target == DrainTarget::Dc(self.dcs[dc.index()].name.clone()) && d.in_force(now)
        })
    }

    /// When drain state next changes by itself (an `until` passing), if ever:
    /// the config center rebuilds the snapshot then.
    pub fn next_drain_change(&self) -> Option<i64> {
        self.next_drain_change
    }

    /// Inclusive shard ranges owned by each unit, in shard order.
    pub fn shard_ranges(&self) -> Vec<(u32, u32, UnitId)> {
        let mut out: Vec<(u32, u32, UnitId)> = Vec::new();
        for (s, &u) in self.shard_owner.iter().enumerate() {
            let s = s as u32;
            match out.last_mut() {
                Some((_, to, owner)) if *owner == u && *to + 1 == s => *to = s,
                _ => out.push((s, s, u)),
            }
        }
        out
    }

    pub(crate) fn shard_owners(&self) -> &[UnitId] {
        &self.shard_owner
    }
}

fn regions_name(regions: &[Region], id: RegionId) -> &str {
    &regions[id.index()].name
}

fn check_cluster(c: &ClusterSpec, errs: &mut Vec<E>) {
    let key = "cluster";
    if c.shards == 0 || c.shards > 65_536 {
        errs.push(invalid(
            key,
            "shards",
            format!("{} is not within 1..=65536", c.shards),
        ));
    }
    if c.user_header.is_empty()
        || !c
            .user_header
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        errs.push(invalid(
            key,
            "user_header",
            format!("{:?} is not a lower-case header name", c.user_header),
        ));
    }
    if c.user_header.starts_with("x-unit-")
        || c.user_header.starts_with("x-forwarded-")
        || c.user_header == "baggage"
    {
        errs.push(invalid(
            key,
            "user_header",
            format!(
                "{:?} is stripped at the edge; choose another header",
                c.user_header
            ),
        ));
    }
    if c.token_ttl_s == 0 {
        errs.push(invalid(key, "token_ttl_s", "must be at least 1"));
    }
    if c.max_hops > 8 {
        errs.push(invalid(
            key,
            "max_hops",
            format!("{} is above 8", c.max_hops),
        ));
    }
}

fn merge_instances(
    instances: &[(String, String, String, String)],
    unit_index: &HashMap<String, UnitId>,
    service_ids: &BTreeMap<String, ServiceId>,
    units: &mut [Unit],
    notices: &mut Vec<String>,
) {
    for (key, unit, service, addr) in instances {
        let (Some(u), Some(s)) = (unit_index.get(unit), service_ids.get(service)) else {
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

fn compute_fallbacks(units: &mut [Unit]) {
    let n = units.len();
    for i in 0..n {
        let me = UnitId(i as u16);
        let (kind, region) = (units[i].kind, units[i].region);
        let mut order: Vec<UnitId> = units[i].failover.clone();
        for pass in 0..2 {
            for (j, u) in units.iter().enumerate() {
                let id = UnitId(j as u16);
                let same_region = u.region == region;
                if id != me && u.kind == kind && (pass == 1 || same_region) && !order.contains(&id)
                {
                    order.push(id);
                }
            }
        }
        units[i].fallback = order;
    }
}

fn check_shardmap(
    m: &ShardMapSpec,
    shards: u32,
    unit_index: &HashMap<String, UnitId>,
    units: &[Unit],
    broken: &HashSet<String>,
    errs: &mut Vec<E>,
) -> Vec<UnitId> {
    let last = shards.saturating_sub(1);
    let mut owner: Vec<Vec<&str>> = vec![Vec::new(); shards as usize];
    for r in &m.ranges {
        if r.from > r.to {
            errs.push(E::ReversedRange {
                from: r.from,
                to: r.to,
            });
            continue;
        }
        if r.to > last {
            errs.push(E::RangeOutOfBounds {
                from: r.from,
                to: r.to,
                last,
            });
            continue;
        }
        match unit_index.get(&r.unit) {
            None => push_ref(
                errs,
                broken,
                &format!("units/{}", r.unit),
                E::UnknownUnit {
                    key: "shardmap".into(),
                    unit: r.unit.clone(),
                },
            ),
            Some(id)
                if units
                    .get(id.index())
                    .is_some_and(|u| u.kind != UnitKind::Shard) =>
            {
                errs.push(E::NotShardUnit {
                    unit: r.unit.clone(),
                    from: r.from,
                    to: r.to,
                })
            }
            Some(_) => {}
        }
        for s in r.from..=r.to {
            owner[s as usize].push(&r.unit);
        }
    }
    // Report gaps and overlaps as ranges.
    let mut s = 0usize;
    while s < owner.len() {
        let n = owner[s].len();
        if n == 1 {
            s += 1;
            continue;
        }
        let start = s;
        while s < owner.len() && owner[s].len() == n && owner[s] == owner[start] {
            s += 1;
        }
        let (from, to) = (start as u32, (s - 1) as u32);
        if n == 0 {
            errs.push(E::ShardGap { from, to });
        } else {
            errs.push(E::ShardOverlap {
                from,
                to,
                units: owner[start].join(", "),
            });
        }
    }
    owner
        .iter()
        .map(|o| {
            o.first()
                .and_then(|u| unit_index.get(*u))
                .copied()
                .unwrap_or(UnitId(0))
        })
        .collect()
}

fn check_issuer(key: &str, i: &IssuerSpec, errs: &mut Vec<E>) {
    const ALGS: &[&str] = &[
        "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
    ];
    if i.iss.is_empty() {
        errs.push(invalid(key, "iss", "must not be empty"));
    }
    if i.algs.is_empty() {
        errs.push(invalid(key, "algs", "list at least one algorithm"));
    }
    for a in &i.algs {
        if !ALGS.contains(&a.as_str()) {
            errs.push(invalid(
                key,
                "algs",
                format!("{a:?} is not one of {}", ALGS.join(", ")),
            ));
        }
    }
    if !i.jwks.get("keys").is_some_and(serde_json::Value::is_array) {
        errs.push(invalid(key, "jwks", "must be a JWK set: {\"keys\":[...]}"));
    }
    if i.user_claim.is_empty() {
        errs.push(invalid(key, "user_claim", "must not be empty"));
    }
}

fn check_route(
    key: &str,
    name: &str,
    r: &RouteSpec,
    raw: &Raw,
    service_ids: &BTreeMap<String, ServiceId>,
    centers: &[UnitId],
    errs: &mut Vec<E>,
) -> Option<Route> {
    let before = errs.len();
    if !r.path_prefix.starts_with('/') {
        errs.push(invalid(
            key,
            "path_prefix",
            format!("{:?} must start with '/'", r.path_prefix),
        ));
    }
    let mut hosts = Vec::new();
    for h in &r.hosts {
        let bare = h.strip_prefix("*.").unwrap_or(h);
        if bare.is_empty() || bare.contains(['*', '/', ' ', ':']) {
            errs.push(invalid(
                key,
                "hosts",
                format!("{h:?} is not a host or *.suffix"),
            ));
        }
        hosts.push(h.to_ascii_lowercase());
    }
    let methods = r.methods.as_ref().map(|ms| {
        ms.iter()
            .map(|m| {
                if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
                    errs.push(invalid(
                        key,
                        "methods",
                        format!("{m:?} is not an HTTP method"),
                    ));
                }
                m.to_ascii_uppercase()
            })
            .collect::<Vec<_>>()
    });
    if methods.as_ref().is_some_and(Vec::is_empty) {
        errs.push(invalid(
            key,
            "methods",
            "an empty list matches nothing; use null for any",
        ));
    }
    let service = if r.service.is_empty() {
        errs.push(E::RouteWithoutService {
            key: key.to_owned(),
        });
        None
    } else if let Some(&s) = service_ids.get(&r.service) {
        Some(s)
    } else if raw.broken.iter().any(|k| k.starts_with("units/")) {
        // A broken unit may be the one that runs it: already reported.
        None
    } else {
        errs.push(E::UnknownService {
            key: key.to_owned(),
            service: r.service.clone(),
        });
        None
    };
    if r.policy == Policy::Center
        && centers.is_empty()
        && !raw.broken.iter().any(|k| k.starts_with("units/"))
    {
        errs.push(E::CenterWithoutUnit {
            key: key.to_owned(),
        });
    }
    if let Some(q) = &r.quota {
        if !raw.quotas.contains_key(q) {
            errs.push(E::UnknownQuota {
                key: key.to_owned(),
                quota: q.clone(),
            });
        }
    }
    if r.auth != AuthMode::None && raw.issuers.is_empty() {
        errs.push(E::AuthWithoutIssuer {
            key: key.to_owned(),
            mode: format!("{:?}", r.auth).to_lowercase(),
        });
    }
    if errs.len() != before {
        return None;
    }
    Some(Route {
        name: name.to_owned(),
        hosts,
        path_prefix: r.path_prefix.clone(),
        methods,
        service: service?,
        service_name: r.service.clone(),
        policy: r.policy,
        auth: r.auth,
        quota: r.quota.clone(),
        listener: r.listener,
    })
}

/// Two routes conflict when some request would match both equally well:
/// a shared host (or both host-less), the same prefix, overlapping methods
/// and listeners.
fn check_route_conflicts(routes: &[Route], errs: &mut Vec<E>) {
    use crate::spec::ListenerScope as L;
    let mut seen: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
    for (i, r) in routes.iter().enumerate() {
        let hosts: Vec<&str> = if r.hosts.is_empty() {
            vec![""]
        } else {
            r.hosts.iter().map(String::as_str).collect()
        };
        let mut reported = HashSet::new();
        for h in hosts {
            let bucket = seen.entry((h, r.path_prefix.as_str())).or_default();
            for &j in bucket.iter() {
                let o = &routes[j];
                let listeners =
                    r.listener == L::Both || o.listener == L::Both || r.listener == o.listener;
                let methods = match (&r.methods, &o.methods) {
                    (Some(a), Some(b)) => a.iter().any(|m| b.contains(m)),
                    (None, None) => true,
                    _ => false,
                };
                if listeners && methods && reported.insert(j) {
                    errs.push(E::ConflictingRoute {
                        key: format!("routes/{}", r.name),
                        other: format!("routes/{}", o.name),
                    });
                }
            }
            bucket.push(i);
        }
    }
}
