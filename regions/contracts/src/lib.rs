//! The contracts between Meridian's processes: what the edge, the origins
//! and the `meridian` CLI exchange at run time, in one place so each side
//! reads what the other writes.
//!
//! Layout:
//! - [`shopper_token`]: the shopper JWT (claims, minting, verification),
//!   shared by the CLI that mints, the edge that routes and the origin that
//!   authorises.
//! - [`modes`]: operating modes (normal, degraded, read-only,
//!   maintenance) and feature switches, global default plus per-region
//!   overrides, shared by the origins that store them and the edges.
//! - [`invalidation`]: the regional invalidation channel's message format,
//!   shared by the origins that publish and the edges that purge.
//! - [`problem`]: the RFC 9457 problem body every process answers errors
//!   with.
//! - [`ids`]: numeric path ids in their one canonical spelling, parsed
//!   the same way by the origin's routes and the edge's waiting room.
//!
//! The region topology itself is `meridian-topology` (`regions/model/`).

#![forbid(unsafe_code)]

pub mod ids;
pub mod invalidation;
pub mod modes;
pub mod problem;
pub mod shopper_token;
