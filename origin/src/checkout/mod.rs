//! The checkout bounded context: `POST /v1/checkout` turns the signed-in
//! shopper's cart into an order in their shard, through the saga in
//! [`saga`] (reserve → authorize → commit → capture, compensated on
//! failure), under an `Idempotency-Key` ([`handlers`]: same key and body →
//! the same answer, even while the first request still runs; same key,
//! other body → 422). [`recovery`] finishes sagas that stopped (a crash, an
//! unknown payment outcome, a capture that failed) and voids stray
//! authorizations; [`store`] holds the saga's shard writes.

pub mod handlers;
pub mod outcome;
pub mod recovery;
pub mod saga;
pub mod store;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::post;

pub use saga::Saga;

use crate::app::AppState;
use crate::cart::CartState;
use crate::config::CheckoutConfig;
use crate::db::DbRouter;
use crate::metrics::Metrics;
use crate::orders::ShardRouter;
use crate::problem::ApiError;

/// What the checkout handler needs.
#[derive(Clone)]
pub struct CheckoutState(Arc<CheckoutContext>);

pub struct CheckoutContext {
    /// `None` without order shards or payment providers: checkout is 503.
    pub saga: Option<(Saga, ShardRouter)>,
    pub cart: CartState,
    pub db: DbRouter,
    pub config: CheckoutConfig,
    pub metrics: Metrics,
}

impl CheckoutState {
    pub fn new(context: CheckoutContext) -> Self {
        CheckoutState(Arc::new(context))
    }

    fn saga(&self) -> Result<&(Saga, ShardRouter), ApiError> {
        self.0
            .saga
            .as_ref()
            .ok_or_else(|| ApiError::Unavailable("checkout is not available in this region".into()))
    }
}

impl std::ops::Deref for CheckoutState {
    type Target = CheckoutContext;
    fn deref(&self) -> &CheckoutContext {
        &self.0
    }
}

pub fn router(max_body_bytes: usize) -> Router<AppState> {
    Router::new()
        .route("/v1/checkout", post(handlers::checkout))
        .layer(DefaultBodyLimit::max(max_body_bytes))
}
