//! Shared test plumbing: a real local stack from the launcher (throwaway
//! PostgreSQL primary, streaming replicas, Redis on free ports), origins
//! built in-process on port 0 through the same `Application::build` as
//! `main`, and small HTTP and metrics helpers.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use meridian_launcher::LocalStack;
use meridian_launcher::local::{LocalSecrets, origin_config};
use meridian_origin::Application;
use meridian_origin::config::OriginConfig;
use meridian_topology::Topology;
use sqlx::Connection;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const TOKEN: &str = "test-admin-token-0123456789";
/// Signs the test stack's shopper tokens (HS256).
pub const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdef0123456789";

/// The secrets every test origin and edge uses.
pub fn secrets() -> LocalSecrets {
    LocalSecrets {
        admin_token: TOKEN.to_string(),
        jwt_secret: JWT_SECRET.to_string(),
        guest_cookie_secret: "test-guest-cookie-secret-0123456789abcdef".to_string(),
        challenge_secret: "test-challenge-secret-0123456789abcdef".to_string(),
        geo_database: None,
    }
}
pub const HOME: &str = "us-east";

pub struct TestStack {
    pub stack: LocalStack,
    pub topology: Topology,
    /// Payment simulators started with [`TestStack::start_psps`].
    pub psps: Vec<meridian_origin::config::PspConfig>,
    pub psp_processes: Vec<PspProcess>,
}

impl TestStack {
    /// Starts `regions` (home region always included) with `home_replicas`
    /// replicas in the home region, migrates and seeds `products` products.
    pub async fn start(regions: &[&str], home_replicas: usize, products: u64) -> TestStack {
        let mut names: Vec<String> = regions.iter().map(|r| r.to_string()).collect();
        if !names.iter().any(|n| n == HOME) {
            names.push(HOME.to_string());
        }
        let mut topology = Topology::embedded()
            .expect("shipped topology")
            .restrict(&names)
            .expect("regions")
            .with_ephemeral_ports();
        let mut home = topology.home().spec.clone();
        let template = home.catalog.replicas[0].clone();
        home.catalog.replicas = (1..=home_replicas)
            .map(|i| {
                let mut replica = template.clone();
                replica.name = format!("{HOME}-replica-{i}");
                replica
            })
            .collect();
        topology = topology.with_region(home).expect("replicas");
        let stack = {
            let topology = topology.clone();
            tokio::task::spawn_blocking(move || LocalStack::start_temporary(&topology))
                .await
                .expect("launcher task")
                .expect("local stack starts")
        };
        meridian_origin::db::migrate(&stack.primary_url())
            .await
            .expect("migrations");
        meridian_origin::catalog::seed::seed(&stack.primary_url(), products, false)
            .await
            .expect("seed");
        let stack = tokio::task::spawn_blocking(move || {
            stack.wait_replicas_caught_up().expect("replicas catch up");
            stack
        })
        .await
        .expect("catch-up task");
        TestStack {
            stack,
            topology,
            psps: Vec::new(),
            psp_processes: Vec::new(),
        }
    }

    /// Starts every region's order-shard databases (as `meridian up` does)
    /// and migrates them; origins configured afterwards use them. With
    /// `separate`, every shard gets a PostgreSQL server of its own (so one
    /// can be stopped); else a region's shards share one.
    pub async fn start_order_shards(&mut self, separate: bool) {
        if separate {
            for name in self
                .topology
                .names()
                .map(str::to_string)
                .collect::<Vec<_>>()
            {
                let mut region = self.topology.region(&name).expect("region").spec.clone();
                for shard in &mut region.orders.shards {
                    shard.port = meridian_launcher::free_port().expect("port");
                }
                self.topology = self.topology.clone().with_region(region).expect("shards");
            }
        }
        let topology = self.topology.clone();
        tokio::task::block_in_place(|| self.stack.start_order_shards(&topology))
            .expect("order shards start");
        for (_, _, url) in self.stack.order_shard_urls() {
            meridian_origin::orders::shards::migrate(&url)
                .await
                .expect("shard migrations");
        }
    }

    /// The origin config the local stack would use, on a free port.
    pub fn origin_config(&self, region: &str) -> OriginConfig {
        let region = self.topology.region(region).expect("region");
        let mut config = origin_config(
            &self.stack,
            region,
            SocketAddr::from(([127, 0, 0, 1], 0)),
            &secrets(),
            &self.psps,
        )
        .expect("a valid local origin config");
        config.cache.invalidation_poll = Duration::from_millis(50);
        config.modes.poll_interval = Duration::from_millis(500);
        config
    }

    pub async fn origin(&self, region: &str) -> TestOrigin {
        TestOrigin::start(self.origin_config(region)).await
    }

    /// A direct connection to a replica of the home region (by index).
    pub async fn replica_conn(&self, index: usize) -> sqlx::PgConnection {
        let replica = &self.stack.region(HOME).expect("home").replicas[index];
        sqlx::PgConnection::connect(&replica.url("meridian"))
            .await
            .expect("connect to replica")
    }

    pub async fn primary_conn(&self) -> sqlx::PgConnection {
        sqlx::PgConnection::connect(&self.stack.primary_url())
            .await
            .expect("connect to primary")
    }
}

/// One origin running in this process.
pub struct TestOrigin {
    /// The public listener (shopper routes).
    pub url: String,
    /// The internal listener (admin API, `/metrics`, `/readyz`).
    pub admin: String,
    pub client: reqwest::Client,
    stop: CancellationToken,
    handle: Option<JoinHandle<()>>,
}

impl TestOrigin {
    pub async fn start(config: OriginConfig) -> TestOrigin {
        let app = Application::build(config).await.expect("origin builds");
        let url = format!("http://{}", app.local_addr());
        let admin = format!("http://{}", app.internal_addr());
        let stop = CancellationToken::new();
        let signal = stop.clone();
        let handle = tokio::spawn(async move {
            app.run_until_stopped(async move { signal.cancelled().await })
                .await
                .expect("origin runs");
        });
        let origin = TestOrigin {
            url,
            admin,
            client: reqwest::Client::new(),
            stop,
            handle: Some(handle),
        };
        origin
            .wait_for(
                "replicas and redis usable",
                // Generous: tests run two at a time on a 2-core machine,
                // each with its own PostgreSQL and Redis servers.
                Duration::from_secs(30),
                |body| body.contains("\"usable\":true") && !body.contains("\"redis\":false"),
            )
            .await;
        origin
    }

    /// An origin running elsewhere (another process), reached at `url`
    /// (public) and `admin` (internal).
    pub fn external(url: &str, admin: &str) -> TestOrigin {
        TestOrigin {
            url: url.to_string(),
            admin: admin.to_string(),
            client: reqwest::Client::new(),
            stop: CancellationToken::new(),
            handle: None,
        }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("request sent")
    }

    /// A GET on the internal listener (`/readyz`, `/metrics`, admin reads).
    pub async fn internal(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.admin))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn put_product(&self, id: i64, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .put(format!("{}/v1/admin/products/{id}", self.admin))
            .bearer_auth(TOKEN)
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// Polls `/readyz` until `check` accepts its body.
    pub async fn wait_for(&self, what: &str, timeout: Duration, check: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(response) = self
                .client
                .get(format!("{}/readyz", self.admin))
                .send()
                .await
                && let Ok(body) = response.text().await
                && check(&body)
            {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Sum of a metric over the series whose labels include all of `labels`.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self
            .internal("/metrics")
            .await
            .text()
            .await
            .expect("metrics");
        metric_sum(&text, name, labels)
    }

    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(handle) = self.handle.take() {
            let _ = handle.await;
        }
    }
}

impl Drop for TestOrigin {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A valid product body for the admin API.
pub fn product_body(sku: &str, name: &str, category: &str, price: i64) -> serde_json::Value {
    serde_json::json!({
        "sku": sku,
        "name": name,
        "brand": "Testbrand",
        "category": category,
        "description": "made by a test",
        "price": { "amount_minor": price, "currency": "USD" },
        "variants": [ { "sku": format!("{sku}-RED-M"), "color": "RED", "size": "M" } ]
    })
}

/// The name of product `id` as served at `path` (a JSON product body).
pub async fn product_name(origin: &TestOrigin, path: &str) -> String {
    let response = origin.get(path).await;
    assert_eq!(response.status(), 200, "GET {path}");
    let body: serde_json::Value = response.json().await.expect("json");
    body["name"].as_str().expect("name").to_string()
}

/// Polls until `f` returns true or the timeout passes.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sum of metric `name` in a Prometheus text exposition over the series
/// whose labels include every one of `labels` (label names match exactly:
/// `region` does not match `upstream_region`).
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            if metric != name {
                return None;
            }
            let all = labels.iter().all(|(k, v)| {
                let pair = format!("{k}=\"{v}\"");
                rest.starts_with(&pair) || rest.contains(&format!(",{pair}"))
            });
            all.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// A shopper token for `user` of home region `region`, signed with the test
/// stack's secret.
pub fn shopper_token(user: &str, region: &str) -> String {
    meridian_contracts::shopper_token::TokenSigner::hs256(JWT_SECRET)
        .expect("secret")
        .mint(
            user,
            region,
            Duration::from_secs(3600),
            std::time::SystemTime::now(),
        )
        .expect("token")
}

impl TestStack {
    /// `n` sellable SKUs of the seeded catalog with their current unit
    /// price, in SKU order.
    pub async fn sellable_skus(&self, n: i64) -> Vec<(String, i64)> {
        let mut conn = self.primary_conn().await;
        sqlx::query_as(
            r#"
            select i.sku, coalesce(v.price_minor, p.price_minor)
            from inventory i
            left join product_variants v on v.sku = i.sku
            join products p on p.id = coalesce(v.product_id, (select id from products where sku = i.sku))
            order by i.sku limit $1
            "#,
        )
        .bind(n)
        .fetch_all(&mut conn)
        .await
        .expect("sellable skus")
    }

    /// A user id whose orders live in shard `shard` of `region`.
    pub fn user_in_shard(&self, region: &str, shard: &str, prefix: &str) -> String {
        let region = self.topology.region(region).expect("region");
        (0..10_000)
            .map(|i| format!("{prefix}-{i}"))
            .find(|user| region.shard_for_user(user).is_some_and(|s| s.name == shard))
            .expect("some user lands in every shard")
    }

    /// A connection to order shard `shard` of `region`.
    pub async fn shard_conn(&self, region: &str, shard: &str) -> sqlx::PgConnection {
        let servers = self.stack.region(region).expect("region");
        let url = servers
            .orders
            .as_ref()
            .and_then(|o| o.url(shard))
            .expect("shard started");
        sqlx::PgConnection::connect(&url)
            .await
            .expect("connect to shard")
    }

    /// `(on_hand, reserved, sold)` of a SKU on the primary.
    pub async fn stock(&self, sku: &str) -> (i32, i32, i64) {
        let mut conn = self.primary_conn().await;
        sqlx::query_as("select on_hand, reserved, sold from inventory where sku = $1")
            .bind(sku)
            .fetch_one(&mut conn)
            .await
            .expect("stock row")
    }
}

/// The `meridian` binary of this build (next to the test binary's `deps/`
/// directory; `cargo nextest run --workspace` builds it).
pub fn meridian_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory");
    let bin = dir.join("meridian");
    assert!(
        bin.is_file(),
        "{} is missing: build it first (cargo build -p meridian-cli --bin meridian)",
        bin.display()
    );
    bin
}

/// A payment-provider simulator running as its own process.
pub struct PspProcess {
    pub name: String,
    pub url: String,
    process: meridian_launcher::process::ManagedProcess,
    client: reqwest::Client,
}

impl PspProcess {
    pub async fn start(name: &str, dir: &std::path::Path) -> PspProcess {
        let port = meridian_launcher::free_port().expect("port");
        let mut command = std::process::Command::new(meridian_bin());
        command
            .args(["psp", "--name", name, "--listen"])
            .arg(format!("127.0.0.1:{port}"));
        let process = meridian_launcher::process::ManagedProcess::spawn(
            &format!("psp-{name}"),
            command,
            &dir.join(format!("psp-{name}.log")),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("psp starts");
        let psp = PspProcess {
            name: name.to_string(),
            url: format!("http://127.0.0.1:{port}"),
            process,
            client: reqwest::Client::new(),
        };
        eventually("the PSP answers", Duration::from_secs(10), || async {
            psp.client
                .get(format!("{}/healthz", psp.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        psp
    }

    /// Sets the simulator's injected faults (`PUT /v1/faults`).
    pub async fn faults(&self, faults: serde_json::Value) {
        let response = self
            .client
            .put(format!("{}/v1/faults", self.url))
            .json(&faults)
            .send()
            .await
            .expect("faults");
        assert_eq!(response.status(), 200);
    }

    /// Every payment intent the simulator holds.
    pub async fn ledger(&self) -> Vec<serde_json::Value> {
        let body: serde_json::Value = self
            .client
            .get(format!("{}/v1/ledger", self.url))
            .send()
            .await
            .expect("ledger")
            .json()
            .await
            .expect("ledger json");
        body["payment_intents"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn stop(&mut self) {
        self.process.stop();
    }
}

impl TestStack {
    /// Starts the `primary` and `fallback` payment simulators; origins
    /// configured afterwards use them.
    pub async fn start_psps(&mut self) {
        for name in ["primary", "fallback"] {
            let psp = PspProcess::start(name, self.stack.root()).await;
            self.psps.push(meridian_origin::config::PspConfig {
                name: psp.name.clone(),
                url: psp.url.parse().expect("an http URL"),
            });
            self.psp_processes.push(psp);
        }
    }

    pub fn psp(&self, name: &str) -> &PspProcess {
        self.psp_processes
            .iter()
            .find(|p| p.name == name)
            .expect("psp started")
    }
}

/// `GET {base}/readyz`: its status and JSON body; `None` while nothing
/// answers.
pub async fn readyz(client: &reqwest::Client, base: &str) -> Option<(u16, serde_json::Value)> {
    let response = client.get(format!("{base}/readyz")).send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.unwrap_or_default()))
}

/// A graceful stop as Kubernetes sends it: SIGTERM to `process`, then
/// waits until `{admin}/readyz` answers 503 `draining`. Returns when the
/// signal was sent.
pub async fn sigterm_until_draining(
    process: &meridian_launcher::process::ManagedProcess,
    client: &reqwest::Client,
    admin: &str,
) -> Instant {
    let pid = nix::unistd::Pid::from_raw(process.pid().expect("running") as i32);
    let stopped_at = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    eventually(
        "readyz turns 503 (draining)",
        Duration::from_secs(2),
        || async {
            readyz(client, admin)
                .await
                .is_some_and(|(status, body)| status == 503 && body["draining"] == true)
        },
    )
    .await;
    stopped_at
}

/// Waits for `process` to exit after the stop sent at `stopped_at`, and
/// checks it did not leave before `drain_delay`.
pub async fn exits_after_drain(
    process: meridian_launcher::process::ManagedProcess,
    stopped_at: Instant,
    drain_delay: Duration,
) {
    let process = std::sync::Mutex::new(process);
    eventually(
        "the process exits after the drain",
        Duration::from_secs(15),
        || async { process.lock().expect("process").exited().is_some() },
    )
    .await;
    let took = stopped_at.elapsed();
    println!("SIGTERM to exit: {took:?} (drain_delay {drain_delay:?})");
    assert!(took >= drain_delay, "left before the drain delay: {took:?}");
}
