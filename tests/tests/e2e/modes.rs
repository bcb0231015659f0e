//! Operating modes through the origin's admin API, on a real primary: who
//! may change them, what a change records, how a region's effective
//! setting follows the global default and its own override, and how fast
//! a change reaches running origins in every region (through each
//! region's replica).

use std::time::{Duration, Instant};

use meridian_origin::config::{AdminScope, AdminToken};
use serde_json::{Value, json};

use crate::helpers::{HOME, TOKEN, TestOrigin, TestStack};

const OPS_TOKEN: &str = "ops-bob-token-0123456789abcdef";
const PURGE_TOKEN: &str = "purge-only-token-0123456789";

async fn put(
    origin: &TestOrigin,
    token: Option<&str>,
    region: &str,
    body: Value,
) -> reqwest::Response {
    let mut request = origin
        .client
        .put(format!("{}/v1/admin/modes/{region}", origin.admin))
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("put")
}

async fn get(origin: &TestOrigin, path: &str) -> Value {
    let response = origin
        .client
        .get(format!("{}{path}", origin.admin))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_changes_are_authorized_recorded_and_inherited() {
    let stack = TestStack::start(&[HOME], 1, 5).await;
    let mut config = stack.origin_config(HOME);
    config.modes.regions.push("eu-west".into());
    config.admin_tokens.push(AdminToken {
        name: "ops-bob".into(),
        token: OPS_TOKEN.parse().unwrap(),
        scopes: vec![AdminScope::Ops],
    });
    config.admin_tokens.push(AdminToken {
        name: "cdn-purger".into(),
        token: PURGE_TOKEN.parse().unwrap(),
        scopes: vec![AdminScope::Purge],
    });
    let origin = TestOrigin::start(config).await;

    // Everyone starts normal, every non-essential feature on.
    let all = get(&origin, "/v1/admin/modes").await;
    assert_eq!(all["global"]["mode"], "normal");
    assert_eq!(all["effective"][HOME]["mode"], "normal");
    assert_eq!(all["effective"][HOME]["features"]["recommendations"], true);
    assert_eq!(
        all["effective"][HOME]["features"]["checkout-queueing"],
        false
    );

    // No token, a wrong token: refused, nothing changes.
    let change = json!({ "mode": "degraded", "reason": "black friday" });
    assert_eq!(put(&origin, None, HOME, change.clone()).await.status(), 401);
    assert_eq!(
        put(
            &origin,
            Some("wrong-token-0123456789"),
            HOME,
            change.clone()
        )
        .await
        .status(),
        403
    );
    // A token without the `ops` scope (a purge token) changes no mode,
    // and an ops token changes no product: 403 insufficient-scope.
    let refused = put(&origin, Some(PURGE_TOKEN), HOME, change.clone()).await;
    assert_eq!(refused.status(), 403);
    let problem: Value = refused.json().await.expect("problem");
    assert_eq!(problem["required_scope"], "ops", "{problem}");
    let product = origin
        .client
        .put(format!("{}/v1/admin/products/1", origin.admin))
        .bearer_auth(OPS_TOKEN)
        .json(&crate::helpers::product_body(
            "P0000001",
            "Renamed by ops",
            "shoes",
            100,
        ))
        .send()
        .await
        .expect("put product");
    assert_eq!(product.status(), 403);
    let history = get(&origin, "/v1/admin/modes/history").await;
    assert_eq!(history["changes"], json!([]));

    // Bad changes: clear 4xx, nothing recorded.
    for (region, body, status) in [
        (HOME, json!({ "mode": "sleepy", "reason": "x" }), 422),
        (
            HOME,
            json!({ "features": { "teleport": false }, "reason": "x" }),
            422,
        ),
        (HOME, json!({ "mode": "degraded" }), 422),
        (HOME, json!({ "mode": "degraded", "reason": "  " }), 422),
        (
            HOME,
            json!({ "mode": "degraded", "reason": "x".repeat(501) }),
            422,
        ),
        (HOME, json!({ "reason": "nothing" }), 422),
        (
            HOME,
            json!({ "mode": "degraded", "reason": "x", "extra": 1 }),
            422,
        ),
        ("global", json!({ "mode": null, "reason": "x" }), 422),
        (
            "mars-north",
            json!({ "mode": "degraded", "reason": "x" }),
            404,
        ),
        ("US_EAST", json!({ "mode": "degraded", "reason": "x" }), 404),
    ] {
        let response = put(&origin, Some(TOKEN), region, body.clone()).await;
        assert_eq!(response.status(), status, "{region} {body}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    assert_eq!(
        get(&origin, "/v1/admin/modes/history").await["changes"],
        json!([])
    );

    // A region degraded by ops-bob: its mode's defaults apply.
    let response = put(&origin, Some(OPS_TOKEN), HOME, change).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["before"], json!({ "features": {} }));
    assert_eq!(body["after"]["mode"], "degraded");
    let east = &body["effective"][HOME];
    assert_eq!(east["mode"], "degraded");
    assert_eq!(east["features"]["recommendations"], false);
    assert_eq!(east["features"]["checkout-queueing"], true);

    // A global switch reaches every region; an explicit region switch wins.
    let response = put(
        &origin,
        Some(TOKEN),
        "global",
        json!({ "features": { "reviews": false }, "reason": "reviews db migration" }),
    )
    .await;
    assert_eq!(response.status(), 200);
    let response = put(
        &origin,
        Some(TOKEN),
        HOME,
        json!({ "features": { "recommendations": true }, "reason": "recs are cheap today" }),
    )
    .await;
    assert_eq!(response.status(), 200);
    let all = get(&origin, "/v1/admin/modes").await;
    assert_eq!(all["effective"]["eu-west"]["mode"], "normal");
    assert_eq!(all["effective"]["eu-west"]["features"]["reviews"], false);
    assert_eq!(all["effective"][HOME]["features"]["reviews"], false);
    assert_eq!(all["effective"][HOME]["features"]["recommendations"], true);

    // Back to inherited: the region follows the global default again.
    let response = put(
        &origin,
        Some(TOKEN),
        HOME,
        json!({ "mode": null, "features": { "recommendations": null }, "reason": "over" }),
    )
    .await;
    assert_eq!(response.status(), 200);
    let east = get(&origin, &format!("/v1/admin/modes/{HOME}")).await;
    assert_eq!(east["setting"], json!({ "features": {} }));
    assert_eq!(east["effective"]["mode"], "normal");

    // The audit log: who, what, why, newest first; paged; per region.
    let history = get(&origin, "/v1/admin/modes/history").await;
    let changes = history["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 4);
    let first = &changes[3];
    assert_eq!(first["actor"], "ops-bob");
    assert_eq!(first["scope"], HOME);
    assert_eq!(first["old_mode"], Value::Null);
    assert_eq!(first["new_mode"], "degraded");
    assert_eq!(first["reason"], "black friday");
    assert_eq!(changes[2]["scope"], "global");
    assert_eq!(changes[2]["actor"], "local-admin");
    assert_eq!(changes[0]["old_mode"], "degraded");
    assert_eq!(changes[0]["new_mode"], Value::Null);
    let page = get(&origin, "/v1/admin/modes/history?limit=2").await;
    assert_eq!(page["changes"].as_array().unwrap().len(), 2);
    let before = page["next_before"].as_i64().unwrap();
    let rest = get(&origin, &format!("/v1/admin/modes/history?before={before}")).await;
    assert_eq!(rest["changes"].as_array().unwrap().len(), 2);
    let global = get(&origin, "/v1/admin/modes/history?region=global").await;
    assert_eq!(global["changes"].as_array().unwrap().len(), 1);

    // Every change logged the `modes` invalidation key (the way it reaches
    // other regions), and the audit log cannot be rewritten.
    let mut conn = stack.primary_conn().await;
    let logged: i64 =
        sqlx::query_scalar("select count(*) from catalog_invalidations where 'modes' = any(keys)")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(logged, 4);
    for statement in [
        "update mode_changes set reason = 'nothing happened'",
        "delete from mode_changes",
        "truncate mode_changes",
    ] {
        assert!(
            sqlx::query(statement).execute(&mut conn).await.is_err(),
            "{statement} must be refused"
        );
    }
}

/// The mode as an origin's `/readyz` reports it.
async fn applied(origin: &TestOrigin) -> Value {
    let body: Value = origin
        .internal("/readyz")
        .await
        .json()
        .await
        .expect("readyz");
    body["modes"].clone()
}

/// Polls `origin` until it applies `mode`; how long that took.
async fn until_applied(origin: &TestOrigin, mode: &str, since: Instant) -> Duration {
    loop {
        if applied(origin).await["mode"] == mode {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "{} never applied {mode}",
            origin.url
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mode_change_reaches_origins_in_every_region_and_survives_restarts() {
    let stack = TestStack::start(&[HOME, "eu-west"], 1, 5).await;
    let east = stack.origin(HOME).await;
    let west = stack.origin("eu-west").await;
    let west_two = stack.origin("eu-west").await;
    for origin in [&east, &west, &west_two] {
        let modes = applied(origin).await;
        assert_eq!(modes["mode"], "normal");
        assert_eq!(modes["stale"], false);
    }

    // A global change through the home region's origin reaches every
    // origin of both regions through their own replicas.
    let started = Instant::now();
    let response = put(
        &east,
        Some(TOKEN),
        "global",
        json!({ "mode": "degraded", "reason": "propagation test" }),
    )
    .await;
    assert_eq!(response.status(), 200);
    for origin in [&east, &west, &west_two] {
        let took = until_applied(origin, "degraded", started).await;
        println!("{} applied the change after {took:?}", origin.url);
        assert!(took < Duration::from_secs(2), "took {took:?}");
    }
    let modes = applied(&west).await;
    assert_eq!(modes["features"]["recommendations"], false);
    assert_eq!(modes["features"]["checkout-queueing"], true);

    // A region's own override reaches only that region.
    let response = put(
        &east,
        Some(TOKEN),
        "eu-west",
        json!({ "mode": "read-only", "reason": "eu-west primary failover drill" }),
    )
    .await;
    assert_eq!(response.status(), 200);
    let started = Instant::now();
    until_applied(&west, "read-only", started).await;
    until_applied(&west_two, "read-only", started).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(applied(&east).await["mode"], "degraded");

    // Metrics say what each process applies.
    let metrics = west
        .internal("/metrics")
        .await
        .text()
        .await
        .expect("metrics");
    let has = |metrics: &str, line: &str| metrics.lines().any(|l| l == line);
    assert!(
        metrics.contains(r#"meridian_build_info{component="origin",region="eu-west","#),
        "{metrics}"
    );
    assert!(
        has(&metrics, r#"meridian_mode{mode="read-only"} 1"#),
        "{metrics}"
    );
    assert!(has(&metrics, "meridian_modes_stale 0"));
    assert!(metrics.contains("meridian_mode_propagation_seconds_count"));

    // A restarted origin starts from the stored state.
    drop(west_two);
    let restarted = stack.origin("eu-west").await;
    until_applied(&restarted, "read-only", Instant::now()).await;

    // A table it cannot read: the last known mode stays in force, and the
    // origin says so (readyz, metric) until it can read again.
    let mut conn = stack.primary_conn().await;
    sqlx::query("alter table mode_settings rename to mode_settings_away")
        .execute(&mut conn)
        .await
        .unwrap();
    let since = Instant::now();
    loop {
        let modes = applied(&restarted).await;
        if modes["stale"] == true {
            assert_eq!(modes["mode"], "read-only", "the last known mode stays");
            break;
        }
        assert!(
            since.elapsed() < Duration::from_secs(15),
            "never went stale"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = restarted.internal("/metrics").await.text().await.unwrap();
    assert!(has(&metrics, "meridian_modes_stale 1"), "{metrics}");
    sqlx::query("alter table mode_settings_away rename to mode_settings")
        .execute(&mut conn)
        .await
        .unwrap();
    let since = Instant::now();
    while applied(&restarted).await["stale"] != false {
        assert!(since.elapsed() < Duration::from_secs(15), "never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
