//! `quotas/<name>`: rate limits (what they count by, rate per period, burst,
//! where the counters live).

use std::collections::BTreeMap;

use super::problems::Problems;
use crate::spec::QuotaSpec;

/// The longest quota period, seconds (a day).
pub const MAX_PER_S: u32 = 86_400;

/// Check every quota, in name order.
pub(super) fn check(quotas: &BTreeMap<String, QuotaSpec>, p: &mut Problems) {
    for (name, q) in quotas {
        let key = format!("quotas/{name}");
        let before = p.count();
        for (field, v) in [("rate", q.rate), ("per_s", q.per_s), ("burst", q.burst)] {
            if v == 0 {
                p.invalid(&key, field, "must be at least 1");
            }
        }
        if q.per_s > MAX_PER_S {
            p.invalid(&key, "per_s", format!("{} is over {MAX_PER_S}", q.per_s));
        }
        if p.count() != before {
            p.mark_broken(key);
        }
    }
}
