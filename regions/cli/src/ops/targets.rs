//! Where the ops commands send requests: every region's origin internal
//! listener (admin API, `/readyz`, `/metrics`) and edge admin port, and
//! the admin token — read from the local stack file unless
//! given with flags (`--origin us-east=http://…` repeated, likewise
//! `--edge-admin`; `--token` or `MERIDIAN_ADMIN_TOKEN`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;
use meridian_launcher::stack_file::{DEFAULT_PATH, StackFile};

use crate::CliError;

#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// The local stack file (used unless `--origin` is given).
    #[arg(long, default_value = DEFAULT_PATH, global = true)]
    pub stack_file: PathBuf,
    /// A region's origin internal listener (admin API, `/readyz`,
    /// `/metrics`), `REGION=URL`; repeat for every region.
    #[arg(long = "origin", value_name = "REGION=URL", global = true)]
    pub origins: Vec<String>,
    /// A region's edge admin API, `REGION=URL`; repeat for every region.
    #[arg(long = "edge-admin", value_name = "REGION=URL", global = true)]
    pub edge_admins: Vec<String>,
    /// Admin bearer token (default: the local stack's).
    #[arg(
        long,
        env = "MERIDIAN_ADMIN_TOKEN",
        global = true,
        hide_env_values = true
    )]
    pub token: Option<String>,
}

/// One region's endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegionTargets {
    pub origin: Option<String>,
    pub edge_admin: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Targets {
    pub token: String,
    pub regions: BTreeMap<String, RegionTargets>,
    /// Where admin writes go (any origin reaches the primary; the home
    /// region's saves a hop).
    pub admin_origin: String,
}

fn pair(raw: &str, flag: &str) -> Result<(String, String), CliError> {
    let (region, url) = raw
        .split_once('=')
        .filter(|(r, u)| meridian_topology::is_slug(r) && u.starts_with("http"))
        .ok_or_else(|| {
            CliError::Other(format!(
                "--{flag} {raw:?}: expected REGION=http://host:port"
            ))
        })?;
    Ok((region.to_string(), url.trim_end_matches('/').to_string()))
}

impl TargetArgs {
    pub fn resolve(&self) -> Result<Targets, CliError> {
        if self.origins.is_empty() {
            let stack = StackFile::read(&self.stack_file)?;
            let regions = stack
                .regions
                .iter()
                .map(|(name, r)| {
                    (
                        name.clone(),
                        RegionTargets {
                            origin: Some(r.origin_internal.trim_end_matches('/').to_string()),
                            edge_admin: r.edge_admin.clone(),
                        },
                    )
                })
                .collect::<BTreeMap<_, _>>();
            let admin_origin = regions
                .get(&stack.home_region)
                .and_then(|r| r.origin.clone())
                .or_else(|| regions.values().find_map(|r| r.origin.clone()))
                .ok_or_else(|| CliError::Other("the stack file lists no origin".into()))?;
            return Ok(Targets {
                token: self.token.clone().unwrap_or(stack.admin_token),
                regions,
                admin_origin,
            });
        }
        let token = self.token.clone().ok_or_else(|| {
            CliError::Other("give the admin token with --token or MERIDIAN_ADMIN_TOKEN".into())
        })?;
        let mut regions: BTreeMap<String, RegionTargets> = BTreeMap::new();
        for raw in &self.origins {
            let (region, url) = pair(raw, "origin")?;
            regions.entry(region).or_default().origin = Some(url);
        }
        for raw in &self.edge_admins {
            let (region, url) = pair(raw, "edge-admin")?;
            regions.entry(region).or_default().edge_admin = Some(url);
        }
        let admin_origin = regions
            .values()
            .find_map(|r| r.origin.clone())
            .ok_or_else(|| CliError::Other("give at least one --origin".into()))?;
        Ok(Targets {
            token,
            regions,
            admin_origin,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_name_regions_and_urls() {
        let args = TargetArgs {
            stack_file: PathBuf::from("/nonexistent"),
            origins: vec!["us-east=http://127.0.0.1:8110/".into()],
            edge_admins: vec!["us-east=http://127.0.0.1:9100".into()],
            token: Some("t0123456789abcdef".into()),
        };
        let targets = args.resolve().unwrap();
        assert_eq!(targets.admin_origin, "http://127.0.0.1:8110");
        assert_eq!(
            targets.regions["us-east"].edge_admin.as_deref(),
            Some("http://127.0.0.1:9100")
        );
        for bad in ["us-east", "US=http://x", "us-east=ftp://x"] {
            assert!(pair(bad, "origin").is_err(), "{bad}");
        }
        let no_token = TargetArgs {
            token: None,
            ..args
        };
        assert!(no_token.resolve().is_err());
    }
}
