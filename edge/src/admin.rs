//! The edge's admin port (axum, run as a pingora background service):
//!
//! - `GET /healthz`: the process is up.
//! - `GET /readyz`: 200 while every public listener accepts connections
//!   and the edge is not draining (after SIGTERM); 503 otherwise. It
//!   depends on the edge alone: with every origin down the edge stays
//!   ready, since it still serves what it has cached (stale included).
//!   The body shows each origin's health (`origins_healthy`: any), the
//!   operating mode applied (`stale` when no origin of the region could
//!   be asked) and the cache.
//! - `GET /metrics`: Prometheus text exposition.
//! - `POST /purge` (bearer token): `{"urls": [...], "tags": [...], "all":
//!   false}` → `{"purged": n}`.

use std::net::TcpListener as StdListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use axum::Json;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use meridian_config::Secret;
use meridian_contracts::problem::Problem;
use parking_lot::Mutex;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::cache::{EdgeCache, PurgeTarget};
use crate::metrics::EdgeMetrics;
use crate::proxy::routing::Router;

/// Everything the admin handlers read.
#[derive(Clone)]
pub struct AdminState {
    pub region: String,
    pub cache: EdgeCache,
    pub router: Arc<Router>,
    pub metrics: Arc<EdgeMetrics>,
    pub tokens: Arc<[Secret]>,
    /// Whether the Redis purge listener is subscribed (`None`: no Redis).
    pub purge_listener: Option<Arc<AtomicBool>>,
    pub modes: Arc<crate::modes::EdgeModes>,
    /// The public listeners (plain and TLS): ready means they accept.
    pub public_listeners: Vec<std::net::SocketAddr>,
    /// Set on SIGTERM: not ready from then on.
    pub draining: Arc<AtomicBool>,
}

/// The admin HTTP server; the listener is bound at build time so a taken
/// port is reported before the edge starts.
pub struct AdminService {
    listener: Mutex<Option<StdListener>>,
    state: AdminState,
}

impl AdminService {
    pub fn new(listener: StdListener, state: AdminState) -> Self {
        Self {
            listener: Mutex::new(Some(listener)),
            state,
        }
    }
}

#[async_trait]
impl BackgroundService for AdminService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(listener) = self.listener.lock().take() else {
            return;
        };
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(%error, "admin listener unusable");
                return;
            }
        };
        let app = router(self.state.clone());
        let stop = async move {
            let _ = shutdown.changed().await;
        };
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(%error, "admin server failed");
        }
    }
}

pub fn router(state: AdminState) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/purge", post(purge))
        .fallback(|| async {
            problem(StatusCode::NOT_FOUND, "Not found", "no such admin endpoint")
        })
        .with_state(state)
}

fn problem(status: StatusCode, title: &str, detail: &str) -> Response {
    let body = Problem::new(status.as_u16(), title, detail).to_json();
    (
        status,
        [(
            header::CONTENT_TYPE,
            meridian_contracts::problem::CONTENT_TYPE,
        )],
        body,
    )
        .into_response()
}

fn health(state: &AdminState) -> serde_json::Value {
    state
        .router
        .pools
        .iter()
        .map(|pool| {
            let origins: serde_json::Map<String, serde_json::Value> = pool
                .health()
                .into_iter()
                .map(|(addr, healthy)| (addr, healthy.into()))
                .collect();
            (pool.name.clone(), origins.into())
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Whether each public listener accepts a connection now: the admin port
/// can answer before pingora's listeners do, and "ready" must not be said
/// too early (to `meridian up`, tests or a load balancer).
async fn listeners_accept(
    addrs: &[std::net::SocketAddr],
) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    for addr in addrs {
        let accepts = tokio::time::timeout(
            std::time::Duration::from_millis(250),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        .is_ok_and(|connected| connected.is_ok());
        out.insert(addr.to_string(), accepts.into());
    }
    out
}

async fn readyz(State(state): State<AdminState>) -> Response {
    let listeners = listeners_accept(&state.public_listeners).await;
    let accepting = listeners.values().all(|v| v.as_bool() == Some(true));
    let draining = state.draining.load(Ordering::Relaxed);
    let ready = accepting && !draining;
    let body = serde_json::json!({
        "region": state.region,
        "ready": ready,
        "draining": draining,
        "listeners": listeners,
        "origins": health(&state),
        "origins_healthy": state.router.any_healthy(),
        "purge_listener": state.purge_listener.as_ref().map(|l| l.load(Ordering::Relaxed)),
        "cache": { "objects": state.cache.items(), "bytes": state.cache.bytes() },
        "modes": state.modes.status(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<AdminState>) -> Response {
    for pool in &state.router.pools {
        for (origin, healthy) in pool.health() {
            state
                .metrics
                .origin_healthy
                .with_label_values(&[&pool.name, &origin])
                .set(i64::from(healthy));
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(&state.cache),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    #[serde(default)]
    urls: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    all: bool,
}

/// Path and query of an absolute URL or an origin-relative path.
fn path_and_query(url: &str) -> Option<String> {
    if url.starts_with('/') {
        return Some(url.to_string());
    }
    let uri: http::Uri = url.parse().ok()?;
    uri.scheme()?;
    Some(
        uri.path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_string(),
    )
}

fn authorised(state: &AdminState, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let Some(presented) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return Err(Box::new(problem(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "send an admin token as `Authorization: Bearer …`",
        )));
    };
    let known = state
        .tokens
        .iter()
        .any(|t| bool::from(t.expose().as_bytes().ct_eq(presented.as_bytes())));
    if known {
        Ok(())
    } else {
        Err(Box::new(problem(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "this token may not purge",
        )))
    }
}

async fn purge(State(state): State<AdminState>, request: Request) -> Response {
    if let Err(response) = authorised(&state, request.headers()) {
        return *response;
    }
    let Json(body) = match Json::<PurgeRequest>::from_request(request, &()).await {
        Ok(body) => body,
        Err(rejection) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "Invalid purge request",
                &rejection.body_text(),
            );
        }
    };
    let mut targets = Vec::new();
    for url in &body.urls {
        match path_and_query(url) {
            Some(pq) => targets.push(PurgeTarget::Url(pq)),
            None => {
                return problem(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid URL",
                    &format!("`{url}` is neither an absolute URL nor a path"),
                );
            }
        }
    }
    for tag in &body.tags {
        if tag.is_empty() || tag.len() > 256 || tag.contains(char::is_whitespace) {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid tag",
                &format!("`{tag}` is not a surrogate key"),
            );
        }
        targets.push(PurgeTarget::Tag(tag.clone()));
    }
    if body.all {
        targets.push(PurgeTarget::All);
    }
    if targets.is_empty() {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Nothing to purge",
            "name `urls`, `tags` or `all: true`",
        );
    }
    let purged: usize = targets.iter().map(|t| state.cache.purge(t)).sum();
    state
        .metrics
        .purges
        .with_label_values(&["admin"])
        .inc_by(purged as u64);
    tracing::info!(purged, targets = targets.len(), "purge via admin API");
    Json(serde_json::json!({ "region": state.region, "purged": purged })).into_response()
}
