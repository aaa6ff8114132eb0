//! Series of routes, units and services that left the topology are dropped
//! once a snapshot without them is in force: a deleted route's counters
//! stop being exported (Prometheus marks them stale) instead of staying
//! for the life of the process. Off the request path (the plane's writer).

use std::collections::{HashMap, HashSet};

use pingora_prometheus::prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use unit_router::Topology;

use super::Metrics;

/// Names in one topology that the next one no longer has.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Gone {
    pub routes: HashSet<String>,
    pub units: HashSet<String>,
    pub services: HashSet<String>,
}

impl Gone {
    /// What `old` had and `new` has not.
    pub fn between(old: &Topology, new: &Topology) -> Gone {
        fn left<'a>(
            old: impl Iterator<Item = &'a String>,
            new: impl Iterator<Item = &'a String>,
        ) -> HashSet<String> {
            let new: HashSet<&String> = new.collect();
            old.filter(|n| !new.contains(n)).cloned().collect()
        }
        Gone {
            routes: left(
                old.routes.routes().iter().map(|r| &r.name),
                new.routes.routes().iter().map(|r| &r.name),
            ),
            units: left(
                old.units.iter().map(|u| &u.name),
                new.units.iter().map(|u| &u.name),
            ),
            services: left(old.services.iter(), new.services.iter()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty() && self.units.is_empty() && self.services.is_empty()
    }
}

/// Drop from `vec` every series whose `label` is one of `gone`.
fn drop_series<T: MetricVecBuilder>(vec: &MetricVec<T>, label: &str, gone: &HashSet<String>) {
    if gone.is_empty() {
        return;
    }
    for family in vec.collect() {
        for m in family.get_metric() {
            let labels: HashMap<&str, &str> = m
                .get_label()
                .iter()
                .map(|l| (l.name(), l.value()))
                .collect();
            if labels.get(label).is_some_and(|v| gone.contains(*v)) {
                let _ = vec.remove(&labels);
            }
        }
    }
}

impl Metrics {
    /// Drop the series of everything in `gone`.
    pub fn forget(&self, gone: &Gone) {
        drop_series(&self.requests, "route", &gone.routes);
        drop_series(&self.duration, "route", &gone.routes);
        drop_series(&self.attempts, "unit", &gone.units);
        let r = &self.resilience;
        for (label, names) in [("unit", &gone.units), ("service", &gone.services)] {
            drop_series(&self.upstream_duration, label, names);
            drop_series(&r.breaker_refused, label, names);
            drop_series(&r.drop_ratio, label, names);
            drop_series(&r.shed, label, names);
            drop_series(&r.limit, label, names);
            drop_series(&r.inflight, label, names);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_series_of_what_left_are_dropped() {
        let m = Metrics::new().unwrap();
        for route in ["kept", "deleted"] {
            m.requests
                .with_label_values(&["public", route, "shard", "200"])
                .inc();
            m.duration
                .with_label_values(&["public", route])
                .observe(0.1);
        }
        m.upstream_duration
            .with_label_values(&["bj-9", "orders"])
            .observe(0.1);
        m.upstream_duration
            .with_label_values(&["bj-1", "orders"])
            .observe(0.1);
        let gone = Gone {
            routes: HashSet::from(["deleted".to_owned()]),
            units: HashSet::from(["bj-9".to_owned()]),
            services: HashSet::new(),
        };
        m.forget(&gone);
        let text = String::from_utf8(m.render()).unwrap();
        assert!(!text.contains("route=\"deleted\""), "{text}");
        assert!(!text.contains("unit=\"bj-9\""), "{text}");
        assert!(text.contains("route=\"kept\"") && text.contains("unit=\"bj-1\""));
    }
}
