//! `meridian up`: the whole local stack on embedded defaults.
//!
//! Starts (through the launcher) the catalog primary, a streaming replica
//! and a Redis per region, migrates and seeds the catalog, starts one origin
//! and one edge process per region (the edge with a self-signed TLS
//! certificate made for the run), writes `.meridian/stack.json`, prints the
//! endpoints, and stops everything on Ctrl-C or SIGTERM.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Args;
use meridian_launcher::local::{EdgeAddrs, GEO_DATABASE, LocalSecrets, edge_config, origin_config};
use meridian_launcher::private_files;
use meridian_launcher::process::ManagedProcess;
use meridian_launcher::stack_file::{
    DEFAULT_PATH, PostgresEndpoints, PspEndpoint, RegionEndpoints, StackFile,
};
use meridian_launcher::{CATALOG_DATABASE, LocalStack, free_port};
use meridian_origin::config::PspConfig;
use nix::sys::signal::Signal;

use crate::{CliError, load_topology, stop_signal};

/// How long an origin may take to answer `/readyz`.
const ORIGIN_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// The payment-provider simulators `up` starts: checkout falls back to the
/// second when the first's circuit breaker is open.
const PSP_NAMES: [&str; 2] = ["primary", "fallback"];

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

/// One origin or edge child process.
struct ServiceProcess {
    region: String,
    /// Base URL of the service.
    url: String,
    /// Where readiness is checked.
    ready_url: String,
    process: ManagedProcess,
}

/// One region's origin: its process and its internal listener.
struct OriginProcess {
    service: ServiceProcess,
    /// The internal listener (admin API, metrics, readiness).
    internal_url: String,
}

/// One region's edge: its process and its public addresses.
struct EdgeProcess {
    service: ServiceProcess,
    admin_url: String,
    tls_url: String,
}

/// `host:port`, or a free port on `host` when the configured port is 0.
fn resolve(endpoint: &meridian_topology::Endpoint, field: &str) -> Result<SocketAddr, CliError> {
    let port = if endpoint.port == 0 {
        free_port()?
    } else {
        endpoint.port
    };
    format!("{}:{port}", endpoint.host)
        .parse()
        .map_err(|e| CliError::Other(format!("{field}: {e}")))
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
    private_files::create_dir(&base)
        .map_err(|e| CliError::Other(format!("{}: {e}", base.display())))?;
    private_files::reset_data_dir(&args.data_dir).map_err(|e| CliError::Other(e.to_string()))?;
    let data_dir = std::path::absolute(&args.data_dir)
        .map_err(|e| CliError::Other(format!("{}: {e}", args.data_dir.display())))?;

    println!(
        "starting PostgreSQL and Redis for {} ...",
        topology.names().collect::<Vec<_>>().join(", ")
    );
    let stack = {
        let topology = topology.clone();
        let dir = data_dir.clone();
        tokio::task::spawn_blocking(move || {
            let mut stack = LocalStack::start(&topology, &dir)?;
            stack.start_order_shards(&topology)?;
            Ok::<_, meridian_launcher::LaunchError>(stack)
        })
        .await
        .map_err(|e| CliError::Other(format!("launcher task failed: {e}")))??
    };
    meridian_origin::db::migrate(&stack.primary_url()).await?;
    for (_, _, url) in stack.order_shard_urls() {
        meridian_origin::orders::shards::migrate(&url).await?;
    }
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
    let geo_database = std::path::absolute(GEO_DATABASE)
        .ok()
        .filter(|path| path.is_file());
    if geo_database.is_none() {
        println!(
            "no GeoIP database at {GEO_DATABASE} (run .ci/install-deps); edges locate clients by header only"
        );
    }
    let secrets = LocalSecrets::random(admin_token.clone(), geo_database);
    let exe = std::env::current_exe()
        .map_err(|e| CliError::Other(format!("cannot find the meridian binary: {e}")))?;
    // The payment simulators first: origins are configured with them.
    let mut psps = Vec::new();
    for name in PSP_NAMES {
        psps.push(start_psp(&exe, name, &data_dir).await?);
    }
    let psp_configs = psps
        .iter()
        .map(|p| {
            Ok(PspConfig {
                name: p.region.clone(),
                url: p
                    .url
                    .parse()
                    .map_err(|e| CliError::Other(format!("payment provider {}: {e}", p.url)))?,
            })
        })
        .collect::<Result<Vec<PspConfig>, CliError>>()?;
    let mut origins = Vec::new();
    for region in topology.regions() {
        let addr = resolve(
            &region.origin.listen,
            &format!("{}: origin.listen", region.name),
        )?;
        let internal = resolve(
            &region.origin.internal,
            &format!("{}: origin.internal", region.name),
        )?;
        let mut config = origin_config(&stack, region, addr, &secrets, &psp_configs)?;
        config.internal_listen = internal;
        let config_path = base.join(format!("origin-{}.toml", region.name));
        let text = toml::to_string(&config)
            .map_err(|e| CliError::Other(format!("cannot write origin config: {e}")))?;
        private_files::write(&config_path, text)
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
            service: ServiceProcess {
                region: region.name.clone(),
                url: format!("http://{addr}"),
                ready_url: format!("http://{internal}/readyz"),
                process,
            },
            internal_url: format!("http://{internal}"),
        });
    }
    for origin in &mut origins {
        wait_ready(&mut origin.service, "origin").await?;
    }

    let origin_addrs: BTreeMap<String, SocketAddr> = origins
        .iter()
        .filter_map(|o| {
            Some((
                o.service.region.clone(),
                o.service.url.strip_prefix("http://")?.parse().ok()?,
            ))
        })
        .collect();
    let (cert, key) = write_local_certificate(&data_dir)?;
    let mut edges = Vec::new();
    for region in topology.regions() {
        let field = |name: &str| format!("{}: edge.{name}", region.name);
        let addrs = EdgeAddrs {
            listen: resolve(&region.edge.listen, &field("listen"))?,
            admin: resolve(&region.edge.admin, &field("admin"))?,
            tls: Some(meridian_edge::config::TlsConfig {
                listen: resolve(&region.edge.tls, &field("tls"))?,
                cert: cert.clone(),
                key: key.clone(),
            }),
        };
        let redis = stack.region(&region.name).map(|s| s.redis.url());
        let mut config = edge_config(
            &topology,
            region,
            &origin_addrs,
            addrs.clone(),
            redis,
            &secrets,
        )?;
        // Kept across restarts of this edge within the run.
        config.modes.state_path = Some(data_dir.join(format!("edge-{}-modes.json", region.name)));
        let config_path = base.join(format!("edge-{}.toml", region.name));
        let text = toml::to_string(&config)
            .map_err(|e| CliError::Other(format!("cannot write edge config: {e}")))?;
        private_files::write(&config_path, text)
            .map_err(|e| CliError::Other(format!("{}: {e}", config_path.display())))?;
        let mut command = Command::new(&exe);
        command.arg("edge").arg("--config").arg(&config_path);
        let log = data_dir.join(format!("edge-{}.log", region.name));
        let process = ManagedProcess::spawn(
            &format!("edge-{}", region.name),
            command,
            &log,
            Signal::SIGINT,
        )?;
        let tls_url = addrs
            .tls
            .as_ref()
            .map(|t| format!("https://{}", t.listen))
            .unwrap_or_default();
        edges.push(EdgeProcess {
            service: ServiceProcess {
                region: region.name.clone(),
                url: format!("http://{}", addrs.listen),
                ready_url: format!("http://{}/readyz", addrs.admin),
                process,
            },
            admin_url: format!("http://{}", addrs.admin),
            tls_url,
        });
    }
    for edge in &mut edges {
        wait_ready(&mut edge.service, "edge").await?;
    }

    let mut stack_file = describe(&stack, &topology, &origins, &edges, &admin_token, &data_dir);
    stack_file.jwt_secret = Some(secrets.jwt_secret.clone());
    for psp in &psps {
        if let Some(pid) = psp.process.pid() {
            stack_file.psp.insert(
                psp.region.clone(),
                PspEndpoint {
                    url: psp.url.clone(),
                    pid,
                },
            );
        }
    }
    stack_file.write(&args.stack_file)?;
    print_summary(&stack_file, &args.stack_file);

    stop_signal().await;
    println!("\nstopping ...");
    for psp in &mut psps {
        psp.process.stop();
    }
    for edge in &mut edges {
        edge.service.process.stop();
    }
    for origin in &mut origins {
        origin.service.process.stop();
    }
    drop(stack);
    let _ = std::fs::remove_file(&args.stack_file);
    println!("stopped");
    Ok(())
}

fn random_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// A self-signed certificate for `localhost`/`127.0.0.1`, made for this
/// run (the local stack's TLS listeners); returns the PEM paths.
fn write_local_certificate(data_dir: &Path) -> Result<(PathBuf, PathBuf), CliError> {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .map_err(|e| CliError::Other(format!("cannot make a local TLS certificate: {e}")))?;
    let dir = data_dir.join("tls");
    let cert = dir.join("edge-cert.pem");
    let key = dir.join("edge-key.pem");
    let write = |path: &Path, text: String| {
        private_files::write(path, text)
            .map_err(|e| CliError::Other(format!("{}: {e}", path.display())))
    };
    private_files::create_dir(&dir)
        .map_err(|e| CliError::Other(format!("{}: {e}", dir.display())))?;
    write(&cert, certified.cert.pem())?;
    write(&key, certified.signing_key.serialize_pem())?;
    Ok((cert, key))
}

/// Starts the payment-provider simulator `name` on a free port.
async fn start_psp(exe: &Path, name: &str, data_dir: &Path) -> Result<ServiceProcess, CliError> {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let mut command = Command::new(exe);
    command
        .args(["psp", "--name", name, "--listen"])
        .arg(addr.to_string());
    let log = data_dir.join(format!("psp-{name}.log"));
    let process = ManagedProcess::spawn(&format!("psp-{name}"), command, &log, Signal::SIGTERM)?;
    let mut service = ServiceProcess {
        // The PSP belongs to no region; its name stands in.
        region: name.to_string(),
        url: format!("http://{addr}"),
        ready_url: format!("http://{addr}/healthz"),
        process,
    };
    wait_ready(&mut service, "payment simulator").await?;
    Ok(service)
}

async fn wait_ready(service: &mut ServiceProcess, kind: &str) -> Result<(), CliError> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + ORIGIN_READY_TIMEOUT;
    loop {
        if let Some(status) = service.process.exited() {
            return Err(CliError::Other(format!(
                "{kind} for {} exited ({status}):\n{}",
                service.region,
                service.process.log_tail()
            )));
        }
        if let Ok(response) = client.get(&service.ready_url).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(CliError::Other(format!(
                "{kind} for {} not ready within {ORIGIN_READY_TIMEOUT:?}; log: {}",
                service.region,
                service.process.log_path().display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn describe(
    stack: &LocalStack,
    topology: &meridian_topology::Topology,
    origins: &[OriginProcess],
    edges: &[EdgeProcess],
    admin_token: &str,
    data_dir: &Path,
) -> StackFile {
    let mut regions = BTreeMap::new();
    for OriginProcess {
        service: origin,
        internal_url,
    } in origins
    {
        let Some(servers) = stack.region(&origin.region) else {
            continue;
        };
        let mut pids = BTreeMap::new();
        if let Some(pid) = origin.process.pid() {
            pids.insert("origin".to_string(), pid);
        }
        let edge = edges.iter().find(|e| e.service.region == origin.region);
        if let Some(pid) = edge.and_then(|e| e.service.process.pid()) {
            pids.insert("edge".to_string(), pid);
        }
        for replica in &servers.replicas {
            if let Some(pid) = replica.pid() {
                pids.insert(format!("postgres-{}", replica.name()), pid);
            }
        }
        if let Some(pid) = servers.redis.pid() {
            pids.insert("redis".to_string(), pid);
        }
        let mut orders = BTreeMap::new();
        if let Some(order_servers) = &servers.orders {
            for server in &order_servers.servers {
                if let Some(pid) = server.pid() {
                    pids.insert(format!("postgres-{}", server.name()), pid);
                }
            }
            for shard in order_servers.shards.keys() {
                if let Some(url) = order_servers.url(shard) {
                    orders.insert(shard.clone(), url);
                }
            }
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
                origin_internal: internal_url.clone(),
                edge: edge.map(|e| e.service.url.clone()),
                edge_admin: edge.map(|e| e.admin_url.clone()),
                edge_tls: edge.map(|e| e.tls_url.clone()),
                postgres: PostgresEndpoints {
                    primary: stack.primary_url(),
                    replicas: servers
                        .replicas
                        .iter()
                        .map(|r| (r.name().to_string(), r.url(CATALOG_DATABASE)))
                        .collect(),
                },
                orders,
                redis: servers.redis.url(),
                pids,
            },
        );
    }
    StackFile {
        admin_token: admin_token.to_string(),
        jwt_secret: None,
        home_region: topology.home().name.clone(),
        data_dir: data_dir.to_path_buf(),
        catalog_primary: stack.primary_url(),
        regions,
        psp: BTreeMap::new(),
    }
}

/// A URL as printed: any password replaced (it stays in the private stack
/// file).
fn without_password(url: &str) -> String {
    match url.split_once("://").and_then(|(scheme, rest)| {
        let (userinfo, host) = rest.split_once('@')?;
        let user = userinfo.split(':').next().unwrap_or_default();
        Some(format!("{scheme}://{user}:***@{host}"))
    }) {
        Some(masked) => masked,
        None => url.to_string(),
    }
}

fn print_summary(stack: &StackFile, path: &Path) {
    println!("\nMeridian is up.\n");
    println!(
        "{:<14} {:<24} {:<24} {:<24} {:<40} redis",
        "region", "edge", "edge (TLS)", "origin", "replica(s)"
    );
    for (name, region) in &stack.regions {
        let replicas: Vec<&str> = region
            .postgres
            .replicas
            .values()
            .map(String::as_str)
            .collect();
        println!(
            "{:<14} {:<24} {:<24} {:<24} {:<40} {}",
            name,
            region.edge.as_deref().unwrap_or("-"),
            region.edge_tls.as_deref().unwrap_or("-"),
            region.origin,
            replicas.join(" "),
            without_password(&region.redis)
        );
    }
    println!("\ncatalog primary: {}", stack.catalog_primary);
    for (name, psp) in &stack.psp {
        println!("payments ({name}): {}", psp.url);
    }
    println!(
        "stack file:      {} (private: the admin token is its `admin_token`)",
        path.display()
    );
    if let Some((_, first)) = stack.regions.iter().next() {
        let entry = first.edge.as_deref().unwrap_or(&first.origin);
        println!("\ntry: curl -i {entry}/v1/products/1");
    }
    println!("\nCtrl-C stops everything.");
}
