//! The `telemetry` section of the edge's and the origin's configs
//! (`[telemetry]` in TOML, `MERIDIAN_ORIGIN__TELEMETRY__OTLP_ENDPOINT=…` in
//! the environment). Every field has a default: an absent section logs as
//! the command line says and exports nothing.

use std::time::Duration;

use meridian_config::HttpUrl;
use serde::{Deserialize, Serialize};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (local use).
    Text,
    /// One JSON object a line, fields at the top level (production).
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `text` or `json` log lines. Absent: the command line decides
    /// (`--log-json` / `MERIDIAN_LOG_JSON`; text otherwise). The Helm
    /// chart sets `json`.
    #[serde(default)]
    pub log_format: Option<LogFormat>,
    /// Base URL of an OTLP/HTTP receiver (a collector or agent):
    /// `http://otel-collector:4318`; spans are sent to `<url>/v1/traces` as
    /// protobuf. Absent (the default): no span is recorded or sent.
    #[serde(default)]
    pub otlp_endpoint: Option<HttpUrl>,
    /// `service.name` of the exported spans; default `meridian-edge` or
    /// `meridian-origin`.
    #[serde(default)]
    pub service_name: Option<String>,
    /// Share of new traces recorded, 0 to 1. A request that arrives with a
    /// `traceparent` keeps its caller's decision.
    #[serde(default)]
    pub sample_ratio: SampleRatio,
    /// Longest a finished span waits before it is sent (spans leave in
    /// batches).
    #[serde(with = "humantime_serde", default = "defaults::batch_delay")]
    pub batch_delay: Duration,
    /// Longest one export may take; also bounds the flush at shutdown.
    #[serde(with = "humantime_serde", default = "defaults::export_timeout")]
    pub export_timeout: Duration,
    /// Finished spans held while the receiver is slow or away; past it new
    /// ones are dropped (requests never wait for the exporter).
    #[serde(default = "defaults::max_queued_spans")]
    pub max_queued_spans: usize,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log_format: None,
            otlp_endpoint: None,
            service_name: None,
            sample_ratio: SampleRatio::default(),
            batch_delay: defaults::batch_delay(),
            export_timeout: defaults::export_timeout(),
            max_queued_spans: defaults::max_queued_spans(),
        }
    }
}

/// A broken rule of [`TelemetryConfig::validate`]: the field's full path
/// (`telemetry.batch_delay`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: &'static str,
    pub problem: &'static str,
}

impl TelemetryConfig {
    /// The rules the types alone do not keep.
    pub fn validate(&self) -> Result<(), Invalid> {
        let invalid = |field, problem| Err(Invalid { field, problem });
        if let Some(url) = &self.otlp_endpoint {
            if url.as_url().scheme() != "http" {
                return invalid(
                    "telemetry.otlp_endpoint",
                    "must be an `http://` URL: the exporter speaks plain HTTP to a collector or agent next to the process (no TLS stack of its own)",
                );
            }
            if !url.as_url().username().is_empty() || url.as_url().password().is_some() {
                return invalid(
                    "telemetry.otlp_endpoint",
                    "must not carry credentials (it is logged at start)",
                );
            }
            if url.as_url().query().is_some() || url.as_url().fragment().is_some() {
                return invalid(
                    "telemetry.otlp_endpoint",
                    "must be a base URL without query or fragment (`/v1/traces` is appended)",
                );
            }
        }
        if let Some(name) = &self.service_name
            && (name.is_empty()
                || name.len() > 128
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')))
        {
            return invalid(
                "telemetry.service_name",
                "must be 1 to 128 letters, digits, `-`, `_` or `.`",
            );
        }
        if !(Duration::from_millis(10)..=Duration::from_secs(60)).contains(&self.batch_delay) {
            return invalid("telemetry.batch_delay", "must be from 10ms to 60s");
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&self.export_timeout) {
            return invalid("telemetry.export_timeout", "must be from 100ms to 60s");
        }
        if !(64..=1_000_000).contains(&self.max_queued_spans) {
            return invalid(
                "telemetry.max_queued_spans",
                "must be between 64 and 1000000",
            );
        }
        Ok(())
    }

    /// The log format: the config's, else `json` when the command line
    /// asks for it, else text.
    pub fn log_format_or(&self, json_flag: bool) -> LogFormat {
        self.log_format.unwrap_or(if json_flag {
            LogFormat::Json
        } else {
            LogFormat::Text
        })
    }
}

/// A sampling ratio: a number from 0 (no new trace recorded) to 1 (every
/// one, the default). Refused at load otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct SampleRatio(f64);

impl SampleRatio {
    pub fn get(self) -> f64 {
        self.0
    }
}

impl Default for SampleRatio {
    fn default() -> Self {
        SampleRatio(1.0)
    }
}

impl TryFrom<f64> for SampleRatio {
    type Error = &'static str;

    fn try_from(value: f64) -> Result<Self, Self::Error> {
        if (0.0..=1.0).contains(&value) {
            Ok(SampleRatio(value))
        } else {
            Err("a sampling ratio is a number from 0 to 1")
        }
    }
}

impl From<SampleRatio> for f64 {
    fn from(ratio: SampleRatio) -> f64 {
        ratio.0
    }
}

mod defaults {
    use std::time::Duration;

    pub fn batch_delay() -> Duration {
        Duration::from_secs(2)
    }
    pub fn export_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn max_queued_spans() -> usize {
        8192
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn parse(text: &str) -> Result<TelemetryConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn an_empty_section_exports_nothing_and_is_valid() {
        let config = parse("").unwrap();
        assert_eq!(config, TelemetryConfig::default());
        assert!(config.otlp_endpoint.is_none());
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.log_format_or(false), LogFormat::Text);
        assert_eq!(config.log_format_or(true), LogFormat::Json);
    }

    #[test]
    fn the_config_format_wins_over_the_flag() {
        let config = parse("log_format = \"text\"").unwrap();
        assert_eq!(config.log_format_or(true), LogFormat::Text);
        assert!(parse("log_format = \"yaml\"").is_err());
    }

    #[test]
    fn ratios_outside_zero_to_one_are_refused_at_load() {
        assert_eq!(
            parse("sample_ratio = 0.25").unwrap().sample_ratio.get(),
            0.25
        );
        assert_eq!(parse("sample_ratio = 1").unwrap().sample_ratio.get(), 1.0);
        let error = parse("sample_ratio = 1.5").unwrap_err().to_string();
        assert!(error.contains("from 0 to 1"), "{error}");
        assert!(parse("sample_ratio = -0.1").is_err());
    }

    #[test]
    fn endpoints_are_plain_http_base_urls() {
        let ok = parse("otlp_endpoint = \"http://collector:4318\"").unwrap();
        assert_eq!(ok.validate(), Ok(()));
        for bad in [
            "https://collector:4318",
            "http://collector:4318/?token=x",
            "http://user:secret@collector:4318",
        ] {
            let config = parse(&format!("otlp_endpoint = \"{bad}\"")).unwrap();
            assert_eq!(
                config.validate().unwrap_err().field,
                "telemetry.otlp_endpoint",
                "{bad}"
            );
        }
        assert!(parse("otlp_endpoint = \"collector:4318\"").is_err());
    }

    #[test]
    fn bounds_are_checked() {
        let cases = [
            ("service_name = \"\"", "telemetry.service_name"),
            ("service_name = \"a b\"", "telemetry.service_name"),
            ("batch_delay = \"1ms\"", "telemetry.batch_delay"),
            ("export_timeout = \"2m\"", "telemetry.export_timeout"),
            ("max_queued_spans = 1", "telemetry.max_queued_spans"),
        ];
        for (text, field) in cases {
            assert_eq!(parse(text).unwrap().validate().unwrap_err().field, field);
        }
        assert!(parse("unknown = 1").is_err());
    }
}
