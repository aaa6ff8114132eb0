//! `quotas/<name>`: rate limits (what they count by, rate per period, burst,
//! where the counters live). Validated on their own; no route may use them
//! yet (see [`crate::TopologyError::NotEnforced`]).

use std::collections::BTreeMap;

use super::problems::Problems;
use crate::spec::QuotaSpec;

/// Check every quota, in name order.
pub(super) fn check(quotas: &BTreeMap<String, QuotaSpec>, p: &mut Problems) {
    for (name, q) in quotas {
        let key = format!("quotas/{name}");
        for (field, v) in [("rate", q.rate), ("per_s", q.per_s), ("burst", q.burst)] {
            if v == 0 {
                p.invalid(&key, field, "must be at least 1");
            }
        }
    }
}
