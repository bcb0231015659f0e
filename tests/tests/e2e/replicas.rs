//! Read routing: replicas serve reads, lagging or dead replicas are
//! skipped, and read-your-writes holds while replay is paused.

use std::time::Duration;

use crate::helpers::{HOME, TestStack, eventually, product_body, product_name};

const REPLICA_1: &str = "us-east-replica-1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_served_by_a_replica() {
    let stack = TestStack::start(&[HOME], 1, 20).await;
    let origin = stack.origin(HOME).await;
    for id in 1..=5 {
        assert_eq!(
            origin.get(&format!("/v1/products/{id}")).await.status(),
            200
        );
    }
    assert_eq!(origin.get("/v1/products?limit=5").await.status(), 200);
    let replica_reads = origin
        .metric(
            "meridian_db_queries_total",
            &[
                ("pool", "replica"),
                ("server", REPLICA_1),
                ("purpose", "request"),
            ],
        )
        .await;
    let primary_reads = origin
        .metric(
            "meridian_db_queries_total",
            &[("pool", "primary"), ("purpose", "request")],
        )
        .await;
    assert!(replica_reads >= 6.0, "replica served {replica_reads} reads");
    assert_eq!(primary_reads, 0.0, "no request read went to the primary");

    // The replica itself sees the origin's replica pool connected.
    let mut conn = stack.replica_conn(0).await;
    let sessions: i64 =
        sqlx::query_scalar("select count(*) from pg_stat_activity where application_name = $1")
            .bind(format!("meridian-origin-{HOME}-{REPLICA_1}"))
            .fetch_one(&mut conn)
            .await
            .expect("pg_stat_activity");
    assert!(sessions >= 1, "no origin session on the replica");
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_replica_is_skipped_and_read_your_writes_holds() {
    let stack = TestStack::start(&[HOME], 1, 20).await;
    let origin = stack.origin(HOME).await;
    assert!(!product_name(&origin, "/v1/products/3").await.is_empty());

    let mut replica = stack.replica_conn(0).await;
    sqlx::query("select pg_wal_replay_pause()")
        .execute(&mut replica)
        .await
        .expect("pause replay");

    // A write while replay is paused: its token must be honoured.
    let response = origin
        .put_product(
            3,
            &product_body("P0000003", "Written While Paused", "shoes", 4200),
        )
        .await;
    assert_eq!(response.status(), 200);
    let token = response
        .headers()
        .get("x-meridian-lsn")
        .expect("write returns a token")
        .to_str()
        .expect("ascii")
        .to_string();
    let with_token = origin
        .client
        .get(format!("{}/v1/products/3", origin.url))
        .header("x-meridian-lsn", &token)
        .send()
        .await
        .expect("read with token");
    assert_eq!(with_token.status(), 200);
    assert_eq!(with_token.headers()["cache-control"], "private, no-store");
    let body: serde_json::Value = with_token.json().await.expect("json");
    assert_eq!(body["name"], "Written While Paused");

    // The paused replica falls behind the primary and is skipped.
    eventually(
        "replica marked unusable",
        Duration::from_secs(5),
        || async {
            origin
                .metric("meridian_replica_usable", &[("replica", REPLICA_1)])
                .await
                == 0.0
        },
    )
    .await;
    let before = origin
        .metric(
            "meridian_db_queries_total",
            &[("pool", "primary"), ("purpose", "request")],
        )
        .await;
    let list: serde_json::Value = origin
        .get("/v1/products?limit=5")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        list["items"][2]["name"], "Written While Paused",
        "read is fresh"
    );
    let after = origin
        .metric(
            "meridian_db_queries_total",
            &[("pool", "primary"), ("purpose", "request")],
        )
        .await;
    assert!(after > before, "the read went to the primary");

    // Resumed, the replica catches up and is used again.
    sqlx::query("select pg_wal_replay_resume()")
        .execute(&mut replica)
        .await
        .expect("resume replay");
    eventually("replica usable again", Duration::from_secs(5), || async {
        origin
            .metric("meridian_replica_usable", &[("replica", REPLICA_1)])
            .await
            == 1.0
    })
    .await;
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_replicas_fail_over_without_a_failed_request() {
    let mut stack = TestStack::start(&[HOME], 2, 50).await;
    let origin = stack.origin(HOME).await;
    // Uncached reads (listings) so every request reaches the database.
    let fire = |origin: &crate::helpers::TestOrigin| {
        let requests = (0..40).map(|i| {
            let client = origin.client.clone();
            let url = format!("{}/v1/products?limit={}", origin.url, 1 + i % 10);
            async move { client.get(url).send().await.map(|r| r.status().as_u16()) }
        });
        futures::future::join_all(requests)
    };
    let statuses = fire(&origin).await;
    assert!(
        statuses.iter().all(|s| matches!(s, Ok(200))),
        "{statuses:?}"
    );

    // Kill the first replica while requests are in flight.
    let in_flight = tokio::spawn({
        let client = origin.client.clone();
        let url = origin.url.clone();
        async move {
            let mut statuses = Vec::new();
            for i in 0..200 {
                let status = client
                    .get(format!("{url}/v1/products?limit={}", 1 + i % 10))
                    .send()
                    .await
                    .map(|r| r.status().as_u16());
                statuses.push(status);
            }
            statuses
        }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    stack.stack.region_mut(HOME).expect("home").replicas[0].kill();
    let statuses = in_flight.await.expect("requests");
    assert!(
        statuses.iter().all(|s| matches!(s, Ok(200))),
        "a request failed while a replica died: {:?}",
        statuses
            .iter()
            .filter(|s| !matches!(s, Ok(200)))
            .collect::<Vec<_>>()
    );
    let second = origin
        .metric(
            "meridian_db_queries_total",
            &[("server", "us-east-replica-2"), ("purpose", "request")],
        )
        .await;
    assert!(second > 0.0, "the other replica took over");

    // With both replicas dead, reads go to the primary, still without errors.
    stack.stack.region_mut(HOME).expect("home").replicas[1].kill();
    let statuses = fire(&origin).await;
    assert!(
        statuses.iter().all(|s| matches!(s, Ok(200))),
        "{statuses:?}"
    );
    let primary = origin
        .metric(
            "meridian_db_queries_total",
            &[("pool", "primary"), ("purpose", "request")],
        )
        .await;
    assert!(primary > 0.0, "the primary served as the last resort");
    origin.stop().await;
}
