//! Issue 13's time budgets, against real servers: a row lock held by
//! someone else stalls only the checkouts that need that row, for at most
//! `lock_timeout`; a frozen catalog primary (every PostgreSQL process
//! stopped with SIGSTOP) never makes `POST /v1/checkout` hang — it answers
//! within its deadline, and a retry with the same key then gets the one
//! order.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

use crate::checkout::{Shopper, count, orders_by_state, set_stock, shop_stack};
use crate::helpers::{HOME, TestOrigin, eventually};

/// `pid` and every process below it (a PostgreSQL server: the postmaster
/// and its backends).
fn process_tree(pid: u32) -> Vec<u32> {
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            // `pid (comm) state ppid …`; comm may hold spaces: split after ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(parent) && !tree.contains(&child) {
                tree.push(child);
            }
        }
        i += 1;
    }
    tree
}

fn signal_all(pids: &[u32], signal: Signal) {
    for pid in pids {
        let _ = kill(Pid::from_raw(*pid as i32), signal);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_row_lock_stalls_only_its_own_checkouts_and_only_briefly() {
    let stack = shop_stack(10).await;
    let mut config = stack.origin_config(HOME);
    config.database.lock_timeout = Duration::from_millis(500);
    config.checkout.deadline = Duration::from_secs(3);
    config.checkout.recover_after = Duration::from_secs(2);
    let payments = config.payments.as_mut().expect("payments");
    payments.request_timeout = Duration::from_millis(300);
    payments.retries = 0;
    config.checkout.recovery_interval = Duration::from_millis(200);
    let origin = TestOrigin::start(config).await;
    let skus = stack.sellable_skus(2).await;
    let (locked, free) = (skus[0].0.clone(), skus[1].0.clone());
    set_stock(&origin, &locked, 10).await;
    set_stock(&origin, &free, 10).await;

    // Someone holds the locked SKU's stock row and does not let go.
    let mut holder = stack.primary_conn().await;
    sqlx::query("begin").execute(&mut holder).await.unwrap();
    sqlx::query("select 1 from inventory where sku = $1 for update")
        .bind(&locked)
        .execute(&mut holder)
        .await
        .unwrap();

    let stuck = Shopper::new(&origin, "needs-the-locked-row");
    stuck.add(&locked, 1).await;
    let other = Shopper::new(&origin, "needs-another-row");
    other.add(&free, 1).await;
    let started = Instant::now();
    let empty = json!({});
    let (stuck_answer, other_answer) = tokio::join!(stuck.checkout("k-stuck", &empty), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        other.checkout("k-other", &json!({})).await
    });
    let waited = started.elapsed();
    // The other SKU's checkout went through; the locked one was answered
    // (503 + Retry-After: try again) instead of waiting for the lock.
    assert_eq!(other_answer.status(), 201);
    assert_eq!(stuck_answer.status(), 503, "{:?}", stuck_answer.headers());
    assert!(stuck_answer.headers().contains_key("retry-after"));
    assert!(
        waited < Duration::from_secs(3),
        "answered within the checkout deadline: {waited:?}"
    );
    println!("checkout behind a held row lock answered after {waited:?}");

    // The lock goes; the same key then settles the one order.
    sqlx::query("rollback").execute(&mut holder).await.unwrap();
    eventually(
        "the stuck checkout settles",
        Duration::from_secs(60),
        || async {
            let again = stuck.checkout("k-stuck", &json!({})).await;
            again.status() == 201 || again.headers().contains_key("idempotent-replayed")
        },
    )
    .await;
    assert!(count(&stack.psp("primary").ledger().await, "captured") <= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_primary_never_makes_a_checkout_hang() {
    let stack = shop_stack(10).await;
    let mut config = stack.origin_config(HOME);
    config.checkout.deadline = Duration::from_millis(1500);
    let origin = TestOrigin::start(config).await;
    let sku = stack.sellable_skus(1).await[0].0.clone();
    set_stock(&origin, &sku, 10).await;
    let shopper = Shopper::new(&origin, "during-the-freeze");
    shopper.add(&sku, 1).await;

    // Every process of the catalog primary stops, as a hung or
    // partitioned server would.
    let postmaster = stack.stack.primary.pid().expect("primary runs");
    let frozen = process_tree(postmaster);
    assert!(frozen.len() > 1, "the postmaster and its backends");
    signal_all(&frozen, Signal::SIGSTOP);
    let started = Instant::now();
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        shopper.checkout("k-freeze", &json!({})),
    )
    .await;
    let waited = started.elapsed();
    signal_all(&frozen, Signal::SIGCONT);
    let answer = answer.expect("the checkout answered instead of hanging");
    println!(
        "checkout against a frozen primary answered {} after {waited:?}",
        answer.status()
    );
    assert!(
        answer.status() == 503 || answer.status() == 202,
        "{}",
        answer.status()
    );
    assert!(answer.headers().contains_key("retry-after"));

    // Unfrozen: the same key gets the one order.
    eventually("the order is placed", Duration::from_secs(60), || async {
        shopper.checkout("k-freeze", &json!({})).await.status() == 201
    })
    .await;
    let captured: i64 = orders_by_state(&stack)
        .await
        .iter()
        .filter(|(state, _)| state == "captured")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(captured, 1);
    assert_eq!(count(&stack.psp("primary").ledger().await, "captured"), 1);
}

/// Through the public edge: a checkout that outlasts the origin's
/// deadline (a slow payment provider) is a 202 with the order's Location
/// — never a 504 from the edge for an order that then completes — and a
/// retry with the same key gets that order once it is placed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_checkout_through_the_edge_is_accepted_not_timed_out() {
    let stack = shop_stack(10).await;
    let mut config = stack.origin_config(HOME);
    config.checkout.deadline = Duration::from_millis(800);
    let payments = config.payments.as_mut().expect("payments");
    payments.request_timeout = Duration::from_secs(2);
    payments.retries = 0;
    let origin = TestOrigin::start(config).await;
    let sku = stack.sellable_skus(1).await[0].0.clone();
    set_stock(&origin, &sku, 10).await;
    let public: std::net::SocketAddr = origin
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    let mut edge_config =
        crate::edge::edge_config(HOME, vec![crate::edge::region(HOME, public, 0)]);
    edge_config.identity = Some(meridian_edge::config::IdentityConfig {
        hs256_secret: Some(crate::helpers::JWT_SECRET.parse().unwrap()),
        es256_public_key: None,
        cookie: "meridian_session".into(),
    });
    let edge = crate::edge::TestEdge::start(edge_config).await;
    // Payments take 1.5 s: past the origin's 0.8 s deadline, within the
    // edge's 5 s read timeout.
    stack
        .psp("primary")
        .faults(json!({ "latency_ms": 1500 }))
        .await;
    let shopper = Shopper::new(&origin, "patient");
    shopper.add(&sku, 1).await;
    let checkout = || {
        edge.client
            .post(format!("{}/v1/checkout", edge.url))
            .bearer_auth(&shopper.token)
            .header("idempotency-key", "k-slow")
            .json(&json!({}))
            .send()
    };
    let first = checkout().await.expect("an answer");
    assert_eq!(first.status(), 202, "{:?}", first.headers());
    let location = first.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with("/v1/orders/"), "{location}");
    eventually("the order is placed", Duration::from_secs(20), || async {
        checkout().await.is_ok_and(|again| again.status() == 201)
    })
    .await;
    let order = edge
        .client
        .get(format!("{}{location}", edge.url))
        .bearer_auth(&shopper.token)
        .send()
        .await
        .expect("order");
    assert_eq!(order.status(), 200);
    let body: serde_json::Value = order.json().await.expect("json");
    assert_eq!(body["state"], "captured", "{body}");
    assert_eq!(count(&stack.psp("primary").ledger().await, "captured"), 1);
}
