//! Grafana dashboards as JSON: a small builder (rows of panels laid out on
//! Grafana's 24-column grid, ids assigned in order) and the four
//! dashboards: the global SLO overview, the edge, the origin and checkout.
//!
//! Every dashboard has a `datasource` variable (any Prometheus) and a
//! `region` variable read from `meridian_build_info`; the per-process ones
//! add `instance` (the region's edges or origins), and their raw series are
//! filtered by it, since the binaries' series carry no region label.

use serde_json::{Value, json};

use crate::config::Config;
use crate::rules::{OBJECTIVE_RECORD, REGION_JOIN, sli_record};

/// The data source every panel and variable uses.
fn datasource() -> Value {
    json!({"type": "prometheus", "uid": "${datasource}"})
}

/// Builds one dashboard.
pub struct Dashboard {
    uid: String,
    title: String,
    description: String,
    variables: Vec<Value>,
    panels: Vec<Value>,
    next_id: u64,
    /// Grid cursor.
    x: u64,
    y: u64,
    row_height: u64,
}

/// A panel before layout.
pub struct Panel {
    kind: &'static str,
    title: String,
    description: String,
    unit: &'static str,
    width: u64,
    targets: Vec<(String, String)>,
}

impl Panel {
    /// A time series panel.
    pub fn graph(title: &str, unit: &'static str, description: &str) -> Panel {
        Panel {
            kind: "timeseries",
            title: title.into(),
            description: description.into(),
            unit,
            width: 12,
            targets: Vec::new(),
        }
    }

    /// A single-value panel (last value).
    pub fn stat(title: &str, unit: &'static str, description: &str) -> Panel {
        Panel {
            kind: "stat",
            width: 6,
            ..Panel::graph(title, unit, description)
        }
    }

    /// A bar gauge (one bar per series, last value).
    pub fn bars(title: &str, unit: &'static str, description: &str) -> Panel {
        Panel {
            kind: "bargauge",
            width: 12,
            ..Panel::graph(title, unit, description)
        }
    }

    pub fn width(mut self, width: u64) -> Panel {
        self.width = width;
        self
    }

    /// Adds a query with its legend.
    pub fn query(mut self, expr: impl Into<String>, legend: &str) -> Panel {
        self.targets.push((expr.into(), legend.into()));
        self
    }
}

impl Dashboard {
    pub fn new(uid: &str, title: &str, description: &str) -> Dashboard {
        Dashboard {
            uid: uid.into(),
            title: title.into(),
            description: description.into(),
            variables: vec![
                json!({
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "refresh": 1,
                    "regex": "",
                    "options": []
                }),
                query_variable(
                    "region",
                    "Region",
                    "label_values(meridian_build_info, region)",
                ),
            ],
            panels: Vec::new(),
            next_id: 1,
            x: 0,
            y: 0,
            row_height: 0,
        }
    }

    /// Adds the `instance` variable: the processes of `component` in the
    /// chosen regions.
    pub fn instances(mut self, component: &str) -> Dashboard {
        self.variables.push(query_variable(
            "instance",
            "Instance",
            &format!(
                "label_values(meridian_build_info{{component=\"{component}\", region=~\"$region\"}}, instance)"
            ),
        ));
        self
    }

    fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn newline(&mut self) {
        if self.x > 0 {
            self.y += self.row_height;
            self.x = 0;
            self.row_height = 0;
        }
    }

    /// Starts a row.
    pub fn row(mut self, title: &str) -> Dashboard {
        self.newline();
        let id = self.id();
        self.panels.push(json!({
            "id": id,
            "type": "row",
            "title": title,
            "collapsed": false,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
            "panels": []
        }));
        self.y += 1;
        self
    }

    /// Adds a panel after the last one, wrapping at 24 columns.
    pub fn panel(mut self, panel: Panel) -> Dashboard {
        let height = if panel.kind == "stat" { 4 } else { 8 };
        if self.x + panel.width > 24 {
            self.newline();
        }
        let id = self.id();
        let targets: Vec<Value> = panel
            .targets
            .iter()
            .enumerate()
            .map(|(i, (expr, legend))| {
                json!({
                    "refId": ref_id(i),
                    "datasource": datasource(),
                    "expr": expr,
                    "legendFormat": legend,
                    "range": panel.kind == "timeseries",
                    "instant": panel.kind != "timeseries"
                })
            })
            .collect();
        let options = match panel.kind {
            "timeseries" => json!({
                "legend": {"displayMode": "list", "placement": "bottom", "showLegend": true},
                "tooltip": {"mode": "multi", "sort": "desc"}
            }),
            _ => json!({
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": false},
                "orientation": "horizontal"
            }),
        };
        self.panels.push(json!({
            "id": id,
            "type": panel.kind,
            "title": panel.title,
            "description": panel.description,
            "datasource": datasource(),
            "gridPos": {"h": height, "w": panel.width, "x": self.x, "y": self.y},
            "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
            "options": options,
            "targets": targets
        }));
        self.x += panel.width;
        self.row_height = self.row_height.max(height);
        self
    }

    pub fn build(self) -> Value {
        json!({
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["meridian"],
            "timezone": "utc",
            "editable": true,
            "graphTooltip": 1,
            "schemaVersion": 39,
            "version": 1,
            "refresh": "30s",
            "time": {"from": "now-6h", "to": "now"},
            "annotations": {"list": []},
            "links": [{
                "title": "Meridian",
                "type": "dashboards",
                "tags": ["meridian"],
                "asDropdown": true
            }],
            "templating": {"list": self.variables},
            "panels": self.panels
        })
    }
}

fn ref_id(index: usize) -> String {
    char::from(b'A' + u8::try_from(index % 26).unwrap_or(0)).to_string()
}

fn query_variable(name: &str, label: &str, query: &str) -> Value {
    json!({
        "name": name,
        "label": label,
        "type": "query",
        "datasource": datasource(),
        "definition": query,
        "query": {"query": query, "refId": name},
        "includeAll": true,
        "multi": true,
        "refresh": 2,
        "sort": 1,
        "current": {},
        "options": []
    })
}

/// `rate(selector[$__rate_interval])` summed by `by`.
fn rate(selector: &str, by: &str) -> String {
    format!("sum by ({by}) (rate({selector}[$__rate_interval]))")
}

/// Like [`rate`] for the `some` series of `all`, reading 0 (not nothing)
/// for the `by` groups of `all` that have none of them yet.
fn rate_or_zero(some: &str, all: &str, by: &str) -> String {
    format!("{}\nor\n0 * {}", rate(some, by), rate(all, by))
}

/// The `q` quantile of a histogram by `by`.
fn quantile(q: &str, histogram: &str, filter: &str, by: &str) -> String {
    let by = if by.is_empty() {
        "le".to_string()
    } else {
        format!("{by}, le")
    };
    format!(
        "histogram_quantile({q}, sum by ({by}) (rate({histogram}_bucket{{{filter}}}[$__rate_interval])))"
    )
}

/// The recorded error ratio of `slo` over `window`, in the chosen regions.
fn sli(window: &str, slo: &str) -> String {
    format!("meridian_slo:sli_error:ratio_rate{window}{{slo=\"{slo}\", region=~\"$region\"}}")
}

const EDGE: &str = "instance=~\"$instance\"";
const ORIGIN: &str = "instance=~\"$instance\"";

/// Every dashboard, by file name.
pub fn dashboards(config: &Config) -> Vec<(String, Value)> {
    vec![
        ("meridian-slo-overview.json".into(), overview(config)),
        ("meridian-edge.json".into(), edge()),
        ("meridian-origin.json".into(), origin()),
        ("meridian-checkout.json".into(), checkout()),
    ]
}

fn overview(config: &Config) -> Value {
    let period = &config.period;
    let budget_left = format!(
        "1 - (\n  {}{{region=~\"$region\"}}\n  / on (slo) group_left ()\n  (1 - {OBJECTIVE_RECORD})\n)",
        sli_record(period)
    );
    let burn = |window: &str| {
        format!(
            "meridian_slo:sli_error:ratio_rate{window}{{region=~\"$region\"}}\n/ on (slo) group_left ()\n(1 - {OBJECTIVE_RECORD})"
        )
    };
    let mut dashboard = Dashboard::new(
        "meridian-slo-overview",
        "Meridian / SLO overview",
        "Every SLO of dashboards/slos.toml by region: error budget left over the budget period, burn rates over the alert windows, and each region's mode and fleet.",
    )
    .row(&format!("Error budget ({period})"))
    .panel(
        Panel::bars(
            "Error budget left",
            "percentunit",
            "Share of the period's error budget not yet spent (1 - error ratio over the period / (1 - objective)); below 0 the SLO is missed.",
        )
        .width(24)
        .query(budget_left, "{{region}} {{slo}}"),
    )
    .row("Burn rates")
    .panel(
        Panel::graph(
            "Burn rate over 1h (page at 14.4)",
            "none",
            "Error ratio over 1 hour divided by the error budget: 1 spends the budget exactly over the period.",
        )
        .query(burn("1h"), "{{region}} {{slo}}"),
    )
    .panel(
        Panel::graph(
            "Burn rate over 6h (page at 6)",
            "none",
            "Error ratio over 6 hours divided by the error budget.",
        )
        .query(burn("6h"), "{{region}} {{slo}}"),
    )
    .panel(
        Panel::graph(
            "Burn rate over 1d (ticket at 3)",
            "none",
            "Error ratio over 1 day divided by the error budget.",
        )
        .query(burn("1d"), "{{region}} {{slo}}"),
    )
    .panel(
        Panel::graph(
            "Burn rate over 3d (ticket at 1)",
            "none",
            "Error ratio over 3 days divided by the error budget.",
        )
        .query(burn("3d"), "{{region}} {{slo}}"),
    )
    .row("Regions");
    dashboard = dashboard
        .panel(
            Panel::stat(
                "Operating mode",
                "none",
                "The mode each region's origins apply (normal, degraded, read-only, maintenance).",
            )
            .query(
                format!(
                    "max by (region, mode) (meridian_mode {REGION_JOIN}{{region=~\"$region\"}}) == 1"
                ),
                "{{region}}: {{mode}}",
            ),
        )
        .panel(
            Panel::stat(
                "Processes up",
                "none",
                "Edges and origins answering scrapes, by region and component.",
            )
            .query(
                "sum by (region, component) (up * on (job, instance) group_left (region, component) meridian_build_info{region=~\"$region\"})",
                "{{region}} {{component}}",
            ),
        )
        .panel(
            Panel::stat(
                "Availability (5m)",
                "percentunit",
                "Edge requests answered without a 5xx over the last 5 minutes.",
            )
            .query(
                format!(
                    "1 - {}{{slo=\"edge-availability\", region=~\"$region\"}}",
                    sli_record(&config.windows[0])
                ),
                "{{region}}",
            ),
        )
        .panel(
            Panel::stat(
                "Replica lag",
                "s",
                "The worst replica lag each region's origins measure.",
            )
            .query(
                format!(
                    "max by (region) (meridian_replica_lag_seconds {REGION_JOIN}{{region=~\"$region\"}})"
                ),
                "{{region}}",
            ),
        );
    dashboard = dashboard.row("Service level indicators (5m)");
    for slo in &config.slos {
        dashboard = dashboard.panel(
            Panel::graph(&slo.title, "percentunit", &slo.description)
                .width(8)
                .query(
                    format!(
                        "1 - {}{{slo=\"{}\", region=~\"$region\"}}",
                        sli_record(&config.windows[0]),
                        slo.name
                    ),
                    "{{region}}",
                )
                .query(
                    format!("{OBJECTIVE_RECORD}{{slo=\"{}\"}}", slo.name),
                    "objective",
                ),
        );
    }
    dashboard.build()
}

fn edge() -> Value {
    let requests = format!("meridian_edge_requests_total{{{EDGE}}}");
    Dashboard::new(
        "meridian-edge",
        "Meridian / Edge",
        "The regional edges (Pingora): traffic, the HTTP cache, limits and bots, the waiting room and modes, origin health and failovers.",
    )
    .instances("edge")
    .row("Requests")
    .panel(
        Panel::graph("Requests by route class", "reqps", "Requests answered by the edge.")
            .query(rate(&requests, "route"), "{{route}}"),
    )
    .panel(
        Panel::graph("Responses by status class", "reqps", "Answers by status class.")
            .query(rate(&requests, "status_class"), "{{status_class}}"),
    )
    .panel(
        Panel::graph("Latency by route class", "s", "p50, p95 and p99 from request to the end of the response.")
            .query(quantile("0.5", "meridian_edge_request_duration_seconds", EDGE, "route"), "p50 {{route}}")
            .query(quantile("0.95", "meridian_edge_request_duration_seconds", EDGE, "route"), "p95 {{route}}")
            .query(quantile("0.99", "meridian_edge_request_duration_seconds", EDGE, "route"), "p99 {{route}}"),
    )
    .panel(
        Panel::graph("Answered by region", "reqps", "Which region's origins answered (`edge`: the edge itself).")
            .query(rate(&requests, "upstream_region"), "{{upstream_region}}"),
    )
    .row("Cache")
    .panel(
        Panel::graph("Hit ratio", "percentunit", "Hits (fresh or stale) over cacheable look-ups.")
            .query(
                format!(
                    "{}\n/\n{}",
                    rate(&format!("meridian_edge_requests_total{{{EDGE}, cache=~\"HIT|STALE\"}}"), "instance"),
                    rate(&format!("meridian_edge_requests_total{{{EDGE}, cache=~\"HIT|STALE|MISS|EXPIRED\"}}"), "instance")
                ),
                "{{instance}}",
            ),
    )
    .panel(
        Panel::graph("Cache status mix", "reqps", "Answers by cache status.")
            .query(rate(&requests, "cache"), "{{cache}}"),
    )
    .panel(
        Panel::graph("Cache size", "bytes", "Bytes and objects held by each edge's response cache.")
            .query(format!("meridian_edge_cache_bytes{{{EDGE}}}"), "bytes {{instance}}")
            .query(format!("meridian_edge_cache_objects{{{EDGE}}}"), "objects {{instance}}"),
    )
    .panel(
        Panel::graph("Evictions, purges and stale answers", "ops", "Objects evicted for capacity, removed by purges (by source), and answers served stale (by reason).")
            .query(rate(&format!("meridian_edge_cache_evictions_total{{{EDGE}}}"), "instance"), "evicted {{instance}}")
            .query(rate(&format!("meridian_edge_cache_purged_objects_total{{{EDGE}}}"), "source"), "purged ({{source}})")
            .query(rate(&format!("meridian_edge_stale_served_total{{{EDGE}}}"), "reason"), "stale ({{reason}})"),
    )
    .row("Limits and bots")
    .panel(
        Panel::graph("Rate limited by policy", "reqps", "Requests refused with 429.")
            .query(rate(&format!("meridian_edge_rate_limited_total{{{EDGE}}}"), "policy"), "{{policy}}"),
    )
    .panel(
        Panel::graph("Bot decisions", "reqps", "Bot-scoring decisions by action.")
            .query(rate(&format!("meridian_edge_bot_decisions_total{{{EDGE}}}"), "action"), "{{action}}"),
    )
    .panel(
        Panel::graph("Checkout budget", "reqps", "Checkout budget decisions by source and result.")
            .query(rate(&format!("meridian_edge_checkout_budget_total{{{EDGE}}}"), "source, result"), "{{source}} {{result}}"),
    )
    .panel(
        Panel::graph("Connections cut", "ops", "Connections refused at accept and request heads that timed out.")
            .query(rate(&format!("meridian_edge_connections_refused_total{{{EDGE}}}"), "instance"), "refused {{instance}}")
            .query(rate(&format!("meridian_edge_request_heads_timed_out_total{{{EDGE}}}"), "instance"), "head timeout {{instance}}"),
    )
    .row("Waiting room and modes")
    .panel(
        Panel::graph("Waiting room", "reqps", "Waiting-room decisions on protected routes.")
            .query(rate(&format!("meridian_edge_waiting_room_total{{{EDGE}}}"), "result"), "{{result}}"),
    )
    .panel(
        Panel::stat("Mode", "none", "The mode each edge applies.")
            .query(format!("max by (instance, mode) (meridian_edge_mode{{{EDGE}}}) == 1"), "{{instance}}: {{mode}}"),
    )
    .panel(
        Panel::stat("Modes stale", "none", "1 while an edge cannot ask any origin of its region for the mode.")
            .query(format!("max by (instance) (meridian_edge_modes_stale{{{EDGE}}})"), "{{instance}}"),
    )
    .panel(
        Panel::graph("Mode propagation", "s", "p95 time from a mode change on the primary to applied at the edge; answers from the maintenance page.")
            .query(quantile("0.95", "meridian_edge_mode_propagation_seconds", EDGE, ""), "p95 propagation")
            .query(rate(&format!("meridian_edge_maintenance_answers_total{{{EDGE}}}"), "instance"), "maintenance answers/s {{instance}}"),
    )
    .panel(
        Panel::bars("Features", "none", "Feature switches as each edge applies them (1 on).")
            .query(format!("max by (feature) (meridian_edge_feature_enabled{{{EDGE}}})"), "{{feature}}"),
    )
    .row("Origins and failover")
    .panel(
        Panel::graph("Origin health", "none", "1 while an origin passes the edge's health checks.")
            .query(format!("max by (upstream_region, origin) (meridian_edge_origin_healthy{{{EDGE}}})"), "{{upstream_region}} {{origin}}"),
    )
    .panel(
        Panel::graph("Failovers", "reqps", "Requests sent to another region than the first choice.")
            .query(rate(&format!("meridian_edge_failovers_total{{{EDGE}}}"), "from, to"), "{{from}} → {{to}}"),
    )
    .panel(
        Panel::graph("Geo decisions", "reqps", "How the client's region was decided.")
            .query(rate(&format!("meridian_edge_geo_decisions_total{{{EDGE}}}"), "source"), "{{source}}"),
    )
    .row("Process")
    .panel(process_cpu())
    .panel(process_memory())
    .build()
}

fn process_cpu() -> Panel {
    Panel::graph("CPU", "percentunit", "CPU time used per second by each process.").query(
        "sum by (instance) (rate(process_cpu_seconds_total{instance=~\"$instance\"}[$__rate_interval]))",
        "{{instance}}",
    )
}

fn process_memory() -> Panel {
    Panel::graph(
        "Resident memory",
        "bytes",
        "Resident set size of each process.",
    )
    .query(
        "process_resident_memory_bytes{instance=~\"$instance\"}",
        "{{instance}}",
    )
}

fn origin() -> Value {
    let public = format!("{ORIGIN}, route=~\"/v1/.*\"");
    Dashboard::new(
        "meridian-origin",
        "Meridian / Origin",
        "The origin services (axum): rate, errors and duration per route, the cache tiers, database pools, query time and replica lag, the order shards, queues and the process.",
    )
    .instances("origin")
    .row("Requests per route (RED)")
    .panel(
        Panel::graph("Rate by route", "reqps", "Requests per route template.")
            .query(rate(&format!("meridian_http_requests_total{{{public}}}"), "route"), "{{route}}"),
    )
    .panel(
        Panel::graph("Errors by route", "reqps", "5xx answers per route template.")
            .query(
                rate_or_zero(
                    &format!("meridian_http_requests_total{{{public}, status_class=\"5xx\"}}"),
                    &format!("meridian_http_requests_total{{{public}}}"),
                    "route",
                ),
                "{{route}}",
            ),
    )
    .panel(
        Panel::graph("p95 by route", "s", "95th percentile of request duration per route template.")
            .query(quantile("0.95", "meridian_http_request_duration_seconds", &public, "route"), "{{route}}"),
    )
    .panel(
        Panel::graph("Client errors by route", "reqps", "4xx answers per route template (bad input, conflicts, limits).")
            .query(
                rate_or_zero(
                    &format!("meridian_http_requests_total{{{public}, status_class=\"4xx\"}}"),
                    &format!("meridian_http_requests_total{{{public}}}"),
                    "route",
                ),
                "{{route}}",
            ),
    )
    .row("Cache tiers")
    .panel(
        Panel::graph("Look-ups by tier and result", "ops", "L1 (moka) and L2 (Redis) look-ups.")
            .query(rate(&format!("meridian_cache_requests_total{{{ORIGIN}}}"), "tier, result"), "{{tier}} {{result}}"),
    )
    .panel(
        Panel::graph("Hit ratio", "percentunit", "Look-ups answered by L1 or L2 without the database.")
            .query(
                format!(
                    "{}\n/\n{}",
                    rate(&format!("meridian_cache_requests_total{{{ORIGIN}, result=~\"hit|negative_hit|coalesced\"}}"), "instance"),
                    rate(&format!("meridian_cache_requests_total{{{ORIGIN}, tier=\"l1\"}}"), "instance")
                ),
                "{{instance}}",
            ),
    )
    .panel(
        Panel::stat("L2 available", "none", "1 while Redis answers; 0 while the L2 is skipped.")
            .query(format!("min by (instance) (meridian_cache_l2_available{{{ORIGIN}}})"), "{{instance}}"),
    )
    .panel(
        Panel::graph("Invalidations", "ops", "Cache invalidations applied, by source (log, pubsub).")
            .width(18)
            .query(rate(&format!("meridian_invalidations_applied_total{{{ORIGIN}}}"), "source"), "{{source}}"),
    )
    .row("Database")
    .panel(
        Panel::graph("Queries by pool", "ops", "Catalog queries by pool, server and purpose.")
            .query(rate(&format!("meridian_db_queries_total{{{ORIGIN}}}"), "pool, server, purpose"), "{{pool}} {{server}} {{purpose}}"),
    )
    .panel(
        Panel::graph("Query time p95 by pool", "s", "95th percentile of query time (SLO: 50 ms, alert at 100 ms).")
            .query(quantile("0.95", "meridian_db_query_duration_seconds", ORIGIN, "pool, purpose"), "{{pool}} {{purpose}}"),
    )
    .panel(
        Panel::graph("Replica lag", "s", "Measured replay lag of each replica, and the region's tolerance.")
            .query(format!("max by (replica) (meridian_replica_lag_seconds{{{ORIGIN}}})"), "{{replica}}")
            .query(format!("max (meridian_replica_lag_tolerance_seconds{{{ORIGIN}}})"), "tolerance"),
    )
    .panel(
        Panel::graph("Replicas usable", "none", "1 while a replica is up and within tolerance (reads go to the primary otherwise).")
            .query(format!("min by (replica) (meridian_replica_usable{{{ORIGIN}}})"), "{{replica}}"),
    )
    .panel(
        Panel::graph("Catalog pool connections", "none", "Connections of the primary, read-only primary and replica pools, busy and idle (pool_size caps each).")
            .query(format!("sum by (server, state) (meridian_db_pool_connections{{{ORIGIN}, pool=~\"primary|replica\"}})"), "{{server}} {{state}}"),
    )
    .row("Order shards")
    .panel(
        Panel::graph("Shard connections", "none", "Connections of each order shard's pool, busy and idle: a shard whose busy connections sit at its pool size is saturated; one with none at all is unreachable or unused.")
            .query(format!("sum by (server, state) (meridian_db_pool_connections{{{ORIGIN}, pool=\"shard\"}})"), "{{server}} {{state}}"),
    )
    .panel(
        Panel::graph("Order transitions", "ops", "State-machine transitions in this region's shards by result (refused: an illegal move the machine stopped).")
            .query(rate(&format!("meridian_order_transitions_total{{{ORIGIN}}}"), "result"), "{{result}}"),
    )
    .row("Queues and modes")
    .panel(
        Panel::graph("Queue depth", "none", "Reservation jobs waiting in the batchers, and the flash-claim backlog (summed over workers).")
            .query(format!("sum by (queue) (meridian_queue_depth{{{ORIGIN}}})"), "{{queue}}"),
    )
    .panel(
        Panel::graph("Reservation batch size", "none", "p50 and p95 of reservation jobs applied per inventory transaction.")
            .query(quantile("0.5", "meridian_reservation_batch_size", ORIGIN, ""), "p50")
            .query(quantile("0.95", "meridian_reservation_batch_size", ORIGIN, ""), "p95"),
    )
    .panel(
        Panel::stat("Mode", "none", "The mode each origin applies.")
            .query(format!("max by (instance, mode) (meridian_mode{{{ORIGIN}}}) == 1"), "{{instance}}: {{mode}}"),
    )
    .panel(
        Panel::stat("Mode table unreadable", "none", "1 while an origin runs on its last known mode.")
            .query(format!("max by (instance) (meridian_modes_stale{{{ORIGIN}}})"), "{{instance}}"),
    )
    .row("Process")
    .panel(process_cpu())
    .panel(process_memory())
    .build()
}

fn checkout() -> Value {
    Dashboard::new(
        "meridian-checkout",
        "Meridian / Checkout",
        "Orders, reservations and their outcomes, flash sales, payment providers and the money invariants (oversell, inventory accuracy).",
    )
    .instances("origin")
    .row("Orders")
    .panel(
        Panel::graph("Checkouts by outcome", "reqps", "Checkouts answered, by outcome.")
            .query(rate(&format!("meridian_checkouts_total{{{ORIGIN}}}"), "outcome"), "{{outcome}}"),
    )
    .panel(
        Panel::graph("Checkout latency", "s", "p50 and p95 of the checkout saga (SLO: p95 < 200 ms).")
            .query(quantile("0.5", "meridian_checkout_duration_seconds", ORIGIN, ""), "p50")
            .query(quantile("0.95", "meridian_checkout_duration_seconds", ORIGIN, ""), "p95"),
    )
    .panel(
        Panel::graph("Order processing time", "s", "p95 from an order's placement to its final state, by outcome (SLO: 30 s, alert at 60 s).")
            .query(quantile("0.95", "meridian_order_processing_seconds", ORIGIN, "outcome"), "{{outcome}}"),
    )
    .panel(
        Panel::graph("Order transitions", "ops", "State-machine transitions by target state and result (refused: an illegal move the machine stopped).")
            .query(rate(&format!("meridian_order_transitions_total{{{ORIGIN}}}"), "to, result"), "{{to}} {{result}}"),
    )
    .row("Reservations")
    .panel(
        Panel::graph("Reservations by event", "ops", "Created, rejected, committed (sold), released and expired reservations.")
            .query(rate(&format!("meridian_reservations_total{{{ORIGIN}}}"), "event"), "{{event}}"),
    )
    .panel(
        Panel::graph("Conversion and expiry (1h)", "percentunit", "Reservations that became sales, and those that lapsed by TTL, over the last hour (SLOs: > 70 %, < 20 %).")
            .query(
                format!("1 - {}", sli("1h", "reservation-conversion")),
                "converted {{region}}",
            )
            .query(
                sli("1h", "reservation-expiry"),
                "expired {{region}}",
            ),
    )
    .panel(
        Panel::stat("Overdue reservations", "none", "Reservations holding stock past their expiry (the leak signal).")
            .query(format!("max (meridian_reservations_overdue{{{ORIGIN}}})"), "overdue"),
    )
    .panel(
        Panel::stat("Reservation queue", "none", "Reservation jobs waiting in the batchers.")
            .query(format!("sum (meridian_queue_depth{{{ORIGIN}, queue=\"reservations\"}})"), "queued"),
    )
    .panel(
        Panel::graph("Recoveries", "ops", "Unfinished checkouts taken over by the recovery worker, by result.")
            .query(rate(&format!("meridian_checkout_recoveries_total{{{ORIGIN}}}"), "result"), "{{result}}"),
    )
    .row("Flash sales")
    .panel(
        Panel::graph("Claims at the gate", "ops", "Flash-sale claims by result.")
            .query(rate(&format!("meridian_flash_claims_total{{{ORIGIN}}}"), "result"), "{{result}}"),
    )
    .panel(
        Panel::graph("Claims processed and backlog", "ops", "Won claims turned into reservations, and the backlog waiting for the claim workers.")
            .query(rate(&format!("meridian_flash_claims_processed_total{{{ORIGIN}}}"), "result"), "{{result}}")
            .query(format!("sum (meridian_queue_depth{{{ORIGIN}, queue=\"flash_claims\"}})"), "backlog"),
    )
    .row("Payments")
    .panel(
        Panel::graph("Authorizations by provider and result", "ops", "Authorization calls to each payment provider.")
            .query(rate(&format!("meridian_psp_requests_total{{{ORIGIN}, operation=\"authorize\"}}"), "psp, result"), "{{psp}} {{result}}"),
    )
    .panel(
        Panel::graph("Authorization success", "percentunit", "Authorization calls the providers answered, over 5 minutes (SLO: > 98 %).")
            .query(
                format!("1 - {}", sli("5m", "payment-authorization")),
                "{{region}}",
            ),
    )
    .panel(
        Panel::graph("Provider latency", "s", "p95 of payment-provider calls by provider and operation.")
            .query(quantile("0.95", "meridian_psp_request_duration_seconds", ORIGIN, "psp, operation"), "{{psp}} {{operation}}"),
    )
    .panel(
        Panel::graph("Breakers and fallbacks", "none", "1 while a provider's circuit breaker is open; authorizations moved past a provider.")
            .query(format!("max by (psp) (meridian_psp_breaker_open{{{ORIGIN}}})"), "open {{psp}}")
            .query(rate(&format!("meridian_psp_fallbacks_total{{{ORIGIN}}}"), "psp"), "fallbacks/s past {{psp}}"),
    )
    .row("Money invariants")
    .panel(
        Panel::stat("Oversold units", "none", "Units sold beyond stock found at reconciliation: must stay 0.")
            .query(format!("max (meridian_inventory_oversold_units{{{ORIGIN}}})"), "oversold"),
    )
    .panel(
        Panel::stat("Inventory accuracy (1h)", "percentunit", "SKUs whose counters agree with their reservation rows (SLO: > 99.9 %).")
            .query(
                format!("1 - {}", sli("1h", "inventory-accuracy")),
                "{{region}}",
            ),
    )
    .panel(
        Panel::graph("Reconciliation checks", "ops", "SKUs checked by the reconciliation, by result.")
            .query(rate(&format!("meridian_inventory_reconciliation_checks_total{{{ORIGIN}}}"), "result"), "{{result}}"),
    )
    .build()
}

/// Every query of a dashboard: panel targets and variable queries.
pub fn queries(dashboard: &Value) -> Vec<String> {
    let mut out = Vec::new();
    collect_panels(dashboard["panels"].as_array(), &mut out);
    out
}

fn collect_panels(panels: Option<&Vec<Value>>, out: &mut Vec<String>) {
    for panel in panels.into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push(expr.to_string());
            }
        }
        collect_panels(panel["panels"].as_array(), out);
    }
}

/// The grid's panels' ids, rows' nested panels included.
pub fn panel_ids(dashboard: &Value) -> Vec<u64> {
    fn walk(panels: Option<&Vec<Value>>, out: &mut Vec<u64>) {
        for panel in panels.into_iter().flatten() {
            if let Some(id) = panel["id"].as_u64() {
                out.push(id);
            }
            walk(panel["panels"].as_array(), out);
        }
    }
    let mut out = Vec::new();
    walk(dashboard["panels"].as_array(), &mut out);
    out
}

/// `query` with the dashboard's variables given values a plain Prometheus
/// query understands: every region and instance, a fixed rate interval.
pub fn substitute(query: &str, rate_interval: &str) -> String {
    query
        .replace("$__rate_interval", rate_interval)
        .replace("$region", ".*")
        .replace("$instance", ".*")
}
