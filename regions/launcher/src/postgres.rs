//! PostgreSQL servers started from the installed binaries: the catalog
//! primary (`initdb`) and streaming replicas (`pg_basebackup -R`, real
//! streaming replication). Tuned for throwaway local use — no fsync —
//! unless started [`Durability::Durable`] (benchmarks: fsync and full-page
//! writes on, as in production).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::process::{ManagedProcess, log_tail};
use super::{Binaries, LaunchError, READY_TIMEOUT};

/// The superuser every local server is created with (trust auth, loopback only).
pub const SUPERUSER: &str = "postgres";

/// Settings for local, throwaway servers. Durability is traded for speed:
/// the local stack is for development and tests, never for real data.
const SERVER_SETTINGS: &[(&str, &str)] = &[
    ("listen_addresses", "127.0.0.1"),
    ("unix_socket_directories", ""),
    ("fsync", "off"),
    // With fsync off a commit costs no disk flush, so commits stay
    // synchronous: WAL reaches replicas as soon as it is committed.
    ("synchronous_commit", "on"),
    ("wal_writer_delay", "10ms"),
    ("full_page_writes", "off"),
    ("max_connections", "200"),
    ("shared_buffers", "32MB"),
    ("wal_level", "replica"),
    ("max_wal_senders", "20"),
    ("wal_keep_size", "512MB"),
    ("hot_standby", "on"),
    ("hot_standby_feedback", "on"),
    ("wal_receiver_status_interval", "1s"),
    ("log_min_messages", "warning"),
    ("log_line_prefix", "%m [%p] %a "),
];

/// Whether a server flushes its commits to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `fsync=off`, `full_page_writes=off`: for development and tests.
    #[default]
    Throwaway,
    /// `fsync=on`, `full_page_writes=on`, `synchronous_commit=on`: what the
    /// benchmarks measure against (with `pg_stat_statements` loaded, so
    /// they can show where the server's time went).
    Durable,
}

impl Durability {
    fn overrides(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Durability::Throwaway => &[],
            Durability::Durable => &[
                ("fsync", "on"),
                ("full_page_writes", "on"),
                ("shared_buffers", "256MB"),
                // Where the time goes, for the benchmarks' profiles.
                ("shared_preload_libraries", "pg_stat_statements"),
                ("pg_stat_statements.track", "all"),
            ],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
}

#[derive(Debug)]
pub struct PostgresServer {
    name: String,
    role: Role,
    port: u16,
    data_dir: PathBuf,
    bins: Binaries,
    durability: Durability,
    process: Option<ManagedProcess>,
}

impl PostgresServer {
    /// Creates a new cluster in `data_dir` (must not exist or be empty) and
    /// starts it as a primary on `port`.
    pub fn start_primary(
        bins: &Binaries,
        name: &str,
        data_dir: &Path,
        port: u16,
        durability: Durability,
    ) -> Result<Self, LaunchError> {
        prepare_data_dir(bins, data_dir)?;
        let mut initdb = Command::new(bins.pg("initdb"));
        initdb.arg("-D").arg(data_dir).args([
            "-U",
            SUPERUSER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-locale",
            "-N",
        ]);
        run_tool(bins, name, initdb, &log_file(data_dir))?;
        let mut server = PostgresServer {
            name: name.to_string(),
            role: Role::Primary,
            port,
            data_dir: data_dir.to_path_buf(),
            bins: bins.clone(),
            durability,
            process: None,
        };
        server.start()?;
        Ok(server)
    }

    /// Clones `primary` with `pg_basebackup -R` into `data_dir` and starts it
    /// as a hot standby streaming from the primary; returns once it streams.
    pub fn start_replica(
        bins: &Binaries,
        primary: &PostgresServer,
        name: &str,
        data_dir: &Path,
        port: u16,
        durability: Durability,
    ) -> Result<Self, LaunchError> {
        prepare_data_dir(bins, data_dir)?;
        let mut basebackup = Command::new(bins.pg("pg_basebackup"));
        basebackup
            .arg("-d")
            .arg(format!(
                "host=127.0.0.1 port={} user={SUPERUSER} application_name={name}",
                primary.port
            ))
            .arg("-D")
            .arg(data_dir)
            .args(["-R", "-X", "stream", "--checkpoint=fast", "--no-sync"]);
        run_tool(bins, name, basebackup, &log_file(data_dir))?;
        let mut server = PostgresServer {
            name: name.to_string(),
            role: Role::Replica,
            port,
            data_dir: data_dir.to_path_buf(),
            bins: bins.clone(),
            durability,
            process: None,
        };
        server.start()?;
        server.wait_streaming()?;
        Ok(server)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(ManagedProcess::pid)
    }

    /// A connection URL for `database` as the local superuser.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Starts the server (again) on its port; waits until it accepts queries.
    pub fn start(&mut self) -> Result<(), LaunchError> {
        if self.process.is_some() {
            return Ok(());
        }
        let mut command = Command::new(self.bins.pg("postgres"));
        command
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-c", &format!("cluster_name={}", self.name)]);
        // Later `-c` options win: the durability overrides come last.
        for (key, value) in SERVER_SETTINGS.iter().chain(self.durability.overrides()) {
            command.arg("-c").arg(format!("{key}={value}"));
        }
        as_pg_user(&self.bins, &mut command);
        self.process = Some(ManagedProcess::spawn(
            &self.name,
            command,
            &log_file(&self.data_dir),
            // SIGINT is PostgreSQL's "fast" shutdown: roll back and exit cleanly.
            Signal::SIGINT,
        )?);
        self.wait_ready()
    }

    /// Stops the server cleanly (fast shutdown).
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop();
        }
    }

    /// Kills the server at once (SIGKILL on the postmaster), as a crash would.
    /// Its backends notice and exit; the data directory stays for `start`.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Runs one SQL statement with `psql` and returns its unaligned output.
    pub fn sql(&self, database: &str, statement: &str) -> Result<String, LaunchError> {
        let output = Command::new(self.bins.pg("psql"))
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.url(database))
            .arg("-c")
            .arg(statement)
            .output()
            .map_err(|e| LaunchError::io(format!("run psql against {}", self.name), e))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
        } else {
            Err(LaunchError::Sql {
                name: self.name.clone(),
                statement: statement.to_string(),
                message: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            })
        }
    }

    /// Waits until this replica has replayed the primary's WAL up to `lsn`
    /// (text form, as `pg_current_wal_insert_lsn()` prints it).
    pub fn wait_replayed(&self, lsn: &str) -> Result<(), LaunchError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let query = format!("select pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn");
        loop {
            if self.sql("postgres", &query)? == "t" {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(LaunchError::NotReady {
                    name: self.name.clone(),
                    reason: format!("did not replay up to {lsn}"),
                    log: log_tail(&log_file(&self.data_dir)),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn wait_ready(&mut self) -> Result<(), LaunchError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let exited = self.process.as_mut().and_then(ManagedProcess::exited);
            if let Some(status) = exited {
                self.process = None;
                return Err(LaunchError::NotReady {
                    name: self.name.clone(),
                    reason: format!("exited ({status})"),
                    log: log_tail(&log_file(&self.data_dir)),
                });
            }
            if self.sql("postgres", "select 1").is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(LaunchError::NotReady {
                    name: self.name.clone(),
                    reason: format!("not accepting queries within {READY_TIMEOUT:?}"),
                    log: log_tail(&log_file(&self.data_dir)),
                });
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn wait_streaming(&self) -> Result<(), LaunchError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let status = self.sql("postgres", "select status from pg_stat_wal_receiver")?;
            if status == "streaming" {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(LaunchError::NotReady {
                    name: self.name.clone(),
                    reason: format!("replication is `{status}`, not streaming"),
                    log: log_tail(&log_file(&self.data_dir)),
                });
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

fn log_file(data_dir: &Path) -> PathBuf {
    let name = data_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "postgres".into());
    data_dir.with_file_name(format!("{name}.log"))
}

/// Creates an empty data directory owned by the server's user, mode 0700.
fn prepare_data_dir(bins: &Binaries, data_dir: &Path) -> Result<(), LaunchError> {
    let context = |what: &str| format!("{what} {}", data_dir.display());
    if data_dir.exists() {
        let empty = std::fs::read_dir(data_dir)
            .map_err(|e| LaunchError::io(context("read"), e))?
            .next()
            .is_none();
        if !empty {
            return Err(LaunchError::DataDirInUse(data_dir.to_path_buf()));
        }
    } else {
        std::fs::create_dir_all(data_dir).map_err(|e| LaunchError::io(context("create"), e))?;
    }
    if let Some((uid, gid)) = bins.pg_user {
        std::os::unix::fs::chown(data_dir, Some(uid), Some(gid))
            .map_err(|e| LaunchError::io(context("chown"), e))?;
    }
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| LaunchError::io(context("chmod"), e))
}

fn as_pg_user(bins: &Binaries, command: &mut Command) {
    if let Some((uid, gid)) = bins.pg_user {
        command.uid(uid).gid(gid);
    }
}

/// Runs a one-shot tool (initdb, pg_basebackup) to completion.
fn run_tool(
    bins: &Binaries,
    name: &str,
    mut command: Command,
    log: &Path,
) -> Result<(), LaunchError> {
    as_pg_user(bins, &mut command);
    let tool = command.get_program().to_string_lossy().into_owned();
    let output = command
        .output()
        .map_err(|e| LaunchError::io(format!("run {tool} for {name}"), e))?;
    let _ = std::fs::write(
        log,
        [output.stdout.as_slice(), output.stderr.as_slice()].concat(),
    );
    if output.status.success() {
        Ok(())
    } else {
        Err(LaunchError::NotReady {
            name: name.to_string(),
            reason: format!("{tool} failed ({})", output.status),
            log: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}
