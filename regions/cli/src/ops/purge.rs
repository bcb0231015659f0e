//! `meridian purge --tag product:123` / `--url /v1/products/123`: purges in
//! every region's edge (admin API) and prints each region's
//! acknowledgement. A region whose edge cannot be reached is reported and
//! makes the command fail: a purge that did not happen everywhere must not
//! look as if it had.

use clap::Args;
use serde_json::json;

use super::client::OpsClient;
use super::targets::TargetArgs;
use crate::CliError;

#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// Surrogate keys to purge (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// URLs or paths to purge (repeatable).
    #[arg(long = "url", value_name = "URL")]
    pub urls: Vec<String>,
    /// Only this region (default: every region).
    #[arg(long)]
    pub region: Option<String>,
    #[command(flatten)]
    pub targets: TargetArgs,
}

pub async fn run(args: PurgeArgs) -> Result<(), CliError> {
    if args.tags.is_empty() && args.urls.is_empty() {
        return Err(CliError::Other("name something with --tag or --url".into()));
    }
    let targets = args.targets.resolve()?;
    let client = OpsClient::new(&targets.token)?;
    let body = json!({ "tags": args.tags, "urls": args.urls });
    let mut failed = Vec::new();
    let mut asked = 0;
    for (region, endpoints) in &targets.regions {
        if args.region.as_ref().is_some_and(|r| r != region) {
            continue;
        }
        let Some(edge) = &endpoints.edge_admin else {
            println!("{region:<16} no edge known");
            continue;
        };
        asked += 1;
        match client.post(&format!("{edge}/purge"), &body).await {
            Ok(ack) => println!(
                "{region:<16} acknowledged by the edge of {}: {} object(s) purged",
                ack["region"].as_str().unwrap_or("?"),
                ack["purged"]
            ),
            Err(error) => {
                println!("{region:<16} FAILED: {error}");
                failed.push(region.clone());
            }
        }
    }
    if asked == 0 {
        return Err(CliError::Other("no edge to purge".into()));
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::Other(format!(
            "the purge did not reach: {}",
            failed.join(", ")
        )))
    }
}
