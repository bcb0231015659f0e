//! Orders live in their user's shard: listing reads that shard only, an
//! order is found by its id alone, another user's order is a 404, the
//! database refuses illegal state changes, and a shard that is down fails
//! only its own users.

use serde_json::Value;

use crate::helpers::{HOME, TestOrigin, TestStack, shopper_token};

/// Inserts an order for `user` straight into `shard` (the checkout that
/// writes them comes through the same table).
async fn insert_order(stack: &TestStack, shard: &str, user: &str, state: &str) -> String {
    let id = format!("{shard}.{}", uuid_hex());
    let mut conn = stack.shard_conn(HOME, shard).await;
    sqlx::query(
        "insert into orders (id, user_id, idempotency_key, request_hash, state, currency, total_minor, lines)
         values ($1, $2, $3, 'h', $4, 'USD', 1998,
                 '[{\"sku\":\"P0000001\",\"name\":\"Thing\",\"quantity\":2,\"unit_price_minor\":999}]')",
    )
    .bind(&id)
    .bind(user)
    .bind(format!("key-{id}"))
    .bind(state)
    .execute(&mut conn)
    .await
    .expect("insert order");
    id
}

fn uuid_hex() -> String {
    format!("{:032x}", rand::random::<u128>())
}

async fn get(origin: &TestOrigin, path: &str, user: &str) -> reqwest::Response {
    origin
        .client
        .get(format!("{}{path}", origin.url))
        .bearer_auth(shopper_token(user, HOME))
        .send()
        .await
        .expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_are_read_from_their_shard_and_only_by_their_user() {
    let mut stack = TestStack::start(&[HOME], 1, 5).await;
    stack.start_order_shards(true).await;
    let origin = stack.origin(HOME).await;
    let alice = stack.user_in_shard(HOME, "us-east-0", "alice");
    let bob = stack.user_in_shard(HOME, "us-east-1", "bob");
    let mut alices = Vec::new();
    for _ in 0..3 {
        alices.push(insert_order(&stack, "us-east-0", &alice, "captured").await);
    }
    let bobs = insert_order(&stack, "us-east-1", &bob, "reserved").await;

    // Listing: newest first, paginated, only the caller's.
    let page: Value = get(&origin, "/v1/orders?limit=2", &alice)
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    let mut newest_first = alices.clone();
    newest_first.sort();
    newest_first.reverse();
    assert_eq!(ids, newest_first[..2]);
    let cursor = page["next_cursor"].as_str().expect("a next page");
    let rest: Value = get(
        &origin,
        &format!("/v1/orders?limit=2&cursor={cursor}"),
        &alice,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(rest["items"][0]["id"], newest_first[2].as_str());
    assert!(rest["next_cursor"].is_null());
    assert_eq!(page["items"][0]["total"]["amount_minor"], 1998);

    // By id: the owner sees it; anyone else gets the same 404 as for an
    // order that does not exist.
    let response = get(&origin, &format!("/v1/orders/{bobs}"), &bob).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "private, no-store");
    for (path, user) in [
        (format!("/v1/orders/{bobs}"), alice.as_str()),
        (format!("/v1/orders/{}", alices[0]), bob.as_str()),
        (
            "/v1/orders/us-east-9.0123456789abcdef0123456789abcdef".into(),
            bob.as_str(),
        ),
        ("/v1/orders/not-an-id".into(), bob.as_str()),
    ] {
        let response = get(&origin, &path, user).await;
        assert_eq!(response.status(), 404, "{path} as {user}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    // Guests and bad cursors.
    let guest = origin.get("/v1/orders").await;
    assert_eq!(guest.status(), 401);
    assert_eq!(
        get(&origin, "/v1/orders?cursor=zzz", &alice).await.status(),
        400
    );
    assert_eq!(
        get(&origin, "/v1/orders?limit=0", &alice).await.status(),
        400
    );

    // The database refuses an illegal transition whatever the code does.
    let mut conn = stack.shard_conn(HOME, "us-east-1").await;
    let illegal = sqlx::query("update orders set state = 'captured' where id = $1")
        .bind(&bobs)
        .execute(&mut conn)
        .await;
    assert!(illegal.is_err(), "reserved -> captured must be refused");
    let events: i64 = sqlx::query_scalar("select count(*) from order_outbox where order_id = $1")
        .bind(&bobs)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(events, 1, "the insert wrote one outbox event");
    // A saga step moves through several states in one statement; every hop
    // is checked, so one illegal hop refuses the whole step.
    let advance = "select order_advance($1, $2, $3, null, null, null, null, null, null, null)";
    let skipping = sqlx::query_scalar::<_, bool>(advance)
        .bind(&bobs)
        .bind("reserved")
        .bind(vec!["authorized", "fulfilled"])
        .fetch_one(&mut conn)
        .await;
    assert!(skipping.is_err(), "authorized -> fulfilled must be refused");
    // Announcing a path does not let a plain UPDATE skip states either.
    let announced = sqlx::query(
        "select set_config('meridian.advance_order', $1, false), set_config('meridian.advance_path', 'captured', false)",
    )
    .bind(&bobs)
    .execute(&mut conn)
    .await;
    assert!(announced.is_ok());
    let forged = sqlx::query("update orders set state = 'captured' where id = $1")
        .bind(&bobs)
        .execute(&mut conn)
        .await;
    assert!(forged.is_err(), "an announced illegal hop is still refused");
    sqlx::query("reset meridian.advance_order")
        .execute(&mut conn)
        .await
        .unwrap();
    // A legal step: one outbox event per state entered, in order.
    let moved: bool = sqlx::query_scalar(advance)
        .bind(&bobs)
        .bind("reserved")
        .bind(vec!["authorized", "confirmed"])
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(moved);
    let stale: bool = sqlx::query_scalar(advance)
        .bind(&bobs)
        .bind("reserved")
        .bind(vec!["cancelled"])
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(!stale, "a step from a state the order left changes nothing");
    let trail: Vec<(String, Option<String>)> = sqlx::query_as(
        "select payload->>'state', payload->>'previous_state' from order_outbox
         where order_id = $1 order by id",
    )
    .bind(&bobs)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let state = |s: &str| s.to_string();
    assert_eq!(
        trail[1..],
        [
            (state("authorized"), Some(state("reserved"))),
            (state("confirmed"), Some(state("authorized"))),
        ],
        "events of the step in order"
    );

    // Shard us-east-1 goes down: Bob gets 503 with Retry-After, Alice is
    // unaffected.
    let servers = stack
        .stack
        .region_mut(HOME)
        .unwrap()
        .orders
        .as_mut()
        .unwrap();
    let index = servers.shards["us-east-1"].server;
    servers.servers[index].stop();
    let response = get(&origin, "/v1/orders", &bob).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(get(&origin, "/v1/orders", &alice).await.status(), 200);
    assert_eq!(
        get(&origin, &format!("/v1/orders/{}", alices[1]), &alice)
            .await
            .status(),
        200
    );
}
