//! Meridian's regional edge: one Pingora proxy per region in front of that
//! region's origins.
//!
//! Layout:
//! - [`config`]: the typed, validated TOML config (`meridian up` writes one
//!   per region; a standalone edge is given one by hand).
//! - [`server`]: builds and runs the pingora server (listeners, services).
//! - [`proxy`]: the `ProxyHttp` service, split by phase (request filters,
//!   routing, response modifiers).
//! - [`cache`]: the bounded object storage, TinyUFO eviction, cache key,
//!   cache policy and purge.
//! - [`upstream`]: health-checked origin pools per region.
//! - [`connection_cap`]: at most so many open connections per client
//!   address on the public listeners.
//! - [`head_deadline`]: public connections whose request head does not
//!   arrive in time are closed.
//! - [`geo`]: the client's region (trusted header, GeoIP database, default).
//! - [`identity`]: shopper JWTs, for home-region routing.
//! - [`rate_limiting`]: token buckets per route class, IP and user; the
//!   region-wide checkout budget in Redis.
//! - [`bots`]: bot scoring, challenge cookies.
//! - [`purge_listener`]: purges (and mode announcements) from the regional
//!   Redis channel.
//! - [`modes`]: the operating mode applied here and how it follows the
//!   region's setting.
//! - [`admin`]: metrics, health, readiness and purge API on the admin port.
//! - [`waiting_room`]: the FIFO queue in front of checkout and flash-sale
//!   claims (state in the region's Redis).
//! - [`signing`]: HMAC signatures of the edge's own cookies.
//! - [`metrics`]: the Prometheus registry.
//! - [`telemetry`]: per request, the W3C trace context (continued or
//!   started, handed to the origin), the phase spans when traces are
//!   exported, `X-Request-Id` and the access-log line.
//!
//! Architecture invariant: the edge never talks to PostgreSQL and knows no
//! business rule beyond route classes.

pub mod admin;
pub mod bots;
pub mod cache;
pub mod config;
pub mod connection_cap;
pub mod geo;
pub mod head_deadline;
pub mod identity;
pub mod metrics;
pub mod modes;
pub mod origin_dns;
pub mod proxy;
pub mod purge_listener;
pub mod rate_limiting;
pub mod server;
pub mod signing;
pub mod telemetry;
pub mod upstream;
pub mod waiting_room;

pub use config::EdgeConfig;
pub use server::{EdgeServer, StartError};
