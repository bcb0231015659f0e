//! Local configuration: the one place that turns a topology region plus the
//! servers a [`LocalStack`] started into an [`OriginConfig`] or an
//! [`EdgeConfig`].

use std::collections::BTreeMap;
use std::net::SocketAddr;

use meridian_edge::config::{EdgeConfig, TlsConfig, UpstreamRegion};

use meridian_origin::config::{
    AdminToken, CacheConfig, DatabaseConfig, OriginConfig, ReplicaConfig,
};
use meridian_topology::{Region, Topology};

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

/// Where one region's edge listens.
#[derive(Debug, Clone)]
pub struct EdgeAddrs {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub tls: Option<TlsConfig>,
}

/// An edge config for `region`: every region with a running origin (in
/// `origins`) is an upstream, with the topology's latency from `region`.
pub fn edge_config(
    topology: &Topology,
    region: &Region,
    origins: &BTreeMap<String, SocketAddr>,
    addrs: EdgeAddrs,
    redis_url: Option<String>,
    admin_token: &str,
) -> EdgeConfig {
    let upstreams = topology
        .regions()
        .filter_map(|other| {
            let origin = origins.get(&other.name)?;
            let latency_ms = if other.name == region.name {
                0
            } else {
                region
                    .latency_ms
                    .get(&other.name)
                    .copied()
                    .unwrap_or(u32::MAX)
            };
            Some(UpstreamRegion {
                name: other.name.clone(),
                origins: vec![*origin],
                latency_ms,
            })
        })
        .collect();
    EdgeConfig {
        region: region.name.clone(),
        listen: addrs.listen,
        admin_listen: addrs.admin,
        tls: addrs.tls,
        admin_tokens: vec![admin_token.to_string()],
        upstreams,
        cache: Default::default(),
        health: Default::default(),
        redis_url,
        purge_channel: meridian_topology::invalidation::CHANNEL.to_string(),
        threads: 1,
        max_request_header_bytes: 32 * 1024,
        max_request_headers: 100,
        // A local stack is for development: show the cache key parts.
        debug_headers: true,
        grace_period_seconds: 1,
    }
}
