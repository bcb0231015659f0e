//! The `meridian` subcommands. Each lives in its own module; this one holds
//! the argument definitions and the dispatch.
//!
//! - [`up`]: start the local multi-region stack.
//! - [`seed`]: load the deterministic demo catalog.
//! - [`origin`]: run one origin process from a config file.
//! - [`edge`]: run one edge process from a config file.
//! - [`check_config`]: `origin|edge --check-config FILE`, through the same
//!   loader as the processes.
//! - [`token`]: mint a shopper token for local use.
//! - [`psp`]: run one payment-provider simulator.
//! - [`ops`]: `status`, `degrade`, `features`, `purge`, `modes history`
//!   against a running stack.

pub mod check_config;
pub mod edge;
pub mod ops;
pub mod origin;
pub mod psp;
pub mod seed;
pub mod token;
pub mod up;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "meridian",
    version,
    about = "Run and operate the Meridian multi-region stack"
)]
pub struct Cli {
    /// Log as JSON lines (production) instead of human-readable text.
    #[arg(long, global = true, env = "MERIDIAN_LOG_JSON")]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the whole local stack (PostgreSQL primary and replicas, Redis,
    /// origins) for every region; Ctrl-C stops everything.
    Up(up::UpArgs),
    /// Load the deterministic demo catalog into an empty catalog.
    Seed(seed::SeedArgs),
    /// Run one origin from a config file (what `up` starts per region).
    Origin(origin::OriginArgs),
    /// Run one edge proxy from a config file (what `up` starts per region;
    /// also a standalone edge in front of any HTTP origin).
    Edge(edge::EdgeArgs),
    /// Mint a shopper token (JWT: user id, home region, expiry) signed with
    /// the local stack's secret, for `Authorization: Bearer` or the
    /// `meridian_session` cookie.
    Token(token::TokenArgs),
    /// Run one payment-provider simulator (payment intents, idempotency
    /// keys, injected latency, errors and timeouts, a ledger).
    Psp(psp::PspArgs),
    /// Every region's health, lag, cache hit ratio, request and error rate
    /// and operating mode.
    Status(ops::status::StatusArgs),
    /// Set a region's (or the global) operating mode; waits until every
    /// edge and origin applied it and prints how long each took.
    Degrade(ops::modes::DegradeArgs),
    /// Switch features (recommendations, search-suggestions, reviews,
    /// checkout-queueing) on or off for a region or globally.
    Features(ops::modes::FeaturesArgs),
    /// Purge cached responses by tag or URL in every region's edge.
    Purge(ops::purge::PurgeArgs),
    /// Operating modes: `history` (the audit log).
    Modes(ops::modes::ModesArgs),
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Launch(#[from] meridian_launcher::LaunchError),
    #[error(transparent)]
    Topology(#[from] meridian_topology::TopologyError),
    #[error(transparent)]
    StackFile(#[from] meridian_launcher::stack_file::StackFileError),
    #[error(transparent)]
    Config(#[from] meridian_origin::config::ConfigError),
    #[error(transparent)]
    Start(#[from] meridian_origin::app::StartError),
    #[error(transparent)]
    Db(#[from] meridian_origin::db::DbError),
    #[error(transparent)]
    Seed(#[from] meridian_origin::catalog::seed::SeedError),
    #[error(transparent)]
    EdgeConfig(#[from] meridian_edge::config::ConfigError),
    #[error(transparent)]
    EdgeStart(#[from] meridian_edge::StartError),
    #[error(transparent)]
    Telemetry(#[from] meridian_telemetry::TelemetryError),
    #[error("{0}")]
    Other(String),
}

impl Command {
    /// `origin|edge --check-config FILE`, when that is what was asked.
    fn config_check(&self) -> Option<(check_config::Kind, &std::path::Path)> {
        match self {
            Command::Origin(args) => args
                .check_config
                .as_deref()
                .map(|path| (check_config::Kind::Origin, path)),
            Command::Edge(args) => args
                .check_config
                .as_deref()
                .map(|path| (check_config::Kind::Edge, path)),
            _ => None,
        }
    }
}

pub fn run(cli: Cli) -> Result<(), CliError> {
    // A config check starts nothing (no runtime, no file-limit change).
    if let Some((kind, path)) = cli.command.config_check() {
        init_logs(cli.log_json);
        return check_config::run(kind, path);
    }
    // The edge runs its own (pingora) runtimes. It and the origin set up
    // their logs and trace export once their config is loaded.
    let command = match cli.command {
        Command::Edge(args) => return edge::run(args, cli.log_json),
        // Nothing asynchronous to do.
        Command::Token(args) => {
            init_logs(cli.log_json);
            return token::run(args);
        }
        Command::Origin(args) => Command::Origin(args),
        other => {
            init_logs(cli.log_json);
            if matches!(other, Command::Up(_)) {
                raise_fd_limit();
            }
            other
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Other(format!("cannot start the async runtime: {e}")))?;
    match command {
        Command::Edge(_) | Command::Token(_) => Ok(()),
        Command::Up(args) => runtime.block_on(up::run(args)),
        Command::Seed(args) => runtime.block_on(seed::run(args)),
        Command::Origin(args) => runtime.block_on(origin::run(args, cli.log_json)),
        Command::Psp(args) => runtime.block_on(psp::run(args)),
        Command::Status(args) => runtime.block_on(ops::status::run(args)),
        Command::Degrade(args) => runtime.block_on(ops::modes::degrade(args)),
        Command::Features(args) => runtime.block_on(ops::modes::features(args)),
        Command::Purge(args) => runtime.block_on(ops::purge::run(args)),
        Command::Modes(args) => match args.command {
            ops::modes::ModesCommand::History(args) => runtime.block_on(ops::modes::history(args)),
        },
    }
}

/// Log lines (text, or JSON with `--log-json`) for the commands that run
/// no edge or origin; those log as their config says
/// ([`meridian_telemetry::Telemetry::start`]).
pub fn init_logs(json: bool) {
    let format = if json {
        meridian_telemetry::LogFormat::Json
    } else {
        meridian_telemetry::LogFormat::Text
    };
    // Nothing to flush later; fails only when a subscriber is already
    // installed, which then stays.
    let _ = meridian_telemetry::Telemetry::logs(format);
}

/// Raises the open-file limit as far as the system allows (servers only)
/// and logs it.
pub fn raise_fd_limit() {
    let limit = meridian_launcher::raise_fd_limit();
    tracing::info!(limit, "open-file limit");
}

/// The topology from `dir`, or the shipped one (embedded) when `dir` is
/// `None` and `regions/topology` is not in the working directory.
pub fn load_topology(dir: Option<&PathBuf>) -> Result<meridian_topology::Topology, CliError> {
    let local = PathBuf::from(meridian_topology::DEFAULT_TOPOLOGY_DIR);
    Ok(match dir {
        Some(dir) => meridian_topology::Topology::load_dir(dir)?,
        None if local.is_dir() => meridian_topology::Topology::load_dir(&local)?,
        None => meridian_topology::Topology::embedded()?,
    })
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn stop_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
