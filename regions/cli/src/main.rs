//! `meridian`: run and operate the Meridian stack. See `meridian --help`.

#![forbid(unsafe_code)]

use clap::Parser;

/// mimalloc: the origin's request path allocates small, short-lived
/// buffers; glibc malloc was ~11 % of an L1-hit profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = meridian_cli::Cli::parse();
    match meridian_cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("meridian: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
