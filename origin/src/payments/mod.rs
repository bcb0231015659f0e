//! Payments: the origin's side of the payment providers (PSPs).
//!
//! - [`client`]: one provider's HTTP API, with every answer sorted into
//!   done / refused (nothing done) / unknown (timeout) / rejected.
//! - [`Payments`] (this module): the providers in order of preference, each
//!   behind a circuit breaker (`failsafe`: opens after consecutive
//!   failures, lets one call through after a pause). A refused request is
//!   retried with exponential backoff and jitter (`backon`); an unknown
//!   outcome (a timeout, a 5xx, a key still in flight) is resolved by
//!   looking the payment up by its idempotency key, never by asking to
//!   charge again; when a provider's breaker is open or it keeps refusing
//!   (nothing done), the next provider is used. An outcome the look-up
//!   cannot settle stops the search: no other provider is asked to take a
//!   payment that may still land at the first. The provider is reported,
//!   the order waits for the recovery worker, and a stray authorization
//!   there is found and voided later.
//!
//! Invariant: a payment is attempted at most once per idempotency key and
//! per provider; keys are derived from the order id, so a retry, a resumed
//! saga or a second origin all use the same key.

pub mod client;

use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use failsafe::StateMachine;
use failsafe::backoff::Constant;
use failsafe::failure_policy::ConsecutiveFailures;
use tracing::Instrument;

pub use client::{Authorized, Intent, IntentStatus, PspClient, PspError};

use crate::config::PaymentsConfig;
use crate::metrics::Metrics;

/// Reports breaker changes as `meridian_psp_breaker_open{psp}`.
struct BreakerGauge {
    gauge: prometheus::IntGauge,
}

impl failsafe::Instrument for BreakerGauge {
    fn on_call_rejected(&self) {}
    fn on_open(&self) {
        self.gauge.set(1);
    }
    fn on_half_open(&self) {}
    fn on_closed(&self) {
        self.gauge.set(0);
    }
}

type Breaker = StateMachine<ConsecutiveFailures<Constant>, BreakerGauge>;

struct Provider {
    name: String,
    client: PspClient,
    breaker: Breaker,
}

/// The outcome of asking the providers to authorize a payment.
#[derive(Debug, Clone)]
pub enum Authorization {
    Authorized {
        psp: String,
        intent: Intent,
        /// Providers tried before whose outcome stayed unknown.
        unknown: Vec<String>,
    },
    Declined {
        psp: String,
        intent: Intent,
        unknown: Vec<String>,
    },
    /// No provider could be asked or answered.
    Unavailable { unknown: Vec<String> },
}

#[derive(Debug, thiserror::Error)]
pub enum PaymentsError {
    #[error("payment provider {0}: cannot build its client: {1}")]
    Client(String, String),
    #[error("no payment provider named `{0}`")]
    UnknownProvider(String),
}

/// A payment to authorize.
#[derive(Debug, Clone, Copy)]
pub struct Charge<'a> {
    /// Idempotency key on every provider (derived from the order id).
    pub key: &'a str,
    pub order_id: &'a str,
    pub amount_minor: i64,
    pub currency: &'a str,
    pub payment_method: Option<&'a str>,
}

#[derive(Clone)]
pub struct Payments(std::sync::Arc<Inner>);

struct Inner {
    providers: Vec<Provider>,
    backoff: ExponentialBuilder,
    metrics: Metrics,
}

impl Payments {
    pub fn new(config: &PaymentsConfig, metrics: Metrics) -> Result<Self, PaymentsError> {
        let mut providers = Vec::new();
        for psp in &config.providers {
            let client = PspClient::new(psp.url.as_str(), config.request_timeout)
                .map_err(|e| PaymentsError::Client(psp.name.clone(), e.to_string()))?;
            let gauge = metrics
                .psp_breaker_open
                .with_label_values(&[psp.name.as_str()]);
            // At zero from the start: no fallback past it yet.
            metrics
                .psp_fallbacks
                .with_label_values(&[psp.name.as_str()]);
            let policy = failsafe::failure_policy::consecutive_failures(
                config.breaker_failures,
                failsafe::backoff::constant(config.breaker_open_for),
            );
            providers.push(Provider {
                name: psp.name.clone(),
                client,
                breaker: StateMachine::new(policy, BreakerGauge { gauge }),
            });
        }
        let backoff = ExponentialBuilder::default()
            .with_min_delay(config.backoff)
            .with_max_delay(config.backoff * 16)
            .with_max_times(config.retries)
            .with_jitter();
        Ok(Payments(std::sync::Arc::new(Inner {
            providers,
            backoff,
            metrics,
        })))
    }

    pub fn provider_names(&self) -> impl Iterator<Item = &str> {
        self.0.providers.iter().map(|p| p.name.as_str())
    }

    fn provider(&self, name: &str) -> Result<&Provider, PaymentsError> {
        self.0
            .providers
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| PaymentsError::UnknownProvider(name.to_string()))
    }

    /// Runs one provider call with retries of refused attempts (and of
    /// unknown ones when `retry_unknown`: reads, and keyed transitions the
    /// provider answers from its record), counting every attempt against
    /// the breaker and in the metrics.
    async fn call<T, F, Fut>(
        &self,
        provider: &Provider,
        operation: &str,
        retry_unknown: bool,
        op: F,
    ) -> Result<T, PspError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, PspError>>,
    {
        let attempt = || async {
            if !provider.breaker.is_call_permitted() {
                self.0
                    .metrics
                    .psp_requests
                    .with_label_values(&[provider.name.as_str(), operation, "breaker_open"])
                    .inc();
                return Err(PspError::Refused(format!(
                    "the circuit breaker of {} is open",
                    provider.name
                )));
            }
            let started = Instant::now();
            // The client hands this span's context to the provider.
            let span = tracing::info_span!(
                target: meridian_telemetry::SPAN_TARGET,
                "psp.request",
                otel.kind = "client",
                otel.status_code = tracing::field::Empty,
                meridian.psp = provider.name.as_str(),
                meridian.operation = operation,
                meridian.result = tracing::field::Empty,
            );
            let result = op().instrument(span.clone()).await;
            span.record("meridian.result", client::result_label(&result));
            if matches!(&result, Err(error) if error.is_provider_failure()) {
                span.record("otel.status_code", "ERROR");
            }
            match &result {
                Err(error) if error.is_provider_failure() => provider.breaker.on_error(),
                _ => provider.breaker.on_success(),
            }
            let labels = [provider.name.as_str(), operation];
            self.0
                .metrics
                .psp_duration
                .with_label_values(&labels)
                .observe(started.elapsed().as_secs_f64());
            self.0
                .metrics
                .psp_requests
                .with_label_values(&[labels[0], labels[1], client::result_label(&result)])
                .inc();
            result
        };
        attempt
            .retry(self.0.backoff)
            .when(|error: &PspError| {
                let retryable =
                    error.is_refused() || (retry_unknown && matches!(error, PspError::Unknown(_)));
                retryable && provider.breaker.is_call_permitted()
            })
            .await
    }

    /// Authorizes `charge` with the first provider that can answer.
    pub async fn authorize(&self, charge: Charge<'_>) -> Authorization {
        let mut unknown = Vec::new();
        for provider in &self.0.providers {
            let asked = self
                .call(provider, "authorize", false, || {
                    provider.client.authorize(
                        charge.key,
                        charge.amount_minor,
                        charge.currency,
                        charge.payment_method,
                        charge.order_id,
                    )
                })
                .await;
            let answer = match asked {
                Ok(answer) => Some(answer),
                // Refused (nothing done) or rejected: this provider will
                // not take it; try the next one.
                Err(PspError::Refused(reason))
                | Err(PspError::Rejected {
                    message: reason, ..
                }) => {
                    tracing::warn!(psp = %provider.name, %reason, "authorization not taken");
                    None
                }
                // Unknown: ask what happened under this key.
                Err(PspError::Unknown(reason)) => {
                    tracing::warn!(psp = %provider.name, %reason, "authorization outcome unknown; looking it up");
                    match self.find_on(provider, charge.key).await {
                        Ok(Some(intent)) if intent.status == IntentStatus::Declined => {
                            Some(Authorized::Declined(intent))
                        }
                        Ok(Some(intent)) => Some(Authorized::Authorized(intent)),
                        // Not there (yet), or not askable: the request may
                        // still land. The outcome stays unknown — recorded
                        // and reconciled by the recovery worker — and no
                        // other provider is asked to take the payment.
                        Ok(None) | Err(_) => {
                            unknown.push(provider.name.clone());
                            return Authorization::Unavailable { unknown };
                        }
                    }
                }
            };
            match answer {
                Some(Authorized::Authorized(intent)) => {
                    return Authorization::Authorized {
                        psp: provider.name.clone(),
                        intent,
                        unknown,
                    };
                }
                Some(Authorized::Declined(intent)) => {
                    return Authorization::Declined {
                        psp: provider.name.clone(),
                        intent,
                        unknown,
                    };
                }
                None => {
                    self.0
                        .metrics
                        .psp_fallbacks
                        .with_label_values(&[provider.name.as_str()])
                        .inc();
                }
            }
        }
        Authorization::Unavailable { unknown }
    }

    async fn find_on(&self, provider: &Provider, key: &str) -> Result<Option<Intent>, PspError> {
        // A look-up is a read: retrying it after a timeout is safe too.
        self.call(provider, "lookup", true, || provider.client.find(key))
            .await
    }

    /// The intent created under `key` at provider `psp`, if any.
    pub async fn find(&self, psp: &str, key: &str) -> Result<Option<Intent>, PspError> {
        let provider = self.provider(psp).map_err(|e| PspError::Rejected {
            status: 0,
            message: e.to_string(),
        })?;
        self.find_on(provider, key).await
    }

    /// Captures, voids or refunds intent `id` at `psp` (idempotent: the
    /// key is derived from the order and the action). Unknown outcomes are
    /// retried with the same key, which the provider answers from its
    /// record.
    pub async fn transition(
        &self,
        psp: &str,
        id: &str,
        action: &'static str,
        key: &str,
    ) -> Result<Intent, PspError> {
        let provider = self.provider(psp).map_err(|e| PspError::Rejected {
            status: 0,
            message: e.to_string(),
        })?;
        self.call(provider, action, true, || {
            provider.client.transition(id, action, key)
        })
        .await
    }
}

/// How long one full authorization can take at most (for callers that
/// must outwait it): every provider, every retry, every timeout.
pub fn worst_case(config: &PaymentsConfig) -> Duration {
    let per_call = config.request_timeout + config.backoff * 16;
    per_call * ((config.retries as u32 + 1) * 2 * config.providers.len() as u32)
}
