//! The ops commands against a running stack: `status`, `degrade`,
//! `features`, `purge` and `modes history`. They speak only HTTP to the
//! stack's origins (admin API, `/readyz`, `/metrics`) and edges (admin
//! port); the endpoints come from `.meridian/stack.json` or from flags, so
//! the same commands work against any deployment.
//!
//! - [`targets`]: which origins and edges, and the admin token.
//! - [`client`]: the HTTP client (problem+json errors become messages).
//! - [`status`]: the per-region health table.
//! - [`modes`]: `degrade`, `features` (with measured propagation) and
//!   `modes history`.
//! - [`purge`]: purges in every region's edge.

pub mod client;
pub mod modes;
pub mod purge;
pub mod status;
pub mod targets;
