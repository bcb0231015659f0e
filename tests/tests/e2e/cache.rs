//! The tiered cache: single-flight loads, invalidation across instances and
//! regions, and reads that survive Redis dying.

use std::time::Duration;

use crate::helpers::{HOME, TestStack, eventually, product_body, product_name};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_misses_cause_one_database_query() {
    let stack = TestStack::start(&[HOME], 1, 20).await;
    let origin = stack.origin(HOME).await;
    let queries = || async {
        origin
            .metric("meridian_db_queries_total", &[("purpose", "request")])
            .await
    };
    let before = queries().await;
    let requests = (0..100).map(|_| {
        let client = origin.client.clone();
        let url = format!("{}/v1/products/7", origin.url);
        async move {
            let response = client.get(url).send().await.expect("request");
            (
                response.status().as_u16(),
                response.text().await.expect("body"),
            )
        }
    });
    let results = futures::future::join_all(requests).await;
    assert!(results.iter().all(|(status, _)| *status == 200));
    assert!(
        results.windows(2).all(|w| w[0].1 == w[1].1),
        "every caller got the same body"
    );
    let after = queries().await;
    assert_eq!(after - before, 1.0, "100 concurrent misses ran one query");
    let loads = origin
        .metric(
            "meridian_cache_requests_total",
            &[("tier", "l1"), ("result", "miss")],
        )
        .await;
    assert_eq!(loads, 1.0, "one load ran");

    // Cached 404s: a missing product is looked up once, then served from L1.
    for _ in 0..5 {
        assert_eq!(origin.get("/v1/products/999999").await.status(), 404);
    }
    let negative = origin
        .metric(
            "meridian_cache_requests_total",
            &[("tier", "l1"), ("result", "negative_hit")],
        )
        .await;
    assert_eq!(negative, 4.0);
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_invalidate_other_instances_and_regions() {
    let stack = TestStack::start(&[HOME, "eu-west"], 1, 20).await;
    let a = stack.origin(HOME).await;
    let b = stack.origin(HOME).await;
    let eu = stack.origin("eu-west").await;
    let path = "/v1/products/5";
    let original = product_name(&a, path).await;
    // Warm every L1 (the second read of each is an L1 hit).
    for origin in [&a, &b, &eu] {
        assert_eq!(product_name(origin, path).await, original);
        let hit = origin.get(path).await;
        assert_eq!(hit.headers()["x-origin-cache"], "l1");
    }

    let response = a
        .put_product(
            5,
            &product_body("P0000005", "Renamed Everywhere", "books", 999),
        )
        .await;
    assert_eq!(response.status(), 200);
    for origin in [&a, &b, &eu] {
        eventually(
            "the new name everywhere",
            Duration::from_secs(3),
            || async { product_name(origin, path).await == "Renamed Everywhere" },
        )
        .await;
    }
    // Instance b heard about it on the regional channel.
    eventually(
        "pub/sub invalidation on b",
        Duration::from_secs(3),
        || async {
            b.metric(
                "meridian_invalidations_applied_total",
                &[("source", "pubsub")],
            )
            .await
                > 0.0
        },
    )
    .await;
    for origin in [a, b, eu] {
        origin.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_survive_redis_dying_and_the_cache_recovers() {
    let mut stack = TestStack::start(&[HOME], 1, 60).await;
    let origin = stack.origin(HOME).await;
    assert_eq!(origin.get("/v1/products/1").await.status(), 200);
    eventually("L2 in use", Duration::from_secs(3), || async {
        origin
            .metric(
                "meridian_cache_requests_total",
                &[("tier", "l2"), ("result", "miss")],
            )
            .await
            >= 1.0
    })
    .await;

    stack.stack.region_mut(HOME).expect("home").redis.kill();
    for id in 2..=30 {
        let response = origin.get(&format!("/v1/products/{id}")).await;
        assert_eq!(response.status(), 200, "product {id} with Redis dead");
    }
    assert_eq!(origin.internal("/readyz").await.status(), 200);
    assert_eq!(
        origin.metric("meridian_cache_l2_available", &[]).await,
        0.0,
        "L2 is being skipped"
    );

    stack
        .stack
        .region_mut(HOME)
        .expect("home")
        .redis
        .restart()
        .expect("redis restarts");
    eventually("L2 available again", Duration::from_secs(5), || async {
        origin.metric("meridian_cache_l2_available", &[]).await == 1.0
    })
    .await;
    let misses_before = origin
        .metric(
            "meridian_cache_requests_total",
            &[("tier", "l2"), ("result", "miss")],
        )
        .await;
    for id in 31..=40 {
        assert_eq!(
            origin.get(&format!("/v1/products/{id}")).await.status(),
            200
        );
    }
    let misses_after = origin
        .metric(
            "meridian_cache_requests_total",
            &[("tier", "l2"), ("result", "miss")],
        )
        .await;
    assert_eq!(misses_after - misses_before, 10.0, "L2 consulted again");

    // A second instance now finds those entries in Redis (L2 hits).
    let second = stack.origin(HOME).await;
    for id in 31..=40 {
        let response = second.get(&format!("/v1/products/{id}")).await;
        assert_eq!(response.headers()["x-origin-cache"], "l2", "product {id}");
    }
    origin.stop().await;
    second.stop().await;
}
