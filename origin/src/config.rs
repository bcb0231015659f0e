//! The origin's typed configuration, loaded from one TOML file (the
//! `meridian` CLI writes one per region) and validated at load: a bad value
//! is an error naming the field, never a panic later.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything one origin process needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginConfig {
    /// The region this origin serves (`X-Served-By-Region`, metrics).
    pub region: String,
    /// Where to listen; port 0 picks a free port (tests).
    pub listen: SocketAddr,
    pub database: DatabaseConfig,
    /// The regional Redis (L2 cache, invalidation channel). Optional: without
    /// it the origin runs on L1 and the database alone.
    #[serde(default)]
    pub redis_url: Option<String>,
    #[serde(default)]
    pub cache: CacheConfig,
    /// Named admin tokens; an admin request must present one as a bearer token.
    pub admin_tokens: Vec<AdminToken>,
    /// Largest request body accepted, in bytes.
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: usize,
    /// Send `X-Origin-Cache` (which cache tier answered). For development
    /// and tests; off in production, where it only adds bytes and detail.
    #[serde(default)]
    pub debug_headers: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// The catalog primary (writes; reads only as a fallback).
    pub primary_url: String,
    /// This region's replicas, tried in order.
    #[serde(default)]
    pub replicas: Vec<ReplicaConfig>,
    /// A replica further behind than this is skipped for reads.
    #[serde(with = "humantime_serde")]
    pub lag_tolerance: Duration,
    /// How often replica lag and health are measured.
    #[serde(with = "humantime_serde", default = "defaults::lag_probe_interval")]
    pub lag_probe_interval: Duration,
    /// Connections per pool.
    #[serde(default = "defaults::pool_size")]
    pub pool_size: u32,
    /// How long to wait for a connection before failing over.
    #[serde(with = "humantime_serde", default = "defaults::acquire_timeout")]
    pub acquire_timeout: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaConfig {
    pub name: String,
    pub url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// L1 (in-process) capacity in bytes; 0 disables L1.
    #[serde(default = "defaults::l1_max_bytes")]
    pub l1_max_bytes: u64,
    /// L1 time-to-live: a backstop behind invalidation.
    #[serde(with = "humantime_serde", default = "defaults::l1_ttl")]
    pub l1_ttl: Duration,
    /// L2 (Redis) time-to-live.
    #[serde(with = "humantime_serde", default = "defaults::l2_ttl")]
    pub l2_ttl: Duration,
    /// How long a "not found" is remembered.
    #[serde(with = "humantime_serde", default = "defaults::negative_ttl")]
    pub negative_ttl: Duration,
    /// Longest a single Redis command may take before the L2 is skipped.
    #[serde(with = "humantime_serde", default = "defaults::l2_timeout")]
    pub l2_timeout: Duration,
    /// How often the invalidation log is read from the local replica.
    #[serde(with = "humantime_serde", default = "defaults::invalidation_poll")]
    pub invalidation_poll: Duration,
    /// FX rates are cached this long.
    #[serde(with = "humantime_serde", default = "defaults::fx_ttl")]
    pub fx_ttl: Duration,
    /// `s-maxage` the edge may cache catalog responses for.
    #[serde(with = "humantime_serde", default = "defaults::edge_max_age")]
    pub edge_max_age: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            l1_max_bytes: defaults::l1_max_bytes(),
            l1_ttl: defaults::l1_ttl(),
            l2_ttl: defaults::l2_ttl(),
            negative_ttl: defaults::negative_ttl(),
            l2_timeout: defaults::l2_timeout(),
            invalidation_poll: defaults::invalidation_poll(),
            fx_ttl: defaults::fx_ttl(),
            edge_max_age: defaults::edge_max_age(),
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    /// Who holds the token (audit logs name it; never the token itself).
    pub name: String,
    pub token: String,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminToken")
            .field("name", &self.name)
            .field("token", &"<redacted>")
            .finish()
    }
}

mod defaults {
    use std::time::Duration;
    pub fn max_body_bytes() -> usize {
        64 * 1024
    }
    pub fn lag_probe_interval() -> Duration {
        Duration::from_millis(50)
    }
    pub fn pool_size() -> u32 {
        16
    }
    pub fn acquire_timeout() -> Duration {
        Duration::from_secs(2)
    }
    pub fn l1_max_bytes() -> u64 {
        64 * 1024 * 1024
    }
    pub fn l1_ttl() -> Duration {
        Duration::from_secs(300)
    }
    pub fn l2_ttl() -> Duration {
        Duration::from_secs(3600)
    }
    pub fn negative_ttl() -> Duration {
        Duration::from_secs(5)
    }
    pub fn l2_timeout() -> Duration {
        Duration::from_millis(100)
    }
    pub fn invalidation_poll() -> Duration {
        Duration::from_millis(100)
    }
    pub fn fx_ttl() -> Duration {
        Duration::from_secs(300)
    }
    pub fn edge_max_age() -> Duration {
        Duration::from_secs(60)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("origin config: field `{field}`: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
}

impl OriginConfig {
    /// Reads, parses and validates a TOML config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        let config: OriginConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            file: file.clone(),
            message: e.to_string().trim_end().replace('\n', " | "),
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, problem: &str| {
            Err(ConfigError::Invalid {
                field,
                problem: problem.to_string(),
            })
        };
        if self.region.is_empty() {
            return invalid("region", "must not be empty");
        }
        if !self.database.primary_url.starts_with("postgres://")
            && !self.database.primary_url.starts_with("postgresql://")
        {
            return invalid("database.primary_url", "must be a postgres:// URL");
        }
        for replica in &self.database.replicas {
            if !replica.url.starts_with("postgres://") && !replica.url.starts_with("postgresql://")
            {
                return invalid("database.replicas.url", "must be a postgres:// URL");
            }
            if replica.name.is_empty() {
                return invalid("database.replicas.name", "must not be empty");
            }
        }
        if self.database.lag_tolerance.is_zero() {
            return invalid("database.lag_tolerance", "must be greater than zero");
        }
        if self.database.lag_probe_interval.is_zero() {
            return invalid("database.lag_probe_interval", "must be greater than zero");
        }
        if self.database.pool_size == 0 {
            return invalid("database.pool_size", "must be at least 1");
        }
        if let Some(url) = &self.redis_url
            && !url.starts_with("redis://")
        {
            return invalid("redis_url", "must be a redis:// URL");
        }
        if self.admin_tokens.is_empty() {
            return invalid("admin_tokens", "at least one admin token is needed");
        }
        for token in &self.admin_tokens {
            if token.token.len() < 16 {
                return invalid(
                    "admin_tokens.token",
                    "tokens must be at least 16 characters",
                );
            }
            if token.name.is_empty() {
                return invalid("admin_tokens.name", "must not be empty");
            }
        }
        if self.max_body_bytes < 1024 {
            return invalid("max_body_bytes", "must be at least 1024");
        }
        if self.cache.invalidation_poll.is_zero() {
            return invalid("cache.invalidation_poll", "must be greater than zero");
        }
        if self.cache.l2_timeout.is_zero() {
            return invalid("cache.l2_timeout", "must be greater than zero");
        }
        Ok(())
    }
}
