//! The edge's typed configuration: one TOML file per edge process (`meridian
//! up` writes one per region; a standalone edge is given one by hand),
//! overridden by `MERIDIAN_EDGE__<KEY>` variables, secrets possibly read
//! from files (`<name>_file`), all through the shared loader
//! (`meridian-config`), and validated at load so a bad value is an error
//! naming the file or variable and the field.
//!
//! The same format serves both uses: `upstreams` lists the regions this edge
//! can send requests to, with their origins, countries and latencies. A
//! standalone edge in front of any HTTP origin lists a single region.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use meridian_config::{EnvPrefix, Layer, Loaded};
use meridian_contracts::shopper_token::MIN_SECRET_BYTES;
use serde::{Deserialize, Serialize};

pub use crate::origin_dns::OriginAddress;
pub use meridian_config::{RedisUrl, Secret};
pub use meridian_telemetry::TelemetryConfig;

/// Everything one edge process needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// The region this edge runs in (the default client region).
    pub region: String,
    /// Where shoppers connect (plain HTTP/1.1 and h2c).
    pub listen: SocketAddr,
    /// Metrics, health and purge API.
    pub admin_listen: SocketAddr,
    /// TLS termination (HTTP/1.1 and HTTP/2 by ALPN); optional.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Named bearer tokens accepted by the admin API's write endpoints
    /// (purge): `[{ name = "ops", token = "…" }]` (or `token_file`). The
    /// name says who holds it, so one can be rotated alone.
    pub admin_tokens: Vec<AdminToken>,
    /// Regions this edge can route to; must include `region`.
    pub upstreams: Vec<UpstreamRegion>,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub geo: GeoConfig,
    /// Rate limits per route class; absent classes are unlimited.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Bot scoring; absent = off.
    #[serde(default)]
    pub bots: Option<BotsConfig>,
    /// Shopper tokens (JWT): routes cart, checkout and orders to the
    /// shopper's home region. Without it, every request is anonymous.
    #[serde(default)]
    pub identity: Option<IdentityConfig>,
    /// The regional Redis: purge channel. Optional (purges then come only
    /// through the admin API).
    #[serde(default)]
    pub redis_url: Option<RedisUrl>,
    /// Redis channel the region's origins publish invalidated keys on.
    #[serde(default = "defaults::purge_channel")]
    pub purge_channel: String,
    /// Worker threads of the proxy service.
    #[serde(default = "defaults::threads")]
    pub threads: usize,
    /// Let idle worker threads steal tasks from busy ones. Off by default:
    /// one single-threaded runtime per worker is cheaper per request.
    #[serde(default)]
    pub work_stealing: bool,
    /// Listener write buffer in bytes: responses up to this size leave in
    /// one `send()`.
    #[serde(default = "defaults::write_buffer_bytes")]
    pub write_buffer_bytes: usize,
    /// Add `X-Cache-Key` (the normalised key parts) and keep
    /// `Surrogate-Key` on responses. Development and tests only.
    #[serde(default)]
    pub debug_headers: bool,
    /// Largest request head (target plus header names and values) accepted,
    /// in bytes; larger gets 431.
    #[serde(default = "defaults::max_request_header_bytes")]
    pub max_request_header_bytes: usize,
    /// Most header fields accepted in one request.
    #[serde(default = "defaults::max_request_headers")]
    pub max_request_headers: usize,
    /// Most connections one client address may hold open on the public
    /// listeners at once; more are dropped as they arrive (0: no cap —
    /// for an edge behind a proxy that concentrates clients).
    #[serde(default = "defaults::max_connections_per_address")]
    pub max_connections_per_address: u32,
    /// A request head (a connection's first, or the next one on a kept-alive
    /// connection, from its first byte) must be complete within this; the
    /// connection is closed otherwise.
    #[serde(with = "humantime_serde", default = "defaults::request_head_timeout")]
    pub request_head_timeout: Duration,
    /// Seconds to keep serving in-flight requests on shutdown.
    #[serde(default = "defaults::grace_period")]
    pub grace_period_seconds: u64,
    /// On SIGTERM, how long `/readyz` answers 503 (`draining`) while the
    /// listeners still accept, so load balancers stop sending new
    /// connections before they close; then in-flight requests get
    /// `grace_period_seconds`.
    #[serde(with = "humantime_serde", default = "defaults::drain_delay")]
    pub drain_delay: Duration,
    /// Operating modes: how the edge follows them and what they change.
    #[serde(default)]
    pub modes: ModesConfig,
    /// The waiting room in front of checkout and flash-sale claims; absent
    /// = never queue.
    #[serde(default)]
    pub waiting_room: Option<WaitingRoomConfig>,
    /// Log format and trace export (OTLP/HTTP; off unless an endpoint is
    /// set): `[telemetry]`, see `meridian_telemetry::TelemetryConfig`.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

/// The waiting room (Cloudflare Waiting Room's model).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitingRoomConfig {
    /// Signs the queue tickets and admissions (at least 32 bytes; the same
    /// on every edge of the region).
    pub secret: Secret,
    /// Shoppers in at once, per room.
    pub active_users: u32,
    /// Shoppers let in per minute, per room.
    pub new_users_per_minute: u32,
    /// How long an admission lasts.
    #[serde(with = "humantime_serde", default = "defaults::session_duration")]
    pub session_duration: Duration,
    /// How long an admitted ticket keeps its place for its holder.
    #[serde(with = "humantime_serde", default = "defaults::ticket_grace")]
    pub ticket_grace: Duration,
    /// Queue even when the mode does not ask for it (a planned sale).
    #[serde(default)]
    pub always_on: bool,
    /// How long a sold-out room keeps saying so.
    #[serde(with = "humantime_serde", default = "defaults::sold_out_for")]
    pub sold_out_for: Duration,
    /// Longest a room decision may wait for Redis (then: let through).
    #[serde(with = "humantime_serde", default = "defaults::room_redis_timeout")]
    pub redis_timeout: Duration,
}

/// How the edge follows its region's operating mode, and what the modes
/// do here.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModesConfig {
    /// How often the region's origins are asked (`GET /v1/modes`) even
    /// without an announcement: the backstop.
    #[serde(with = "humantime_serde", default = "defaults::modes_poll_interval")]
    pub poll_interval: Duration,
    /// Where the applied setting is kept across restarts (absent: not
    /// kept; a restarted edge starts `normal` until an origin answers).
    /// Not `state_file`: a key ending in `_file` names a secret's file.
    #[serde(default)]
    pub state_path: Option<PathBuf>,
    /// In `degraded` mode, how long past its freshness a cached response is
    /// still served (while it is revalidated in the background, and
    /// whenever the origins fail), beyond what the origin allowed.
    #[serde(with = "humantime_serde", default = "defaults::degraded_serve_stale")]
    pub degraded_serve_stale: Duration,
    /// `Retry-After` of the maintenance page.
    #[serde(
        with = "humantime_serde",
        default = "defaults::maintenance_retry_after"
    )]
    pub maintenance_retry_after: Duration,
}

impl Default for ModesConfig {
    fn default() -> Self {
        Self {
            poll_interval: defaults::modes_poll_interval(),
            state_path: None,
            degraded_serve_stale: defaults::degraded_serve_stale(),
            maintenance_retry_after: defaults::maintenance_retry_after(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub listen: SocketAddr,
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// A named admin token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    /// Who holds the token (logs name it, never the token).
    pub name: String,
    pub token: Secret,
}

/// One region the edge can send requests to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamRegion {
    pub name: String,
    /// The region's origins, `host:port` each: an IP address, or a DNS
    /// name re-resolved every `health.dns_refresh` (a Kubernetes headless
    /// Service: one address per ready pod).
    pub origins: Vec<OriginAddress>,
    /// Round-trip latency from this edge's region, in ms: failover goes to
    /// the healthy region with the lowest value. The edge's own region is 0.
    #[serde(default)]
    pub latency_ms: u32,
    /// ISO 3166-1 alpha-2 countries whose shoppers this region serves.
    #[serde(default)]
    pub countries: Vec<String>,
    /// This region's row of the latency table (ms to each other region):
    /// orders failover for shoppers located in this region.
    #[serde(default)]
    pub latency_ms_to: BTreeMap<String, u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoConfig {
    /// A CDN's country header (`CF-IPCountry`), believed only from
    /// `trusted_ranges`.
    #[serde(default)]
    pub trusted_header: Option<String>,
    /// Peers (CDN, load balancer) whose country header and
    /// `X-Forwarded-For` are believed.
    #[serde(default)]
    pub trusted_ranges: Vec<ipnet::IpNet>,
    /// A MaxMind-format country database.
    #[serde(default)]
    pub database: Option<PathBuf>,
}

/// A token bucket: `per_second` tokens refill, `burst` at most.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    pub per_second: u32,
    pub burst: u32,
}

/// One route class's buckets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassLimits {
    /// Per client address.
    #[serde(default)]
    pub per_ip: Option<RateConfig>,
    /// Per signed-in user (the token's `sub`).
    #[serde(default)]
    pub per_user: Option<RateConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    #[serde(default)]
    pub browse: Option<ClassLimits>,
    #[serde(default)]
    pub search: Option<ClassLimits>,
    #[serde(default)]
    pub cart: Option<ClassLimits>,
    #[serde(default)]
    pub checkout: Option<ClassLimits>,
    #[serde(default)]
    pub orders: Option<ClassLimits>,
    #[serde(default)]
    pub admin: Option<ClassLimits>,
    /// Throttled clients (bot score) get per-IP buckets this many times
    /// smaller.
    #[serde(default = "defaults::throttle_divisor")]
    pub throttle_divisor: u32,
    /// The region-wide checkout budget (Redis); absent = none.
    #[serde(default)]
    pub checkout_budget: Option<BudgetConfig>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            browse: None,
            search: None,
            cart: None,
            checkout: None,
            orders: None,
            admin: None,
            throttle_divisor: defaults::throttle_divisor(),
            checkout_budget: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// Checkouts per second across every edge of the region.
    pub per_second: u32,
    pub burst: u32,
    /// This edge's own ceiling while Redis is unreachable.
    pub fallback_per_second: u32,
    /// The Redis key of the bucket.
    #[serde(default = "defaults::budget_key")]
    pub key: String,
    /// How long to wait for Redis before using the fallback.
    #[serde(with = "humantime_serde", default = "defaults::budget_timeout")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotsConfig {
    /// Score at which a client is throttled (tighter rate limits).
    #[serde(default = "defaults::throttle_at")]
    pub throttle_at: u32,
    /// Score at which a client must pass the cookie challenge.
    #[serde(default = "defaults::challenge_at")]
    pub challenge_at: u32,
    /// Score at which a client is refused (403).
    #[serde(default = "defaults::block_at")]
    pub block_at: u32,
    /// Signs challenge cookies (at least 32 bytes).
    pub challenge_secret: Secret,
    /// How long a passed challenge lasts.
    #[serde(with = "humantime_serde", default = "defaults::challenge_ttl")]
    pub challenge_ttl: Duration,
    /// Path prefixes where request velocity counts towards the score.
    #[serde(default = "defaults::hot_routes")]
    pub hot_routes: Vec<String>,
    /// Requests per second per address on hot routes beyond which the
    /// score rises.
    #[serde(default = "defaults::hot_route_per_second")]
    pub hot_route_per_second: u64,
    /// Crawlers allowed when both their user agent and network match.
    #[serde(default)]
    pub verified: Vec<VerifiedBot>,
}

impl BotsConfig {
    /// The defaults around the one setting without a default.
    pub fn with_secret(challenge_secret: Secret) -> Self {
        Self {
            throttle_at: defaults::throttle_at(),
            challenge_at: defaults::challenge_at(),
            block_at: defaults::block_at(),
            challenge_secret,
            challenge_ttl: defaults::challenge_ttl(),
            hot_routes: defaults::hot_routes(),
            hot_route_per_second: defaults::hot_route_per_second(),
            verified: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifiedBot {
    pub name: String,
    /// Substring of the user agent (`Googlebot`).
    pub user_agent: String,
    /// Networks the crawler is operated from.
    pub ranges: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Shared HS256 secret (at least 32 bytes).
    #[serde(default)]
    pub hs256_secret: Option<Secret>,
    /// PEM file of the ES256 public key (instead of a secret).
    #[serde(default)]
    pub es256_public_key: Option<PathBuf>,
    /// Cookie that may carry the token instead of `Authorization`.
    #[serde(default = "defaults::session_cookie")]
    pub cookie: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Capacity of the response cache in bytes (bodies and headers).
    #[serde(default = "defaults::cache_max_bytes")]
    pub max_bytes: usize,
    /// Largest single response kept, in bytes.
    #[serde(default = "defaults::cache_max_object_bytes")]
    pub max_object_bytes: usize,
    /// Request headers a response may `Vary` on; a `Vary` naming any other
    /// header makes the response uncacheable (bounded variants).
    #[serde(default = "defaults::vary_allow")]
    pub vary_allow: Vec<String>,
    /// Request headers that make a request skip the cache entirely (the
    /// origin's read-your-writes token). A response may `Vary` on them
    /// without creating variants: requests carrying them never use the
    /// cache.
    #[serde(default = "defaults::bypass_request_headers")]
    pub bypass_request_headers: Vec<String>,
    /// Query parameters dropped from the cache key and from the request sent
    /// upstream; a trailing `*` matches a prefix (`utm_*`).
    #[serde(default = "defaults::ignored_query_params")]
    pub ignored_query_params: Vec<String>,
    /// How long concurrent misses for one key wait for the first fetch.
    #[serde(with = "humantime_serde", default = "defaults::lock_timeout")]
    pub lock_timeout: Duration,
    /// Cookie names that mark a shopper's session: a request carrying one is
    /// never answered from, nor stored in, the shared cache.
    #[serde(default = "defaults::session_cookies")]
    pub session_cookies: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Path probed on every origin.
    #[serde(default = "defaults::health_path")]
    pub path: String,
    /// How often every origin is probed.
    #[serde(with = "humantime_serde", default = "defaults::health_interval")]
    pub interval: Duration,
    /// Timeout for connecting to an origin.
    #[serde(with = "humantime_serde", default = "defaults::connect_timeout")]
    pub connect_timeout: Duration,
    /// Timeout for an origin's response header (after which stale content
    /// may be served instead).
    #[serde(with = "humantime_serde", default = "defaults::read_timeout")]
    pub read_timeout: Duration,
    /// How often origins named by DNS are resolved again (pods come and go).
    #[serde(with = "humantime_serde", default = "defaults::dns_refresh")]
    pub dns_refresh: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_bytes: defaults::cache_max_bytes(),
            max_object_bytes: defaults::cache_max_object_bytes(),
            vary_allow: defaults::vary_allow(),
            bypass_request_headers: defaults::bypass_request_headers(),
            ignored_query_params: defaults::ignored_query_params(),
            lock_timeout: defaults::lock_timeout(),
            session_cookies: defaults::session_cookies(),
        }
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            path: defaults::health_path(),
            interval: defaults::health_interval(),
            connect_timeout: defaults::connect_timeout(),
            read_timeout: defaults::read_timeout(),
            dns_refresh: defaults::dns_refresh(),
        }
    }
}

mod defaults {
    use std::time::Duration;

    pub fn session_duration() -> Duration {
        Duration::from_secs(300)
    }

    pub fn ticket_grace() -> Duration {
        Duration::from_secs(60)
    }

    pub fn sold_out_for() -> Duration {
        Duration::from_secs(3600)
    }

    pub fn room_redis_timeout() -> Duration {
        Duration::from_millis(250)
    }

    pub fn modes_poll_interval() -> Duration {
        Duration::from_secs(5)
    }

    pub fn degraded_serve_stale() -> Duration {
        Duration::from_secs(3600)
    }

    pub fn maintenance_retry_after() -> Duration {
        Duration::from_secs(300)
    }

    pub fn purge_channel() -> String {
        "meridian:invalidations".into()
    }
    pub fn threads() -> usize {
        2
    }
    pub fn max_request_header_bytes() -> usize {
        32 * 1024
    }
    pub fn max_request_headers() -> usize {
        100
    }
    pub fn max_connections_per_address() -> u32 {
        512
    }
    pub fn request_head_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn write_buffer_bytes() -> usize {
        16 * 1024
    }
    pub fn drain_delay() -> Duration {
        Duration::from_secs(5)
    }
    pub fn grace_period() -> u64 {
        5
    }
    pub fn cache_max_bytes() -> usize {
        256 * 1024 * 1024
    }
    pub fn cache_max_object_bytes() -> usize {
        8 * 1024 * 1024
    }
    pub fn vary_allow() -> Vec<String> {
        vec!["accept-encoding".into(), "accept-language".into()]
    }
    pub fn bypass_request_headers() -> Vec<String> {
        vec!["x-meridian-lsn".into()]
    }
    pub fn ignored_query_params() -> Vec<String> {
        ["utm_*", "gclid", "fbclid", "msclkid", "mc_cid", "mc_eid"]
            .into_iter()
            .map(String::from)
            .collect()
    }
    pub fn lock_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn throttle_divisor() -> u32 {
        4
    }
    pub fn budget_key() -> String {
        "meridian:budget:checkout".into()
    }
    pub fn budget_timeout() -> Duration {
        Duration::from_millis(50)
    }
    pub fn throttle_at() -> u32 {
        30
    }
    pub fn challenge_at() -> u32 {
        50
    }
    pub fn block_at() -> u32 {
        80
    }
    pub fn challenge_ttl() -> Duration {
        Duration::from_secs(30 * 60)
    }
    pub fn hot_routes() -> Vec<String> {
        ["/v1/products", "/v1/search", "/v1/flash-sales"]
            .into_iter()
            .map(String::from)
            .collect()
    }
    pub fn hot_route_per_second() -> u64 {
        20
    }
    pub fn session_cookie() -> String {
        meridian_contracts::shopper_token::SESSION_COOKIE.into()
    }
    pub fn session_cookies() -> Vec<String> {
        vec![
            meridian_contracts::shopper_token::SESSION_COOKIE.into(),
            "meridian_cart".into(),
        ]
    }
    pub fn health_path() -> String {
        "/healthz".into()
    }
    pub fn health_interval() -> Duration {
        Duration::from_millis(500)
    }
    pub fn connect_timeout() -> Duration {
        Duration::from_millis(500)
    }
    pub fn read_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn dns_refresh() -> Duration {
        Duration::from_secs(5)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file, the environment or a secret file could not be read, or a
    /// value does not fit its field.
    #[error(transparent)]
    Load(#[from] meridian_config::LoadError),
    /// A rule of `validate()` broken; `layer` names the file or variable
    /// the field came from, when the config was loaded.
    #[error("{}edge config: field `{field}`: {problem}", in_layer(.layer))]
    Invalid {
        field: String,
        problem: String,
        layer: Option<Layer>,
    },
}

fn in_layer(layer: &Option<Layer>) -> String {
    layer.as_ref().map(|l| format!("{l}: ")).unwrap_or_default()
}

impl EdgeConfig {
    /// Reads the file, applies the `MERIDIAN_EDGE__…` variables and the
    /// `*_file` secrets (the shared loader), and validates the result.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let Loaded { config, provenance } =
            meridian_config::load::<EdgeConfig>(path, EnvPrefix::EDGE)?;
        config.validate().map_err(|error| match error {
            ConfigError::Invalid { field, problem, .. } => ConfigError::Invalid {
                layer: Some(provenance.layer_of(&field)),
                field,
                problem,
            },
            other => other,
        })?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &str, problem: String| {
            Err(ConfigError::Invalid {
                field: field.to_string(),
                problem,
                layer: None,
            })
        };
        if self.region.is_empty() {
            return invalid("region", "must not be empty".into());
        }
        if let Err(broken) = self.telemetry.validate() {
            return invalid(broken.field, broken.problem.into());
        }
        if self
            .admin_tokens
            .iter()
            .any(|t| t.token.expose().len() < 16)
        {
            return invalid(
                "admin_tokens.token",
                "every token must be at least 16 characters".into(),
            );
        }
        for (i, token) in self.admin_tokens.iter().enumerate() {
            if token.name.is_empty() || self.admin_tokens[..i].iter().any(|t| t.name == token.name)
            {
                return invalid(
                    "admin_tokens.name",
                    "names must be unique and non-empty".into(),
                );
            }
        }
        if self.health.dns_refresh < Duration::from_millis(100) {
            return invalid("health.dns_refresh", "must be at least 100ms".into());
        }
        if self.upstreams.is_empty() {
            return invalid("upstreams", "list at least one region".into());
        }
        if let Some(room) = &self.waiting_room {
            if room.secret.expose().len() < 32 {
                return invalid("waiting_room.secret", "must be at least 32 bytes".into());
            }
            if room.active_users == 0 || room.new_users_per_minute == 0 {
                return invalid(
                    "waiting_room",
                    "active_users and new_users_per_minute must be at least 1".into(),
                );
            }
            if room.session_duration.is_zero() || room.ticket_grace.is_zero() {
                return invalid(
                    "waiting_room",
                    "session_duration and ticket_grace must be greater than zero".into(),
                );
            }
        }
        if self.modes.poll_interval.is_zero() {
            return invalid("modes.poll_interval", "must be greater than zero".into());
        }
        if self.modes.degraded_serve_stale > Duration::from_secs(7 * 86_400) {
            return invalid(
                "modes.degraded_serve_stale",
                "must be at most 7 days".into(),
            );
        }
        let retry = self.modes.maintenance_retry_after;
        if retry.is_zero() || retry > Duration::from_secs(86_400) {
            return invalid(
                "modes.maintenance_retry_after",
                "must be from 1 s to 1 day".into(),
            );
        }
        let mut seen = BTreeMap::new();
        for (i, upstream) in self.upstreams.iter().enumerate() {
            if upstream.origins.is_empty() {
                return invalid(
                    &format!("upstreams[{i}].origins"),
                    format!("region `{}` lists no origin", upstream.name),
                );
            }
            if seen.insert(upstream.name.as_str(), i).is_some() {
                return invalid(
                    &format!("upstreams[{i}].name"),
                    format!("region `{}` is listed twice", upstream.name),
                );
            }
        }
        if !seen.contains_key(self.region.as_str()) {
            return invalid(
                "upstreams",
                format!("must include the edge's own region `{}`", self.region),
            );
        }
        if !(1024..=1024 * 1024).contains(&self.max_request_header_bytes) {
            return invalid(
                "max_request_header_bytes",
                "must be between 1 KiB and 1 MiB".into(),
            );
        }
        if !(8..=256).contains(&self.max_request_headers) {
            return invalid("max_request_headers", "must be between 8 and 256".into());
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(60))
            .contains(&self.request_head_timeout)
        {
            return invalid(
                "request_head_timeout",
                "must be between 100ms and 60s".into(),
            );
        }
        if self.drain_delay > Duration::from_secs(300) {
            return invalid("drain_delay", "must be at most 5m".into());
        }
        if !(1460..=1024 * 1024).contains(&self.write_buffer_bytes) {
            return invalid(
                "write_buffer_bytes",
                "must be between 1460 and 1048576".into(),
            );
        }
        if self.threads == 0 || self.threads > 256 {
            return invalid("threads", "must be between 1 and 256".into());
        }
        if self.cache.max_object_bytes == 0 || self.cache.max_object_bytes > self.cache.max_bytes {
            return invalid(
                "cache.max_object_bytes",
                "must be between 1 and cache.max_bytes".into(),
            );
        }
        if let Some(bad) = self
            .cache
            .vary_allow
            .iter()
            .chain(&self.cache.bypass_request_headers)
            .find(|h| http::HeaderName::from_bytes(h.as_bytes()).is_err())
        {
            return invalid("cache.vary_allow", format!("`{bad}` is not a header name"));
        }
        for (i, upstream) in self.upstreams.iter().enumerate() {
            if let Some(bad) = upstream
                .countries
                .iter()
                .find(|c| c.len() != 2 || !c.chars().all(|ch| ch.is_ascii_alphabetic()))
            {
                return invalid(
                    &format!("upstreams[{i}].countries"),
                    format!("`{bad}` is not an ISO 3166-1 alpha-2 code"),
                );
            }
        }
        if let Some(header) = &self.geo.trusted_header
            && http::HeaderName::from_bytes(header.as_bytes()).is_err()
        {
            return invalid(
                "geo.trusted_header",
                format!("`{header}` is not a header name"),
            );
        }
        if self.geo.trusted_header.is_some() && self.geo.trusted_ranges.is_empty() {
            return invalid(
                "geo.trusted_ranges",
                "a trusted header needs the ranges it may come from".into(),
            );
        }
        if let Some(path) = &self.geo.database
            && !path.is_file()
        {
            return invalid(
                "geo.database",
                format!("{} is not a readable file", path.display()),
            );
        }
        let classes = [
            ("browse", &self.limits.browse),
            ("search", &self.limits.search),
            ("cart", &self.limits.cart),
            ("checkout", &self.limits.checkout),
            ("orders", &self.limits.orders),
            ("admin", &self.limits.admin),
        ];
        for (class, limits) in classes {
            let Some(limits) = limits else { continue };
            for (scope, rate) in [("per_ip", &limits.per_ip), ("per_user", &limits.per_user)] {
                if let Some(rate) = rate
                    && (rate.per_second == 0 || rate.burst == 0)
                {
                    return invalid(
                        &format!("limits.{class}.{scope}"),
                        "per_second and burst must be at least 1".into(),
                    );
                }
            }
        }
        if self.limits.throttle_divisor == 0 {
            return invalid("limits.throttle_divisor", "must be at least 1".into());
        }
        if let Some(budget) = &self.limits.checkout_budget
            && (budget.per_second == 0 || budget.burst == 0 || budget.fallback_per_second == 0)
        {
            return invalid(
                "limits.checkout_budget",
                "per_second, burst and fallback_per_second must be at least 1".into(),
            );
        }
        if let Some(bots) = &self.bots {
            if bots.challenge_secret.expose().len() < 32 {
                return invalid("bots.challenge_secret", "must be at least 32 bytes".into());
            }
            if !(bots.throttle_at <= bots.challenge_at && bots.challenge_at <= bots.block_at) {
                return invalid(
                    "bots",
                    "thresholds must satisfy throttle_at <= challenge_at <= block_at".into(),
                );
            }
        }
        if let Some(identity) = &self.identity {
            match (&identity.hs256_secret, &identity.es256_public_key) {
                (Some(secret), None) if secret.expose().len() >= MIN_SECRET_BYTES => {}
                (Some(_), None) => {
                    return invalid(
                        "identity.hs256_secret",
                        format!("must be at least {MIN_SECRET_BYTES} bytes"),
                    );
                }
                (None, Some(path)) if path.is_file() => {}
                (None, Some(path)) => {
                    return invalid(
                        "identity.es256_public_key",
                        format!("{} is not a readable file", path.display()),
                    );
                }
                _ => {
                    return invalid(
                        "identity",
                        "set exactly one of hs256_secret and es256_public_key".into(),
                    );
                }
            }
        }
        if !self.health.path.starts_with('/') {
            return invalid("health.path", "must start with `/`".into());
        }
        if self.health.interval < Duration::from_millis(50) {
            return invalid("health.interval", "must be at least 50ms".into());
        }
        if let Some(tls) = &self.tls {
            for (field, path) in [("tls.cert", &tls.cert), ("tls.key", &tls.key)] {
                if !path.is_file() {
                    return invalid(field, format!("{} is not a readable file", path.display()));
                }
            }
        }
        Ok(())
    }

    /// Upstream regions ordered for failover: own region first, then by
    /// latency (ties by name, so the order is stable).
    pub fn failover_order(&self) -> Vec<&UpstreamRegion> {
        let mut regions: Vec<&UpstreamRegion> = self.upstreams.iter().collect();
        regions.sort_by_key(|r| (r.name != self.region, r.latency_ms, r.name.clone()));
        regions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> EdgeConfig {
        toml::from_str(
            r#"
            region = "eu-west"
            listen = "127.0.0.1:8200"
            admin_listen = "127.0.0.1:9200"
            admin_tokens = [{ name = "ops", token = "0123456789abcdef" }]
            [[upstreams]]
            name = "us-east"
            origins = ["127.0.0.1:8110"]
            latency_ms = 80
            [[upstreams]]
            name = "eu-west"
            origins = ["127.0.0.1:8210"]
            [[upstreams]]
            name = "ap-southeast"
            origins = ["127.0.0.1:8310"]
            latency_ms = 160
            "#,
        )
        .unwrap()
    }

    #[test]
    fn sample_is_valid_and_orders_failover_by_latency() {
        let config = sample();
        config.validate().unwrap();
        let order: Vec<&str> = config
            .failover_order()
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(order, ["eu-west", "us-east", "ap-southeast"]);
    }

    #[test]
    fn own_region_must_be_an_upstream() {
        let mut config = sample();
        config.region = "moon".into();
        let error = config.validate().unwrap_err().to_string();
        assert!(
            error.contains("upstreams") && error.contains("moon"),
            "{error}"
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let error = toml::from_str::<EdgeConfig>("region = \"x\"\ncolour = 1").unwrap_err();
        assert!(error.to_string().contains("colour"), "{error}");
    }
}
