//! Upstream regions: one health-checked pool of origins per region, in
//! failover order (own region first, then by latency).
//!
//! Health checks run as pingora background services (one per region, an
//! HTTP `GET` of the configured path at the configured interval). A region
//! is usable while one of its origins passes; a failed connection also moves
//! the request on to the next region at once ([`crate::proxy`]), so an
//! outage costs at most one health interval before every request avoids it.

use std::sync::Arc;

use pingora::lb::health_check::HttpHealthCheck;
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, LoadBalancer};
use pingora::services::background::{GenBackgroundService, background_service};

use crate::config::{EdgeConfig, HealthConfig};

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

#[derive(Debug, thiserror::Error)]
#[error("region `{region}`: cannot build its origin pool: {source}")]
pub struct PoolError {
    region: String,
    source: std::io::Error,
}

/// A region's health-check service, to be added to the server.
pub type HealthService = GenBackgroundService<LoadBalancer<RoundRobin>>;

/// Every region's pool in failover order, plus the background services
/// that health-check them (to be added to the server).
pub fn build_pools(
    config: &EdgeConfig,
) -> Result<(Vec<RegionPool>, Vec<HealthService>), PoolError> {
    let mut pools = Vec::new();
    let mut services = Vec::new();
    for region in config.failover_order() {
        let mut pool =
            LoadBalancer::<RoundRobin>::try_from_iter(region.origins.iter().map(|a| a.to_string()))
                .map_err(|source| PoolError {
                    region: region.name.clone(),
                    source,
                })?;
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
    Ok((pools, services))
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
