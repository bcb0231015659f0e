//! The L2 tier: the regional Redis, through fred. Redis being down is a
//! slower path, never an error: every command has a short timeout, and after
//! a failure the tier is skipped (no waiting on requests) while a background
//! probe pings Redis until it answers again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fred::prelude::{
    Builder, Client, ClientLike, Config, Expiration, KeysInterface, PubsubInterface,
    ReconnectPolicy,
};

use crate::metrics::Metrics;

/// How often a skipped L2 is probed for recovery.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// Prefix of every key Meridian's catalog writes to Redis.
pub const KEY_PREFIX: &str = "meridian:catalog:v1:";

#[derive(Debug, thiserror::Error)]
pub enum L2Error {
    #[error("invalid redis URL: {0}")]
    Url(#[source] fred::error::Error),
    #[error("redis client: {0}")]
    Client(#[source] fred::error::Error),
}

pub enum L2Get {
    Hit(Bytes),
    Miss,
    /// Redis did not answer in time or is being skipped.
    Unavailable,
}

#[derive(Clone)]
pub struct L2 {
    inner: Arc<L2Inner>,
}

struct L2Inner {
    client: Client,
    timeout: Duration,
    available: AtomicBool,
    probing: AtomicBool,
    metrics: Metrics,
}

impl L2 {
    /// Creates the client and starts connecting in the background; the
    /// origin does not wait for Redis to start.
    pub fn connect(url: &str, timeout: Duration, metrics: Metrics) -> Result<Self, L2Error> {
        let client = build_client(url, timeout)?;
        client.connect();
        let l2 = L2 {
            inner: Arc::new(L2Inner {
                client,
                timeout,
                available: AtomicBool::new(false),
                probing: AtomicBool::new(false),
                metrics,
            }),
        };
        l2.start_probe();
        Ok(l2)
    }

    pub fn is_available(&self) -> bool {
        self.inner.available.load(Ordering::Acquire)
    }

    pub async fn get(&self, key: &str) -> L2Get {
        if !self.is_available() {
            return L2Get::Unavailable;
        }
        let result = tokio::time::timeout(
            self.inner.timeout,
            self.inner
                .client
                .get::<Option<Bytes>, _>(format!("{KEY_PREFIX}{key}")),
        )
        .await;
        match result {
            Ok(Ok(Some(bytes))) => L2Get::Hit(bytes),
            Ok(Ok(None)) => L2Get::Miss,
            Ok(Err(error)) => {
                self.failed(&error.to_string());
                L2Get::Unavailable
            }
            Err(_) => {
                self.failed("timed out");
                L2Get::Unavailable
            }
        }
    }

    /// Best effort: a failure only marks the tier unavailable.
    pub async fn set(&self, key: &str, value: Bytes, ttl: Duration) {
        if !self.is_available() {
            return;
        }
        let seconds = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let command = self.inner.client.set::<(), _, _>(
            format!("{KEY_PREFIX}{key}"),
            value,
            Some(Expiration::EX(seconds)),
            None,
            false,
        );
        match tokio::time::timeout(self.inner.timeout, command).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => self.failed(&error.to_string()),
            Err(_) => self.failed("timed out"),
        }
    }

    /// Deletes keys; returns false if Redis could not be reached.
    pub async fn delete(&self, keys: &[String]) -> bool {
        if keys.is_empty() || !self.is_available() {
            return keys.is_empty();
        }
        let full: Vec<String> = keys.iter().map(|k| format!("{KEY_PREFIX}{k}")).collect();
        match tokio::time::timeout(self.inner.timeout, self.inner.client.del::<i64, _>(full)).await
        {
            Ok(Ok(_)) => true,
            Ok(Err(error)) => {
                self.failed(&error.to_string());
                false
            }
            Err(_) => {
                self.failed("timed out");
                false
            }
        }
    }

    /// Publishes a message on a channel; false if Redis could not be reached.
    pub async fn publish(&self, channel: &str, message: String) -> bool {
        if !self.is_available() {
            return false;
        }
        let command = self.inner.client.publish::<i64, _, _>(channel, message);
        match tokio::time::timeout(self.inner.timeout, command).await {
            Ok(Ok(_)) => true,
            Ok(Err(error)) => {
                self.failed(&error.to_string());
                false
            }
            Err(_) => {
                self.failed("timed out");
                false
            }
        }
    }

    fn failed(&self, reason: &str) {
        if self.inner.available.swap(false, Ordering::AcqRel) {
            tracing::warn!(reason, "redis L2 unavailable; skipping it until it answers");
            self.inner
                .metrics
                .l2_available
                .with_label_values(&["l2"])
                .set(0);
        }
        self.start_probe();
    }

    /// Pings Redis in the background until it answers, then re-enables L2.
    fn start_probe(&self) {
        if self.inner.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let ping = this.inner.client.ping::<String>(None);
                if let Ok(Ok(_)) = tokio::time::timeout(this.inner.timeout * 5, ping).await {
                    this.inner.available.store(true, Ordering::Release);
                    this.inner
                        .metrics
                        .l2_available
                        .with_label_values(&["l2"])
                        .set(1);
                    tracing::info!("redis L2 available");
                    break;
                }
                tokio::time::sleep(PROBE_INTERVAL).await;
            }
            this.inner.probing.store(false, Ordering::Release);
        });
    }
}

/// A fred client that reconnects forever and never makes a caller wait
/// longer than `timeout` for one command.
pub fn build_client(url: &str, timeout: Duration) -> Result<Client, L2Error> {
    let mut config = Config::from_url(url).map_err(L2Error::Url)?;
    config.fail_fast = false;
    Builder::from_config(config)
        .with_performance_config(|perf| perf.default_command_timeout = timeout)
        .with_connection_config(|conn| {
            conn.connection_timeout = Duration::from_secs(1);
            conn.internal_command_timeout = Duration::from_secs(1);
            conn.max_command_attempts = 1;
        })
        .set_policy(ReconnectPolicy::new_constant(0, 200))
        .build()
        .map_err(L2Error::Client)
}

/// A subscriber on `url` that keeps its subscriptions across reconnects.
pub fn build_subscriber(
    url: &str,
    timeout: Duration,
) -> Result<fred::clients::SubscriberClient, L2Error> {
    let mut config = Config::from_url(url).map_err(L2Error::Url)?;
    config.fail_fast = false;
    Builder::from_config(config)
        .with_performance_config(|perf| {
            perf.default_command_timeout = timeout.max(Duration::from_secs(1))
        })
        .with_connection_config(|conn| conn.connection_timeout = Duration::from_secs(1))
        .set_policy(ReconnectPolicy::new_constant(0, 200))
        .build_subscriber_client()
        .map_err(L2Error::Client)
}
