//! The edge's Prometheus metrics: one registry per edge process (no
//! globals), served on the admin port at `/metrics`.
//!
//! Labels are bounded: route class, status class, cache status, region.
//! The per-request series are reached through [`Children`]: each label
//! combination is resolved once, then found by index.

use std::borrow::Cow;
use std::sync::OnceLock;

use prometheus::core::{MetricVec, MetricVecBuilder};
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

/// The children of a metric vector, each label combination resolved on
/// first use and kept in its own slot: the request path then skips the
/// vector's label hashing and lock. Only combinations seen are exported.
pub struct Children<T: MetricVecBuilder> {
    vec: MetricVec<T>,
    slots: Box<[OnceLock<T::M>]>,
}

/// The request counters' and decision counters' children.
pub type CounterChildren = Children<<IntCounterVec as VecBuilder>::Builder>;
/// The latency histogram's children.
pub type HistogramChildren = Children<<HistogramVec as VecBuilder>::Builder>;

/// Names the builder type of a metric vector (prometheus does not export it).
pub trait VecBuilder {
    type Builder: MetricVecBuilder;
}

impl<T: MetricVecBuilder> VecBuilder for MetricVec<T> {
    type Builder = T;
}

impl<T: MetricVecBuilder> Children<T> {
    fn new(vec: MetricVec<T>, slots: usize) -> Self {
        Self {
            vec,
            slots: (0..slots).map(|_| OnceLock::new()).collect(),
        }
    }

    /// The child for `labels`, kept in `slot`. The caller gives every label
    /// combination its own slot; a slot out of range is looked up directly.
    pub fn get(&self, slot: usize, labels: &[&str]) -> Cow<'_, T::M> {
        match self.slots.get(slot) {
            Some(cell) => Cow::Borrowed(cell.get_or_init(|| self.vec.with_label_values(labels))),
            None => Cow::Owned(self.vec.with_label_values(labels)),
        }
    }
}

/// The slot of a label combination, from each label's `(index, count)`;
/// an index out of its count gives a slot out of range (a direct lookup),
/// never another combination's slot.
pub fn slot(positions: &[(usize, usize)]) -> usize {
    positions
        .iter()
        .try_fold(0usize, |slot, &(index, count)| {
            (index < count).then(|| slot * count + index)
        })
        .unwrap_or(usize::MAX)
}

/// Label counts of the per-request series.
pub const ROUTE_CLASSES: usize = 6;
pub const STATUS_CLASSES: usize = 6;
pub const CACHE_STATUSES: usize = 5;
/// Label counts of the per-request decision series.
pub const GEO_SOURCES: usize = 3;
pub const BOT_ACTIONS: usize = 6;

pub struct EdgeMetrics {
    registry: Registry,
    /// Labels `route`, `status`, `cache`, `region`: slots by
    /// [`slot`]`([route, status, cache, region])`, region `regions` = `edge`.
    pub requests: CounterChildren,
    /// Labels `route`, `cache`.
    pub latency: HistogramChildren,
    /// Regions the edge routes to (the `region` label's values, plus `edge`).
    pub regions: usize,
    pub origin_healthy: IntGaugeVec,
    pub purges: IntCounterVec,
    pub failovers: IntCounterVec,
    pub geo: CounterChildren,
    pub bots: CounterChildren,
    pub rate_limited: IntCounterVec,
    pub checkout_budget: IntCounterVec,
    /// Label `mode`: 1 for the mode this edge applies.
    pub mode: IntGaugeVec,
    /// Label `feature`.
    pub feature_enabled: IntGaugeVec,
    pub mode_changes: prometheus::IntCounter,
    /// Reads of the setting from an origin (polls, and hints from Redis).
    pub mode_polls: prometheus::IntCounter,
    /// From the change on the primary to applied here.
    pub mode_propagation: prometheus::Histogram,
    /// 1 while no origin of the region answers: last known setting in force.
    pub modes_stale: IntGauge,
    /// Label `result` (admitted, passed, queued, sold_out, refused).
    pub waiting_room: IntCounterVec,
    /// Requests answered by the maintenance page.
    pub maintenance_answers: prometheus::IntCounter,
    /// Connections dropped at accept: their address held too many.
    pub connections_refused: prometheus::IntCounter,
    /// Connections cut off: a request head not complete in time.
    pub request_heads_timed_out: prometheus::IntCounter,
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
    /// Metrics of the edge of `region`, which routes to `regions` regions.
    pub fn new(region: &str, regions: usize) -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(
            Some("meridian_edge".into()),
            Some(std::iter::once(("edge_region".to_string(), region.to_string())).collect()),
        )?;
        Ok(Self {
            requests: Children::new(
                register(
                    &registry,
                    IntCounterVec::new(
                        Opts::new("requests_total", "Requests answered by the edge"),
                        &["route", "status", "cache", "region"],
                    )?,
                ),
                ROUTE_CLASSES * STATUS_CLASSES * CACHE_STATUSES * (regions + 1),
            ),
            latency: Children::new(
                register(
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
                ROUTE_CLASSES * CACHE_STATUSES,
            ),
            regions,
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
            geo: Children::new(
                register(
                    &registry,
                    IntCounterVec::new(
                        Opts::new("geo_decisions_total", "How the client's region was decided"),
                        &["source"],
                    )?,
                ),
                GEO_SOURCES,
            ),
            bots: Children::new(
                register(
                    &registry,
                    IntCounterVec::new(
                        Opts::new("bot_decisions_total", "Bot-scoring decisions by action"),
                        &["action"],
                    )?,
                ),
                BOT_ACTIONS,
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
            mode: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new("mode", "1 for the operating mode this edge applies"),
                    &["mode"],
                )?,
            ),
            feature_enabled: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new("feature_enabled", "1 when the feature is on in this region"),
                    &["feature"],
                )?,
            ),
            mode_changes: register(
                &registry,
                prometheus::IntCounter::new(
                    "mode_changes_total",
                    "Operating-setting changes applied",
                )?,
            ),
            mode_polls: register(
                &registry,
                prometheus::IntCounter::new(
                    "mode_polls_total",
                    "Reads of the operating setting from an origin (timer, start, or a hint on the channel)",
                )?,
            ),
            mode_propagation: register(
                &registry,
                prometheus::Histogram::with_opts(
                    HistogramOpts::new(
                        "mode_propagation_seconds",
                        "Time from a mode change on the primary to applied at this edge",
                    )
                    .buckets(vec![
                        0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
                    ]),
                )?,
            ),
            modes_stale: register(
                &registry,
                IntGauge::new(
                    "modes_stale",
                    "1 while the region's origins cannot be asked for the mode",
                )?,
            ),
            waiting_room: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "waiting_room_total",
                        "Waiting-room decisions on protected routes",
                    ),
                    &["result"],
                )?,
            ),
            connections_refused: register(
                &registry,
                prometheus::IntCounter::new(
                    "connections_refused_total",
                    "Connections dropped at accept because their client address held too many",
                )?,
            ),
            request_heads_timed_out: register(
                &registry,
                prometheus::IntCounter::new(
                    "request_heads_timed_out_total",
                    "Connections closed because a request head was not complete within request_head_timeout",
                )?,
            ),
            maintenance_answers: register(
                &registry,
                prometheus::IntCounter::new(
                    "maintenance_answers_total",
                    "Requests answered with the maintenance page",
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
            prometheus::core::Collector::collect(&self.requests.vec)
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_label_combination_has_its_own_slot() {
        let mut seen = HashSet::new();
        for a in 0..3 {
            for b in 0..4 {
                assert!(seen.insert(slot(&[(a, 3), (b, 4)])));
            }
        }
        assert!(seen.iter().all(|s| *s < 12));
        assert_eq!(
            slot(&[(3, 3), (0, 4)]),
            usize::MAX,
            "index out of its count"
        );
    }

    #[test]
    fn children_count_into_their_vector() {
        let vec = IntCounterVec::new(Opts::new("t", "t"), &["a"]).unwrap();
        let children = Children::new(vec.clone(), 2);
        children.get(0, &["x"]).inc();
        children.get(0, &["x"]).inc();
        children.get(7, &["y"]).inc();
        assert_eq!(vec.with_label_values(&["x"]).get(), 2);
        assert_eq!(vec.with_label_values(&["y"]).get(), 1);
    }
}
