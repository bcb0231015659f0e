//! End-to-end tests of the origin and the edge against real PostgreSQL
//! (primary and streaming replicas) and Redis servers started by the
//! launcher, over real sockets. One test binary with modules keeps link
//! times down.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod admin_api;
mod bad_input;
mod cache;
mod cart;
mod checkout;
mod connections;
mod contract;
mod crash;
mod deadlines;
mod deploy;
mod edge;
mod flash;
mod helpers;
mod image;
mod inventory;
mod lifecycle;
mod metrics;
mod mode_behaviour;
mod modes;
mod observability;
mod orders;
mod replicas;
mod traces;
