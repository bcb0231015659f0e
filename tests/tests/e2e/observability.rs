//! The monitoring package against the real thing: a real Prometheus (the
//! Debian `prometheus` server, installed by `.ci/install-deps`) scrapes a
//! two-region local stack (origins and edges of us-east and eu-west, order
//! shards, payment simulators) under light traffic, loads the package's
//! rule files, and answers every recording rule and every dashboard query
//! over its HTTP API. Each must return data, and every metric they name
//! must be one the binaries emit.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::checkout::{Shopper, set_stock};
use crate::edge::{TestEdge, edge_config, region};
use crate::helpers::{HOME, TestOrigin, TestStack};

const WEST: &str = "eu-west";

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .canonicalize()
        .expect("repository root")
}

/// A Prometheus server on a free port, killed on drop.
struct Prometheus {
    url: String,
    child: Child,
    log: PathBuf,
}

impl Prometheus {
    /// Scrapes `jobs` (name → `host:port` targets) every second and
    /// evaluates `rule_files` every second.
    fn start(dir: &Path, jobs: &[(&str, Vec<String>)], rule_files: &[PathBuf]) -> Prometheus {
        let config = json!({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": rule_files,
            "scrape_configs": jobs.iter().map(|(job, targets)| json!({
                "job_name": job,
                "static_configs": [{"targets": targets}],
            })).collect::<Vec<_>>(),
        });
        // JSON is YAML: Prometheus reads it as its configuration.
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config.to_string()).expect("write prometheus.yml");
        let port = meridian_launcher::free_port().expect("free port");
        let log = dir.join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "prometheus (Debian package `prometheus`, installed by .ci/install-deps): {e}"
                )
            });
        Prometheus {
            url: format!("http://127.0.0.1:{port}"),
            child,
            log,
        }
    }

    /// `GET /api/v1/<path>` with `params`; the `data` of a success.
    async fn api(
        &self,
        client: &reqwest::Client,
        path: &str,
        params: &[(&str, &str)],
    ) -> Option<Value> {
        let response = client
            .get(format!("{}/api/v1/{path}", self.url))
            .query(params)
            .send()
            .await
            .ok()?;
        let body: Value = response.json().await.ok()?;
        (body["status"] == "success").then(|| body["data"].clone())
    }

    /// The instant-query result of `query` (series or an error text).
    async fn query(&self, client: &reqwest::Client, query: &str) -> Result<Vec<Value>, String> {
        let response = client
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", query)])
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body: Value = response.json().await.map_err(|e| e.to_string())?;
        if body["status"] != "success" {
            return Err(format!("{}: {}", body["errorType"], body["error"]));
        }
        Ok(body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://").to_string()
}

/// Metric names an expression refers to (ours, the process collector's
/// and Prometheus's own `up`), recorded names excluded.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut word = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
            continue;
        }
        if (word.starts_with("meridian_") || word.starts_with("process_")) && !word.contains(':') {
            names.insert(word.clone());
        }
        word.clear();
    }
    names
}

/// Polls `check` until it returns no failures or `timeout` passes; then
/// the last failures.
async fn until_none<F, Fut>(timeout: Duration, mut check: F) -> Vec<String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Vec<String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let failures = check().await;
        if failures.is_empty() || Instant::now() > deadline {
            return failures;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_evaluates_every_rule_and_dashboard_query_against_a_live_stack() {
    let mut stack = TestStack::start(&[HOME, WEST], 1, 20).await;
    stack.start_order_shards(false).await;
    stack.start_psps().await;
    let mut east_config = stack.origin_config(HOME);
    east_config.inventory.reconcile_interval = Duration::from_secs(1);
    let east = TestOrigin::start(east_config).await;
    let west = stack.origin(WEST).await;
    let addr = |o: &TestOrigin| host_port(&o.url).parse().expect("origin address");
    let east_edge = TestEdge::start(edge_config(
        HOME,
        vec![region(HOME, addr(&east), 0), region(WEST, addr(&west), 80)],
    ))
    .await;
    let west_edge = TestEdge::start(edge_config(
        WEST,
        vec![region(WEST, addr(&west), 0), region(HOME, addr(&east), 80)],
    ))
    .await;

    let dir = tempfile::tempdir().expect("tempdir");
    let rules_dir = root().join("dashboards/rules");
    let mut rule_files: Vec<PathBuf> = std::fs::read_dir(&rules_dir)
        .expect("dashboards/rules")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    rule_files.sort();
    let prometheus = Prometheus::start(
        dir.path(),
        &[
            (
                "meridian-origin",
                vec![host_port(&east.admin), host_port(&west.admin)],
            ),
            (
                "meridian-edge",
                vec![host_port(&east_edge.admin), host_port(&west_edge.admin)],
            ),
        ],
        &rule_files,
    );

    // Light traffic through both edges, and checkouts in the home region.
    let sku = stack.sellable_skus(1).await[0].0.clone();
    set_stock(&east, &sku, 1000).await;
    let stop = Arc::new(AtomicBool::new(false));
    let browsing = {
        let stop = stop.clone();
        let edges = [east_edge.url.clone(), west_edge.url.clone()];
        let client = reqwest::Client::new();
        tokio::spawn(async move {
            let paths = [
                "/v1/products?limit=5",
                "/v1/categories",
                "/v1/products/1",
                "/v1/products/2",
                "/v1/products/999999",
            ];
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let url = format!("{}{}", edges[n % 2], paths[n % paths.len()]);
                let _ = client.get(url).send().await;
                n += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    for i in 0..4 {
        let shopper = Shopper::new(&east, &format!("observer-{i}"));
        shopper.add(&sku, 1).await;
        let response = shopper.checkout(&format!("observe-{i}"), &json!({})).await;
        assert_eq!(response.status(), 201, "checkout {i}");
    }

    let client = reqwest::Client::new();
    // Every target is scraped.
    let up = until_none(Duration::from_secs(60), || async {
        match prometheus.query(&client, "up == 1").await {
            Ok(series) if series.len() == 4 => Vec::new(),
            other => vec![format!("targets up: {other:?}")],
        }
    })
    .await;
    assert!(
        up.is_empty(),
        "{up:?}; log: {}",
        std::fs::read_to_string(&prometheus.log).unwrap_or_default()
    );

    // The queries: every recording rule (by its recorded series), every
    // dashboard panel, with the dashboards' variables as "all".
    let config = meridian_mixin::config::Config::load(&meridian_mixin::config_path(&root()))
        .expect("slos.toml");
    let mut dashboard_queries = Vec::new();
    for (name, dashboard) in meridian_mixin::grafana::dashboards(&config) {
        for query in meridian_mixin::grafana::queries(&dashboard) {
            dashboard_queries.push((
                name.clone(),
                meridian_mixin::grafana::substitute(&query, "30s"),
            ));
        }
    }
    let mut recorded = Vec::new();
    let mut referenced = BTreeSet::new();
    for file in &rule_files {
        let parsed: Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(file).expect("rules")).expect("yaml");
        for rule in parsed["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .flat_map(|g| g["rules"].as_array().expect("rules"))
        {
            referenced.extend(metric_names(rule["expr"].as_str().unwrap_or_default()));
            if let Some(record) = rule["record"].as_str() {
                let selector = match rule["labels"]["slo"].as_str() {
                    Some(slo) => format!("{record}{{slo=\"{slo}\"}}"),
                    None => record.to_string(),
                };
                recorded.push(selector);
            }
        }
    }
    for (_, query) in &dashboard_queries {
        referenced.extend(metric_names(query));
    }
    assert!(recorded.len() > 80, "{} recording rules", recorded.len());

    // Every metric named is emitted (Prometheus has stored it).
    let missing = until_none(Duration::from_secs(60), || async {
        let names: BTreeSet<String> = prometheus
            .api(&client, "label/__name__/values", &[])
            .await
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        referenced
            .iter()
            .filter(|n| !names.contains(*n))
            .cloned()
            .collect()
    })
    .await;
    assert!(
        missing.is_empty(),
        "named by a rule or panel but not emitted: {missing:?}"
    );

    // Every rule evaluates without error.
    let unhealthy = until_none(Duration::from_secs(30), || async {
        let Some(data) = prometheus.api(&client, "rules", &[]).await else {
            return vec!["no answer from /api/v1/rules".to_string()];
        };
        data["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .filter(|r| r["health"] != "ok")
            .map(|r| {
                format!(
                    "{} {}: {} {}",
                    r["name"], r["labels"], r["health"], r["lastError"]
                )
            })
            .collect()
    })
    .await;
    assert!(
        unhealthy.is_empty(),
        "rules not evaluated cleanly: {unhealthy:#?}"
    );

    // Every recorded series and every panel query returns data.
    let empty = until_none(Duration::from_secs(90), || async {
        let mut empty = Vec::new();
        for selector in &recorded {
            match prometheus.query(&client, selector).await {
                Ok(series) if !series.is_empty() => {}
                other => empty.push(format!("rule {selector}: {other:?}")),
            }
        }
        for (dashboard, query) in &dashboard_queries {
            match prometheus.query(&client, query).await {
                Ok(series) if !series.is_empty() => {}
                other => empty.push(format!("{dashboard}: {query}: {other:?}")),
            }
        }
        empty
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let _ = browsing.await;
    assert!(empty.is_empty(), "no data:\n{}", empty.join("\n"));

    // The SLIs the traffic exercised carry both regions.
    let availability = prometheus
        .query(
            &client,
            "meridian_slo:sli_error:ratio_rate5m{slo=\"edge-availability\"}",
        )
        .await
        .expect("query");
    let regions: BTreeSet<&str> = availability
        .iter()
        .filter_map(|s| s["metric"]["region"].as_str())
        .collect();
    assert_eq!(regions, BTreeSet::from([HOME, WEST]), "{availability:?}");
}
