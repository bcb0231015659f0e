//! Finds the PostgreSQL and Redis server binaries installed on the machine,
//! and the system user PostgreSQL must run as when we are root.

use std::path::{Path, PathBuf};

use super::LaunchError;

/// What to install when something is missing (Debian/Ubuntu package names).
const INSTALL_HINT: &str = "install them with: apt-get install -y postgresql redis-server";

#[derive(Debug, Clone)]
pub struct Binaries {
    /// Directory holding `initdb`, `postgres`, `pg_basebackup`.
    pub pg_bin: PathBuf,
    pub redis_server: PathBuf,
    /// Uid and gid PostgreSQL runs as: `None` when we are not root, else the
    /// `postgres` system user (PostgreSQL refuses to run as root).
    pub pg_user: Option<(u32, u32)>,
}

impl Binaries {
    /// Looks on `PATH`, then under `/usr/lib/postgresql/*/bin` (newest first).
    pub fn discover() -> Result<Self, LaunchError> {
        let pg_bin = find_pg_bin().ok_or_else(|| {
            LaunchError::MissingBinary(format!(
                "PostgreSQL server binaries (initdb, postgres, pg_basebackup) not found on PATH or under /usr/lib/postgresql/*/bin; {INSTALL_HINT}"
            ))
        })?;
        let redis_server = find_on_path("redis-server").ok_or_else(|| {
            LaunchError::MissingBinary(format!("redis-server not found on PATH; {INSTALL_HINT}"))
        })?;
        let pg_user = if nix::unistd::geteuid().is_root() {
            let user = nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .ok_or_else(|| {
                    LaunchError::MissingBinary(
                        "running as root, but there is no `postgres` system user to run PostgreSQL as (PostgreSQL refuses to run as root); install the postgresql package or run as another user".into(),
                    )
                })?;
            Some((user.uid.as_raw(), user.gid.as_raw()))
        } else {
            None
        };
        Ok(Binaries {
            pg_bin,
            redis_server,
            pg_user,
        })
    }

    pub fn pg(&self, tool: &str) -> PathBuf {
        self.pg_bin.join(tool)
    }
}

fn has_pg_tools(dir: &Path) -> bool {
    ["initdb", "postgres", "pg_basebackup"]
        .iter()
        .all(|tool| dir.join(tool).is_file())
}

fn find_pg_bin() -> Option<PathBuf> {
    if let Some(initdb) = find_on_path("initdb") {
        // Resolve symlinks such as /usr/local/bin/initdb -> /usr/lib/postgresql/15/bin/initdb.
        let real = std::fs::canonicalize(&initdb).unwrap_or(initdb);
        if let Some(dir) = real.parent().filter(|d| has_pg_tools(d)) {
            return Some(dir.to_path_buf());
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            has_pg_tools(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}
