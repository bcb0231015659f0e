//! A child process the launcher owns: started with its output in a log file,
//! stopped with a chosen signal (then SIGKILL after a grace period), and
//! stopped on drop so no server outlives the stack or test that started it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::LaunchError;

/// How long a server gets to shut down on its own before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(15);

#[derive(Debug)]
pub struct ManagedProcess {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    stop_signal: Signal,
}

impl ManagedProcess {
    /// Spawns `command` with stdout and stderr appended to `log`.
    pub fn spawn(
        name: &str,
        mut command: Command,
        log: &Path,
        stop_signal: Signal,
    ) -> Result<Self, LaunchError> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|source| LaunchError::io(format!("open log {}", log.display()), source))?;
        let err = out
            .try_clone()
            .map_err(|source| LaunchError::io(format!("open log {}", log.display()), source))?;
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        let program = command.get_program().to_string_lossy().into_owned();
        let child = command
            .spawn()
            .map_err(|source| LaunchError::io(format!("start {name} ({program})"), source))?;
        Ok(ManagedProcess {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
            stop_signal,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// `Some(reason)` if the process has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.as_mut().map(Child::try_wait) {
            None => Some("not running".into()),
            Some(Ok(Some(status))) => Some(status.to_string()),
            Some(Ok(None)) => None,
            Some(Err(e)) => Some(e.to_string()),
        }
    }

    /// The last lines of the log, for error messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    /// Asks the process to stop with its stop signal, waits, then SIGKILLs.
    pub fn stop(&mut self) {
        self.stop_with(self.stop_signal);
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        self.stop_with(Signal::SIGKILL);
    }

    /// Freezes the process (SIGSTOP), as a hung server would look.
    pub fn pause(&self) -> Result<(), LaunchError> {
        self.signal(Signal::SIGSTOP)
    }

    /// Resumes a paused process (SIGCONT).
    pub fn resume(&self) -> Result<(), LaunchError> {
        self.signal(Signal::SIGCONT)
    }

    fn signal(&self, signal: Signal) -> Result<(), LaunchError> {
        let Some(pid) = self.pid() else {
            return Err(LaunchError::NotRunning(self.name.clone()));
        };
        kill(Pid::from_raw(pid as i32), signal)
            .map_err(|e| LaunchError::io(format!("signal {} to {}", signal, self.name), e.into()))
    }

    fn stop_with(&mut self, signal: Signal) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        let pid = Pid::from_raw(child.id() as i32);
        // A stopped (SIGSTOP) process must be continued to act on the signal.
        let _ = kill(pid, Signal::SIGCONT);
        if let Err(error) = kill(pid, signal) {
            tracing::warn!(name = %self.name, %error, "could not signal process");
        }
        let deadline = Instant::now() + STOP_GRACE;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => break,
            }
        }
        tracing::warn!(name = %self.name, "did not stop in time; killing it");
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last 20 lines of a log file (empty if it cannot be read).
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
