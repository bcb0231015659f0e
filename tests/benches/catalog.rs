//! Benchmark of `GET /v1/products/{id}` on one origin at an L1 hit, an L2
//! hit and a replica read, beside a bare axum handler returning the same
//! bytes. Servers (this process and the PostgreSQL/Redis it starts) are
//! pinned to CPU 0, `wrk` to CPU 1, as in `../shared/peers/README.md`.
//!
//! Run with `tests/benches/catalog.sh` (installs wrk) or
//! `cargo bench -p meridian-tests --bench catalog`.
//! `BENCH_SECONDS` (default 10) and `BENCH_RUNS` (default 3) tune it; runs
//! are interleaved across targets so machine drift hits them alike.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, header};
use axum::routing::get;
use meridian_launcher::LocalStack;
use meridian_launcher::local::{LocalSecrets, origin_config};
use meridian_origin::Application;
use meridian_topology::Topology;

use common::{WrkFigures as Figures, env_u64, parse_wrk};

mod common;

/// The same allocator as the `meridian` binary, for the origin and the
/// bare handler alike.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn wrk(url: &str, seconds: u64) -> Figures {
    let output = Command::new("taskset")
        .args([
            "-c",
            "1",
            "wrk",
            "-t1",
            "-c64",
            &format!("-d{seconds}s"),
            "--latency",
            url,
        ])
        .output()
        .expect("wrk runs (apt-get install wrk)");
    let text = String::from_utf8_lossy(&output.stdout);
    if text.contains("Non-2xx") {
        panic!("{url} answered errors under load:\n{text}");
    }
    parse_wrk(&text)
}

/// Runs every target `runs` times, interleaved (target A, B, C, then again),
/// so drift on a shared machine hits all targets alike; prints the median
/// run of each.
async fn measure_all(targets: &[(&str, String)], seconds: u64, runs: u64) -> Vec<Figures> {
    for (_, url) in targets {
        let url = url.clone();
        tokio::task::spawn_blocking(move || wrk(&url, 3))
            .await
            .unwrap();
    }
    let mut results: Vec<Vec<Figures>> = targets.iter().map(|_| Vec::new()).collect();
    for _ in 0..runs {
        for ((_, url), result) in targets.iter().zip(&mut results) {
            let url = url.clone();
            result.push(
                tokio::task::spawn_blocking(move || wrk(&url, seconds))
                    .await
                    .unwrap(),
            );
        }
    }
    targets
        .iter()
        .zip(results)
        .map(|((name, _), mut all)| {
            all.sort_by(|a, b| a.rps.total_cmp(&b.rps));
            let median = all.swap_remove(all.len() / 2);
            println!(
                "{name:<34} {:>10.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms",
                median.rps, median.p50_ms, median.p99_ms
            );
            median
        })
        .collect()
}

fn main() {
    let mut cpus = nix::sched::CpuSet::new();
    cpus.set(0).expect("cpu 0");
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpus).expect("pin to cpu 0");
    let seconds = env_u64("BENCH_SECONDS", 10);
    let runs = env_u64("BENCH_RUNS", 3).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(seconds, runs));
}

async fn run(seconds: u64, runs: u64) {
    let topology = Topology::embedded()
        .unwrap()
        .restrict(&["us-east".to_string()])
        .unwrap()
        .with_ephemeral_ports();
    let stack = {
        let topology = topology.clone();
        tokio::task::spawn_blocking(move || LocalStack::start_temporary(&topology))
            .await
            .unwrap()
            .expect("stack")
    };
    meridian_origin::db::migrate(&stack.primary_url())
        .await
        .unwrap();
    meridian_origin::catalog::seed::seed(&stack.primary_url(), 1000, false)
        .await
        .unwrap();
    let stack = tokio::task::spawn_blocking(move || {
        stack.wait_replicas_caught_up().unwrap();
        stack
    })
    .await
    .unwrap();
    let region = topology.home();
    let any_port = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let secrets = LocalSecrets::random("bench-admin-token-0123456789".into(), None);
    let mut base = origin_config(&stack, region, any_port, &secrets, &[]).unwrap();
    // Production settings: no debug headers.
    base.debug_headers = false;

    let mut l2_only = base.clone();
    l2_only.cache.l1_max_bytes = 0;
    let mut replica_only = l2_only.clone();
    replica_only.redis_url = None;

    let mut urls = Vec::new();
    for config in [base, l2_only, replica_only] {
        let app = Application::build(config).await.expect("origin");
        urls.push(format!("http://{}/v1/products/1", app.local_addr()));
        tokio::spawn(app.run_until_stopped(std::future::pending()));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = reqwest::Client::new();
    let mut body = Vec::new();
    let mut headers = HeaderMap::new();
    for url in &urls {
        let response = client.get(url).send().await.expect("warm-up");
        assert_eq!(response.status(), 200, "{url}");
        headers = response.headers().clone();
        body = response.bytes().await.unwrap().to_vec();
    }
    headers.remove(header::DATE);
    headers.remove(header::CONTENT_LENGTH);
    let bare_body = axum::body::Bytes::from(body);

    // Two bare handlers: the same body with only Content-Type, and the same
    // body with every header the origin sends (the same bytes on the wire).
    let body_only = bare_body.clone();
    let bare = Router::new().route(
        "/v1/products/{id}",
        get(move || {
            let body = body_only.clone();
            async move { ([(header::CONTENT_TYPE, "application/json")], body) }
        }),
    );
    let bare_same_headers = Router::new().route(
        "/v1/products/{id}",
        get(move || {
            let (body, headers) = (bare_body.clone(), headers.clone());
            async move { (headers, body) }
        }),
    );
    let mut bare_urls = Vec::new();
    for router in [bare, bare_same_headers.clone()] {
        let listener = tokio::net::TcpListener::bind(any_port).await.unwrap();
        bare_urls.push(format!(
            "http://{}/v1/products/1",
            listener.local_addr().unwrap()
        ));
        tokio::spawn(async move { axum::serve(listener, router).await });
    }
    // The second bare handler again, through the origin's own server loop
    // (`serve`: head deadline, graceful drain) instead of `axum::serve`:
    // what the loop costs, apart from the catalog's own work.
    let listener = tokio::net::TcpListener::bind(any_port).await.unwrap();
    bare_urls.push(format!(
        "http://{}/v1/products/1",
        listener.local_addr().unwrap()
    ));
    tokio::spawn(meridian_origin::serve::serve(
        listener,
        bare_same_headers,
        std::time::Duration::from_secs(5),
        std::time::Duration::from_secs(1),
        std::future::pending(),
    ));

    println!(
        "GET /v1/products/1, wrk -t1 -c64 -d{seconds}s pinned to CPU 1, servers on CPU 0, median of {runs} interleaved runs\n"
    );
    let targets = [
        ("bare axum, same body", bare_urls[0].clone()),
        ("bare axum, same body and headers", bare_urls[1].clone()),
        ("the same through the origin's loop", bare_urls[2].clone()),
        ("origin, L1 hit", urls[0].clone()),
        ("origin, L2 hit (L1 off)", urls[1].clone()),
        ("origin, replica read (no cache)", urls[2].clone()),
    ];
    let figures = measure_all(&targets, seconds, runs).await;
    let (bare, bare_headers, bare_loop, l1) = (&figures[0], &figures[1], &figures[2], &figures[3]);
    println!(
        "\nL1 hit / bare handler (same body) = {:.2}x throughput (goal >= 0.80x)",
        l1.rps / bare.rps
    );
    println!(
        "L1 hit / bare handler (same body and headers) = {:.2}x throughput",
        l1.rps / bare_headers.rps
    );
    println!(
        "origin's server loop / axum::serve (same handler) = {:.2}x throughput",
        bare_loop.rps / bare_headers.rps
    );
    drop(stack);
}
