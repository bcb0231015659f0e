//! `meridian`: run and operate the Meridian stack. See `meridian --help`.

#![forbid(unsafe_code)]

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = meridian_regions::cli::Cli::parse();
    meridian_regions::cli::init_tracing(cli.log_json);
    match meridian_regions::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("meridian: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
