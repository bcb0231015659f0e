//! What degraded mode changes at the edge, against a plain HTTP upstream:
//! cached responses stay servable long past the windows the origin gave
//! (at once while revalidating, and when the origin fails), where a normal
//! edge keeps to the origin's own. The mode comes from the edge's state
//! file, as after a restart with no origin able to confirm it.

use std::time::Duration;

use serde_json::json;

use super::upstream::TestUpstream;
use super::{TestEdge, body, edge_config, region, x_cache};

async fn edge(upstream: &TestUpstream, state: Option<&std::path::Path>) -> TestEdge {
    let mut config = edge_config("us-east", vec![region("us-east", upstream.addr, 0)]);
    config.modes.state_path = state.map(std::path::Path::to_path_buf);
    TestEdge::start(config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degraded_edges_serve_stale_far_longer_than_the_origin_allowed() {
    let mut upstream = TestUpstream::start("us-east").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("modes.json");
    std::fs::write(
        &state,
        json!({
            "mode": "degraded",
            "features": { "recommendations": false, "search-suggestions": false,
                          "reviews": false, "checkout-queueing": true },
            "changed_at_ms": 1,
            "source": "poll",
        })
        .to_string(),
    )
    .expect("state file");
    let normal = edge(&upstream, None).await;
    let degraded = edge(&upstream, Some(&state)).await;
    let modes: serde_json::Value = degraded
        .client
        .get(format!("{}/readyz", degraded.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(modes["modes"]["mode"], "degraded");
    assert_eq!(modes["modes"]["source"], "state_file");

    // No stale-while-revalidate, no stale-if-error from the origin.
    let path = "/plain?cc=public,max-age=1";
    let first = degraded.get(path).await;
    assert_eq!(x_cache(&first), "MISS");
    let first = body(first).await["count"].clone();
    assert_eq!(x_cache(&normal.get(path).await), "MISS");
    tokio::time::sleep(Duration::from_millis(2100)).await;

    // Expired: the degraded edge answers the stale copy at once and
    // refreshes it behind; the normal one goes to the origin first.
    let stale = degraded.get(path).await;
    assert_eq!(x_cache(&stale), "STALE");
    assert_eq!(body(stale).await["count"], first, "the copy it had");
    let fetched = normal.get(path).await;
    assert_ne!(x_cache(&fetched), "STALE");
    assert!(
        body(fetched).await["count"].as_u64().unwrap() >= 3,
        "fetched anew"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;

    // The origin fails: the degraded edge keeps serving what it has.
    upstream.set_failing(true);
    let kept = degraded.get(path).await;
    assert_eq!(kept.status(), 200);
    assert_eq!(x_cache(&kept), "STALE");
    assert_eq!(normal.get(path).await.status(), 503);
    upstream.set_failing(false);
    upstream.stop().await;
    let kept = degraded.get(path).await;
    assert_eq!(kept.status(), 200);
    assert_eq!(x_cache(&kept), "STALE");
    assert_eq!(normal.get(path).await.status(), 502);

    // Its state cannot be confirmed (the upstream has no mode API): stale.
    assert_eq!(degraded.metric("meridian_edge_modes_stale", &[]).await, 1.0);
    assert_eq!(
        degraded
            .metric("meridian_edge_mode", &[("mode", "degraded")])
            .await,
        1.0
    );
}
