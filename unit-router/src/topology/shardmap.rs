//! `shardmap`: inclusive shard ranges, each owned by a shard unit, covering
//! every shard of `cluster.shards` exactly once; gaps and overlaps are
//! reported as ranges. Yields the shard -> owner index.

use super::problems::Problems;
use super::units::Units;
use crate::error::TopologyError as E;
use crate::ids::UnitId;
use crate::spec::{ShardMapSpec, ShardRangeSpec, UnitKind};

const KEY: &str = "shardmap";

/// Check the shard map against `shards` (`None` when `cluster` is unusable:
/// the map is then not checked) and the units. Returns the owner of each
/// shard (meaningful only when no problem was found).
pub(super) fn check(
    spec: Option<&ShardMapSpec>,
    shards: Option<u32>,
    units: &Units,
    p: &mut Problems,
) -> Vec<UnitId> {
    match (spec, shards) {
        (Some(_), None) => Vec::new(),
        (Some(m), Some(shards)) => check_ranges(m, shards, units, p),
        (None, _) => {
            if !p.is_broken(KEY) {
                p.push(E::MissingKey { key: KEY.into() });
            }
            Vec::new()
        }
    }
}

fn check_ranges(m: &ShardMapSpec, shards: u32, units: &Units, p: &mut Problems) -> Vec<UnitId> {
    let last = shards.saturating_sub(1);
    // Every unit named for each shard.
    let mut owner: Vec<Vec<&str>> = vec![Vec::new(); shards as usize];
    for r in &m.ranges {
        if check_range(r, last, units, p) {
            for s in r.from..=r.to {
                owner[s as usize].push(&r.unit);
            }
        }
    }
    report_coverage(&owner, p);
    owner
        .iter()
        .map(|o| {
            o.first()
                .and_then(|u| units.index.get(*u))
                .copied()
                .unwrap_or(UnitId(0))
        })
        .collect()
}

/// Check one range; `false` when its bounds are unusable.
fn check_range(r: &ShardRangeSpec, last: u32, units: &Units, p: &mut Problems) -> bool {
    if r.from > r.to {
        p.push(E::ReversedRange {
            from: r.from,
            to: r.to,
        });
        return false;
    }
    if r.to > last {
        p.push(E::RangeOutOfBounds {
            from: r.from,
            to: r.to,
            last,
        });
        return false;
    }
    match units.index.get(&r.unit) {
        None => p.push_ref(
            &format!("units/{}", r.unit),
            E::UnknownUnit {
                key: KEY.into(),
                unit: r.unit.clone(),
            },
        ),
        Some(id) if units.units[id.index()].kind != UnitKind::Shard => p.push(E::NotShardUnit {
            unit: r.unit.clone(),
            from: r.from,
            to: r.to,
        }),
        Some(_) => {}
    }
    true
}

/// Report runs of shards with no owner (gaps) or the same several owners (overlaps).
fn report_coverage(owner: &[Vec<&str>], p: &mut Problems) {
    let mut s = 0usize;
    while s < owner.len() {
        let n = owner[s].len();
        if n == 1 {
            s += 1;
            continue;
        }
        let start = s;
        while s < owner.len() && owner[s] == owner[start] {
            s += 1;
        }
        let (from, to) = (start as u32, (s - 1) as u32);
        if n == 0 {
            p.push(E::ShardGap { from, to });
        } else {
            p.push(E::ShardOverlap {
                from,
                to,
                units: owner[start].join(", "),
            });
        }
    }
}
