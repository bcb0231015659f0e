//! The inventory HTTP API: availability for shoppers (from a replica, so
//! it may trail the primary by the lag tolerance; the reservation is what
//! counts) and the admin's stock level.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::InventoryState;
use crate::auth::{Admin, Catalog};
use crate::catalog::handlers::LSN_HEADER;
use crate::catalog::model::Sku;
use crate::catalog::store;
use crate::problem::{ApiError, ApiJson, ApiPath};

/// Largest `on_hand` the admin API accepts.
pub const MAX_ON_HAND: i64 = 100_000_000;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AvailabilityView {
    pub sku: String,
    pub available: i64,
    pub in_stock: bool,
}

#[utoipa::path(get, path = "/v1/inventory/{sku}", tag = "inventory", params(crate::openapi::SkuPath),
    responses((status = 200, description = "Availability", body = AvailabilityView)))]
pub async fn availability(
    State(state): State<InventoryState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Response, ApiError> {
    let sku = Sku::parse(&raw).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let wanted = vec![sku.as_str().to_string()];
    let (found, _) = state
        .db
        .read()
        .run(|conn| {
            let wanted = wanted.clone();
            async move {
                let known = !store::sellables(conn.pool(), &wanted).await?.is_empty();
                let available = sqlx::query_scalar!(
                    r#"select (on_hand - reserved)::bigint as "available!" from inventory where sku = $1"#,
                    &wanted[0]
                )
                .fetch_optional(conn.pool())
                .await?;
                Ok((known, available))
            }
        })
        .await
        ?;
    let (known, available) = found;
    if !known {
        return Err(ApiError::NotFound(format!(
            "no sellable SKU {}",
            sku.as_str()
        )));
    }
    let available = available.unwrap_or(0).max(0);
    let body = AvailabilityView {
        sku: sku.as_str().to_string(),
        available,
        in_stock: available > 0,
    };
    Ok((
        [(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=0, s-maxage=1"),
        )],
        axum::Json(body),
    )
        .into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockInput {
    pub on_hand: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StockView {
    pub sku: String,
    pub on_hand: i32,
    pub reserved: i32,
    pub available: i32,
    pub sold: i64,
}

/// Sets the units in stock. It may not go below what reservations hold
/// (409): those units are promised to checkouts in flight.
#[utoipa::path(put, path = "/v1/admin/inventory/{sku}", tag = "admin", security(("admin" = [])), params(crate::openapi::SkuPath),
    request_body = StockInput, responses((status = 200, description = "Stock set", body = StockView)))]
#[tracing::instrument(skip(state, input), fields(admin = %admin.name))]
pub async fn set_on_hand(
    State(state): State<InventoryState>,
    admin: Admin<Catalog>,
    ApiPath(raw): ApiPath<String>,
    ApiJson(input): ApiJson<StockInput>,
) -> Result<Response, ApiError> {
    let sku = Sku::parse(&raw).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if !(0..=MAX_ON_HAND).contains(&input.on_hand) {
        return Err(ApiError::Unprocessable(format!(
            "on_hand must be between 0 and {MAX_ON_HAND}"
        )));
    }
    let on_hand = i32::try_from(input.on_hand).map_err(ApiError::internal)?;
    let write = state.db.write();
    let mut tx = write.begin().await?;
    let wanted = vec![sku.as_str().to_string()];
    if store::sellables(&mut *tx, &wanted).await?.is_empty() {
        return Err(ApiError::NotFound(format!(
            "no sellable SKU {}",
            sku.as_str()
        )));
    }
    let row = sqlx::query!(
        r#"
        insert into inventory as i (sku, on_hand) values ($1, $2)
        on conflict (sku) do update set on_hand = excluded.on_hand, updated_at = now()
            where i.reserved <= excluded.on_hand
        returning on_hand, reserved, sold
        "#,
        sku.as_str(),
        on_hand
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        let reserved = sqlx::query_scalar!(
            "select reserved from inventory where sku = $1",
            sku.as_str()
        )
        .fetch_one(&mut *tx)
        .await?;
        return Err(ApiError::Conflict(format!(
            "{reserved} units of {} are held by reservations; on_hand cannot go below that",
            sku.as_str()
        )));
    };
    let lsn = write.commit(tx).await?;
    tracing::info!(sku = sku.as_str(), on_hand, "stock set");
    let view = StockView {
        sku: sku.as_str().to_string(),
        on_hand: row.on_hand,
        reserved: row.reserved,
        available: row.on_hand - row.reserved,
        sold: row.sold,
    };
    let mut response = axum::Json(view).into_response();
    if let Ok(value) = HeaderValue::from_str(&lsn.to_string()) {
        response.headers_mut().insert(LSN_HEADER, value);
    }
    Ok(response)
}
