//! The origin's part of traces and logs: [`RequestTelemetryLayer`], a tower
//! layer on both listeners, wrapped around every route (so the route
//! template is known).
//!
//! - **Trace context.** A valid `traceparent` (the edge's) is continued,
//!   anything else starts a new trace (`meridian_telemetry::context`, the
//!   SDK's W3C propagator). The handler runs inside the request's trace:
//!   its `origin.request` server span entered when traces are exported,
//!   else this hop's context attached — either way the payment client
//!   hands it on to the providers (`meridian_telemetry::context::current_headers`),
//!   and the cache, database and payment spans are its children.
//! - **Request id.** `X-Request-Id` from the edge when sane, else a new
//!   one; echoed on the response.
//! - **Access log.** One line per request: method, route template, status,
//!   duration, trace id, request id, region. No path, query string, user,
//!   token or cookie. Probes and scrapes (`/healthz`, `/readyz`,
//!   `/metrics`) are neither logged nor traced.
//!
//! Hand-written like the metrics layer, for the same reason: it sits on the
//! L1-hit hot path. With nothing exported it costs a disabled span call
//! site, the ids (one small allocation for a request id made here, one for
//! the attached context) and the log line.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method};
use axum::response::Response;
use meridian_telemetry::request_id::{self, X_REQUEST_ID};
use meridian_telemetry::{ACCESS_TARGET, RequestTrace, SPAN_TARGET, Traced, access};
use tower::{Layer, Service};
use tracing::field::Empty;

/// Routes neither logged nor traced: probes and scrapes, every few seconds.
const QUIET_ROUTES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Traces and logs every request ([module docs](self)).
#[derive(Clone)]
pub struct RequestTelemetryLayer {
    region: Arc<str>,
}

impl RequestTelemetryLayer {
    pub fn new(region: &str) -> Self {
        RequestTelemetryLayer {
            region: region.into(),
        }
    }
}

impl<S> Layer<S> for RequestTelemetryLayer {
    type Service = RequestTelemetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestTelemetry {
            inner,
            region: self.region.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RequestTelemetry<S> {
    inner: S,
    region: Arc<str>,
}

impl<S> Service<Request> for RequestTelemetry<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = TracedResponse<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let route = request.extensions().get::<MatchedPath>().cloned();
        let template = route.as_ref().map_or("unmatched", MatchedPath::as_str);
        if QUIET_ROUTES.contains(&template) {
            return TracedResponse {
                inner: Traced::untraced(self.inner.call(request)),
                request: None,
            };
        }
        let method = request.method().clone();
        let span = tracing::info_span!(
            target: SPAN_TARGET,
            "origin.request",
            otel.kind = "server",
            otel.status_code = Empty,
            http.request.method = access::method(&method),
            http.route = template,
            http.response.status_code = Empty,
            meridian.request_id = Empty,
            meridian.region = &*self.region,
        );
        let trace = RequestTrace::start(request.headers(), span);
        let (id, _) = request_id::of(request.headers());
        trace
            .span()
            .record("meridian.request_id", request_id::as_str(&id));
        let inner = trace.instrument(self.inner.call(request));
        TracedResponse {
            inner,
            request: Some(RequestRecord {
                trace,
                route,
                method,
                request_id: id,
                started: Instant::now(),
                region: self.region.clone(),
                written: false,
            }),
        }
    }
}

/// Status logged for a request whose client went away before the answer
/// (nginx's convention); the handler's future was dropped.
const CLIENT_CLOSED: u16 = 499;

/// What the access-log line needs once the response is ready. Dropped
/// unwritten (the client went away), it writes the line with status 499.
struct RequestRecord {
    trace: RequestTrace,
    route: Option<MatchedPath>,
    method: Method,
    request_id: HeaderValue,
    started: Instant,
    region: Arc<str>,
    written: bool,
}

impl Drop for RequestRecord {
    fn drop(&mut self) {
        if !self.written {
            self.write(CLIENT_CLOSED);
        }
    }
}

impl RequestRecord {
    /// Echoes the request id on `response` and writes the line.
    fn finish(mut self, response: Option<&mut Response>) {
        let status = response.as_ref().map_or(500, |r| r.status().as_u16());
        if let Some(response) = response {
            response
                .headers_mut()
                .insert(X_REQUEST_ID, self.request_id.clone());
        }
        self.write(status);
    }

    fn write(&mut self, status: u16) {
        self.written = true;
        let span = self.trace.span();
        span.record("http.response.status_code", status);
        if status >= 500 {
            span.record("otel.status_code", "ERROR");
        }
        tracing::info!(
            target: ACCESS_TARGET,
            method = access::method(&self.method),
            route = self.route.as_ref().map_or("unmatched", MatchedPath::as_str),
            status,
            duration_ms = access::millis(self.started.elapsed()),
            trace_id = %self.trace.trace_id(),
            request_id = request_id::as_str(&self.request_id),
            region = &*self.region,
            "request"
        );
    }
}

pin_project_lite::pin_project! {
    /// The inner response future, run inside the request's trace; the
    /// request id is set and the access log written when it completes.
    pub struct TracedResponse<F> {
        #[pin]
        inner: Traced<F>,
        // `None` for quiet routes, and once written.
        request: Option<RequestRecord>,
    }
}

impl<F, E> Future for TracedResponse<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut result = std::task::ready!(this.inner.poll(cx));
        if let Some(record) = this.request.take() {
            record.finish(result.as_mut().ok());
        }
        Poll::Ready(result)
    }
}
