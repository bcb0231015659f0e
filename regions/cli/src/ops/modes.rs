//! `meridian degrade`, `meridian features` and `meridian modes history`.
//! A change goes through the admin API (`PUT /v1/admin/modes/{region}`);
//! then every edge and origin of the regions it affects is watched
//! (`/readyz`) until it applies the region's new effective setting, and the
//! time each took is printed — the measured propagation.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use meridian_contracts::modes::{Effective, Feature, Mode};
use serde_json::{Value, json};

use super::client::OpsClient;
use super::targets::{TargetArgs, Targets};
use crate::CliError;

#[derive(Debug, Args)]
pub struct DegradeArgs {
    /// A region, or `global` for the default of every region.
    #[arg(long)]
    pub region: String,
    /// `normal`, `degraded`, `read-only`, `maintenance`, or `inherit` (a
    /// region drops its own mode and follows the global one).
    #[arg(long)]
    pub mode: String,
    /// Why (kept in the audit log).
    #[arg(long)]
    pub reason: String,
    /// How long to wait for every process to apply it.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub wait: Duration,
    #[command(flatten)]
    pub targets: TargetArgs,
}

#[derive(Debug, Args)]
pub struct FeaturesArgs {
    /// A region, or `global`.
    #[arg(long)]
    pub region: String,
    /// Features to switch off (repeatable).
    #[arg(long = "off", value_name = "FEATURE")]
    pub off: Vec<String>,
    /// Features to switch on (repeatable).
    #[arg(long = "on", value_name = "FEATURE")]
    pub on: Vec<String>,
    /// Features to hand back to the mode's default (repeatable).
    #[arg(long = "inherit", value_name = "FEATURE")]
    pub inherit: Vec<String>,
    /// Why (kept in the audit log).
    #[arg(long, default_value = "switched with meridian features")]
    pub reason: String,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub wait: Duration,
    #[command(flatten)]
    pub targets: TargetArgs,
}

#[derive(Debug, Args)]
pub struct ModesArgs {
    #[command(subcommand)]
    pub command: ModesCommand,
}

#[derive(Debug, Subcommand)]
pub enum ModesCommand {
    /// The audit log of mode changes, newest first.
    History(HistoryArgs),
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only this region's changes (`global` for the default's).
    #[arg(long)]
    pub region: Option<String>,
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub targets: TargetArgs,
}

pub async fn degrade(args: DegradeArgs) -> Result<(), CliError> {
    let mode = match args.mode.as_str() {
        "inherit" => Value::Null,
        text => {
            let mode = Mode::parse(text).ok_or_else(|| {
                CliError::Other(format!(
                    "unknown mode {text:?}; one of: {}, inherit",
                    Mode::ALL.map(Mode::as_str).join(", ")
                ))
            })?;
            json!(mode)
        }
    };
    let body = json!({ "mode": mode, "reason": args.reason });
    change(&args.targets, &args.region, body, args.wait).await
}

pub async fn features(args: FeaturesArgs) -> Result<(), CliError> {
    let mut switches = serde_json::Map::new();
    for (names, value) in [
        (&args.off, json!(false)),
        (&args.on, json!(true)),
        (&args.inherit, Value::Null),
    ] {
        for name in names {
            let feature = Feature::parse(name).ok_or_else(|| {
                CliError::Other(format!(
                    "unknown feature {name:?}; one of: {}",
                    Feature::ALL.map(Feature::as_str).join(", ")
                ))
            })?;
            switches.insert(feature.as_str().into(), value.clone());
        }
    }
    if switches.is_empty() {
        return Err(CliError::Other(
            "name a feature with --off, --on or --inherit".into(),
        ));
    }
    let body = json!({ "features": switches, "reason": args.reason });
    change(&args.targets, &args.region, body, args.wait).await
}

/// One process to watch: its name, region and `/readyz` base URL.
struct Watched {
    name: String,
    region: String,
    base: String,
}

fn applied_matches(modes: &Value, expected: &Effective) -> bool {
    let Ok(mode) = serde_json::from_value::<Mode>(modes["mode"].clone()) else {
        return false;
    };
    let features: BTreeMap<Feature, bool> =
        serde_json::from_value(modes["features"].clone()).unwrap_or_default();
    mode == expected.mode
        && Feature::ALL
            .iter()
            .all(|f| features.get(f).copied() == Some(expected.enabled(*f)))
}

async fn change(
    targets: &TargetArgs,
    scope: &str,
    body: Value,
    wait: Duration,
) -> Result<(), CliError> {
    let targets: Targets = targets.resolve()?;
    let client = OpsClient::new(&targets.token)?;
    let base = &targets.admin_origin;
    client
        .put(&format!("{base}/v1/admin/modes/{scope}"), &body)
        .await?;
    let changed = Instant::now();
    println!("changed {scope}: {body}");
    let table = client.get(&format!("{base}/v1/admin/modes")).await?;
    let effective: BTreeMap<String, Effective> =
        serde_json::from_value(table["effective"].clone()).unwrap_or_default();
    let mut watched = Vec::new();
    for (region, endpoints) in &targets.regions {
        if scope != "global" && scope != region {
            continue;
        }
        if let Some(origin) = &endpoints.origin {
            watched.push(Watched {
                name: "origin".into(),
                region: region.clone(),
                base: origin.clone(),
            });
        }
        if let Some(edge) = &endpoints.edge_admin {
            watched.push(Watched {
                name: "edge".into(),
                region: region.clone(),
                base: edge.clone(),
            });
        }
    }
    let mut pending: Vec<&Watched> = watched.iter().collect();
    let mut applied: Vec<(&Watched, Duration)> = Vec::new();
    while !pending.is_empty() && changed.elapsed() < wait {
        let mut still = Vec::new();
        for process in pending {
            let Some(expected) = effective.get(&process.region) else {
                still.push(process);
                continue;
            };
            match client.readyz(&process.base).await {
                Ok((_, body)) if applied_matches(&body["modes"], expected) => {
                    applied.push((process, changed.elapsed()));
                }
                _ => still.push(process),
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    println!("{:<16} {:<8} {:>12}", "REGION", "PROCESS", "APPLIED AFTER");
    for (process, after) in &applied {
        println!(
            "{:<16} {:<8} {:>10} ms",
            process.region,
            process.name,
            after.as_millis()
        );
    }
    for process in &pending {
        println!(
            "{:<16} {:<8} {:>12}",
            process.region, process.name, "not yet"
        );
    }
    if pending.is_empty() {
        Ok(())
    } else {
        Err(CliError::Other(format!(
            "{} process(es) had not applied the change after {wait:?} (they poll as a backstop; see their /readyz)",
            pending.len()
        )))
    }
}

pub async fn history(args: HistoryArgs) -> Result<(), CliError> {
    let targets = args.targets.resolve()?;
    let client = OpsClient::new(&targets.token)?;
    let mut url = format!(
        "{}/v1/admin/modes/history?limit={}",
        targets.admin_origin, args.limit
    );
    if let Some(region) = &args.region {
        url.push_str(&format!("&region={region}"));
    }
    let body = client.get(&url).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&body["changes"]).unwrap_or_default()
        );
        return Ok(());
    }
    println!(
        "{:<6} {:<25} {:<16} {:<10} {:<24} {:<30} REASON",
        "ID", "AT", "WHO", "SCOPE", "MODE", "FEATURES"
    );
    let empty = Vec::new();
    for change in body["changes"].as_array().unwrap_or(&empty) {
        let text = |v: &Value| v.as_str().unwrap_or("(inherit)").to_string();
        let mode = format!(
            "{} → {}",
            text(&change["old_mode"]),
            text(&change["new_mode"])
        );
        let features = if change["old_features"] == change["new_features"] {
            String::new()
        } else {
            change["new_features"].to_string()
        };
        println!(
            "{:<6} {:<25} {:<16} {:<10} {:<24} {:<30} {}",
            change["id"].to_string(),
            change["at"]
                .as_str()
                .unwrap_or_default()
                .chars()
                .take(23)
                .collect::<String>(),
            text(&change["actor"]),
            text(&change["scope"]),
            mode,
            features,
            text(&change["reason"]),
        );
    }
    Ok(())
}
