//! `meridian origin --config FILE`: one origin process.

use std::path::PathBuf;

use clap::Args;
use meridian_origin::{Application, OriginConfig};

use crate::{CliError, stop_signal};

#[derive(Debug, Args)]
pub struct OriginArgs {
    /// The origin's TOML config file.
    #[arg(long)]
    pub config: PathBuf,
    /// Run the catalog migrations on the primary before serving.
    #[arg(long)]
    pub migrate: bool,
}

pub async fn run(args: OriginArgs) -> Result<(), CliError> {
    meridian_origin::install_failpoints();
    let config = OriginConfig::load(&args.config)?;
    if args.migrate {
        meridian_origin::db::migrate(&config.database.primary_url).await?;
    }
    let region = config.region.clone();
    let app = Application::build(config).await?;
    tracing::info!(%region, addr = %app.local_addr(), "origin listening");
    app.run_until_stopped(stop_signal()).await?;
    tracing::info!(%region, "origin stopped");
    Ok(())
}
