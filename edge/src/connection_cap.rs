//! A cap on concurrent connections per client address on the public
//! listeners: one client holding thousands of idle or half-sent
//! connections cannot take the file descriptors every other shopper (and
//! the admin port) needs. Excess connections are dropped as they are
//! accepted, before TLS or HTTP (pingora's connection filter).
//!
//! Pingora tells the filter when a connection is accepted but not when it
//! closes, so the count of what is open comes from the kernel: the TCP
//! socket table (`/proc/net/tcp`, `/proc/net/tcp6`, read with `procfs`),
//! filtered to this edge's public ports. A connection is admitted without
//! any read while the last count plus what was admitted since stays below
//! the cap; only an address at the cap pays for a fresh count, at most one
//! every [`RESCAN_EVERY`] (what an attacker can make the edge do is
//! bounded too).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::listeners::ConnectionFilter;

use crate::metrics::EdgeMetrics;

/// The least time between two reads of the socket table.
pub const RESCAN_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
struct Counts {
    /// Open connections per client address at the last read.
    open: HashMap<IpAddr, u32>,
    /// Admitted since that read.
    admitted: HashMap<IpAddr, u32>,
    read_at: Option<Instant>,
}

impl Counts {
    fn known(&self, ip: &IpAddr) -> u32 {
        self.open.get(ip).copied().unwrap_or(0) + self.admitted.get(ip).copied().unwrap_or(0)
    }
}

/// The per-address cap, as pingora's connection filter.
pub struct ConnectionCap {
    per_address: u32,
    ports: Vec<u16>,
    counts: Mutex<Counts>,
    metrics: Arc<EdgeMetrics>,
}

impl std::fmt::Debug for ConnectionCap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionCap")
            .field("per_address", &self.per_address)
            .field("ports", &self.ports)
            .finish()
    }
}

impl ConnectionCap {
    /// At most `per_address` open connections from one address to any of
    /// `ports` (the public listeners).
    pub fn new(per_address: u32, ports: Vec<u16>, metrics: Arc<EdgeMetrics>) -> Self {
        ConnectionCap {
            per_address,
            ports,
            counts: Mutex::new(Counts::default()),
            metrics,
        }
    }

    /// Whether one more connection from `ip` may stay (the accepted one is
    /// already in the kernel's table when the table is read).
    fn admit(&self, ip: IpAddr) -> bool {
        let mut counts = self.counts.lock();
        if counts.known(&ip) < self.per_address {
            *counts.admitted.entry(ip).or_default() += 1;
            return true;
        }
        if counts.read_at.is_none_or(|at| at.elapsed() >= RESCAN_EVERY) {
            match open_connections(&self.ports) {
                Ok(open) => {
                    counts.open = open;
                    counts.admitted.clear();
                }
                Err(error) => tracing::warn!(%error, "cannot read the TCP socket table"),
            }
            counts.read_at = Some(Instant::now());
            // The accepted connection is in the fresh count already.
            if counts.open.get(&ip).copied().unwrap_or(0) <= self.per_address {
                return true;
            }
        }
        false
    }
}

#[async_trait]
impl ConnectionFilter for ConnectionCap {
    async fn should_accept(&self, addr: Option<&SocketAddr>) -> bool {
        let Some(addr) = addr else {
            return true;
        };
        let admitted = self.admit(canonical(addr.ip()));
        if !admitted {
            self.metrics.connections_refused.inc();
        }
        admitted
    }
}

/// IPv4 clients seen through a dual-stack socket count as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Open connections to `ports` per remote address, from the kernel.
fn open_connections(ports: &[u16]) -> Result<HashMap<IpAddr, u32>, procfs::ProcError> {
    use procfs::net::TcpState;
    let mut open: HashMap<IpAddr, u32> = HashMap::new();
    let v4 = procfs::net::tcp()?;
    let v6 = procfs::net::tcp6().unwrap_or_default();
    for entry in v4.iter().chain(v6.iter()) {
        let live = matches!(
            entry.state,
            TcpState::Established | TcpState::SynRecv | TcpState::CloseWait
        );
        if live && ports.contains(&entry.local_address.port()) {
            *open
                .entry(canonical(entry.remote_address.ip()))
                .or_default() += 1;
        }
    }
    Ok(open)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_counted_apart_and_mapped_v4_is_v4() {
        let counts = Counts {
            open: HashMap::from([("127.0.0.1".parse().unwrap(), 3)]),
            admitted: HashMap::from([("127.0.0.1".parse().unwrap(), 2)]),
            read_at: None,
        };
        assert_eq!(counts.known(&"127.0.0.1".parse().unwrap()), 5);
        assert_eq!(counts.known(&"127.0.0.2".parse().unwrap()), 0);
        assert_eq!(
            canonical("::ffff:10.1.2.3".parse().unwrap()),
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
    }
}
