//! The origin's metrics contract on a running origin: the build and process
//! series, no constant labels, the series rates are taken of present at 0,
//! and the new series moving with what happens — a checkout's transitions,
//! its processing time and database time, a transition the shard refuses,
//! and the inventory reconciliation finding consistent data, then a leaked
//! hold and counters corrupted by hand.

use std::time::Duration;

use meridian_origin::Application;
use reqwest::StatusCode;
use serde_json::json;

use crate::checkout::{Shopper, shop_stack};
use crate::helpers::{HOME, TestOrigin, eventually, metric_sum};

async fn scrape(origin: &TestOrigin) -> String {
    origin
        .internal("/metrics")
        .await
        .text()
        .await
        .expect("metrics")
}

/// `meridian_order_transitions_total{to, result}`.
async fn transitions(origin: &TestOrigin, to: &str, result: &str) -> f64 {
    origin
        .metric(
            "meridian_order_transitions_total",
            &[("to", to), ("result", result)],
        )
        .await
}

/// `meridian_inventory_reconciliation_checks_total{result}`.
async fn checks(origin: &TestOrigin, result: &str) -> f64 {
    origin
        .metric(
            "meridian_inventory_reconciliation_checks_total",
            &[("result", result)],
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_metrics_follow_checkouts_refusals_and_the_reconciliation() {
    let stack = shop_stack(10).await;
    let mut config = stack.origin_config(HOME);
    let mut bad = config.clone();
    bad.inventory.reconcile_interval = Duration::ZERO;
    assert!(
        Application::build(bad).await.is_err(),
        "a zero reconcile interval is refused"
    );
    config.inventory.reconcile_interval = Duration::from_millis(100);
    // The sweeper runs at start, then not for an hour: an expired hold
    // left after the start stays unreleased (a leak, for the check).
    config.inventory.sweep_interval = Duration::from_secs(3600);
    let tolerance = config.database.lag_tolerance.as_secs_f64();
    let origin = TestOrigin::start(config).await;

    // What every scrape has: the build, the process, no constant label,
    // the series rates are taken of at 0.
    let text = scrape(&origin).await;
    let build = format!(
        "meridian_build_info{{component=\"origin\",region=\"{HOME}\",version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(text.lines().any(|l| l == build), "{build}:\n{text}");
    for process in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{process} "))),
            "{process}"
        );
    }
    assert!(
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with("meridian_build_info"))
            .all(|l| !(l.contains("{region=") || l.contains(",region="))),
        "no series but the build info names the region"
    );
    assert_eq!(
        metric_sum(&text, "meridian_replica_lag_tolerance_seconds", &[]),
        tolerance
    );
    let from_start: [(&str, &[(&str, &str)]); 5] = [
        (
            "meridian_order_transitions_total",
            &[("to", "captured"), ("result", "refused")],
        ),
        (
            "meridian_order_processing_seconds_count",
            &[("outcome", "payment_failed")],
        ),
        ("meridian_checkouts_total", &[("outcome", "declined")]),
        ("meridian_reservations_total", &[("event", "expired")]),
        (
            "meridian_inventory_reconciliation_checks_total",
            &[("result", "mismatch")],
        ),
    ];
    for (name, labels) in from_start {
        let present = text.lines().any(|l| {
            l.starts_with(&format!("{name}{{"))
                && labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        });
        assert!(present, "{name}{labels:?} exists from start:\n{text}");
    }

    // A checkout that goes through: pending → reserved → authorized, then
    // authorized → confirmed → captured, settled.
    let skus = stack.sellable_skus(2).await;
    let (sold, refused) = (skus[0].0.clone(), skus[1].0.clone());
    let user = stack.user_in_shard(HOME, "us-east-0", "metrics");
    let shopper = Shopper::new(&origin, &user);
    shopper.add(&sold, 2).await;
    let placed = shopper.checkout("metrics-placed", &json!({})).await;
    assert_eq!(placed.status(), StatusCode::CREATED);
    assert_eq!(transitions(&origin, "authorized", "applied").await, 1.0);
    assert_eq!(transitions(&origin, "captured", "applied").await, 1.0);
    assert_eq!(transitions(&origin, "captured", "refused").await, 0.0);
    let text = scrape(&origin).await;
    let processing = |outcome| {
        metric_sum(
            &text,
            "meridian_order_processing_seconds_count",
            &[("outcome", outcome)],
        )
    };
    assert_eq!(processing("captured"), 1.0);
    assert!(
        metric_sum(
            &text,
            "meridian_order_processing_seconds_sum",
            &[("outcome", "captured")]
        ) > 0.0
    );
    let db = |pool, purpose| {
        metric_sum(
            &text,
            "meridian_db_query_duration_seconds_count",
            &[("pool", pool), ("purpose", purpose)],
        )
    };
    assert!(db("primary", "request") >= 1.0, "the reservation batches");
    assert!(db("primary", "background") >= 1.0, "the reconciliation");

    // A transition the state machine refuses: without the edge confirmed
    // → captured, the shard's trigger refuses the final step.
    let mut shard = stack.shard_conn(HOME, "us-east-0").await;
    sqlx::query(
        "delete from order_state_edges where from_state = 'confirmed' and to_state = 'captured'",
    )
    .execute(&mut shard)
    .await
    .unwrap();
    shopper.add(&refused, 1).await;
    let answer = shopper.checkout("metrics-refused", &json!({})).await;
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(transitions(&origin, "captured", "refused").await >= 1.0);
    assert_eq!(transitions(&origin, "captured", "applied").await, 1.0);
    assert_eq!(
        origin
            .metric(
                "meridian_order_processing_seconds_count",
                &[("outcome", "captured")]
            )
            .await,
        1.0,
        "an order not settled has no processing time"
    );

    // The reconciliation: counters and rows agree, nothing oversold or
    // overdue.
    eventually(
        "a reconciliation of consistent data",
        Duration::from_secs(10),
        || async { checks(&origin, "match").await >= 10.0 },
    )
    .await;
    assert_eq!(checks(&origin, "mismatch").await, 0.0);
    assert_eq!(
        origin
            .metric("meridian_inventory_oversold_units", &[])
            .await,
        0.0
    );
    assert_eq!(
        origin.metric("meridian_reservations_overdue", &[]).await,
        0.0
    );

    // A hold expired two hours ago and never released: overdue.
    let mut primary = stack.primary_conn().await;
    sqlx::query(
        "insert into reservations (owner, state, expires_at) \
         values ('metrics-leaked-hold', 'held', now() - interval '2 hours')",
    )
    .execute(&mut primary)
    .await
    .unwrap();
    eventually(
        "the leaked hold reported",
        Duration::from_secs(10),
        || async { origin.metric("meridian_reservations_overdue", &[]).await == 1.0 },
    )
    .await;
    assert_eq!(checks(&origin, "mismatch").await, 0.0, "a hold of nothing");

    // Counters corrupted: the two units sold are no longer in `sold`, and
    // no stock is left to cover them.
    sqlx::query("update inventory set on_hand = 0, sold = 0 where sku = $1")
        .bind(&sold)
        .execute(&mut primary)
        .await
        .unwrap();
    eventually("the mismatch reported", Duration::from_secs(10), || async {
        checks(&origin, "mismatch").await >= 1.0
            && origin
                .metric("meridian_inventory_oversold_units", &[])
                .await
                == 2.0
    })
    .await;
    origin.stop().await;
}
