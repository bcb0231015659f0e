//! Bad input of every kind gets a 4xx RFC 9457 problem, never a 500 or a
//! panic, and never changes data.

use crate::helpers::{HOME, TOKEN, TestStack, product_body};

struct Case {
    name: &'static str,
    method: &'static str,
    path: String,
    token: Option<&'static str>,
    content_type: Option<&'static str>,
    body: Option<String>,
    headers: Vec<(&'static str, &'static str)>,
    status: u16,
}

fn get(name: &'static str, path: &str, status: u16) -> Case {
    Case {
        name,
        method: "GET",
        path: path.to_string(),
        token: None,
        content_type: None,
        body: None,
        headers: Vec::new(),
        status,
    }
}

fn admin(name: &'static str, method: &'static str, path: &str, body: String, status: u16) -> Case {
    Case {
        name,
        method,
        path: path.to_string(),
        token: Some(TOKEN),
        content_type: Some("application/json"),
        body: Some(body),
        headers: Vec::new(),
        status,
    }
}

fn with_price(amount: &str) -> String {
    format!(
        r#"{{"sku":"NEW-1","name":"N","brand":"B","category":"shoes","price":{{"amount_minor":{amount},"currency":"USD"}}}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_problem_json_4xx() {
    let stack = TestStack::start(&[HOME], 1, 10).await;
    let origin = stack.origin(HOME).await;
    let valid = product_body("NEW-1", "Fine", "shoes", 100).to_string();
    let existing_sku = product_body("P0000002", "Dup", "shoes", 100).to_string();
    let mut cases = vec![
        get("non-numeric id", "/v1/products/abc", 400),
        get("zero id", "/v1/products/0", 400),
        get("negative id", "/v1/products/-4", 400),
        get(
            "overflowing id",
            "/v1/products/99999999999999999999999",
            400,
        ),
        get("missing product", "/v1/products/424242", 404),
        get("limit zero", "/v1/products?limit=0", 400),
        get("limit too big", "/v1/products?limit=5000", 400),
        get("limit not a number", "/v1/products?limit=ten", 400),
        get("garbage cursor", "/v1/products?cursor=%21%21%21", 400),
        get("forged cursor", "/v1/products?cursor=djE6LTE", 400),
        get(
            "bad category slug",
            "/v1/products?category=Shoes%20Now",
            400,
        ),
        get(
            "unknown category",
            "/v1/products?category=no-such-thing",
            404,
        ),
        get("unknown currency", "/v1/products/1?currency=XYZ", 400),
        get("lowercase currency", "/v1/products/1?currency=eur", 400),
        get("unknown route", "/v1/nothing/here", 404),
        Case {
            headers: vec![("x-meridian-lsn", "not-an-lsn")],
            ..get("bad read token", "/v1/products/1", 400)
        },
        // A token from beyond the primary's WAL position came from no
        // write: refused, not sent past every cache to the primary.
        Case {
            headers: vec![("x-meridian-lsn", "FFFFFFFF/FFFFFFFF")],
            ..get("read token from the future", "/v1/products/1", 400)
        },
        Case {
            headers: vec![("x-meridian-lsn", "FFFFFFFF/FFFFFFFF")],
            ..get("listing token from the future", "/v1/products?limit=2", 400)
        },
        // Ids have one spelling.
        get("signed product id", "/v1/products/+1", 400),
        get("zero-padded product id", "/v1/products/01", 400),
        get("zero product id", "/v1/products/0", 400),
        Case {
            method: "DELETE",
            ..get("wrong method", "/v1/products/1", 405)
        },
        Case {
            token: None,
            ..admin("no token", "POST", "/v1/admin/products", valid.clone(), 401)
        },
        Case {
            token: Some("wrong-token-wrong-token"),
            ..admin(
                "wrong token",
                "POST",
                "/v1/admin/products",
                valid.clone(),
                403,
            )
        },
        admin(
            "malformed json",
            "POST",
            "/v1/admin/products",
            "{\"sku\": ".into(),
            400,
        ),
        admin(
            "not an object",
            "POST",
            "/v1/admin/products",
            "[1,2]".into(),
            422,
        ),
        admin(
            "unknown field",
            "POST",
            "/v1/admin/products",
            valid.replace("\"brand\"", "\"colour\":\"x\",\"brand\""),
            422,
        ),
        admin(
            "negative price",
            "POST",
            "/v1/admin/products",
            with_price("-1"),
            422,
        ),
        admin(
            "price above maximum",
            "POST",
            "/v1/admin/products",
            with_price("1000000000001"),
            422,
        ),
        admin(
            "overflowing price",
            "POST",
            "/v1/admin/products",
            with_price("99999999999999999999999"),
            422,
        ),
        admin(
            "fractional price",
            "POST",
            "/v1/admin/products",
            with_price("19.99"),
            422,
        ),
        admin(
            "unknown currency",
            "POST",
            "/v1/admin/products",
            valid.replace("\"USD\"", "\"ZZZ\""),
            422,
        ),
        admin(
            "unknown category",
            "POST",
            "/v1/admin/products",
            valid.replace("\"shoes\"", "\"no-such-category\""),
            422,
        ),
        admin(
            "bad sku",
            "POST",
            "/v1/admin/products",
            valid.replace("\"NEW-1\"", "\"lower case\""),
            422,
        ),
        admin(
            "empty name",
            "POST",
            "/v1/admin/products",
            valid.replace("\"Fine\"", "\"  \""),
            422,
        ),
        admin(
            "duplicate sku",
            "POST",
            "/v1/admin/products",
            existing_sku,
            409,
        ),
        admin(
            "update missing product",
            "PUT",
            "/v1/admin/products/777777",
            valid.clone(),
            404,
        ),
        admin(
            "update bad id",
            "PUT",
            "/v1/admin/products/x1",
            valid.clone(),
            400,
        ),
        admin(
            "oversized body",
            "POST",
            "/v1/admin/products",
            valid.replace("made by a test", &"x".repeat(200_000)),
            413,
        ),
        Case {
            content_type: Some("text/plain"),
            ..admin(
                "wrong content type",
                "POST",
                "/v1/admin/products",
                valid.clone(),
                415,
            )
        },
    ];
    let mut failures = Vec::new();
    for case in cases.drain(..) {
        let method = reqwest::Method::from_bytes(case.method.as_bytes()).expect("method");
        // Admin routes live on the internal listener.
        let base = if case.path.starts_with("/v1/admin") {
            &origin.admin
        } else {
            &origin.url
        };
        let mut request = origin
            .client
            .request(method, format!("{base}{}", case.path));
        if let Some(token) = case.token {
            request = request.bearer_auth(token);
        }
        if let Some(content_type) = case.content_type {
            request = request.header("content-type", content_type);
        }
        for (name, value) in &case.headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = case.body {
            request = request.body(body);
        }
        // The origin may answer before reading the body (413 from the
        // declared length, a refused token) and close; a client still
        // writing it may see a broken pipe instead of the answer (HTTP/1.1
        // allows this). Try again then: the expected status must be what
        // comes back.
        let mut attempts = 0;
        let response = loop {
            let attempt = request.try_clone().expect("clonable request");
            match attempt.send().await {
                Err(error) if error.is_request() && attempts < 5 => {
                    attempts += 1;
                }
                other => break other.expect("request sent"),
            }
        };
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if status != case.status
            || content_type != "application/problem+json"
            || body["status"] != case.status
            || !body["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("https://"))
            || !body["detail"].is_string()
        {
            failures.push(format!(
                "{}: got {status} {content_type} {body}, want {}",
                case.name, case.status
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The public listener serves shopper routes only: the admin API,
    // metrics and readiness are on the internal listener, which in turn
    // serves no shopper route.
    for (method, path) in [
        (reqwest::Method::GET, "/metrics"),
        (reqwest::Method::GET, "/readyz"),
        (reqwest::Method::GET, "/v1/admin/modes"),
        (reqwest::Method::PUT, "/v1/admin/products/1"),
        (reqwest::Method::POST, "/v1/admin/flash-sales"),
    ] {
        let response = origin
            .client
            .request(method.clone(), format!("{}{path}", origin.url))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({}))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 404, "public {method} {path}");
    }
    assert_eq!(origin.internal("/v1/products/1").await.status(), 404);
    assert_eq!(origin.internal("/readyz").await.status(), 200);
    assert_eq!(origin.get("/healthz").await.status(), 200);

    // Nothing was written by any of those requests.
    let mut primary = stack.primary_conn().await;
    let count: i64 = sqlx::query_scalar("select count(*) from products")
        .fetch_one(&mut primary)
        .await
        .expect("count");
    assert_eq!(count, 10);
    // And the server is still serving.
    assert_eq!(origin.get("/v1/products/1").await.status(), 200);
    assert_eq!(
        origin
            .metric("meridian_http_requests_total", &[("status_class", "5xx")])
            .await,
        0.0
    );
    origin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_and_currency_reads() {
    let stack = TestStack::start(&[HOME], 1, 10).await;
    let origin = stack.origin(HOME).await;
    let first = origin.get("/v1/products/2").await;
    assert_eq!(first.status(), 200);
    let etag = first.headers()["etag"].to_str().expect("etag").to_string();
    let surrogate = first.headers()["surrogate-key"]
        .to_str()
        .expect("keys")
        .to_string();
    assert!(surrogate.starts_with("product:2 category:"), "{surrogate}");
    assert_eq!(first.headers()["x-served-by-region"], HOME);
    let cache_control = first.headers()["cache-control"]
        .to_str()
        .expect("cc")
        .to_string();
    for part in [
        "public",
        "s-maxage=",
        "stale-while-revalidate=",
        "stale-if-error=",
    ] {
        assert!(cache_control.contains(part), "{cache_control}");
    }
    let body: serde_json::Value = first.json().await.expect("json");
    let usd = body["price"]["amount_minor"].as_i64().expect("price");

    let revalidated = origin
        .client
        .get(format!("{}/v1/products/2", origin.url))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("request");
    assert_eq!(revalidated.status(), 304);
    assert_eq!(revalidated.headers()["etag"], etag.as_str());

    for (currency, per_usd, exponent) in [("JPY", 151.5, 0), ("IQD", 1310.0, 3), ("EUR", 0.92, 2)] {
        let converted: serde_json::Value = origin
            .get(&format!("/v1/products/2?currency={currency}"))
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(converted["price"]["currency"], currency);
        let expected = (usd as f64 / 100.0 * per_usd * 10f64.powi(exponent)).round() as i64;
        assert_eq!(converted["price"]["amount_minor"], expected, "{currency}");
        let formatted = converted["price"]["formatted"].as_str().expect("formatted");
        let digits = formatted.split('.').nth(1).map_or(0, str::len);
        assert_eq!(digits, exponent as usize, "{currency}: {formatted}");
    }
    origin.stop().await;
}
