//! User key -> shard. Stable across versions: `tests` below pin known pairs.

use xxhash_rust::xxh3::xxh3_64;

use crate::spec::ShardHash;

/// Shard of `key` among `shards` shards (`shards > 0`).
pub fn shard_of(hash: ShardHash, key: &str, shards: u32) -> u32 {
    debug_assert!(shards > 0);
    let n = u64::from(shards.max(1));
    let h = match hash {
        ShardHash::Mod => match parse_decimal(key) {
            Some(v) => v,
            None => xxh3_64(key.as_bytes()),
        },
        ShardHash::Xxh3 => xxh3_64(key.as_bytes()),
    };
    (h % n) as u32
}

/// A plain decimal `u64` (ASCII digits only, no sign, no spaces).
fn parse_decimal(key: &str) -> Option<u64> {
    if key.is_empty() || key.len() > 20 || !key.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    key.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compatibility pins: changing any of these moves users between units.
    /// The xxh3 values agree with Python's `xxhash.xxh3_64_intdigest`, so SDKs
    /// in other languages can compute the same shard.
    #[test]
    fn pinned_assignments_never_change() {
        let pins: &[(ShardHash, &str, u32, u32)] = &[
            (ShardHash::Mod, "0", 100, 0),
            (ShardHash::Mod, "42", 100, 42),
            (ShardHash::Mod, "10042", 100, 42),
            (ShardHash::Mod, "18446744073709551615", 100, 15),
            (ShardHash::Mod, "1234567", 64, 7),
            (ShardHash::Mod, "alice", 100, 80),
            (ShardHash::Mod, "-5", 100, 20),
            (ShardHash::Xxh3, "42", 100, 73),
            (ShardHash::Xxh3, "alice", 100, 80),
            (ShardHash::Xxh3, "bob@example.com", 100, 90),
            (ShardHash::Xxh3, "", 100, 38),
            (ShardHash::Xxh3, "用户-7", 100, 92),
        ];
        for &(hash, key, n, want) in pins {
            assert_eq!(shard_of(hash, key, n), want, "{hash:?} {key:?} mod {n}");
        }
    }

    #[test]
    fn decimal_parsing_is_strict() {
        assert_eq!(parse_decimal("007"), Some(7));
        assert_eq!(parse_decimal("+7"), None);
        assert_eq!(parse_decimal(" 7"), None);
        assert_eq!(parse_decimal("18446744073709551616"), None);
        assert_eq!(parse_decimal(""), None);
    }
}
