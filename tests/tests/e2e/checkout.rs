//! Checkout end to end against real PostgreSQL (catalog primary, order
//! shards), Redis and two payment-simulator processes: no oversell under
//! concurrency, one order and one charge per Idempotency-Key, fallback and
//! circuit breaking when a provider fails, prices re-validated.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{HOME, TOKEN, TestOrigin, TestStack, eventually, product_body, shopper_token};

/// A signed-in shopper of the home region.
pub struct Shopper<'a> {
    pub origin: &'a TestOrigin,
    pub token: String,
}

impl<'a> Shopper<'a> {
    pub fn new(origin: &'a TestOrigin, user: &str) -> Self {
        Shopper {
            origin,
            token: shopper_token(user, HOME),
        }
    }

    pub async fn add(&self, sku: &str, quantity: i64) {
        let response = self
            .origin
            .client
            .post(format!("{}/v1/cart/items", self.origin.url))
            .bearer_auth(&self.token)
            .json(&json!({ "sku": sku, "quantity": quantity }))
            .send()
            .await
            .expect("add to cart");
        assert_eq!(response.status(), 200, "add {sku}");
    }

    pub async fn checkout(&self, key: &str, body: &Value) -> reqwest::Response {
        self.origin
            .client
            .post(format!("{}/v1/checkout", self.origin.url))
            .bearer_auth(&self.token)
            .header("idempotency-key", key)
            .json(body)
            .send()
            .await
            .expect("checkout")
    }
}

/// A stack with order shards and both payment simulators.
pub async fn shop_stack(products: u64) -> TestStack {
    let mut stack = TestStack::start(&[HOME], 1, products).await;
    stack.start_order_shards(false).await;
    stack.start_psps().await;
    stack
}

pub async fn set_stock(origin: &TestOrigin, sku: &str, on_hand: i64) {
    let response = origin
        .client
        .put(format!("{}/v1/admin/inventory/{sku}", origin.admin))
        .bearer_auth(TOKEN)
        .json(&json!({ "on_hand": on_hand }))
        .send()
        .await
        .expect("set stock");
    assert_eq!(response.status(), 200);
}

/// Intents by status in a simulator's ledger.
pub fn count(ledger: &[Value], status: &str) -> usize {
    ledger.iter().filter(|i| i["status"] == status).count()
}

/// Orders by state across the home region's shards.
pub async fn orders_by_state(stack: &TestStack) -> Vec<(String, i64)> {
    let mut totals: std::collections::BTreeMap<String, i64> = Default::default();
    for shard in ["us-east-0", "us-east-1"] {
        let mut conn = stack.shard_conn(HOME, shard).await;
        let rows: Vec<(String, i64)> =
            sqlx::query_as("select state, count(*) from orders group by state")
                .fetch_all(&mut conn)
                .await
                .expect("orders");
        for (state, n) in rows {
            *totals.entry(state).or_default() += n;
        }
    }
    totals.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_buyers_for_seventeen_units_make_seventeen_orders() {
    let stack = shop_stack(10).await;
    let origin = stack.origin(HOME).await;
    let sku = stack.sellable_skus(1).await[0].0.clone();
    set_stock(&origin, &sku, 17).await;
    let shoppers: Vec<Shopper> = (0..300)
        .map(|i| Shopper::new(&origin, &format!("buyer-{i}")))
        .collect();
    futures::future::join_all(shoppers.iter().map(|s| s.add(&sku, 1))).await;

    let responses = futures::future::join_all(
        shoppers
            .iter()
            .enumerate()
            .map(|(i, s)| async move { s.checkout(&format!("key-{i}"), &json!({})).await }),
    )
    .await;
    let mut created = 0;
    let mut sold_out = 0;
    for response in responses {
        match response.status() {
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => {
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["type"], "https://meridian.dev/problems/out-of-stock");
                sold_out += 1;
            }
            other => panic!("unexpected {other}: {}", response.text().await.unwrap()),
        }
    }
    assert_eq!((created, sold_out), (17, 283));
    assert_eq!(
        stack.stock(&sku).await,
        (0, 0, 17),
        "stock 0, never negative"
    );
    let ledger = stack.psp("primary").ledger().await;
    assert_eq!(count(&ledger, "captured"), 17);
    assert_eq!(
        ledger.len(),
        17,
        "no payment attempted for a buyer without stock"
    );
    assert_eq!(
        orders_by_state(&stack).await,
        vec![("cancelled".into(), 283), ("captured".into(), 17)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_makes_one_order_and_one_charge() {
    let stack = shop_stack(10).await;
    stack
        .psp("primary")
        .faults(json!({ "latency_ms": 300 }))
        .await;
    let origin = stack.origin(HOME).await;
    let skus = stack.sellable_skus(2).await;
    let shopper = Shopper::new(&origin, "dup-user");
    shopper.add(&skus[0].0, 2).await;
    let body = json!({ "payment_method": "pm_card_visa" });

    // Twenty at once with one key: one order, the others wait for it.
    let responses =
        futures::future::join_all((0..20).map(|_| shopper.checkout("same-key", &body))).await;
    let mut bodies = Vec::new();
    for response in responses {
        assert_eq!(response.status(), 201);
        bodies.push(response.json::<Value>().await.unwrap());
    }
    assert!(
        bodies.iter().all(|b| b["id"] == bodies[0]["id"]),
        "one order"
    );
    assert_eq!(bodies[0]["state"], "captured");
    let ledger = stack.psp("primary").ledger().await;
    assert_eq!(ledger.len(), 1, "one charge: {ledger:?}");
    assert_eq!(
        ledger[0]["amount_minor"],
        json!(skus[0].1 * 2),
        "charged the cart's total"
    );

    // Sequential repeat: the same answer, replayed.
    let again = shopper.checkout("same-key", &body).await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let replayed: Value = again.json().await.unwrap();
    assert_eq!(replayed, bodies[0]);
    // Same key, another body: refused, nothing charged.
    let other = shopper
        .checkout("same-key", &json!({ "payment_method": "pm_other" }))
        .await;
    assert_eq!(other.status(), 422);
    assert_eq!(stack.psp("primary").ledger().await.len(), 1);
    assert_eq!(orders_by_state(&stack).await, vec![("captured".into(), 1)]);
    // The outbox holds one event per state the order entered, in order.
    let id = bodies[0]["id"].as_str().unwrap();
    let shard = id.split('.').next().unwrap();
    let mut conn = stack.shard_conn(HOME, shard).await;
    let events: Vec<String> =
        sqlx::query_scalar("select event from order_outbox where order_id = $1 order by id")
            .bind(id)
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        events,
        [
            "order.pending",
            "order.reserved",
            "order.authorized",
            "order.confirmed",
            "order.captured"
        ]
    );
    // The cart was emptied by the order; the order is the shopper's.
    let cart: Value = origin
        .client
        .get(format!("{}/v1/cart", origin.url))
        .bearer_auth(&shopper.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cart["items"], json!([]));
    let id = bodies[0]["id"].as_str().unwrap();
    let order = origin
        .client
        .get(format!("{}/v1/orders/{id}", origin.url))
        .bearer_auth(&shopper.token)
        .send()
        .await
        .unwrap();
    assert_eq!(order.status(), 200);

    // Bad requests change nothing.
    shopper.add(&skus[1].0, 1).await;
    let no_key = origin
        .client
        .post(format!("{}/v1/checkout", origin.url))
        .bearer_auth(&shopper.token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_key.status(), 400);
    assert_eq!(
        shopper
            .checkout(&"k".repeat(256), &json!({}))
            .await
            .status(),
        400
    );
    assert_eq!(
        shopper
            .checkout("bad-body", &json!({ "surprise": true }))
            .await
            .status(),
        422
    );
    let guest = origin
        .client
        .post(format!("{}/v1/checkout", origin.url))
        .header("idempotency-key", "guest")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(guest.status(), 401);
    let empty = Shopper::new(&origin, "empty-cart-user");
    assert_eq!(empty.checkout("e", &json!({})).await.status(), 422);
    assert_eq!(stack.psp("primary").ledger().await.len(), 1);
    assert_eq!(orders_by_state(&stack).await, vec![("captured".into(), 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_failures_fall_back_open_the_breaker_and_recover() {
    let stack = shop_stack(10).await;
    let mut config = stack.origin_config(HOME);
    let payments = config.payments.as_mut().unwrap();
    payments.request_timeout = Duration::from_millis(400);
    payments.breaker_failures = 3;
    payments.breaker_open_for = Duration::from_secs(2);
    payments.retries = 1;
    let origin = TestOrigin::start(config).await;
    let sku = stack.sellable_skus(1).await[0].0.clone();
    set_stock(&origin, &sku, 1000).await;
    let buy = |user: String, key: &'static str| {
        let origin = &origin;
        let sku = sku.clone();
        async move {
            let shopper = Shopper::new(origin, &user);
            shopper.add(&sku, 1).await;
            shopper.checkout(key, &json!({})).await
        }
    };
    let breaker = || async {
        origin
            .metric("meridian_psp_breaker_open", &[("psp", "primary")])
            .await
    };

    // The primary fails everything: the fallback takes the payments, and
    // after three failures the primary's breaker opens.
    stack
        .psp("primary")
        .faults(json!({ "error_rate": 1.0 }))
        .await;
    for i in 0..4 {
        let response = buy(format!("fb-{i}"), "k").await;
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    }
    assert_eq!(breaker().await, 1.0, "the primary's breaker is open");
    assert_eq!(count(&stack.psp("fallback").ledger().await, "captured"), 4);
    assert!(stack.psp("primary").ledger().await.is_empty());

    // The primary recovers; once the breaker lets a call through, it is
    // used again and the breaker closes.
    stack.psp("primary").faults(json!({})).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let response = buy("back-1".into(), "k").await;
    assert_eq!(response.status(), 201);
    assert_eq!(breaker().await, 0.0, "the breaker closed again");
    assert_eq!(count(&stack.psp("primary").ledger().await, "captured"), 1);

    // A timeout: the payment was made but the answer never came. It is
    // looked up by idempotency key, not charged again.
    stack
        .psp("primary")
        .faults(json!({ "timeout_rate": 1.0, "timeout_delay_ms": 3000 }))
        .await;
    let response = buy("timeout-1".into(), "k").await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    stack.psp("primary").faults(json!({})).await;
    let primary = stack.psp("primary").ledger().await;
    assert_eq!(
        primary.len(),
        2,
        "one authorization for the timed-out order"
    );
    assert_eq!(count(&primary, "captured"), 2);
    assert_eq!(count(&stack.psp("fallback").ledger().await, "captured"), 4);

    // A decline releases the stock and charges nothing.
    let before = stack.stock(&sku).await;
    let shopper = Shopper::new(&origin, "declined-1");
    shopper.add(&sku, 2).await;
    let declined = shopper
        .checkout("k", &json!({ "payment_method": "pm_card_declined" }))
        .await;
    assert_eq!(declined.status(), 402);
    assert_eq!(stack.stock(&sku).await, before);

    // Both providers down: nothing is charged, the stock comes back.
    let mut stack = stack;
    for psp in &mut stack.psp_processes {
        psp.stop();
    }
    let shopper = Shopper::new(&origin, "nobody-home");
    shopper.add(&sku, 1).await;
    let response = shopper.checkout("k", &json!({})).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    eventually("the hold is released", Duration::from_secs(5), || async {
        stack.stock(&sku).await == before
    })
    .await;
    let states = orders_by_state(&stack).await;
    assert_eq!(
        states,
        vec![
            ("cancelled".into(), 1),
            ("captured".into(), 6),
            ("payment_failed".into(), 1)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_price_is_shown_before_anyone_is_charged() {
    let stack = shop_stack(20).await;
    let origin = stack.origin(HOME).await;
    let mut conn = stack.primary_conn().await;
    let (id, sku, price): (i64, String, i64) = sqlx::query_as(
        "select id, sku, price_minor from products p where not exists
           (select 1 from product_variants v where v.product_id = p.id) order by id limit 1",
    )
    .fetch_one(&mut conn)
    .await
    .expect("a product without variants");
    let shopper = Shopper::new(&origin, "price-watcher");
    shopper.add(&sku, 1).await;
    let mut body = product_body(&sku, "Dearer", "shoes", price + 700);
    body["variants"] = json!([]);
    assert_eq!(origin.put_product(id, &body).await.status(), 200);

    let response = shopper.checkout("first", &json!({})).await;
    assert_eq!(response.status(), 409);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(
        problem["type"],
        "https://meridian.dev/problems/price-changed"
    );
    assert_eq!(
        problem["cart"]["items"][0]["unit_price"]["amount_minor"],
        json!(price + 700)
    );
    assert!(stack.psp("primary").ledger().await.is_empty());

    // An expected total that is not the cart's is refused too.
    let wrong = shopper
        .checkout(
            "second",
            &json!({ "expected_total": { "amount_minor": price, "currency": "USD" } }),
        )
        .await;
    assert_eq!(wrong.status(), 409);
    // Seen: the new price goes through and is what is charged.
    let ok = shopper
        .checkout(
            "third",
            &json!({ "expected_total": { "amount_minor": price + 700, "currency": "USD" } }),
        )
        .await;
    assert_eq!(ok.status(), 201);
    let ledger = stack.psp("primary").ledger().await;
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0]["amount_minor"], json!(price + 700));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_outage_stops_only_its_own_users() {
    let mut stack = TestStack::start(&[HOME], 1, 10).await;
    stack.start_order_shards(true).await;
    stack.start_psps().await;
    let origin = stack.origin(HOME).await;
    let sku = stack.sellable_skus(1).await[0].0.clone();
    set_stock(&origin, &sku, 100).await;
    let alice = Shopper::new(&origin, &stack.user_in_shard(HOME, "us-east-0", "alice"));
    let bob = Shopper::new(&origin, &stack.user_in_shard(HOME, "us-east-1", "bob"));
    alice.add(&sku, 1).await;
    bob.add(&sku, 1).await;

    let servers = stack
        .stack
        .region_mut(HOME)
        .unwrap()
        .orders
        .as_mut()
        .unwrap();
    let index = servers.shards["us-east-1"].server;
    servers.servers[index].stop();

    let response = bob.checkout("k1", &json!({})).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let response = alice.checkout("k1", &json!({})).await;
    assert_eq!(response.status(), 201);
    // Bob's failed attempt took no stock and no payment.
    assert_eq!(stack.stock(&sku).await, (99, 0, 1));
    assert_eq!(stack.psp("primary").ledger().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_write_requests_get_problem_json_and_change_nothing() {
    let stack = shop_stack(10).await;
    let origin = stack.origin(HOME).await;
    let sku = stack.sellable_skus(1).await[0].0.clone();
    let shopper = Shopper::new(&origin, "careful-user");
    shopper.add(&sku, 1).await;
    let url = |path: &str| format!("{}{path}", origin.url);
    let token = shopper.token.clone();
    let huge = format!(
        r#"{{"sku":"{sku}","quantity":1,"pad":"{}"}}"#,
        "x".repeat(70_000)
    );
    let cases: Vec<(&str, reqwest::RequestBuilder, u16)> = vec![
        (
            "malformed JSON",
            origin
                .client
                .post(url("/v1/cart/items"))
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body("{\"sku\":"),
            400,
        ),
        (
            "no content type",
            origin
                .client
                .post(url("/v1/cart/items"))
                .bearer_auth(&token)
                .body("{}"),
            415,
        ),
        (
            "oversized body",
            origin
                .client
                .post(url("/v1/cart/items"))
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(huge),
            413,
        ),
        (
            "quantity beyond i64",
            origin
                .client
                .post(url("/v1/cart/items"))
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(format!(
                    r#"{{"sku":"{sku}","quantity":99999999999999999999999}}"#
                )),
            422,
        ),
        (
            "bad SKU in path",
            origin
                .client
                .patch(url("/v1/cart/items/not%20a%20sku"))
                .bearer_auth(&token)
                .json(&json!({ "quantity": 1 })),
            400,
        ),
        (
            "expired token",
            origin.client.get(url("/v1/cart")).bearer_auth(
                meridian_contracts::shopper_token::TokenSigner::hs256(crate::helpers::JWT_SECRET)
                    .unwrap()
                    .mint(
                        "careful-user",
                        HOME,
                        Duration::from_secs(1),
                        std::time::SystemTime::now() - Duration::from_secs(3600),
                    )
                    .unwrap(),
            ),
            401,
        ),
        (
            "not a bearer token",
            origin
                .client
                .get(url("/v1/cart"))
                .header("authorization", "Basic dTpw"),
            401,
        ),
        (
            "control characters in the key",
            origin
                .client
                .post(url("/v1/checkout"))
                .bearer_auth(&token)
                .header("idempotency-key", "a b")
                .json(&json!({})),
            400,
        ),
        (
            "checkout body not an object",
            origin
                .client
                .post(url("/v1/checkout"))
                .bearer_auth(&token)
                .header("idempotency-key", "k-array")
                .json(&json!([1, 2])),
            422,
        ),
        (
            "bad payment method",
            origin
                .client
                .post(url("/v1/checkout"))
                .bearer_auth(&token)
                .header("idempotency-key", "k-pm")
                .json(&json!({ "payment_method": "../x" })),
            422,
        ),
        (
            "unknown flash sale",
            origin
                .client
                .post(url("/v1/flash-sales/999999/claim"))
                .bearer_auth(&token),
            404,
        ),
        (
            "flash sale id not a number",
            origin
                .client
                .post(url("/v1/flash-sales/abc/claim"))
                .bearer_auth(&token),
            400,
        ),
        (
            "guest claim",
            origin.client.post(url("/v1/flash-sales/1/claim")),
            401,
        ),
        (
            "flash sale without a token",
            origin
                .client
                .post(format!("{}/v1/admin/flash-sales", origin.admin))
                .json(&json!({ "sku": sku, "quantity": 1 })),
            401,
        ),
        (
            "flash sale of zero units",
            origin
                .client
                .post(format!("{}/v1/admin/flash-sales", origin.admin))
                .bearer_auth(TOKEN)
                .json(&json!({ "sku": sku, "quantity": 0 })),
            422,
        ),
    ];
    for (name, request, status) in cases {
        let response = request.send().await.expect(name);
        assert_eq!(response.status().as_u16(), status, "{name}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{name}"
        );
    }
    // Nothing changed: the cart holds its one line, no order, no charge.
    let cart: Value = origin
        .client
        .get(url("/v1/cart"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cart["item_count"], 1);
    assert!(orders_by_state(&stack).await.is_empty());
    assert!(stack.psp("primary").ledger().await.is_empty());
}

/// Issue 13: a provider that times out while a request under the key may
/// still land there (its look-up finds nothing yet) leaves the outcome
/// unknown: the fallback provider is never asked to take the payment; the
/// recovery worker settles the order, and a retry with the same key gets
/// that one settlement. At most one charge, never at two providers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_that_may_still_land_is_never_taken_by_the_fallback() {
    let stack = shop_stack(10).await;
    let mut config = stack.origin_config(HOME);
    let payments = config.payments.as_mut().unwrap();
    payments.request_timeout = Duration::from_millis(300);
    payments.retries = 0;
    config.checkout.recover_after = Duration::from_millis(2500);
    config.checkout.recovery_interval = Duration::from_millis(100);
    config.checkout.duplicate_wait = Duration::from_millis(200);
    let origin = TestOrigin::start(config).await;
    let sku = stack.sellable_skus(1).await[0].0.clone();
    set_stock(&origin, &sku, 10).await;
    // The primary takes 1.5 s to authorize: far past the origin's 300 ms.
    stack
        .psp("primary")
        .faults(json!({ "latency_ms": 1500 }))
        .await;
    let shopper = Shopper::new(&origin, "in-flight");
    shopper.add(&sku, 1).await;
    let first = shopper.checkout("k-in-flight", &json!({})).await;
    assert_eq!(first.status(), 503, "{}", first.text().await.unwrap());
    assert!(
        stack.psp("fallback").ledger().await.is_empty(),
        "the fallback was never asked"
    );
    stack.psp("primary").faults(json!({})).await;

    // The recovery worker settles it; the same key then replays that.
    let settled = std::sync::atomic::AtomicU16::new(0);
    eventually("the order is settled", Duration::from_secs(20), || async {
        let again = shopper.checkout("k-in-flight", &json!({})).await;
        let status = again.status().as_u16();
        let replayed = again.headers().contains_key("idempotent-replayed");
        settled.store(status, std::sync::atomic::Ordering::Relaxed);
        replayed && (status == 201 || status == 503)
    })
    .await;
    let settled = settled.into_inner();
    let primary = stack.psp("primary").ledger().await;
    assert!(stack.psp("fallback").ledger().await.is_empty());
    assert!(count(&primary, "captured") <= 1, "{primary:?}");
    match settled {
        // The delayed authorization landed: captured there, once.
        201 => assert_eq!(count(&primary, "captured"), 1, "{primary:?}"),
        // It never landed: cancelled, nothing charged, stock back.
        _ => {
            assert_eq!(count(&primary, "captured"), 0, "{primary:?}");
            assert_eq!(stack.stock(&sku).await.1, 0);
        }
    }
}
