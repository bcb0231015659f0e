//! The ops commands' HTTP client: short timeouts, the admin token on every
//! request, and answers that are not 2xx turned into a message with the
//! problem's detail.

use std::time::Duration;

use serde_json::Value;

use crate::CliError;

#[derive(Clone)]
pub struct OpsClient {
    http: reqwest::Client,
    token: String,
}

impl OpsClient {
    pub fn new(token: &str) -> Result<Self, CliError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| CliError::Other(format!("HTTP client: {e}")))?;
        Ok(OpsClient {
            http,
            token: token.to_string(),
        })
    }

    async fn send(&self, request: reqwest::RequestBuilder, what: &str) -> Result<Value, CliError> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| CliError::Other(format!("{what}: {e}")))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let detail = body["detail"].as_str().unwrap_or("no detail");
        Err(CliError::Other(format!("{what}: {status}: {detail}")))
    }

    pub async fn get(&self, url: &str) -> Result<Value, CliError> {
        self.send(self.http.get(url), &format!("GET {url}")).await
    }

    /// `GET` that tolerates a 503 body (a `/readyz` that is not ready).
    pub async fn readyz(&self, base: &str) -> Result<(bool, Value), CliError> {
        let url = format!("{base}/readyz");
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| CliError::Other(format!("GET {url}: {e}")))?;
        let ready = response.status().is_success();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok((ready, body))
    }

    pub async fn text(&self, url: &str) -> Result<String, CliError> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| CliError::Other(format!("GET {url}: {e}")))?;
        response
            .text()
            .await
            .map_err(|e| CliError::Other(format!("GET {url}: {e}")))
    }

    pub async fn put(&self, url: &str, body: &Value) -> Result<Value, CliError> {
        self.send(self.http.put(url).json(body), &format!("PUT {url}"))
            .await
    }

    pub async fn post(&self, url: &str, body: &Value) -> Result<Value, CliError> {
        self.send(self.http.post(url).json(body), &format!("POST {url}"))
            .await
    }
}
