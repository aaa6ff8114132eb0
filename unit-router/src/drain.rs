//! Drain rules: which units a set of drain keys takes out of service, expiry
//! by `until`, and the never-leave-a-shard-without-a-unit rule.
//!
//! The rules are pure functions over plain data: they see a topology only
//! through [`DrainView`] (unit names, their datacenters and fallback orders,
//! the shard owners, the center units), so this module does not depend on the
//! topology model. The topology implements the view and stores what
//! `apply` decides.

use crate::ids::UnitId;

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

/// What the drain rules need to know about a topology. Unit ids are
/// `0..unit_count()`; every id the view hands out is below that.
pub trait DrainView {
    /// How many units there are.
    fn unit_count(&self) -> usize;
    /// Name of unit `u`.
    fn unit_name(&self, u: UnitId) -> &str;
    /// Name of the datacenter unit `u` runs in.
    fn unit_dc(&self, u: UnitId) -> &str;
    /// Where unit `u`'s traffic goes when it cannot serve, in order.
    fn fallback(&self, u: UnitId) -> &[UnitId];
    /// The owner of each shard, indexed by shard.
    fn shard_owners(&self) -> &[UnitId];
    /// The center units.
    fn centers(&self) -> &[UnitId];
    /// The drain assigned to unit `u` (in force or not), if any.
    fn drain_of(&self, u: UnitId) -> Option<&Drain>;
}

fn unit_ids<V: DrainView + ?Sized>(view: &V) -> impl Iterator<Item = UnitId> {
    (0..view.unit_count()).map(|i| UnitId(i as u16))
}

/// Units a drain target covers.
pub fn units_of<V: DrainView + ?Sized>(view: &V, target: &DrainTarget) -> Vec<UnitId> {
    unit_ids(view)
        .filter(|&u| match target {
            DrainTarget::Dc(d) => view.unit_dc(u) == d,
            DrainTarget::Unit(n) => view.unit_name(u) == n,
        })
        .collect()
}

/// What is stranded when exactly the units with `drained[i] == true` are drained.
pub fn stranded<V: DrainView + ?Sized>(view: &V, drained: &[bool]) -> Stranded {
    let alive = |u: UnitId| !drained[u.index()];
    let can_serve = |home: UnitId| alive(home) || view.fallback(home).iter().any(|&f| alive(f));
    let mut out = Stranded::default();
    for (s, &home) in view.shard_owners().iter().enumerate() {
        if !can_serve(home) {
            let s = s as u32;
            match out.shards.last_mut() {
                Some((_, to)) if *to + 1 == s => *to = s,
                _ => out.shards.push((s, s)),
            }
        }
    }
    let centers = view.centers();
    out.center = !centers.is_empty() && !centers.iter().any(|&c| can_serve(c));
    out
}

/// The drained set of the current topology at `now` (by unit index).
pub fn drained_set<V: DrainView + ?Sized>(view: &V, now: i64) -> Vec<bool> {
    unit_ids(view)
        .map(|u| view.drain_of(u).is_some_and(|d| d.in_force(now)))
        .collect()
}

/// What adding `target` to the drains in force at `now` would strand.
pub fn would_strand<V: DrainView + ?Sized>(view: &V, target: &DrainTarget, now: i64) -> Stranded {
    let mut drained = drained_set(view, now);
    for u in units_of(view, target) {
        drained[u.index()] = true;
    }
    stranded(view, &drained)
}

/// What [`apply`] decided: the drain in force per unit, what was applied
/// differently from how it was written, and when drain state next changes.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    /// Indexed by unit id.
    pub(crate) per_unit: Vec<Option<Drain>>,
    /// One line per drain not applied to a unit because it would strand a shard.
    pub(crate) notices: Vec<String>,
    /// The earliest `until` still ahead of `now`, if any.
    pub(crate) next_change: Option<i64>,
}

/// Apply the `drains` in force at `now` to the units of `view`, in key order
/// (dc drains, then unit drains). A unit whose drain would strand a shard (or
/// center traffic) stays active; that is recorded as a notice. The drains
/// already assigned in `view` are not looked at.
pub(crate) fn apply<V: DrainView + ?Sized>(view: &V, drains: &[Drain], now: i64) -> Applied {
    let mut order: Vec<&Drain> = drains.iter().collect();
    order.sort_by(|a, b| {
        let unit = |d: &Drain| matches!(d.target, DrainTarget::Unit(_));
        (unit(a), &a.key).cmp(&(unit(b), &b.key))
    });
    let mut drained = vec![false; view.unit_count()];
    let mut out = Applied {
        per_unit: vec![None; view.unit_count()],
        ..Applied::default()
    };
    for d in order {
        if let Some(u) = d.until.filter(|&u| u > now) {
            out.next_change = Some(out.next_change.map_or(u, |n| n.min(u)));
        }
        if !d.in_force(now) {
            continue;
        }
        for u in units_of(view, &d.target) {
            if drained[u.index()] {
                continue;
            }
            drained[u.index()] = true;
            let lost = stranded(view, &drained);
            if lost.is_empty() {
                out.per_unit[u.index()] = Some(d.clone());
            } else {
                drained[u.index()] = false;
                out.notices.push(format!(
                    "{}: unit {} stays active: draining it would leave {} without a unit",
                    d.key,
                    view.unit_name(u),
                    lost
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two shard units in one dc that fail over to each other, one center.
    struct Plain {
        drains: Vec<Option<Drain>>,
    }

    const A: UnitId = UnitId(0);
    const B: UnitId = UnitId(1);
    const C: UnitId = UnitId(2);

    impl DrainView for Plain {
        fn unit_count(&self) -> usize {
            3
        }
        fn unit_name(&self, u: UnitId) -> &str {
            ["a", "b", "c"][u.index()]
        }
        fn unit_dc(&self, u: UnitId) -> &str {
            ["dc1", "dc1", "dc2"][u.index()]
        }
        fn fallback(&self, u: UnitId) -> &[UnitId] {
            match u.index() {
                0 => &[B],
                1 => &[A],
                _ => &[],
            }
        }
        fn shard_owners(&self) -> &[UnitId] {
            &[A, A, B, B]
        }
        fn centers(&self) -> &[UnitId] {
            &[C]
        }
        fn drain_of(&self, u: UnitId) -> Option<&Drain> {
            self.drains[u.index()].as_ref()
        }
    }

    fn drain(target: DrainTarget, until: Option<i64>) -> Drain {
        Drain {
            key: target.key(),
            target,
            reason: String::new(),
            by: String::new(),
            until,
        }
    }

    #[test]
    fn the_last_unit_of_a_shard_stays_active() {
        let view = Plain {
            drains: vec![None; 3],
        };
        let drains = [
            drain(DrainTarget::Unit("b".into()), Some(50)),
            drain(DrainTarget::Dc("dc1".into()), Some(100)),
        ];
        let applied = apply(&view, &drains, 10);
        // The dc drain comes first: a is drained, b (its fallback) stays.
        assert_eq!(applied.per_unit[0].as_ref(), Some(&drains[1]));
        assert_eq!(applied.per_unit[1], None);
        assert_eq!(applied.notices.len(), 2, "{:?}", applied.notices);
        assert!(applied.notices[0].starts_with("drain/dc/dc1: unit b stays active"));
        assert_eq!(applied.next_change, Some(50));
        // Past every `until` nothing applies and nothing changes by itself.
        let later = apply(&view, &drains, 100);
        assert!(later.per_unit.iter().all(Option::is_none));
        assert_eq!(later.next_change, None);
    }

    #[test]
    fn stranded_shards_and_center() {
        let mut view = Plain {
            drains: vec![None; 3],
        };
        assert_eq!(units_of(&view, &DrainTarget::Dc("dc1".into())), [A, B]);
        let s = would_strand(&view, &DrainTarget::Dc("dc1".into()), 0);
        assert_eq!(s.shards, [(0, 3)]);
        assert!(!s.center);
        view.drains[2] = Some(drain(DrainTarget::Unit("c".into()), None));
        assert_eq!(drained_set(&view, 0), [false, false, true]);
        let s = stranded(&view, &drained_set(&view, 0));
        assert!(s.center && s.shards.is_empty());
        assert_eq!(s.to_string(), "center traffic");
    }
}
