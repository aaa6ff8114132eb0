//! The validated topology snapshot and its per-snapshot indexes.
//!
//! [`Topology::build`] runs in three steps: decode every key under the prefix
//! into its wire model (`decode`), validate the key families together
//! (collecting every problem, each naming its key, with no cascades), then
//! index the result for the request path. Each key family has its module,
//! holding its rules next to its data: `cluster`, `regions` (and
//! datacenters), `units` (and instances), `shardmap`, `routes`, `drains`,
//! `issuers`, `quotas`, `services`. A topology that exists is valid.
//!
//! Drains are applied on the indexed snapshot: the topology is the
//! [`DrainView`] the drain rules ([`crate::drain`]) read, and stores what they
//! decide (the drain per unit, notices, when drain state next changes).

use std::collections::{BTreeMap, HashMap};

use crate::drain::{self, Drain, DrainTarget, DrainView};
use crate::error::ValidationErrors;
use crate::ids::{DcId, RegionId, ServiceId, UnitId};
use crate::jwks::KeySet;
use crate::resilience::Resilience;
use crate::routes::{Route, RouteTable};
use crate::shard::shard_of;
use crate::spec::{GatewaySpec, IssuerSpec, QuotaSpec};

mod cluster;
mod decode;
mod drains;
mod issuers;
mod problems;
mod quotas;
mod regions;
mod routes;
mod services;
mod shardmap;
mod units;

pub use cluster::Cluster;
pub use drains::parse_rfc3339;
pub use regions::{Datacenter, Region};
pub use units::{Unit, UnitService};

use decode::Raw;
use problems::Problems;
use regions::Places;
use units::Units;

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
    /// Each issuer's inline JWK set, parsed (empty for one that only has a
    /// `jwks_uri`).
    pub issuer_keys: BTreeMap<String, KeySet>,
    pub quotas: BTreeMap<String, QuotaSpec>,
    /// Each service's resilience settings, indexed by [`ServiceId`].
    pub resilience: Vec<Resilience>,
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

/// Every key family validated and cross-checked, ready to index.
struct Checked {
    cluster: Cluster,
    places: Places,
    units: Units,
    shard_owner: Vec<UnitId>,
    routes: Vec<Route>,
    drains: Vec<Drain>,
    issuers: BTreeMap<String, IssuerSpec>,
    issuer_keys: BTreeMap<String, KeySet>,
    quotas: BTreeMap<String, QuotaSpec>,
    resilience: Vec<Resilience>,
    gateways: BTreeMap<String, GatewaySpec>,
}

impl Checked {
    /// Validate the decoded keys family by family, in dependency order (each
    /// family refers only to families checked before it).
    fn validate(raw: Raw, p: &mut Problems) -> Self {
        let (cluster, cluster_ok) = cluster::check(raw.cluster.as_ref(), p);
        let places = regions::check(&raw.regions, &raw.dcs, p);
        let units = units::check(&raw.units, &raw.instances, &places, p);
        let shards = cluster_ok.then_some(cluster.shards);
        let shard_owner = shardmap::check(raw.shardmap.as_ref(), shards, &units, p);
        let issuer_keys = issuers::check(&raw.issuers, p);
        quotas::check(&raw.quotas, p);
        let cluster_resilience = raw.cluster.as_ref().and_then(|c| c.resilience.as_ref());
        let resilience = services::check(cluster_resilience, &raw.services, &units, p);
        let refs = routes::Refs {
            units: &units,
            issuers: &raw.issuers,
            quotas: &raw.quotas,
            resilience: &resilience,
        };
        let routes = routes::check(&raw.routes, &refs, p);
        let drains = drains::check(&raw.drains, &places, &units, p);
        Checked {
            cluster,
            places,
            units,
            shard_owner,
            routes,
            drains,
            issuers: raw.issuers,
            issuer_keys,
            quotas: raw.quotas,
            resilience,
            gateways: raw.gateways,
        }
    }
}

impl Topology {
    /// Build and validate a snapshot of the keys under the prefix (keys are
    /// relative to it) as of revision `epoch`, at unix time `now`.
    pub fn build(
        epoch: i64,
        kv: &BTreeMap<String, String>,
        now: i64,
    ) -> Result<Self, ValidationErrors> {
        let mut p = Problems::default();
        let raw = decode::decode_all(kv, &mut p);
        let checked = Checked::validate(raw, &mut p);
        if !p.is_empty() {
            return Err(ValidationErrors(p.into_errors()));
        }
        Ok(Self::index(epoch, checked, now))
    }

    /// Build the indexes the request path uses, once per snapshot, and apply
    /// the drains in force at `now`.
    fn index(epoch: i64, c: Checked, now: i64) -> Self {
        let mut topo = Topology {
            epoch,
            cluster: c.cluster,
            regions: c.places.regions,
            dcs: c.places.dcs,
            units: c.units.units,
            services: c.units.services,
            routes: RouteTable::new(c.routes),
            issuers: c.issuers,
            issuer_keys: c.issuer_keys,
            quotas: c.quotas,
            resilience: c.resilience,
            gateways: c.gateways,
            drains: c.drains,
            notices: c.units.notices,
            shard_owner: c.shard_owner,
            unit_index: c.units.index,
            region_by_country: c.places.by_country,
            region_by_subdivision: c.places.by_subdivision,
            centers: c.units.centers,
            next_drain_change: None,
        };
        apply_drains(&mut topo, now);
        topo
    }

    /// Unit by name.
    pub fn unit_id(&self, name: &str) -> Option<UnitId> {
        self.unit_index.get(name).copied()
    }

    /// Unit `id`.
    pub fn unit(&self, id: UnitId) -> &Unit {
        &self.units[id.index()]
    }

    /// The resilience settings of `service`.
    pub fn resilience(&self, service: ServiceId) -> &Resilience {
        &self.resilience[service.index()]
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

    /// The owner of each shard, indexed by shard.
    pub(crate) fn shard_owners(&self) -> &[UnitId] {
        &self.shard_owner
    }
}

/// Apply the drains in force at `now` to the units of `topo` and store the
/// outcome: the drain per unit, the notices, when drain state next changes.
fn apply_drains(topo: &mut Topology, now: i64) {
    let applied = drain::apply(&*topo, &topo.drains, now);
    for (u, d) in topo.units.iter_mut().zip(applied.per_unit) {
        u.drain = d;
    }
    topo.notices.extend(applied.notices);
    topo.next_drain_change = applied.next_change;
}

impl DrainView for Topology {
    fn unit_count(&self) -> usize {
        self.units.len()
    }

    fn unit_name(&self, u: UnitId) -> &str {
        &self.unit(u).name
    }

    fn unit_dc(&self, u: UnitId) -> &str {
        &self.dcs[self.unit(u).dc.index()].name
    }

    fn fallback(&self, u: UnitId) -> &[UnitId] {
        &self.unit(u).fallback
    }

    fn shard_owners(&self) -> &[UnitId] {
        Topology::shard_owners(self)
    }

    fn centers(&self) -> &[UnitId] {
        Topology::centers(self)
    }

    fn drain_of(&self, u: UnitId) -> Option<&Drain> {
        self.unit(u).drain.as_ref()
    }
}
