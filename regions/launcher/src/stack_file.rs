//! `.meridian/stack.json`: what a running local stack looks like from the
//! outside — the admin token, every region's endpoints, and the pid of every
//! process started for it. Tools (`meridian seed`, later `status`, `degrade`)
//! and tests read it; `meridian up` writes it and removes it on exit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where `meridian up` writes the stack file, relative to the working directory.
pub const DEFAULT_PATH: &str = ".meridian/stack.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StackFile {
    /// Bearer token for every admin API of the local stack.
    pub admin_token: String,
    /// HS256 secret of shopper tokens (JWT with `sub` and `region`) that the
    /// edges verify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_secret: Option<String>,
    pub home_region: String,
    /// Where the servers keep their data and logs.
    pub data_dir: PathBuf,
    /// The catalog primary (in the home region).
    pub catalog_primary: String,
    pub regions: BTreeMap<String, RegionEndpoints>,
    /// Payment-provider simulators by name (`primary`, `fallback`).
    #[serde(default)]
    pub psp: BTreeMap<String, PspEndpoint>,
}

/// One payment-provider simulator of the stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PspEndpoint {
    /// Base URL of its API.
    pub url: String,
    pub pid: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionEndpoints {
    /// Base URL of the region's origin (shopper routes).
    pub origin: String,
    /// Base URL of the origin's internal listener: the admin API,
    /// `/metrics`, `/readyz` (what the ops commands use).
    pub origin_internal: String,
    /// Base URL of the region's edge (plain HTTP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge: Option<String>,
    /// The edge's admin API (metrics, health, purge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge_admin: Option<String>,
    /// The edge's TLS listener (HTTP/1.1 and HTTP/2; self-signed locally).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge_tls: Option<String>,
    pub postgres: PostgresEndpoints,
    /// Order shard name → URL of its database.
    #[serde(default)]
    pub orders: BTreeMap<String, String>,
    pub redis: String,
    /// Process name → pid, for every process started for this region.
    pub pids: BTreeMap<String, u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostgresEndpoints {
    /// The catalog primary this region writes to.
    pub primary: String,
    /// Replica name → URL of this region's replicas.
    pub replicas: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StackFileError {
    #[error("{path}: {source} (is a stack running? start one with `meridian up`)")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a stack file: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: cannot write: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl StackFile {
    pub fn read(path: &Path) -> Result<Self, StackFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| StackFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| StackFileError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Writes atomically (temporary file, then rename).
    pub fn write(&self, path: &Path) -> Result<(), StackFileError> {
        let error = |source| StackFileError::Write {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::private_files::create_dir(dir).map_err(error)?;
        }
        let text = serde_json::to_string_pretty(self).map_err(|e| error(e.into()))?;
        let temp = path.with_extension("json.tmp");
        // It holds the admin token: owner only.
        crate::private_files::write(&temp, text).map_err(error)?;
        std::fs::rename(&temp, path).map_err(error)
    }

    /// Pids in this file that still belong to a running process.
    pub fn live_pids(&self) -> Vec<u32> {
        self.regions
            .values()
            .flat_map(|r| r.pids.values().copied())
            .chain(self.psp.values().map(|p| p.pid))
            .filter(|pid| Path::new(&format!("/proc/{pid}")).exists())
            .collect()
    }
}
