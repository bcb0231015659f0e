//! `meridian status [--json]`: per region, the edge's and the origin's
//! health, the worst replica lag, the edge's cache hit ratio since its
//! start (from its request counters), request and 5xx rates (the edge's
//! counters sampled twice, `--interval` apart) and the operating mode each
//! applies.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Args;
use serde::Serialize;
use serde_json::Value;

use super::client::OpsClient;
use super::targets::{RegionTargets, TargetArgs};
use crate::CliError;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Between the two samples of the request counters.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub interval: Duration,
    #[command(flatten)]
    pub targets: TargetArgs,
}

/// One region's line.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RegionStatus {
    pub region: String,
    /// `ready`, `not ready`, `unreachable` or `none`.
    pub edge: String,
    pub origin: String,
    /// The worst replica lag the origin measures (s).
    pub replica_lag_seconds: Option<f64>,
    /// Hits (stale ones included) over cache look-ups since the edge
    /// started; `None` before its first look-up.
    pub cache_hit_ratio: Option<f64>,
    pub requests_per_second: Option<f64>,
    /// Share of responses that were 5xx over the interval.
    pub error_rate: Option<f64>,
    pub origin_mode: Option<String>,
    pub edge_mode: Option<String>,
    /// A process runs on a setting it could not confirm.
    pub mode_stale: bool,
}

/// Totals of the edge's request counter.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct RequestTotals {
    all: f64,
    /// `status_class="5xx"`.
    errors: f64,
    /// `cache` HIT or STALE.
    hits: f64,
    /// `cache` HIT, STALE, MISS or EXPIRED: answers the cache looked up.
    lookups: f64,
}

impl RequestTotals {
    fn of(metrics: &str) -> Self {
        let mut totals = RequestTotals::default();
        let lines = metrics.lines().map(|l| Ok(l.to_string()));
        let Ok(scrape) = prometheus_parse::Scrape::parse(lines) else {
            return totals;
        };
        for sample in &scrape.samples {
            if sample.metric != "meridian_edge_requests_total" {
                continue;
            }
            let value = match sample.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => continue,
            };
            totals.all += value;
            if sample.labels.get("status_class") == Some("5xx") {
                totals.errors += value;
            }
            match sample.labels.get("cache") {
                Some("HIT" | "STALE") => {
                    totals.hits += value;
                    totals.lookups += value;
                }
                Some("MISS" | "EXPIRED") => totals.lookups += value,
                _ => {}
            }
        }
        totals
    }

    /// Hits over look-ups; `None` without a look-up.
    fn hit_ratio(&self) -> Option<f64> {
        (self.lookups > 0.0).then(|| self.hits / self.lookups)
    }
}

fn health(answer: &Result<(bool, Value), CliError>) -> String {
    match answer {
        Ok((true, _)) => "ready".into(),
        Ok((false, _)) => "not ready".into(),
        Err(_) => "unreachable".into(),
    }
}

async fn region_status(
    client: &OpsClient,
    region: &str,
    endpoints: &RegionTargets,
    interval: Duration,
) -> RegionStatus {
    let mut status = RegionStatus {
        region: region.to_string(),
        edge: "none".into(),
        origin: "none".into(),
        ..RegionStatus::default()
    };
    if let Some(origin) = &endpoints.origin {
        let answer = client.readyz(origin).await;
        status.origin = health(&answer);
        if let Ok((_, body)) = &answer {
            status.replica_lag_seconds = body["replicas"].as_array().and_then(|replicas| {
                replicas
                    .iter()
                    .filter_map(|r| r["lag_seconds"].as_f64())
                    .reduce(f64::max)
            });
            status.origin_mode = body["modes"]["mode"].as_str().map(str::to_string);
            status.mode_stale |= body["modes"]["stale"] == true;
        }
    }
    if let Some(edge) = &endpoints.edge_admin {
        let answer = client.readyz(edge).await;
        status.edge = health(&answer);
        if let Ok((_, body)) = &answer {
            status.edge_mode = body["modes"]["mode"].as_str().map(str::to_string);
            status.mode_stale |= body["modes"]["stale"] == true;
        }
        let url = format!("{edge}/metrics");
        if let Ok(first) = client.text(&url).await {
            tokio::time::sleep(interval).await;
            if let Ok(second) = client.text(&url).await {
                let a = RequestTotals::of(&first);
                let b = RequestTotals::of(&second);
                let requests = (b.all - a.all).max(0.0);
                status.requests_per_second = Some(requests / interval.as_secs_f64());
                status.error_rate = Some(if requests > 0.0 {
                    (b.errors - a.errors).max(0.0) / requests
                } else {
                    0.0
                });
                status.cache_hit_ratio = b.hit_ratio();
            }
        }
    }
    status
}

pub async fn run(args: StatusArgs) -> Result<(), CliError> {
    let targets = args.targets.resolve()?;
    let client = OpsClient::new(&targets.token)?;
    let interval = args.interval.max(Duration::from_millis(100));
    let lines = futures_join(&client, &targets.regions, interval).await;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&lines).unwrap_or_default()
        );
        return Ok(());
    }
    let number =
        |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
    println!(
        "{:<16} {:<12} {:<12} {:>9} {:>9} {:>9} {:>8}  MODE",
        "REGION", "EDGE", "ORIGIN", "LAG (s)", "HIT %", "REQ/S", "5XX %"
    );
    for line in &lines {
        let mode = match (&line.origin_mode, &line.edge_mode) {
            (Some(o), Some(e)) if o != e => format!("{o} (edge: {e})"),
            (Some(m), _) | (None, Some(m)) => m.clone(),
            (None, None) => "-".into(),
        };
        let stale = if line.mode_stale {
            " (unconfirmed)"
        } else {
            ""
        };
        println!(
            "{:<16} {:<12} {:<12} {:>9} {:>9} {:>9} {:>8}  {mode}{stale}",
            line.region,
            line.edge,
            line.origin,
            number(line.replica_lag_seconds, 2),
            number(line.cache_hit_ratio.map(|r| r * 100.0), 1),
            number(line.requests_per_second, 1),
            number(line.error_rate.map(|r| r * 100.0), 2),
        );
    }
    Ok(())
}

/// Every region at once (the samples of all regions share one interval).
async fn futures_join(
    client: &OpsClient,
    regions: &BTreeMap<String, RegionTargets>,
    interval: Duration,
) -> Vec<RegionStatus> {
    let mut tasks = tokio::task::JoinSet::new();
    for (index, (region, endpoints)) in regions.iter().enumerate() {
        let client = client.clone();
        let region = region.clone();
        let endpoints = endpoints.clone();
        tasks.spawn(async move {
            (
                index,
                region_status(&client, &region, &endpoints, interval).await,
            )
        });
    }
    let mut lines: Vec<(usize, RegionStatus)> = Vec::new();
    while let Some(result) = tasks.join_next().await {
        if let Ok(line) = result {
            lines.push(line);
        }
    }
    lines.sort_by_key(|(index, _)| *index);
    lines.into_iter().map(|(_, line)| line).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_totals_sum_every_series_and_give_the_hit_ratio() {
        let text = "# TYPE meridian_edge_requests_total counter\n\
            meridian_edge_requests_total{cache=\"HIT\",route=\"browse\",status_class=\"2xx\",upstream_region=\"us-east\"} 60\n\
            meridian_edge_requests_total{cache=\"STALE\",route=\"browse\",status_class=\"2xx\",upstream_region=\"us-east\"} 15\n\
            meridian_edge_requests_total{cache=\"MISS\",route=\"browse\",status_class=\"5xx\",upstream_region=\"us-east\"} 10\n\
            meridian_edge_requests_total{cache=\"EXPIRED\",route=\"browse\",status_class=\"2xx\",upstream_region=\"us-east\"} 15\n\
            meridian_edge_requests_total{cache=\"BYPASS\",route=\"cart\",status_class=\"5xx\",upstream_region=\"edge\"} 20\n";
        let totals = RequestTotals::of(text);
        assert_eq!(
            totals,
            RequestTotals {
                all: 120.0,
                errors: 30.0,
                hits: 75.0,
                lookups: 100.0,
            }
        );
        assert_eq!(
            totals.hit_ratio(),
            Some(0.75),
            "bypassed answers are no look-ups"
        );
        assert_eq!(RequestTotals::of("").hit_ratio(), None);
    }
}
