//! Meridian's origin: the axum services behind the regional edge.
//!
//! Layout:
//! - [`app`]: `Application::build` / `run_until_stopped`, the public and
//!   internal routers, health and metrics endpoints.
//! - [`serve`]: the HTTP/1 server loop (request-head deadline, drain).
//! - [`config`]: the typed, validated configuration.
//! - [`catalog`]: the catalog bounded context (products, categories, prices).
//! - [`inventory`]: stock and time-limited reservations on the primary.
//! - [`cart`]: carts in the home region's Redis.
//! - [`orders`]: orders in the user's shard (`ShardRouter`).
//! - [`payments`]: the payment providers behind breakers, retries and
//!   fallback.
//! - [`checkout`]: the checkout saga, its idempotency and its recovery.
//! - [`flash`]: flash sales (a Redis gate, claims drained into reservations).
//! - [`modes`]: operating modes and feature switches per region (admin API,
//!   audit log).
//! - [`notify_me`]: notify-me requests (what `read-only` offers instead of
//!   checkout), in Redis.
//! - [`discovery`]: recommendations, search suggestions and reviews — the
//!   non-essential features a mode switches off.
//! - [`identity`]: shopper tokens and signed guest-cart cookies.
//! - [`cache`]: the tiered cache — L1 moka, L2 Redis — with single-flight.
//! - [`db`]: `DbRouter` (reads to replicas, writes to the primary), replica
//!   lag monitoring, read-your-writes tokens, migrations.
//! - [`invalidation`]: tailing the invalidation log and the Redis channel.
//! - [`auth`]: admin bearer tokens and their scopes.
//! - [`metrics`]: the Prometheus registry and HTTP middleware.
//! - [`telemetry`]: per request, the W3C trace context (continued or
//!   started, handed on to the payment providers), the server span,
//!   `X-Request-Id` and the access-log line.
//! - [`problem`]: RFC 9457 errors and rejection-mapping extractors.
//! - [`openapi`]: the API contract generated from the handlers' types.
//!
//! Architecture invariant: the origin never depends on the edge crate.

#![forbid(unsafe_code)]

pub mod app;
pub mod auth;
pub mod cache;
pub mod cart;
pub mod catalog;
pub mod checkout;
pub mod config;
pub mod db;
pub mod discovery;
pub mod flash;
pub mod identity;
pub mod invalidation;
pub mod inventory;
pub mod metrics;
pub mod modes;
pub mod notify_me;
pub mod openapi;
pub mod orders;
pub mod payments;
pub mod problem;
pub mod serve;
pub mod telemetry;

pub use app::Application;
pub use config::OriginConfig;

/// Reads the `FAILPOINTS` environment variable (crash tests: e.g.
/// `checkout::reserved=return` aborts the process at that saga step).
/// Does nothing unless built with the `failpoints` feature.
pub fn install_failpoints() {
    #[cfg(feature = "failpoints")]
    std::mem::forget(fail::FailScenario::setup());
}
