//! `meridian origin --config FILE`: one origin process.
//! `meridian origin --check-config FILE` is [`crate::check_config`].

use std::path::PathBuf;

use clap::Args;
use meridian_origin::{Application, OriginConfig};
use meridian_telemetry::Telemetry;

use crate::{CliError, stop_signal};

#[derive(Debug, Args)]
pub struct OriginArgs {
    /// The origin's TOML config file.
    #[arg(long, value_name = "FILE", required_unless_present = "check_config")]
    pub config: Option<PathBuf>,
    /// Validate this config file (with the `MERIDIAN_ORIGIN__…` variables
    /// and `*_file` secrets applied) and exit: 0 and a summary when it is
    /// valid, an error naming the file or variable and the field when not.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["config", "migrate"])]
    pub check_config: Option<PathBuf>,
    /// Run the catalog migrations on the primary before serving.
    #[arg(long)]
    pub migrate: bool,
}

/// Runs the origin of `args.config`; its logs are JSON when its config's
/// `telemetry.log_format` says so, or, without one, when `log_json`.
pub async fn run(args: OriginArgs, log_json: bool) -> Result<(), CliError> {
    let Some(path) = &args.config else {
        return Err(CliError::Other("give --config FILE".into()));
    };
    let config = OriginConfig::load(path)?;
    let telemetry = Telemetry::start(
        &config.telemetry,
        log_json,
        "meridian-origin",
        &config.region,
    )?;
    crate::raise_fd_limit();
    meridian_origin::install_failpoints();
    if args.migrate {
        meridian_origin::db::migrate(config.database.primary_url.expose()).await?;
    }
    let region = config.region.clone();
    let app = Application::build(config).await?;
    tracing::info!(%region, addr = %app.local_addr(), "origin listening");
    app.run_until_stopped(stop_signal()).await?;
    tracing::info!(%region, "origin stopped");
    // The flush blocks (up to the export timeout): off the async threads.
    if let Err(error) = tokio::task::spawn_blocking(move || telemetry.shutdown()).await {
        tracing::warn!(%error, "trace exporter shutdown failed");
    }
    Ok(())
}
