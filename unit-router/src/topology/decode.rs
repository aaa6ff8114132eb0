//! Step 1, decode: every key under the prefix into its typed wire model
//! ([`crate::spec`]), by key family, with no cross-key meaning yet. Only
//! problems of one key on its own are found here (bad JSON, bad name, unknown
//! key); such a key is marked broken so later steps do not report it again.

use std::collections::BTreeMap;

use super::problems::Problems;
use crate::drain::DrainTarget;
use crate::error::TopologyError as E;
use crate::spec::*;

/// `instances/<unit>/<service>/<addr>`, merged into the unit's endpoints later.
#[derive(Debug)]
pub(super) struct Instance {
    pub(super) key: String,
    pub(super) unit: String,
    pub(super) service: String,
    pub(super) addr: String,
}

/// `drain/dc/<dc>` or `drain/unit/<unit>`, before its target and `until` are checked.
#[derive(Debug)]
pub(super) struct RawDrain {
    pub(super) key: String,
    pub(super) target: DrainTarget,
    pub(super) spec: DrainSpec,
}

/// Decoded but not yet cross-checked keys.
#[derive(Debug, Default)]
pub(super) struct Raw {
    pub(super) cluster: Option<ClusterSpec>,
    pub(super) shardmap: Option<ShardMapSpec>,
    pub(super) regions: BTreeMap<String, RegionSpec>,
    pub(super) dcs: BTreeMap<String, DatacenterSpec>,
    pub(super) units: BTreeMap<String, UnitSpec>,
    pub(super) routes: BTreeMap<String, RouteSpec>,
    pub(super) drains: Vec<RawDrain>,
    pub(super) issuers: BTreeMap<String, IssuerSpec>,
    pub(super) quotas: BTreeMap<String, QuotaSpec>,
    pub(super) services: BTreeMap<String, ResilienceSpec>,
    pub(super) gateways: BTreeMap<String, GatewaySpec>,
    pub(super) instances: Vec<Instance>,
}

/// A name usable as the last segment of a key: 1-63 of a-z, 0-9, '-', '_', '.'.
pub(super) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
}

/// Decode every key of `kv` (relative to the prefix), in key order.
pub(super) fn decode_all(kv: &BTreeMap<String, String>, p: &mut Problems) -> Raw {
    let mut raw = Raw::default();
    for (key, value) in kv {
        let before = p.count();
        raw.decode_key(key, value, p);
        if p.count() != before {
            p.mark_broken(key.clone());
        }
    }
    raw
}

impl Raw {
    fn decode_key(&mut self, key: &str, value: &str, p: &mut Problems) {
        let parts: Vec<&str> = key.split('/').collect();
        match parts.as_slice() {
            ["cluster"] => self.cluster = decode(key, value, p),
            ["shardmap"] => self.shardmap = decode(key, value, p),
            ["regions", n] => named(key, n, value, p, &mut self.regions),
            ["datacenters", n] => named(key, n, value, p, &mut self.dcs),
            ["units", n] => named(key, n, value, p, &mut self.units),
            ["routes", n] => named(key, n, value, p, &mut self.routes),
            ["auth", "issuers", n] => named(key, n, value, p, &mut self.issuers),
            ["quotas", n] => named(key, n, value, p, &mut self.quotas),
            ["services", n] => named(key, n, value, p, &mut self.services),
            ["drain", kind @ ("dc" | "unit"), n] => {
                if let Some(spec) = decode::<DrainSpec>(key, value, p) {
                    let target = if *kind == "dc" {
                        DrainTarget::Dc((*n).to_owned())
                    } else {
                        DrainTarget::Unit((*n).to_owned())
                    };
                    self.drains.push(RawDrain {
                        key: key.to_owned(),
                        target,
                        spec,
                    });
                }
            }
            // Written by gateways under leases: informational, never fatal.
            ["gateways", n] => {
                if let Ok(g) = serde_json::from_str(value) {
                    self.gateways.insert((*n).to_owned(), g);
                }
            }
            // Registered by instances under leases; merged with the units.
            ["instances", unit, service, addr] => self.instances.push(Instance {
                key: key.to_owned(),
                unit: (*unit).to_owned(),
                service: (*service).to_owned(),
                addr: (*addr).to_owned(),
            }),
            _ => p.push(E::UnknownKey {
                key: key.to_owned(),
            }),
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, value: &str, p: &mut Problems) -> Option<T> {
    match serde_json::from_str(value) {
        Ok(v) => Some(v),
        Err(e) => {
            p.push(E::InvalidJson {
                key: key.to_owned(),
                message: e.to_string(),
            });
            None
        }
    }
}

fn named<T>(key: &str, name: &str, value: &str, p: &mut Problems, into: &mut BTreeMap<String, T>)
where
    T: serde::de::DeserializeOwned,
{
    if !valid_name(name) {
        p.push(E::InvalidName {
            key: key.to_owned(),
            name: name.to_owned(),
        });
        return;
    }
    if let Some(v) = decode(key, value, p) {
        into.insert(name.to_owned(), v);
    }
}
