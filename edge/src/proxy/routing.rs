//! Upstream selection: which region and which origin serve a request.
//!
//! Regions are tried in failover order (the edge's own region first, then
//! by latency); inside a region, healthy origins round-robin. An origin that
//! refused a connection in this request is skipped on the retry, so a dead
//! origin costs one failed connect, not a failed request. When health checks
//! mark every origin down, the own region's origins are still tried (a
//! health check can lag a recovery) before the request fails with an
//! upstream error, which lets the cache serve stale-if-error.

use std::time::Duration;

use pingora::lb::Backend;
use pingora::prelude::HttpPeer;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::metrics::EdgeMetrics;
use crate::upstream::RegionPool;

/// Connection attempts per request before giving up.
const MAX_ATTEMPTS: usize = 6;

/// All regions' pools in failover order, and per-peer timeouts.
pub struct Router {
    pub pools: Vec<RegionPool>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
}

/// One request's routing state.
#[derive(Debug, Default)]
pub struct Attempt {
    failed: Vec<SocketAddr>,
    attempts: usize,
    first: Option<usize>,
    served: Option<usize>,
}

impl Attempt {
    /// Records that `peer` failed; the next selection skips it.
    pub fn failed(&mut self, peer: &HttpPeer) {
        self.failed.push(peer._address.clone());
    }

    pub fn can_retry(&self) -> bool {
        self.attempts < MAX_ATTEMPTS
    }

    /// The region that answered (or was last tried).
    pub fn served_by<'a>(&self, router: &'a Router) -> Option<&'a str> {
        self.served
            .and_then(|i| router.pools.get(i))
            .map(|p| p.name.as_str())
    }
}

impl Router {
    fn select(&self, attempt: &Attempt) -> Option<(usize, Backend)> {
        let usable =
            |backend: &Backend, healthy: bool| healthy && !attempt.failed.contains(&backend.addr);
        for (index, region) in self.pools.iter().enumerate() {
            if let Some(backend) = region.pool.select_with(b"", 256, usable) {
                return Some((index, backend));
            }
        }
        // Every region looks down: try the own region's origins anyway.
        self.pools.first().and_then(|own| {
            own.pool
                .select_with(b"", 256, |b, _| !attempt.failed.contains(&b.addr))
                .map(|b| (0, b))
        })
    }

    /// The next origin for this request.
    pub fn peer(&self, attempt: &mut Attempt, metrics: &EdgeMetrics) -> Result<Box<HttpPeer>> {
        attempt.attempts += 1;
        let Some((index, backend)) = self.select(attempt) else {
            let mut error = Error::explain(
                ErrorType::ConnectNoRoute,
                "no reachable origin in any region",
            );
            error.esource = ErrorSource::Upstream;
            return Err(error);
        };
        let first = *attempt.first.get_or_insert(index);
        if index != first {
            metrics
                .failovers
                .with_label_values(&[&self.pools[first].name, &self.pools[index].name])
                .inc();
        }
        attempt.served = Some(index);
        let Some(addr) = backend.addr.as_inet() else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "origins are TCP addresses",
            ));
        };
        let mut peer = HttpPeer::new(*addr, false, String::new());
        peer.options.connection_timeout = Some(self.connect_timeout);
        peer.options.read_timeout = Some(self.read_timeout);
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Ok(Box::new(peer))
    }

    /// Whether any region has a healthy origin.
    pub fn any_healthy(&self) -> bool {
        self.pools.iter().any(RegionPool::any_healthy)
    }
}
