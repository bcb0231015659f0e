//! Carts against a real Redis: guests get a signed cookie, signed-in
//! shoppers their token's cart; bounds hold under concurrency; a guest cart
//! merges into the user's exactly once; stale prices are shown, never
//! hidden; Redis down is a 503, never a lost or invented cart.

use reqwest::header::{COOKIE, SET_COOKIE};
use serde_json::{Value, json};

use crate::helpers::{HOME, TestOrigin, TestStack, product_body, shopper_token};

/// The `name=value` part of the response's guest cookie.
fn guest_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("meridian_guest="))
        .and_then(|v| v.split(';').next())
        .map(str::to_string)
}

fn cleared(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.starts_with("meridian_guest=;") && v.contains("Max-Age=0"))
}

struct Caller<'a> {
    origin: &'a TestOrigin,
    token: Option<String>,
    cookie: Option<String>,
}

impl Caller<'_> {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut request = self
            .origin
            .client
            .request(method, format!("{}{path}", self.origin.url));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(cookie) = &self.cookie {
            request = request.header(COOKIE, cookie);
        }
        request
    }

    async fn add(&self, sku: &str, quantity: i64) -> reqwest::Response {
        self.request(reqwest::Method::POST, "/v1/cart/items")
            .json(&json!({ "sku": sku, "quantity": quantity }))
            .send()
            .await
            .expect("add")
    }

    async fn cart(&self) -> Value {
        let response = self
            .request(reqwest::Method::GET, "/v1/cart")
            .send()
            .await
            .expect("cart");
        assert_eq!(response.status(), 200);
        response.json().await.expect("json")
    }
}

fn quantities(cart: &Value) -> Vec<(String, u64)> {
    cart["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            (
                i["sku"].as_str().expect("sku").to_string(),
                i["quantity"].as_u64().expect("quantity"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_and_user_carts_with_bounds_and_a_merge_that_happens_once() {
    let stack = TestStack::start(&[HOME], 1, 30).await;
    let mut config = stack.origin_config(HOME);
    config.carts.max_lines = 3;
    config.carts.max_quantity = 10;
    let origin = TestOrigin::start(config).await;
    let skus: Vec<String> = stack
        .sellable_skus(4)
        .await
        .into_iter()
        .map(|(s, _)| s)
        .collect();

    // A guest: the first write sets the signed cookie.
    let mut guest = Caller {
        origin: &origin,
        token: None,
        cookie: None,
    };
    assert_eq!(quantities(&guest.cart().await), vec![]);
    let response = guest.add(&skus[0], 2).await;
    assert_eq!(response.status(), 200);
    let cookie = guest_cookie(&response).expect("a guest cookie is set");
    guest.cookie = Some(cookie.clone());
    assert_eq!(guest.add(&skus[1], 1).await.status(), 200);
    assert_eq!(
        quantities(&guest.cart().await),
        vec![(skus[0].clone(), 2), (skus[1].clone(), 1)]
    );

    // A tampered cookie is refused and cleared; nothing is created.
    let tampered = Caller {
        origin: &origin,
        token: None,
        cookie: Some(format!("{cookie}0")),
    };
    let response = tampered.add(&skus[2], 1).await;
    assert_eq!(response.status(), 400);
    assert!(cleared(&response));

    // The user's own cart, with bounds.
    let user = Caller {
        origin: &origin,
        token: Some(shopper_token("cart-user-1", HOME)),
        cookie: None,
    };
    assert_eq!(user.add(&skus[0], 3).await.status(), 200);
    assert_eq!(user.add(&skus[0], 8).await.status(), 422, "3 + 8 > 10");
    for bad in [0, -1, 11, i64::MAX] {
        assert_eq!(
            user.add(&skus[2], bad).await.status(),
            422,
            "quantity {bad}"
        );
    }
    assert_eq!(user.add("NO-SUCH-SKU", 1).await.status(), 422);
    assert_eq!(quantities(&user.cart().await), vec![(skus[0].clone(), 3)]);

    // Concurrent adds from many tabs never pass the bound.
    let adds = (0..20).map(|_| user.add(&skus[3], 1));
    let statuses: Vec<u16> = futures::future::join_all(adds)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 10);
    assert_eq!(statuses.iter().filter(|s| **s == 422).count(), 10);
    let patch = user
        .request(
            reqwest::Method::PATCH,
            &format!("/v1/cart/items/{}", skus[3]),
        )
        .json(&json!({ "quantity": 1 }))
        .send()
        .await
        .expect("patch");
    assert_eq!(patch.status(), 200);

    // The merge: the guest cookie on a signed-in request, many at once.
    let merging = Caller {
        origin: &origin,
        token: user.token.clone(),
        cookie: Some(cookie.clone()),
    };
    let carts = futures::future::join_all(
        (0..10).map(|_| merging.request(reqwest::Method::GET, "/v1/cart").send()),
    )
    .await;
    for response in &carts {
        let response = response.as_ref().expect("merge request");
        assert_eq!(response.status(), 200);
        assert!(cleared(response), "the guest cookie is cleared");
    }
    // Same SKU: the higher quantity (user 3 > guest 2); a new SKU would
    // exceed max_lines = 3 (sku0, sku3 + sku1 fits), so sku1 comes over.
    assert_eq!(
        quantities(&user.cart().await),
        vec![
            (skus[0].clone(), 3),
            (skus[1].clone(), 1),
            (skus[3].clone(), 1)
        ]
    );
    assert_eq!(
        origin
            .metric(
                "meridian_cart_operations_total",
                &[("operation", "merge"), ("result", "ok")]
            )
            .await,
        1.0,
        "merged exactly once"
    );
    // The guest cart is gone; the old cookie now shows an empty cart.
    assert_eq!(quantities(&guest.cart().await), vec![]);

    // A fourth line does not fit; removing one frees room.
    assert_eq!(user.add(&skus[2], 1).await.status(), 422);
    let delete = |sku: String| {
        user.request(reqwest::Method::DELETE, &format!("/v1/cart/items/{sku}"))
            .send()
    };
    assert_eq!(delete(skus[1].clone()).await.unwrap().status(), 200);
    assert_eq!(delete(skus[1].clone()).await.unwrap().status(), 404);
    assert_eq!(user.add(&skus[2], 1).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carts_show_new_prices_refuse_bad_tokens_and_survive_nothing_silently() {
    let mut stack = TestStack::start(&[HOME], 1, 20).await;
    let origin = stack.origin(HOME).await;
    // A product without variants is sold under its own SKU.
    let mut conn = stack.primary_conn().await;
    let (id, sku): (i64, String) = sqlx::query_as(
        "select id, sku from products p where not exists
           (select 1 from product_variants v where v.product_id = p.id) order by id limit 1",
    )
    .fetch_one(&mut conn)
    .await
    .expect("a product without variants");
    let user = Caller {
        origin: &origin,
        token: Some(shopper_token("cart-user-2", HOME)),
        cookie: None,
    };
    assert_eq!(user.add(&sku, 2).await.status(), 200);
    let cart = user.cart().await;
    assert_eq!(cart["price_changed"], false);
    let old = cart["items"][0]["unit_price"]["amount_minor"]
        .as_i64()
        .unwrap();

    // The price changes: the cart shows the new one and says so.
    let mut body = product_body(&sku, "Repriced", "shoes", old + 1000);
    body["variants"] = json!([]);
    assert_eq!(origin.put_product(id, &body).await.status(), 200);
    crate::helpers::eventually(
        "the cart shows the new price",
        std::time::Duration::from_secs(5),
        || async {
            let cart = user.cart().await;
            cart["items"][0]["unit_price"]["amount_minor"] == json!(old + 1000)
        },
    )
    .await;
    let cart = user.cart().await;
    assert_eq!(cart["price_changed"], true);
    assert_eq!(cart["items"][0]["added_price"]["amount_minor"], json!(old));
    assert_eq!(cart["total"]["amount_minor"], json!((old + 1000) * 2));

    // Forged, expired and foreign-region tokens.
    let forged = Caller {
        origin: &origin,
        token: Some(format!("{}x", shopper_token("cart-user-2", HOME))),
        cookie: None,
    };
    let response = forged
        .request(reqwest::Method::GET, "/v1/cart")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let foreign = Caller {
        origin: &origin,
        token: Some(shopper_token("cart-user-2", "eu-west")),
        cookie: None,
    };
    let response = foreign
        .request(reqwest::Method::GET, "/v1/cart")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 421);

    // Redis down: a 503 with Retry-After, not an empty cart.
    stack.stack.region_mut(HOME).expect("home").redis.kill();
    let response = user
        .request(reqwest::Method::GET, "/v1/cart")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let response = user.add(&sku, 1).await;
    assert_eq!(response.status(), 503);
}
