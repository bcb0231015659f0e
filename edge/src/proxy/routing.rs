//! Upstream selection: which region and which origin serve a request.
//!
//! Anonymous traffic goes to the client's region (from [`crate::geo`]) and
//! fails over to the nearest healthy region by that region's row of the
//! latency table; a signed-in shopper's cart, checkout and orders are pinned
//! to their home region (data residency: no failover, a 503 when it is
//! down). Inside a region, healthy origins round-robin. An origin that
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

/// All regions' pools (the edge's own first), the failover order for
/// clients in each region, and per-peer timeouts.
pub struct Router {
    pub pools: Vec<RegionPool>,
    /// `orders[c]`: region indexes to try for a client located in region `c`.
    orders: Vec<Vec<usize>>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
}

/// One request's routing state.
#[derive(Debug, Default)]
pub struct Attempt {
    /// The client's region (index); the edge's own region by default.
    client: usize,
    /// Only this region may serve the request (home-region data).
    pinned: Option<usize>,
    failed: Vec<SocketAddr>,
    attempts: usize,
    first: Option<usize>,
    served: Option<usize>,
}

impl Attempt {
    /// Routes from the client's region.
    pub fn located_in(&mut self, region: usize) {
        self.client = region;
    }

    /// Restricts the request to one region.
    pub fn pin(&mut self, region: usize) {
        self.pinned = Some(region);
    }

    /// Records that `peer` failed; the next selection skips it.
    pub fn failed(&mut self, peer: &HttpPeer) {
        self.failed.push(peer._address.clone());
    }

    pub fn can_retry(&self) -> bool {
        self.attempts < MAX_ATTEMPTS
    }

    /// The index (in the router's failover order) of the region that
    /// answered (or was last tried).
    pub fn served_index(&self) -> Option<usize> {
        self.served
    }

    /// The region that answered (or was last tried).
    pub fn served_by<'a>(&self, router: &'a Router) -> Option<&'a str> {
        self.served
            .and_then(|i| router.pools.get(i))
            .map(|p| p.name.as_str())
    }
}

impl Router {
    /// `latency[a][b]`: round trip from region `a` to `b` in ms (`None` when
    /// the table does not say); region 0 is the edge's own.
    pub fn new(
        pools: Vec<RegionPool>,
        latency: &[Vec<Option<u32>>],
        connect_timeout: Duration,
        read_timeout: Duration,
    ) -> Self {
        let n = pools.len();
        let known =
            |a: usize, b: usize| latency.get(a).and_then(|row| row.get(b).copied().flatten());
        let orders = (0..n)
            .map(|client| {
                let mut order: Vec<usize> = (0..n).collect();
                order.sort_by_key(|&r| {
                    // An unknown distance is estimated through the edge's region.
                    let distance = known(client, r).unwrap_or_else(|| {
                        known(0, client)
                            .unwrap_or(0)
                            .saturating_add(known(0, r).unwrap_or(u32::MAX / 2))
                    });
                    (r != client, distance, r)
                });
                order
            })
            .collect();
        Self {
            pools,
            orders,
            connect_timeout,
            read_timeout,
        }
    }

    /// The index of region `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.pools.iter().position(|p| p.name == name)
    }

    fn candidates<'a>(&'a self, attempt: &'a Attempt) -> &'a [usize] {
        match &attempt.pinned {
            Some(region) => std::slice::from_ref(region),
            None => self
                .orders
                .get(attempt.client)
                .map_or(&[][..], |order| order.as_slice()),
        }
    }

    fn select(&self, attempt: &Attempt) -> Option<(usize, Backend)> {
        let usable =
            |backend: &Backend, healthy: bool| healthy && !attempt.failed.contains(&backend.addr);
        let candidates = self.candidates(attempt);
        for &index in candidates {
            if let Some(backend) = self.pools[index].pool.select_with(b"", 256, usable) {
                return Some((index, backend));
            }
        }
        // Every candidate looks down: try the first one's origins anyway
        // (a health check can lag a recovery).
        let &first = candidates.first()?;
        self.pools[first]
            .pool
            .select_with(b"", 256, |b, _| !attempt.failed.contains(&b.addr))
            .map(|b| (first, b))
    }

    /// The next origin for this request.
    pub fn peer(&self, attempt: &mut Attempt, metrics: &EdgeMetrics) -> Result<Box<HttpPeer>> {
        attempt.attempts += 1;
        let Some((index, backend)) = self.select(attempt) else {
            let mut error = if attempt.pinned.is_some() {
                // The shopper's data lives only there: unavailable, retry later.
                Error::explain(
                    ErrorType::HTTPStatus(503),
                    "the shopper's home region is unreachable",
                )
            } else {
                Error::explain(
                    ErrorType::ConnectNoRoute,
                    "no reachable origin in any region",
                )
            };
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
