//! `POST /v1/checkout`.
//!
//! - `Idempotency-Key` is required (1–255 visible ASCII characters; else
//!   400), scoped to the shopper. The order row claims it (after the
//!   prices are read, before the saga starts; a request that ends before
//!   the insert looks the key up instead): a repeat with the same body
//!   gets the stored answer (`Idempotent-Replayed: true`), waiting up to
//!   `duplicate_wait` while the first still runs (then 409); a repeat with
//!   another body is a 422.
//! - The body: `{}` or `{"payment_method": "...", "expected_total":
//!   {"amount_minor": …, "currency": "USD"}}`.
//! - Prices are read on the primary. A line whose price changed since it
//!   was added (or a total other than `expected_total`) is a 409
//!   `price-changed` carrying the repriced cart, and the cart now holds the
//!   new prices: the shopper is never charged a price they were not shown.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::CheckoutState;
use super::saga::Progress;
use super::store::{self, NewOrder};
use crate::cart::CartKey;
use crate::cart::handlers::{priced, redis_error, store as cart_store};
use crate::catalog::store::{Sellable, sellables};
use crate::flash;
use crate::identity::{Shopper, UserId};
use crate::modes::guard::Writable;
use crate::orders::handlers::shard_error;
use crate::orders::model::{Order, OrderId, OrderLine, OrderState};
use crate::orders::shards::Shard;
use crate::problem::{ApiError, ApiJson, PROBLEM_JSON};

pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Longest accepted Idempotency-Key.
pub const MAX_KEY_LENGTH: usize = 255;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    #[serde(default)]
    pub payment_method: Option<String>,
    #[serde(default)]
    pub expected_total: Option<ExpectedTotal>,
    /// Buy a unit won in this flash sale (instead of the cart).
    #[serde(default)]
    pub flash_sale: Option<i64>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectedTotal {
    pub amount_minor: i64,
    pub currency: String,
}

fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let value = headers.get(&IDEMPOTENCY_KEY).ok_or_else(|| {
        ApiError::BadRequest("POST /v1/checkout needs an `Idempotency-Key` header".into())
    })?;
    let key = value
        .to_str()
        .map_err(|_| ApiError::BadRequest("`Idempotency-Key` must be visible ASCII".into()))?
        .trim();
    if key.is_empty() || key.len() > MAX_KEY_LENGTH || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::BadRequest(format!(
            "`Idempotency-Key` must be 1 to {MAX_KEY_LENGTH} visible ASCII characters"
        )));
    }
    Ok(key.to_string())
}

/// The body in a canonical form (object keys sorted at every level), so
/// the same request always hashes the same.
fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let sorted: BTreeMap<&String, Value> =
                map.iter().map(|(k, v)| (k, canonical(v))).collect();
            Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

fn request_hash(body: &Value) -> String {
    let text = canonical(body).to_string();
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(text.as_bytes()))
}

/// A stored answer, as first given.
fn replay(status: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    answer(status, body, true)
}

fn answer(status: StatusCode, body: Value, replayed: bool) -> Response {
    let location = (status == StatusCode::CREATED)
        .then(|| body["id"].as_str().map(|id| format!("/v1/orders/{id}")))
        .flatten();
    let mut response = (status, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    if status.is_client_error() || status.is_server_error() {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if let Some(location) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        headers.insert(header::LOCATION, location);
    }
    if replayed {
        headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

/// What an earlier request under the same key says: `None` if there was
/// none; waits while it is still running.
async fn earlier(
    state: &CheckoutState,
    shard: &Shard,
    user: &UserId,
    key: &str,
    hash: &str,
) -> Result<Option<Response>, ApiError> {
    let deadline = Instant::now() + state.config.duplicate_wait;
    loop {
        let found = store::find_by_key(&shard.pool, user.as_str(), key)
            .await
            .map_err(|e| shard_error(&shard.name, &e))?;
        let Some(found) = found else {
            return Ok(None);
        };
        if found.request_hash != hash {
            return Err(ApiError::Unprocessable(
                "this Idempotency-Key was already used for a different checkout request".into(),
            ));
        }
        if let Some((status, body)) = found.response {
            state
                .metrics
                .checkouts
                .with_label_values(&["replayed"])
                .inc();
            return Ok(Some(replay(status, body)));
        }
        if Instant::now() >= deadline {
            // Still running: the same order, not a new one.
            return Ok(Some(accepted(&found.id, &found.state)));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn price_changed(detail: &str, cart: Value) -> ApiError {
    let mut extensions = serde_json::Map::new();
    extensions.insert("cart".into(), cart);
    ApiError::detailed(StatusCode::CONFLICT, "price-changed", detail, extensions)
}

#[utoipa::path(post, path = "/v1/checkout", tag = "checkout", security(("shopper" = [])),
    params(("Idempotency-Key" = String, Header, description = "1–255 visible ASCII characters; the same key and body replay the first answer")),
    request_body = CheckoutRequest,
    responses((status = 201, description = "The order", body = crate::orders::model::OrderView),
        (status = 202, description = "Still being placed past the deadline; follow Location", body = serde_json::Value)))]
#[tracing::instrument(skip_all, fields(user))]
pub async fn checkout(
    State(state): State<CheckoutState>,
    shopper: Shopper,
    _writable: Writable,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let user = shopper.user()?.clone();
    tracing::Span::current().record("user", user.as_str());
    let key = idempotency_key(&headers)?;
    if !body.is_object() {
        return Err(ApiError::Unprocessable(
            "the checkout body must be a JSON object".into(),
        ));
    }
    let request: CheckoutRequest = serde_json::from_value(body.clone())
        .map_err(|e| ApiError::Unprocessable(format!("checkout body: {e}")))?;
    if let Some(method) = &request.payment_method
        && (method.is_empty()
            || method.len() > 64
            || !method
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    {
        return Err(ApiError::Unprocessable(
            "`payment_method` is 1 to 64 letters, digits and underscores".into(),
        ));
    }
    let hash = request_hash(&body);
    state.saga()?;

    // The checkout runs as its own task, so a client that gives up (or
    // the deadline) never cuts a step in half; past `deadline` the
    // shopper is told where the order stands instead of waiting.
    let task = {
        let (state, user, key, hash) = (state.clone(), user.clone(), key.clone(), hash.clone());
        // In the request's trace: its spans and payment calls belong to it.
        tokio::spawn(meridian_telemetry::in_current_trace(async move {
            place(&state, &user, &key, &hash, &request, started).await
        }))
    };
    match tokio::time::timeout(state.config.deadline, task).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(error)) => Err(ApiError::internal(error)),
        Err(_) => past_deadline(&state, &user, &key).await,
    }
}

/// The checkout's answer once its deadline passed while it still runs:
/// the order as it stands (`202 Accepted`, `Location`: the same order a
/// retry with the same key gets), or `503` + `Retry-After` when no order
/// was written yet, or when the order shard cannot say in time (either
/// way, a retry with the same key gets the one order, if there is one).
async fn past_deadline(
    state: &CheckoutState,
    user: &UserId,
    key: &str,
) -> Result<Response, ApiError> {
    let (_, shards) = state.saga()?;
    let shard = shards.for_user(user);
    let found = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        store::find_by_key(&shard.pool, user.as_str(), key),
    )
    .await;
    match found {
        Ok(Ok(Some(found))) => Ok(match found.response {
            Some((status, body)) => replay(status, body),
            None => accepted(&found.id, &found.state),
        }),
        Ok(Ok(None)) => Err(ApiError::Unavailable(
            "the checkout did not finish in time and nothing was written yet; retry with the same Idempotency-Key".into(),
        )),
        Ok(Err(_)) | Err(_) => Err(ApiError::Unavailable(
            "the checkout did not finish in time and the order store cannot say yet whether an order was written; retry with the same Idempotency-Key (it never places a second order)".into(),
        )),
    }
}

/// `202 Accepted` for an order still being placed.
fn accepted(id: &str, order_state: &str) -> Response {
    let mut response = answer(
        StatusCode::ACCEPTED,
        json!({
            "id": id,
            "state": order_state,
            "status": "processing",
            "detail": "the order is still being placed; follow Location, or retry with the same Idempotency-Key",
        }),
        false,
    );
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/orders/{id}")) {
        headers.insert(header::LOCATION, location);
    }
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Prices, claims the key with the order row and runs the saga.
async fn place(
    state: &CheckoutState,
    user: &UserId,
    key: &str,
    hash: &str,
    request: &CheckoutRequest,
    started: Instant,
) -> Result<Response, ApiError> {
    let state = state.clone();
    let (saga, shards) = state.saga()?;
    let shard = shards.for_user(user);
    let key = key.to_string();
    let hash = hash.to_string();
    let user = user.clone();

    // Most keys are new: price first and let the order row's insert claim
    // the key. Whatever stops before the insert (the cart was emptied by
    // the first checkout under this key, say) asks about the key first, so
    // a repeat always gets the first answer.
    let priced = match request.flash_sale {
        Some(sale) => flash_order(&state, sale, &user).await,
        None => cart_order(&state, &user, request).await,
    };
    let priced = match priced {
        Ok(priced) => priced,
        Err(error) => {
            return match earlier(&state, shard, &user, &key, &hash).await? {
                Some(replayed) => Ok(replayed),
                None => Err(error),
            };
        }
    };
    let Priced {
        lines: order_lines,
        currency,
        total,
        reservation_id,
        flash,
    } = priced;

    // Claim the key with the order row, then run the saga.
    let id = OrderId::new(&shard.name);
    let new = NewOrder {
        id: &id,
        user_id: user.as_str(),
        idempotency_key: &key,
        request_hash: &hash,
        currency: &currency,
        total_minor: total,
        lines: &order_lines,
        reservation_id,
    };
    let inserted = store::insert_pending(&shard.pool, &new)
        .await
        .map_err(|e| shard_error(&shard.name, &e))?;
    if !inserted {
        // A concurrent duplicate claimed the key first: its answer is ours.
        return match earlier(&state, shard, &user, &key, &hash).await? {
            Some(replayed) => Ok(replayed),
            None => Err(ApiError::Conflict(
                "a concurrent checkout with this Idempotency-Key was withdrawn; retry".into(),
            )),
        };
    }
    let order = Order {
        id,
        user_id: user.as_str().to_string(),
        state: OrderState::Pending,
        currency,
        total_minor: total,
        lines: order_lines,
        reservation_id,
        psp: None,
        payment_intent: None,
        unknown_psps: Vec::new(),
        failure_reason: None,
        has_response: false,
        created_at: chrono::Utc::now(),
        updated_at: chrono::Utc::now(),
    };
    let progress = saga
        .place(shard, order, request.payment_method.as_deref())
        .await;
    state
        .metrics
        .checkout_duration
        .observe(started.elapsed().as_secs_f64());
    match progress {
        Progress::Settled { status, body } => {
            if status == StatusCode::CREATED {
                let done = match flash {
                    Some((sale, slot)) => flash::store::mark_purchased(&state.db, sale, slot)
                        .await
                        .map_err(|e| e.to_string()),
                    None => match cart_store(&state.cart) {
                        Ok(carts) => carts
                            .clear(&CartKey::User(user.as_str().to_string()))
                            .await
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    },
                };
                if let Err(error) = done {
                    tracing::warn!(%error, "cart or flash claim not cleared after checkout");
                }
            }
            Ok(answer(status, body, false))
        }
        Progress::Pending(error) => Err(error),
    }
}

/// What an order will hold, priced.
struct Priced {
    lines: Vec<OrderLine>,
    currency: String,
    total: i64,
    reservation_id: Option<i64>,
    /// The flash-sale unit bought: `(sale, slot)`.
    flash: Option<(i64, i32)>,
}

/// The shopper's cart, priced on the primary; a changed price is a 409.
async fn cart_order(
    state: &CheckoutState,
    user: &UserId,
    request: &CheckoutRequest,
) -> Result<Priced, ApiError> {
    let cart = CartKey::User(user.as_str().to_string());
    let carts = cart_store(&state.cart)?;
    let lines = carts
        .lines(&cart)
        .await
        .map_err(|e| redis_error(&state.cart, "read", e))?;
    if lines.is_empty() {
        return Err(ApiError::Unprocessable("the cart is empty".into()));
    }
    let skus: Vec<String> = lines.iter().map(|l| l.sku.clone()).collect();
    let (found, _) = state
        .db
        .read_primary()
        .run(|conn| {
            let skus = skus.clone();
            async move { sellables(conn.pool(), &skus).await }
        })
        .await?;
    let catalog: HashMap<&str, &Sellable> = found.iter().map(|s| (s.sku.as_str(), s)).collect();
    let gone: Vec<&str> = lines
        .iter()
        .filter(|l| !catalog.contains_key(l.sku.as_str()))
        .map(|l| l.sku.as_str())
        .collect();
    if !gone.is_empty() {
        let mut extensions = serde_json::Map::new();
        extensions.insert("skus".into(), json!(gone));
        return Err(ApiError::detailed(
            StatusCode::CONFLICT,
            "items-unavailable",
            "some items in the cart are no longer sold; remove them and try again",
            extensions,
        ));
    }
    let mut changed = false;
    let mut order_lines = Vec::with_capacity(lines.len());
    let mut total: i64 = 0;
    let mut currency: Option<&str> = None;
    for line in &lines {
        let now = catalog[line.sku.as_str()];
        if line
            .added_price
            .as_ref()
            .is_none_or(|(minor, cur)| *minor != now.price_minor || *cur != now.currency)
        {
            changed = true;
            carts
                .reprice(&cart, &line.sku, (now.price_minor, &now.currency))
                .await
                .map_err(|e| redis_error(&state.cart, "update", e))?;
        }
        match currency {
            None => currency = Some(&now.currency),
            Some(c) if c == now.currency => {}
            Some(_) => {
                return Err(ApiError::Unprocessable(
                    "the cart mixes currencies; check out each currency separately".into(),
                ));
            }
        }
        total = total.saturating_add(now.price_minor.saturating_mul(i64::from(line.quantity)));
        order_lines.push(OrderLine {
            sku: line.sku.clone(),
            name: now.name.clone(),
            quantity: line.quantity,
            unit_price_minor: now.price_minor,
        });
    }
    let currency = currency.unwrap_or("USD").to_string();
    if changed {
        state
            .metrics
            .checkouts
            .with_label_values(&["price_changed"])
            .inc();
        let view = priced(&state.cart, Some(&cart)).await?;
        return Err(price_changed(
            "prices changed since these items were added; review the cart and check out again",
            serde_json::to_value(view).unwrap_or(Value::Null),
        ));
    }
    if let Some(expected) = &request.expected_total
        && (expected.amount_minor != total || expected.currency != currency)
    {
        let view = priced(&state.cart, Some(&cart)).await?;
        return Err(price_changed(
            "the cart total is not the expected total",
            serde_json::to_value(view).unwrap_or(Value::Null),
        ));
    }

    Ok(Priced {
        lines: order_lines,
        currency,
        total,
        reservation_id: None,
        flash: None,
    })
}

/// One unit won in flash sale `sale`, at the sale price, with its hold.
async fn flash_order(state: &CheckoutState, sale: i64, user: &UserId) -> Result<Priced, ApiError> {
    let unit = flash::store::won_unit(&state.db, sale, user.as_str())
        .await?
        .ok_or_else(|| {
            ApiError::Conflict(format!(
                "no unit of flash sale {sale} is held for you (a claim may still be queued)"
            ))
        })?;
    let wanted = vec![unit.sku.clone()];
    let (found, _) = state
        .db
        .read_primary()
        .run(|conn| {
            let wanted = wanted.clone();
            async move { sellables(conn.pool(), &wanted).await }
        })
        .await?;
    let item = found
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::Conflict(format!("{} is no longer sold", unit.sku)))?;
    let price = unit.price_minor.unwrap_or(item.price_minor);
    Ok(Priced {
        lines: vec![OrderLine {
            sku: unit.sku,
            name: item.name,
            quantity: 1,
            unit_price_minor: price,
        }],
        currency: item.currency,
        total: price,
        reservation_id: Some(unit.reservation_id),
        flash: Some((sale, unit.slot)),
    })
}
