//! The OTLP/HTTP trace exporter: the SDK's batch processor (a thread of its
//! own: spans are handed over, never exported on a request's time) sending
//! protobuf to `<otlp_endpoint>/v1/traces` through [`ExportClient`], the
//! workspace's `reqwest` in its blocking form.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use opentelemetry::KeyValue;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};

use crate::config::TelemetryConfig;
use crate::subscriber::TelemetryError;

/// Largest collector answer read (they are a few bytes).
const MAX_RESPONSE_BYTES: u64 = 64 * 1024;

/// `reqwest::blocking::Client` as the exporter's HTTP client. It runs on
/// the batch processor's thread; the blocking client keeps its own small
/// runtime, so no async runtime of the process is involved.
struct ExportClient(reqwest::blocking::Client);

impl fmt::Debug for ExportClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ExportClient")
    }
}

impl ExportClient {
    /// Builds the client on a thread of its own: a blocking client cannot
    /// be made inside an async runtime (the origin starts inside one).
    fn new(timeout: Duration) -> Result<Self, TelemetryError> {
        std::thread::Builder::new()
            .name("otlp-client".into())
            .spawn(move || {
                reqwest::blocking::Client::builder()
                    .timeout(timeout)
                    .connect_timeout(timeout.min(Duration::from_secs(1)))
                    .build()
            })
            .map_err(|e| TelemetryError::Exporter(format!("cannot start a thread: {e}")))?
            .join()
            .map_err(|_| TelemetryError::Exporter("building the HTTP client panicked".into()))?
            .map(ExportClient)
            .map_err(|e| TelemetryError::Exporter(format!("HTTP client: {e}")))
    }
}

#[async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        use std::io::Read as _;
        let request = reqwest::blocking::Request::try_from(request)?;
        let mut response = self.0.execute(request)?;
        let status = response.status();
        let headers = std::mem::take(response.headers_mut());
        let mut body = Vec::new();
        response.take(MAX_RESPONSE_BYTES).read_to_end(&mut body)?;
        let mut answer = Response::builder().status(status).body(Bytes::from(body))?;
        *answer.headers_mut() = headers;
        Ok(answer)
    }
}

/// The tracer provider for `config` (which names an endpoint): batches of
/// spans sampled by `sample_ratio` (parent-based: a caller's decision
/// stands), sent as protobuf.
pub fn provider(
    config: &TelemetryConfig,
    endpoint: &str,
    service_name: &str,
    region: &str,
) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(ExportClient::new(config.export_timeout)?)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .with_timeout(config.export_timeout)
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let batches = BatchConfigBuilder::default()
        .with_scheduled_delay(config.batch_delay)
        .with_max_queue_size(config.max_queued_spans)
        .with_max_export_batch_size(512.min(config.max_queued_spans))
        .build();
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batches)
        .build();
    let resource = Resource::builder_empty()
        .with_service_name(service_name.to_string())
        .with_attributes([
            KeyValue::new("service.namespace", "meridian"),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("meridian.region", region.to_string()),
        ])
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sample_ratio.get(),
        ))))
        .with_resource(resource)
        .build())
}
