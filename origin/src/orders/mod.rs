//! The orders bounded context: orders in the user's shard of their home
//! region.
//!
//! - [`shards`]: `ShardRouter` (user → shard, order id → shard), the shard
//!   migrations.
//! - [`model`]: order ids (embedding the shard), the state machine, views.
//! - [`store`]: shard queries.
//! - [`handlers`]: `GET /v1/orders`, `GET /v1/orders/{id}`.

pub mod handlers;
pub mod model;
pub mod shards;
pub mod store;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;

pub use model::{Order, OrderId, OrderState};
pub use shards::ShardRouter;

use crate::app::AppState;
use crate::problem::ApiError;

/// What order handlers need.
#[derive(Clone)]
pub struct OrdersState(Arc<OrdersContext>);

pub struct OrdersContext {
    /// `None` when the origin has no order shards configured.
    pub shards: Option<ShardRouter>,
}

impl OrdersState {
    pub fn new(context: OrdersContext) -> Self {
        OrdersState(Arc::new(context))
    }

    pub fn shards(&self) -> Result<&ShardRouter, ApiError> {
        self.0
            .shards
            .as_ref()
            .ok_or_else(|| ApiError::Unavailable("orders are not available in this region".into()))
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/orders", get(handlers::list))
        .route("/v1/orders/{id}", get(handlers::show))
}
