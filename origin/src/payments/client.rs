//! One payment provider's HTTP API (payment intents, Stripe-style
//! idempotency keys). Every answer is sorted into what it means for a
//! retry: done ([`Intent`]), refused with nothing done (safe to retry or to
//! try elsewhere), unknown (a timeout: look it up by key, never charge
//! again), or rejected (the request itself is wrong; retrying cannot help).
//! Every request carries the caller's W3C trace context (`traceparent`,
//! `tracestate`).

use std::time::Duration;

use meridian_telemetry::context::current_headers;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

/// The header carrying the idempotency key.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntentStatus {
    Authorized,
    Declined,
    Captured,
    Voided,
    Refunded,
}

/// A payment intent as the provider reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Intent {
    pub id: String,
    pub amount_minor: i64,
    pub currency: String,
    pub status: IntentStatus,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum PspError {
    /// Nothing was done (connection refused, 503, key in flight).
    #[error("refused: {0}")]
    Refused(String),
    /// The request may or may not have been done (timeout, connection
    /// lost after sending).
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// The provider refused this request for good (4xx).
    #[error("rejected ({status}): {message}")]
    Rejected { status: u16, message: String },
}

impl PspError {
    pub fn is_refused(&self) -> bool {
        matches!(self, PspError::Refused(_))
    }

    /// Whether the provider itself is struggling (counts against its
    /// circuit breaker).
    pub fn is_provider_failure(&self) -> bool {
        matches!(self, PspError::Refused(_) | PspError::Unknown(_))
    }

    fn label(&self) -> &'static str {
        match self {
            PspError::Refused(_) => "refused",
            PspError::Unknown(_) => "unknown",
            PspError::Rejected { .. } => "rejected",
        }
    }
}

/// The answer to an authorization request.
#[derive(Debug, Clone)]
pub enum Authorized {
    Authorized(Intent),
    Declined(Intent),
}

#[derive(Serialize)]
struct CreateIntent<'a> {
    amount_minor: i64,
    currency: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    payment_method: Option<&'a str>,
    metadata: serde_json::Value,
}

#[derive(Clone)]
pub struct PspClient {
    base: String,
    http: reqwest::Client,
}

impl PspClient {
    pub fn new(base: &str, timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(1)))
            .pool_max_idle_per_host(64)
            .build()?;
        Ok(PspClient {
            base: base.trim_end_matches('/').to_string(),
            http,
        })
    }

    /// Creates and authorizes an intent under `key`.
    pub async fn authorize(
        &self,
        key: &str,
        amount_minor: i64,
        currency: &str,
        payment_method: Option<&str>,
        order_id: &str,
    ) -> Result<Authorized, PspError> {
        let body = CreateIntent {
            amount_minor,
            currency,
            payment_method,
            metadata: serde_json::json!({ "order_id": order_id }),
        };
        let response = self
            .http
            .post(format!("{}/v1/payment_intents", self.base))
            .headers(current_headers())
            .header(IDEMPOTENCY_KEY, key)
            .json(&body)
            .send()
            .await
            .map_err(transport)?;
        match response.status() {
            StatusCode::OK => Ok(Authorized::Authorized(decode(response).await?)),
            StatusCode::PAYMENT_REQUIRED => Ok(Authorized::Declined(decode(response).await?)),
            _ => Err(failure(response).await),
        }
    }

    /// `capture`, `void` or `refund` of intent `id` under `key`.
    pub async fn transition(&self, id: &str, action: &str, key: &str) -> Result<Intent, PspError> {
        let response = self
            .http
            .post(format!("{}/v1/payment_intents/{id}/{action}", self.base))
            .headers(current_headers())
            .header(IDEMPOTENCY_KEY, key)
            .send()
            .await
            .map_err(transport)?;
        if response.status() == StatusCode::OK {
            decode(response).await
        } else {
            Err(failure(response).await)
        }
    }

    /// The intent created with `key`, if any.
    pub async fn find(&self, key: &str) -> Result<Option<Intent>, PspError> {
        let response = self
            .http
            .get(format!("{}/v1/payment_intents", self.base))
            .headers(current_headers())
            .query(&[("idempotency_key", key)])
            .send()
            .await
            .map_err(transport)?;
        match response.status() {
            StatusCode::OK => decode(response).await.map(Some),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(failure(response).await),
        }
    }
}

pub(crate) fn result_label<T>(result: &Result<T, PspError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(error) => error.label(),
    }
}

fn transport(error: reqwest::Error) -> PspError {
    if error.is_connect() {
        PspError::Refused(error.to_string())
    } else {
        PspError::Unknown(error.to_string())
    }
}

async fn decode(response: reqwest::Response) -> Result<Intent, PspError> {
    response
        .json::<Intent>()
        .await
        .map_err(|e| PspError::Unknown(format!("unreadable answer: {e}")))
}

async fn failure(response: reqwest::Response) -> PspError {
    let status = response.status();
    let message = response.text().await.unwrap_or_default();
    let message: String = message.chars().take(300).collect();
    match status {
        // 503: nothing was done.
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => {
            PspError::Refused(format!("{status}: {message}"))
        }
        // 409 for a key still in flight: an earlier request under this key
        // is running there and may yet take the payment — an unknown
        // outcome, never a reason to pay elsewhere.
        StatusCode::CONFLICT if message.contains("idempotency_key_in_use") => {
            PspError::Unknown(format!("{status}: {message}"))
        }
        status if status.is_server_error() => PspError::Unknown(format!("{status}: {message}")),
        status => PspError::Rejected {
            status: status.as_u16(),
            message,
        },
    }
}
