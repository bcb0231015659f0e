//! Order sharding, shared by the topology (which validates a region's map)
//! and the origin (which routes by it): `user_id → bucket` by jump
//! consistent hash over a fixed bucket count ([`user_bucket`]), then
//! `bucket → shard` through a map of bucket ranges ([`ShardMap`]), so
//! resharding moves buckets, never hashes.

use crate::region::is_slug;

/// Most buckets a map may have.
pub const MAX_BUCKETS: u32 = 65_536;

/// The bucket (of `buckets`) that `user_id`'s orders belong to: jump
/// consistent hash (Lamping & Veach, 2014) of the id's XXH3-64 hash.
///
/// A stored contract: every order placed is found through it, so neither
/// the hash nor the algorithm may ever change; resharding moves buckets
/// between shards (the topology's map), never users between buckets.
pub fn user_bucket(user_id: &str, buckets: u32) -> u32 {
    jump_consistent_hash(xxhash_rust::xxh3::xxh3_64(user_id.as_bytes()), buckets)
}

/// Jump consistent hash: maps `key` to one of `buckets` buckets so that
/// growing from n to n + 1 buckets moves only 1/(n + 1) of the keys, all to
/// the new bucket. The paper's reference algorithm.
fn jump_consistent_hash(mut key: u64, buckets: u32) -> u32 {
    let buckets = i64::from(buckets.max(1));
    let (mut b, mut j) = (-1_i64, 0_i64);
    while j < buckets {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1_i64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    u32::try_from(b).unwrap_or(0)
}

/// A problem in a shard map; `field` is relative (`shards[1].buckets[0]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {problem}")]
pub struct ShardMapError {
    pub field: String,
    pub problem: String,
}

/// A validated shard map: every bucket of `0..buckets` is owned by exactly
/// one shard, and shard names are unique slugs (order ids embed them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMap {
    buckets: u32,
    names: Vec<String>,
    /// Bucket → index into `names`.
    owner: Vec<u16>,
}

impl ShardMap {
    /// Checks and builds a map from `(shard name, inclusive bucket ranges)`.
    pub fn new<'a>(
        buckets: u32,
        shards: impl IntoIterator<Item = (&'a str, &'a [[u32; 2]])>,
    ) -> Result<Self, ShardMapError> {
        let bad = |field: String, problem: String| ShardMapError { field, problem };
        if buckets == 0 || buckets > MAX_BUCKETS {
            return Err(bad(
                "buckets".into(),
                format!("{buckets} is out of range (1..={MAX_BUCKETS})"),
            ));
        }
        let mut owner: Vec<Option<u16>> = vec![None; buckets as usize];
        let mut names: Vec<String> = Vec::new();
        for (i, (name, ranges)) in shards.into_iter().enumerate() {
            if !is_slug(name) {
                return Err(bad(
                    format!("shards[{i}].name"),
                    format!("`{name}` must be lowercase letters, digits and dashes"),
                ));
            }
            if names.iter().any(|n| n == name) {
                return Err(bad(
                    format!("shards[{i}].name"),
                    format!("shard `{name}` is listed twice"),
                ));
            }
            let index = u16::try_from(i)
                .map_err(|_| bad("shards".into(), "more shards than buckets can hold".into()))?;
            for (j, [first, last]) in ranges.iter().enumerate() {
                let field = format!("shards[{i}].buckets[{j}]");
                if first > last || *last >= buckets {
                    return Err(bad(
                        field,
                        format!("[{first}, {last}] is not a range within 0..{buckets}"),
                    ));
                }
                for bucket in *first..=*last {
                    let slot = &mut owner[bucket as usize];
                    if let Some(other) = slot {
                        return Err(bad(
                            field,
                            format!(
                                "bucket {bucket} is already owned by shard `{}`",
                                names[usize::from(*other)]
                            ),
                        ));
                    }
                    *slot = Some(index);
                }
            }
            names.push(name.to_string());
        }
        if names.is_empty() {
            return Err(bad("shards".into(), "at least one shard is needed".into()));
        }
        let owner = owner
            .iter()
            .enumerate()
            .map(|(bucket, slot)| {
                slot.ok_or_else(|| {
                    bad(
                        "shards".into(),
                        format!(
                            "bucket {bucket} is owned by no shard; every bucket needs exactly one"
                        ),
                    )
                })
            })
            .collect::<Result<Vec<u16>, _>>()?;
        Ok(ShardMap {
            buckets,
            names,
            owner,
        })
    }

    pub fn buckets(&self) -> u32 {
        self.buckets
    }

    /// Shard names in map order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn shard_of_bucket(&self, bucket: u32) -> Option<&str> {
        let index = *self.owner.get(bucket as usize)?;
        self.names.get(usize::from(index)).map(String::as_str)
    }

    /// The shard holding `user_id`'s orders.
    pub fn shard_of_user(&self, user_id: &str) -> &str {
        self.shard_of_bucket(user_bucket(user_id, self.buckets))
            // Every bucket below `buckets` has an owner (checked in `new`),
            // and `user_bucket` stays below `buckets`.
            .unwrap_or_else(|| unreachable!("a validated map owns every bucket"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference vectors every implementation of the paper's algorithm
    /// publishes (key, buckets, bucket).
    #[test]
    fn matches_the_published_jump_hash_vectors() {
        for (key, buckets, bucket) in [
            (1u64, 1u32, 0u32),
            (42, 57, 43),
            (0xDEAD_10CC, 1, 0),
            (0xDEAD_10CC, 666, 361),
            (256, 1024, 520),
            (1, 128, 55),
            (129, 128, 120),
            (u64::MAX, 128, 92),
        ] {
            assert_eq!(jump_consistent_hash(key, buckets), bucket, "key {key}");
        }
    }

    #[test]
    fn growing_the_bucket_count_moves_keys_only_to_the_new_bucket() {
        let keys = 20_000u64;
        for n in [1u32, 7, 100, 1023] {
            let mut moved = 0;
            for key in 0..keys {
                let key = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let before = jump_consistent_hash(key, n);
                let after = jump_consistent_hash(key, n + 1);
                assert!(before < n && after <= n);
                if before != after {
                    assert_eq!(after, n, "a moved key goes to the new bucket");
                    moved += 1;
                }
            }
            let expected = keys as f64 / f64::from(n + 1);
            assert!(
                (f64::from(moved) - expected).abs() < expected * 0.2 + 50.0,
                "n={n}: {moved} moved, ~{expected} expected"
            );
        }
    }

    #[test]
    fn users_spread_evenly_and_always_land_in_the_same_bucket() {
        let buckets = 1024;
        let mut counts = vec![0u32; buckets as usize];
        for i in 0..102_400 {
            counts[user_bucket(&format!("user-{i}"), buckets) as usize] += 1;
        }
        // ~100 per bucket; none empty or far off.
        assert!(counts.iter().all(|c| (50..=160).contains(c)), "{counts:?}");
        // The stored contract: these must never change.
        assert_eq!(user_bucket("u42", 1024), user_bucket("u42", 1024));
        let fixed: Vec<u32> = ["u1", "u42", "alice"]
            .iter()
            .map(|u| user_bucket(u, 1024))
            .collect();
        assert_eq!(
            fixed, FIXED_BUCKETS,
            "user_bucket changed: orders would be lost"
        );
    }

    /// `user_bucket` of "u1", "u42", "alice" over 1024 buckets, recorded
    /// when the function was written.
    const FIXED_BUCKETS: [u32; 3] = [530, 0, 367];
}
