//! Routing and failover: the own region first; when its origins stop, the
//! next-nearest healthy region by the latency table answers, at once for
//! new requests and within 2 s for health checks; back home on recovery.

use std::time::{Duration, Instant};

use super::super::helpers::eventually;
use super::upstream::TestUpstream;
use super::{TestEdge, edge_config, region};

fn served_by(response: &reqwest::Response) -> String {
    response.headers()["x-served-by-region"]
        .to_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_region_fails_over_to_the_next_nearest() {
    let mut home = TestUpstream::start("eu-west").await;
    let near = TestUpstream::start("us-east").await;
    let far = TestUpstream::start("ap-southeast").await;
    let edge = TestEdge::start(edge_config(
        "eu-west",
        vec![
            region("ap-southeast", far.addr, 160),
            region("eu-west", home.addr, 0),
            region("us-east", near.addr, 80),
        ],
    ))
    .await;
    // Uncached requests (no Cache-Control), so every one goes upstream.
    assert_eq!(served_by(&edge.get("/any").await), "eu-west");

    home.stop().await;
    let stopped = Instant::now();
    let response = edge.get("/any").await;
    assert_eq!(
        response.status(),
        200,
        "no failed request during the outage"
    );
    assert_eq!(served_by(&response), "us-east");
    let first_answer = stopped.elapsed();
    assert!(
        first_answer < Duration::from_secs(2),
        "answered after {first_answer:?}"
    );
    for _ in 0..20 {
        let response = edge.get("/any").await;
        assert_eq!(response.status(), 200);
        assert_eq!(served_by(&response), "us-east");
    }
    eventually(
        "health checks mark eu-west down",
        Duration::from_secs(2),
        || async {
            edge.metric(
                "meridian_edge_origin_healthy",
                &[("upstream_region", "eu-west")],
            )
            .await
                == 0.0
        },
    )
    .await;
    assert!(
        edge.metric("meridian_edge_failovers_total", &[("to", "us-east")])
            .await
            >= 1.0
    );
    assert_eq!(far.total(), 0, "the far region was never needed");

    home.restart().await;
    eventually("traffic returns home", Duration::from_secs(3), || async {
        served_by(&edge.get("/any").await) == "eu-west"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_reachable_origin_is_a_clean_502_problem() {
    let mut only = TestUpstream::start("local").await;
    let edge = TestEdge::start(edge_config("local", vec![region("local", only.addr, 0)])).await;
    only.stop().await;
    let response = edge.get("/any").await;
    assert_eq!(response.status(), 502);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert!(response.headers().contains_key("retry-after"));
}
