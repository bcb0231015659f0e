//! The cart HTTP API. Every answer is the whole cart, priced now, with
//! `Cache-Control: no-store`; a guest's first write sets the guest cookie,
//! and a signed-in request carrying one merges it and clears it.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::CartState;
use super::store::{CartKey, CartStore, CartStoreError, Change};
use crate::catalog::model::{PriceView, Sku};
use crate::catalog::store::{Sellable, price_view, sellables};
use crate::identity::{GuestId, Shopper, clear_guest_cookie};
use crate::modes::guard::Writable;
use crate::problem::{ApiError, ApiJson, ApiPath};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddItem {
    pub sku: String,
    #[serde(default = "one")]
    pub quantity: i64,
}

fn one() -> i64 {
    1
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateItem {
    pub quantity: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CartView {
    pub items: Vec<CartItemView>,
    pub item_count: u64,
    /// Sum of the current line totals; `null` if lines are in different
    /// currencies or the cart is empty.
    pub total: Option<PriceView>,
    /// True when any line's price differs from what it was when added.
    pub price_changed: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CartItemView {
    pub sku: String,
    pub quantity: u32,
    /// False when the SKU is no longer sold (it is left out of the total).
    pub available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The current unit price.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_price: Option<PriceView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line_total: Option<PriceView>,
    /// The unit price when the line was added.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub added_price: Option<PriceView>,
    pub price_changed: bool,
}

pub(crate) fn redis_error(state: &CartState, operation: &str, error: CartStoreError) -> ApiError {
    tracing::warn!(%error, operation, "cart store failed");
    state
        .metrics
        .cart_operations
        .with_label_values(&[operation, "error"])
        .inc();
    ApiError::Unavailable("the cart store is unreachable; retry shortly".into())
}

pub(crate) fn store(state: &CartState) -> Result<&CartStore, ApiError> {
    state
        .store
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("carts are not available in this region".into()))
}

/// The cart a request works on and the cookie its answer sets.
struct Resolved {
    cart: Option<CartKey>,
    set_cookie: Option<HeaderValue>,
}

/// Resolves the shopper's cart; merges a guest cart into a signed-in
/// shopper's, and gives a new guest a cart when `create` is set.
async fn resolve(state: &CartState, shopper: &Shopper, create: bool) -> Result<Resolved, ApiError> {
    let store = store(state)?;
    Ok(match shopper {
        Shopper::User { id, guest } => {
            let cart = CartKey::User(id.as_str().to_string());
            let mut set_cookie = None;
            if let Some(guest) = guest {
                let from = CartKey::Guest(guest.as_str().to_string());
                let merged = store
                    .merge(&from, &cart)
                    .await
                    .map_err(|e| redis_error(state, "merge", e))?;
                if let Some(lines) = merged {
                    tracing::info!(user = %id, lines, "guest cart merged");
                    state
                        .metrics
                        .cart_operations
                        .with_label_values(&["merge", "ok"])
                        .inc();
                }
                set_cookie = Some(clear_guest_cookie());
            }
            Resolved {
                cart: Some(cart),
                set_cookie,
            }
        }
        Shopper::Guest(Some(guest)) => Resolved {
            cart: Some(CartKey::Guest(guest.as_str().to_string())),
            set_cookie: None,
        },
        Shopper::Guest(None) if create => {
            let guest = GuestId::random();
            Resolved {
                set_cookie: state.auth.guest_cookie(&guest),
                cart: Some(CartKey::Guest(guest.as_str().to_string())),
            }
        }
        Shopper::Guest(None) => Resolved {
            cart: None,
            set_cookie: None,
        },
    })
}

/// Current catalog data for `skus`, from the read path.
async fn current(
    state: &CartState,
    skus: Vec<String>,
) -> Result<HashMap<String, Sellable>, ApiError> {
    if skus.is_empty() {
        return Ok(HashMap::new());
    }
    let (found, _) = state
        .db
        .read()
        .run(|conn| {
            let skus = skus.clone();
            async move { sellables(conn.pool(), &skus).await }
        })
        .await?;
    Ok(found.into_iter().map(|s| (s.sku.clone(), s)).collect())
}

/// The cart, priced now.
pub async fn priced(state: &CartState, cart: Option<&CartKey>) -> Result<CartView, ApiError> {
    let lines = match cart {
        Some(cart) => store(state)?
            .lines(cart)
            .await
            .map_err(|e| redis_error(state, "read", e))?,
        None => Vec::new(),
    };
    let catalog = current(state, lines.iter().map(|l| l.sku.clone()).collect()).await?;
    let mut items = Vec::with_capacity(lines.len());
    let mut total: Option<(i64, String)> = None;
    let mut mixed = false;
    for line in lines {
        let added = line
            .added_price
            .as_ref()
            .map(|(minor, currency)| price_view(*minor, currency));
        let Some(now) = catalog.get(&line.sku) else {
            items.push(CartItemView {
                sku: line.sku,
                quantity: line.quantity,
                available: false,
                product_id: None,
                name: None,
                unit_price: None,
                line_total: None,
                added_price: added,
                price_changed: false,
            });
            continue;
        };
        let line_minor = now.price_minor.saturating_mul(i64::from(line.quantity));
        match &mut total {
            None => total = Some((line_minor, now.currency.clone())),
            Some((sum, currency)) if *currency == now.currency => {
                *sum = sum.saturating_add(line_minor);
            }
            Some(_) => mixed = true,
        }
        let price_changed = line.added_price.as_ref().is_some_and(|(minor, currency)| {
            *minor != now.price_minor || *currency != now.currency
        });
        items.push(CartItemView {
            sku: line.sku,
            quantity: line.quantity,
            available: true,
            product_id: Some(now.product_id),
            name: Some(now.name.clone()),
            unit_price: Some(price_view(now.price_minor, &now.currency)),
            line_total: Some(price_view(line_minor, &now.currency)),
            added_price: added,
            price_changed,
        });
    }
    Ok(CartView {
        item_count: items.iter().map(|i| u64::from(i.quantity)).sum(),
        price_changed: items.iter().any(|i| i.price_changed),
        total: total
            .filter(|_| !mixed)
            .map(|(minor, currency)| price_view(minor, &currency)),
        items,
    })
}

fn respond(status: StatusCode, view: CartView, set_cookie: Option<HeaderValue>) -> Response {
    let mut response = (status, axum::Json(view)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    if let Some(cookie) = set_cookie {
        headers.insert(header::SET_COOKIE, cookie);
    }
    response
}

fn quantity(raw: i64, max: u32) -> Result<u32, ApiError> {
    u32::try_from(raw)
        .ok()
        .filter(|q| (1..=max).contains(q))
        .ok_or_else(|| {
            ApiError::Unprocessable(format!("quantity must be between 1 and {max}, got {raw}"))
        })
}

fn path_sku(raw: &str) -> Result<Sku, ApiError> {
    Sku::parse(raw).map_err(|e| ApiError::BadRequest(e.to_string()))
}

#[utoipa::path(get, path = "/v1/cart", tag = "cart", security(("shopper" = []), ()),
    responses((status = 200, description = "The cart, priced now", body = CartView)))]
pub async fn show(State(state): State<CartState>, shopper: Shopper) -> Result<Response, ApiError> {
    let resolved = resolve(&state, &shopper, false).await?;
    let view = priced(&state, resolved.cart.as_ref()).await?;
    Ok(respond(StatusCode::OK, view, resolved.set_cookie))
}

#[utoipa::path(post, path = "/v1/cart/items", tag = "cart", security(("shopper" = []), ()), request_body = AddItem,
    responses((status = 200, description = "The cart", body = CartView)))]
#[tracing::instrument(skip_all, fields(sku = %input.sku))]
pub async fn add(
    State(state): State<CartState>,
    shopper: Shopper,
    _writable: Writable,
    ApiJson(input): ApiJson<AddItem>,
) -> Result<Response, ApiError> {
    let store = store(&state)?;
    let limits = store.limits();
    let sku = Sku::parse(&input.sku)?;
    let wanted = quantity(input.quantity, limits.max_quantity)?;
    let catalog = current(&state, vec![sku.as_str().to_string()]).await?;
    let Some(item) = catalog.get(sku.as_str()) else {
        return Err(ApiError::Unprocessable(format!(
            "no sellable SKU {}",
            sku.as_str()
        )));
    };
    let resolved = resolve(&state, &shopper, true).await?;
    let Some(cart) = &resolved.cart else {
        return Err(ApiError::internal(std::io::Error::other(
            "a cart is always resolved for writes",
        )));
    };
    let change = store
        .add(
            cart,
            sku.as_str(),
            wanted,
            (item.price_minor, &item.currency),
        )
        .await
        .map_err(|e| redis_error(&state, "add", e))?;
    rejected_change(
        &state,
        "add",
        change,
        sku.as_str(),
        limits.max_quantity,
        limits.max_lines,
    )?;
    let view = priced(&state, Some(cart)).await?;
    Ok(respond(StatusCode::OK, view, resolved.set_cookie))
}

#[utoipa::path(patch, path = "/v1/cart/items/{sku}", tag = "cart", security(("shopper" = []), ()), params(crate::openapi::SkuPath), request_body = UpdateItem,
    responses((status = 200, description = "The cart", body = CartView)))]
pub async fn update(
    State(state): State<CartState>,
    shopper: Shopper,
    _writable: Writable,
    ApiPath(raw): ApiPath<String>,
    ApiJson(input): ApiJson<UpdateItem>,
) -> Result<Response, ApiError> {
    let store = store(&state)?;
    let limits = store.limits();
    let sku = path_sku(&raw)?;
    let wanted = quantity(input.quantity, limits.max_quantity)?;
    let resolved = resolve(&state, &shopper, false).await?;
    let Some(cart) = &resolved.cart else {
        return Err(ApiError::NotFound(format!(
            "{} is not in the cart",
            sku.as_str()
        )));
    };
    let change = store
        .set(cart, sku.as_str(), wanted)
        .await
        .map_err(|e| redis_error(&state, "update", e))?;
    rejected_change(
        &state,
        "update",
        change,
        sku.as_str(),
        limits.max_quantity,
        limits.max_lines,
    )?;
    let view = priced(&state, Some(cart)).await?;
    Ok(respond(StatusCode::OK, view, resolved.set_cookie))
}

#[utoipa::path(delete, path = "/v1/cart/items/{sku}", tag = "cart", security(("shopper" = []), ()), params(crate::openapi::SkuPath),
    responses((status = 200, description = "The cart", body = CartView)))]
pub async fn remove(
    State(state): State<CartState>,
    shopper: Shopper,
    _writable: Writable,
    ApiPath(raw): ApiPath<String>,
) -> Result<Response, ApiError> {
    let store = store(&state)?;
    let sku = path_sku(&raw)?;
    let resolved = resolve(&state, &shopper, false).await?;
    let removed = match &resolved.cart {
        Some(cart) => store
            .remove(cart, sku.as_str())
            .await
            .map_err(|e| redis_error(&state, "remove", e))?,
        None => false,
    };
    if !removed {
        return Err(ApiError::NotFound(format!(
            "{} is not in the cart",
            sku.as_str()
        )));
    }
    state
        .metrics
        .cart_operations
        .with_label_values(&["remove", "ok"])
        .inc();
    let view = priced(&state, resolved.cart.as_ref()).await?;
    Ok(respond(StatusCode::OK, view, resolved.set_cookie))
}

/// Counts the change and turns a refused one into a problem.
fn rejected_change(
    state: &CartState,
    operation: &str,
    change: Change,
    sku: &str,
    max_quantity: u32,
    max_lines: u32,
) -> Result<(), ApiError> {
    let result = match change {
        Change::Quantity(_) => Ok(()),
        Change::OverQuantity => Err(ApiError::Unprocessable(format!(
            "a cart holds at most {max_quantity} units of {sku}"
        ))),
        Change::TooManyLines => Err(ApiError::Unprocessable(format!(
            "a cart holds at most {max_lines} different items"
        ))),
        Change::NotInCart => Err(ApiError::NotFound(format!("{sku} is not in the cart"))),
    };
    let label = if result.is_ok() { "ok" } else { "rejected" };
    state
        .metrics
        .cart_operations
        .with_label_values(&[operation, label])
        .inc();
    result
}
