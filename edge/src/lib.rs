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
//! - [`purge_listener`]: purges from the regional Redis channel.
//! - [`admin`]: metrics, health, readiness and purge API on the admin port.
//! - [`metrics`]: the Prometheus registry.
//!
//! Architecture invariant: the edge never talks to PostgreSQL and knows no
//! business rule beyond route classes.

pub mod admin;
pub mod cache;
pub mod config;
pub mod metrics;
pub mod proxy;
pub mod purge_listener;
pub mod server;
pub mod upstream;

pub use config::EdgeConfig;
pub use server::{EdgeServer, StartError};
