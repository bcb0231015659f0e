//! Notify-me requests: a shopper's wish to hear when a SKU can be bought
//! again — what `read-only` mode offers instead of a cart or a checkout,
//! and what an out-of-stock page offers any time. Stored in the region's
//! Redis ([`store`]), one entry per SKU and contact (a signed-in shopper
//! or an e-mail address), so a repeat changes nothing; the HTTP API is in
//! [`handlers`]: `POST /v1/notify-me`, `GET /v1/admin/notify-me/{sku}`.

pub mod handlers;
pub mod store;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

pub use store::NotifyStore;

use crate::app::AppState;
use crate::db::DbRouter;

/// What the notify-me handlers need.
#[derive(Clone)]
pub struct NotifyState(Arc<NotifyContext>);

pub struct NotifyContext {
    /// `None` when the origin has no Redis: requests answer 503.
    pub store: Option<NotifyStore>,
    /// Where the SKU is checked (a replica: this works in `read-only`).
    pub db: DbRouter,
}

impl NotifyState {
    pub fn new(context: NotifyContext) -> Self {
        NotifyState(Arc::new(context))
    }
}

impl std::ops::Deref for NotifyState {
    type Target = NotifyContext;
    fn deref(&self) -> &NotifyContext {
        &self.0
    }
}

/// Shopper routes (the public listener).
pub fn router(max_body_bytes: usize) -> Router<AppState> {
    Router::new()
        .route("/v1/notify-me", post(handlers::request))
        .layer(DefaultBodyLimit::max(max_body_bytes))
}

/// Admin routes (the internal listener).
pub fn admin_router() -> Router<AppState> {
    Router::new().route("/v1/admin/notify-me/{sku}", get(handlers::list))
}
