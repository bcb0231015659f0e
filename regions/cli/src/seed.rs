//! `meridian seed --products N`: the deterministic demo catalog.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use meridian_launcher::stack_file::{DEFAULT_PATH, StackFile};

use crate::CliError;

#[derive(Debug, Args)]
pub struct SeedArgs {
    /// How many products to generate.
    #[arg(long, default_value_t = 1000)]
    pub products: u64,
    /// The catalog primary; defaults to the running local stack's.
    #[arg(long, env = "MERIDIAN_DATABASE_URL")]
    pub database_url: Option<String>,
    /// The local stack file to read the primary from.
    #[arg(long, default_value = DEFAULT_PATH)]
    pub stack_file: PathBuf,
    /// Run the migrations first.
    #[arg(long)]
    pub migrate: bool,
}

pub async fn run(args: SeedArgs) -> Result<(), CliError> {
    let url = match args.database_url {
        Some(url) => url,
        None => StackFile::read(&args.stack_file)?.catalog_primary,
    };
    if args.migrate {
        meridian_origin::db::migrate(&url).await?;
    }
    let started = Instant::now();
    let report = meridian_origin::catalog::seed::seed(&url, args.products, true).await?;
    println!(
        "seeded {} products, {} variants, {} categories in {:.1?}",
        report.products,
        report.variants,
        report.categories,
        started.elapsed()
    );
    Ok(())
}
