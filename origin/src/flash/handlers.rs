//! The flash-sale HTTP API.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::FlashState;
use super::gate::{Claim, Opening};
use super::store;
use crate::auth::{Admin, Catalog};
use crate::catalog::model::Sku;
use crate::catalog::store::sellables;
use crate::identity::Shopper;
use crate::modes::guard::Writable;
use crate::problem::{ApiError, ApiJson, ApiPath};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSale {
    pub sku: String,
    pub quantity: i64,
    #[serde(default = "one")]
    pub per_user_limit: i64,
    /// The sale price in minor units; default: the catalog price.
    #[serde(default)]
    pub price_minor: Option<i64>,
    /// How long the sale runs (default 1h), e.g. `90m`.
    #[serde(default, with = "humantime_serde")]
    #[schema(value_type = Option<String>)]
    pub duration: Option<Duration>,
    /// How long a won unit is held for checkout (default 10m), e.g. `10m`.
    #[serde(default, with = "humantime_serde")]
    #[schema(value_type = Option<String>)]
    pub hold: Option<Duration>,
}

fn one() -> i64 {
    1
}

/// A sale id in its one spelling (the parser the edge's waiting room
/// uses too, so no spelling of an id skips the queue).
fn sale_id(raw: &str) -> Result<i64, ApiError> {
    meridian_contracts::ids::ResourceId::parse(raw)
        .map(|id| id.get())
        .map_err(|error| ApiError::BadRequest(format!("not a flash sale id: {error}")))
}

fn gate_error(state: &FlashState, error: super::gate::GateError) -> ApiError {
    tracing::warn!(%error, "flash-sale gate failed");
    state
        .metrics
        .flash_claims
        .with_label_values(&["error"])
        .inc();
    ApiError::Unavailable("the flash-sale gate is unreachable; retry shortly".into())
}

/// A sale as opened.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SaleOpened {
    pub id: i64,
    pub sku: String,
    pub quantity: i32,
    pub per_user_limit: i32,
    /// The sale price in minor units; null: the variant's price.
    pub price_minor: Option<i64>,
    /// The region whose shoppers can claim it.
    pub region: String,
    pub ends_at: DateTime<Utc>,
}

/// A won claim, queued to be recorded in the ledger.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClaimWon {
    pub sale_id: i64,
    /// The unit's slot in the sale (1..quantity).
    pub slot: u32,
    /// The caller's how-many-th unit of this sale (1-based).
    pub unit: u32,
    /// Always `queued`.
    pub status: String,
}

/// One recorded claim of the caller.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecordedClaim {
    pub slot: i32,
    /// `reserved` (a unit held for the caller), `purchased` or `failed`.
    pub state: String,
    /// The stock reservation holding the unit, once recorded.
    pub reservation_id: Option<i64>,
}

/// The caller's recorded claims of a sale.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MyClaims {
    pub sale_id: i64,
    pub claims: Vec<RecordedClaim>,
}

/// A sale's books: the ledger's counts beside the gate's counter.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SaleReport {
    pub id: i64,
    pub sku: String,
    pub quantity: i32,
    /// `open`, `closing` (ended, claims still being recorded) or `closed`.
    pub state: String,
    pub ends_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    /// Recorded claims per ledger state.
    pub claims: BTreeMap<String, i64>,
    /// Units the gate can still give; null when the gate is unreachable.
    pub gate_remaining: Option<i64>,
    /// Won but not yet recorded; null when the gate is unreachable.
    pub queued: Option<i64>,
}

fn no_store(status: StatusCode, body: impl Serialize) -> Response {
    (
        status,
        [(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-store"),
        )],
        axum::Json(body),
    )
        .into_response()
}

/// Opens a sale of `quantity` units of `sku` in this origin's region.
#[utoipa::path(post, path = "/v1/admin/flash-sales", tag = "admin", security(("admin" = [])), request_body = NewSale,
    responses((status = 201, description = "The sale", body = SaleOpened)))]
pub async fn create(
    State(state): State<FlashState>,
    admin: Admin<Catalog>,
    ApiJson(input): ApiJson<NewSale>,
) -> Result<Response, ApiError> {
    let gate = state.gate()?;
    let sku = Sku::parse(&input.sku)?;
    if !(1..=1_000_000).contains(&input.quantity) {
        return Err(ApiError::Unprocessable(
            "quantity must be between 1 and 1000000".into(),
        ));
    }
    if !(1..=100).contains(&input.per_user_limit) {
        return Err(ApiError::Unprocessable(
            "per_user_limit must be between 1 and 100".into(),
        ));
    }
    if input
        .price_minor
        .is_some_and(|p| !(0..=1_000_000_000_000).contains(&p))
    {
        return Err(ApiError::Unprocessable(
            "price_minor is out of range".into(),
        ));
    }
    let duration = input.duration.unwrap_or(Duration::from_secs(3600));
    let hold = input.hold.unwrap_or(Duration::from_secs(600));
    if duration < Duration::from_secs(1) || duration > Duration::from_secs(30 * 86_400) {
        return Err(ApiError::Unprocessable(
            "duration must be between 1s and 30 days".into(),
        ));
    }
    if hold < Duration::from_secs(1) || hold > Duration::from_secs(86_400) {
        return Err(ApiError::Unprocessable(
            "hold must be between 1s and 1 day".into(),
        ));
    }
    let (quantity, limit) = (input.quantity as i32, input.per_user_limit as i32);
    let write = state.db.write();
    let mut tx = write.begin().await?;
    let wanted = vec![sku.as_str().to_string()];
    if sellables(&mut *tx, &wanted).await?.is_empty() {
        return Err(ApiError::NotFound(format!(
            "no sellable SKU {}",
            sku.as_str()
        )));
    }
    let available = sqlx::query_scalar!(
        r#"select (on_hand - reserved)::bigint as "available!" from inventory where sku = $1"#,
        sku.as_str()
    )
    .fetch_optional(&mut *tx)
    .await?
    .unwrap_or(0);
    if available < input.quantity {
        return Err(ApiError::Conflict(format!(
            "only {available} units of {} are available for a sale of {}",
            sku.as_str(),
            input.quantity
        )));
    }
    let duration_ms = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
    let hold_ms = i64::try_from(hold.as_millis()).unwrap_or(i64::MAX);
    let created = sqlx::query!(
        r#"
        insert into flash_sales (sku, quantity, per_user_limit, price_minor, region, hold_ms, ends_at)
        values ($1, $2, $3, $4, $5, $6, now() + $7 * interval '1 millisecond')
        returning id, ends_at
        "#,
        sku.as_str(),
        quantity,
        limit,
        input.price_minor,
        state.region,
        hold_ms,
        duration_ms as f64
    )
    .fetch_one(&mut *tx)
    .await
    ?;
    write.commit(tx).await?;
    let (id, ends_at) = (created.id, created.ends_at);
    // A gate that cannot be opened now is opened by the region's workers,
    // which rebuild the gate of every open sale Redis does not know.
    let opening = Opening {
        quantity,
        limit,
        remaining: quantity,
        ends_at,
    };
    if let Err(error) = gate.open(id, opening, &[]).await {
        tracing::warn!(sale = id, %error, "flash-sale gate not opened yet; the workers will");
    }
    tracing::info!(admin = %admin.name, sale = id, sku = sku.as_str(), quantity, "flash sale opened");
    Ok(no_store(
        StatusCode::CREATED,
        SaleOpened {
            id,
            sku: sku.as_str().to_string(),
            quantity,
            per_user_limit: limit,
            price_minor: input.price_minor,
            region: state.region.clone(),
            ends_at,
        },
    ))
}

/// Marks a sold-out answer, for the edge's waiting room.
pub const SOLD_OUT: HeaderName = HeaderName::from_static("x-meridian-sold-out");

/// One claim: an answer from Redis alone.
#[utoipa::path(post, path = "/v1/flash-sales/{id}/claim", tag = "flash-sales", security(("shopper" = [])), params(crate::openapi::IdPath),
    responses((status = 202, description = "Won: queued to be recorded", body = ClaimWon)))]
pub async fn claim(
    State(state): State<FlashState>,
    shopper: Shopper,
    _writable: Writable,
    ApiPath(raw): ApiPath<String>,
) -> Result<Response, ApiError> {
    let user = shopper.user()?;
    let id = sale_id(&raw)?;
    let gate = state.gate()?;
    let outcome = gate
        .claim(id, user.as_str())
        .await
        .map_err(|e| gate_error(&state, e))?;
    let (label, result) = match outcome {
        Claim::Won { slot, user_seq } => (
            "won",
            Ok(no_store(
                StatusCode::ACCEPTED,
                ClaimWon {
                    sale_id: id,
                    slot,
                    unit: user_seq,
                    status: "queued".into(),
                },
            )),
        ),
        // The header tells the edge's waiting room to stop queueing.
        Claim::SoldOut => (
            "sold_out",
            Ok((
                [(SOLD_OUT, HeaderValue::from_static("true"))],
                flash_problem(
                    StatusCode::CONFLICT,
                    "sold-out",
                    "the flash sale is sold out",
                    id,
                ),
            )
                .into_response()),
        ),
        Claim::LimitReached => (
            "limit",
            Err(flash_problem(
                StatusCode::CONFLICT,
                "claim-limit",
                "you have claimed as many units of this sale as allowed",
                id,
            )),
        ),
        Claim::Closed => (
            "closed",
            Err(flash_problem(
                StatusCode::GONE,
                "sale-closed",
                "the flash sale is closed",
                id,
            )),
        ),
        // Redis does not know it: a sale that ended (and whose gate is
        // gone) is still a 410, not a 404.
        Claim::NoSuchSale => match store::sale(&state.db, id).await {
            Ok(Some(sale)) if sale.ends_at <= chrono::Utc::now() => (
                "closed",
                Err(flash_problem(
                    StatusCode::GONE,
                    "sale-closed",
                    "the flash sale is closed",
                    id,
                )),
            ),
            Ok(_) => (
                "unknown",
                Err(ApiError::NotFound(
                    "no such flash sale in this region".into(),
                )),
            ),
            Err(error) => ("error", Err(ApiError::from(error))),
        },
    };
    state.metrics.flash_claims.with_label_values(&[label]).inc();
    result
}

fn flash_problem(status: StatusCode, slug: &'static str, detail: &str, sale: i64) -> ApiError {
    let mut extensions = serde_json::Map::new();
    extensions.insert("sale_id".into(), json!(sale));
    ApiError::detailed(status, slug, detail, extensions)
}

/// The caller's claims of a sale as the ledger records them.
#[utoipa::path(get, path = "/v1/flash-sales/{id}/claims", tag = "flash-sales", security(("shopper" = [])), params(crate::openapi::IdPath),
    responses((status = 200, description = "The caller's recorded claims", body = MyClaims)))]
pub async fn my_claims(
    State(state): State<FlashState>,
    shopper: Shopper,
    ApiPath(raw): ApiPath<String>,
) -> Result<Response, ApiError> {
    let user = shopper.user()?;
    let id = sale_id(&raw)?;
    let claims = store::claims_of(&state.db, id, user.as_str()).await?;
    let claims = claims
        .into_iter()
        .map(|(slot, state, reservation_id)| RecordedClaim {
            slot,
            state,
            reservation_id,
        })
        .collect();
    Ok(no_store(
        StatusCode::OK,
        MyClaims {
            sale_id: id,
            claims,
        },
    ))
}

/// Ends a sale now: no claim is won from here on; claims won before are
/// still recorded, then the sale is closed (`state` in the report).
#[utoipa::path(post, path = "/v1/admin/flash-sales/{id}/close", tag = "admin", security(("admin" = [])), params(crate::openapi::IdPath),
    responses((status = 200, description = "The sale's books", body = SaleReport)))]
pub async fn close(
    State(state): State<FlashState>,
    admin: Admin<Catalog>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Response, ApiError> {
    let id = sale_id(&raw)?;
    let gate = state.gate()?;
    // Only this region's sales: another region's is left untouched.
    store::end_now(&state.db, id, &state.region)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such flash sale in this region".into()))?;
    // The gate is closed by the workers too; closing it here stops claims
    // at once.
    if let Err(error) = gate.close(id).await {
        tracing::warn!(sale = id, %error, "flash-sale gate not closed yet; its end date closes it");
    }
    tracing::info!(admin = %admin.name, sale = id, "flash sale closed by an admin");
    report(State(state), admin, ApiPath(raw)).await
}

/// A sale's books: the ledger's counts beside the gate's counter.
#[utoipa::path(get, path = "/v1/admin/flash-sales/{id}", tag = "admin", security(("admin" = [])), params(crate::openapi::IdPath),
    responses((status = 200, description = "The sale's books", body = SaleReport)))]
pub async fn report(
    State(state): State<FlashState>,
    _admin: Admin<Catalog>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Response, ApiError> {
    let id = sale_id(&raw)?;
    let sale = store::sale(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such flash sale".into()))?;
    let counts = store::claim_counts(&state.db, id).await?;
    let recorded: i64 = counts.iter().map(|(_, n)| n).sum();
    let remaining = match state.gate() {
        Ok(gate) => gate.remaining(id).await.ok().flatten(),
        Err(_) => None,
    };
    let queued = remaining.map(|r| i64::from(sale.quantity) - r - recorded);
    let closed_at = store::closed_at(&state.db, id).await?;
    let lifecycle = match sale.state.as_str() {
        "open" if sale.ends_at <= chrono::Utc::now() => "closing",
        other => other,
    };
    Ok(no_store(
        StatusCode::OK,
        SaleReport {
            id: sale.id,
            sku: sale.sku,
            quantity: sale.quantity,
            state: lifecycle.to_string(),
            ends_at: sale.ends_at,
            closed_at,
            claims: counts.into_iter().collect(),
            gate_remaining: remaining,
            queued,
        },
    ))
}
