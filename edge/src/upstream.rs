//! Upstream regions: one health-checked pool of origins per region, in
//! failover order (own region first, then by latency).
//!
//! Health checks run as pingora background services (one per region, an
//! HTTP `GET` of the configured path at the configured interval). A region
//! is usable while one of its origins passes; a failed connection also moves
//! the request on to the next region at once ([`crate::proxy`]), so an
//! outage costs at most one health interval before every request avoids it.
//! Origins named by DNS are resolved again every `health.dns_refresh`
//! ([`crate::origin_dns`]): each address is a backend of its own.

use std::sync::Arc;

use futures::FutureExt;

use pingora::lb::health_check::HttpHealthCheck;
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora::services::background::{GenBackgroundService, background_service};

use crate::config::{EdgeConfig, HealthConfig};
use crate::origin_dns::DnsDiscovery;

/// One region's origins.
pub struct RegionPool {
    pub name: String,
    pub pool: Arc<LoadBalancer<RoundRobin>>,
}

impl RegionPool {
    /// A healthy origin of this region, round-robin.
    pub fn select(&self) -> Option<Backend> {
        self.pool.select(b"", 256)
    }

    /// `(origin address, healthy)` for every origin.
    pub fn health(&self) -> Vec<(String, bool)> {
        let backends = self.pool.backends();
        backends
            .get_backend()
            .iter()
            .map(|b| (b.addr.to_string(), backends.ready(b)))
            .collect()
    }

    pub fn any_healthy(&self) -> bool {
        self.health().iter().any(|(_, healthy)| *healthy)
    }
}

/// A region's health-check service, to be added to the server.
pub type HealthService = GenBackgroundService<LoadBalancer<RoundRobin>>;

/// Every region's pool in failover order, plus the background services
/// that health-check them (to be added to the server).
pub fn build_pools(config: &EdgeConfig) -> (Vec<RegionPool>, Vec<HealthService>) {
    let mut pools = Vec::new();
    let mut services = Vec::new();
    for region in config.failover_order() {
        let discovery = DnsDiscovery::new(&region.name, region.origins.clone());
        let mut pool =
            LoadBalancer::<RoundRobin>::from_backends(Backends::new(Box::new(discovery)));
        pool.update_frequency = Some(config.health.dns_refresh);
        // The first update takes what `DnsDiscovery::new` resolved, without
        // a lookup: it completes at once, and the pool serves from the start.
        let _ = pool.update().now_or_never();
        pool.set_health_check(health_check(&config.health));
        pool.health_check_frequency = Some(config.health.interval);
        pool.parallel_health_check = true;
        let service = background_service(&format!("health {}", region.name), pool);
        pools.push(RegionPool {
            name: region.name.clone(),
            pool: service.task(),
        });
        services.push(service);
    }
    (pools, services)
}

fn health_check(config: &HealthConfig) -> Box<HttpHealthCheck> {
    let mut check = HttpHealthCheck::new("localhost", false);
    if let Ok(request) = pingora::http::RequestHeader::build("GET", config.path.as_bytes(), None) {
        check.req = request;
        // Validated at load: the path is a valid request target.
        let _ = check.req.insert_header("host", "localhost");
        let _ = check
            .req
            .insert_header("user-agent", "meridian-edge-health");
    }
    check.peer_template.options.connection_timeout = Some(config.connect_timeout);
    check.peer_template.options.read_timeout = Some(config.interval.max(config.connect_timeout));
    check.consecutive_failure = 1;
    check.consecutive_success = 1;
    Box::new(check)
}
