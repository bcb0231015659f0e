//! Purges: by URL and by surrogate key through the admin API (bearer
//! token), and from a product update on a real origin, carried by the
//! regional Redis invalidation channel.

use std::time::Duration;

use super::super::helpers::{HOME, TestStack, eventually, product_body};
use super::upstream::TestUpstream;
use super::{EDGE_TOKEN, TestEdge, body, edge_config, region, x_cache};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_by_url_and_by_tag_through_the_admin_api() {
    let upstream = TestUpstream::start("local").await;
    let edge = TestEdge::start(edge_config(
        "local",
        vec![region("local", upstream.addr, 0)],
    ))
    .await;
    let one = "/p/1?cc=public,max-age=600&tag=product:1%20products";
    let two = "/p/2?cc=public,max-age=600&tag=product:2%20products";
    for path in [one, two] {
        edge.get(path).await;
        assert_eq!(x_cache(&edge.get(path).await), "HIT");
    }

    // No token, wrong token: refused, nothing purged.
    let body_one = serde_json::json!({ "urls": [one] });
    assert_eq!(edge.purge(None, body_one.clone()).await.status(), 401);
    assert_eq!(
        edge.purge(Some("not-the-token-at-all"), body_one.clone())
            .await
            .status(),
        403
    );
    assert_eq!(x_cache(&edge.get(one).await), "HIT");
    // Malformed requests are 4xx problems.
    let bad = edge
        .purge(
            Some(EDGE_TOKEN),
            serde_json::json!({ "urls": ["not a url"] }),
        )
        .await;
    assert_eq!(bad.status(), 422);
    let bad = edge
        .purge(Some(EDGE_TOKEN), serde_json::json!({ "nope": 1 }))
        .await;
    assert_eq!(bad.status(), 400);
    let empty = edge.purge(Some(EDGE_TOKEN), serde_json::json!({})).await;
    assert_eq!(empty.status(), 422);

    // By URL (parameters in another order): only that object goes.
    let reordered = "/p/1?tag=product:1%20products&cc=public,max-age=600";
    let purged = edge
        .purge(
            Some(EDGE_TOKEN),
            serde_json::json!({ "urls": [format!("http://shop.example{reordered}")] }),
        )
        .await;
    assert_eq!(purged.status(), 200);
    assert_eq!(body(purged).await["purged"], 1);
    assert_eq!(x_cache(&edge.get(one).await), "MISS");
    assert_eq!(x_cache(&edge.get(two).await), "HIT");

    // By tag: every object carrying it.
    let purged = edge
        .purge(
            Some(EDGE_TOKEN),
            serde_json::json!({ "tags": ["products"] }),
        )
        .await;
    assert_eq!(body(purged).await["purged"], 2);
    assert_eq!(x_cache(&edge.get(one).await), "MISS");
    assert_eq!(x_cache(&edge.get(two).await), "MISS");
    assert_eq!(upstream.count(one), 3);
    assert!(
        edge.metric(
            "meridian_edge_cache_purged_objects_total",
            &[("source", "admin")]
        )
        .await
            >= 3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_update_on_the_origin_purges_the_edge() {
    let stack = TestStack::start(&[HOME], 1, 20).await;
    let origin = stack.origin(HOME).await;
    let origin_addr = origin.url.trim_start_matches("http://").parse().unwrap();
    let mut config = edge_config(HOME, vec![region(HOME, origin_addr, 0)]);
    let redis_url = stack.stack.region(HOME).expect("home").redis.url();
    config.redis_url = Some(redis_url.parse().unwrap());
    let edge = TestEdge::start(config).await;
    eventually(
        "purge listener subscribed",
        Duration::from_secs(5),
        || async {
            let ready = edge
                .client
                .get(format!("{}/readyz", edge.admin))
                .send()
                .await;
            ready.is_ok_and(|r| r.status() == 200)
                && edge
                    .client
                    .get(format!("{}/readyz", edge.admin))
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap()
                    .contains("\"purge_listener\":true")
        },
    )
    .await;

    let path = "/v1/products/7";
    assert_eq!(x_cache(&edge.get(path).await), "MISS");
    let cached = edge.get(path).await;
    assert_eq!(x_cache(&cached), "HIT");
    assert_eq!(cached.headers()["x-served-by-region"], HOME);

    let response = origin
        .put_product(
            7,
            &product_body("P0000007", "Renamed At The Edge", "books", 1234),
        )
        .await;
    assert_eq!(response.status(), 200);
    eventually(
        "the edge serves the new name",
        Duration::from_secs(5),
        || async {
            let response = edge.get(path).await;
            body(response).await["name"] == "Renamed At The Edge"
        },
    )
    .await;
    assert!(
        edge.metric(
            "meridian_edge_cache_purged_objects_total",
            &[("source", "redis")]
        )
        .await
            >= 1.0
    );
    origin.stop().await;
}
