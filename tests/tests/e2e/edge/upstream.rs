//! A small real HTTP upstream for edge-only tests (axum on a free port).
//!
//! Every response is shaped by the request's query, so each test picks its
//! own behaviour per URL: `cc` (Cache-Control), `vary`, `cookie`
//! (Set-Cookie), `tag` (Surrogate-Key), `delay` (ms before answering),
//! `status`, `etag` (and a 304 to a matching `If-None-Match`). The body reports how many times this path and query
//! has been fetched, the `Accept-Language` seen, and every request header
//! that the edge must never forward (a poisoning probe). A switch makes
//! every response a 503, and the server can be stopped and restarted on the
//! same port.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

/// Headers the edge must strip; if the upstream sees one, the body says so.
pub const PROBED: &[&str] = &[
    "x-forwarded-host",
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-host",
    "x-forwarded-scheme",
    "forwarded",
];

#[derive(Default)]
struct Shared {
    name: String,
    counts: Mutex<HashMap<String, u64>>,
    failing: AtomicBool,
    not_modified: std::sync::atomic::AtomicU64,
}

pub struct TestUpstream {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<CancellationToken>,
}

impl TestUpstream {
    /// Starts an upstream that names itself `name` in `X-Served-By-Region`.
    pub async fn start(name: &str) -> TestUpstream {
        let shared = Arc::new(Shared {
            name: name.to_string(),
            ..Shared::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut upstream = TestUpstream {
            addr,
            shared,
            stop: None,
        };
        upstream.serve(listener);
        upstream
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let stop = CancellationToken::new();
        let app = axum::Router::new()
            .route("/healthz", axum::routing::get(|| async { "ok" }))
            // Not a Meridian origin: it has no operating mode to tell the
            // edge's mode follower (whose polls are not counted).
            .route(
                "/v1/modes",
                axum::routing::get(|| async { axum::http::StatusCode::NOT_FOUND }),
            )
            .fallback(respond)
            .with_state(self.shared.clone());
        let signal = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { signal.cancelled().await })
                .await;
        });
        self.stop = Some(stop);
    }

    /// Closes the listener and every connection (connections refused).
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.cancel();
        }
        // Graceful shutdown closes idle keep-alive connections promptly.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    /// Listens again on the same port.
    pub async fn restart(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    /// Makes every response (except `/healthz`) a 503, or back to normal.
    pub fn set_failing(&self, failing: bool) {
        self.shared.failing.store(failing, Ordering::SeqCst);
    }

    /// How many requests reached the upstream for this path and query.
    pub fn count(&self, path_and_query: &str) -> u64 {
        self.shared
            .counts
            .lock()
            .get(path_and_query)
            .copied()
            .unwrap_or(0)
    }

    /// 304 answers given to conditional requests.
    pub fn not_modified(&self) -> u64 {
        self.shared.not_modified.load(Ordering::SeqCst)
    }

    /// Requests that reached the upstream, all paths.
    pub fn total(&self) -> u64 {
        self.shared.counts.lock().values().sum()
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.cancel();
        }
    }
}

async fn respond(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let key = uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_string();
    let count = {
        let mut counts = shared.counts.lock();
        let count = counts.entry(key.clone()).or_default();
        *count += 1;
        *count
    };
    if let Some(delay) = query.get("delay").and_then(|d| d.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if shared.failing.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "upstream failing").into_response();
    }
    // Conditional requests: a matching `If-None-Match` gets a 304.
    if let Some(etag) = query.get("etag")
        && headers
            .get("if-none-match")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == etag)
    {
        shared.not_modified.fetch_add(1, Ordering::SeqCst);
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(value) = HeaderValue::from_str(etag) {
            response.headers_mut().insert("etag", value);
        }
        if let Some(value) = query.get("cc").and_then(|v| HeaderValue::from_str(v).ok()) {
            response.headers_mut().insert("cache-control", value);
        }
        return response;
    }
    let leaked: Vec<String> = PROBED
        .iter()
        .filter_map(|name| {
            headers
                .get(*name)
                .map(|v| format!("{name}: {}", v.to_str().unwrap_or("?")))
        })
        .collect();
    let body = serde_json::json!({
        "path": key,
        "count": count,
        "served_by": shared.name,
        "accept_language": headers.get("accept-language").and_then(|v| v.to_str().ok()),
        "leaked": leaked,
        "padding": "x".repeat(1500),
    });
    let status = query
        .get("status")
        .and_then(|s| s.parse().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let mut response = (status, axum::Json(body)).into_response();
    let out = response.headers_mut();
    let mut set = |name: &'static str, value: Option<&String>| {
        if let Some(value) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
            out.insert(HeaderName::from_static(name), value);
        }
    };
    set("cache-control", query.get("cc"));
    set("vary", query.get("vary"));
    set("set-cookie", query.get("cookie"));
    set("surrogate-key", query.get("tag"));
    set("etag", query.get("etag"));
    set("x-served-by-region", Some(&shared.name));
    set("x-meridian-sold-out", query.get("sold_out"));
    response
}
