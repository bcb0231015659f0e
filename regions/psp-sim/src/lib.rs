//! The payment-provider (PSP) simulator: the one simulated party of the
//! system, run as its own process (`meridian psp`) with a real HTTP API
//! modelled on payment intents.
//!
//! - `POST /v1/payment_intents` (`Idempotency-Key` required): create and
//!   authorize `{amount_minor, currency, payment_method?}`; the payment
//!   method `pm_card_declined` is declined (402).
//! - `POST /v1/payment_intents/{id}/capture | void | refund`: authorized →
//!   captured | voided, captured → refunded; repeating a done transition
//!   answers the same state, any other transition is a 409.
//! - `GET /v1/payment_intents/{id}`, `GET /v1/payment_intents?idempotency_key=K`
//!   (look up what a request whose outcome is unknown did), `GET /v1/ledger`
//!   (every intent with its events: what tests check for double charges).
//! - `GET | PUT /v1/faults`: latency, error rate (a 503 before anything is
//!   done) and timeout rate (the operation is done, the answer comes after
//!   `timeout_delay`: an unknown outcome for a client with a shorter timeout).
//! - `GET /v1/requests`: the last payment-intent requests received (method,
//!   path, W3C `traceparent`/`tracestate`), oldest first: what tests check
//!   trace propagation with.
//!
//! Idempotency follows Stripe's rules: a key replays the first response
//! (`Idempotent-Replayed: true`) for the same request, is a 422 for a
//! different request, and a 409 while the first is still being processed.
//! State is in memory: a restarted simulator is a new, empty PSP.

#![forbid(unsafe_code)]

mod ledger;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use ledger::{Action, Ledger, Outcome};
pub use ledger::{Intent, IntentStatus};

/// The request header carrying the client's idempotency key.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Set on a response replayed for a repeated idempotency key.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Injected faults; adjustable at runtime through `PUT /v1/faults`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added to every request's processing time.
    pub latency_ms: u64,
    /// Share of requests answered 503 before anything is done (0..=1).
    pub error_rate: f64,
    /// Share of requests that are done but answered only after
    /// `timeout_delay_ms` (0..=1).
    pub timeout_rate: f64,
    pub timeout_delay_ms: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            error_rate: 0.0,
            timeout_rate: 0.0,
            timeout_delay_ms: 10_000,
        }
    }
}

impl Faults {
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate) in [
            ("error_rate", self.error_rate),
            ("timeout_rate", self.timeout_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0 and 1 (got {rate})"));
            }
        }
        if self.latency_ms > 60_000 || self.timeout_delay_ms > 600_000 {
            return Err("latency_ms ≤ 60000 and timeout_delay_ms ≤ 600000".into());
        }
        Ok(())
    }
}

struct Psp {
    name: String,
    ledger: Mutex<Ledger>,
    faults: Mutex<Faults>,
    /// The last [`SEEN_REQUESTS`] payment-intent requests.
    seen: Mutex<VecDeque<SeenRequest>>,
}

/// How many requests `GET /v1/requests` remembers.
const SEEN_REQUESTS: usize = 1000;

/// A payment-intent request as received: its trace headers.
#[derive(Debug, Clone, Serialize)]
struct SeenRequest {
    method: String,
    path: String,
    traceparent: Option<String>,
    tracestate: Option<String>,
}

/// A running simulator.
pub struct PspServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl PspServer {
    /// Serves the simulator named `name` on `listener` until dropped or
    /// stopped.
    pub fn start(
        name: &str,
        listener: tokio::net::TcpListener,
        faults: Faults,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let app = router(Arc::new(Psp {
            name: name.to_string(),
            ledger: Mutex::new(Ledger::default()),
            faults: Mutex::new(faults),
            seen: Mutex::new(VecDeque::new()),
        }));
        let task = tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { addr, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits for the server task (it runs until aborted).
    pub async fn wait(&mut self) -> std::io::Result<()> {
        match (&mut self.task).await {
            Ok(result) => result,
            Err(error) => Err(std::io::Error::other(error)),
        }
    }
}

impl Drop for PspServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn router(psp: Arc<Psp>) -> Router {
    let intents = Router::new()
        .route("/v1/payment_intents", post(create).get(find_by_key))
        .route("/v1/payment_intents/{id}", get(show))
        .route("/v1/payment_intents/{id}/{action}", post(transition))
        .route_layer(axum::middleware::from_fn_with_state(psp.clone(), remember));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(intents)
        .route("/v1/ledger", get(ledger))
        .route("/v1/faults", get(faults).put(set_faults))
        .route("/v1/requests", get(requests))
        .with_state(psp)
}

/// Records a payment-intent request's trace headers (`GET /v1/requests`).
async fn remember(
    State(psp): State<Arc<Psp>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let headers = request.headers();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let seen = SeenRequest {
        method: request.method().to_string(),
        path: request.uri().path().to_string(),
        traceparent: header("traceparent"),
        tracestate: header("tracestate"),
    };
    {
        let mut recent = psp.seen.lock();
        if recent.len() == SEEN_REQUESTS {
            recent.pop_front();
        }
        recent.push_back(seen);
    }
    next.run(request).await
}

async fn requests(State(psp): State<Arc<Psp>>) -> Response {
    let seen: Vec<SeenRequest> = psp.seen.lock().iter().cloned().collect();
    axum::Json(json!({ "psp": psp.name, "requests": seen })).into_response()
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(json!({ "error": { "type": code, "message": message.into() } })),
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    amount_minor: i64,
    currency: String,
    #[serde(default)]
    payment_method: Option<String>,
    /// Free-form labels kept with the intent (e.g. the order id).
    #[serde(default)]
    metadata: Option<serde_json::Map<String, Value>>,
}

async fn create(State(psp): State<Arc<Psp>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(key) = idempotency_key(&headers) else {
        return error(
            StatusCode::BAD_REQUEST,
            "missing_idempotency_key",
            "POST /v1/payment_intents needs an Idempotency-Key header",
        );
    };
    let request: CreateRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_request", e.to_string()),
    };
    if request.amount_minor <= 0 {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_amount",
            "amount_minor must be a positive integer",
        );
    }
    if request.currency.len() != 3 || !request.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_currency",
            "currency must be an ISO 4217 code such as USD",
        );
    }
    // The fingerprint: the parsed body in canonical (sorted-key) form.
    let fingerprint = match serde_json::from_slice::<Value>(&body) {
        Ok(value) => format!("create {value}"),
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_request", e.to_string()),
    };
    let action = Action::Create {
        amount_minor: request.amount_minor,
        currency: request.currency,
        declined: request.payment_method.as_deref() == Some("pm_card_declined"),
        metadata: request.metadata.unwrap_or_default(),
    };
    idempotent(&psp, Some(key), fingerprint, action).await
}

async fn transition(
    State(psp): State<Arc<Psp>>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let action = match action.as_str() {
        "capture" => Action::Capture(id),
        "void" => Action::Void(id),
        "refund" => Action::Refund(id),
        other => {
            return error(
                StatusCode::NOT_FOUND,
                "unknown_action",
                format!("no action `{other}`; use capture, void or refund"),
            );
        }
    };
    let fingerprint = format!("{action:?}");
    idempotent(&psp, idempotency_key(&headers), fingerprint, action).await
}

fn idempotency_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get(IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .map(str::to_string)
}

/// Runs `action` under the idempotency rules and the injected faults.
async fn idempotent(
    psp: &Psp,
    key: Option<String>,
    fingerprint: String,
    action: Action,
) -> Response {
    let faults = psp.faults.lock().clone();
    if rand::random::<f64>() < faults.error_rate {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "simulated_outage",
            "the PSP is failing (injected error); nothing was done",
        );
    }
    let mut claim = KeyClaim { psp, key: None };
    if let Some(key) = &key {
        match psp.ledger.lock().begin(key, &fingerprint) {
            Ok(()) => claim.key = Some(key.clone()),
            Err(Outcome::Replay(status, body)) => {
                let mut response = (status, axum::Json(body)).into_response();
                response.headers_mut().insert(
                    IDEMPOTENT_REPLAYED,
                    axum::http::HeaderValue::from_static("true"),
                );
                return response;
            }
            Err(Outcome::Mismatch) => {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
                    "this Idempotency-Key was used for a different request",
                );
            }
            Err(Outcome::InFlight) => {
                return error(
                    StatusCode::CONFLICT,
                    "idempotency_key_in_use",
                    "a request with this Idempotency-Key is still being processed",
                );
            }
        }
    }
    // Processing time, inside the idempotency window.
    tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    let (status, body) = {
        let mut ledger = psp.ledger.lock();
        let (status, body) = ledger.apply(action, key.as_deref());
        if let Some(key) = claim.key.take() {
            ledger.finish(&key, status, body.clone());
        }
        (status, body)
    };
    if rand::random::<f64>() < faults.timeout_rate {
        tokio::time::sleep(Duration::from_millis(faults.timeout_delay_ms)).await;
    }
    (status, axum::Json(body)).into_response()
}

/// A claimed idempotency key whose request has not finished: released if
/// the request is dropped (client gone) before it did anything, so the key
/// is not stuck "in use".
struct KeyClaim<'a> {
    psp: &'a Psp,
    key: Option<String>,
}

impl Drop for KeyClaim<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.psp.ledger.lock().abandon(&key);
        }
    }
}

async fn show(State(psp): State<Arc<Psp>>, Path(id): Path<String>) -> Response {
    match psp.ledger.lock().intent(&id) {
        Some(intent) => axum::Json(intent).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no payment intent {id}"),
        ),
    }
}

#[derive(Deserialize)]
struct KeyQuery {
    idempotency_key: String,
}

async fn find_by_key(State(psp): State<Arc<Psp>>, Query(query): Query<KeyQuery>) -> Response {
    match psp.ledger.lock().intent_by_key(&query.idempotency_key) {
        Some(intent) => axum::Json(intent).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no payment intent was created with this Idempotency-Key",
        ),
    }
}

async fn ledger(State(psp): State<Arc<Psp>>) -> Response {
    let intents = psp.ledger.lock().intents();
    axum::Json(json!({ "psp": psp.name, "payment_intents": intents })).into_response()
}

async fn faults(State(psp): State<Arc<Psp>>) -> Response {
    axum::Json(psp.faults.lock().clone()).into_response()
}

async fn set_faults(State(psp): State<Arc<Psp>>, body: Bytes) -> Response {
    let faults: Faults = match serde_json::from_slice(&body) {
        Ok(faults) => faults,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_request", e.to_string()),
    };
    if let Err(message) = faults.validate() {
        return error(StatusCode::BAD_REQUEST, "invalid_faults", message);
    }
    *psp.faults.lock() = faults.clone();
    axum::Json(faults).into_response()
}
