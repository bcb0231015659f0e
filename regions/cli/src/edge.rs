//! `meridian edge --config FILE`: one edge process (what `up` starts per
//! region; also how to run a standalone edge in front of any HTTP origin).
//! `meridian edge --check-config FILE` is [`crate::check_config`].
//!
//! Pingora owns its runtimes and signal handling, so this subcommand runs
//! outside the CLI's tokio runtime: SIGTERM stops gracefully (in-flight
//! requests get the configured grace period), SIGINT stops at once.

use std::path::PathBuf;

use clap::Args;
use meridian_edge::{EdgeConfig, EdgeServer};
use meridian_telemetry::Telemetry;
use pingora::server::UnixShutdownSignalWatch;

use crate::CliError;

#[derive(Debug, Args)]
pub struct EdgeArgs {
    /// The edge's TOML config file.
    #[arg(long, value_name = "FILE", required_unless_present = "check_config")]
    pub config: Option<PathBuf>,
    /// Validate this config file (with the `MERIDIAN_EDGE__…` variables
    /// and `*_file` secrets applied) and exit: 0 and a summary when it is
    /// valid, an error naming the file or variable and the field when not.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    pub check_config: Option<PathBuf>,
}

/// Runs the edge of `args.config`; its logs are JSON when its config's
/// `telemetry.log_format` says so, or, without one, when `log_json`.
pub fn run(args: EdgeArgs, log_json: bool) -> Result<(), CliError> {
    let Some(path) = &args.config else {
        return Err(CliError::Other("give --config FILE".into()));
    };
    let config = EdgeConfig::load(path)?;
    let telemetry = Telemetry::start(&config.telemetry, log_json, "meridian-edge", &config.region)?;
    crate::raise_fd_limit();
    let region = config.region.clone();
    tracing::info!(
        %region,
        listen = %config.listen,
        admin = %config.admin_listen,
        tls = ?config.tls.as_ref().map(|t| t.listen),
        "edge starting"
    );
    EdgeServer::build(config)?.run(UnixShutdownSignalWatch);
    tracing::info!(%region, "edge stopped");
    telemetry.shutdown();
    Ok(())
}
