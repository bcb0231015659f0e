//! The edge's Prometheus metrics: one registry per edge process (no
//! globals), served on the admin port at `/metrics`.
//!
//! Labels are bounded: route class, status class, cache status, upstream
//! region. The per-request series are reached through [`Children`]: each
//! label combination is resolved once, then found by index.
//!
//! The edge's own series are named `meridian_edge_*` (the registry's
//! prefix) and carry no constant labels: the scraper's `job`/`instance`
//! name the process, and `meridian_build_info{component="edge", region,
//! version}` says which region and build it is. Process metrics
//! (`process_cpu_seconds_total`, ...) and the build info live in a second,
//! unprefixed registry; [`EdgeMetrics::render`] exposes both.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

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

/// The label values an edge knows from its configuration, for
/// [`EdgeMetrics::precreate`].
pub struct KnownLabels<'a> {
    /// The regions it routes to (failover pairs).
    pub upstreams: Vec<&'a str>,
    /// Its rate-limit policies.
    pub policies: Vec<String>,
}

pub struct EdgeMetrics {
    /// The edge's series (`meridian_edge_` prefix).
    registry: Registry,
    /// Series named in full: `meridian_build_info` and `process_*`.
    process: Registry,
    /// Labels `route`, `status_class`, `cache`, `upstream_region`: slots
    /// by [`slot`]`([route, status_class, cache, upstream_region])`,
    /// upstream region `regions` = `edge` (the edge answered by itself).
    pub requests: CounterChildren,
    /// Labels `route`, `cache`.
    pub latency: HistogramChildren,
    /// Regions the edge routes to (the `upstream_region` label's values,
    /// plus `edge`).
    pub regions: usize,
    /// Labels `upstream_region`, `origin`.
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
    /// Label `reason`: `origin_error` (stale-if-error) or `revalidating`
    /// (stale-while-revalidate).
    pub stale_served: IntCounterVec,
    cache_items: IntGauge,
    cache_bytes: IntGauge,
    /// Follows the cache's own cumulative count, at each render.
    cache_evictions: prometheus::IntCounter,
    /// The cache's count when `cache_evictions` last caught up.
    evictions_seen: AtomicU64,
}

/// Why a stale copy was served: the `reason` label of
/// `meridian_edge_stale_served_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleReason {
    /// The origin failed, timed out or answered 5xx (stale-if-error).
    OriginError,
    /// A refresh is under way (stale-while-revalidate).
    Revalidating,
}

impl StaleReason {
    pub const ALL: [StaleReason; 2] = [StaleReason::OriginError, StaleReason::Revalidating];

    pub fn as_str(self) -> &'static str {
        match self {
            StaleReason::OriginError => "origin_error",
            StaleReason::Revalidating => "revalidating",
        }
    }
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
        let registry = Registry::new_custom(Some("meridian_edge".into()), None)?;
        let process = Registry::new();
        let build_info = register(
            &process,
            IntGauge::with_opts(
                Opts::new(
                    "meridian_build_info",
                    "Always 1: the component, region and version of this process",
                )
                .const_label("component", "edge")
                .const_label("region", region)
                .const_label("version", env!("CARGO_PKG_VERSION")),
            )?,
        );
        build_info.set(1);
        #[cfg(target_os = "linux")]
        process.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let stale_served = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "stale_served_total",
                    "Responses served from a stale cached copy, by reason: origin_error \
                     (stale-if-error) or revalidating (stale-while-revalidate)",
                ),
                &["reason"],
            )?,
        );
        for reason in StaleReason::ALL {
            stale_served.with_label_values(&[reason.as_str()]);
        }
        Ok(Self {
            requests: Children::new(
                register(
                    &registry,
                    IntCounterVec::new(
                        Opts::new("requests_total", "Requests answered by the edge"),
                        &["route", "status_class", "cache", "upstream_region"],
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
                    &["upstream_region", "origin"],
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
                prometheus::IntCounter::new(
                    "cache_evictions_total",
                    "Objects evicted from the response cache for capacity",
                )?,
            ),
            evictions_seen: AtomicU64::new(0),
            stale_served,
            registry,
            process,
        })
    }

    /// Creates at zero the series of every label value this edge can
    /// count, so that dashboards and rates see 0 rather than nothing before
    /// the first event.
    pub fn precreate(&self, known: &KnownLabels<'_>) {
        for from in &known.upstreams {
            for to in known.upstreams.iter().filter(|to| *to != from) {
                self.failovers.with_label_values(&[from, to]);
            }
        }
        for policy in known
            .policies
            .iter()
            .map(String::as_str)
            .chain(["checkout-budget"])
        {
            self.rate_limited.with_label_values(&[policy]);
        }
        for source in ["redis", "local"] {
            for result in ["allowed", "limited"] {
                self.checkout_budget.with_label_values(&[source, result]);
            }
        }
        for source in ["admin", "redis"] {
            self.purges.with_label_values(&[source]);
        }
        for result in ["admitted", "passed", "queued", "sold_out", "refused"] {
            self.waiting_room.with_label_values(&[result]);
        }
        use crate::bots::BotAction;
        for action in [
            BotAction::Allow,
            BotAction::Verified,
            BotAction::Throttle,
            BotAction::Challenge,
            BotAction::Passed,
            BotAction::Block,
        ] {
            let _ = self.bots.get(action as usize, &[action.as_str()]);
        }
    }

    /// Counts a response served stale for `reason`.
    pub fn served_stale(&self, reason: StaleReason) {
        self.stale_served
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    /// Brings the evictions counter up to the cache's cumulative count.
    /// Concurrent renders each add only what no other added before.
    fn catch_up_evictions(&self, total: u64) {
        let seen = self.evictions_seen.fetch_max(total, Ordering::AcqRel);
        if total > seen {
            self.cache_evictions.inc_by(total - seen);
        }
    }

    /// The text exposition, with cache gauges refreshed from `cache`.
    pub fn render(&self, cache: &EdgeCache) -> String {
        self.cache_items.set(gauge(cache.items()));
        self.cache_bytes.set(gauge(cache.bytes()));
        self.catch_up_evictions(u64::try_from(cache.evictions()).unwrap_or(u64::MAX));
        let mut families = self.process.gather();
        families.extend(self.registry.gather());
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&families, &mut buffer) {
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
    fn the_evictions_counter_follows_the_caches_count_once() {
        let metrics = EdgeMetrics::new("us-east", 1).unwrap();
        metrics.catch_up_evictions(5);
        metrics.catch_up_evictions(5);
        assert_eq!(metrics.cache_evictions.get(), 5);
        metrics.catch_up_evictions(3);
        assert_eq!(metrics.cache_evictions.get(), 5, "never goes back");
        metrics.catch_up_evictions(9);
        assert_eq!(metrics.cache_evictions.get(), 9);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let metrics = &metrics;
                move || metrics.catch_up_evictions(20)
            })
            .collect();
        std::thread::scope(|scope| {
            for thread in threads {
                scope.spawn(thread);
            }
        });
        assert_eq!(metrics.cache_evictions.get(), 20, "concurrent renders");
    }

    #[test]
    fn the_exposition_names_the_build_not_the_region_on_every_series() {
        let metrics = EdgeMetrics::new("eu-west", 2).unwrap();
        metrics.served_stale(StaleReason::OriginError);
        metrics
            .origin_healthy
            .with_label_values(&["us-east", "127.0.0.1:1"])
            .set(1);
        let mut families = metrics.process.gather();
        families.extend(metrics.registry.gather());
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&families, &mut buffer).unwrap();
        let text = String::from_utf8(buffer).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert!(lines.contains(&&*format!(
            "meridian_build_info{{component=\"edge\",region=\"eu-west\",version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
        assert!(
            lines.iter().all(|l| l.starts_with("meridian_build_info")
                || !(l.contains("{region=") || l.contains(",region="))),
            "no constant region label: {lines:?}"
        );
        for line in [
            "meridian_edge_stale_served_total{reason=\"origin_error\"} 1",
            "meridian_edge_stale_served_total{reason=\"revalidating\"} 0",
            "meridian_edge_origin_healthy{origin=\"127.0.0.1:1\",upstream_region=\"us-east\"} 1",
            "meridian_edge_cache_evictions_total 0",
        ] {
            assert!(lines.contains(&line), "{line}: {lines:?}");
        }
        #[cfg(target_os = "linux")]
        assert!(lines.iter().any(|l| l.starts_with("process_open_fds ")));
        assert!(!text.contains("hit_ratio") && !text.contains("evicted_objects"));
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
