//! `meridian origin --config FILE`: one origin process.
//! `meridian origin --check-config FILE` is [`crate::check_config`].

use std::path::PathBuf;

use clap::Args;
use meridian_origin::{Application, OriginConfig};

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

pub async fn run(args: OriginArgs) -> Result<(), CliError> {
    let Some(path) = &args.config else {
        return Err(CliError::Other("give --config FILE".into()));
    };
    meridian_origin::install_failpoints();
    let config = OriginConfig::load(path)?;
    if args.migrate {
        meridian_origin::db::migrate(config.database.primary_url.expose()).await?;
    }
    let region = config.region.clone();
    let app = Application::build(config).await?;
    tracing::info!(%region, addr = %app.local_addr(), "origin listening");
    app.run_until_stopped(stop_signal()).await?;
    tracing::info!(%region, "origin stopped");
    Ok(())
}
