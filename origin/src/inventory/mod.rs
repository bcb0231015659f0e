//! The inventory bounded context: stock per SKU on the catalog primary and
//! time-limited reservations (holds) on it.
//!
//! - [`model`]: reservation requests, reservations and their errors.
//! - [`batcher`]: every reservation change (reserve, commit, release) goes
//!   through one queue per origin; a worker applies whatever has queued up
//!   in one transaction (stock rows locked once, in SKU order), so a hot SKU
//!   costs one row lock and one commit per batch, not per buyer.
//! - [`sweeper`]: releases holds past their expiry (`FOR UPDATE SKIP
//!   LOCKED`, so every origin can sweep without stepping on the others).
//! - [`reconcile`]: checks periodically that the stock counters agree with
//!   the reservation rows, and that no expired hold is left unreleased.
//! - [`handlers`]: `GET /v1/inventory/{sku}`, `PUT /v1/admin/inventory/{sku}`.
//!
//! Invariant: `reserved <= on_hand` for every SKU at every instant — the
//! batcher never plans past it and the database's CHECK constraints refuse
//! it regardless, so stock is never sold twice.

pub mod batcher;
pub mod handlers;
pub mod model;
pub mod plan;
pub mod reconcile;
pub mod sweeper;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, put};

pub use batcher::Inventory;
pub use model::{InventoryError, Line, Reservation, ReservationState, ReserveRequest};

use crate::app::AppState;
use crate::db::DbRouter;

/// What inventory handlers need.
#[derive(Clone)]
pub struct InventoryState(Arc<InventoryContext>);

pub struct InventoryContext {
    pub db: DbRouter,
    pub inventory: Inventory,
}

impl InventoryState {
    pub fn new(context: InventoryContext) -> Self {
        InventoryState(Arc::new(context))
    }
}

impl std::ops::Deref for InventoryState {
    type Target = InventoryContext;
    fn deref(&self) -> &InventoryContext {
        &self.0
    }
}

/// Shopper routes (the public listener).
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/inventory/{sku}", get(handlers::availability))
}

/// Admin routes (the internal listener).
pub fn admin_router(max_body_bytes: usize) -> Router<AppState> {
    Router::new()
        .route("/v1/admin/inventory/{sku}", put(handlers::set_on_hand))
        .layer(DefaultBodyLimit::max(max_body_bytes))
}
