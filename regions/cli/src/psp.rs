//! `meridian psp`: one payment-provider simulator process
//! ([`crate::psp`]), with its faults from flags (and `PUT /v1/faults` at
//! runtime).

use std::net::SocketAddr;

use clap::Args;
use meridian_psp_sim::{Faults, PspServer};

use crate::{CliError, stop_signal};

#[derive(Debug, Args)]
pub struct PspArgs {
    /// The simulator's name (shown in its ledger), e.g. `primary`.
    #[arg(long, default_value = "primary")]
    pub name: String,
    /// Where to listen (port 0: any free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Processing latency per request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Share of requests failing with 503 before anything is done (0..=1).
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Share of requests done but answered only after --timeout-delay-ms.
    #[arg(long, default_value_t = 0.0)]
    pub timeout_rate: f64,
    #[arg(long, default_value_t = 10_000)]
    pub timeout_delay_ms: u64,
}

pub async fn run(args: PspArgs) -> Result<(), CliError> {
    let faults = Faults {
        latency_ms: args.latency_ms,
        error_rate: args.error_rate,
        timeout_rate: args.timeout_rate,
        timeout_delay_ms: args.timeout_delay_ms,
    };
    faults.validate().map_err(CliError::Other)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| CliError::Other(format!("cannot listen on {}: {e}", args.listen)))?;
    let mut server = PspServer::start(&args.name, listener, faults)
        .map_err(|e| CliError::Other(format!("cannot start the PSP simulator: {e}")))?;
    // The first stdout line names the address (for scripts and tests).
    println!("psp {} listening on http://{}", args.name, server.addr());
    tokio::select! {
        result = server.wait() => {
            result.map_err(|e| CliError::Other(format!("PSP simulator failed: {e}")))
        }
        () = stop_signal() => Ok(()),
    }
}
