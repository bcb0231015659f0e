//! The format of one region file and its per-file validation.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::TopologyError;
use crate::shard_map::{ShardMap, ShardMapError, user_bucket};

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
    /// Where this region's origin listens for shoppers (through edges).
    pub listen: Endpoint,
    /// The origin's internal listener: admin API, metrics, readiness.
    pub internal: Endpoint,
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
        for (i, shard) in orders.shards.iter().enumerate() {
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
        }
        self.shard_map()
            .map(|_| ())
            .map_err(|e| bad(format!("orders.{}", e.field), e.problem))
    }

    /// The region's order-shard map (validated with the file).
    pub fn shard_map(&self) -> Result<ShardMap, ShardMapError> {
        ShardMap::new(
            self.orders.buckets,
            self.orders
                .shards
                .iter()
                .map(|s| (s.name.as_str(), s.buckets.as_slice())),
        )
    }

    /// Every address this region names, with the field it comes from.
    pub fn fixed_endpoints(&self) -> Vec<(String, Endpoint)> {
        let mut out = vec![
            ("origin.listen".to_string(), self.origin.listen.clone()),
            ("origin.internal".to_string(), self.origin.internal.clone()),
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
        let map = self.shard_map().ok()?;
        self.shard_named(map.shard_of_bucket(bucket)?)
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

/// Whether `s` is a valid name for a region, replica or shard: 1 to 63
/// lowercase letters, digits and dashes, not starting or ending with a dash.
pub fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}
