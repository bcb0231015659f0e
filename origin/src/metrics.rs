//! The origin's Prometheus metrics: one registry per origin instance (no
//! globals, so several instances can live in one test process), the metric
//! families, and the HTTP middleware that records requests.
//!
//! Names start with `meridian_`; labels are bounded (route template, status
//! class, tier, pool, replica name) — never ids or raw paths. The registry
//! carries no constant labels: the scraper's `job`/`instance` name the
//! process, and `meridian_build_info{component, region, version}` says
//! which region and build it is (rules join it `on (job, instance)`).
//! Process metrics (`process_cpu_seconds_total`, `process_open_fds`, ...)
//! come from the prometheus crate's process collector.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::response::Response;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use tower::{Layer, Service};

use crate::orders::OrderState;

/// Latency buckets around the SLOs (5 ms … 200 ms … 2 s), plus sub-ms for cache hits.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
];

/// Buckets of `meridian_order_processing_seconds`: from a checkout settled
/// within its request to one the recovery worker finishes minutes later.
const ORDER_PROCESSING_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// `event` values of `meridian_reservations_total`, exported from start.
const RESERVATION_EVENTS: [&str; 5] = ["created", "rejected", "committed", "released", "expired"];

/// `outcome` values of `meridian_checkouts_total`, exported from start.
const CHECKOUT_OUTCOMES: [&str; 8] = [
    "captured",
    "confirmed",
    "declined",
    "out_of_stock",
    "price_changed",
    "payment_unavailable",
    "replayed",
    "error",
];

/// `result` values of `meridian_order_transitions_total`.
pub const TRANSITION_RESULTS: [&str; 2] = ["applied", "refused"];

/// `outcome` values of `meridian_order_processing_seconds` exported from
/// start: the settled states the checkout saga moves an order into.
const PROCESSING_OUTCOMES: [OrderState; 3] = [
    OrderState::Captured,
    OrderState::PaymentFailed,
    OrderState::Cancelled,
];

/// The origin's metric families; cheap to clone (one `Arc`), since the
/// middleware takes a copy per request.
#[derive(Clone)]
pub struct Metrics(Arc<MetricFamilies>);

impl std::ops::Deref for Metrics {
    type Target = MetricFamilies;
    fn deref(&self) -> &MetricFamilies {
        &self.0
    }
}

pub struct MetricFamilies {
    registry: Registry,
    /// Connection pools reported at each scrape, by `(pool, server)`.
    pools: std::sync::Mutex<Vec<(&'static str, String, sqlx::PgPool)>>,
    pool_connections: IntGaugeVec,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub cache_requests: IntCounterVec,
    pub db_queries: IntCounterVec,
    pub replica_lag: GaugeVec,
    pub replica_usable: IntGaugeVec,
    pub invalidations: IntCounterVec,
    pub l2_available: IntGaugeVec,
    pub reservations: IntCounterVec,
    pub reservation_batch_size: Histogram,
    pub cart_operations: IntCounterVec,
    pub psp_requests: IntCounterVec,
    pub psp_duration: HistogramVec,
    pub psp_breaker_open: IntGaugeVec,
    pub psp_fallbacks: IntCounterVec,
    pub checkouts: IntCounterVec,
    pub checkout_duration: Histogram,
    pub saga_recoveries: IntCounterVec,
    pub flash_claims: IntCounterVec,
    pub flash_processed: IntCounterVec,
    pub mode: IntGaugeVec,
    pub feature_enabled: IntGaugeVec,
    pub mode_changes: IntCounter,
    pub mode_propagation: Histogram,
    pub modes_stale: IntGauge,
    pub queue_depth: IntGaugeVec,
    /// Labels `pool` (primary, replica) and `purpose` (request,
    /// background): one observation per query or transaction run through
    /// [`crate::db::DbRouter`] (see there for what one covers).
    pub db_query_duration: HistogramVec,
    /// Labels `to` (the state an order-row step ends in) and `result`
    /// (applied, refused).
    pub order_transitions: IntCounterVec,
    /// Label `outcome` (the settled state): from the order's creation to
    /// the step that settled it.
    pub order_processing: HistogramVec,
    /// Label `result` (match, mismatch): one per SKU per reconciliation run.
    pub reconciliation_checks: IntCounterVec,
    pub oversold_units: IntGauge,
    pub reservations_overdue: IntGauge,
    /// The configured `database.lag_tolerance`, in seconds.
    pub replica_lag_tolerance: Gauge,
}

impl Metrics {
    /// The metrics of an origin of `region` (named only in
    /// `meridian_build_info`).
    pub fn new(region: &str) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let build_info = IntGauge::with_opts(
            Opts::new(
                "meridian_build_info",
                "Always 1: the component, region and version of this process",
            )
            .const_label("component", "origin")
            .const_label("region", region)
            .const_label("version", env!("CARGO_PKG_VERSION")),
        )?;
        build_info.set(1);
        registry.register(Box::new(build_info))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
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
        let reservations = IntCounterVec::new(
            Opts::new(
                "meridian_reservations_total",
                "Inventory reservations by event (created, rejected, committed, released, expired); \
                 committed / created is the reservation-to-capture conversion",
            ),
            &["event"],
        )?;
        let reservation_batch_size = Histogram::with_opts(
            HistogramOpts::new(
                "meridian_reservation_batch_size",
                "Reservation jobs applied per inventory transaction",
            )
            .buckets(vec![
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0,
            ]),
        )?;
        let cart_operations = IntCounterVec::new(
            Opts::new(
                "meridian_cart_operations_total",
                "Cart operations by kind (read, add, update, remove, merge) and result (ok, rejected, error)",
            ),
            &["operation", "result"],
        )?;
        let psp_requests = IntCounterVec::new(
            Opts::new(
                "meridian_psp_requests_total",
                "Payment-provider requests by provider, operation and result \
                 (ok, refused, unknown, rejected, breaker_open)",
            ),
            &["psp", "operation", "result"],
        )?;
        let psp_duration = HistogramVec::new(
            HistogramOpts::new(
                "meridian_psp_request_duration_seconds",
                "Payment-provider request latency",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["psp", "operation"],
        )?;
        let psp_breaker_open = IntGaugeVec::new(
            Opts::new(
                "meridian_psp_breaker_open",
                "1 while a payment provider's circuit breaker is open",
            ),
            &["psp"],
        )?;
        let psp_fallbacks = IntCounterVec::new(
            Opts::new(
                "meridian_psp_fallbacks_total",
                "Authorizations moved past a provider that could not take them",
            ),
            &["psp"],
        )?;
        let checkouts = IntCounterVec::new(
            Opts::new(
                "meridian_checkouts_total",
                "Checkouts by outcome (captured, confirmed, declined, out_of_stock, \
                 price_changed, payment_unavailable, replayed, error)",
            ),
            &["outcome"],
        )?;
        let checkout_duration = Histogram::with_opts(
            HistogramOpts::new(
                "meridian_checkout_duration_seconds",
                "Time to run one checkout saga to its answer",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        let saga_recoveries = IntCounterVec::new(
            Opts::new(
                "meridian_checkout_recoveries_total",
                "Unfinished checkouts taken over by the recovery worker, by how they ended \
                 (resumed, compensated, retry)",
            ),
            &["result"],
        )?;
        let flash_claims = IntCounterVec::new(
            Opts::new(
                "meridian_flash_claims_total",
                "Flash-sale claims at the gate by result (won, sold_out, limit, closed, unknown, error)",
            ),
            &["result"],
        )?;
        let flash_processed = IntCounterVec::new(
            Opts::new(
                "meridian_flash_claims_processed_total",
                "Won flash-sale claims turned into reservations (reserved) or not (failed)",
            ),
            &["result"],
        )?;
        let mode = IntGaugeVec::new(
            Opts::new(
                "meridian_mode",
                "The region's operating mode as this process applies it (1 for the current mode)",
            ),
            &["mode"],
        )?;
        let feature_enabled = IntGaugeVec::new(
            Opts::new(
                "meridian_feature_enabled",
                "Feature switches as this process applies them (1 on, 0 off)",
            ),
            &["feature"],
        )?;
        let mode_changes = IntCounter::new(
            "meridian_mode_changes_total",
            "Changes of the region's mode or features applied by this process",
        )?;
        let mode_propagation = Histogram::with_opts(
            HistogramOpts::new(
                "meridian_mode_propagation_seconds",
                "Time from a mode change on the primary to this process applying it",
            )
            .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0]),
        )?;
        let modes_stale = IntGauge::new(
            "meridian_modes_stale",
            "1 while this process cannot read the mode table and runs on its last known state",
        )?;
        let queue_depth = IntGaugeVec::new(
            Opts::new(
                "meridian_queue_depth",
                "Work waiting, by queue: reservations (jobs queued in this process's \
                 reservation batcher) and flash_claims (this worker's share of the won \
                 claims not recorded yet: each open sale's backlog over its consumers); \
                 the autoscalers' queue-depth trigger",
            ),
            &["queue"],
        )?;
        for queue in ["reservations", "flash_claims"] {
            queue_depth.with_label_values(&[queue]).set(0);
        }
        // Every bounded label value at zero, so rates read 0 before the
        // first event rather than nothing.
        for source in ["log", "pubsub"] {
            invalidations.with_label_values(&[source]);
        }
        for result in ["resumed", "compensated", "retry"] {
            saga_recoveries.with_label_values(&[result]);
        }
        for result in ["won", "sold_out", "limit", "closed", "unknown", "error"] {
            flash_claims.with_label_values(&[result]);
        }
        for result in ["reserved", "failed"] {
            flash_processed.with_label_values(&[result]);
        }
        let db_query_duration = HistogramVec::new(
            HistogramOpts::new(
                "meridian_db_query_duration_seconds",
                "Catalog database work through the router: a read (connection acquired, \
                 its queries run) on one server, or a write transaction from begin to commit \
                 or rollback",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["pool", "purpose"],
        )?;
        for pool in ["primary", "replica"] {
            for purpose in ["request", "background"] {
                db_query_duration.with_label_values(&[pool, purpose]);
            }
        }
        let order_transitions = IntCounterVec::new(
            Opts::new(
                "meridian_order_transitions_total",
                "Order state-machine steps by the state they end in (to) and result: applied, \
                 or refused by the shard (an illegal hop, or the order had moved on)",
            ),
            &["to", "result"],
        )?;
        for to in OrderState::ALL
            .into_iter()
            .filter(|s| *s != OrderState::Pending)
        {
            for result in TRANSITION_RESULTS {
                order_transitions.with_label_values(&[to.as_str(), result]);
            }
        }
        let order_processing = HistogramVec::new(
            HistogramOpts::new(
                "meridian_order_processing_seconds",
                "Time from an order's creation (pending) to the step that settled it, \
                 by the settled state (outcome)",
            )
            .buckets(ORDER_PROCESSING_BUCKETS.to_vec()),
            &["outcome"],
        )?;
        for outcome in PROCESSING_OUTCOMES {
            order_processing.with_label_values(&[outcome.as_str()]);
        }
        let reconciliation_checks = IntCounterVec::new(
            Opts::new(
                "meridian_inventory_reconciliation_checks_total",
                "SKUs checked by the inventory reconciliation: match when the reserved and \
                 sold counters equal the held and committed reservation lines, else mismatch",
            ),
            &["result"],
        )?;
        for result in ["match", "mismatch"] {
            reconciliation_checks.with_label_values(&[result]);
        }
        let oversold_units = IntGauge::new(
            "meridian_inventory_oversold_units",
            "Units the committed reservations sold beyond each SKU's stock (on_hand + sold), \
             summed over SKUs, at the last reconciliation; expected 0",
        )?;
        let reservations_overdue = IntGauge::new(
            "meridian_reservations_overdue",
            "Held reservations past their expiry by more than one sweep interval at the last \
             reconciliation: stock locked that the sweeper did not release",
        )?;
        let replica_lag_tolerance = Gauge::new(
            "meridian_replica_lag_tolerance_seconds",
            "The configured replica lag tolerance: a replica further behind is not read",
        )?;
        for event in RESERVATION_EVENTS {
            reservations.with_label_values(&[event]);
        }
        for outcome in CHECKOUT_OUTCOMES {
            checkouts.with_label_values(&[outcome]);
        }
        for metric in [
            Box::new(queue_depth.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(mode.clone()),
            Box::new(feature_enabled.clone()),
            Box::new(mode_changes.clone()),
            Box::new(mode_propagation.clone()),
            Box::new(modes_stale.clone()),
            Box::new(flash_claims.clone()),
            Box::new(flash_processed.clone()),
            Box::new(psp_requests.clone()),
            Box::new(psp_duration.clone()),
            Box::new(psp_breaker_open.clone()),
            Box::new(psp_fallbacks.clone()),
            Box::new(checkouts.clone()),
            Box::new(checkout_duration.clone()),
            Box::new(saga_recoveries.clone()),
            Box::new(db_query_duration.clone()),
            Box::new(order_transitions.clone()),
            Box::new(order_processing.clone()),
            Box::new(reconciliation_checks.clone()),
            Box::new(oversold_units.clone()),
            Box::new(reservations_overdue.clone()),
            Box::new(replica_lag_tolerance.clone()),
        ] {
            registry.register(metric)?;
        }
        registry.register(Box::new(reservations.clone()))?;
        registry.register(Box::new(reservation_batch_size.clone()))?;
        registry.register(Box::new(cart_operations.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(cache_requests.clone()))?;
        registry.register(Box::new(db_queries.clone()))?;
        registry.register(Box::new(replica_lag.clone()))?;
        registry.register(Box::new(replica_usable.clone()))?;
        registry.register(Box::new(invalidations.clone()))?;
        registry.register(Box::new(l2_available.clone()))?;
        let pool_connections = IntGaugeVec::new(
            Opts::new(
                "meridian_db_pool_connections",
                "Connections of each database pool at scrape time, by pool (primary, replica, \
                 shard), server and state (busy, idle)",
            ),
            &["pool", "server", "state"],
        )?;
        registry.register(Box::new(pool_connections.clone()))?;
        Ok(Metrics(Arc::new(MetricFamilies {
            registry,
            pools: std::sync::Mutex::new(Vec::new()),
            pool_connections,
            http_requests,
            http_duration,
            cache_requests,
            db_queries,
            replica_lag,
            replica_usable,
            invalidations,
            l2_available,
            reservations,
            reservation_batch_size,
            cart_operations,
            psp_requests,
            psp_duration,
            psp_breaker_open,
            psp_fallbacks,
            checkouts,
            checkout_duration,
            saga_recoveries,
            flash_claims,
            flash_processed,
            mode,
            feature_enabled,
            mode_changes,
            mode_propagation,
            modes_stale,
            queue_depth,
            db_query_duration,
            order_transitions,
            order_processing,
            reconciliation_checks,
            oversold_units,
            reservations_overdue,
            replica_lag_tolerance,
        })))
    }

    /// Reports `pool` (`primary`, `replica` or `shard`) of `server` as
    /// `meridian_db_pool_connections` from now on.
    pub fn watch_pool(&self, pool: &'static str, server: &str, handle: &sqlx::PgPool) {
        if let Ok(mut pools) = self.pools.lock() {
            pools.push((pool, server.to_string(), handle.clone()));
        }
        for state in ["busy", "idle"] {
            self.pool_connections
                .with_label_values(&[pool, server, state])
                .set(0);
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        if let Ok(pools) = self.pools.lock() {
            for (pool, server, handle) in pools.iter() {
                let size = i64::from(handle.size());
                let idle = i64::try_from(handle.num_idle()).unwrap_or(i64::MAX);
                let gauge = |state: &str| {
                    self.pool_connections
                        .with_label_values(&[pool, server.as_str(), state])
                };
                gauge("busy").set((size - idle).max(0));
                gauge("idle").set(idle);
            }
        }
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::warn!(%error, "could not encode metrics");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// A tower layer recording every request's count and latency by route
/// template. Hand-written (no boxing, no per-request service clone): it sits
/// on the L1-hit hot path.
#[derive(Clone)]
pub struct HttpMetricsLayer {
    metrics: Metrics,
}

impl HttpMetricsLayer {
    pub fn new(metrics: Metrics) -> Self {
        HttpMetricsLayer { metrics }
    }
}

impl<S> Layer<S> for HttpMetricsLayer {
    type Service = HttpMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpMetrics {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct HttpMetrics<S> {
    inner: S,
    metrics: Metrics,
}

impl<S> Service<Request> for HttpMetrics<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = TrackedResponse<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let route = request.extensions().get::<MatchedPath>().cloned();
        let method = method_label(request.method());
        TrackedResponse {
            inner: self.inner.call(request),
            route,
            method,
            started: Instant::now(),
            metrics: self.metrics.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner response future, recorded when it completes.
    pub struct TrackedResponse<F> {
        #[pin]
        inner: F,
        route: Option<MatchedPath>,
        method: &'static str,
        started: Instant,
        metrics: Metrics,
    }
}

impl<F, E> Future for TrackedResponse<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let route = this.route.as_ref().map_or("unmatched", MatchedPath::as_str);
        if let Ok(response) = &result {
            let class = match response.status().as_u16() {
                100..=199 => "1xx",
                200..=299 => "2xx",
                300..=399 => "3xx",
                400..=499 => "4xx",
                _ => "5xx",
            };
            this.metrics
                .http_requests
                .with_label_values(&[route, this.method, class])
                .inc();
        }
        this.metrics
            .http_duration
            .with_label_values(&[route, this.method])
            .observe(this.started.elapsed().as_secs_f64());
        Poll::Ready(result)
    }
}

/// A bounded label for the request method.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The series lines of `name` in an exposition (no comments).
    fn series<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .collect()
    }

    #[test]
    fn the_exposition_names_the_build_not_the_region_on_every_series() {
        let metrics = Metrics::new("eu-west").unwrap();
        metrics
            .http_requests
            .with_label_values(&["/x", "GET", "2xx"])
            .inc();
        let text = metrics.render();
        assert_eq!(
            series(&text, "meridian_build_info"),
            [format!(
                "meridian_build_info{{component=\"origin\",region=\"eu-west\",version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )]
        );
        assert!(
            !text.lines().any(|l| !l.starts_with("meridian_build_info")
                && (l.contains("{region=") || l.contains(",region="))),
            "no constant region label:\n{text}"
        );
        #[cfg(target_os = "linux")]
        for process in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
        ] {
            assert_eq!(series(&text, process).len(), 1, "{process}:\n{text}");
        }
    }

    #[test]
    fn the_series_rates_are_taken_of_exist_at_zero_from_start() {
        let text = Metrics::new("us-east").unwrap().render();
        for (name, label) in [
            (
                "meridian_order_transitions_total",
                "result=\"refused\",to=\"captured\"",
            ),
            (
                "meridian_order_transitions_total",
                "result=\"applied\",to=\"cancelled\"",
            ),
            (
                "meridian_inventory_reconciliation_checks_total",
                "result=\"mismatch\"",
            ),
            (
                "meridian_inventory_reconciliation_checks_total",
                "result=\"match\"",
            ),
            ("meridian_reservations_total", "event=\"expired\""),
            ("meridian_checkouts_total", "outcome=\"declined\""),
            (
                "meridian_order_processing_seconds_count",
                "outcome=\"captured\"",
            ),
            (
                "meridian_db_query_duration_seconds_count",
                "pool=\"replica\",purpose=\"background\"",
            ),
        ] {
            let lines = series(&text, name);
            assert!(
                lines.iter().any(|l| l.contains(label) && l.ends_with(" 0")),
                "{name}{{{label}}} at 0:\n{lines:?}"
            );
        }
        assert!(
            !text.contains("to=\"pending\""),
            "no order moves back to pending"
        );
        for gauge in [
            "meridian_inventory_oversold_units",
            "meridian_reservations_overdue",
            "meridian_replica_lag_tolerance_seconds",
        ] {
            assert_eq!(series(&text, gauge), [format!("{gauge} 0")]);
        }
    }

    #[test]
    fn database_latency_buckets_hold_the_slo_bounds() {
        let text = Metrics::new("us-east").unwrap().render();
        for le in ["0.05", "0.1"] {
            assert!(
                text.contains(&format!(
                    "meridian_db_query_duration_seconds_bucket{{pool=\"primary\",purpose=\"request\",le=\"{le}\"}} 0"
                )),
                "le={le}"
            );
        }
    }
}
