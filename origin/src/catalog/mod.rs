//! The catalog bounded context: products, variants, categories and display
//! prices.
//!
//! - [`handlers`]: the HTTP API (`/v1/products…`, `/v1/categories`, admin writes).
//! - [`model`]: validated domain types and the JSON views.
//! - [`store`]: compile-time checked queries.
//! - [`pricing`]: FX conversion for `?currency=`.
//! - [`cursor`]: opaque pagination cursors.
//! - [`seed`]: the deterministic demo catalog (`meridian seed`).
//!
//! Reads go L1 → L2 → replica through the [`TieredCache`]; writes go to the
//! primary and append to the invalidation log in the same transaction.

pub mod cursor;
pub mod handlers;
pub mod model;
pub mod pricing;
pub mod seed;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderValue;
use axum::routing::{get, post, put};

use crate::app::AppState;
use crate::cache::TieredCache;
use crate::config::CacheConfig;
use crate::db::DbRouter;

/// What catalog handlers need, and nothing else. One `Arc`: axum clones
/// the state for every request.
#[derive(Clone)]
pub struct CatalogState(Arc<CatalogContext>);

impl CatalogState {
    pub fn new(context: CatalogContext) -> Self {
        CatalogState(Arc::new(context))
    }
}

impl std::ops::Deref for CatalogState {
    type Target = CatalogContext;
    fn deref(&self) -> &CatalogContext {
        &self.0
    }
}

pub struct CatalogContext {
    pub db: DbRouter,
    pub cache: TieredCache,
    pub region: HeaderValue,
    pub headers: CacheHeaders,
    /// How long FX rates are cached.
    pub fx_ttl: Duration,
    /// Whether responses carry `X-Origin-Cache`.
    pub debug_headers: bool,
}

/// Precomputed `Cache-Control` values.
#[derive(Debug)]
pub struct CacheHeaders {
    pub found: HeaderValue,
    pub not_found: HeaderValue,
    pub list: HeaderValue,
}

impl CacheHeaders {
    pub fn new(config: &CacheConfig) -> Self {
        let s_maxage = config.edge_max_age.as_secs().max(1);
        let negative = config.negative_ttl.as_secs().max(1);
        let found = format!(
            "public, max-age=30, s-maxage={s_maxage}, stale-while-revalidate=30, stale-if-error=86400"
        );
        let list = format!(
            "public, max-age=10, s-maxage={}, stale-while-revalidate=30, stale-if-error=86400",
            s_maxage.min(30)
        );
        let not_found = format!("public, max-age={negative}, s-maxage={negative}");
        CacheHeaders {
            found: HeaderValue::from_str(&found).unwrap_or(HeaderValue::from_static("no-cache")),
            not_found: HeaderValue::from_str(&not_found)
                .unwrap_or(HeaderValue::from_static("no-cache")),
            list: HeaderValue::from_str(&list).unwrap_or(HeaderValue::from_static("no-cache")),
        }
    }
}

/// The catalog routes; only the admin routes take a body, so only they
/// carry the body limit (the read path stays free of it).
/// Shopper routes (the public listener).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/products", get(handlers::list_products))
        .route("/v1/products/{id}", get(handlers::get_product))
        .route("/v1/categories", get(handlers::list_categories))
}

/// Admin routes (the internal listener).
pub fn admin_router(max_body_bytes: usize) -> Router<AppState> {
    Router::new()
        .route("/v1/admin/products", post(handlers::create_product))
        .route("/v1/admin/products/{id}", put(handlers::update_product))
        .layer(DefaultBodyLimit::max(max_body_bytes))
}
