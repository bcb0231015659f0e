//! `GET /v1/orders` and `GET /v1/orders/{id}`: the caller's orders, from
//! their shard only. Another user's order is a 404, exactly like an order
//! that does not exist; a shard that is down is a 503 with `Retry-After`
//! for its users only.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use super::OrdersState;
use super::model::{OrderId, OrderView};
use super::store;
use crate::db::is_failover_error;
use crate::identity::Shopper;
use crate::problem::{ApiError, ApiPath, ApiQuery};

const DEFAULT_LIMIT: i64 = 20;
const MAX_LIMIT: i64 = 100;

/// A shard error as a response: unreachable → 503, else 500.
pub fn shard_error(shard: &str, error: &sqlx::Error) -> ApiError {
    if is_failover_error(error) {
        tracing::warn!(shard, %error, "order shard unavailable");
        ApiError::Unavailable(
            "the database holding your orders is unavailable; retry shortly".into(),
        )
    } else {
        ApiError::Internal(Box::new(std::io::Error::other(error.to_string())))
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrderPage {
    pub items: Vec<OrderView>,
    pub next_cursor: Option<String>,
}

fn private<T: Serialize>(body: T) -> Response {
    (
        [(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-store"),
        )],
        axum::Json(body),
    )
        .into_response()
}

fn decode_cursor(raw: &str) -> Result<OrderId, ApiError> {
    let bad = || ApiError::BadRequest("`cursor` is not a cursor this API issued".into());
    if raw.len() > 200 {
        return Err(bad());
    }
    let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| bad())?;
    let text = std::str::from_utf8(&bytes).map_err(|_| bad())?;
    let id = text.strip_prefix("o1:").ok_or_else(bad)?;
    OrderId::parse(id).map_err(|_| bad())
}

#[utoipa::path(get, path = "/v1/orders", tag = "orders", security(("shopper" = [])), params(ListQuery),
    responses((status = 200, description = "The shopper's orders, newest first", body = OrderPage)))]
pub async fn list(
    State(state): State<OrdersState>,
    shopper: Shopper,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let user = shopper.user()?;
    let limit = match query.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::BadRequest(format!("`limit` must be between 1 and {MAX_LIMIT}"))
            })?,
    };
    let before = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let shards = state.shards()?;
    let shard = shards.for_user(user);
    let orders = store::orders_of_user(
        &shard.pool,
        user.as_str(),
        before.as_ref().map(OrderId::as_str),
        limit + 1,
    )
    .await
    .map_err(|e| shard_error(&shard.name, &e))?;
    let more = orders.len() as i64 > limit;
    let items: Vec<OrderView> = orders
        .iter()
        .take(limit as usize)
        .map(|o| o.view())
        .collect();
    let next_cursor = more
        .then(|| {
            items
                .last()
                .map(|o| URL_SAFE_NO_PAD.encode(format!("o1:{}", o.id)))
        })
        .flatten();
    Ok(private(OrderPage { items, next_cursor }))
}

#[utoipa::path(get, path = "/v1/orders/{id}", tag = "orders", security(("shopper" = [])),
    params(("id" = String, Path, description = "An order id (`<shard>.<uuid>`)")),
    responses((status = 200, description = "The order", body = OrderView)))]
pub async fn show(
    State(state): State<OrdersState>,
    shopper: Shopper,
    ApiPath(raw): ApiPath<String>,
) -> Result<Response, ApiError> {
    let user = shopper.user()?;
    let id = OrderId::parse(&raw)?;
    let shards = state.shards()?;
    let Some(shard) = shards.for_order(&id) else {
        return Err(ApiError::NotFound("no such order".into()));
    };
    let order = store::order_of_user(&shard.pool, &id, user.as_str())
        .await
        .map_err(|e| shard_error(&shard.name, &e))?
        .ok_or_else(|| ApiError::NotFound("no such order".into()))?;
    Ok(private(order.view()))
}
