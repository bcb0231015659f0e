//! The cart bounded context: a shopper's cart in their home region's Redis
//! ([`store`]), the HTTP API ([`handlers`]): `GET /v1/cart`,
//! `POST /v1/cart/items`, `PATCH|DELETE /v1/cart/items/{sku}`.
//!
//! Signed-in shoppers are identified by their token; guests by a signed
//! cookie set on their first write. The first signed-in request that still
//! carries a guest cookie merges the guest cart into the user's (same SKU:
//! the higher quantity) exactly once, and clears the cookie.
//!
//! Prices: a line keeps the unit price the shopper saw when adding it; the
//! cart always shows the current price and flags lines whose price changed,
//! and checkout charges only current prices the shopper has confirmed.

pub mod handlers;
pub mod store;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, patch, post};

pub use store::{CartKey, CartStore};

use crate::app::AppState;
use crate::db::DbRouter;
use crate::identity::ShopperAuth;
use crate::metrics::Metrics;

/// What cart handlers need.
#[derive(Clone)]
pub struct CartState(Arc<CartContext>);

pub struct CartContext {
    /// `None` when the origin has no Redis: carts answer 503.
    pub store: Option<CartStore>,
    pub auth: ShopperAuth,
    pub db: DbRouter,
    pub metrics: Metrics,
}

impl CartState {
    pub fn new(context: CartContext) -> Self {
        CartState(Arc::new(context))
    }
}

impl std::ops::Deref for CartState {
    type Target = CartContext;
    fn deref(&self) -> &CartContext {
        &self.0
    }
}

pub fn router(max_body_bytes: usize) -> Router<AppState> {
    Router::new()
        .route("/v1/cart", get(handlers::show))
        .route("/v1/cart/items", post(handlers::add))
        .route(
            "/v1/cart/items/{sku}",
            patch(handlers::update).delete(handlers::remove),
        )
        .layer(DefaultBodyLimit::max(max_body_bytes))
}
