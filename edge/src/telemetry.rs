//! The edge's part of traces and logs, per request ([`RequestTelemetry`],
//! carried in the proxy's `RequestCtx`):
//!
//! - **Trace context.** A valid incoming `traceparent` (with its
//!   `tracestate`) is continued, anything else replaced by a new trace
//!   (`meridian_telemetry::context`: the SDK's W3C propagator parses and
//!   writes the headers). The origin receives this hop's context: the
//!   `edge.upstream` span's when spans are recorded, else the trace id and
//!   a span id of the edge's own.
//! - **Spans** (only while traces are exported): `edge.request`, the
//!   server span, and one child per proxy phase, in order —
//!   `edge.request_filter`, `edge.cache_lookup`, `edge.upstream` (one per
//!   attempt; the origin's span is its child), `edge.response`. Phases
//!   follow one another, so one slot holds the running one.
//! - **Request id.** `X-Request-Id` is kept when sane, else replaced by a
//!   new one in the request itself, so the origin receives it and every
//!   answer — proxied, cached or the edge's own (`respond_local`) — echoes
//!   it.
//! - **Access log.** One line per request ([`RequestTelemetry::finish`],
//!   from pingora's `logging` phase): method, route class, status,
//!   duration, cache status, the region that answered, trace id, request
//!   id, the edge's region. No path, query, user or cookie.
//!
//! Cost on the cache-hit path with nothing exported: no span is built
//! (disabled call sites), ids are random numbers (no allocation unless a
//! request id must be made: one), and the log line.

use std::time::Duration;

use http::HeaderValue;
use meridian_telemetry::context::{TRACEPARENT, TRACESTATE};
use meridian_telemetry::request_id;
use meridian_telemetry::{ACCESS_TARGET, RequestTrace, SPAN_TARGET, access, context};
use pingora::http::{RequestHeader, ResponseHeader};
use tracing::Span;
use tracing::field::Empty;

/// The proxy phases that get a span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    RequestFilter,
    CacheLookup,
    Upstream,
    Response,
}

/// One request's trace, request id and running phase span.
pub struct RequestTelemetry {
    trace: RequestTrace,
    request_id: HeaderValue,
    /// The running phase's span (disabled when nothing is recorded).
    phase: Span,
}

impl Default for RequestTelemetry {
    fn default() -> Self {
        RequestTelemetry {
            trace: RequestTrace::default(),
            request_id: HeaderValue::from_static(""),
            phase: Span::none(),
        }
    }
}

/// What the access log says about a finished request.
#[derive(Debug, Clone, Copy)]
pub struct Outcome<'a> {
    pub route: &'static str,
    /// `0` when nothing was sent.
    pub status: u16,
    pub cache: &'static str,
    /// The region whose origin answered, or `edge`.
    pub served_by: &'a str,
    pub duration: Duration,
}

impl RequestTelemetry {
    /// Starts the request's trace and settles its request id (first thing
    /// in the request filter; again from `logging` for a request that never
    /// got there). A request id that is absent or not sane is replaced in
    /// `request` itself.
    pub fn start(&mut self, request: &mut RequestHeader, region: &str) {
        if self.trace.started() {
            return;
        }
        let span = tracing::info_span!(
            target: SPAN_TARGET,
            "edge.request",
            otel.kind = "server",
            otel.status_code = Empty,
            http.request.method = access::method(&request.method),
            http.response.status_code = Empty,
            meridian.route = Empty,
            meridian.cache = Empty,
            meridian.served_by = Empty,
            meridian.request_id = Empty,
            meridian.region = region,
        );
        self.trace = RequestTrace::start(&request.headers, span);
        let (id, new) = request_id::of(&request.headers);
        if new {
            // A generated id is ASCII hex: this cannot fail.
            let _ = request.insert_header(request_id::HEADER, id.clone());
        }
        self.trace
            .span()
            .record("meridian.request_id", request_id::as_str(&id));
        self.request_id = id;
        self.phase(Phase::RequestFilter);
    }

    /// A span for `phase`, child of the request's (disabled when nothing
    /// is recorded).
    pub fn span(&self, phase: Phase) -> Span {
        if !self.trace.recorded() {
            return Span::none();
        }
        let parent = self.trace.span();
        match phase {
            Phase::RequestFilter => {
                tracing::info_span!(target: SPAN_TARGET, parent: parent, "edge.request_filter")
            }
            Phase::CacheLookup => {
                tracing::info_span!(target: SPAN_TARGET, parent: parent, "edge.cache_lookup")
            }
            Phase::Upstream => tracing::info_span!(
                target: SPAN_TARGET,
                parent: parent,
                "edge.upstream",
                otel.kind = "client"
            ),
            Phase::Response => {
                tracing::info_span!(target: SPAN_TARGET, parent: parent, "edge.response")
            }
        }
    }

    /// Ends the running phase's span and starts `phase`'s.
    pub fn phase(&mut self, phase: Phase) {
        if self.trace.recorded() {
            self.phase = self.span(phase);
        }
    }

    /// Ends the running phase's span.
    pub fn end_phase(&mut self) {
        self.phase = Span::none();
    }

    /// The request's id (as it was received, or generated here).
    pub fn request_id(&self) -> &HeaderValue {
        &self.request_id
    }

    /// Writes this hop's trace context into the origin request, replacing
    /// whatever the client sent.
    pub fn upstream_headers(&self, upstream: &mut RequestHeader) -> pingora::Result<()> {
        upstream.remove_header(TRACEPARENT);
        upstream.remove_header(TRACESTATE);
        let hop = self.trace.context_of(&self.phase);
        let mut result = Ok(());
        context::inject(&hop, |name, value| {
            if let Err(error) = upstream.insert_header(name, value) {
                result = Err(error);
            }
        });
        result
    }

    /// Sets `X-Request-Id` on an answer (a cached one may carry an older
    /// request's).
    pub fn echo(&self, response: &mut ResponseHeader) -> pingora::Result<()> {
        if self.request_id.is_empty() {
            return Ok(());
        }
        response.insert_header(request_id::HEADER, self.request_id.clone())
    }

    /// Ends the request's spans and writes its access-log line.
    pub fn finish(&mut self, method: &http::Method, region: &str, outcome: Outcome<'_>) {
        self.end_phase();
        let span = self.trace.span();
        if self.trace.recorded() {
            span.record("meridian.route", outcome.route);
            span.record("meridian.cache", outcome.cache);
            span.record("meridian.served_by", outcome.served_by);
            span.record("http.response.status_code", outcome.status);
            if outcome.status >= 500 || outcome.status == 0 {
                span.record("otel.status_code", "ERROR");
            }
        }
        tracing::info!(
            target: ACCESS_TARGET,
            method = access::method(method),
            route = outcome.route,
            status = outcome.status,
            duration_ms = access::millis(outcome.duration),
            cache = outcome.cache,
            served_by = outcome.served_by,
            trace_id = %self.trace.trace_id(),
            request_id = request_id::as_str(&self.request_id),
            region,
            "request"
        );
        // The server span ends with the request.
        self.trace = RequestTrace::default();
    }
}
