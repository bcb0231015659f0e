//! The origin's Prometheus metrics: one registry per origin instance (no
//! globals, so several instances can live in one test process), the metric
//! families, and the HTTP middleware that records requests.
//!
//! Names start with `meridian_`; labels are bounded (route template, status
//! class, tier, pool, replica name) — never ids or raw paths.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Latency buckets around the SLOs (5 ms … 200 ms … 2 s), plus sub-ms for cache hits.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
];

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub cache_requests: IntCounterVec,
    pub db_queries: IntCounterVec,
    pub replica_lag: GaugeVec,
    pub replica_usable: IntGaugeVec,
    pub invalidations: IntCounterVec,
    pub l2_available: IntGaugeVec,
}

impl Metrics {
    pub fn new(region: &str) -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(
            None,
            Some(std::iter::once(("region".to_string(), region.to_string())).collect()),
        )?;
        let http_requests = IntCounterVec::new(
            Opts::new(
                "meridian_http_requests_total",
                "HTTP requests served by the origin",
            ),
            &["route", "method", "status_class"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "meridian_http_request_duration_seconds",
                "Origin request latency, from first byte in to response ready",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "method"],
        )?;
        let cache_requests = IntCounterVec::new(
            Opts::new(
                "meridian_cache_requests_total",
                "Tiered cache look-ups by tier and result (hit, miss, negative_hit, error, skipped)",
            ),
            &["tier", "result"],
        )?;
        let db_queries = IntCounterVec::new(
            Opts::new(
                "meridian_db_queries_total",
                "Catalog queries by pool (primary, replica), server and purpose (request, background)",
            ),
            &["pool", "server", "purpose"],
        )?;
        let replica_lag = GaugeVec::new(
            Opts::new(
                "meridian_replica_lag_seconds",
                "Measured replay lag of each replica behind the primary",
            ),
            &["replica"],
        )?;
        let replica_usable = IntGaugeVec::new(
            Opts::new(
                "meridian_replica_usable",
                "1 when a replica is up and within the lag tolerance, else 0",
            ),
            &["replica"],
        )?;
        let invalidations = IntCounterVec::new(
            Opts::new(
                "meridian_invalidations_applied_total",
                "Cache invalidations applied, by source (log, pubsub)",
            ),
            &["source"],
        )?;
        let l2_available = IntGaugeVec::new(
            Opts::new(
                "meridian_cache_l2_available",
                "1 while the Redis L2 answers, 0 while it is being skipped",
            ),
            &["tier"],
        )?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(cache_requests.clone()))?;
        registry.register(Box::new(db_queries.clone()))?;
        registry.register(Box::new(replica_lag.clone()))?;
        registry.register(Box::new(replica_usable.clone()))?;
        registry.register(Box::new(invalidations.clone()))?;
        registry.register(Box::new(l2_available.clone()))?;
        Ok(Metrics {
            registry,
            http_requests,
            http_duration,
            cache_requests,
            db_queries,
            replica_lag,
            replica_usable,
            invalidations,
            l2_available,
        })
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::warn!(%error, "could not encode metrics");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// Records every request's count and latency by route template.
pub async fn track_http(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = match *request.method() {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let response = next.run(request).await;
    let class = match response.status().as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    metrics
        .http_requests
        .with_label_values(&[route.as_str(), method, class])
        .inc();
    metrics
        .http_duration
        .with_label_values(&[route.as_str(), method])
        .observe(started.elapsed().as_secs_f64());
    response
}
