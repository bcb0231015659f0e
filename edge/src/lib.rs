//! Meridian's regional edge: one Pingora proxy per region in front of that
//! region's origins (geo-routing and failover, rate limits, bot throttling,
//! the HTTP response cache, purge, TLS).
//!
//! Nothing lives here yet: the edge is built by its own issue. The crate
//! exists so the workspace has its final shape and the architecture rule
//! "the origin never depends on the edge" is visible in `Cargo.toml` from
//! day one.
