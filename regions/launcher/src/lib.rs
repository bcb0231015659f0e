//! The local launcher: starts, from the PostgreSQL and Redis binaries
//! installed on the machine, the servers a topology needs, in a data
//! directory it owns, on free or configured ports, and stops them all when
//! the stack is dropped. `meridian up` and the tests both use it; there is
//! no other way Meridian starts a server.
//!
//! - [`binaries`]: finding `initdb`/`postgres`/`pg_basebackup`/`redis-server`.
//! - [`postgres`]: the catalog primary and its streaming replicas.
//! - [`redis`]: one Redis per region.
//! - [`orders`]: a region's order-shard databases (started on request:
//!   [`LocalStack::start_order_shards`]).
//! - [`process`]: owning a child process (log file, stop signal, kill, drop).
//! - [`local`]: what a local origin and edge are configured with, derived
//!   from the topology and the running servers (one function each, used by
//!   `meridian up` and the tests).
//! - [`stack_file`]: `.meridian/stack.json`, the contract between a running
//!   local stack and the tools and tests that use it.
//! - [`private_files`]: files and folders that hold secrets (0600/0700).
//! - [`raise_fd_limit`]: the open-file limit, as high as the system allows.

#![forbid(unsafe_code)]

pub mod binaries;
pub mod local;
pub mod orders;
pub mod postgres;
pub mod private_files;
pub mod process;
pub mod redis;
pub mod stack_file;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use meridian_topology::Topology;

pub use binaries::Binaries;
pub use orders::OrderServers;
pub use postgres::{Durability, PostgresServer, Role};
pub use redis::RedisServer;

/// How long a server may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The database that holds the catalog on the primary (and so on replicas).
pub const CATALOG_DATABASE: &str = "meridian";

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{0}")]
    MissingBinary(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{name} did not become ready: {reason}\n--- last log lines ---\n{log}")]
    NotReady {
        name: String,
        reason: String,
        log: String,
    },
    #[error("{name}: `{statement}` failed: {message}")]
    Sql {
        name: String,
        statement: String,
        message: String,
    },
    #[error("data directory {0} is not empty; remove it or choose another --data-dir")]
    DataDirInUse(PathBuf),
    #[error("{0} is not running")]
    NotRunning(String),
    #[error(transparent)]
    Topology(#[from] meridian_topology::TopologyError),
    /// A value the launcher put into a local config is not valid for its
    /// field (an empty secret, a URL of the wrong kind).
    #[error("local config: `{field}`: {source}")]
    Config {
        field: &'static str,
        #[source]
        source: meridian_config::ValueError,
    },
}

impl LaunchError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        LaunchError::Io {
            context: context.into(),
            source,
        }
    }
}

/// The servers of one region.
#[derive(Debug)]
pub struct RegionServers {
    pub name: String,
    /// Streaming replicas of the catalog, in the order the topology lists them.
    pub replicas: Vec<PostgresServer>,
    pub redis: RedisServer,
    /// The order-shard databases, once [`LocalStack::start_order_shards`]
    /// has run.
    pub orders: Option<OrderServers>,
}

/// Every server of a local stack. Dropping it stops them all (replicas and
/// Redis first, the primary last).
#[derive(Debug)]
pub struct LocalStack {
    pub bins: Binaries,
    pub regions: BTreeMap<String, RegionServers>,
    pub primary: PostgresServer,
    durability: Durability,
    root: PathBuf,
    /// Keeps a temporary root alive (and removes it) for tests.
    _temp: Option<tempfile::TempDir>,
}

impl LocalStack {
    /// Starts the primary, every region's replicas and Redis, in `root`
    /// (created if missing; must not hold an earlier stack's data).
    pub fn start(topology: &Topology, root: &Path) -> Result<Self, LaunchError> {
        Self::start_in(topology, root.to_path_buf(), None, Durability::Throwaway)
    }

    /// Like [`LocalStack::start`] in a fresh temporary directory that is
    /// removed when the stack is dropped (for tests).
    pub fn start_temporary(topology: &Topology) -> Result<Self, LaunchError> {
        Self::start_temporary_with(topology, Durability::Throwaway)
    }

    /// Like [`LocalStack::start_temporary`] with servers of the given
    /// durability (the benchmarks measure durable servers).
    pub fn start_temporary_with(
        topology: &Topology,
        durability: Durability,
    ) -> Result<Self, LaunchError> {
        let temp = tempfile::Builder::new()
            .prefix("meridian-stack-")
            .tempdir()
            .map_err(|e| LaunchError::io("create a temporary directory", e))?;
        let root = temp.path().to_path_buf();
        Self::start_in(topology, root, Some(temp), durability)
    }

    fn start_in(
        topology: &Topology,
        root: PathBuf,
        temp: Option<tempfile::TempDir>,
        durability: Durability,
    ) -> Result<Self, LaunchError> {
        let bins = Binaries::discover()?;
        std::fs::create_dir_all(&root)
            .map_err(|e| LaunchError::io(format!("create {}", root.display()), e))?;
        // PostgreSQL may run as another user (when we are root): it must be
        // able to reach its data directories below the root — and nobody
        // else needs to list it.
        std::fs::set_permissions(
            &root,
            std::fs::Permissions::from_mode(crate::private_files::data_dir_mode()),
        )
        .map_err(|e| LaunchError::io(format!("chmod {}", root.display()), e))?;

        let home = topology.home();
        let primary_endpoint = home
            .catalog
            .primary
            .clone()
            .ok_or_else(|| LaunchError::MissingBinary("home region has no primary".into()))?;
        let primary = with_port_retry(primary_endpoint.port, |port, retry| {
            let dir = root.join("pg-primary");
            clear_failed_attempt(&dir, retry);
            PostgresServer::start_primary(&bins, "catalog-primary", &dir, port, durability)
        })?;
        primary.sql("postgres", &format!("create database {CATALOG_DATABASE}"))?;

        let mut regions = BTreeMap::new();
        for region in topology.regions() {
            let mut replicas = Vec::new();
            for replica in &region.catalog.replicas {
                let server = with_port_retry(replica.port, |port, retry| {
                    let dir = root.join(format!("pg-{}", replica.name));
                    clear_failed_attempt(&dir, retry);
                    PostgresServer::start_replica(
                        &bins,
                        &primary,
                        &replica.name,
                        &dir,
                        port,
                        durability,
                    )
                })?;
                replicas.push(server);
            }
            let redis = with_port_retry(region.redis.port, |port, _| {
                RedisServer::start(
                    &bins,
                    &format!("redis-{}", region.name),
                    &root.join(format!("redis-{}", region.name)),
                    port,
                )
            })?;
            regions.insert(
                region.name.clone(),
                RegionServers {
                    name: region.name.clone(),
                    replicas,
                    redis,
                    orders: None,
                },
            );
        }
        Ok(LocalStack {
            bins,
            regions,
            primary,
            durability,
            root,
            _temp: temp,
        })
    }

    /// Starts every region's order-shard databases ([`orders`]).
    pub fn start_order_shards(&mut self, topology: &Topology) -> Result<(), LaunchError> {
        for region in topology.regions() {
            let Some(servers) = self.regions.get_mut(&region.name) else {
                continue;
            };
            if servers.orders.is_none() {
                servers.orders = Some(OrderServers::start(
                    &self.bins,
                    region,
                    &self.root,
                    self.durability,
                )?);
            }
        }
        Ok(())
    }

    /// Every started order shard's connection URL, by region and shard.
    pub fn order_shard_urls(&self) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for (region, servers) in &self.regions {
            if let Some(orders) = &servers.orders {
                for shard in orders.shards.keys() {
                    if let Some(url) = orders.url(shard) {
                        out.push((region.clone(), shard.clone(), url));
                    }
                }
            }
        }
        out
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn region(&self, name: &str) -> Option<&RegionServers> {
        self.regions.get(name)
    }

    pub fn region_mut(&mut self, name: &str) -> Option<&mut RegionServers> {
        self.regions.get_mut(name)
    }

    /// Waits until every running replica has replayed everything committed
    /// on the primary so far (after seeding, before serving).
    pub fn wait_replicas_caught_up(&self) -> Result<(), LaunchError> {
        let lsn = self
            .primary
            .sql("postgres", "select pg_current_wal_insert_lsn()")?;
        for region in self.regions.values() {
            for replica in region.replicas.iter().filter(|r| r.pid().is_some()) {
                replica.wait_replayed(&lsn)?;
            }
        }
        Ok(())
    }

    /// Catalog connection URL on the primary.
    pub fn primary_url(&self) -> String {
        self.primary.url(CATALOG_DATABASE)
    }
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        // Replicas and Redis first, so replicas do not spin reconnecting to a
        // primary that is already gone.
        for region in self.regions.values_mut() {
            for replica in &mut region.replicas {
                replica.stop();
            }
            region.redis.stop();
            if let Some(orders) = &mut region.orders {
                orders.stop();
            }
        }
        self.primary.stop();
    }
}

/// A free TCP port on loopback, as the kernel hands it out.
pub fn free_port() -> Result<u16, LaunchError> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| LaunchError::io("find a free port", e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| LaunchError::io("find a free port", e))
}

/// Runs `start` on `configured`, or — when it is 0 — on a free port, trying
/// a few ports in case another process takes the chosen one first.
pub(crate) fn with_port_retry<T>(
    configured: u16,
    mut start: impl FnMut(u16, bool) -> Result<T, LaunchError>,
) -> Result<T, LaunchError> {
    if configured != 0 {
        return start(configured, false);
    }
    let mut last = None;
    for attempt in 0..3 {
        match start(free_port()?, attempt > 0) {
            Ok(server) => return Ok(server),
            Err(error @ LaunchError::NotReady { .. }) => last = Some(error),
            Err(error) => return Err(error),
        }
    }
    Err(last.unwrap_or_else(|| LaunchError::MissingBinary("no port could be used".into())))
}

/// Removes what a failed start (port taken) left in `dir` before a retry.
pub(crate) fn clear_failed_attempt(dir: &Path, retry: bool) {
    if retry {
        let _ = std::fs::remove_dir_all(dir);
        let _ = std::fs::remove_file(dir.with_extension("log"));
    }
}

/// Raises the open-file limit as far as the system allows: the hard limit
/// up to `fs.nr_open` where permitted (root), else the soft limit up to the
/// hard one. A server that runs out of descriptors stops accepting on
/// every listener, its admin port included. Returns the limit in force.
pub fn raise_fd_limit() -> u64 {
    use rlimit::Resource;
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .unwrap_or(1 << 20)
        .min(1 << 20);
    let (soft, hard) = Resource::NOFILE.get().unwrap_or((0, 0));
    if hard < nr_open && Resource::NOFILE.set(nr_open, nr_open).is_ok() {
        return nr_open;
    }
    if soft < hard && Resource::NOFILE.set(hard, hard).is_ok() {
        return hard;
    }
    soft
}
