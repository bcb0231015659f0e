//! The edge's Prometheus metrics: one registry per edge process (no
//! globals), served on the admin port at `/metrics`.
//!
//! Labels are bounded: route class, status class, cache status, region.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::cache::EdgeCache;

/// Buckets around the SLOs (5 ms … 200 ms … 2 s), plus sub-millisecond
/// ones for cache hits.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
];

pub struct EdgeMetrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub origin_healthy: IntGaugeVec,
    pub purges: IntCounterVec,
    pub failovers: IntCounterVec,
    pub geo: IntCounterVec,
    pub bots: IntCounterVec,
    pub rate_limited: IntCounterVec,
    pub checkout_budget: IntCounterVec,
    cache_items: IntGauge,
    cache_bytes: IntGauge,
    cache_evictions: IntGauge,
    cache_hit_ratio: prometheus::Gauge,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    // Registration fails only on a duplicate name, which the fixed set of
    // names below rules out; keep the metric working either way.
    if let Err(error) = registry.register(Box::new(metric.clone())) {
        tracing::error!(%error, "metric registration failed");
    }
    metric
}

impl EdgeMetrics {
    pub fn new(region: &str) -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(
            Some("meridian_edge".into()),
            Some(std::iter::once(("edge_region".to_string(), region.to_string())).collect()),
        )?;
        Ok(Self {
            requests: register(
                &registry,
                IntCounterVec::new(
                    Opts::new("requests_total", "Requests answered by the edge"),
                    &["route", "status", "cache", "region"],
                )?,
            ),
            latency: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "request_duration_seconds",
                        "Time from request to the end of the response",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &["route", "cache"],
                )?,
            ),
            origin_healthy: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new("origin_healthy", "1 when the origin passes health checks"),
                    &["region", "origin"],
                )?,
            ),
            purges: register(
                &registry,
                IntCounterVec::new(
                    Opts::new("cache_purged_objects_total", "Objects removed by purges"),
                    &["source"],
                )?,
            ),
            failovers: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "failovers_total",
                        "Requests sent to another region than the first choice",
                    ),
                    &["from", "to"],
                )?,
            ),
            geo: register(
                &registry,
                IntCounterVec::new(
                    Opts::new("geo_decisions_total", "How the client's region was decided"),
                    &["source"],
                )?,
            ),
            bots: register(
                &registry,
                IntCounterVec::new(
                    Opts::new("bot_decisions_total", "Bot-scoring decisions by action"),
                    &["action"],
                )?,
            ),
            rate_limited: register(
                &registry,
                IntCounterVec::new(
                    Opts::new("rate_limited_total", "Requests refused with 429, by policy"),
                    &["policy"],
                )?,
            ),
            checkout_budget: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "checkout_budget_total",
                        "Checkout budget decisions by source (redis, local) and result",
                    ),
                    &["source", "result"],
                )?,
            ),
            cache_items: register(
                &registry,
                IntGauge::new("cache_objects", "Objects in the response cache")?,
            ),
            cache_bytes: register(
                &registry,
                IntGauge::new("cache_bytes", "Bytes held by the response cache")?,
            ),
            cache_evictions: register(
                &registry,
                IntGauge::new(
                    "cache_evicted_objects",
                    "Objects evicted for capacity since start",
                )?,
            ),
            cache_hit_ratio: register(
                &registry,
                prometheus::Gauge::new(
                    "cache_hit_ratio",
                    "Hits (including stale) over cacheable lookups since start",
                )?,
            ),
            registry,
        })
    }

    /// The text exposition, with cache gauges refreshed from `cache`.
    pub fn render(&self, cache: &EdgeCache) -> String {
        self.cache_items.set(gauge(cache.items()));
        self.cache_bytes.set(gauge(cache.bytes()));
        self.cache_evictions.set(gauge(cache.evictions()));
        let count = |status: &str| -> u64 {
            prometheus::core::Collector::collect(&self.requests)
                .iter()
                .flat_map(|family| family.get_metric())
                .filter(|m| {
                    m.get_label()
                        .iter()
                        .any(|l| l.name() == "cache" && l.value() == status)
                })
                .map(|m| m.get_counter().get_value() as u64)
                .sum()
        };
        let hits = count("HIT") + count("STALE");
        let lookups = hits + count("MISS") + count("EXPIRED");
        if lookups > 0 {
            self.cache_hit_ratio.set(hits as f64 / lookups as f64);
        }
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(%error, "metrics encoding failed");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

fn gauge(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
