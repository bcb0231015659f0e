//! The write-side benchmark (issue 4): on durable PostgreSQL servers
//! (`fsync`, `full_page_writes` and `synchronous_commit` on), one origin,
//! the home region's Redis and two payment-simulator processes (~2 ms
//! latency), it measures
//!
//! 1. reservations/s on one hot SKU: a plain conditional `UPDATE` per
//!    buyer (the baseline) beside the origin's batched reservation queue;
//! 2. `POST /v1/checkout` end to end, purchases spread over many SKUs:
//!    orders/s and p50/p95/p99;
//! 3. flash-sale claims/s through `POST /v1/flash-sales/{id}/claim` (wrk),
//!    and how fast the won claims are drained into reservations.
//!
//! Every phase ends with an invariant check printed beside its figures:
//! oversell (units sold or held beyond stock) and double charges (orders
//! with more than one payment) must both be 0.
//!
//! Run with `tests/benches/checkout.sh`. `BENCH_SECONDS` (default 10),
//! `BENCH_CONCURRENCY` (checkout clients, default 64) and `BENCH_USERS`
//! (prepared carts, default 30000) tune it, `BENCH_CATALOG_POOL` and
//! `BENCH_SHARD_POOL` the origin's pools (default 32 and 24 connections);
//! `BENCH_PHASES` picks phases (default `hot,checkout,flash`). The checkout
//! phase prints where PostgreSQL's time went (`pg_stat_statements`), the
//! flash phase the HTTP ceiling (`GET /healthz`). Everything shares the
//! machine's cores: the load generators run on it too.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;
use meridian_contracts::shopper_token::TokenSigner;
use meridian_launcher::Durability;
use meridian_launcher::local::{LocalSecrets, origin_config};
use meridian_launcher::process::ManagedProcess;
use meridian_launcher::{LaunchError, LocalStack};
use meridian_origin::Application;
use meridian_origin::config::PspConfig;
use meridian_origin::db::DbRouter;
use meridian_origin::inventory::{Inventory, Line, ReserveRequest};
use meridian_origin::metrics::Metrics;
use meridian_topology::Topology;
use parking_lot::Mutex;
use serde_json::{Value, json};
use sqlx::Connection;
use tokio_util::sync::CancellationToken;

use common::{env_u64, parse_wrk};

mod common;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const HOME: &str = "us-east";
const ADMIN: &str = "bench-admin-token-0123456789";

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn meridian_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("meridian");
    assert!(
        bin.is_file(),
        "build {} first (checkout.sh does)",
        bin.display()
    );
    bin
}

fn start_psp(name: &str, dir: &std::path::Path) -> (ManagedProcess, PspConfig) {
    let port = meridian_launcher::free_port().unwrap();
    let mut command = Command::new(meridian_bin());
    command
        .args(["psp", "--name", name, "--latency-ms", "2", "--listen"])
        .arg(format!("127.0.0.1:{port}"));
    let process = ManagedProcess::spawn(
        &format!("psp-{name}"),
        command,
        &dir.join(format!("psp-{name}.log")),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    (
        process,
        PspConfig {
            name: name.into(),
            url: format!("http://127.0.0.1:{port}").parse().unwrap(),
        },
    )
}

async fn sql(url: &str, statement: &str) {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::raw_sql(statement).execute(&mut conn).await.unwrap();
}

async fn scalar(url: &str, query: &str) -> i64 {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query_scalar(query)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

/// Forgets the statement statistics of every server behind `urls`.
async fn reset_statements(urls: &[String]) {
    for url in urls {
        sql(
            url,
            "create extension if not exists pg_stat_statements; select pg_stat_statements_reset()",
        )
        .await;
    }
}

/// Where PostgreSQL's time went since the last reset: per database the
/// statements sent by clients (top level) per `per` (e.g. orders), and the
/// `top` statements by execution time, nested ones (in functions and
/// triggers) included.
async fn print_statements(urls: &[String], per: u64, top: i64) {
    for url in urls {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        let database = url.rsplit('/').next().unwrap_or(url);
        let (calls, ms): (i64, f64) = sqlx::query_as(
            "select coalesce(sum(calls), 0)::bigint, coalesce(sum(total_exec_time), 0)::float8
             from pg_stat_statements
             where toplevel and dbid = (select oid from pg_database where datname = current_database())",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        println!(
            "  {database}: {:.1} statements and {:.2} ms of execution per order",
            calls as f64 / per.max(1) as f64,
            ms / per.max(1) as f64
        );
        let rows: Vec<(i64, f64, String)> = sqlx::query_as(
            "select calls, total_exec_time, regexp_replace(query, '\\s+', ' ', 'g')
             from pg_stat_statements
             where dbid = (select oid from pg_database where datname = current_database())
             order by total_exec_time desc limit $1",
        )
        .bind(top)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        for (calls, total, query) in rows {
            let query: String = query.chars().take(90).collect();
            println!(
                "    {:>8} calls {:>9.0} ms {:>7.0} us  {query}",
                calls,
                total,
                total * 1000.0 / calls.max(1) as f64
            );
        }
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let seconds = env_u64("BENCH_SECONDS", 10);
    let concurrency = env_u64("BENCH_CONCURRENCY", 64) as usize;
    let users = env_u64("BENCH_USERS", 30_000) as usize;
    #[allow(clippy::disallowed_methods)] // a bench knob, not service config
    let phases = std::env::var("BENCH_PHASES").unwrap_or_else(|_| "hot,checkout,flash".into());
    let phase = |name: &str| phases.split(',').any(|p| p.trim() == name);

    let topology = Topology::embedded()
        .unwrap()
        .restrict(&[HOME.to_string()])
        .unwrap()
        .with_ephemeral_ports();
    println!(
        "starting durable PostgreSQL (catalog primary, replica, 2 order shards) and Redis ..."
    );
    let stack = {
        let topology = topology.clone();
        tokio::task::spawn_blocking(move || {
            let mut stack = LocalStack::start_temporary_with(&topology, Durability::Durable)?;
            stack.start_order_shards(&topology)?;
            Ok::<_, LaunchError>(stack)
        })
        .await
        .unwrap()
        .unwrap()
    };
    let primary = stack.primary_url();
    meridian_origin::db::migrate(&primary).await.unwrap();
    for (_, _, url) in stack.order_shard_urls() {
        meridian_origin::orders::shards::migrate(&url)
            .await
            .unwrap();
    }
    meridian_origin::catalog::seed::seed(&primary, 2000, false)
        .await
        .unwrap();
    let fsync = {
        let mut conn = sqlx::PgConnection::connect(&primary).await.unwrap();
        let fsync: String = sqlx::query_scalar("show fsync")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        let sync: String = sqlx::query_scalar("show synchronous_commit")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        format!("fsync={fsync}, synchronous_commit={sync}")
    };
    println!("durability: {fsync}");
    let (mut psp_primary, primary_psp) = start_psp("primary", stack.root());
    let (mut psp_fallback, fallback_psp) = start_psp("fallback", stack.root());
    tokio::time::sleep(Duration::from_millis(500)).await;

    let secrets = LocalSecrets::random(ADMIN.into(), None);
    let region = topology.home();
    let mut config = origin_config(
        &stack,
        region,
        SocketAddr::from(([127, 0, 0, 1], 0)),
        &secrets,
        &[primary_psp.clone(), fallback_psp],
    )
    .unwrap();
    config.debug_headers = false;
    config.database.pool_size = env_u64("BENCH_CATALOG_POOL", 32) as u32;
    if let Some(orders) = &mut config.orders {
        orders.pool_size = env_u64("BENCH_SHARD_POOL", 24) as u32;
    }
    let app = Application::build(config.clone()).await.unwrap();
    let origin = format!("http://{}", app.local_addr());
    let admin = format!("http://{}", app.internal_addr());
    let stop = CancellationToken::new();
    let serving = {
        let stop = stop.clone();
        tokio::spawn(app.run_until_stopped(async move { stop.cancelled().await }))
    };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()
        .unwrap();
    let signer = TokenSigner::hs256(&secrets.jwt_secret).unwrap();
    let token = |user: &str| {
        signer
            .mint(user, HOME, Duration::from_secs(86_400), SystemTime::now())
            .unwrap()
    };
    let skus: Vec<String> = {
        let mut conn = sqlx::PgConnection::connect(&primary).await.unwrap();
        sqlx::query_scalar("select sku from inventory order by sku")
            .fetch_all(&mut conn)
            .await
            .unwrap()
    };
    println!("{} sellable SKUs; origin at {origin}\n", skus.len());

    // 1. One hot SKU.
    if phase("hot") {
        let hot = skus[0].clone();
        sql(
            &primary,
            &format!("update inventory set on_hand = 100000000, reserved = 0 where sku = '{hot}'"),
        )
        .await;
        let baseline = plain_updates(&primary, &hot, seconds).await;
        sql(
            &primary,
            &format!("update inventory set reserved = 0 where sku = '{hot}'"),
        )
        .await;
        let (batched, batched_latency) = batched_reservations(&config, &hot, seconds).await;
        let (on_hand, reserved): (i32, i32) = {
            let mut conn = sqlx::PgConnection::connect(&primary).await.unwrap();
            sqlx::query_as("select on_hand, reserved from inventory where sku = $1")
                .bind(&hot)
                .fetch_one(&mut conn)
                .await
                .unwrap()
        };
        let held_rows = scalar(
            &primary,
            &format!("select count(*) from reservation_lines where sku = '{hot}'"),
        )
        .await;
        println!("hot SKU {hot}:");
        println!(
            "  plain conditional UPDATE, 64 clients:   {:>8.0} reservations/s",
            baseline
        );
        println!(
            "  batched reservation queue, 512 clients: {:>8.0} reservations/s (p50 {:.1} ms, p99 {:.1} ms)  goal >= 5000",
            batched.0 as f64 / batched.1,
            ms(&batched_latency, 0.5),
            ms(&batched_latency, 0.99)
        );
        println!(
            "  invariant: reserved {reserved} = holds {held_rows} = granted {}, reserved <= on_hand {on_hand}: oversell = {}\n",
            batched.0,
            i64::from(
                reserved > on_hand
                    || i64::from(reserved) != held_rows
                    || held_rows != batched.0 as i64
            )
        );
        sql(&primary, "delete from reservation_lines; delete from reservations; update inventory set reserved = 0").await;
    }

    // 2. Checkout, spread over many SKUs.
    if phase("checkout") {
        sql(
            &primary,
            "update inventory set on_hand = 1000000, reserved = 0, sold = 0",
        )
        .await;
        let initial: i64 = scalar(&primary, "select sum(on_hand)::bigint from inventory").await;
        println!("preparing {users} carts ...");
        let tokens: Vec<String> = (0..users).map(|i| token(&format!("bench-{i}"))).collect();
        let next = AtomicUsize::new(0);
        let prepare = (0..concurrency).map(|_| async {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= users {
                    break;
                }
                for line in 0..(1 + i % 3) {
                    let sku = &skus[1 + (i * 7 + line * 131) % (skus.len() - 2)];
                    let response = client
                        .post(format!("{origin}/v1/cart/items"))
                        .bearer_auth(&tokens[i])
                        .json(&json!({ "sku": sku, "quantity": 1 + line }))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 200);
                }
            }
        });
        futures::future::join_all(prepare).await;
        let databases: Vec<String> = std::iter::once(primary.clone())
            .chain(stack.order_shard_urls().into_iter().map(|(_, _, url)| url))
            .collect();
        reset_statements(&databases).await;
        let latencies = Mutex::new(histogram());
        let statuses: Mutex<BTreeMap<u16, u64>> = Mutex::new(BTreeMap::new());
        let next = AtomicUsize::new(0);
        let started = Instant::now();
        let deadline = started + Duration::from_secs(seconds);
        let load = (0..concurrency).map(|_| async {
            let mut local = histogram();
            let mut counts: BTreeMap<u16, u64> = BTreeMap::new();
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= users {
                    break;
                }
                let sent = Instant::now();
                let response = client
                    .post(format!("{origin}/v1/checkout"))
                    .bearer_auth(&tokens[i])
                    .header("idempotency-key", format!("bench-{i}"))
                    .json(&json!({}))
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let _ = response.bytes().await;
                local.record(sent.elapsed().as_micros() as u64).unwrap();
                *counts.entry(status).or_default() += 1;
            }
            latencies.lock().add(&local).unwrap();
            let mut all = statuses.lock();
            for (status, n) in counts {
                *all.entry(status).or_default() += n;
            }
        });
        futures::future::join_all(load).await;
        let elapsed = started.elapsed().as_secs_f64();
        let latencies = latencies.into_inner();
        let statuses = statuses.into_inner();
        let created = statuses.get(&201).copied().unwrap_or(0);
        // Let the last captures settle before the books are checked.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (on_hand_sum, sold_sum, reserved_sum, negative): (i64, i64, i64, i64) = {
            let mut conn = sqlx::PgConnection::connect(&primary).await.unwrap();
            sqlx::query_as(
                "select sum(on_hand)::bigint, sum(sold)::bigint, sum(reserved)::bigint,
                    count(*) filter (where on_hand < 0 or reserved > on_hand)
             from inventory",
            )
            .fetch_one(&mut conn)
            .await
            .unwrap()
        };
        let mut orders_captured = 0;
        let mut units_ordered = 0;
        for (_, _, url) in stack.order_shard_urls() {
            orders_captured +=
                scalar(&url, "select count(*) from orders where state = 'captured'").await;
            units_ordered += scalar(
                &url,
                "select coalesce(sum((l->>'quantity')::bigint), 0)::bigint
             from orders, jsonb_array_elements(lines) l where state in ('captured', 'confirmed')",
            )
            .await;
        }
        let ledger: Value = client
            .get(format!("{}/v1/ledger", primary_psp.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut per_order: BTreeMap<String, usize> = BTreeMap::new();
        let mut captured_intents = 0;
        for intent in ledger["payment_intents"].as_array().unwrap() {
            *per_order
                .entry(
                    intent["metadata"]["order_id"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                )
                .or_default() += 1;
            captured_intents += usize::from(intent["status"] == "captured");
        }
        let double_charges = per_order.values().filter(|n| **n > 1).count();
        println!(
            "checkout (POST /v1/checkout, carts of 1-3 lines over {} SKUs, PSP latency 2 ms, {concurrency} clients):",
            skus.len() - 2
        );
        println!(
            "  {:.0} orders/s ({created} orders in {elapsed:.1} s), p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms  goal >= 1000/s, p95 < 50 ms",
            created as f64 / elapsed,
            ms(&latencies, 0.5),
            ms(&latencies, 0.95),
            ms(&latencies, 0.99)
        );
        println!("  answers: {statuses:?}");
        println!(
            "  invariant: stock {initial} = on hand {on_hand_sum} + sold {sold_sum} ({}); units sold {sold_sum} = units in orders {units_ordered}; held {reserved_sum}; rows below zero or over-held {negative}: oversell = {}",
            if initial == on_hand_sum + sold_sum {
                "ok"
            } else {
                "MISMATCH"
            },
            i64::from(
                negative > 0 || initial != on_hand_sum + sold_sum || sold_sum != units_ordered
            )
        );
        println!(
            "  invariant: orders captured {orders_captured}, captured payments {captured_intents}: double charges = {double_charges}"
        );
        println!("  where PostgreSQL's time went (pg_stat_statements):");
        print_statements(&databases, created, 6).await;
        println!();
    }

    // 3. Flash-sale claims: a rush (far more buyers than units; most
    // answers are "sold out" from the gate alone), then a sale where every
    // claim wins (each one also becomes a reservation in PostgreSQL).
    if phase("flash") {
        let flash_sku = skus[skus.len() - 1].clone();
        sql(
            &primary,
            &format!("update inventory set on_hand = 2000000 where sku = '{flash_sku}'"),
        )
        .await;
        let bench = FlashBench {
            client: &client,
            origin: &origin,
            admin: &admin,
            primary: &primary,
            dir: stack.root(),
            sku: &flash_sku,
            seconds,
        };
        bench.ceiling().await;
        bench.run("rush", 10_000, 1, 100_000, &token).await;
        bench
            .run("every claim wins", 1_000_000, 100, 10_000, &token)
            .await;
    }

    stop.cancel();
    let _ = serving.await;
    psp_primary.stop();
    psp_fallback.stop();
    drop(stack);
}

/// One flash sale loaded through wrk.
struct FlashBench<'a> {
    client: &'a reqwest::Client,
    origin: &'a str,
    /// The internal listener (admin API).
    admin: &'a str,
    primary: &'a str,
    dir: &'a std::path::Path,
    sku: &'a str,
    seconds: u64,
}

impl FlashBench<'_> {
    /// The same load on `GET /healthz` (no auth, no Redis): what the HTTP
    /// stack alone does on this machine beside wrk, the claims' ceiling.
    async fn ceiling(&self) {
        let wrk = Command::new("wrk")
            .args(["-t2", "-c256", "--latency"])
            .arg(format!("-d{}s", self.seconds.min(5)))
            .arg(format!("{}/healthz", self.origin))
            .output();
        if let Ok(output) = wrk
            && output.status.success()
        {
            let figures = parse_wrk(&String::from_utf8_lossy(&output.stdout));
            println!(
                "HTTP ceiling (GET /healthz, wrk -t2 -c256, same machine): {:.0} requests/s, p50 {:.2} ms\n",
                figures.rps, figures.p50_ms
            );
        }
    }

    /// Opens a sale of `quantity` units and lets `shoppers` shoppers claim
    /// for the bench's duration; prints the claim rate, how long the won
    /// claims took to become reservations, and the books.
    async fn run(
        &self,
        label: &str,
        quantity: i64,
        per_user_limit: i64,
        shoppers: usize,
        token: &dyn Fn(&str) -> String,
    ) {
        let sale: Value = self
            .client
            .post(format!("{}/v1/admin/flash-sales", self.admin))
            .bearer_auth(ADMIN)
            .json(&json!({ "sku": self.sku, "quantity": quantity, "per_user_limit": per_user_limit, "duration": "1h" }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let sale_id = sale["id"].as_i64().unwrap();
        let claimants: Vec<String> = (0..shoppers)
            .map(|i| token(&format!("fan-{sale_id}-{i}")))
            .collect();
        let token_file = self.dir.join(format!("claim-tokens-{sale_id}.txt"));
        std::fs::write(&token_file, claimants.join("\n")).unwrap();
        let script = self.dir.join(format!("claim-{sale_id}.lua"));
        std::fs::write(
            &script,
            CLAIM_LUA.replace("TOKENS", &token_file.display().to_string()),
        )
        .unwrap();
        let claim_url = format!("{}/v1/flash-sales/{sale_id}/claim", self.origin);
        let wrk = Command::new("wrk")
            .args(["-t2", "-c256", "--latency"])
            .arg(format!("-d{}s", self.seconds))
            .arg("-s")
            .arg(&script)
            .arg(&claim_url)
            .output();
        let (figures, won) = match wrk {
            Ok(output) if output.status.success() => {
                let figures = parse_wrk(&String::from_utf8_lossy(&output.stdout));
                let report: Value = self
                    .client
                    .get(format!("{}/v1/admin/flash-sales/{sale_id}", self.admin))
                    .bearer_auth(ADMIN)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let won = quantity - report["gate_remaining"].as_i64().unwrap_or(0);
                (figures, won)
            }
            other => {
                println!("wrk failed or is missing ({other:?}); flash-sale figures skipped");
                (parse_wrk(""), 0)
            }
        };
        // Drain: won claims become reservations.
        let drain_started = Instant::now();
        let mut recorded = 0;
        while drain_started.elapsed() < Duration::from_secs(120) {
            recorded = scalar(
                self.primary,
                &format!("select count(*) from flash_claims where sale_id = {sale_id}"),
            )
            .await;
            if recorded >= won {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let drain = drain_started.elapsed().as_secs_f64();
        let held = scalar(
            self.primary,
            &format!(
                "select count(*) from reservations r join flash_claims c on c.reservation_id = r.id
                 where c.sale_id = {sale_id} and r.state = 'held'"
            ),
        )
        .await;
        let slots_over = scalar(
            self.primary,
            &format!(
                "select count(*) from flash_claims where sale_id = {sale_id} and slot > {quantity}"
            ),
        )
        .await;
        println!(
            "flash sale, {label} (POST /v1/flash-sales/{{id}}/claim, wrk -t2 -c256, {quantity} units, {per_user_limit} per shopper, {shoppers} shoppers):"
        );
        println!(
            "  {:.0} claims/s, p50 {:.2} ms, p99 {:.2} ms  goal >= 40000/s",
            figures.rps, figures.p50_ms, figures.p99_ms
        );
        println!(
            "  {won} claims won; {recorded} turned into reservations, the last {drain:.1} s after the load stopped"
        );
        println!(
            "  invariant: won {won} = ledger {recorded} = held {held}, slots beyond the quantity {slots_over}: oversell = {}\n",
            i64::from(!(won == recorded && recorded == held && slots_over == 0))
        );
    }
}

/// Claims rotating over the shoppers' tokens.
const CLAIM_LUA: &str = r#"
local tokens = {}
for line in io.lines("TOKENS") do tokens[#tokens + 1] = line end
local i = 0
request = function()
  i = i + 1
  return wrk.format("POST", nil, { ["Authorization"] = "Bearer " .. tokens[(i % #tokens) + 1] }, "")
end
"#;

/// One conditional `UPDATE` per reservation, autocommit, 64 clients.
async fn plain_updates(primary: &str, sku: &str, seconds: u64) -> f64 {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(64)
        .connect(primary)
        .await
        .unwrap();
    let done = AtomicU64::new(0);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let clients = (0..64).map(|_| async {
        while Instant::now() < deadline {
            let result = sqlx::query(
                "update inventory set reserved = reserved + 1 where sku = $1 and on_hand - reserved >= 1",
            )
            .bind(sku)
            .execute(&pool)
            .await
            .unwrap();
            done.fetch_add(result.rows_affected(), Ordering::Relaxed);
        }
    });
    futures::future::join_all(clients).await;
    let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    pool.close().await;
    rate
}

/// The origin's reservation queue, 512 concurrent buyers of one unit each.
async fn batched_reservations(
    config: &meridian_origin::OriginConfig,
    sku: &str,
    seconds: u64,
) -> ((u64, f64), Histogram<u64>) {
    let metrics = Metrics::new(HOME).unwrap();
    let db = DbRouter::new(&config.database, HOME, metrics.clone()).unwrap();
    let shutdown = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let inventory = Inventory::start(db, metrics, 512, shutdown.clone(), &mut tasks);
    let granted = AtomicU64::new(0);
    let latencies = Arc::new(Mutex::new(histogram()));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let buyers = (0..512).map(|buyer| {
        let inventory = inventory.clone();
        let granted = &granted;
        let latencies = latencies.clone();
        async move {
            let mut local = histogram();
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let request = ReserveRequest::new(
                    format!("bench:{buyer}:{n}"),
                    [Line {
                        sku: sku.to_string(),
                        quantity: 1,
                    }],
                    Duration::from_secs(3600),
                )
                .unwrap();
                let sent = Instant::now();
                if inventory.reserve(request).await.is_ok() {
                    granted.fetch_add(1, Ordering::Relaxed);
                }
                local.record(sent.elapsed().as_micros() as u64).unwrap();
            }
            latencies.lock().add(&local).unwrap();
        }
    });
    futures::future::join_all(buyers).await;
    let elapsed = started.elapsed().as_secs_f64();
    shutdown.cancel();
    tasks.detach_all();
    let histogram = latencies.lock().clone();
    ((granted.load(Ordering::Relaxed), elapsed), histogram)
}
