//! `regions/<region>` and `datacenters/<dc>`: where units run, the public
//! entry hosts of each region, and the country/subdivision -> region indexes
//! the region policy uses (each code claimed by one region only).

use std::collections::{BTreeMap, HashMap};

use super::problems::Problems;
use crate::error::TopologyError as E;
use crate::ids::{DcId, RegionId};
use crate::spec::{DatacenterSpec, RegionSpec};

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

/// Regions and datacenters, validated, with their indexes.
#[derive(Debug, Default)]
pub(super) struct Places {
    pub(super) regions: Vec<Region>,
    pub(super) dcs: Vec<Datacenter>,
    /// Datacenter by name (only those whose region exists).
    pub(super) dc_ids: HashMap<String, DcId>,
    pub(super) by_country: HashMap<String, RegionId>,
    pub(super) by_subdivision: HashMap<String, RegionId>,
}

/// Check the regions, then the datacenters against them, in name order.
pub(super) fn check(
    regions: &BTreeMap<String, RegionSpec>,
    dcs: &BTreeMap<String, DatacenterSpec>,
    p: &mut Problems,
) -> Places {
    let mut places = Places::default();
    for (name, r) in regions {
        places.add_region(name, r, p);
    }
    for (name, d) in dcs {
        places.add_dc(name, d, p);
    }
    places
}

impl Places {
    fn add_region(&mut self, name: &str, r: &RegionSpec, p: &mut Problems) {
        let key = format!("regions/{name}");
        let id = RegionId(self.regions.len() as u16);
        check_entries(&key, &r.entries, p);
        for c in &r.countries {
            if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
                p.invalid(
                    &key,
                    "countries",
                    format!("{c:?} is not an ISO 3166-1 alpha-2 code"),
                );
            } else {
                claim(
                    &mut self.by_country,
                    &self.regions,
                    &key,
                    "countries",
                    c,
                    id,
                    p,
                );
            }
        }
        for s in &r.subdivisions {
            if !s.contains('-') || s.len() < 4 {
                p.invalid(
                    &key,
                    "subdivisions",
                    format!("{s:?} is not an ISO 3166-2 code like CN-BJ"),
                );
            } else {
                let index = &mut self.by_subdivision;
                claim(index, &self.regions, &key, "subdivisions", s, id, p);
            }
        }
        self.regions.push(Region {
            name: name.to_owned(),
            entries: r.entries.iter().map(|e| e.to_ascii_lowercase()).collect(),
            countries: r.countries.clone(),
            subdivisions: r.subdivisions.clone(),
        });
    }

    fn add_dc(&mut self, name: &str, d: &DatacenterSpec, p: &mut Problems) {
        let region = self
            .regions
            .iter()
            .position(|r| r.name == d.region)
            .map(|i| RegionId(i as u16));
        let Some(region) = region else {
            let key = format!("datacenters/{name}");
            p.push_ref(
                &format!("regions/{}", d.region),
                E::UnknownRegion {
                    key: key.clone(),
                    region: d.region.clone(),
                },
            );
            p.mark_broken(key);
            return;
        };
        self.dc_ids
            .insert(name.to_owned(), DcId(self.dcs.len() as u16));
        self.dcs.push(Datacenter {
            name: name.to_owned(),
            region,
        });
    }
}

fn check_entries(key: &str, entries: &[String], p: &mut Problems) {
    if entries.is_empty() {
        p.invalid(key, "entries", "at least one entry host is required");
    }
    for e in entries {
        if e.is_empty() || e.contains(['/', ' ', ':']) {
            p.invalid(key, "entries", format!("{e:?} is not a host name"));
        }
    }
}

/// Claim `code` for region `id` (not yet in `regions`) in `index`.
fn claim(
    index: &mut HashMap<String, RegionId>,
    regions: &[Region],
    key: &str,
    field: &str,
    code: &str,
    id: RegionId,
    p: &mut Problems,
) {
    match index.get(code) {
        Some(&other) if other == id => p.invalid(key, field, format!("{code:?} is listed twice")),
        Some(&other) => p.push(E::DuplicateCountry {
            key: key.to_owned(),
            country: code.to_owned(),
            other: format!("regions/{}", regions[other.index()].name),
        }),
        None => {
            index.insert(code.to_owned(), id);
        }
    }
}
