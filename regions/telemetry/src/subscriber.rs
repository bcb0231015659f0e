//! [`Telemetry`]: the process's one `tracing` subscriber.
//!
//! - Log lines go to stderr, as text or one JSON object a line (event
//!   fields at the top level), filtered by `MERIDIAN_LOG` (an `EnvFilter`;
//!   default `info`, libraries' chatter at `warn`). Spans meant for traces
//!   ([`crate::SPAN_TARGET`]) never appear in them.
//! - With an OTLP endpoint, a `tracing-opentelemetry` layer records exactly
//!   those spans (whatever `MERIDIAN_LOG` says) and warnings and errors as
//!   span events; the access log and the SDK's own messages stay out.
//!   Without one, that layer is absent and trace spans are disabled at
//!   their call sites.
//! - [`Telemetry::shutdown`] flushes what is batched (bounded by
//!   `export_timeout`) when the process stops.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Level, Metadata};
use tracing_subscriber::filter::{EnvFilter, FilterExt, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use crate::config::{LogFormat, TelemetryConfig};
use crate::{ACCESS_TARGET, SPAN_TARGET};

/// Variable holding the log filter (`EnvFilter` syntax).
pub const LOG_FILTER_VAR: &str = "MERIDIAN_LOG";

/// The filter when `MERIDIAN_LOG` is unset or unreadable.
pub const DEFAULT_LOG_FILTER: &str = "info,sqlx=warn,fred=warn,opentelemetry=warn";

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("trace exporter: {0}")]
    Exporter(String),
    #[error("a log subscriber is already installed")]
    AlreadyInstalled,
}

/// What a process logs and exports; keep it until the process ends, then
/// [`Telemetry::shutdown`].
#[must_use = "dropping it without `shutdown` may lose the last spans"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    flush_timeout: Duration,
}

/// Whether a log line (or span) belongs in the printed log.
fn printed(meta: &Metadata<'_>) -> bool {
    !(meta.is_span() && meta.target().starts_with(SPAN_TARGET))
}

/// Whether the trace layer records it: trace spans, and warnings and
/// errors (as events of the span they happen in).
fn traced(meta: &Metadata<'_>) -> bool {
    if meta.is_span() {
        meta.target().starts_with(SPAN_TARGET)
    } else {
        *meta.level() <= Level::WARN
            && !meta.target().starts_with(ACCESS_TARGET)
            && !meta.target().starts_with("opentelemetry")
    }
}

fn log_layer(format: LogFormat) -> Box<dyn Layer<Registry> + Send + Sync> {
    let filter = EnvFilter::try_from_env(LOG_FILTER_VAR)
        .unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER))
        .and(filter_fn(printed));
    // Colours only for a person at a terminal: log files and collectors
    // get plain text (and the hot path skips the escape codes).
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    match format {
        LogFormat::Text => layer.with_filter(filter).boxed(),
        LogFormat::Json => layer.json().flatten_event(true).with_filter(filter).boxed(),
    }
}

/// The subscriber: log lines, and the trace layer when `provider` exports.
/// Without one there is no trace layer at all (not an empty `Option`
/// layer, which would enable every call site): trace spans are then
/// disabled where they are made.
fn subscriber(
    format: LogFormat,
    provider: Option<&SdkTracerProvider>,
) -> Box<dyn tracing::Subscriber + Send + Sync> {
    let logs = tracing_subscriber::registry().with(log_layer(format));
    match provider {
        None => Box::new(logs),
        Some(provider) => Box::new(
            logs.with(
                tracing_opentelemetry::layer()
                    .with_tracer(provider.tracer("meridian"))
                    .with_tracked_inactivity(false)
                    .with_threads(false)
                    .with_target(false)
                    .with_filter(filter_fn(traced)),
            ),
        ),
    }
}

impl Telemetry {
    /// Log lines only: the commands that run no edge or origin.
    pub fn logs(format: LogFormat) -> Result<Self, TelemetryError> {
        subscriber(format, None)
            .try_init()
            .map_err(|_| TelemetryError::AlreadyInstalled)?;
        Ok(Telemetry {
            provider: None,
            flush_timeout: Duration::ZERO,
        })
    }

    /// Log lines as `config` (or `json_flag`) says and, when it names an
    /// OTLP endpoint, trace export as `service_name` (the config's, else
    /// `default_service`) of `region`.
    pub fn start(
        config: &TelemetryConfig,
        json_flag: bool,
        default_service: &str,
        region: &str,
    ) -> Result<Self, TelemetryError> {
        let service = config.service_name.as_deref().unwrap_or(default_service);
        let provider = config
            .otlp_endpoint
            .as_ref()
            .map(|endpoint| crate::export::provider(config, endpoint.as_str(), service, region))
            .transpose()?;
        subscriber(config.log_format_or(json_flag), provider.as_ref())
            .try_init()
            .map_err(|_| TelemetryError::AlreadyInstalled)?;
        if let Some(endpoint) = &config.otlp_endpoint {
            tracing::info!(
                %endpoint,
                service,
                sample_ratio = config.sample_ratio.get(),
                "exporting traces (OTLP/HTTP)"
            );
        }
        Ok(Telemetry {
            provider,
            flush_timeout: config.export_timeout,
        })
    }

    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Sends what is batched and stops the exporter (blocks up to the
    /// export timeout). Call it once the servers have stopped.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(error) = provider.force_flush() {
                tracing::warn!(%error, "traces not flushed at shutdown");
            }
            if let Err(error) = provider.shutdown_with_timeout(self.flush_timeout) {
                tracing::warn!(%error, "trace exporter did not stop cleanly");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};

    use super::*;
    use crate::context::{RequestTrace, TRACEPARENT, current_headers};

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn request_span() -> tracing::Span {
        tracing::info_span!(target: SPAN_TARGET, "test.request")
    }

    fn parent_headers() -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(TRACEPARENT, http::HeaderValue::from_static(PARENT));
        headers
    }

    /// Polls a future that never waits.
    fn poll_once<F: std::future::Future>(future: F) -> F::Output {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match std::pin::pin!(future).as_mut().poll(&mut cx) {
            std::task::Poll::Ready(value) => value,
            std::task::Poll::Pending => panic!("the future waited"),
        }
    }

    #[test]
    fn without_an_exporter_trace_spans_are_disabled() {
        let _default = tracing::subscriber::set_default(subscriber(LogFormat::Text, None));
        let trace = RequestTrace::start(&parent_headers(), request_span());
        assert!(!trace.recorded());
        assert_eq!(
            trace.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        // An ordinary span is still a log span.
        assert!(!tracing::info_span!("ordinary").is_disabled());
    }

    #[test]
    fn exported_spans_chain_from_the_incoming_parent_to_outgoing_calls() {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let _default =
            tracing::subscriber::set_default(subscriber(LogFormat::Json, Some(&provider)));

        let trace = RequestTrace::start(&parent_headers(), request_span());
        assert!(trace.recorded());
        assert_eq!(
            trace.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let own = trace.context().span_id();
        let sent = poll_once(trace.instrument(async {
            let call = tracing::info_span!(target: SPAN_TARGET, "test.call");
            let _entered = call.enter();
            current_headers()
        }));
        drop(trace);
        provider.force_flush().unwrap();

        let spans = exporter.get_finished_spans().unwrap();
        let request = spans.iter().find(|s| s.name == "test.request").unwrap();
        let call = spans.iter().find(|s| s.name == "test.call").unwrap();
        assert_eq!(request.span_context.span_id(), own);
        assert_eq!(request.parent_span_id.to_string(), "00f067aa0ba902b7");
        assert_eq!(call.parent_span_id, own, "the call is the request's child");
        let traceparent = sent.get(TRACEPARENT).unwrap().to_str().unwrap();
        assert_eq!(
            traceparent,
            format!(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01",
                call.span_context.span_id()
            ),
            "the outgoing call names its own span as the parent"
        );
    }
}
