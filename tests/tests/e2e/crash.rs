//! An origin process killed at each step of the checkout saga, then
//! restarted: every order ends settled (captured, or cancelled with its
//! stock back), no hold is left, no payment is orphaned, and the payment
//! ledger, the inventory and the orders agree.

use std::time::Duration;

use serde_json::json;

use crate::checkout::{Shopper, count, set_stock, shop_stack};
use crate::helpers::{HOME, TestOrigin, TestStack, eventually, meridian_bin};

/// The saga's crash points, in order, and how recovery must end each.
const STEPS: [(&str, &str); 6] = [
    ("checkout::pending", "cancelled"),
    ("checkout::reserved", "cancelled"),
    ("checkout::authorized", "captured"),
    ("checkout::authorization_saved", "captured"),
    ("checkout::committed", "captured"),
    ("checkout::captured", "captured"),
];

/// `meridian origin` as a child process, optionally with a failpoint.
struct OriginProcess {
    url: String,
    admin: String,
    process: meridian_launcher::process::ManagedProcess,
}

impl OriginProcess {
    async fn start(
        stack: &TestStack,
        (port, internal): (u16, u16),
        failpoint: Option<&str>,
        n: usize,
    ) -> Self {
        let mut config = stack.origin_config(HOME);
        config.listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        config.internal_listen = std::net::SocketAddr::from(([127, 0, 0, 1], internal));
        // Recovery soon after a crash; the payments' worst case (checked
        // at load) must stay below it.
        config.checkout.recover_after = Duration::from_millis(1000);
        let payments = config.payments.as_mut().expect("payments");
        payments.request_timeout = Duration::from_millis(200);
        payments.retries = 0;
        config.checkout.recovery_interval = Duration::from_millis(100);
        let path = stack.stack.root().join(format!("origin-crash-{n}.toml"));
        std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
        let mut command = std::process::Command::new(meridian_bin());
        command.arg("origin").arg("--config").arg(&path);
        if let Some(failpoint) = failpoint {
            command.env("FAILPOINTS", format!("{failpoint}=return"));
        }
        let process = meridian_launcher::process::ManagedProcess::spawn(
            &format!("origin-crash-{n}"),
            command,
            &stack.stack.root().join(format!("origin-crash-{n}.log")),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let admin = format!("http://127.0.0.1:{internal}");
        let client = reqwest::Client::new();
        eventually("the origin is ready", Duration::from_secs(20), || async {
            client
                .get(format!("{admin}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        OriginProcess {
            url,
            admin,
            process,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_killed_at_any_saga_step_resumes_or_compensates_on_restart() {
    let stack = shop_stack(10).await;
    let sku = stack.sellable_skus(1).await[0].0.clone();
    let ports = (
        meridian_launcher::free_port().unwrap(),
        meridian_launcher::free_port().unwrap(),
    );
    let admin = stack.origin(HOME).await;
    set_stock(&admin, &sku, 100).await;

    for (n, (step, expected)) in STEPS.iter().enumerate() {
        let user = format!("crash-{n}");
        let mut crashing = OriginProcess::start(&stack, ports, Some(step), 2 * n).await;
        let origin = TestOrigin::external(&crashing.url, &crashing.admin);
        let shopper = Shopper::new(&origin, &user);
        shopper.add(&sku, 2).await;
        let died = origin
            .client
            .post(format!("{}/v1/checkout", origin.url))
            .bearer_auth(&shopper.token)
            .header("idempotency-key", "crash-key")
            .json(&json!({}))
            .send()
            .await;
        assert!(
            died.is_err(),
            "{step}: the origin should have died mid-saga"
        );
        eventually("the origin exits", Duration::from_secs(5), || {
            let exited = crashing.process.exited().is_some();
            async move { exited }
        })
        .await;

        // Restarted without the failpoint: the recovery worker settles it.
        let _restarted = OriginProcess::start(&stack, ports, None, 2 * n + 1).await;
        eventually(
            &format!("{step}: the order settles"),
            Duration::from_secs(15),
            || {
                let (stack, user) = (&stack, &user);
                async move {
                    let state = order_state(stack, user).await;
                    !matches!(
                        state.as_str(),
                        "pending" | "reserved" | "authorized" | "confirmed"
                    )
                }
            },
        )
        .await;
        assert_eq!(&order_state(&stack, &user).await, expected, "{step}");

        // Asking again with the key gives the stored outcome.
        let again = shopper.checkout("crash-key", &json!({})).await;
        let want = if *expected == "captured" { 201 } else { 503 };
        assert_eq!(again.status(), want, "{step}: replay");
        assert_eq!(again.headers()["idempotent-replayed"], "true", "{step}");
        drop(_restarted);
    }

    // Everything agrees: four orders of 2 units were sold and charged,
    // nothing is held, nothing authorized is left uncaptured.
    let (on_hand, reserved, sold) = stack.stock(&sku).await;
    assert_eq!((on_hand, reserved, sold), (92, 0, 8));
    let ledger = stack.psp("primary").ledger().await;
    assert_eq!(count(&ledger, "captured"), 4, "{ledger:#?}");
    assert_eq!(count(&ledger, "authorized"), 0, "no orphan authorization");
    assert!(stack.psp("fallback").ledger().await.is_empty());
    let mut orders_per_intent = std::collections::BTreeMap::<String, usize>::new();
    for intent in &ledger {
        let order = intent["metadata"]["order_id"].as_str().unwrap().to_string();
        *orders_per_intent.entry(order).or_default() += 1;
    }
    assert!(
        orders_per_intent.values().all(|n| *n == 1),
        "one charge per order"
    );
}

async fn order_state(stack: &TestStack, user: &str) -> String {
    for shard in ["us-east-0", "us-east-1"] {
        let mut conn = stack.shard_conn(HOME, shard).await;
        let state: Option<String> =
            sqlx::query_scalar("select state from orders where user_id = $1")
                .bind(user)
                .fetch_optional(&mut conn)
                .await
                .unwrap();
        if let Some(state) = state {
            return state;
        }
    }
    "none".into()
}
