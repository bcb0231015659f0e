//! Rate limits (429 with Retry-After and RateLimit headers), bot scoring
//! (block, challenge round-trip, verified crawlers) and the region-wide
//! checkout budget in a real Redis, with its local fallback.

use std::time::Duration;

use meridian_edge::config::{BotsConfig, BudgetConfig, ClassLimits, RateConfig, VerifiedBot};
use meridian_launcher::{Binaries, RedisServer, free_port};

use super::upstream::TestUpstream;
use super::{TestEdge, edge_config, region};

const BROWSER: [(&str, &str); 4] = [
    (
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0",
    ),
    ("accept", "text/html,application/json"),
    ("accept-language", "en-GB,en;q=0.8"),
    ("accept-encoding", "gzip, br"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_bucket_gets_429_with_ratelimit_headers() {
    let upstream = TestUpstream::start("local").await;
    let mut config = edge_config("local", vec![region("local", upstream.addr, 0)]);
    config.limits.browse = Some(ClassLimits {
        per_ip: Some(RateConfig {
            per_second: 1,
            burst: 3,
        }),
        per_user: None,
    });
    let edge = TestEdge::start(config).await;
    for _ in 0..3 {
        assert_eq!(edge.get("/v1/products/1").await.status(), 200);
    }
    let refused = edge.get("/v1/products/1").await;
    assert_eq!(refused.status(), 429);
    let headers = refused.headers();
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(headers["ratelimit-policy"], "\"browse-ip\";q=3;w=3");
    assert_eq!(headers["ratelimit"], "\"browse-ip\";r=0;t=1");
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(
        upstream.total(),
        3,
        "the refused request never reached the origin"
    );
    // Other classes are not limited by this bucket; the bucket refills.
    assert_eq!(edge.get("/v1/cart").await.status(), 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(edge.get("/v1/products/1").await.status(), 200);
    assert_eq!(
        edge.metric(
            "meridian_edge_rate_limited_total",
            &[("policy", "browse-ip")]
        )
        .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bots_are_blocked_challenged_or_let_through() {
    let upstream = TestUpstream::start("local").await;
    let mut config = edge_config("local", vec![region("local", upstream.addr, 0)]);
    config.bots = Some(BotsConfig {
        verified: vec![VerifiedBot {
            name: "googlebot".into(),
            user_agent: "Googlebot".into(),
            ranges: vec!["127.0.0.0/8".parse().unwrap()],
        }],
        ..BotsConfig::with_secret("bots-test-challenge-secret-0123456789".parse().unwrap())
    });
    let edge = TestEdge::start(config).await;

    // A browser passes.
    assert_eq!(
        edge.get_with("/v1/products/1", &BROWSER).await.status(),
        200
    );
    // A headless browser without the usual headers: blocked.
    let blocked = edge
        .get_with(
            "/v1/products/1",
            &[("user-agent", "Mozilla/5.0 HeadlessChrome/120.0")],
        )
        .await;
    assert_eq!(blocked.status(), 403);
    assert!(!blocked.headers().contains_key("set-cookie"));

    // A script: challenged; without the cookie it stays challenged.
    let script = [("user-agent", "curl/8.5.0"), ("accept", "*/*")];
    let challenged = edge.get_with("/v1/products/1", &script).await;
    assert_eq!(challenged.status(), 403);
    let set_cookie = challenged.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    assert!(cookie.starts_with("meridian_challenge="), "{set_cookie}");
    assert_eq!(edge.get_with("/v1/products/1", &script).await.status(), 403);
    // The round trip (what a browser does on its own) passes…
    let mut with_cookie = script.to_vec();
    with_cookie.push(("cookie", cookie.as_str()));
    assert_eq!(
        edge.get_with("/v1/products/1", &with_cookie).await.status(),
        200
    );
    // …but the cookie is bound to the user agent.
    let mut other_agent = vec![("user-agent", "curl/8.6.0"), ("accept", "*/*")];
    other_agent.push(("cookie", cookie.as_str()));
    assert_eq!(
        edge.get_with("/v1/products/1", &other_agent).await.status(),
        403
    );

    // A verified crawler from its network is allowed even without headers.
    let google = [("user-agent", "Mozilla/5.0 (compatible; Googlebot/2.1)")];
    assert_eq!(edge.get_with("/v1/products/1", &google).await.status(), 200);

    for action in [
        "allow",
        "block",
        "challenge",
        "challenge_passed",
        "verified",
    ] {
        assert!(
            edge.metric("meridian_edge_bot_decisions_total", &[("action", action)])
                .await
                >= 1.0,
            "{action} counted"
        );
    }
    assert_eq!(
        upstream.total(),
        3,
        "only allowed requests reached the origin"
    );
}

async fn checkouts(edge: &TestEdge, n: usize) -> usize {
    let mut allowed = 0;
    for _ in 0..n {
        let response = edge
            .client
            .post(format!("{}/v1/checkout", edge.url))
            .body("{}")
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            200 => allowed += 1,
            429 => assert_eq!(
                response.headers()["ratelimit-policy"]
                    .to_str()
                    .unwrap()
                    .split(';')
                    .next()
                    .unwrap(),
                "\"checkout-budget\""
            ),
            other => panic!("unexpected {other}"),
        }
    }
    allowed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkout_budget_is_shared_through_redis_and_falls_back_locally() {
    let dir = tempfile::tempdir().unwrap();
    let bins = Binaries::discover().unwrap();
    let mut redis = RedisServer::start(&bins, "budget", dir.path(), free_port().unwrap()).unwrap();
    let upstream = TestUpstream::start("local").await;
    let budget = BudgetConfig {
        per_second: 1,
        burst: 5,
        fallback_per_second: 1,
        key: "meridian:budget:test".into(),
        timeout: Duration::from_millis(50),
    };
    let mut edges = Vec::new();
    for _ in 0..2 {
        let mut config = edge_config("local", vec![region("local", upstream.addr, 0)]);
        config.redis_url = Some(redis.url().parse().unwrap());
        config.limits.checkout_budget = Some(budget.clone());
        edges.push(TestEdge::start(config).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Two edges, one budget: the burst of 5 (+ at most 1 refill) in total.
    let total = checkouts(&edges[0], 6).await + checkouts(&edges[1], 6).await;
    assert!((5..=6).contains(&total), "{total} checkouts admitted");
    assert!(
        edges[0]
            .metric(
                "meridian_edge_checkout_budget_total",
                &[("source", "redis"), ("result", "limited")]
            )
            .await
            >= 1.0
    );

    // Redis gone: each edge falls back to its own bucket instead of failing.
    redis.kill();
    let local = checkouts(&edges[0], 8).await;
    assert!(
        (5..=6).contains(&local),
        "{local} admitted by the local fallback"
    );
    assert!(
        edges[0]
            .metric(
                "meridian_edge_checkout_budget_total",
                &[("source", "local")]
            )
            .await
            >= 8.0
    );
}
