//! A Redis server started from the installed `redis-server`, on loopback,
//! persisted with an append-only file in its directory (carts and
//! flash-sale counters survive a restart; no RDB snapshots), and
//! password-protected (`requirepass`, a random password per server, carried
//! in [`RedisServer::url`]): another local user cannot publish on its
//! channels or read its carts.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::process::ManagedProcess;
use super::{Binaries, LaunchError, READY_TIMEOUT};

#[derive(Debug)]
pub struct RedisServer {
    name: String,
    port: u16,
    password: String,
    dir: PathBuf,
    redis_server: PathBuf,
    process: ManagedProcess,
}

impl RedisServer {
    pub fn start(bins: &Binaries, name: &str, dir: &Path, port: u16) -> Result<Self, LaunchError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| LaunchError::io(format!("create {}", dir.display()), e))?;
        let password = format!("{:032x}", rand::random::<u128>());
        let process = spawn(&bins.redis_server, name, dir, port, &password)?;
        let mut server = RedisServer {
            name: name.to_string(),
            port,
            password,
            dir: dir.to_path_buf(),
            redis_server: bins.redis_server.clone(),
            process,
        };
        server.wait_ready()?;
        Ok(server)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The password (`redis-cli -a`).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The URL clients connect with, password included.
    pub fn url(&self) -> String {
        format!("redis://:{}@127.0.0.1:{}", self.password, self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Stops the server cleanly.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Starts the server again on the same port (after `kill` or `stop`).
    pub fn restart(&mut self) -> Result<(), LaunchError> {
        self.process.stop();
        self.process = spawn(
            &self.redis_server,
            &self.name,
            &self.dir,
            self.port,
            &self.password,
        )?;
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), LaunchError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.process.exited() {
                return Err(LaunchError::NotReady {
                    name: self.name.clone(),
                    reason: format!("exited ({status})"),
                    log: self.process.log_tail(),
                });
            }
            if ping(self.port, &self.password).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(LaunchError::NotReady {
                    name: self.name.clone(),
                    reason: format!("no PONG within {READY_TIMEOUT:?}"),
                    log: self.process.log_tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn spawn(
    redis_server: &Path,
    name: &str,
    dir: &Path,
    port: u16,
    password: &str,
) -> Result<ManagedProcess, LaunchError> {
    let mut command = Command::new(redis_server);
    command
        .arg("--port")
        .arg(port.to_string())
        .args(["--requirepass", password])
        // Carts and flash-sale counters are data: an append-only file
        // (fsync every second) keeps them across a restart.
        .args(["--bind", "127.0.0.1", "--save", ""])
        .args(["--appendonly", "yes", "--appendfsync", "everysec"])
        .args(["--daemonize", "no", "--logfile", ""])
        .arg("--dir")
        .arg(dir);
    ManagedProcess::spawn(name, command, &dir.join("redis.log"), Signal::SIGTERM)
}

/// `AUTH` and one `PING` over a fresh connection.
fn ping(port: u16, password: &str) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.write_all(format!("AUTH {password}\r\nPING\r\n").as_bytes())?;
    let mut reply = [0u8; 12];
    stream.read_exact(&mut reply)?;
    if &reply == b"+OK\r\n+PONG\r\n" {
        Ok(())
    } else {
        Err(std::io::Error::other("unexpected reply to PING"))
    }
}
