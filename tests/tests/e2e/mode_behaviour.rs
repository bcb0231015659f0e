//! Operating modes end to end: a change made through the admin API reaches
//! the edges and origins of every region (measured), survives restarts of
//! an edge and of Redis, and each mode does what it promises through the
//! edge — degraded switches non-essentials off with empty, cacheable
//! answers; read-only refuses cart writes and checkout with 503 and takes
//! notify-me requests; maintenance answers a static page except for health
//! and admin.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::edge::{TestEdge, edge_config, region, x_cache};
use crate::helpers::{HOME, TOKEN, TestOrigin, TestStack, eventually, shopper_token};

const WEST: &str = "eu-west";

fn addr(origin: &TestOrigin) -> SocketAddr {
    origin
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("origin address")
}

/// An edge of `own` in front of its region's origin, failing over to the
/// other's, following the region's Redis channel, keeping its mode in
/// `state_path`.
fn mode_edge(
    stack: &TestStack,
    own: (&str, SocketAddr),
    other: (&str, SocketAddr),
    state_path: &Path,
) -> meridian_edge::EdgeConfig {
    let mut config = edge_config(
        own.0,
        vec![region(own.0, own.1, 0), region(other.0, other.1, 80)],
    );
    let redis_url = stack.stack.region(own.0).expect("region").redis.url();
    config.redis_url = Some(redis_url.parse().expect("a redis URL"));
    config.modes.state_path = Some(state_path.to_path_buf());
    // One admin token for origins and edges, as in `meridian up`.
    config.admin_tokens = vec![meridian_edge::config::AdminToken {
        name: "ops".into(),
        token: TOKEN.parse().expect("a token"),
    }];
    config
}

async fn put_mode(client: &reqwest::Client, base: &str, scope: &str, body: Value) {
    let response = client
        .put(format!("{base}/v1/admin/modes/{scope}"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .expect("put mode");
    assert_eq!(response.status(), 200, "mode change accepted");
}

/// Changes a mode through `via`, then waits (5 s at most) until the
/// process at `watch` applies `mode`.
async fn switch_and_wait(
    client: &reqwest::Client,
    via: &str,
    scope: &str,
    body: Value,
    watch: &str,
    mode: &str,
) {
    put_mode(client, via, scope, body).await;
    eventually(
        &format!("{watch} in {mode}"),
        Duration::from_secs(5),
        || async { readyz_modes(client, watch).await["mode"] == mode },
    )
    .await;
}

/// The `modes` object of an origin's `/readyz` or an edge's admin `/readyz`.
async fn readyz_modes(client: &reqwest::Client, base: &str) -> Value {
    let body: Value = client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("readyz json");
    body["modes"].clone()
}

/// Polls every `(name, readyz base)` until each reports `mode`; how long
/// each took from `since`.
async fn until_all_apply(
    client: &reqwest::Client,
    processes: &[(&str, String)],
    mode: &str,
    since: Instant,
    limit: Duration,
) -> Vec<(String, Duration)> {
    let mut took = Vec::new();
    let mut waiting: Vec<&(&str, String)> = processes.iter().collect();
    while !waiting.is_empty() {
        let mut still = Vec::new();
        for process in waiting {
            if readyz_modes(client, &process.1).await["mode"] == mode {
                took.push((process.0.to_string(), since.elapsed()));
            } else {
                still.push(process);
            }
        }
        waiting = still;
        assert!(
            since.elapsed() < limit,
            "not applied within {limit:?}: {:?}",
            waiting.iter().map(|p| p.0).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mode_flip_reaches_every_edge_and_origin_and_survives_restarts() {
    let mut stack = TestStack::start(&[HOME, WEST], 1, 5).await;
    let east = stack.origin(HOME).await;
    let west = stack.origin(WEST).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let east_state = dir.path().join("edge-us-east.json");
    let west_state = dir.path().join("edge-eu-west.json");
    let east_edge = TestEdge::start(mode_edge(
        &stack,
        (HOME, addr(&east)),
        (WEST, addr(&west)),
        &east_state,
    ))
    .await;
    let west_edge = TestEdge::start(mode_edge(
        &stack,
        (WEST, addr(&west)),
        (HOME, addr(&east)),
        &west_state,
    ))
    .await;
    let client = reqwest::Client::new();
    let processes = vec![
        ("origin us-east", east.admin.clone()),
        ("origin eu-west", west.admin.clone()),
        ("edge us-east", east_edge.admin.clone()),
        ("edge eu-west", west_edge.admin.clone()),
    ];
    // Every process has read the setting once (edges: their first poll).
    eventually(
        "edges polled their origins",
        Duration::from_secs(10),
        || async {
            readyz_modes(&client, &east_edge.admin).await["source"] == "poll"
                && readyz_modes(&client, &west_edge.admin).await["source"] == "poll"
        },
    )
    .await;

    // A forged announcement on the region's Redis (anyone who can reach
    // Redis could publish it), dated far in the future: only a hint, so
    // the edge asks its origin and stays `normal`; and its date could not
    // pin the edge against the real change below.
    let forged = json!({
        "origin": "attacker",
        "keys": ["modes"],
        "modes": {
            "region": WEST, "mode": "maintenance", "features": {},
            "changed_at_ms": 9_999_999_999_999i64, "stale": false
        }
    });
    let redis = &stack.stack.region(WEST).expect("west").redis;
    let published = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port().to_string(), "-a", redis.password()])
        .args([
            "--no-auth-warning",
            "publish",
            meridian_contracts::invalidation::CHANNEL,
            &forged.to_string(),
        ])
        .output()
        .expect("redis-cli");
    assert!(published.status.success());
    let receivers: i64 = String::from_utf8_lossy(&published.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(
        receivers >= 1,
        "the west edge listens on the channel: {published:?}"
    );
    let polls = west_edge
        .metric("meridian_edge_mode_polls_total", &[])
        .await;
    eventually(
        "the forged hint made the edge ask its origin",
        Duration::from_secs(5),
        || async {
            west_edge
                .metric("meridian_edge_mode_polls_total", &[])
                .await
                > polls
        },
    )
    .await;
    assert_eq!(
        readyz_modes(&client, &west_edge.admin).await["mode"],
        "normal"
    );

    // The flip: edges poll only every 5 s, so anything under that came
    // through the announcements on Redis (hints that wake the poll).
    let since = Instant::now();
    put_mode(
        &client,
        &east.admin,
        "global",
        json!({ "mode": "degraded", "reason": "propagation test" }),
    )
    .await;
    let took = until_all_apply(
        &client,
        &processes,
        "degraded",
        since,
        Duration::from_secs(10),
    )
    .await;
    for (name, after) in &took {
        println!("{name} applied `degraded` after {after:?}");
        assert!(*after < Duration::from_secs(2), "{name} took {after:?}");
    }
    let edge_modes = readyz_modes(&client, &west_edge.admin).await;
    assert_eq!(edge_modes["features"]["recommendations"], false);
    assert_eq!(edge_modes["stale"], false);
    assert_eq!(
        west_edge
            .metric("meridian_edge_mode", &[("mode", "degraded")])
            .await,
        1.0
    );
    assert_eq!(
        west_edge
            .metric("meridian_edge_mode_changes_total", &[])
            .await,
        1.0
    );
    assert_eq!(
        west_edge
            .metric("meridian_edge_mode_propagation_seconds_count", &[])
            .await,
        1.0
    );

    // A restarted edge — its own process, on the state file the running
    // one kept — whose region's origins cannot be reached starts in the
    // last mode applied, and says it cannot confirm it.
    let restarted_state = dir.path().join("edge-eu-west-restarted.json");
    std::fs::copy(&west_state, &restarted_state).expect("copy the state file");
    // Port 1: nothing listens there, connections are refused.
    let dead = SocketAddr::from(([127, 0, 0, 1], 1));
    let config = mode_edge(&stack, (WEST, dead), (HOME, addr(&east)), &restarted_state);
    let mut restarted = EdgeProcess::start(&config, dir.path()).await;
    let modes = readyz_modes(&client, &restarted.admin).await;
    assert_eq!(modes["mode"], "degraded", "{modes}");
    assert_eq!(modes["source"], "state_file", "{modes}");
    eventually(
        "the restarted edge says stale",
        Duration::from_secs(10),
        || async {
            let modes = readyz_modes(&client, &restarted.admin).await;
            modes["stale"] == true && modes["mode"] == "degraded"
        },
    )
    .await;
    let metrics = client
        .get(format!("{}/metrics", restarted.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        crate::helpers::metric_sum(&metrics, "meridian_edge_modes_stale", &[]),
        1.0
    );
    restarted.stop();

    // Redis down: the change still reaches everyone (origins through the
    // replicated log, edges by polling); back up, announcements resume.
    stack.stack.region_mut(WEST).expect("west").redis.kill();
    let since = Instant::now();
    put_mode(
        &client,
        &east.admin,
        WEST,
        json!({ "mode": "read-only", "reason": "drill with Redis down" }),
    )
    .await;
    let processes_west = vec![
        ("origin eu-west", west.admin.clone()),
        ("edge eu-west", west_edge.admin.clone()),
    ];
    until_all_apply(
        &client,
        &processes_west,
        "read-only",
        since,
        Duration::from_secs(15),
    )
    .await;
    stack
        .stack
        .region_mut(WEST)
        .expect("west")
        .redis
        .restart()
        .expect("redis restarts");
    eventually("the edge resubscribed", Duration::from_secs(10), || async {
        let ready: Value = client
            .get(format!("{}/readyz", west_edge.admin))
            .send()
            .await
            .expect("readyz")
            .json()
            .await
            .expect("json");
        ready["purge_listener"] == true
    })
    .await;
    // The origin's Redis client comes back through its probe.
    eventually(
        "the origin's Redis is back",
        Duration::from_secs(10),
        || async { west.metric("meridian_cache_l2_available", &[]).await == 1.0 },
    )
    .await;
    let since = Instant::now();
    put_mode(
        &client,
        &east.admin,
        WEST,
        json!({ "mode": null, "reason": "drill over" }),
    )
    .await;
    let took = until_all_apply(
        &client,
        &processes_west,
        "degraded",
        since,
        Duration::from_secs(10),
    )
    .await;
    for (name, after) in &took {
        println!("after the Redis restart, {name} applied after {after:?}");
        assert!(*after < Duration::from_secs(2), "{name} took {after:?}");
    }
    assert_eq!(
        readyz_modes(&client, &east_edge.admin).await["mode"],
        "degraded"
    );
}

/// An edge running as its own `meridian edge` process (stopped on drop).
struct EdgeProcess {
    child: Option<std::process::Child>,
    admin: String,
}

impl EdgeProcess {
    async fn start(config: &meridian_edge::EdgeConfig, dir: &Path) -> EdgeProcess {
        let path = dir.join(format!(
            "edge-{}-{}.toml",
            config.region,
            config.admin_listen.port()
        ));
        std::fs::write(&path, toml::to_string(config).expect("edge config")).expect("write config");
        let log = std::fs::File::create(path.with_extension("log")).expect("log file");
        let child = std::process::Command::new(crate::helpers::meridian_bin())
            .arg("edge")
            .arg("--config")
            .arg(&path)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("meridian edge starts");
        let edge = EdgeProcess {
            child: Some(child),
            admin: format!("http://{}", config.admin_listen),
        };
        let client = reqwest::Client::new();
        eventually(
            "the edge process answers",
            Duration::from_secs(20),
            || async {
                client
                    .get(format!("{}/readyz", edge.admin))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            },
        )
        .await;
        edge
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for EdgeProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A request through the edge with optional token, JSON body and headers.
async fn send(
    edge: &TestEdge,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = edge.client.request(method, format!("{}{path}", edge.url));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("request through the edge")
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn assert_paused(response: reqwest::Response, what: &str) {
    assert_eq!(response.status(), 503, "{what}");
    assert_eq!(header(&response, "retry-after"), Some("300"), "{what}");
    assert_eq!(
        header(&response, "content-type"),
        Some("application/problem+json"),
        "{what}"
    );
    let problem: Value = response.json().await.expect("problem");
    assert!(
        problem["type"].as_str().unwrap().ends_with("/read-only"),
        "{what}: {problem}"
    );
    assert_eq!(problem["mode"], "read-only", "{what}");
    assert_eq!(problem["notify_me"], "/v1/notify-me", "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_mode_behaves_as_promised_through_the_edge() {
    let stack = TestStack::start(&[HOME], 1, 40).await;
    let origin = stack.origin(HOME).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = edge_config(HOME, vec![region(HOME, addr(&origin), 0)]);
    let redis_url = stack.stack.region(HOME).expect("home").redis.url();
    config.redis_url = Some(redis_url.parse().expect("a redis URL"));
    config.modes.state_path = Some(dir.path().join("edge.json"));
    // Queues checkout when the mode asks for it, one shopper at a time.
    config.waiting_room = Some(meridian_edge::config::WaitingRoomConfig {
        secret: "a-waiting-room-secret-for-the-tests-0123".parse().unwrap(),
        active_users: 1,
        new_users_per_minute: 100,
        session_duration: Duration::from_secs(300),
        ticket_grace: Duration::from_secs(30),
        always_on: false,
        sold_out_for: Duration::from_secs(60),
        redis_timeout: Duration::from_millis(500),
    });
    let edge = TestEdge::start(config).await;
    let client = reqwest::Client::new();
    // A product with reviews, and a SKU of it that can be bought.
    let mut conn = stack.primary_conn().await;
    let (product, name, sku, reviews): (i64, String, String, i64) = sqlx::query_as(
        "select p.id, p.name,
                coalesce((select v.sku from product_variants v where v.product_id = p.id
                          order by v.position limit 1), p.sku),
                (select count(*) from product_reviews r where r.product_id = p.id)
         from products p
         where exists (select 1 from product_reviews r where r.product_id = p.id)
         order by p.id limit 1",
    )
    .fetch_one(&mut conn)
    .await
    .expect("a product with reviews");
    let prefix: String = name.chars().take(4).collect();
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;

    // Normal: the features answer from the replica.
    let recommendations = format!("/v1/products/{product}/recommendations");
    let response = send(&edge, get.clone(), &recommendations, None, None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-meridian-feature-off"), None);
    let response = send(
        &edge,
        get.clone(),
        &format!("/v1/search/suggestions?q={}", prefix.replace(' ', "%20")),
        None,
        None,
    )
    .await;
    assert_eq!(response.status(), 200);
    let suggestions: Value = response.json().await.unwrap();
    assert!(
        suggestions["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == name.as_str()),
        "{suggestions}"
    );
    let response = send(
        &edge,
        get.clone(),
        &format!("/v1/products/{product}/reviews"),
        None,
        None,
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["count"], reviews);
    assert_eq!(
        send(&edge, get.clone(), "/v1/search/suggestions?q=", None, None)
            .await
            .status(),
        422
    );

    let checkout_status = |user: &'static str| {
        let edge = &edge;
        async move {
            edge.client
                .post(format!("{}/v1/checkout", edge.url))
                .bearer_auth(shopper_token(user, HOME))
                .header("idempotency-key", format!("{user}-checkout"))
                .json(&json!({}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // Normal: checkout is not queued.
    assert_ne!(checkout_status("early-1").await, 429);
    assert_ne!(checkout_status("early-2").await, 429);

    // Degraded: switched-off features answer empty, cacheable results that
    // say so; the copy cached under `normal` was purged by the change.
    switch_and_wait(
        &client,
        &origin.admin,
        "global",
        json!({ "mode": "degraded", "reason": "behaviour test" }),
        &edge.admin,
        "degraded",
    )
    .await;
    eventually(
        "feature off at the edge",
        Duration::from_secs(5),
        || async {
            let response = send(&edge, get.clone(), &recommendations, None, None).await;
            header(&response, "x-meridian-feature-off") == Some("recommendations")
        },
    )
    .await;
    // The empty answer is cached. (Waited for: the region's origins also
    // publish the key `modes` once their replica replays the change, and
    // that purge of the tag may land after the first empty answer was
    // stored — on a loaded machine it did.)
    eventually(
        "the empty answer is cached",
        Duration::from_secs(5),
        || async {
            let response = send(&edge, get.clone(), &recommendations, None, None).await;
            header(&response, "x-meridian-feature-off") == Some("recommendations")
                && x_cache(&response) == "HIT"
        },
    )
    .await;
    let response = send(&edge, get.clone(), &recommendations, None, None).await;
    assert_eq!(response.status(), 200);
    assert!(
        header(&response, "cache-control")
            .unwrap()
            .contains("public")
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["items"], json!([]));
    let response = send(
        &edge,
        get.clone(),
        &format!("/v1/products/{product}/reviews"),
        None,
        None,
    )
    .await;
    assert_eq!(header(&response, "x-meridian-feature-off"), Some("reviews"));
    assert_eq!(response.json::<Value>().await.unwrap()["count"], 0);
    // Checkout goes through the waiting room: one in, the next queued.
    assert_ne!(checkout_status("degraded-1").await, 429);
    assert_eq!(checkout_status("degraded-2").await, 429);
    // An explicit switch beats the mode's default.
    put_mode(
        &client,
        &origin.admin,
        HOME,
        json!({ "features": { "reviews": true }, "reason": "reviews are fine" }),
    )
    .await;
    eventually("reviews back on", Duration::from_secs(5), || async {
        let response = send(
            &edge,
            get.clone(),
            &format!("/v1/products/{product}/reviews"),
            None,
            None,
        )
        .await;
        header(&response, "x-meridian-feature-off").is_none()
    })
    .await;

    // Read-only: browsing works, carts and checkout are paused; notify-me
    // takes the shopper's interest instead, once per contact.
    switch_and_wait(
        &client,
        &origin.admin,
        "global",
        json!({ "mode": "read-only", "reason": "behaviour test" }),
        &origin.admin,
        "read-only",
    )
    .await;
    let shopper = shopper_token("reader-1", HOME);
    assert_eq!(
        send(
            &edge,
            get.clone(),
            &format!("/v1/products/{product}"),
            None,
            None
        )
        .await
        .status(),
        200
    );
    assert_eq!(
        send(&edge, get.clone(), "/v1/cart", Some(&shopper), None)
            .await
            .status(),
        200
    );
    assert_paused(
        send(
            &edge,
            post.clone(),
            "/v1/cart/items",
            None,
            Some(json!({ "sku": sku })),
        )
        .await,
        "guest cart add",
    )
    .await;
    assert_paused(
        send(
            &edge,
            reqwest::Method::PATCH,
            &format!("/v1/cart/items/{sku}"),
            Some(&shopper),
            Some(json!({ "quantity": 2 })),
        )
        .await,
        "cart update",
    )
    .await;
    assert_paused(
        send(
            &edge,
            reqwest::Method::DELETE,
            &format!("/v1/cart/items/{sku}"),
            Some(&shopper),
            None,
        )
        .await,
        "cart removal",
    )
    .await;
    let checkout = edge
        .client
        .post(format!("{}/v1/checkout", edge.url))
        .bearer_auth(&shopper)
        .header("idempotency-key", "read-only-checkout-1")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_paused(checkout, "checkout").await;
    assert_paused(
        send(
            &edge,
            post.clone(),
            "/v1/flash-sales/1/claim",
            Some(&shopper),
            None,
        )
        .await,
        "flash claim",
    )
    .await;

    let notify = |token: Option<String>, body: Value| {
        let edge = &edge;
        let post = post.clone();
        async move { send(edge, post, "/v1/notify-me", token.as_deref(), Some(body)).await }
    };
    assert_eq!(
        notify(None, json!({ "sku": sku, "email": "Ann@Example.com" }))
            .await
            .status(),
        202
    );
    let repeat = notify(None, json!({ "sku": sku, "email": "ann@example.com" })).await;
    assert_eq!(repeat.status(), 200);
    assert_eq!(repeat.json::<Value>().await.unwrap()["duplicate"], true);
    assert_eq!(
        notify(Some(shopper.clone()), json!({ "sku": sku }))
            .await
            .status(),
        202
    );
    for (body, why) in [
        (json!({ "sku": sku }), "a guest without an address"),
        (
            json!({ "sku": sku, "email": "not-an-address" }),
            "a bad address",
        ),
        (
            json!({ "sku": "NO-SUCH-SKU", "email": "ann@example.com" }),
            "an unknown SKU",
        ),
        (
            json!({ "sku": "bad sku!", "email": "ann@example.com" }),
            "a malformed SKU",
        ),
        (json!({ "sku": sku, "colour": "red" }), "an unknown field"),
    ] {
        let response = notify(None, body).await;
        assert!(
            matches!(response.status().as_u16(), 400 | 422),
            "{why}: {}",
            response.status()
        );
        assert_eq!(
            header(&response, "content-type"),
            Some("application/problem+json")
        );
    }
    let stored: Value = client
        .get(format!("{}/v1/admin/notify-me/{sku}", origin.admin))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stored["count"], 2, "{stored}");
    let contacts: Vec<&str> = stored["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["contact"].as_str().unwrap())
        .collect();
    assert!(contacts.contains(&"email:ann@example.com"), "{contacts:?}");
    assert!(contacts.contains(&"user:reader-1"), "{contacts:?}");
    assert_eq!(
        client
            .get(format!("{}/v1/admin/notify-me/{sku}", origin.admin))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    // Maintenance: a static page at the edge (HTML for browsers), with
    // Retry-After; health and admin still pass, so ops can switch back.
    switch_and_wait(
        &client,
        &origin.admin,
        "global",
        json!({ "mode": "maintenance", "reason": "behaviour test" }),
        &edge.admin,
        "maintenance",
    )
    .await;
    let origin_requests = || async {
        let text = origin.internal("/metrics").await.text().await.unwrap();
        crate::helpers::metric_sum(
            &text,
            "meridian_http_requests_total",
            &[("route", "/v1/products/{id}")],
        ) + crate::helpers::metric_sum(
            &text,
            "meridian_http_requests_total",
            &[("route", "/v1/cart/items")],
        )
    };
    let before = origin_requests().await;
    let response = send(
        &edge,
        get.clone(),
        &format!("/v1/products/{product}"),
        None,
        None,
    )
    .await;
    assert_eq!(response.status(), 503);
    assert_eq!(header(&response, "retry-after"), Some("300"));
    assert_eq!(header(&response, "x-meridian-mode"), Some("maintenance"));
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["mode"], "maintenance");
    let page = edge
        .client
        .get(format!("{}/v1/products/{product}", edge.url))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 503);
    assert!(
        header(&page, "content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.text().await.unwrap().contains("maintenance"));
    let cart = send(
        &edge,
        post.clone(),
        "/v1/cart/items",
        None,
        Some(json!({ "sku": sku })),
    )
    .await;
    assert_eq!(cart.status(), 503);
    assert_eq!(header(&cart, "x-meridian-mode"), Some("maintenance"));
    assert_eq!(
        origin_requests().await,
        before,
        "nothing reached the origin"
    );
    // Health, metrics and the admin API are internal: never through the
    // public edge, in any mode.
    for internal in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            send(&edge, get.clone(), internal, None, None)
                .await
                .status(),
            404,
            "{internal}"
        );
    }
    assert_eq!(
        send(&edge, get.clone(), "/v1/modes", None, None)
            .await
            .status(),
        200
    );
    // The admin API is not on the public edge, with or without a token,
    // however it is spelled; nothing changes.
    for (path, token) in [
        ("/v1/admin/modes/global", None),
        ("/v1/admin/modes/global", Some(TOKEN)),
        ("/v1/%61dmin/modes/global", Some(TOKEN)),
        ("//v1/admin/modes/global", Some(TOKEN)),
    ] {
        let refused = send(
            &edge,
            reqwest::Method::PUT,
            path,
            token,
            Some(json!({ "mode": "normal", "reason": "through the public edge" })),
        )
        .await;
        assert_eq!(refused.status(), 404, "{path}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        readyz_modes(&client, &edge.admin).await["mode"],
        "maintenance"
    );
    switch_and_wait(
        &client,
        &origin.admin,
        "global",
        json!({ "mode": "normal", "reason": "maintenance over" }),
        &edge.admin,
        "normal",
    )
    .await;
    assert_eq!(
        send(
            &edge,
            get.clone(),
            &format!("/v1/products/{product}"),
            None,
            None
        )
        .await
        .status(),
        200
    );
}

/// Runs `meridian <args>` against the given endpoints; (success, stdout,
/// stderr).
async fn meridian(args: Vec<String>) -> (bool, String, String) {
    let output = tokio::process::Command::new(crate::helpers::meridian_bin())
        .args(&args)
        .env("MERIDIAN_ADMIN_TOKEN", TOKEN)
        .output()
        .await
        .expect("meridian runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ops_commands_drive_every_region() {
    let stack = TestStack::start(&[HOME, WEST], 1, 5).await;
    let east = stack.origin(HOME).await;
    let west = stack.origin(WEST).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let east_edge = TestEdge::start(mode_edge(
        &stack,
        (HOME, addr(&east)),
        (WEST, addr(&west)),
        &dir.path().join("east.json"),
    ))
    .await;
    let west_edge = TestEdge::start(mode_edge(
        &stack,
        (WEST, addr(&west)),
        (HOME, addr(&east)),
        &dir.path().join("west.json"),
    ))
    .await;
    let endpoints = [
        format!("--origin=us-east={}", east.admin),
        format!("--origin=eu-west={}", west.admin),
        format!("--edge-admin=us-east={}", east_edge.admin),
        format!("--edge-admin=eu-west={}", west_edge.admin),
    ];
    let with = |args: &[&str]| {
        args.iter()
            .map(|a| a.to_string())
            .chain(endpoints.iter().cloned())
            .collect::<Vec<_>>()
    };
    // Something cached at both edges, to purge later.
    for edge in [&east_edge, &west_edge] {
        assert_eq!(edge.get("/v1/products/1").await.status(), 200);
        assert_eq!(x_cache(&edge.get("/v1/products/1").await), "HIT");
    }

    let (ok, out, err) = meridian(with(&[
        "degrade",
        "--region",
        WEST,
        "--mode",
        "read-only",
        "--reason",
        "ops drill",
    ]))
    .await;
    assert!(ok, "{out}\n{err}");
    println!("{out}");
    for process in ["origin", "edge"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(WEST) && l.contains(process) && l.ends_with(" ms")),
            "{process} of {WEST} applied: {out}"
        );
    }
    assert!(
        !out.contains("us-east"),
        "only the region changed is watched: {out}"
    );
    assert_eq!(
        readyz_modes(&reqwest::Client::new(), &west_edge.admin).await["mode"],
        "read-only"
    );

    let (ok, out, err) = meridian(with(&[
        "features",
        "--region",
        "global",
        "--off",
        "recommendations",
        "--reason",
        "db load",
    ]))
    .await;
    assert!(ok, "{out}\n{err}");
    assert_eq!(
        out.lines().filter(|l| l.ends_with(" ms")).count(),
        4,
        "{out}"
    );
    let (ok, _, err) = meridian(with(&["features", "--region", "global", "--off", "coffee"])).await;
    assert!(!ok);
    assert!(err.contains("unknown feature"), "{err}");
    let (ok, _, err) = meridian(with(&[
        "degrade", "--region", "mars", "--mode", "normal", "--reason", "x",
    ]))
    .await;
    assert!(!ok);
    assert!(err.contains("404"), "{err}");

    let (ok, out, err) = meridian(with(&["modes", "history", "--json"])).await;
    assert!(ok, "{err}");
    let changes: Value = serde_json::from_str(&out).expect("history json");
    assert_eq!(changes[0]["reason"], "db load");
    assert_eq!(changes[1]["reason"], "ops drill");
    assert_eq!(changes[1]["actor"], "local-admin");
    let (ok, out, _) = meridian(with(&["modes", "history"])).await;
    assert!(
        ok && out.contains("ops drill") && out.contains("→ read-only"),
        "{out}"
    );

    let (ok, out, err) = meridian(with(&["purge", "--tag", "product:1"])).await;
    assert!(ok, "{out}\n{err}");
    for region in [HOME, WEST] {
        assert!(
            out.lines().any(|l| l.starts_with(region)
                && l.contains("acknowledged")
                && l.contains("1 object")),
            "{region} acknowledged: {out}"
        );
    }
    for edge in [&east_edge, &west_edge] {
        assert_eq!(x_cache(&edge.get("/v1/products/1").await), "MISS", "purged");
    }

    let (ok, out, err) = meridian(with(&["status", "--json", "--interval", "200ms"])).await;
    assert!(ok, "{err}");
    let status: Value = serde_json::from_str(&out).expect("status json");
    let regions = status.as_array().expect("one line per region");
    assert_eq!(regions.len(), 2);
    for line in regions {
        assert_eq!(line["edge"], "ready", "{line}");
        assert_eq!(line["origin"], "ready", "{line}");
        assert!(line["cache_hit_ratio"].is_number(), "{line}");
        assert!(line["requests_per_second"].is_number(), "{line}");
    }
    let west_line = regions.iter().find(|l| l["region"] == WEST).unwrap();
    assert_eq!(west_line["origin_mode"], "read-only");
    assert_eq!(west_line["edge_mode"], "read-only");
    let (ok, out, _) = meridian(with(&["status", "--interval", "100ms"])).await;
    assert!(
        ok && out.contains("REGION") && out.contains("read-only"),
        "{out}"
    );

    // An edge that cannot be reached fails the purge, naming the region.
    let mut broken = with(&["purge", "--url", "/v1/products/1"]);
    broken.retain(|a| !a.starts_with("--edge-admin=eu-west"));
    broken.push("--edge-admin=eu-west=http://127.0.0.1:1".into());
    let (ok, out, err) = meridian(broken).await;
    assert!(!ok);
    assert!(
        out.contains("FAILED") && err.contains("eu-west"),
        "{out}\n{err}"
    );
}
