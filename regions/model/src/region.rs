//! The format of one region file and its per-file validation.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::TopologyError;

/// One region, as written in `regions/topology/<name>.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionFile {
    /// Region name, lowercase letters, digits and dashes (`us-east`).
    pub name: String,
    /// Whether this region holds the catalog primary. Exactly one region does.
    #[serde(default)]
    pub home: bool,
    /// How stale a replica read may be before the replica is skipped.
    #[serde(with = "humantime_serde")]
    pub replica_lag_tolerance: Duration,
    /// ISO 3166-1 alpha-2 countries this region serves.
    pub countries: Vec<String>,
    /// Round-trip latency to every other region, in milliseconds.
    pub latency_ms: BTreeMap<String, u32>,
    pub origin: OriginSection,
    pub edge: EdgeSection,
    pub catalog: CatalogSection,
    pub redis: Endpoint,
    pub orders: OrdersSection,
}

/// A host and port. Port 0 means "pick a free port" for the local launcher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginSection {
    /// Where this region's origin listens.
    pub listen: Endpoint,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeSection {
    /// Where this region's edge serves shoppers.
    pub listen: Endpoint,
    /// The edge's admin port (metrics, purge, health).
    pub admin: Endpoint,
    /// Where the edge terminates TLS (HTTP/1.1 and HTTP/2).
    pub tls: Endpoint,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogSection {
    /// The catalog primary; only in the home region.
    #[serde(default)]
    pub primary: Option<Endpoint>,
    /// This region's streaming replicas of the catalog (at least one).
    pub replicas: Vec<ReplicaEndpoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaEndpoint {
    /// Unique name, used as the replication `application_name` and in metrics.
    pub name: String,
    pub host: String,
    pub port: u16,
}

impl ReplicaEndpoint {
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            host: self.host.clone(),
            port: self.port,
        }
    }
}

/// Orders are sharded by user: `user_id → bucket` (jump consistent hash over
/// `buckets`), `bucket → shard` through the ranges below, so resharding moves
/// buckets, never hashes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrdersSection {
    /// Fixed number of hash buckets; never changes once orders exist.
    pub buckets: u32,
    pub shards: Vec<OrderShard>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderShard {
    /// Unique shard name; embedded in order ids.
    pub name: String,
    pub host: String,
    pub port: u16,
    pub database: String,
    /// Inclusive bucket ranges `[first, last]` this shard owns.
    pub buckets: Vec<[u32; 2]>,
}

impl RegionFile {
    /// Per-file checks. Cross-region checks live in [`crate::Topology::validate`].
    pub fn validate(&self, file: &Path) -> Result<(), TopologyError> {
        let bad = |field: &str, problem: String| TopologyError::invalid(file, field, problem);
        if !is_slug(&self.name) {
            return Err(bad(
                "name",
                format!(
                    "`{}` must be lowercase letters, digits and dashes",
                    self.name
                ),
            ));
        }
        if self.replica_lag_tolerance.is_zero() {
            return Err(bad(
                "replica_lag_tolerance",
                "must be greater than zero".into(),
            ));
        }
        if self.replica_lag_tolerance > Duration::from_secs(60) {
            return Err(bad(
                "replica_lag_tolerance",
                "must be at most 60s; a staler replica is not a useful read path".into(),
            ));
        }
        if self.countries.is_empty() {
            return Err(bad("countries", "must list at least one country".into()));
        }
        for (i, country) in self.countries.iter().enumerate() {
            if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(bad(
                    &format!("countries[{i}]"),
                    format!("`{country}` is not an ISO 3166-1 alpha-2 code (two capital letters)"),
                ));
            }
        }
        if self.latency_ms.contains_key(&self.name) {
            return Err(bad(
                &format!("latency_ms.{}", self.name),
                "a region has no latency to itself".into(),
            ));
        }
        match (&self.catalog.primary, self.home) {
            (None, true) => {
                return Err(bad(
                    "catalog.primary",
                    "the home region must name the catalog primary".into(),
                ));
            }
            (Some(_), false) => {
                return Err(bad(
                    "catalog.primary",
                    "only the home region holds the catalog primary".into(),
                ));
            }
            _ => {}
        }
        if self.catalog.replicas.is_empty() {
            return Err(bad(
                "catalog.replicas",
                "a region needs at least one replica".into(),
            ));
        }
        for (i, replica) in self.catalog.replicas.iter().enumerate() {
            if !is_slug(&replica.name) {
                return Err(bad(
                    &format!("catalog.replicas[{i}].name"),
                    format!(
                        "`{}` must be lowercase letters, digits and dashes",
                        replica.name
                    ),
                ));
            }
            if self.catalog.replicas[..i]
                .iter()
                .any(|r| r.name == replica.name)
            {
                return Err(bad(
                    &format!("catalog.replicas[{i}].name"),
                    format!("replica `{}` is listed twice", replica.name),
                ));
            }
        }
        for (field, endpoint) in self.fixed_endpoints() {
            if endpoint.host.trim().is_empty() {
                return Err(bad(&format!("{field}.host"), "must not be empty".into()));
            }
        }
        self.validate_orders(file)
    }

    fn validate_orders(&self, file: &Path) -> Result<(), TopologyError> {
        let bad = |field: String, problem: String| TopologyError::invalid(file, field, problem);
        let orders = &self.orders;
        if orders.buckets == 0 || orders.buckets > 65_536 {
            return Err(bad(
                "orders.buckets".into(),
                format!("{} is out of range (1..=65536)", orders.buckets),
            ));
        }
        if orders.shards.is_empty() {
            return Err(bad(
                "orders.shards".into(),
                "at least one shard is needed".into(),
            ));
        }
        let mut owner: Vec<Option<&str>> = vec![None; orders.buckets as usize];
        for (i, shard) in orders.shards.iter().enumerate() {
            if !is_slug(&shard.name) {
                return Err(bad(
                    format!("orders.shards[{i}].name"),
                    format!(
                        "`{}` must be lowercase letters, digits and dashes",
                        shard.name
                    ),
                ));
            }
            if orders.shards[..i].iter().any(|s| s.name == shard.name) {
                return Err(bad(
                    format!("orders.shards[{i}].name"),
                    format!("shard `{}` is listed twice", shard.name),
                ));
            }
            if shard.database.is_empty()
                || !shard
                    .database
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err(bad(
                    format!("orders.shards[{i}].database"),
                    format!(
                        "`{}` must be lowercase letters, digits and underscores",
                        shard.database
                    ),
                ));
            }
            for (j, [first, last]) in shard.buckets.iter().enumerate() {
                let field = format!("orders.shards[{i}].buckets[{j}]");
                if first > last || *last >= orders.buckets {
                    return Err(bad(
                        field,
                        format!(
                            "[{first}, {last}] is not a range within 0..{}",
                            orders.buckets
                        ),
                    ));
                }
                for bucket in *first..=*last {
                    let slot = &mut owner[bucket as usize];
                    if let Some(other) = slot {
                        return Err(bad(
                            field,
                            format!("bucket {bucket} is already owned by shard `{other}`"),
                        ));
                    }
                    *slot = Some(&shard.name);
                }
            }
        }
        if let Some(missing) = owner.iter().position(Option::is_none) {
            return Err(bad(
                "orders.shards".into(),
                format!("bucket {missing} is owned by no shard; every bucket needs exactly one"),
            ));
        }
        Ok(())
    }

    /// Every address this region names, with the field it comes from.
    pub fn fixed_endpoints(&self) -> Vec<(String, Endpoint)> {
        let mut out = vec![
            ("origin.listen".to_string(), self.origin.listen.clone()),
            ("edge.listen".to_string(), self.edge.listen.clone()),
            ("edge.admin".to_string(), self.edge.admin.clone()),
            ("edge.tls".to_string(), self.edge.tls.clone()),
            ("redis".to_string(), self.redis.clone()),
        ];
        if let Some(primary) = &self.catalog.primary {
            out.push(("catalog.primary".to_string(), primary.clone()));
        }
        for (i, r) in self.catalog.replicas.iter().enumerate() {
            out.push((format!("catalog.replicas[{i}]"), r.endpoint()));
        }
        out
    }

    /// The shard that owns `bucket`, if the map covers it (validated: always).
    pub fn shard_for_bucket(&self, bucket: u32) -> Option<&OrderShard> {
        self.orders.shards.iter().find(|s| {
            s.buckets
                .iter()
                .any(|[first, last]| (*first..=*last).contains(&bucket))
        })
    }

    /// The shard holding `user_id`'s orders: [`user_bucket`], then the map.
    pub fn shard_for_user(&self, user_id: &str) -> Option<&OrderShard> {
        self.shard_for_bucket(user_bucket(user_id, self.orders.buckets))
    }

    /// The shard called `name` (order ids embed it).
    pub fn shard_named(&self, name: &str) -> Option<&OrderShard> {
        self.orders.shards.iter().find(|s| s.name == name)
    }
}

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

fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod sharding_tests {
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
