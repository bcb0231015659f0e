//! The `meridian` command and the local launcher.
//!
//! Layout:
//! - [`launcher`]: starts real PostgreSQL (primary, streaming replicas) and
//!   Redis servers from the machine's binaries, for `meridian up` and tests.
//! - [`local`]: what a local origin is configured with, derived from the
//!   topology and the running servers (one function, used by `up` and tests).
//! - [`stack_file`]: `.meridian/stack.json`, the contract between a running
//!   local stack and the tools and tests that use it.
//! - [`psp`]: the payment-provider simulator (`meridian psp`).
//! - [`cli`]: the subcommands (`up`, `seed`, `origin`, `edge`, `token`, `psp`).
//!
//! The topology model itself is the `meridian-topology` crate
//! (`regions/model/`), so the origin and edge can depend on it without
//! depending on this crate.

#![forbid(unsafe_code)]

pub mod cli;
pub mod launcher;
pub mod local;
pub mod private_files;
pub mod psp;
pub mod stack_file;

pub use launcher::{LaunchError, LocalStack};
