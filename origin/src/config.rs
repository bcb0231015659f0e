//! The origin's typed configuration: one TOML file (the `meridian` CLI
//! writes one per region), overridden by `MERIDIAN_ORIGIN__<KEY>`
//! variables, secrets possibly read from files (`<name>_file`), all through
//! the shared loader (`meridian-config`), and validated at load: a bad value
//! is an error naming the file or variable and the field, never a panic
//! later.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use meridian_config::{EnvPrefix, Layer, Loaded};
use meridian_topology::shard_map::{ShardMap, ShardMapError};
use serde::{Deserialize, Serialize};

pub use meridian_config::{HttpUrl, PostgresUrl, RedisUrl, Secret};
pub use meridian_telemetry::TelemetryConfig;

/// Everything one origin process needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginConfig {
    /// The region this origin serves (`X-Served-By-Region`, metrics).
    pub region: String,
    /// Where shoppers' requests arrive (through the edges); port 0 picks a
    /// free port (tests).
    pub listen: SocketAddr,
    /// The internal listener: the admin API, `/metrics`, `/readyz`. Never
    /// behind the public edge; reachable by operators and Prometheus.
    pub internal_listen: SocketAddr,
    /// Longest a client may take to send a request head (both listeners):
    /// half-sent heads cannot hold connections for long.
    #[serde(with = "humantime_serde", default = "defaults::request_head_timeout")]
    pub request_head_timeout: Duration,
    /// On a stop (SIGTERM), how long `/readyz` answers 503 (`draining`)
    /// while both listeners keep serving, so load balancers and edges stop
    /// sending before they close; then open requests finish.
    #[serde(with = "humantime_serde", default = "defaults::drain_delay")]
    pub drain_delay: Duration,
    pub database: DatabaseConfig,
    /// The regional Redis (L2 cache, invalidation channel). Optional: without
    /// it the origin runs on L1 and the database alone.
    #[serde(default)]
    pub redis_url: Option<RedisUrl>,
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
    /// How shoppers are identified (tokens, guest cookies).
    pub shoppers: ShoppersConfig,
    #[serde(default)]
    pub carts: CartConfig,
    #[serde(default)]
    pub inventory: InventoryConfig,
    /// This region's order-shard databases. Without it, orders and
    /// checkout answer 503.
    #[serde(default)]
    pub orders: Option<OrdersConfig>,
    /// The payment providers. Without them, checkout answers 503.
    #[serde(default)]
    pub payments: Option<PaymentsConfig>,
    #[serde(default)]
    pub checkout: CheckoutConfig,
    #[serde(default)]
    pub modes: ModesConfig,
    /// Serve the admin API on the internal listener (`/metrics`,
    /// `/healthz`, `/readyz` are always there). Off on the roles that serve
    /// shoppers or run workers, so their pods answer no admin request.
    #[serde(default = "defaults::on")]
    pub admin_api: bool,
    /// Run the background workers: the reservation sweeper, the inventory
    /// reconciliation, the checkout recovery worker and the flash-claim
    /// workers. Each is safe to run in any number of processes (`FOR
    /// UPDATE SKIP LOCKED`, a read-only check, a Redis consumer group), so
    /// none is a singleton; a deployment runs them in a role of
    /// their own. The invalidation tailer, the mode watcher and the lag
    /// probe always run: every process needs them.
    #[serde(default = "defaults::on")]
    pub background_workers: bool,
    /// Log format and trace export (OTLP/HTTP; off unless an endpoint is
    /// set): `[telemetry]`, see `meridian_telemetry::TelemetryConfig`.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

/// Operating modes (`/v1/admin/modes`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModesConfig {
    /// The regions an admin may set a mode for (the topology's); empty:
    /// any well-formed region name.
    #[serde(default)]
    pub regions: Vec<String>,
    /// How often the mode table is read even without a change announced
    /// (the backstop behind the invalidation log and the Redis channel).
    #[serde(with = "humantime_serde", default = "defaults::modes_poll_interval")]
    pub poll_interval: Duration,
    /// The `Retry-After` of a write refused in `read-only` or
    /// `maintenance` mode (a guess at how long such a mode lasts).
    #[serde(with = "humantime_serde", default = "defaults::modes_retry_after")]
    pub retry_after: Duration,
}

impl Default for ModesConfig {
    fn default() -> Self {
        ModesConfig {
            regions: Vec::new(),
            poll_interval: defaults::modes_poll_interval(),
            retry_after: defaults::modes_retry_after(),
        }
    }
}

/// Payment providers, in order of preference: the next one is used while
/// the one before it has its circuit breaker open.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentsConfig {
    pub providers: Vec<PspConfig>,
    /// Longest one PSP request may take; past it, the outcome is unknown
    /// and is looked up by idempotency key.
    #[serde(with = "humantime_serde", default = "defaults::psp_timeout")]
    pub request_timeout: Duration,
    /// Retries of a request the PSP refused without doing anything
    /// (exponential backoff with jitter).
    #[serde(default = "defaults::psp_retries")]
    pub retries: usize,
    /// First retry delay; doubles per retry.
    #[serde(with = "humantime_serde", default = "defaults::psp_backoff")]
    pub backoff: Duration,
    /// Consecutive failures that open a provider's circuit breaker.
    #[serde(default = "defaults::breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open breaker refuses calls before letting one through.
    #[serde(with = "humantime_serde", default = "defaults::breaker_open_for")]
    pub breaker_open_for: Duration,
}

impl PaymentsConfig {
    /// The longest a checkout's payment steps can take: every provider
    /// tried with all its retries, one look-up, then the capture — each
    /// operation `(retries + 1)` requests of `request_timeout` plus the
    /// backoff between them.
    pub fn worst_case(&self) -> Duration {
        let attempts = u32::try_from(self.retries + 1).unwrap_or(u32::MAX);
        let backoff: Duration = (0..self.retries)
            .map(|i| (self.backoff * 2u32.saturating_pow(i as u32)).min(self.backoff * 16))
            .sum();
        let operation = self.request_timeout.saturating_mul(attempts) + backoff;
        let operations = u32::try_from(self.providers.len() + 2).unwrap_or(u32::MAX);
        operation.saturating_mul(operations)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PspConfig {
    /// Names the provider in orders, metrics and logs (`primary`).
    pub name: String,
    /// Base URL of its API.
    pub url: HttpUrl,
}

/// The checkout saga.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckoutConfig {
    /// How long a repeated request waits for the first one with the same
    /// Idempotency-Key before answering 409.
    #[serde(with = "humantime_serde", default = "defaults::duplicate_wait")]
    pub duplicate_wait: Duration,
    /// An unfinished order untouched this long is taken over by the
    /// recovery worker (resumed or compensated).
    #[serde(with = "humantime_serde", default = "defaults::recover_after")]
    pub recover_after: Duration,
    /// How often the recovery worker looks.
    #[serde(with = "humantime_serde", default = "defaults::recovery_interval")]
    pub recovery_interval: Duration,
    /// Longest `POST /v1/checkout` keeps the shopper waiting: past it the
    /// answer is `202 Accepted` with the order's `Location` (or `503` when
    /// no order was written), while the checkout finishes in the
    /// background. Keep it below the edges' upstream read timeout (5 s by
    /// default), so no client sees a 504 for an order that completes.
    #[serde(with = "humantime_serde", default = "defaults::checkout_deadline")]
    pub deadline: Duration,
}

impl Default for CheckoutConfig {
    fn default() -> Self {
        CheckoutConfig {
            duplicate_wait: defaults::duplicate_wait(),
            recover_after: defaults::recover_after(),
            recovery_interval: defaults::recovery_interval(),
            deadline: defaults::checkout_deadline(),
        }
    }
}

/// Order shards: `user → bucket` by jump hash over `buckets`, `bucket →
/// shard` by the ranges below (the topology's shard map), each shard a
/// database of its own.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrdersConfig {
    pub buckets: u32,
    pub shards: Vec<OrderShardConfig>,
    /// Connections per shard pool.
    #[serde(default = "defaults::shard_pool_size")]
    pub pool_size: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderShardConfig {
    pub name: String,
    pub url: PostgresUrl,
    /// Inclusive bucket ranges `[first, last]`.
    pub buckets: Vec<[u32; 2]>,
}

impl OrdersConfig {
    /// The validated shard map.
    pub fn shard_map(&self) -> Result<ShardMap, ShardMapError> {
        ShardMap::new(
            self.buckets,
            self.shards
                .iter()
                .map(|s| (s.name.as_str(), s.buckets.as_slice())),
        )
    }
}

/// Shopper identity: the key that verifies shopper tokens (JWT, claims
/// `sub`/`region`/`exp`; exactly one of HS256 secret and ES256 public key)
/// and the key that signs guest-cart cookies.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShoppersConfig {
    #[serde(default)]
    pub hs256_secret: Option<Secret>,
    /// A PEM P-256 public key file.
    #[serde(default)]
    pub es256_public_key: Option<std::path::PathBuf>,
    /// Signs the guest-cart cookie (HMAC-SHA256); at least 32 bytes.
    pub guest_cookie_secret: Secret,
}

/// Carts: a Redis hash per cart in the shopper's home region.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CartConfig {
    /// A cart lives this long after its last write.
    #[serde(with = "humantime_serde", default = "defaults::cart_ttl")]
    pub ttl: Duration,
    /// Most distinct SKUs in one cart.
    #[serde(default = "defaults::cart_max_lines")]
    pub max_lines: u32,
    /// Most units of one SKU in one cart.
    #[serde(default = "defaults::cart_max_quantity")]
    pub max_quantity: u32,
    /// Longest a cart command may wait for Redis before the request fails
    /// with 503 (a cart is data: it is never silently skipped).
    #[serde(with = "humantime_serde", default = "defaults::cart_timeout")]
    pub redis_timeout: Duration,
}

impl Default for CartConfig {
    fn default() -> Self {
        CartConfig {
            ttl: defaults::cart_ttl(),
            max_lines: defaults::cart_max_lines(),
            max_quantity: defaults::cart_max_quantity(),
            redis_timeout: defaults::cart_timeout(),
        }
    }
}

/// Inventory: stock on the catalog primary and time-limited reservations.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryConfig {
    /// How long a checkout's hold on stock lasts before the sweeper
    /// releases it.
    #[serde(with = "humantime_serde", default = "defaults::reservation_ttl")]
    pub reservation_ttl: Duration,
    /// How often expired holds are looked for.
    #[serde(with = "humantime_serde", default = "defaults::sweep_interval")]
    pub sweep_interval: Duration,
    /// Most reservation requests applied in one transaction.
    #[serde(default = "defaults::reservation_batch")]
    pub max_batch: usize,
    /// How often the background workers reconcile the stock counters with
    /// the reservation rows (`inventory::reconcile`).
    #[serde(with = "humantime_serde", default = "defaults::reconcile_interval")]
    pub reconcile_interval: Duration,
}

impl Default for InventoryConfig {
    fn default() -> Self {
        InventoryConfig {
            reservation_ttl: defaults::reservation_ttl(),
            sweep_interval: defaults::sweep_interval(),
            max_batch: defaults::reservation_batch(),
            reconcile_interval: defaults::reconcile_interval(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// The catalog primary (writes; reads only as a fallback).
    pub primary_url: PostgresUrl,
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
    /// Longest one statement may run (PostgreSQL `statement_timeout`, on
    /// every pool, the order shards' too).
    #[serde(with = "humantime_serde", default = "defaults::statement_timeout")]
    pub statement_timeout: Duration,
    /// Longest a statement waits for a row lock (`lock_timeout`): one
    /// stuck lock cannot stall every checkout.
    #[serde(with = "humantime_serde", default = "defaults::lock_timeout")]
    pub lock_timeout: Duration,
}

impl DatabaseConfig {
    /// The session settings every pool's connections start with.
    pub fn session_timeouts(&self) -> [(&'static str, String); 2] {
        [
            (
                "statement_timeout",
                format!("{}ms", self.statement_timeout.as_millis()),
            ),
            (
                "lock_timeout",
                format!("{}ms", self.lock_timeout.as_millis()),
            ),
        ]
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaConfig {
    pub name: String,
    pub url: PostgresUrl,
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    /// Who holds the token (audit logs name it; never the token itself).
    pub name: String,
    pub token: Secret,
    /// What the token may do (default: everything). A `purge` token
    /// cannot change a mode or a product.
    #[serde(default = "AdminScope::all")]
    pub scopes: Vec<AdminScope>,
}

/// What an admin token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdminScope {
    /// Products, stock and flash sales.
    Catalog,
    /// Operating modes and feature switches, notify-me lists.
    Ops,
    /// Cache purges (the edges' admin API).
    Purge,
}

impl AdminScope {
    pub fn all() -> Vec<AdminScope> {
        vec![AdminScope::Catalog, AdminScope::Ops, AdminScope::Purge]
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AdminScope::Catalog => "catalog",
            AdminScope::Ops => "ops",
            AdminScope::Purge => "purge",
        }
    }
}

mod defaults {
    use std::time::Duration;
    pub fn on() -> bool {
        true
    }
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
    pub fn cart_ttl() -> Duration {
        Duration::from_secs(30 * 86_400)
    }
    pub fn cart_max_lines() -> u32 {
        50
    }
    pub fn cart_max_quantity() -> u32 {
        99
    }
    pub fn cart_timeout() -> Duration {
        Duration::from_secs(1)
    }
    pub fn reservation_ttl() -> Duration {
        Duration::from_secs(600)
    }
    pub fn sweep_interval() -> Duration {
        Duration::from_secs(1)
    }
    pub fn reconcile_interval() -> Duration {
        Duration::from_secs(60)
    }
    pub fn reservation_batch() -> usize {
        256
    }
    pub fn shard_pool_size() -> u32 {
        16
    }
    pub fn psp_timeout() -> Duration {
        Duration::from_secs(2)
    }
    pub fn psp_retries() -> usize {
        2
    }
    pub fn psp_backoff() -> Duration {
        Duration::from_millis(20)
    }
    pub fn breaker_failures() -> u32 {
        5
    }
    pub fn breaker_open_for() -> Duration {
        Duration::from_secs(5)
    }
    pub fn duplicate_wait() -> Duration {
        Duration::from_secs(10)
    }
    pub fn request_head_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn drain_delay() -> Duration {
        Duration::from_secs(5)
    }
    pub fn checkout_deadline() -> Duration {
        Duration::from_secs(4)
    }
    pub fn statement_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn lock_timeout() -> Duration {
        Duration::from_secs(2)
    }
    pub fn recover_after() -> Duration {
        Duration::from_secs(30)
    }
    pub fn recovery_interval() -> Duration {
        Duration::from_secs(1)
    }
    pub fn modes_retry_after() -> Duration {
        Duration::from_secs(300)
    }

    pub fn modes_poll_interval() -> Duration {
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
    #[error("{}origin config: field `{field}`: {problem}", in_layer(.layer))]
    Invalid {
        field: &'static str,
        problem: String,
        layer: Option<Layer>,
    },
}

fn in_layer(layer: &Option<Layer>) -> String {
    layer.as_ref().map(|l| format!("{l}: ")).unwrap_or_default()
}

impl OriginConfig {
    /// Reads the file, applies the `MERIDIAN_ORIGIN__…` variables and the
    /// `*_file` secrets (the shared loader), and validates the result.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let Loaded { config, provenance } =
            meridian_config::load::<OriginConfig>(path, EnvPrefix::ORIGIN)?;
        config.validate().map_err(|error| match error {
            ConfigError::Invalid { field, problem, .. } => ConfigError::Invalid {
                layer: Some(provenance.layer_of(field)),
                field,
                problem,
            },
            other => other,
        })?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, problem: &str| {
            Err(ConfigError::Invalid {
                field,
                problem: problem.to_string(),
                layer: None,
            })
        };
        if self.region.is_empty() {
            return invalid("region", "must not be empty");
        }
        if let Err(broken) = self.telemetry.validate() {
            return invalid(broken.field, broken.problem);
        }
        if self.internal_listen == self.listen && self.listen.port() != 0 {
            return invalid(
                "internal_listen",
                "must differ from `listen`: the admin API is never on the public listener",
            );
        }
        for replica in &self.database.replicas {
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
        if self.admin_tokens.is_empty() {
            return invalid("admin_tokens", "at least one admin token is needed");
        }
        if self.modes.poll_interval.is_zero() {
            return invalid("modes.poll_interval", "must be greater than zero");
        }
        if self.modes.retry_after.is_zero() || self.modes.retry_after > Duration::from_secs(86_400)
        {
            return invalid("modes.retry_after", "must be from 1 s to 1 day");
        }
        for region in &self.modes.regions {
            if !meridian_topology::is_slug(region) || region == "global" {
                return invalid(
                    "modes.regions",
                    "region names are 1 to 63 lowercase letters, digits and dashes (not `global`)",
                );
            }
        }
        for token in &self.admin_tokens {
            if token.token.expose().len() < 16 {
                return invalid(
                    "admin_tokens.token",
                    "tokens must be at least 16 characters",
                );
            }
            if token.name.is_empty() {
                return invalid("admin_tokens.name", "must not be empty");
            }
            if token.scopes.is_empty() {
                return invalid(
                    "admin_tokens.scopes",
                    "a token needs at least one scope (catalog, ops, purge)",
                );
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
        match (&self.shoppers.hs256_secret, &self.shoppers.es256_public_key) {
            (Some(_), Some(_)) | (None, None) => {
                return invalid(
                    "shoppers",
                    "set exactly one of hs256_secret and es256_public_key",
                );
            }
            (Some(secret), None)
                if secret.expose().len() < meridian_contracts::shopper_token::MIN_SECRET_BYTES =>
            {
                return invalid("shoppers.hs256_secret", "must be at least 32 bytes");
            }
            _ => {}
        }
        if self.shoppers.guest_cookie_secret.expose().len() < 32 {
            return invalid("shoppers.guest_cookie_secret", "must be at least 32 bytes");
        }
        if !(1..=1000).contains(&self.carts.max_lines) {
            return invalid("carts.max_lines", "must be between 1 and 1000");
        }
        if !(1..=10_000).contains(&self.carts.max_quantity) {
            return invalid("carts.max_quantity", "must be between 1 and 10000");
        }
        if self.carts.ttl < Duration::from_secs(60) {
            return invalid("carts.ttl", "must be at least 1m");
        }
        if self.carts.redis_timeout.is_zero() {
            return invalid("carts.redis_timeout", "must be greater than zero");
        }
        if self.inventory.reservation_ttl < Duration::from_secs(1) {
            return invalid("inventory.reservation_ttl", "must be at least 1s");
        }
        if self.inventory.sweep_interval.is_zero() {
            return invalid("inventory.sweep_interval", "must be greater than zero");
        }
        if !(Duration::from_millis(10)..=Duration::from_secs(86_400))
            .contains(&self.inventory.reconcile_interval)
        {
            return invalid("inventory.reconcile_interval", "must be from 10ms to 1 day");
        }
        if !(1..=10_000).contains(&self.inventory.max_batch) {
            return invalid("inventory.max_batch", "must be between 1 and 10000");
        }
        if let Some(orders) = &self.orders {
            if let Err(error) = orders.shard_map() {
                return invalid("orders", &error.to_string());
            }
            if orders.pool_size == 0 {
                return invalid("orders.pool_size", "must be at least 1");
            }
        }
        if let Some(payments) = &self.payments {
            if payments.providers.is_empty() {
                return invalid("payments.providers", "at least one provider is needed");
            }
            for (i, provider) in payments.providers.iter().enumerate() {
                if provider.name.is_empty()
                    || payments.providers[..i]
                        .iter()
                        .any(|p| p.name == provider.name)
                {
                    return invalid(
                        "payments.providers.name",
                        "names must be unique and non-empty",
                    );
                }
            }
            if payments.request_timeout.is_zero() {
                return invalid("payments.request_timeout", "must be greater than zero");
            }
            if payments.breaker_failures == 0 {
                return invalid("payments.breaker_failures", "must be at least 1");
            }
            if payments.retries > 10 {
                return invalid("payments.retries", "must be at most 10");
            }
        }
        if self.checkout.recover_after < Duration::from_millis(100) {
            return invalid("checkout.recover_after", "must be at least 100ms");
        }
        if self.checkout.recovery_interval.is_zero() {
            return invalid("checkout.recovery_interval", "must be greater than zero");
        }
        if self.request_head_timeout < Duration::from_millis(100) {
            return invalid("request_head_timeout", "must be at least 100ms");
        }
        if self.drain_delay > Duration::from_secs(300) {
            return invalid("drain_delay", "must be at most 5m");
        }
        if self.checkout.deadline < Duration::from_millis(100) {
            return invalid("checkout.deadline", "must be at least 100ms");
        }
        if self.database.statement_timeout.is_zero() || self.database.lock_timeout.is_zero() {
            return invalid(
                "database.statement_timeout",
                "statement and lock timeouts must be greater than zero",
            );
        }
        // A saga still talking to a provider must never look abandoned:
        // its worst case stays below the recovery worker's patience.
        if let Some(payments) = &self.payments {
            let worst = payments.worst_case();
            if worst >= self.checkout.recover_after {
                return invalid(
                    "checkout.recover_after",
                    &format!(
                        "must exceed the payments' worst case ({worst:?}: {} providers × (retries + 1) × request_timeout plus backoff, a look-up and the capture); raise it or lower payments.request_timeout/retries",
                        payments.providers.len()
                    ),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payments(request_timeout_ms: u64, retries: usize, providers: usize) -> PaymentsConfig {
        PaymentsConfig {
            providers: (0..providers)
                .map(|i| PspConfig {
                    name: format!("p{i}"),
                    url: HttpUrl::parse(&format!("http://127.0.0.1:{}", 9000 + i)).unwrap(),
                })
                .collect(),
            request_timeout: Duration::from_millis(request_timeout_ms),
            retries,
            backoff: Duration::from_millis(20),
            breaker_failures: 5,
            breaker_open_for: Duration::from_secs(5),
        }
    }

    #[test]
    fn the_payments_worst_case_counts_every_provider_retry_look_up_and_capture() {
        // Two providers, no retries: authorize at each, one look-up, one
        // capture — four requests.
        assert_eq!(payments(100, 0, 2).worst_case(), Duration::from_millis(400));
        // Retries multiply the requests and add the backoff (20 + 40 ms).
        assert_eq!(
            payments(100, 2, 2).worst_case(),
            Duration::from_millis((300 + 60) * 4)
        );
        // The defaults stay below the default recovery patience.
        let defaults = PaymentsConfig {
            request_timeout: defaults::psp_timeout(),
            retries: defaults::psp_retries(),
            backoff: defaults::psp_backoff(),
            ..payments(0, 0, 2)
        };
        assert!(defaults.worst_case() < defaults::recover_after());
    }
}
