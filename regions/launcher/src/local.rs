//! Local configuration: the one place that turns a topology region plus the
//! servers a [`LocalStack`] started into an [`OriginConfig`] or an
//! [`EdgeConfig`]. Secrets and URLs go in typed (`meridian-config`), so a
//! bad one is an error here, not in the process that reads the file.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use meridian_config::{RedisUrl, Secret, ValueError};

use meridian_edge::config::{
    BotsConfig, BudgetConfig, ClassLimits, EdgeConfig, GeoConfig, IdentityConfig, LimitsConfig,
    RateConfig, TlsConfig, UpstreamRegion, VerifiedBot,
};

use meridian_origin::config::{
    AdminScope, AdminToken, CacheConfig, CartConfig, CheckoutConfig, DatabaseConfig,
    InventoryConfig, ModesConfig, OrderShardConfig, OrdersConfig, OriginConfig, PaymentsConfig,
    PspConfig, ReplicaConfig, ShoppersConfig,
};
use meridian_topology::{Region, Topology};

use crate::{CATALOG_DATABASE, LaunchError, LocalStack};

/// `value` as a [`Secret`] for `field`.
fn secret(field: &'static str, value: &str) -> Result<Secret, LaunchError> {
    Secret::new(value).map_err(|source| LaunchError::Config { field, source })
}

/// Parses `value` as `T` (a URL type) for `field`.
fn url<T>(field: &'static str, value: &str) -> Result<T, LaunchError>
where
    T: std::str::FromStr<Err = ValueError>,
{
    value
        .parse()
        .map_err(|source| LaunchError::Config { field, source })
}

/// The admin token's holder name in the local stack.
pub const LOCAL_ADMIN: &str = "local-admin";

/// An origin config for `region`, listening on `listen`, using the stack's
/// primary, the region's replicas, Redis and order shards, and the payment
/// providers `psps` (in order of preference).
pub fn origin_config(
    stack: &LocalStack,
    region: &Region,
    listen: SocketAddr,
    secrets: &LocalSecrets,
    psps: &[PspConfig],
) -> Result<OriginConfig, LaunchError> {
    let servers = stack.region(&region.name);
    let replicas = servers
        .map(|s| {
            s.replicas
                .iter()
                .map(|r| {
                    Ok(ReplicaConfig {
                        name: r.name().to_string(),
                        url: url("database.replicas.url", &r.url(CATALOG_DATABASE))?,
                    })
                })
                .collect::<Result<Vec<_>, LaunchError>>()
        })
        .transpose()?
        .unwrap_or_default();
    let orders = match servers.and_then(|s| s.orders.as_ref()) {
        Some(servers) => {
            let mut shards = Vec::new();
            for shard in &region.orders.shards {
                let Some(shard_url) = servers.url(&shard.name) else {
                    continue;
                };
                shards.push(OrderShardConfig {
                    name: shard.name.clone(),
                    url: url("orders.shards.url", &shard_url)?,
                    buckets: shard.buckets.clone(),
                });
            }
            Some(OrdersConfig {
                buckets: region.orders.buckets,
                shards,
                pool_size: 8,
            })
        }
        None => None,
    };
    Ok(OriginConfig {
        region: region.name.clone(),
        listen,
        // A free port by default; `meridian up` sets the topology's.
        internal_listen: SocketAddr::new(listen.ip(), 0),
        request_head_timeout: std::time::Duration::from_secs(5),
        // A laptop has no load balancer to drain from.
        drain_delay: std::time::Duration::ZERO,
        database: DatabaseConfig {
            primary_url: url("database.primary_url", &stack.primary_url())?,
            replicas,
            lag_tolerance: region.replica_lag_tolerance,
            lag_probe_interval: std::time::Duration::from_millis(50),
            pool_size: 16,
            acquire_timeout: std::time::Duration::from_secs(2),
            statement_timeout: std::time::Duration::from_secs(5),
            lock_timeout: std::time::Duration::from_secs(2),
        },
        redis_url: servers
            .map(|s| url::<RedisUrl>("redis_url", &s.redis.url()))
            .transpose()?,
        cache: CacheConfig::default(),
        admin_tokens: vec![AdminToken {
            name: LOCAL_ADMIN.to_string(),
            token: secret("admin_tokens.token", &secrets.admin_token)?,
            scopes: AdminScope::all(),
        }],
        max_body_bytes: 64 * 1024,
        // A local stack is for development: show which tier answered.
        debug_headers: true,
        shoppers: ShoppersConfig {
            hs256_secret: Some(secret("shoppers.hs256_secret", &secrets.jwt_secret)?),
            es256_public_key: None,
            guest_cookie_secret: secret(
                "shoppers.guest_cookie_secret",
                &secrets.guest_cookie_secret,
            )?,
        },
        carts: CartConfig::default(),
        inventory: InventoryConfig::default(),
        orders,
        payments: (!psps.is_empty()).then(|| PaymentsConfig {
            providers: psps.to_vec(),
            request_timeout: std::time::Duration::from_secs(2),
            retries: 2,
            backoff: std::time::Duration::from_millis(20),
            breaker_failures: 5,
            breaker_open_for: std::time::Duration::from_secs(5),
        }),
        checkout: CheckoutConfig::default(),
        modes: ModesConfig {
            regions: stack.regions.keys().cloned().collect(),
            ..ModesConfig::default()
        },
        // One process does everything on a laptop.
        admin_api: true,
        background_workers: true,
        telemetry: Default::default(),
    })
}

/// Where one region's edge listens.
#[derive(Debug, Clone)]
pub struct EdgeAddrs {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub tls: Option<TlsConfig>,
}

/// Secrets and files shared by every origin and edge of a local stack.
#[derive(Debug, Clone)]
pub struct LocalSecrets {
    pub admin_token: String,
    /// Signs shopper tokens (HS256).
    pub jwt_secret: String,
    /// Signs guest-cart cookies (origins).
    pub guest_cookie_secret: String,
    /// Signs bot-challenge cookies.
    pub challenge_secret: String,
    /// A MaxMind-format country database, when one is installed.
    pub geo_database: Option<std::path::PathBuf>,
}

impl LocalSecrets {
    /// Fresh random secrets around `admin_token` (one set per `up`).
    pub fn random(admin_token: String, geo_database: Option<std::path::PathBuf>) -> Self {
        let secret = || {
            format!(
                "{:032x}{:032x}",
                rand::random::<u128>(),
                rand::random::<u128>()
            )
        };
        LocalSecrets {
            admin_token,
            jwt_secret: secret(),
            guest_cookie_secret: secret(),
            challenge_secret: secret(),
            geo_database,
        }
    }
}

/// Where `.ci/install-deps` puts the CC0 country database
/// (ip-location-db, MaxMind format), relative to the repository root.
pub const GEO_DATABASE: &str = ".meridian/geo/geo-whois-asn-country.mmdb";

/// The local stack's rate limits: generous for one developer, but real.
fn local_limits() -> LimitsConfig {
    let rate = |per_second, burst| Some(RateConfig { per_second, burst });
    let class = |ip: Option<RateConfig>, user: Option<RateConfig>| {
        Some(ClassLimits {
            per_ip: ip,
            per_user: user,
        })
    };
    LimitsConfig {
        browse: class(rate(500, 1000), None),
        search: class(rate(100, 200), None),
        cart: class(rate(20, 40), rate(20, 40)),
        checkout: class(rate(5, 10), rate(5, 10)),
        orders: class(rate(20, 40), rate(20, 40)),
        admin: class(rate(50, 100), None),
        throttle_divisor: 4,
        checkout_budget: Some(BudgetConfig {
            per_second: 50,
            burst: 100,
            fallback_per_second: 20,
            key: "meridian:budget:checkout".into(),
            timeout: std::time::Duration::from_millis(50),
        }),
    }
}

/// An edge config for `region`: every region with a running origin (in
/// `origins`) is an upstream, with the topology's latency from `region`.
pub fn edge_config(
    topology: &Topology,
    region: &Region,
    origins: &BTreeMap<String, SocketAddr>,
    addrs: EdgeAddrs,
    redis_url: Option<String>,
    secrets: &LocalSecrets,
) -> Result<EdgeConfig, LaunchError> {
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
                origins: vec![(*origin).into()],
                latency_ms,
                countries: other.countries.clone(),
                latency_ms_to: other.latency_ms.clone().into_iter().collect(),
            })
        })
        .collect();
    Ok(EdgeConfig {
        region: region.name.clone(),
        listen: addrs.listen,
        admin_listen: addrs.admin,
        tls: addrs.tls,
        admin_tokens: vec![meridian_edge::config::AdminToken {
            name: LOCAL_ADMIN.to_string(),
            token: secret("admin_tokens.token", &secrets.admin_token)?,
        }],
        upstreams,
        cache: Default::default(),
        health: Default::default(),
        // A developer can pretend to be elsewhere: `-H 'CF-IPCountry: DE'`.
        geo: GeoConfig {
            trusted_header: Some("cf-ipcountry".into()),
            trusted_ranges: ["127.0.0.0/8"]
                .iter()
                .filter_map(|r| r.parse().ok())
                .collect(),
            database: secrets.geo_database.clone(),
        },
        limits: local_limits(),
        // Scores every request, but only challenges or blocks obvious
        // automation, so `curl` against the local stack still works
        // (throttled).
        bots: Some(BotsConfig {
            throttle_at: 50,
            challenge_at: 90,
            block_at: 110,
            verified: vec![VerifiedBot {
                name: "googlebot".into(),
                user_agent: "Googlebot".into(),
                ranges: ["66.249.64.0/19"]
                    .iter()
                    .filter_map(|r| r.parse().ok())
                    .collect(),
            }],
            ..BotsConfig::with_secret(secret("bots.challenge_secret", &secrets.challenge_secret)?)
        }),
        identity: Some(IdentityConfig {
            hs256_secret: Some(secret("identity.hs256_secret", &secrets.jwt_secret)?),
            es256_public_key: None,
            cookie: meridian_contracts::shopper_token::SESSION_COOKIE.into(),
        }),
        redis_url: redis_url
            .map(|u| url::<RedisUrl>("redis_url", &u))
            .transpose()?,
        purge_channel: meridian_contracts::invalidation::CHANNEL.to_string(),
        threads: 1,
        work_stealing: false,
        write_buffer_bytes: 16 * 1024,
        max_request_header_bytes: 32 * 1024,
        max_request_headers: 100,
        max_connections_per_address: 512,
        request_head_timeout: std::time::Duration::from_secs(5),
        // A local stack is for development: show the cache key parts.
        debug_headers: true,
        grace_period_seconds: 1,
        // A laptop has no load balancer to drain from.
        drain_delay: std::time::Duration::ZERO,
        modes: Default::default(),
        // Queues checkout and flash claims in `degraded` mode (the feature
        // `checkout-queueing`), sized for a laptop.
        waiting_room: Some(meridian_edge::config::WaitingRoomConfig {
            secret: secret(
                "waiting_room.secret",
                &format!("waiting-room:{}", secrets.challenge_secret),
            )?,
            active_users: 200,
            new_users_per_minute: 600,
            session_duration: std::time::Duration::from_secs(300),
            ticket_grace: std::time::Duration::from_secs(60),
            always_on: false,
            sold_out_for: std::time::Duration::from_secs(3600),
            redis_timeout: std::time::Duration::from_millis(250),
        }),
        telemetry: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    /// The local stack runs edges and origins on their defaults: an edge
    /// waits for an origin's answer longer than a checkout may take, so a
    /// shopper never gets a 504 for an order that completes (past its
    /// deadline the origin answers 202 with the order's Location).
    #[test]
    fn edges_wait_longer_than_a_checkout_may_take() {
        let edge = meridian_edge::config::HealthConfig::default().read_timeout;
        let checkout = meridian_origin::config::CheckoutConfig::default().deadline;
        assert!(edge > checkout, "edge {edge:?} vs checkout {checkout:?}");
    }
}
