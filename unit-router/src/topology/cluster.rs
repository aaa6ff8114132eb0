//! `cluster`: the shard count and hash, the user header, the routing-token
//! lifetime and the hop limit, and the rules on each.

use super::problems::Problems;
use crate::error::TopologyError as E;
use crate::spec::{ClusterSpec, ShardHash};

/// Validated `cluster` settings.
pub type Cluster = ClusterSpec;

const KEY: &str = "cluster";

/// Check the `cluster` key. Returns the settings (placeholders when the key
/// is missing or broken, so the other families can still be checked) and
/// whether they are sound enough to check the shard map against.
pub(super) fn check(spec: Option<&ClusterSpec>, p: &mut Problems) -> (Cluster, bool) {
    let Some(spec) = spec else {
        if !p.is_broken(KEY) {
            p.push(E::MissingKey { key: KEY.into() });
        }
        let placeholder = ClusterSpec {
            shards: 1,
            shard_hash: ShardHash::Mod,
            user_header: "x-user-id".into(),
            token_ttl_s: 1,
            max_hops: 0,
            resilience: None,
        };
        check_fields(&placeholder, p);
        return (placeholder, false);
    };
    let before = p.count();
    check_fields(spec, p);
    (spec.clone(), p.count() == before)
}

fn check_fields(c: &ClusterSpec, p: &mut Problems) {
    if c.shards == 0 || c.shards > 65_536 {
        p.invalid(
            KEY,
            "shards",
            format!("{} is not within 1..=65536", c.shards),
        );
    }
    check_user_header(&c.user_header, p);
    if c.token_ttl_s == 0 {
        p.invalid(KEY, "token_ttl_s", "must be at least 1");
    }
    if c.max_hops > 8 {
        p.invalid(KEY, "max_hops", format!("{} is above 8", c.max_hops));
    }
}

fn check_user_header(h: &str, p: &mut Problems) {
    if h.is_empty()
        || !h
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        p.invalid(
            KEY,
            "user_header",
            format!("{h:?} is not a lower-case header name"),
        );
    }
    if h.starts_with("x-unit-") || h.starts_with("x-forwarded-") || h == "baggage" {
        p.invalid(
            KEY,
            "user_header",
            format!("{h:?} is stripped at the edge; choose another header"),
        );
    }
}
