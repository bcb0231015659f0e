//! Inventory against a real PostgreSQL primary: concurrent reservations
//! never take more than the stock, retries never take it twice, expired
//! holds are swept back, and the admin API guards what is promised.

use std::time::Duration;

use meridian_origin::db::DbRouter;
use meridian_origin::inventory::{
    Inventory, InventoryError, Line, ReservationState, ReserveRequest,
};
use meridian_origin::metrics::Metrics;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::helpers::{HOME, TOKEN, TestStack, eventually};

/// An inventory queue of its own on the stack's primary (what every origin
/// runs), with `max_batch`.
fn inventory(stack: &TestStack, max_batch: usize) -> (Inventory, DbRouter, CancellationToken) {
    let config = stack.origin_config(HOME);
    let metrics = Metrics::new(HOME).expect("metrics");
    let db = DbRouter::new(&config.database, HOME, metrics.clone()).expect("db");
    let shutdown = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let inventory = Inventory::start(db.clone(), metrics, max_batch, shutdown.clone(), &mut tasks);
    tasks.detach_all();
    (inventory, db, shutdown)
}

/// One unit held for the order named `owner`.
fn one(sku: &str, owner: String, ttl: Duration) -> ReserveRequest {
    ReserveRequest::new(
        owner.clone(),
        [Line {
            sku: sku.to_string(),
            quantity: 1,
        }],
        ttl,
    )
    .expect("request")
    .for_order(owner)
}

async fn set_stock(stack: &TestStack, sku: &str, on_hand: i32) {
    let mut conn = stack.primary_conn().await;
    sqlx::query("update inventory set on_hand = $2 where sku = $1")
        .bind(sku)
        .bind(on_hand)
        .execute(&mut conn)
        .await
        .expect("set stock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_buyers_for_seventeen_units_get_exactly_seventeen() {
    let stack = TestStack::start(&[HOME], 1, 10).await;
    let skus = stack.sellable_skus(2).await;
    let (sku, other) = (&skus[0].0, &skus[1].0);
    set_stock(&stack, sku, 17).await;
    let (inventory, _db, stop) = inventory(&stack, 64);

    let attempts = (0..300).map(|i| {
        let inventory = inventory.clone();
        let request = one(sku, format!("buyer-{i}"), Duration::from_secs(600));
        tokio::spawn(async move { inventory.reserve(request).await })
    });
    let results = futures::future::join_all(attempts).await;
    let mut held = Vec::new();
    let mut short = 0;
    for result in results {
        match result.expect("task") {
            Ok(reservation) => held.push(reservation),
            Err(InventoryError::Insufficient { available, .. }) => {
                assert_eq!(available, 0);
                short += 1;
            }
            Err(other) => panic!("unexpected: {other}"),
        }
    }
    assert_eq!(held.len(), 17);
    assert_eq!(short, 283);
    assert_eq!(stack.stock(sku).await, (17, 17, 0));

    // A multi-line request is all or nothing: the hot SKU is gone, so the
    // other SKU is not held either.
    let before = stack.stock(other).await;
    let both = ReserveRequest::new(
        "both",
        [
            Line {
                sku: sku.clone(),
                quantity: 1,
            },
            Line {
                sku: other.clone(),
                quantity: 1,
            },
        ],
        Duration::from_secs(600),
    )
    .unwrap();
    assert!(matches!(
        inventory.reserve(both).await,
        Err(InventoryError::Insufficient { .. })
    ));
    assert_eq!(stack.stock(other).await, before);

    // Commits sell, concurrently and idempotently.
    let commits = held.iter().flat_map(|r| {
        let (id, owner) = (r.id, r.owner.clone());
        [inventory.clone(), inventory.clone()].map(|inventory| {
            let owner = owner.clone();
            tokio::spawn(async move { inventory.commit(id, &owner).await })
        })
    });
    for result in futures::future::join_all(commits).await {
        assert_eq!(result.unwrap().unwrap(), ReservationState::Committed);
    }
    assert_eq!(stack.stock(sku).await, (0, 0, 17));
    // A committed reservation cannot be released.
    assert!(matches!(
        inventory.release(held[0].id, None).await,
        Err(InventoryError::WrongState { .. })
    ));
    assert!(matches!(
        inventory.commit(i64::MAX, "nobody").await,
        Err(InventoryError::UnknownReservation(_))
    ));
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_replay_releases_return_stock_and_expired_holds_are_swept() {
    let stack = TestStack::start(&[HOME], 1, 10).await;
    let skus = stack.sellable_skus(1).await;
    let sku = &skus[0].0;
    set_stock(&stack, sku, 5).await;
    let (inventory, _db, stop) = inventory(&stack, 16);

    // Twenty concurrent retries of one owner hold one unit.
    let retries = (0..20).map(|_| {
        let inventory = inventory.clone();
        let request = one(sku, "checkout:u1:key-1".into(), Duration::from_secs(600));
        tokio::spawn(async move { inventory.reserve(request).await })
    });
    let reservations: Vec<_> = futures::future::join_all(retries)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();
    assert!(reservations.iter().all(|r| r.id == reservations[0].id));
    assert_eq!(reservations.iter().filter(|r| !r.replayed).count(), 1);
    assert_eq!(stack.stock(sku).await, (5, 1, 0));

    // Release gives the unit back, once.
    let id = reservations[0].id;
    assert_eq!(
        inventory.release(id, None).await.unwrap(),
        ReservationState::Released
    );
    assert_eq!(
        inventory.release(id, None).await.unwrap(),
        ReservationState::Released
    );
    assert_eq!(stack.stock(sku).await, (5, 0, 0));
    // A released hold is not committed behind the shopper's back.
    assert!(matches!(
        inventory.commit(id, "checkout:u1:key-1").await,
        Err(InventoryError::WrongState { .. })
    ));

    // Short holds lapse and the origin's sweeper returns them.
    let origin = stack.origin(HOME).await;
    let mut short = Vec::new();
    for i in 0..3 {
        let request = one(sku, format!("short-{i}"), Duration::from_millis(300));
        short.push(inventory.reserve(request).await.unwrap());
    }
    assert_eq!(stack.stock(sku).await, (5, 3, 0));
    eventually("expired holds swept", Duration::from_secs(10), || async {
        stack.stock(sku).await == (5, 0, 0)
    })
    .await;
    assert!(
        origin
            .metric("meridian_reservations_total", &[("event", "expired")])
            .await
            >= 3.0
    );
    // A lapsed hold whose units are still free can still be committed (a
    // slow payment), taking them again.
    assert_eq!(
        inventory
            .commit(short[0].id, &short[0].owner)
            .await
            .unwrap(),
        ReservationState::Committed
    );
    assert_eq!(stack.stock(sku).await, (4, 0, 1));
    stop.cancel();
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn availability_and_the_admin_stock_api() {
    let stack = TestStack::start(&[HOME], 1, 10).await;
    let origin = stack.origin(HOME).await;
    let skus = stack.sellable_skus(1).await;
    let sku = &skus[0].0;
    let put = |body: serde_json::Value, token: Option<&'static str>| {
        let mut request = origin
            .client
            .put(format!("{}/v1/admin/inventory/{sku}", origin.admin))
            .json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let response = put(json!({ "on_hand": 7 }), Some(TOKEN)).await.unwrap();
    assert_eq!(response.status(), 200);
    let lsn = response.headers()["x-meridian-lsn"].clone();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["available"], 7);
    eventually(
        "the replica shows the new stock",
        Duration::from_secs(5),
        || async {
            let body: serde_json::Value = origin
                .client
                .get(format!("{}/v1/inventory/{sku}", origin.url))
                .header("x-meridian-lsn", lsn.clone())
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            body["available"] == 7 && body["in_stock"] == true
        },
    )
    .await;

    // Units held by a reservation are promised: on_hand cannot go below.
    let (inventory, _db, stop) = inventory(&stack, 8);
    let request = ReserveRequest::new(
        "held-3",
        [Line {
            sku: sku.clone(),
            quantity: 3,
        }],
        Duration::from_secs(600),
    )
    .unwrap();
    inventory.reserve(request).await.unwrap();
    assert_eq!(
        put(json!({ "on_hand": 2 }), Some(TOKEN))
            .await
            .unwrap()
            .status(),
        409
    );
    assert_eq!(
        put(json!({ "on_hand": 3 }), Some(TOKEN))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(stack.stock(sku).await, (3, 3, 0));

    // Refused, and nothing changes.
    assert_eq!(
        put(json!({ "on_hand": 9 }), None).await.unwrap().status(),
        401
    );
    assert_eq!(
        put(json!({ "on_hand": 9 }), Some("wrong-token-0123456789"))
            .await
            .unwrap()
            .status(),
        403
    );
    for bad in [
        json!({ "on_hand": -1 }),
        json!({ "on_hand": 1e12 }),
        json!({}),
    ] {
        let status = put(bad.clone(), Some(TOKEN)).await.unwrap().status();
        assert_eq!(status, 422, "{bad}");
    }
    assert_eq!(stack.stock(sku).await, (3, 3, 0));
    let unknown = origin
        .client
        .put(format!("{}/v1/admin/inventory/NO-SUCH-SKU", origin.admin))
        .bearer_auth(TOKEN)
        .json(&json!({ "on_hand": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(origin.get("/v1/inventory/NO-SUCH-SKU").await.status(), 404);
    assert_eq!(origin.get("/v1/inventory/bad%20sku").await.status(), 400);
    stop.cancel();
}
