//! The payment-provider simulator as its own process (`meridian psp`), over
//! real HTTP: the payment-intent lifecycle, Stripe's idempotency rules under
//! concurrent duplicates, and injected outages and timeouts whose outcome
//! is found by looking the key up.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_meridian");

struct Psp {
    child: Child,
    url: String,
    client: reqwest::Client,
}

impl Psp {
    fn start(extra: &[&str]) -> Psp {
        let mut child = Command::new(BIN)
            .args(["psp", "--name", "test", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("meridian psp starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .rsplit(' ')
            .next()
            .expect("address printed")
            .to_string();
        assert!(url.starts_with("http://127.0.0.1:"), "{line}");
        Psp {
            child,
            url,
            client: reqwest::Client::new(),
        }
    }

    async fn post(&self, path: &str, key: Option<&str>, body: Value) -> (u16, Value, bool) {
        let mut request = self.client.post(format!("{}{path}", self.url)).json(&body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let response = request.send().await.unwrap();
        let replayed = response.headers().contains_key("idempotent-replayed");
        (
            response.status().as_u16(),
            response.json().await.unwrap(),
            replayed,
        )
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    async fn ledger(&self) -> Vec<Value> {
        self.get("/v1/ledger").await.1["payment_intents"]
            .as_array()
            .unwrap()
            .clone()
    }

    async fn faults(&self, faults: Value) {
        let response = self
            .client
            .put(format!("{}/v1/faults", self.url))
            .json(&faults)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
}

impl Drop for Psp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn charge(amount: i64) -> Value {
    json!({ "amount_minor": amount, "currency": "USD", "metadata": { "order_id": "o-1" } })
}

#[tokio::test]
async fn payment_intents_follow_their_lifecycle() {
    let psp = Psp::start(&[]);
    let (status, intent, _) = psp
        .post("/v1/payment_intents", Some("k1"), charge(4999))
        .await;
    assert_eq!(status, 200);
    assert_eq!(intent["status"], "authorized");
    let id = intent["id"].as_str().unwrap().to_string();

    let capture = format!("/v1/payment_intents/{id}/capture");
    assert_eq!(
        psp.post(&capture, None, json!({})).await.1["status"],
        "captured"
    );
    // Capturing again answers the same state; it is still one capture.
    let (status, again, _) = psp.post(&capture, None, json!({})).await;
    assert_eq!((status, again["status"].as_str()), (200, Some("captured")));
    let void = format!("/v1/payment_intents/{id}/void");
    assert_eq!(psp.post(&void, None, json!({})).await.0, 409);
    let refund = format!("/v1/payment_intents/{id}/refund");
    assert_eq!(
        psp.post(&refund, None, json!({})).await.1["status"],
        "refunded"
    );

    // A second intent is voided; refunding it is refused.
    let (_, other, _) = psp
        .post("/v1/payment_intents", Some("k2"), charge(100))
        .await;
    let other_id = other["id"].as_str().unwrap();
    let (status, voided, _) = psp
        .post(
            &format!("/v1/payment_intents/{other_id}/void"),
            None,
            json!({}),
        )
        .await;
    assert_eq!((status, voided["status"].as_str()), (200, Some("voided")));
    let (status, refused, _) = psp
        .post(
            &format!("/v1/payment_intents/{other_id}/refund"),
            None,
            json!({}),
        )
        .await;
    assert_eq!(status, 409);
    assert_eq!(refused["error"]["type"], "invalid_state");

    // Declines, bad requests, unknown ids.
    let mut declined = charge(100);
    declined["payment_method"] = json!("pm_card_declined");
    let (status, body, _) = psp.post("/v1/payment_intents", Some("k3"), declined).await;
    assert_eq!((status, body["status"].as_str()), (402, Some("declined")));
    assert_eq!(
        psp.post("/v1/payment_intents", None, charge(1)).await.0,
        400
    );
    for bad in [
        charge(0),
        json!({ "amount_minor": 5, "currency": "usd" }),
        json!([1]),
    ] {
        assert_eq!(
            psp.post("/v1/payment_intents", Some("k4"), bad).await.0,
            400
        );
    }
    assert_eq!(psp.get("/v1/payment_intents/pi_nope").await.0, 404);
    assert_eq!(
        psp.post("/v1/payment_intents/pi_nope/capture", None, json!({}))
            .await
            .0,
        404
    );

    let ledger = psp.ledger().await;
    assert_eq!(ledger.len(), 3);
    let kinds: Vec<&str> = ledger[0]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["authorized", "captured", "refunded"]);
    assert_eq!(ledger[0]["metadata"]["order_id"], "o-1");
}

#[tokio::test]
async fn idempotency_keys_replay_refuse_mismatches_and_never_charge_twice() {
    let psp = Psp::start(&["--latency-ms", "300"]);
    // Twenty concurrent duplicates: one is processed, the others wait their
    // turn with a 409 and nothing is created twice.
    let psp = std::sync::Arc::new(psp);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let psp = psp.clone();
            tokio::spawn(async move {
                psp.post("/v1/payment_intents", Some("dup"), charge(700))
                    .await
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap().0);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 409),
        "{statuses:?}"
    );

    // Afterwards the same request replays the first response.
    let (status, replay, replayed) = psp
        .post("/v1/payment_intents", Some("dup"), charge(700))
        .await;
    assert_eq!(status, 200);
    assert!(replayed);
    let first = psp.get("/v1/payment_intents?idempotency_key=dup").await.1;
    assert_eq!(replay["id"], first["id"]);
    // The same key for a different request is refused.
    let (status, body, _) = psp
        .post("/v1/payment_intents", Some("dup"), charge(701))
        .await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["type"], "idempotency_key_reused");

    assert_eq!(psp.ledger().await.len(), 1, "exactly one charge");
}

#[tokio::test]
async fn outages_do_nothing_and_timeouts_are_resolved_by_lookup() {
    let psp = Psp::start(&["--error-rate", "1"]);
    let (status, _, _) = psp
        .post("/v1/payment_intents", Some("o1"), charge(100))
        .await;
    assert_eq!(status, 503);
    assert!(
        psp.ledger().await.is_empty(),
        "an injected error does nothing"
    );
    assert_eq!(
        psp.get("/v1/payment_intents?idempotency_key=o1").await.0,
        404
    );

    // Every answer now comes after 5 s: a client giving up after 300 ms does
    // not know the outcome, and finds it by its idempotency key.
    psp.faults(json!({ "timeout_rate": 1.0, "timeout_delay_ms": 5000 }))
        .await;
    let attempt = psp
        .client
        .post(format!("{}/v1/payment_intents", psp.url))
        .header("idempotency-key", "t1")
        .json(&charge(250))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(attempt.is_err(), "timed out");
    psp.faults(json!({})).await;
    let (status, found) = psp.get("/v1/payment_intents?idempotency_key=t1").await;
    assert_eq!(
        (status, found["status"].as_str()),
        (200, Some("authorized"))
    );
    // Retrying with the key replays; it is still one intent.
    let (status, _, replayed) = psp
        .post("/v1/payment_intents", Some("t1"), charge(250))
        .await;
    assert_eq!((status, replayed), (200, true));
    assert_eq!(psp.ledger().await.len(), 1);

    // Bad fault settings are refused.
    let response = psp
        .client
        .put(format!("{}/v1/faults", psp.url))
        .json(&json!({ "error_rate": 2.0 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn payment_intent_requests_are_remembered_with_their_trace_headers() {
    let psp = Psp::start(&[]);
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = psp
        .client
        .post(format!("{}/v1/payment_intents", psp.url))
        .header("idempotency-key", "traced")
        .header("traceparent", parent)
        .header("tracestate", "vendor=1")
        .json(&charge(100))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (status, _) = psp.get("/v1/payment_intents?idempotency_key=traced").await;
    assert_eq!(status, 200);
    psp.get("/v1/ledger").await;

    let (status, body) = psp.get("/v1/requests").await;
    assert_eq!(status, 200);
    let seen = body["requests"].as_array().unwrap();
    assert_eq!(seen.len(), 2, "payment-intent requests only: {body}");
    assert_eq!(seen[0]["method"], "POST");
    assert_eq!(seen[0]["path"], "/v1/payment_intents");
    assert_eq!(seen[0]["traceparent"], parent);
    assert_eq!(seen[0]["tracestate"], "vendor=1");
    assert_eq!(seen[1]["method"], "GET");
    assert!(seen[1]["traceparent"].is_null());
}
