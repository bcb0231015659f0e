//! The order databases of a region: each shard of the topology's shard map
//! is a database; shards without a fixed port share one PostgreSQL server
//! per region, a shard with a fixed port gets a server on that port (so a
//! topology, or a test, can put shards on separate servers and stop one).

use std::collections::BTreeMap;
use std::path::Path;

use meridian_topology::RegionFile;

use super::{
    Binaries, Durability, LaunchError, PostgresServer, clear_failed_attempt, with_port_retry,
};

/// One shard's place: the server (index into [`OrderServers::servers`]) and
/// the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardPlace {
    pub server: usize,
    pub database: String,
}

/// A region's order servers and where each shard lives.
#[derive(Debug)]
pub struct OrderServers {
    pub servers: Vec<PostgresServer>,
    /// Shard name → place.
    pub shards: BTreeMap<String, ShardPlace>,
}

impl OrderServers {
    /// Starts the servers of `region`'s shards under `root` and creates each
    /// shard's database.
    pub fn start(
        bins: &Binaries,
        region: &RegionFile,
        root: &Path,
        durability: Durability,
    ) -> Result<Self, LaunchError> {
        let mut servers: Vec<PostgresServer> = Vec::new();
        // Configured port (0 = the region's shared server) → server index.
        let mut by_port: BTreeMap<u16, usize> = BTreeMap::new();
        let mut shards = BTreeMap::new();
        for shard in &region.orders.shards {
            let index = match by_port.get(&shard.port) {
                Some(index) => *index,
                None => {
                    let name = if shard.port == 0 {
                        format!("orders-{}", region.name)
                    } else {
                        format!("orders-{}", shard.name)
                    };
                    let server = with_port_retry(shard.port, |port, retry| {
                        let dir = root.join(format!("pg-{name}"));
                        clear_failed_attempt(&dir, retry);
                        PostgresServer::start_primary(bins, &name, &dir, port, durability)
                    })?;
                    servers.push(server);
                    by_port.insert(shard.port, servers.len() - 1);
                    servers.len() - 1
                }
            };
            // The topology allows only lowercase letters, digits and `_`.
            servers[index].sql(
                "postgres",
                &format!("create database \"{}\"", shard.database),
            )?;
            shards.insert(
                shard.name.clone(),
                ShardPlace {
                    server: index,
                    database: shard.database.clone(),
                },
            );
        }
        Ok(Self { servers, shards })
    }

    /// Connection URL of shard `name`.
    pub fn url(&self, name: &str) -> Option<String> {
        let place = self.shards.get(name)?;
        Some(self.servers.get(place.server)?.url(&place.database))
    }

    pub fn stop(&mut self) {
        for server in &mut self.servers {
            server.stop();
        }
    }
}
