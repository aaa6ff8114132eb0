//! Drain rules: which units a set of drain keys takes out of service, expiry
//! by `until`, and the never-leave-a-shard-without-a-unit rule.

use crate::ids::UnitId;
use crate::topology::Topology;

/// What a drain key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrainTarget {
    Dc(String),
    Unit(String),
}

impl DrainTarget {
    /// The etcd key (relative to the prefix) of this drain.
    pub fn key(&self) -> String {
        match self {
            DrainTarget::Dc(d) => format!("drain/dc/{d}"),
            DrainTarget::Unit(u) => format!("drain/unit/{u}"),
        }
    }
}

/// One drain key, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drain {
    pub key: String,
    pub target: DrainTarget,
    pub reason: String,
    pub by: String,
    /// Unix seconds after which the drain no longer applies.
    pub until: Option<i64>,
}

impl Drain {
    /// Whether the drain applies at unix time `now`.
    pub fn in_force(&self, now: i64) -> bool {
        self.until.is_none_or(|u| now < u)
    }
}

/// What a set of drained units leaves without any unit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stranded {
    /// Inclusive shard ranges with no undrained unit left.
    pub shards: Vec<(u32, u32)>,
    /// Center traffic has no undrained unit left.
    pub center: bool,
}

impl Stranded {
    /// Nothing is stranded.
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty() && !self.center
    }
}

impl std::fmt::Display for Stranded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts: Vec<String> = self
            .shards
            .iter()
            .map(|&(a, b)| {
                if a == b {
                    format!("{a}")
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        if !parts.is_empty() {
            parts[0] = format!("shards {}", parts[0]);
        }
        if self.center {
            parts.push("center traffic".into());
        }
        f.write_str(&parts.join(", "))
    }
}

/// Units a drain target covers.
pub fn units_of(topo: &Topology, target: &DrainTarget) -> Vec<UnitId> {
    (0..topo.units.len())
        .map(|i| UnitId(i as u16))
        .filter(|&id| {
            let u = topo.unit(id);
            match target {
                DrainTarget::Dc(d) => topo.dcs[u.dc.index()].name == *d,
                DrainTarget::Unit(n) => u.name == *n,
            }
        })
        .collect()
}

/// What is stranded when exactly the units with `drained[i] == true` are drained.
pub fn stranded(topo: &Topology, drained: &[bool]) -> Stranded {
    let alive = |u: UnitId| !drained[u.index()];
    let can_serve =
        |home: UnitId| alive(home) || topo.unit(home).fallback.iter().any(|&f| alive(f));
    let mut out = Stranded::default();
    for (s, &home) in topo.shard_owners().iter().enumerate() {
        if !can_serve(home) {
            let s = s as u32;
            match out.shards.last_mut() {
                Some((_, to)) if *to + 1 == s => *to = s,
                _ => out.shards.push((s, s)),
            }
        }
    }
    out.center = !topo.centers().is_empty() && !topo.centers().iter().any(|&c| can_serve(c));
    out
}

/// The drained set of the current topology at `now` (by unit index).
pub fn drained_set(topo: &Topology, now: i64) -> Vec<bool> {
    (0..topo.units.len())
        .map(|i| topo.is_drained(UnitId(i as u16), now))
        .collect()
}

/// What adding `target` to the drains in force at `now` would strand.
pub fn would_strand(topo: &Topology, target: &DrainTarget, now: i64) -> Stranded {
    let mut drained = drained_set(topo, now);
    for u in units_of(topo, target) {
        drained[u.index()] = true;
    }
    stranded(topo, &drained)
}

/// Apply the drains in force at `now` to the units, in key order (dc drains,
/// then unit drains). A unit whose drain would strand a shard stays active;
/// that is recorded in `topo.notices`. Returns when drain state next changes.
pub(crate) fn apply(topo: &mut Topology, now: i64) -> Option<i64> {
    let mut order: Vec<usize> = (0..topo.drains.len()).collect();
    order.sort_by_key(|&i| {
        let d = &topo.drains[i];
        (matches!(d.target, DrainTarget::Unit(_)), d.key.clone())
    });
    let mut drained = vec![false; topo.units.len()];
    let mut assigned = vec![None; topo.units.len()];
    let mut next: Option<i64> = None;
    for i in order {
        let d = topo.drains[i].clone();
        if let Some(u) = d.until {
            if u > now {
                next = Some(next.map_or(u, |n| n.min(u)));
            }
        }
        if !d.in_force(now) {
            continue;
        }
        for u in units_of(topo, &d.target) {
            if drained[u.index()] {
                continue;
            }
            drained[u.index()] = true;
            let lost = stranded(topo, &drained);
            if lost.is_empty() {
                assigned[u.index()] = Some(d.clone());
            } else {
                drained[u.index()] = false;
                topo.notices.push(format!(
                    "{}: unit {} stays active: draining it would leave {} without a unit",
                    d.key,
                    topo.unit(u).name,
                    lost
                ));
            }
        }
    }
    for (u, d) in topo.units.iter_mut().zip(assigned) {
        u.drain = d;
    }
    next
}
