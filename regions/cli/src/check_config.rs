//! `meridian origin|edge --check-config FILE`: loads the config exactly as
//! the process would — the shared loader (`meridian-config`): the file,
//! then the `MERIDIAN_ORIGIN__…` / `MERIDIAN_EDGE__…` variables, then the
//! `*_file` secrets — validates it and exits. Nothing is bound, connected
//! to or started: a deployment checks its rendered config and its mounted
//! secrets with it. Exit 0 with a one-line summary, or an error naming the
//! file or variable and the field.

use std::fmt;
use std::path::Path;

use meridian_edge::EdgeConfig;
use meridian_origin::OriginConfig;

use crate::CliError;

/// Whose config is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Origin,
    Edge,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Origin => "origin",
            Kind::Edge => "edge",
        })
    }
}

pub fn run(kind: Kind, path: &Path) -> Result<(), CliError> {
    let summary = match kind {
        Kind::Origin => {
            let config = OriginConfig::load(path)?;
            format!(
                "region {}, public {}, internal {}, {}",
                config.region,
                config.listen,
                config.internal_listen,
                traces(&config.telemetry)
            )
        }
        Kind::Edge => {
            let config = EdgeConfig::load(path)?;
            format!(
                "region {}, public {}, admin {}, {}",
                config.region,
                config.listen,
                config.admin_listen,
                traces(&config.telemetry)
            )
        }
    };
    println!("{}: a valid {kind} config ({summary})", path.display());
    Ok(())
}

/// Where traces go, for the summary.
fn traces(telemetry: &meridian_telemetry::TelemetryConfig) -> String {
    match &telemetry.otlp_endpoint {
        Some(endpoint) => format!(
            "traces to {endpoint} (sampled {})",
            telemetry.sample_ratio.get()
        ),
        None => "traces off".to_string(),
    }
}
