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
        .get(format!("{}/v1/admin/flash-sales/{sale}", origin.admin))
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
        .post(format!("{}/v1/admin/flash-sales", origin.admin))
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
    let redis = &stack.stack.region(HOME).unwrap().redis;
    let flushed = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port().to_string(), "-a", redis.password()])
        .args(["--no-auth-warning", "flushall"])
        .output()
        .expect("redis-cli");
    assert_eq!(
        String::from_utf8_lossy(&flushed.stdout).trim(),
        "OK",
        "{flushed:?}"
    );
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

async fn open_sale(origin: &TestOrigin, sku: &str, body: Value) -> i64 {
    let mut body = body;
    body["sku"] = json!(sku);
    let created = origin
        .client
        .post(format!("{}/v1/admin/flash-sales", origin.admin))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    created.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap()
}

/// The attack from issue 13: one won unit, five checkouts with five
/// different Idempotency-Keys, all at once. One order buys it; the other
/// four get 409 naming that order; the provider charges once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_won_unit_is_bought_by_one_order_whatever_the_keys() {
    let stack = shop_stack(10).await;
    let origin = stack.origin(HOME).await;
    let sku = stack.sellable_skus(1).await[0].0.clone();
    set_stock(&origin, &sku, 1).await;
    let sale = open_sale(&origin, &sku, json!({ "quantity": 1, "price_minor": 700 })).await;
    let buyer = Shopper::new(&origin, "lucky");
    assert_eq!(claim(&origin, &buyer, sale).await, StatusCode::ACCEPTED);
    eventually(
        "the won unit is reserved",
        Duration::from_secs(20),
        || async { report(&origin, sale).await["claims"]["reserved"] == 1 },
    )
    .await;

    let body = json!({ "flash_sale": sale });
    let attempts = (0..5).map(|i| {
        let (buyer, body) = (&buyer, &body);
        async move {
            let response = buyer.checkout(&format!("retry-{i}"), body).await;
            let status = response.status();
            (i, status, response.json::<Value>().await.unwrap())
        }
    });
    let answers = futures::future::join_all(attempts).await;
    let bought: Vec<_> = answers.iter().filter(|(_, s, _)| *s == 201).collect();
    assert_eq!(bought.len(), 1, "{answers:?}");
    let (first_key, _, first) = bought[0];
    let first_id = first["id"].as_str().unwrap();
    for (_, status, answer) in answers.iter().filter(|(_, s, _)| *s != 201) {
        assert_eq!(*status, 409, "{answer}");
        assert_eq!(
            answer["type"].as_str().unwrap().rsplit('/').next(),
            Some("unit-already-ordered"),
            "{answer}"
        );
        assert_eq!(answer["first_order_id"], first_id, "{answer}");
    }
    // One charge, one unit sold, one order captured.
    let ledger = stack.psp("primary").ledger().await;
    assert_eq!(count(&ledger, "captured"), 1, "{ledger:?}");
    assert_eq!(
        ledger.len(),
        1,
        "only one payment was even attempted: {ledger:?}"
    );
    assert!(stack.psp("fallback").ledger().await.is_empty());
    assert_eq!(stack.stock(&sku).await, (0, 0, 1));
    let states = crate::checkout::orders_by_state(&stack).await;
    assert!(states.contains(&("captured".to_string(), 1)), "{states:?}");
    assert!(states.contains(&("cancelled".to_string(), 4)), "{states:?}");

    // Retries: the winning key replays the order; a refused key replays
    // its refusal; a sixth key is refused too.
    let again = buyer.checkout(&format!("retry-{first_key}"), &body).await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.json::<Value>().await.unwrap()["id"], first_id);
    let loser_key = answers.iter().find(|(_, s, _)| *s == 409).unwrap().0;
    let replayed = buyer.checkout(&format!("retry-{loser_key}"), &body).await;
    assert_eq!(replayed.status(), 409);
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    let sixth = buyer.checkout("retry-6", &body).await;
    assert_eq!(sixth.status(), 409);
    assert_eq!(count(&stack.psp("primary").ledger().await, "captured"), 1);
}

/// Sales end: the gate refuses claims past `ends_at` (410), the workers
/// record every claim won before the end and close the sale, an admin can
/// close one early, and the books reconcile — gate, ledger, inventory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sales_end_on_time_close_early_on_demand_and_their_books_reconcile() {
    let stack = shop_stack(10).await;
    let origin = stack.origin(HOME).await;
    let skus = stack.sellable_skus(2).await;
    let (sku, other) = (skus[0].0.clone(), skus[1].0.clone());
    set_stock(&origin, &sku, 10).await;
    set_stock(&origin, &other, 10).await;

    let sale = open_sale(&origin, &sku, json!({ "quantity": 5, "duration": "2s" })).await;
    let fans: Vec<Shopper> = (0..3)
        .map(|i| Shopper::new(&origin, &format!("early-{i}")))
        .collect();
    // Other spellings of the id are not the sale (the edge's waiting room
    // uses the same parser).
    for spelling in [format!("+{sale}"), format!("0{sale}"), format!("{sale}%20")] {
        let refused = origin
            .client
            .post(format!("{}/v1/flash-sales/{spelling}/claim", origin.url))
            .bearer_auth(&fans[0].token)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 400, "{spelling}");
    }
    for fan in &fans {
        assert_eq!(claim(&origin, fan, sale).await, StatusCode::ACCEPTED);
    }
    eventually(
        "the sale closes at its end",
        Duration::from_secs(20),
        || async { report(&origin, sale).await["state"] == "closed" },
    )
    .await;
    let late = Shopper::new(&origin, "late");
    let refused = origin
        .client
        .post(format!("{}/v1/flash-sales/{sale}/claim", origin.url))
        .bearer_auth(&late.token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 410);
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let books = report(&origin, sale).await;
    assert_eq!(books["claims"]["reserved"], 3, "{books}");
    assert_eq!(books["gate_remaining"], 2, "{books}");
    assert_eq!(books["queued"], 0, "{books}");
    assert!(books["closed_at"].is_string(), "{books}");
    // Inventory holds exactly the recorded claims.
    assert_eq!(stack.stock(&sku).await, (10, 3, 0));
    // A winner can still buy the unit held for them.
    let bought = fans[0]
        .checkout("after-end", &json!({ "flash_sale": sale }))
        .await;
    assert_eq!(bought.status(), 201);
    assert_eq!(stack.stock(&sku).await, (9, 2, 1));

    // An admin closes a sale early: claims stop at once, the books close.
    let early = open_sale(&origin, &other, json!({ "quantity": 5, "duration": "1h" })).await;
    assert_eq!(claim(&origin, &fans[0], early).await, StatusCode::ACCEPTED);
    let closing = origin
        .client
        .post(format!(
            "{}/v1/admin/flash-sales/{early}/close",
            origin.admin
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(closing.status(), 200);
    assert_eq!(claim(&origin, &fans[1], early).await, StatusCode::GONE);
    eventually(
        "the closed sale's books close",
        Duration::from_secs(20),
        || async { report(&origin, early).await["state"] == "closed" },
    )
    .await;
    let books = report(&origin, early).await;
    assert_eq!(books["claims"]["reserved"], 1, "{books}");
    assert_eq!(books["queued"], 0, "{books}");
    assert_eq!(stack.stock(&other).await, (10, 1, 0));
    // Without a token, no close; an unknown sale is a 404.
    let anonymous = origin
        .client
        .post(format!(
            "{}/v1/admin/flash-sales/{early}/close",
            origin.admin
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let unknown = origin
        .client
        .post(format!(
            "{}/v1/admin/flash-sales/999999/close",
            origin.admin
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}

/// Origins by role, as the chart runs them: claims won on an origin that
/// runs no background workers wait in the sale's stream; an origin of the
/// workers role reports them as its queue depth (what its autoscaler
/// scales on) and drains them into reservations; its admin API is off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_won_on_the_api_role_are_drained_by_the_workers_role_which_reports_the_queue() {
    let stack = shop_stack(10).await;
    let mut api_config = stack.origin_config(HOME);
    api_config.background_workers = false;
    let api = TestOrigin::start(api_config).await;
    let sku = stack.sellable_skus(1).await[0].0.clone();
    set_stock(&api, &sku, 40).await;
    let sale = open_sale(
        &api,
        &sku,
        json!({ "quantity": 40, "price_minor": 100, "hold": "10m" }),
    )
    .await;
    let shoppers: Vec<Shopper> = (0..40)
        .map(|i| Shopper::new(&api, &format!("role-{i}")))
        .collect();
    for shopper in &shoppers {
        assert_eq!(claim(&api, shopper, sale).await, StatusCode::ACCEPTED);
    }
    let books = report(&api, sale).await;
    assert_eq!(
        books["claims"]["reserved"].as_i64().unwrap_or(0),
        0,
        "{books}"
    );
    assert_eq!(books["queued"], 40, "{books}");

    let mut workers_config = stack.origin_config(HOME);
    workers_config.admin_api = false;
    let workers = TestOrigin::start(workers_config).await;
    let depth = || async {
        workers
            .metric("meridian_queue_depth", &[("queue", "flash_claims")])
            .await
    };
    eventually(
        "the workers role reports the backlog",
        Duration::from_secs(10),
        || async { depth().await > 0.0 },
    )
    .await;
    assert!(depth().await <= 40.0);
    eventually(
        "the workers role drains the claims",
        Duration::from_secs(20),
        || async { report(&api, sale).await["claims"]["reserved"] == 40 },
    )
    .await;
    eventually(
        "the queue depth falls back to 0",
        Duration::from_secs(10),
        || async { depth().await == 0.0 },
    )
    .await;
    assert_eq!(stack.stock(&sku).await, (40, 40, 0));
    let admin = workers
        .client
        .get(format!("{}/v1/admin/flash-sales/{sale}", workers.admin))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 404, "the workers role serves no admin API");
}
