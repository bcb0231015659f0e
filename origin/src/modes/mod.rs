//! Operating modes per region (`normal`, `degraded`, `read-only`,
//! `maintenance`) and feature switches: a global default plus per-region
//! overrides on the catalog primary, with an append-only audit log. The
//! model (and how a region's effective setting is worked out) is
//! [`meridian_contracts::modes`], shared with the edges.
//!
//! - [`store`]: the table, the audit log, and a change as one transaction
//!   that also logs the invalidation key `modes`, so the change travels to
//!   every region with the replication stream.
//! - [`handlers`]: `GET/PUT /v1/admin/modes[/{region}]`,
//!   `GET /v1/admin/modes/history` (admin bearer tokens), `GET /v1/modes`
//!   (public: the setting this origin applies).
//! - [`guard`]: [`guard::Writable`], the check every shopper write takes
//!   (503 with `Retry-After` in `read-only` and `maintenance`).
//! - [`watcher`]: the region's effective setting in a running process,
//!   re-read from the replica when the key `modes` passes (invalidation
//!   log or Redis channel) and polled as a backstop.

pub mod guard;
pub mod handlers;
pub mod store;
pub mod watcher;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;

use crate::app::AppState;
use crate::db::DbRouter;

/// What the mode handlers need.
#[derive(Clone)]
pub struct ModesState(Arc<ModesContext>);

pub struct ModesContext {
    pub db: DbRouter,
    /// This origin's region.
    pub region: String,
    /// `Retry-After` of a write the mode refuses.
    pub retry_after: std::time::Duration,
    /// The regions a mode may be set for (empty: any well-formed name).
    pub regions: Vec<String>,
    /// What this process applies (told to re-read after a change here).
    pub applied: watcher::Modes,
}

impl ModesState {
    pub fn new(context: ModesContext) -> Self {
        ModesState(Arc::new(context))
    }
}

impl std::ops::Deref for ModesState {
    type Target = ModesContext;
    fn deref(&self) -> &ModesContext {
        &self.0
    }
}

/// The applied setting, public: the region's edges poll it.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/modes", get(handlers::applied))
}

/// Admin routes (the internal listener).
pub fn admin_router(max_body_bytes: usize) -> Router<AppState> {
    Router::new()
        .route("/v1/admin/modes", get(handlers::list))
        .route("/v1/admin/modes/history", get(handlers::history))
        .route(
            "/v1/admin/modes/{region}",
            get(handlers::show).put(handlers::update),
        )
        .layer(DefaultBodyLimit::max(max_body_bytes))
}
