//! Local origin configuration: the one place that turns a topology region
//! plus the servers a [`LocalStack`] started into an [`OriginConfig`].

use std::net::SocketAddr;

use meridian_origin::config::{
    AdminToken, CacheConfig, DatabaseConfig, OriginConfig, ReplicaConfig,
};
use meridian_topology::Region;

use crate::launcher::{CATALOG_DATABASE, LocalStack};

/// The admin token's holder name in the local stack.
pub const LOCAL_ADMIN: &str = "local-admin";

/// An origin config for `region`, listening on `listen`, using the stack's
/// primary and the region's replicas and Redis.
pub fn origin_config(
    stack: &LocalStack,
    region: &Region,
    listen: SocketAddr,
    admin_token: &str,
) -> OriginConfig {
    let servers = stack.region(&region.name);
    let replicas = servers
        .map(|s| {
            s.replicas
                .iter()
                .map(|r| ReplicaConfig {
                    name: r.name().to_string(),
                    url: r.url(CATALOG_DATABASE),
                })
                .collect()
        })
        .unwrap_or_default();
    OriginConfig {
        region: region.name.clone(),
        listen,
        database: DatabaseConfig {
            primary_url: stack.primary_url(),
            replicas,
            lag_tolerance: region.replica_lag_tolerance,
            lag_probe_interval: std::time::Duration::from_millis(50),
            pool_size: 16,
            acquire_timeout: std::time::Duration::from_secs(2),
        },
        redis_url: servers.map(|s| s.redis.url()),
        cache: CacheConfig::default(),
        admin_tokens: vec![AdminToken {
            name: LOCAL_ADMIN.to_string(),
            token: admin_token.to_string(),
        }],
        max_body_bytes: 64 * 1024,
        // A local stack is for development: show which tier answered.
        debug_headers: true,
    }
}
