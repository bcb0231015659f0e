//! Flash sales: a quantity of one SKU for the first claimants.
//!
//! - [`gate`]: the admission gate in the sale region's Redis (one Lua
//!   script per claim: counter, per-user limit, slot, stream).
//! - [`worker`]: drains won claims into reservations and the ledger.
//! - [`store`]: the sales and the ledger of won slots on the primary.
//! - [`handlers`]: `POST /v1/admin/flash-sales`, `GET
//!   /v1/admin/flash-sales/{id}`, `POST /v1/admin/flash-sales/{id}/close`,
//!   `POST /v1/flash-sales/{id}/claim`,
//!   `GET /v1/flash-sales/{id}/claims`.
//!
//! A won unit is held by a reservation for `hold` and bought through
//! `POST /v1/checkout` with `{"flash_sale": id}`. PostgreSQL is the ledger
//! of truth: a slot can be recorded once and never beyond the sale's
//! quantity, whatever Redis says.

pub mod gate;
pub mod handlers;
pub mod store;
pub mod worker;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

pub use gate::Gate;

use crate::app::AppState;
use crate::db::DbRouter;
use crate::metrics::Metrics;
use crate::problem::ApiError;

#[derive(Clone)]
pub struct FlashState(Arc<FlashContext>);

pub struct FlashContext {
    /// `None` without Redis: flash sales answer 503.
    pub gate: Option<Arc<Gate>>,
    pub db: DbRouter,
    pub region: String,
    pub metrics: Metrics,
}

impl FlashState {
    pub fn new(context: FlashContext) -> Self {
        FlashState(Arc::new(context))
    }

    fn gate(&self) -> Result<&Gate, ApiError> {
        self.0.gate.as_deref().ok_or_else(|| {
            ApiError::Unavailable("flash sales are not available in this region".into())
        })
    }
}

impl std::ops::Deref for FlashState {
    type Target = FlashContext;
    fn deref(&self) -> &FlashContext {
        &self.0
    }
}

/// Shopper routes (the public listener).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/flash-sales/{id}/claim", post(handlers::claim))
        .route("/v1/flash-sales/{id}/claims", get(handlers::my_claims))
}

/// Admin routes (the internal listener).
pub fn admin_router(max_body_bytes: usize) -> Router<AppState> {
    Router::new()
        .route("/v1/admin/flash-sales", post(handlers::create))
        .route("/v1/admin/flash-sales/{id}", get(handlers::report))
        .route("/v1/admin/flash-sales/{id}/close", post(handlers::close))
        .layer(DefaultBodyLimit::max(max_body_bytes))
}
