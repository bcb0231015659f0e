//! Discovery: the non-essential read features around the catalog —
//! recommendations, search suggestions and reviews. Each is a feature
//! switch ([`meridian_contracts::modes::Feature`]): switched off (by ops, or
//! by `degraded` mode's defaults) its endpoint answers at once with an
//! empty, cacheable result and `X-Meridian-Feature-Off`, never an error
//! page and without touching a database.
//!
//! - [`handlers`]: `GET /v1/products/{id}/recommendations`,
//!   `GET /v1/search/suggestions?q=`, `GET /v1/products/{id}/reviews`.
//! - [`store`]: their queries, on the region's replicas.
//!
//! Every answer carries the surrogate key `modes`, so a mode change (which
//! logs that key) purges what edges cached under the previous setting.

pub mod handlers;
pub mod store;

use std::sync::Arc;

use axum::Router;
use axum::http::HeaderValue;
use axum::routing::get;

use crate::app::AppState;
use crate::db::DbRouter;
use crate::modes::watcher::Modes;

/// What the discovery handlers need.
#[derive(Clone)]
pub struct DiscoveryState(Arc<DiscoveryContext>);

pub struct DiscoveryContext {
    pub db: DbRouter,
    pub modes: Modes,
    /// `X-Served-By-Region`.
    pub region: HeaderValue,
}

impl DiscoveryState {
    pub fn new(context: DiscoveryContext) -> Self {
        DiscoveryState(Arc::new(context))
    }
}

impl std::ops::Deref for DiscoveryState {
    type Target = DiscoveryContext;
    fn deref(&self) -> &DiscoveryContext {
        &self.0
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/products/{id}/recommendations",
            get(handlers::recommendations),
        )
        .route("/v1/products/{id}/reviews", get(handlers::reviews))
        .route("/v1/search/suggestions", get(handlers::suggestions))
}
