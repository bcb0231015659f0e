//! `meridian edge --config FILE`: one edge process (what `up` starts per
//! region; also how to run a standalone edge in front of any HTTP origin).
//!
//! Pingora owns its runtimes and signal handling, so this subcommand runs
//! outside the CLI's tokio runtime: SIGTERM stops gracefully (in-flight
//! requests get the configured grace period), SIGINT stops at once.

use std::path::PathBuf;

use clap::Args;
use meridian_edge::{EdgeConfig, EdgeServer};
use pingora::server::UnixShutdownSignalWatch;

use crate::CliError;

#[derive(Debug, Args)]
pub struct EdgeArgs {
    /// The edge's TOML config file.
    #[arg(long)]
    pub config: PathBuf,
}

pub fn run(args: EdgeArgs) -> Result<(), CliError> {
    let config = EdgeConfig::load(&args.config)?;
    let region = config.region.clone();
    tracing::info!(
        %region,
        listen = %config.listen,
        admin = %config.admin_listen,
        tls = ?config.tls.as_ref().map(|t| t.listen),
        "edge starting"
    );
    EdgeServer::build(config)?.run(Box::new(UnixShutdownSignalWatch));
    tracing::info!(%region, "edge stopped");
    Ok(())
}
