//! `meridian-telemetry`: how Meridian's processes say what they do — log
//! lines, the per-request access log, and (switched on by config) traces
//! exported over OTLP/HTTP. The edge and the origin share it; what each
//! records about a request stays with them (`edge::telemetry`,
//! `origin::telemetry`).
//!
//! Layout:
//!
//! - [`config`]: the `telemetry` section of both configs
//!   ([`TelemetryConfig`]): log format, the OTLP endpoint (absent: no
//!   export, the default), service name, sampling ratio, batching.
//! - [`subscriber`]: [`Telemetry`], the one `tracing` subscriber of a
//!   process: log lines as text or JSON on stderr (filtered by
//!   `MERIDIAN_LOG`), plus, when exporting, the `tracing-opentelemetry`
//!   layer over the SDK's batch processor; [`Telemetry::shutdown`] flushes.
//! - [`context`]: W3C trace context — `traceparent`/`tracestate` parsed and
//!   written by the SDK's `TraceContextPropagator` (never by hand),
//!   [`RequestTrace`] (one request's server span and ids), [`Traced`] (a
//!   future run inside a request's trace) and [`in_current_trace`] (for
//!   tasks a request spawns).
//! - [`request_id`]: `X-Request-Id`, taken when sane, else generated.
//! - [`access`]: bounded values for the access-log lines.
//! - `export`: the OTLP client, on the workspace's `reqwest` (blocking: the
//!   SDK exports from a thread of its own, outside any async runtime).
//!
//! Two `tracing` targets are special: [`SPAN_TARGET`] marks the spans meant
//! for traces (never printed as log context; disabled outright — one atomic
//! load at the call site — when nothing exports), and [`ACCESS_TARGET`] the
//! access-log lines (`MERIDIAN_LOG=info,meridian::access=off` silences
//! them).
//!
//! Invariant: with no OTLP endpoint configured, no span is built: a request
//! pays for its ids (a random trace id unless one arrived), its request id,
//! and its access-log line.

#![forbid(unsafe_code)]

pub mod access;
pub mod config;
pub mod context;
mod export;
pub mod request_id;
pub mod subscriber;

pub use config::{LogFormat, SampleRatio, TelemetryConfig};
pub use context::{RequestTrace, Traced, in_current_trace};
pub use subscriber::{Telemetry, TelemetryError};

/// The target of every span meant for traces: only the trace exporter sees
/// them. `tracing::info_span!(target: meridian_telemetry::SPAN_TARGET, …)`.
pub const SPAN_TARGET: &str = "meridian::trace";

/// The target of the access-log lines (one per request, edge and origin).
pub const ACCESS_TARGET: &str = "meridian::access";
