//! W3C trace context: which trace a request belongs to, and how that
//! travels to the next hop.
//!
//! - [`incoming`]: the `traceparent`/`tracestate` a request arrived with,
//!   parsed by the SDK's `TraceContextPropagator`; an absent, malformed or
//!   all-zero one is no parent (a new trace starts here).
//! - [`RequestTrace::start`]: the request's own place in its trace. When
//!   spans are exported the server span (a child of the incoming parent, or
//!   a root) is it; otherwise only ids: the incoming trace id (or a new
//!   random one) and a span id of this hop, so log lines and the next hop
//!   still share the trace id.
//! - [`inject`] and [`current_headers`]: the headers that carry a context
//!   on, written by the same propagator.
//! - [`Traced`] runs a request's future inside its trace (its span entered,
//!   or its context attached when nothing exports); [`in_current_trace`]
//!   keeps a spawned task in the trace of the request that spawned it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C header naming the parent span.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C header carrying vendors' trace state along.
pub const TRACESTATE: &str = "tracestate";

/// Reads W3C headers out of an `http::HeaderMap` for the propagator.
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The valid parent a request arrived with (`traceparent`, with its
/// `tracestate`), parsed by the SDK's W3C propagator. Without a
/// `traceparent` header this costs one header look-up and allocates
/// nothing.
pub fn incoming(headers: &http::HeaderMap) -> Option<SpanContext> {
    if !headers.contains_key(TRACEPARENT) {
        return None;
    }
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    let span = cx.span();
    let parent = span.span_context();
    parent.is_valid().then(|| parent.clone())
}

/// This hop's context when no span records it: the parent's trace (and
/// its sampling decision and trace state), or a new trace, under a new
/// span id.
fn local_hop(parent: Option<&SpanContext>) -> SpanContext {
    let ids = RandomIdGenerator::default();
    match parent {
        Some(parent) => SpanContext::new(
            parent.trace_id(),
            ids.new_span_id(),
            parent.trace_flags(),
            false,
            parent.trace_state().clone(),
        ),
        // Nothing records this trace here: it travels on unsampled.
        None => SpanContext::new(
            ids.new_trace_id(),
            ids.new_span_id(),
            TraceFlags::default(),
            false,
            TraceState::NONE,
        ),
    }
}

/// One request's place in its trace: its server span (a disabled one when
/// nothing exports) and the context it hands on.
#[derive(Debug)]
pub struct RequestTrace {
    span: tracing::Span,
    context: SpanContext,
}

impl Default for RequestTrace {
    /// Not started: no span, no ids.
    fn default() -> Self {
        RequestTrace {
            span: tracing::Span::none(),
            context: SpanContext::NONE,
        }
    }
}

impl RequestTrace {
    /// Starts the request's trace from the headers it arrived with. `span`
    /// is its server span, made by the caller (name and fields are theirs)
    /// with [`crate::SPAN_TARGET`]: enabled only while traces are
    /// exported. It becomes a child of a valid incoming `traceparent`, or
    /// the root of a new trace.
    pub fn start(headers: &http::HeaderMap, span: tracing::Span) -> Self {
        let parent = incoming(headers);
        if !span.is_disabled() {
            if let Some(parent) = &parent {
                // Fails only once the span has started: it has not yet.
                let _ = span.set_parent(Context::new().with_remote_span_context(parent.clone()));
            }
            let own = span.context().span().span_context().clone();
            if own.is_valid() {
                return RequestTrace { span, context: own };
            }
        }
        RequestTrace {
            span,
            context: local_hop(parent.as_ref()),
        }
    }

    /// Whether this request's spans are recorded (and exported).
    pub fn recorded(&self) -> bool {
        !self.span.is_disabled()
    }

    /// Whether [`RequestTrace::start`] ran.
    pub fn started(&self) -> bool {
        self.context.is_valid()
    }

    /// The server span (disabled when nothing exports).
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// The context this hop hands on when no child span does.
    pub fn context(&self) -> &SpanContext {
        &self.context
    }

    pub fn trace_id(&self) -> TraceId {
        self.context.trace_id()
    }

    /// The context a child span hands on: its own when it is recorded,
    /// else this request's.
    pub fn context_of(&self, child: &tracing::Span) -> SpanContext {
        if !child.is_disabled() {
            let cx = child.context();
            let span = cx.span();
            let own = span.span_context();
            if own.is_valid() {
                return own.clone();
            }
        }
        self.context.clone()
    }

    /// Runs `future` inside this trace: the server span entered at every
    /// poll, or, when nothing records spans, this hop's context attached,
    /// so [`current_headers`] finds it and [`in_current_trace`] carries it.
    pub fn instrument<F: Future>(&self, future: F) -> Traced<F> {
        let attached = (!self.recorded() && self.started())
            .then(|| Context::new().with_remote_span_context(self.context.clone()));
        Traced {
            inner: future,
            span: self.span.clone(),
            attached,
        }
    }
}

pin_project_lite::pin_project! {
    /// A future run inside a request's trace ([`RequestTrace::instrument`]).
    pub struct Traced<F> {
        #[pin]
        inner: F,
        span: tracing::Span,
        attached: Option<Context>,
    }
}

impl<F> Traced<F> {
    /// `future` outside any trace (what a request that is not traced runs).
    pub fn untraced(future: F) -> Self {
        Traced {
            inner: future,
            span: tracing::Span::none(),
            attached: None,
        }
    }
}

impl<F: Future> Future for Traced<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _attached = this.attached.as_ref().map(|c| c.clone().attach());
        let _entered = this.span.enter();
        this.inner.poll(cx)
    }
}

/// `future`, kept in the trace of the code that spawns it (a request's
/// task handed to `tokio::spawn`): spans it makes are children of the
/// current one, and it hands on the same context.
pub fn in_current_trace<F: Future>(future: F) -> impl Future<Output = F::Output> {
    opentelemetry::context::FutureExt::with_current_context(future)
}

/// Hands a header name and value to `set`, skipping empty values (the
/// propagator writes an empty `tracestate` when there is none).
struct Setter<S>(S);

impl<S: FnMut(&'static str, String)> Injector for Setter<S> {
    fn set(&mut self, key: &str, value: String) {
        let name = match key {
            TRACEPARENT => TRACEPARENT,
            TRACESTATE => TRACESTATE,
            _ => return,
        };
        if !value.is_empty() {
            (self.0)(name, value);
        }
    }
}

/// Writes the headers that carry `context` to the next hop through `set`:
/// `traceparent`, and `tracestate` when there is one. Nothing for an
/// invalid context.
pub fn inject(context: &SpanContext, set: impl FnMut(&'static str, String)) {
    if !context.is_valid() {
        return;
    }
    let cx = Context::new().with_remote_span_context(context.clone());
    TraceContextPropagator::new().inject_context(&cx, &mut Setter(set));
}

/// The W3C headers for a request made from here (an outgoing call inside
/// a request's trace): the current span's context, or the attached one.
/// Empty outside any trace.
pub fn current_headers() -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    let cx = Context::current();
    inject(cx.span().span_context(), |name, value| {
        if let Ok(value) = http::HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    });
    headers
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, http::HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn a_valid_parent_is_continued_with_its_state() {
        let trace = RequestTrace::start(
            &headers(&[(TRACEPARENT, PARENT), (TRACESTATE, "vendor=1")]),
            tracing::Span::none(),
        );
        assert!(trace.started());
        assert!(!trace.recorded());
        assert_eq!(
            trace.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_ne!(trace.context().span_id().to_string(), "00f067aa0ba902b7");
        assert!(trace.context().is_sampled());
        let mut sent = Vec::new();
        inject(trace.context(), |name, value| sent.push((name, value)));
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert!(
            sent[0]
                .1
                .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
        );
        assert!(sent[0].1.ends_with("-01"));
        assert_eq!(sent[1], (TRACESTATE, "vendor=1".to_string()));
    }

    #[test]
    fn an_invalid_or_absent_parent_starts_a_new_trace() {
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "garbage",
            "",
        ] {
            let trace = RequestTrace::start(&headers(&[(TRACEPARENT, bad)]), tracing::Span::none());
            assert!(trace.started());
            assert_ne!(
                trace.trace_id().to_string(),
                "4bf92f3577b34da6a3ce929d0e0e4736",
                "{bad}"
            );
            assert!(!trace.context().is_sampled());
        }
        let a = RequestTrace::start(&headers(&[]), tracing::Span::none());
        let b = RequestTrace::start(&headers(&[]), tracing::Span::none());
        assert_ne!(a.trace_id(), b.trace_id());
        let mut sent = Vec::new();
        inject(a.context(), |name, value| sent.push((name, value)));
        assert_eq!(sent.len(), 1, "no empty tracestate: {sent:?}");
    }

    #[test]
    fn the_attached_context_reaches_outgoing_headers() {
        let trace = RequestTrace::start(&headers(&[(TRACEPARENT, PARENT)]), tracing::Span::none());
        assert!(current_headers().is_empty());
        let expected = trace.context().span_id().to_string();
        let seen = poll_once(
            trace.instrument(async { in_current_trace(async { current_headers() }).await }),
        );
        let value = seen.get(TRACEPARENT).unwrap().to_str().unwrap();
        assert_eq!(
            value,
            format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{expected}-01")
        );
    }

    /// Polls a future that never waits.
    fn poll_once<F: Future>(future: F) -> F::Output {
        let waker = std::task::Waker::noop();
        let mut cx = TaskContext::from_waker(waker);
        let mut future = std::pin::pin!(future);
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(value) => value,
            Poll::Pending => panic!("the future waited"),
        }
    }
}
