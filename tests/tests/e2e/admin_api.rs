//! The admin product API as a careless or concurrent client uses it: what
//! `GET /v1/products/{id}` returns goes back through `PUT` unchanged
//! (read-only and derived fields ignored when they agree, refused when
//! they contradict), and a write based on a stale read — by `If-Match` or
//! by `version` — is a 412, never a lost update.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{HOME, TOKEN, TestOrigin, TestStack};

/// The product as `GET` shows it, after the write that returned `lsn`
/// (read-your-writes), with its ETag.
async fn read(origin: &TestOrigin, id: i64, lsn: Option<&str>) -> (Value, String) {
    let mut request = origin
        .client
        .get(format!("{}/v1/products/{id}", origin.url));
    if let Some(lsn) = lsn {
        request = request.header("x-meridian-lsn", lsn);
    }
    let response = request.send().await.expect("get");
    assert_eq!(response.status(), 200);
    let etag = response.headers()["etag"].to_str().unwrap().to_string();
    (response.json().await.unwrap(), etag)
}

async fn put(
    origin: &TestOrigin,
    id: i64,
    body: &Value,
    if_match: Option<&str>,
) -> reqwest::Response {
    let mut request = origin
        .client
        .put(format!("{}/v1/admin/products/{id}", origin.admin))
        .bearer_auth(TOKEN)
        .json(body);
    if let Some(tag) = if_match {
        request = request.header("if-match", tag);
    }
    request.send().await.expect("put")
}

/// The read-your-writes token a write answered with.
fn lsn_of(written: &reqwest::Response) -> String {
    written.headers()["x-meridian-lsn"]
        .to_str()
        .unwrap()
        .to_string()
}

/// A product with variants, so their shown prices travel too.
async fn product_with_variants(stack: &TestStack) -> i64 {
    let mut conn = stack.primary_conn().await;
    sqlx::query_scalar(
        "select product_id from product_variants group by product_id having count(*) >= 2 order by product_id limit 1",
    )
    .fetch_one(&mut conn)
    .await
    .expect("a product with variants")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_then_put_round_trips_and_stale_writes_are_refused() {
    let stack = TestStack::start(&[HOME], 1, 20).await;
    let origin = stack.origin(HOME).await;
    let id = product_with_variants(&stack).await;

    // GET → edit → PUT, everything the GET returned included.
    let (mut body, etag) = read(&origin, id, None).await;
    let version = body["version"].as_i64().unwrap();
    body["name"] = "Round Trip".into();
    let written = put(&origin, id, &body, Some(&etag)).await;
    assert_eq!(written.status(), 200);
    let lsn = lsn_of(&written);
    let (after, new_etag) = read(&origin, id, Some(&lsn)).await;
    assert_eq!(after["name"], "Round Trip");
    assert_eq!(after["version"], version + 1);
    // Nothing else moved: variants and their prices are as they were.
    assert_eq!(after["variants"], body["variants"]);
    assert_eq!(after["price"], body["price"]);

    // The same stale representation again: 412, by version and by ETag.
    let stale = put(&origin, id, &body, None).await;
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    let problem: Value = stale.json().await.unwrap();
    assert_eq!(problem["current_version"], version + 1, "{problem}");
    let mut fresh = after.clone();
    fresh["name"] = "By ETag".into();
    fresh.as_object_mut().unwrap().remove("version");
    assert_eq!(
        put(&origin, id, &fresh, Some(&etag)).await.status(),
        StatusCode::PRECONDITION_FAILED
    );
    let written = put(&origin, id, &fresh, Some(&new_etag)).await;
    assert_eq!(written.status(), 200);
    let lsn = lsn_of(&written);

    // Contradictions are refused with a problem naming the field.
    let (current, _) = read(&origin, id, Some(&lsn)).await;
    let mut cases: Vec<(&str, Value)> = Vec::new();
    let mut other_id = current.clone();
    other_id["id"] = (id + 1).into();
    cases.push(("id", other_id));
    let mut formatted = current.clone();
    formatted["price"]["formatted"] = "0.01".into();
    cases.push(("formatted", formatted));
    let mut variant_currency = current.clone();
    variant_currency["variants"][0]["price"]["currency"] = "JPY".into();
    variant_currency["variants"][0]["price"]["formatted"] = Value::Null;
    cases.push(("currency", variant_currency));
    for (field, body) in cases {
        let refused = put(&origin, id, &body, None).await;
        assert_eq!(refused.status(), 422, "{field}");
        let problem: Value = refused.json().await.unwrap();
        assert!(
            problem["detail"].as_str().unwrap().contains(field),
            "{field}: {problem}"
        );
    }

    // Two editors race from the same read: one wins, the other is told.
    let (base, etag) = read(&origin, id, Some(&lsn)).await;
    let edits = ["Editor A", "Editor B"].map(|name| {
        let mut body = base.clone();
        body["name"] = name.into();
        body
    });
    let (a, b) = tokio::join!(
        put(&origin, id, &edits[0], Some(&etag)),
        put(&origin, id, &edits[1], Some(&etag))
    );
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 412]);
}
