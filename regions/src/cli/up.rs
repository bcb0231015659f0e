//! `meridian up`: the whole local stack on embedded defaults.
//!
//! Starts (through the launcher) the catalog primary, a streaming replica
//! and a Redis per region, migrates and seeds the catalog, starts one origin
//! process per region, writes `.meridian/stack.json`, prints the endpoints,
//! and stops everything on Ctrl-C or SIGTERM.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Args;
use nix::sys::signal::Signal;

use super::{CliError, load_topology, stop_signal};
use crate::launcher::process::ManagedProcess;
use crate::launcher::{CATALOG_DATABASE, LocalStack, free_port};
use crate::local::origin_config;
use crate::stack_file::{DEFAULT_PATH, PostgresEndpoints, RegionEndpoints, StackFile};

/// How long an origin may take to answer `/readyz`.
const ORIGIN_READY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Only these regions (comma-separated); the home region is always needed.
    #[arg(long, value_delimiter = ',')]
    pub regions: Option<Vec<String>>,
    /// Directory of region files (default: ./regions/topology if present,
    /// else the topology built into the binary).
    #[arg(long)]
    pub topology: Option<PathBuf>,
    /// Where servers keep data and logs; wiped at start.
    #[arg(long, default_value = ".meridian/data")]
    pub data_dir: PathBuf,
    /// Where to write the stack file.
    #[arg(long, default_value = DEFAULT_PATH)]
    pub stack_file: PathBuf,
    /// Size of the demo catalog.
    #[arg(long, default_value_t = 1000)]
    pub products: u64,
    /// Admin bearer token (default: a random one, printed and in the stack file).
    #[arg(long, env = "MERIDIAN_ADMIN_TOKEN")]
    pub admin_token: Option<String>,
}

/// One origin child process.
struct OriginProcess {
    region: String,
    url: String,
    process: ManagedProcess,
}

pub async fn run(args: UpArgs) -> Result<(), CliError> {
    let mut topology = load_topology(args.topology.as_ref())?;
    if let Some(names) = &args.regions {
        topology = topology.restrict(names)?;
    }
    if let Ok(previous) = StackFile::read(&args.stack_file) {
        let live = previous.live_pids();
        if !live.is_empty() {
            return Err(CliError::Other(format!(
                "a stack from {} is still running (pids {live:?}); stop it (Ctrl-C in its terminal) first",
                args.stack_file.display()
            )));
        }
    }
    let base = args
        .stack_file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&base)
        .map_err(|e| CliError::Other(format!("{}: {e}", base.display())))?;
    if args.data_dir.exists() {
        std::fs::remove_dir_all(&args.data_dir).map_err(|e| {
            CliError::Other(format!("cannot wipe {}: {e}", args.data_dir.display()))
        })?;
    }
    let data_dir = std::path::absolute(&args.data_dir)
        .map_err(|e| CliError::Other(format!("{}: {e}", args.data_dir.display())))?;

    println!(
        "starting PostgreSQL and Redis for {} ...",
        topology.names().collect::<Vec<_>>().join(", ")
    );
    let stack = {
        let topology = topology.clone();
        let dir = data_dir.clone();
        tokio::task::spawn_blocking(move || LocalStack::start(&topology, &dir))
            .await
            .map_err(|e| CliError::Other(format!("launcher task failed: {e}")))??
    };
    meridian_origin::db::migrate(&stack.primary_url()).await?;
    let seeded =
        meridian_origin::catalog::seed::seed(&stack.primary_url(), args.products, true).await?;
    println!(
        "seeded {} products ({} variants)",
        seeded.products, seeded.variants
    );
    let stack =
        tokio::task::spawn_blocking(move || stack.wait_replicas_caught_up().map(|()| stack))
            .await
            .map_err(|e| CliError::Other(format!("launcher task failed: {e}")))??;

    let admin_token = args.admin_token.clone().unwrap_or_else(random_token);
    let exe = std::env::current_exe()
        .map_err(|e| CliError::Other(format!("cannot find the meridian binary: {e}")))?;
    let mut origins = Vec::new();
    for region in topology.regions() {
        let listen = &region.origin.listen;
        let port = if listen.port == 0 {
            free_port()?
        } else {
            listen.port
        };
        let addr: SocketAddr = format!("{}:{port}", listen.host)
            .parse()
            .map_err(|e| CliError::Other(format!("{}: origin.listen: {e}", region.name)))?;
        let config = origin_config(&stack, region, addr, &admin_token);
        let config_path = base.join(format!("origin-{}.toml", region.name));
        let text = toml::to_string(&config)
            .map_err(|e| CliError::Other(format!("cannot write origin config: {e}")))?;
        std::fs::write(&config_path, text)
            .map_err(|e| CliError::Other(format!("{}: {e}", config_path.display())))?;
        let mut command = Command::new(&exe);
        command.arg("origin").arg("--config").arg(&config_path);
        let log = data_dir.join(format!("origin-{}.log", region.name));
        let process = ManagedProcess::spawn(
            &format!("origin-{}", region.name),
            command,
            &log,
            Signal::SIGTERM,
        )?;
        origins.push(OriginProcess {
            region: region.name.clone(),
            url: format!("http://{addr}"),
            process,
        });
    }
    for origin in &mut origins {
        wait_ready(origin).await?;
    }

    let stack_file = describe(&stack, &topology, &origins, &admin_token, &data_dir);
    stack_file.write(&args.stack_file)?;
    print_summary(&stack_file, &args.stack_file);

    stop_signal().await;
    println!("\nstopping ...");
    for origin in &mut origins {
        origin.process.stop();
    }
    drop(stack);
    let _ = std::fs::remove_file(&args.stack_file);
    println!("stopped");
    Ok(())
}

fn random_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

async fn wait_ready(origin: &mut OriginProcess) -> Result<(), CliError> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + ORIGIN_READY_TIMEOUT;
    let url = format!("{}/readyz", origin.url);
    loop {
        if let Some(status) = origin.process.exited() {
            return Err(CliError::Other(format!(
                "origin for {} exited ({status}):\n{}",
                origin.region,
                origin.process.log_tail()
            )));
        }
        if let Ok(response) = client.get(&url).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(CliError::Other(format!(
                "origin for {} not ready within {ORIGIN_READY_TIMEOUT:?}; log: {}",
                origin.region,
                origin.process.log_path().display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn describe(
    stack: &LocalStack,
    topology: &meridian_topology::Topology,
    origins: &[OriginProcess],
    admin_token: &str,
    data_dir: &Path,
) -> StackFile {
    let mut regions = BTreeMap::new();
    for origin in origins {
        let Some(servers) = stack.region(&origin.region) else {
            continue;
        };
        let mut pids = BTreeMap::new();
        if let Some(pid) = origin.process.pid() {
            pids.insert("origin".to_string(), pid);
        }
        for replica in &servers.replicas {
            if let Some(pid) = replica.pid() {
                pids.insert(format!("postgres-{}", replica.name()), pid);
            }
        }
        if let Some(pid) = servers.redis.pid() {
            pids.insert("redis".to_string(), pid);
        }
        if topology.home().name == origin.region
            && let Some(pid) = stack.primary.pid()
        {
            pids.insert("postgres-primary".to_string(), pid);
        }
        regions.insert(
            origin.region.clone(),
            RegionEndpoints {
                origin: origin.url.clone(),
                edge: None,
                edge_admin: None,
                postgres: PostgresEndpoints {
                    primary: stack.primary_url(),
                    replicas: servers
                        .replicas
                        .iter()
                        .map(|r| (r.name().to_string(), r.url(CATALOG_DATABASE)))
                        .collect(),
                },
                redis: servers.redis.url(),
                pids,
            },
        );
    }
    StackFile {
        admin_token: admin_token.to_string(),
        home_region: topology.home().name.clone(),
        data_dir: data_dir.to_path_buf(),
        catalog_primary: stack.primary_url(),
        regions,
    }
}

fn print_summary(stack: &StackFile, path: &Path) {
    println!("\nMeridian is up.\n");
    println!(
        "{:<14} {:<24} {:<40} redis",
        "region", "origin", "replica(s)"
    );
    for (name, region) in &stack.regions {
        let replicas: Vec<&str> = region
            .postgres
            .replicas
            .values()
            .map(String::as_str)
            .collect();
        println!(
            "{:<14} {:<24} {:<40} {}",
            name,
            region.origin,
            replicas.join(" "),
            region.redis
        );
    }
    println!("\ncatalog primary: {}", stack.catalog_primary);
    println!("admin token:     {}", stack.admin_token);
    println!("stack file:      {}", path.display());
    if let Some((_, first)) = stack.regions.iter().next() {
        println!("\ntry: curl {}/v1/products/1", first.origin);
    }
    println!("\nCtrl-C stops everything.");
}
