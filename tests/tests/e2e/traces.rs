//! Traces and access logs end to end: a real edge process and a real origin
//! process (`meridian edge|origin --config`, trace export on, JSON logs),
//! the payment simulators, and an OTLP/HTTP receiver in this test that
//! decodes what the exporters send (`POST /v1/traces`, protobuf
//! `ExportTraceServiceRequest`).
//!
//! One checkout is followed through: a single trace id from the client's
//! `traceparent` through the edge's spans, the origin's and the payment
//! calls', with every parent link checked, the `traceparent` the payment
//! simulator received, and both access-log lines. Then a request without a
//! `traceparent` (a new trace, started at the edge) and one with an
//! invalid one (replaced), and the request id's round trip.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use meridian_launcher::free_port;
use meridian_launcher::process::ManagedProcess;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::{Value, json};

use crate::checkout::{set_stock, shop_stack};
use crate::edge::upstream::TestUpstream;
use crate::edge::{edge_config, region};
use crate::helpers::{HOME, TestOrigin, eventually, meridian_bin, shopper_token};

/// The incoming trace of the followed checkout (sampled).
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

/// One span as the receiver decoded it.
#[derive(Debug, Clone)]
struct ReceivedSpan {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: HashMap<String, String>,
}

/// An OTLP/HTTP trace receiver on a free port.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

impl Receiver {
    async fn start() -> (Receiver, SocketAddr) {
        let receiver = Receiver::default();
        let app = axum::Router::new()
            .route("/v1/traces", post(export))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, addr)
    }

    fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap().clone()
    }

    fn in_trace(&self, trace_id: &str) -> Vec<ReceivedSpan> {
        self.spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect()
    }
}

fn text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

async fn export(
    State(receiver): State<Receiver>,
    body: Bytes,
) -> impl axum::response::IntoResponse {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
    let mut spans = receiver.spans.lock().unwrap();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(kv.value.as_ref()))
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for span in scope.spans {
                spans.push(ReceivedSpan {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
                        .collect(),
                });
            }
        }
    }
    (
        [("content-type", "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

/// An attribute of `span` as text ("" when it has none).
fn attr<'a>(span: &'a ReceivedSpan, key: &str) -> &'a str {
    span.attributes.get(key).map_or("", String::as_str)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `span`'s ancestors in `spans`, nearest first, up to a root or a parent
/// that is not among them.
fn ancestors<'a>(span: &ReceivedSpan, spans: &'a [ReceivedSpan]) -> Vec<&'a ReceivedSpan> {
    let mut chain = Vec::new();
    let mut parent = span.parent_span_id.clone();
    while let Some(next) = spans.iter().find(|s| s.span_id == parent) {
        chain.push(next);
        parent = next.parent_span_id.clone();
        assert!(chain.len() < 64, "a parent cycle");
    }
    chain
}

/// The telemetry section every process of this test gets.
fn telemetry(receiver: SocketAddr) -> meridian_telemetry::TelemetryConfig {
    meridian_telemetry::TelemetryConfig {
        log_format: Some(meridian_telemetry::LogFormat::Json),
        otlp_endpoint: Some(format!("http://{receiver}").parse().unwrap()),
        // Batches leave quickly: the test waits on what arrives.
        batch_delay: Duration::from_millis(50),
        ..Default::default()
    }
}

/// `meridian origin|edge --config FILE` as a child process, its config
/// and log in `dir`.
fn spawn(dir: &std::path::Path, what: &str, config: String) -> ManagedProcess {
    let path = dir.join(format!("traces-{what}.toml"));
    std::fs::write(&path, config).unwrap();
    let mut command = std::process::Command::new(meridian_bin());
    command.arg(what).arg("--config").arg(&path);
    ManagedProcess::spawn(
        &format!("traces-{what}"),
        command,
        &dir.join(format!("traces-{what}.log")),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap()
}

/// The JSON access-log lines in `process`'s log.
fn access_lines(process: &ManagedProcess) -> Vec<Value> {
    std::fs::read_to_string(process.log_path())
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["target"] == meridian_telemetry::ACCESS_TARGET)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_spans_edge_origin_and_payment_provider() {
    let stack = shop_stack(10).await;
    let (receiver, receiver_addr) = Receiver::start().await;

    // The origin, exporting.
    let (port, internal) = (free_port().unwrap(), free_port().unwrap());
    let mut config = stack.origin_config(HOME);
    config.listen = SocketAddr::from(([127, 0, 0, 1], port));
    config.internal_listen = SocketAddr::from(([127, 0, 0, 1], internal));
    config.telemetry = telemetry(receiver_addr);
    let mut origin_process = spawn(
        stack.stack.root(),
        "origin",
        toml::to_string(&config).unwrap(),
    );
    let origin = TestOrigin::external(
        &format!("http://127.0.0.1:{port}"),
        &format!("http://127.0.0.1:{internal}"),
    );
    eventually("the origin is ready", Duration::from_secs(30), || async {
        origin
            .client
            .get(format!("{}/readyz", origin.admin))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;

    // The edge in front of it, exporting too.
    let mut config = edge_config(HOME, vec![region(HOME, config.listen, 0)]);
    config.telemetry = telemetry(receiver_addr);
    let edge_url = format!("http://{}", config.listen);
    let edge_admin = format!("http://{}", config.admin_listen);
    let mut edge_process = spawn(
        stack.stack.root(),
        "edge",
        toml::to_string(&config).unwrap(),
    );
    let client = reqwest::Client::new();
    edge_ready(&client, &edge_admin, &edge_url).await;

    // A shopper's checkout through the edge, in the client's trace.
    let sku = stack.sellable_skus(1).await[0].0.clone();
    set_stock(&origin, &sku, 10).await;
    let token = shopper_token("traced-shopper", HOME);
    let added = client
        .post(format!("{edge_url}/v1/cart/items"))
        .bearer_auth(&token)
        .json(&json!({ "sku": sku, "quantity": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 200, "{}", added.text().await.unwrap());
    let checkout = client
        .post(format!("{edge_url}/v1/checkout"))
        .bearer_auth(&token)
        .header("idempotency-key", "traced-checkout")
        .header("traceparent", format!("00-{TRACE}-{PARENT}-01"))
        .header("tracestate", "vendor=kept")
        .header("x-request-id", "client-request-0001")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(checkout.status(), 201);
    assert_eq!(
        checkout.headers()["x-request-id"],
        "client-request-0001",
        "a sane request id is kept and echoed"
    );

    // Every span of the trace arrives (exporters batch: wait for them).
    let complete = |spans: &[ReceivedSpan]| {
        [
            "edge.request",
            "edge.upstream",
            "origin.request",
            "psp.request",
        ]
        .iter()
        .all(|name| spans.iter().any(|s| &s.name == name))
            && spans.iter().filter(|s| s.name == "psp.request").count() >= 2
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !complete(&receiver.in_trace(TRACE)) {
        assert!(
            std::time::Instant::now() < deadline,
            "the checkout's spans did not all arrive: {:#?}\nedge log:\n{}\norigin log:\n{}",
            receiver.spans(),
            edge_process.log_tail(),
            origin_process.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let spans = receiver.in_trace(TRACE);
    let named =
        |name: &str| -> Vec<&ReceivedSpan> { spans.iter().filter(|s| s.name == name).collect() };

    // The edge: its server span continues the client's trace.
    let edge_checkout = named("edge.request")
        .into_iter()
        .find(|s| attr(s, "meridian.request_id") == "client-request-0001")
        .expect("the edge's server span of the checkout");
    assert_eq!(edge_checkout.service, "meridian-edge");
    assert_eq!(
        edge_checkout.parent_span_id, PARENT,
        "child of the incoming traceparent"
    );
    assert_eq!(attr(edge_checkout, "meridian.route"), "checkout");
    assert_eq!(attr(edge_checkout, "http.response.status_code"), "201");
    for phase in ["edge.request_filter", "edge.upstream", "edge.response"] {
        assert!(
            spans
                .iter()
                .any(|s| s.name == phase && s.parent_span_id == edge_checkout.span_id),
            "{phase} is a child of the edge's server span: {spans:#?}"
        );
    }

    // The origin: its server span's parent is an edge span, whose chain
    // leads to the edge's server span.
    let origin_checkout = named("origin.request")
        .into_iter()
        .find(|s| attr(s, "http.route") == "/v1/checkout")
        .expect("the origin's server span of the checkout");
    assert_eq!(origin_checkout.service, "meridian-origin");
    let parent = spans
        .iter()
        .find(|s| s.span_id == origin_checkout.parent_span_id)
        .expect("the origin span's parent was exported");
    assert_eq!(parent.service, "meridian-edge");
    assert_eq!(parent.name, "edge.upstream");
    assert!(
        ancestors(origin_checkout, &spans)
            .iter()
            .any(|s| s.span_id == edge_checkout.span_id),
        "the origin's chain leads to the edge's server span"
    );
    assert_eq!(
        attr(origin_checkout, "meridian.request_id"),
        "client-request-0001",
        "the edge forwards the request id"
    );

    // The payment calls: each one's chain leads to the origin's server span.
    let psp_calls = named("psp.request");
    for call in &psp_calls {
        assert_eq!(call.service, "meridian-origin");
        assert!(
            ancestors(call, &spans)
                .iter()
                .any(|s| s.span_id == origin_checkout.span_id),
            "{call:?} belongs to the checkout request"
        );
    }
    assert!(
        psp_calls
            .iter()
            .any(|c| attr(c, "meridian.operation") == "authorize")
    );
    assert!(
        psp_calls
            .iter()
            .any(|c| attr(c, "meridian.operation") == "capture")
    );
    // Cache and database spans are part of the request too.
    assert!(
        spans.iter().any(|s| s.name == "db.query"
            && ancestors(s, &spans)
                .iter()
                .any(|a| a.span_id == origin_checkout.span_id)),
        "database spans under the origin's: {spans:#?}"
    );

    // The payment simulator received the trace: a `traceparent` naming a
    // payment-call span of this trace, with the client's trace state.
    let seen: Value = client
        .get(format!("{}/v1/requests", stack.psp("primary").url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let received: Vec<&Value> = seen["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["traceparent"]
                .as_str()
                .is_some_and(|t| t.starts_with(&format!("00-{TRACE}-")))
        })
        .collect();
    assert!(
        received.len() >= 2,
        "authorize and capture carried the trace: {seen}"
    );
    for request in &received {
        let traceparent = request["traceparent"].as_str().unwrap();
        let parent_id = traceparent.split('-').nth(2).unwrap();
        assert!(
            psp_calls.iter().any(|c| c.span_id == parent_id),
            "{traceparent}: its parent is a payment-call span"
        );
        assert!(traceparent.ends_with("-01"), "sampled: {traceparent}");
        assert_eq!(request["tracestate"], "vendor=kept");
    }

    // One JSON access-log line per request on both sides, same trace id,
    // nothing personal in it.
    let edge_line = access_lines(&edge_process)
        .into_iter()
        .find(|l| l["request_id"] == "client-request-0001")
        .expect("the edge's access-log line of the checkout");
    assert_eq!(edge_line["trace_id"], TRACE);
    assert_eq!(edge_line["method"], "POST");
    assert_eq!(edge_line["route"], "checkout");
    assert_eq!(edge_line["status"], 201);
    assert_eq!(edge_line["region"], HOME);
    assert!(edge_line["duration_ms"].as_f64().is_some());
    assert!(edge_line["timestamp"].is_string());
    let origin_line = access_lines(&origin_process)
        .into_iter()
        .find(|l| l["request_id"] == "client-request-0001")
        .expect("the origin's access-log line of the checkout");
    assert_eq!(origin_line["trace_id"], TRACE);
    assert_eq!(origin_line["route"], "/v1/checkout");
    assert_eq!(origin_line["status"], 201);
    assert_eq!(origin_line["region"], HOME);
    for line in [&edge_line, &origin_line] {
        let text = line.to_string();
        println!("access log: {text}");
        for secret in ["traced-shopper", token.as_str(), "traced-checkout", "?"] {
            assert!(
                !text.contains(secret),
                "{secret:?} in the access log: {text}"
            );
        }
    }

    // No traceparent: the edge starts the trace (its server span is a root)
    // and the origin continues it; an insane request id is replaced.
    let fresh = client
        .get(format!("{edge_url}/v1/products/1?utm_source=x"))
        .header("x-request-id", "not a sane id\t!")
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.status(), 200);
    let fresh_id = fresh.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(fresh_id.len(), 32, "a generated id: {fresh_id}");
    let edge_root = |request_id: &str| {
        let request_id = request_id.to_string();
        let receiver = receiver.clone();
        move || {
            let found = receiver
                .spans()
                .into_iter()
                .find(|s| s.name == "edge.request" && attr(s, "meridian.request_id") == request_id);
            async move { found }
        }
    };
    let started = wait_for(edge_root(&fresh_id)).await;
    assert_eq!(started.parent_span_id, "", "a new trace starts at the edge");
    assert_ne!(started.trace_id, TRACE);
    eventually(
        "the origin's span of the new trace",
        Duration::from_secs(20),
        || {
            let found = receiver
                .in_trace(&started.trace_id)
                .iter()
                .any(|s| s.name == "origin.request" && attr(s, "meridian.request_id") == fresh_id);
            async move { found }
        },
    )
    .await;
    eventually(
        "the new trace's access-log lines",
        Duration::from_secs(10),
        || {
            let found = [&edge_process, &origin_process].iter().all(|p| {
                access_lines(p).iter().any(|l| {
                    l["request_id"] == fresh_id.as_str()
                        && l["trace_id"] == started.trace_id.as_str()
                        && !l.to_string().contains("utm_source")
                })
            });
            async move { found }
        },
    )
    .await;

    // An invalid traceparent is replaced by a new trace.
    let replaced = client
        .get(format!("{edge_url}/v1/products/2"))
        .header("traceparent", format!("00-{}-{PARENT}-01", "0".repeat(32)))
        .header("x-request-id", "invalid-parent-0001")
        .send()
        .await
        .unwrap();
    assert_eq!(replaced.status(), 200);
    let restarted = wait_for(edge_root("invalid-parent-0001")).await;
    assert_eq!(
        restarted.parent_span_id, "",
        "no parent: the invalid one is dropped"
    );
    assert_ne!(restarted.trace_id, "0".repeat(32));
    assert_ne!(restarted.trace_id, TRACE);
    eventually(
        "the origin continues the replacement",
        Duration::from_secs(20),
        || {
            let found = receiver.in_trace(&restarted.trace_id).iter().any(|s| {
                s.name == "origin.request"
                    && attr(s, "meridian.request_id") == "invalid-parent-0001"
            });
            async move { found }
        },
    )
    .await;

    edge_process.stop();
    origin_process.stop();
}

/// Spans wait for their batch; a graceful stop sends what is batched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_edge_flushes_its_last_spans() {
    let upstream = TestUpstream::start("local").await;
    let (receiver, receiver_addr) = Receiver::start().await;
    let mut config = edge_config("local", vec![region("local", upstream.addr, 0)]);
    config.telemetry = telemetry(receiver_addr);
    // Nothing leaves on its own while the test runs.
    config.telemetry.batch_delay = Duration::from_secs(60);
    let edge_url = format!("http://{}", config.listen);
    let edge_admin = format!("http://{}", config.admin_listen);
    let dir = tempfile::tempdir().unwrap();
    let mut edge = spawn(dir.path(), "edge", toml::to_string(&config).unwrap());
    let client = reqwest::Client::new();
    edge_ready(&client, &edge_admin, &edge_url).await;
    let response = client
        .get(format!("{edge_url}/flushed?cc=no-store"))
        .header("x-request-id", "flushed-at-stop")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(receiver.spans().is_empty(), "nothing sent before the stop");

    let pid = nix::unistd::Pid::from_raw(edge.pid().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let span = wait_for(|| {
        let found = receiver.spans().into_iter().find(|s| {
            s.name == "edge.request" && attr(s, "meridian.request_id") == "flushed-at-stop"
        });
        async move { found }
    })
    .await;
    assert_eq!(attr(&span, "http.response.status_code"), "200");
    eventually("the edge exits", Duration::from_secs(15), || {
        let exited = edge.exited().is_some();
        async move { exited }
    })
    .await;
}

/// Waits until the edge's first health check found its origin and its
/// public listener accepts.
async fn edge_ready(client: &reqwest::Client, admin: &str, url: &str) {
    eventually("the edge is ready", Duration::from_secs(30), || async {
        let healthy = match client.get(format!("{admin}/readyz")).send().await {
            Ok(response) => response
                .json::<Value>()
                .await
                .is_ok_and(|body| body["origins_healthy"] == true),
            Err(_) => false,
        };
        healthy
            && tokio::net::TcpStream::connect(url.trim_start_matches("http://"))
                .await
                .is_ok()
    })
    .await;
}

/// Polls `find` until it returns something (20 s at most).
async fn wait_for<F, Fut, T>(mut find: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(found) = find().await {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for a span"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
