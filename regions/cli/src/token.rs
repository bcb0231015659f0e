//! `meridian token`: mints a shopper token (JWT) for local use, in the
//! format the edge and the origin verify
//! ([`meridian_contracts::shopper_token`]). The HS256 secret comes from
//! `--secret` / `MERIDIAN_JWT_SECRET`, else from the running local stack's
//! file (`jwt_secret`); the region must be one of the topology's.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use meridian_contracts::shopper_token::TokenSigner;
use meridian_launcher::stack_file::{DEFAULT_PATH, StackFile};

use crate::{CliError, load_topology};

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The shopper's user id (the token's `sub`).
    #[arg(long)]
    pub user: String,
    /// The shopper's home region (the token's `region`).
    #[arg(long)]
    pub region: String,
    /// How long the token is valid: `90s`, `30m`, `24h`, `7d`, ...
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// HS256 secret (default: `jwt_secret` from the stack file).
    #[arg(long, env = "MERIDIAN_JWT_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// The running stack's file, read when no secret is given.
    #[arg(long, default_value = DEFAULT_PATH)]
    pub stack_file: PathBuf,
    /// Directory of region files (default: as `meridian up`).
    #[arg(long)]
    pub topology: Option<PathBuf>,
}

/// Prints the token on stdout (and nothing else, for `$(meridian token …)`).
pub fn run(args: TokenArgs) -> Result<(), CliError> {
    let topology = load_topology(args.topology.as_ref())?;
    if topology.region(&args.region).is_err() {
        let known: Vec<&str> = topology.names().collect();
        return Err(CliError::Other(format!(
            "unknown region `{}`; the topology has: {}",
            args.region,
            known.join(", ")
        )));
    }
    let secret = match args.secret {
        Some(secret) => secret,
        None => StackFile::read(&args.stack_file)?
            .jwt_secret
            .ok_or_else(|| {
                CliError::Other(format!(
                    "{} has no jwt_secret; pass --secret or MERIDIAN_JWT_SECRET",
                    args.stack_file.display()
                ))
            })?,
    };
    let token = TokenSigner::hs256(&secret)
        .and_then(|signer| signer.mint(&args.user, &args.region, args.ttl, SystemTime::now()))
        .map_err(|e| CliError::Other(format!("cannot mint the token: {e}")))?;
    println!("{token}");
    Ok(())
}
