//! Flash sales against real Redis and PostgreSQL: far more claims than
//! units sell exactly the units, sold-out answers never reach PostgreSQL,
//! won units are bought through checkout at the sale price, and a Redis
//! that loses the sale is rebuilt from the ledger without selling more.

use std::time::Duration;

use futures::StreamExt;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::checkout::{Shopper, count, set_stock, shop_stack};
use crate::helpers::{HOME, TOKEN, TestOrigin, eventually};

async fn claim(origin: &TestOrigin, shopper: &Shopper<'_>, sale: i64) -> StatusCode {
    origin
        .client
        .post(format!("{}/v1/flash-sales/{sale}/claim", origin.url))
        .bearer_auth(&shopper.token)
        .send()
        .await
        .expect("claim")
        .status()
}

async fn report(origin: &TestOrigin, sale: i64) -> Value {
    origin
        .client
        .get(format!("{}/v1/admin/flash-sales/{sale}", origin.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("report")
        .json()
        .await
        .expect("report json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_claims_for_a_hundred_units_sell_exactly_a_hundred() {
    let stack = shop_stack(10).await;
    let origin = stack.origin(HOME).await;
    let sku = stack.sellable_skus(1).await[0].0.clone();
    set_stock(&origin, &sku, 100).await;
    let created = origin
        .client
        .post(format!("{}/v1/admin/flash-sales", origin.url))
        .bearer_auth(TOKEN)
        .json(&json!({ "sku": sku, "quantity": 100, "price_minor": 100, "hold": "10m" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let sale = created.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();

    // 4,000 shoppers, a thousand of whom try twice: 5,000 claims.
    let shoppers: Vec<Shopper> = (0..4000)
        .map(|i| Shopper::new(&origin, &format!("fan-{i}")))
        .collect();
    let attempts = shoppers.iter().chain(shoppers[..1000].iter());
    let statuses: Vec<StatusCode> =
        futures::stream::iter(attempts.map(|s| claim(&origin, s, sale)))
            .buffer_unordered(64)
            .collect()
            .await;
    assert_eq!(statuses.len(), 5000);
    let won = statuses
        .iter()
        .filter(|s| **s == StatusCode::ACCEPTED)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!((won, refused), (100, 4900));

    // The workers turn exactly the won claims into reservations.
    eventually(
        "all won claims reserved",
        Duration::from_secs(20),
        || async { report(&origin, sale).await["claims"]["reserved"] == 100 },
    )
    .await;
    let books = report(&origin, sale).await;
    assert_eq!(books["gate_remaining"], 0);
    assert_eq!(books["queued"], 0);
    assert_eq!(stack.stock(&sku).await, (100, 100, 0));

    // Sold out is answered by Redis alone.
    let primary_before = origin
        .metric(
            "meridian_db_queries_total",
            &[("pool", "primary"), ("purpose", "request")],
        )
        .await;
    for shopper in &shoppers[2000..2200] {
        assert_eq!(claim(&origin, shopper, sale).await, StatusCode::CONFLICT);
    }
    let primary_after = origin
        .metric(
            "meridian_db_queries_total",
            &[("pool", "primary"), ("purpose", "request")],
        )
        .await;
    assert_eq!(
        primary_after, primary_before,
        "sold-out claims touched PostgreSQL"
    );

    // A winner buys the unit at the sale price; a loser has nothing to buy.
    let mut winner = None;
    for shopper in &shoppers {
        let claims: Value = origin
            .client
            .get(format!("{}/v1/flash-sales/{sale}/claims", origin.url))
            .bearer_auth(&shopper.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if claims["claims"].as_array().is_some_and(|c| !c.is_empty()) {
            winner = Some(shopper);
            break;
        }
    }
    let winner = winner.expect("someone won");
    let bought = winner
        .checkout("flash-1", &json!({ "flash_sale": sale }))
        .await;
    let status = bought.status();
    let order: Value = bought.json().await.unwrap();
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["total"]["amount_minor"], 100);
    assert_eq!(stack.stock(&sku).await, (99, 99, 1));
    assert_eq!(count(&stack.psp("primary").ledger().await, "captured"), 1);
    let loser = Shopper::new(&origin, "never-claimed");
    let nothing = loser
        .checkout("flash-2", &json!({ "flash_sale": sale }))
        .await;
    assert_eq!(nothing.status(), 409);

    // Redis loses everything: the gate is rebuilt from the ledger, still
    // sold out, still knowing who won.
    let redis_port = stack.stack.region(HOME).unwrap().redis.port();
    let flushed = std::process::Command::new("redis-cli")
        .args(["-p", &redis_port.to_string(), "flushall"])
        .output()
        .expect("redis-cli");
    assert!(flushed.status.success());
    eventually("the gate is rebuilt", Duration::from_secs(10), || async {
        report(&origin, sale).await["gate_remaining"] == 0
    })
    .await;
    for shopper in &shoppers[..50] {
        assert_eq!(claim(&origin, shopper, sale).await, StatusCode::CONFLICT);
    }
    let books = report(&origin, sale).await;
    assert_eq!(
        books["claims"]["reserved"].as_i64().unwrap()
            + books["claims"]["purchased"].as_i64().unwrap(),
        100
    );
}
