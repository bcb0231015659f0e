//! Purges from the regional Redis invalidation channel: origins publish the
//! surrogate keys a catalog write invalidated (once their replica holds the
//! change), and every edge of the region drops the entries tagged with them.
//! Runs as a pingora background service; reconnects and resubscribes on its
//! own, and reports whether it is subscribed (`/readyz`).
//!
//! The same channel carries the origins' operating-mode announcements.
//! They are hints only (a message on Redis proves nothing about who sent
//! it): each one wakes the mode follower, which reads the setting from an
//! origin over HTTP.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use fred::prelude::{ClientLike, Config, EventInterface, PubsubInterface, ReconnectPolicy};
use fred::types::Builder;
use meridian_contracts::invalidation::InvalidationMessage;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::cache::{EdgeCache, PurgeTarget};
use crate::config::RedisUrl;
use crate::metrics::EdgeMetrics;
use crate::modes::MODES_TAG;

pub struct PurgeListener {
    pub redis_url: RedisUrl,
    pub channel: String,
    pub cache: EdgeCache,
    pub metrics: Arc<EdgeMetrics>,
    pub subscribed: Arc<AtomicBool>,
    /// Wakes the mode follower (a poll of the origins).
    pub modes_wake: Arc<tokio::sync::Notify>,
}

impl PurgeListener {
    async fn apply(&self, text: &str) {
        let message = match serde_json::from_str::<InvalidationMessage>(text) {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "ignoring a malformed invalidation message");
                return;
            }
        };
        let purged: usize = message
            .keys
            .iter()
            .map(|key| self.cache.purge(&PurgeTarget::Tag(key.clone())))
            .sum();
        self.metrics
            .purges
            .with_label_values(&["redis"])
            .inc_by(purged as u64);
        tracing::debug!(keys = ?message.keys, purged, "purge from the invalidation channel");
        // A mode announcement is only a hint: anyone who can publish on
        // Redis could forge one, so the edge asks an origin — the state of
        // record — at once instead of believing the message.
        if message.modes.is_some() || message.keys.iter().any(|k| k == MODES_TAG) {
            self.modes_wake.notify_one();
        }
    }

    async fn run(&self, shutdown: &mut ShutdownWatch) -> Result<(), fred::error::Error> {
        let mut config = Config::from_url(self.redis_url.expose())?;
        config.fail_fast = false;
        let subscriber = Builder::from_config(config)
            .with_connection_config(|c| c.connection_timeout = Duration::from_secs(1))
            .set_policy(ReconnectPolicy::new_constant(0, 200))
            .build_subscriber_client()?;
        let mut messages = subscriber.message_rx();
        let mut reconnects = subscriber.reconnect_rx();
        let mut errors = subscriber.error_rx();
        subscriber.connect();
        let _resubscribe = subscriber.manage_subscriptions();
        loop {
            tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                result = subscriber.subscribe(self.channel.as_str()) => match result {
                    Ok(()) => break,
                    Err(error) => {
                        tracing::debug!(%error, "subscribe failed; retrying");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                }
            }
        }
        self.subscribed.store(true, Ordering::Relaxed);
        tracing::info!(channel = %self.channel, "purge listener subscribed");
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = reconnects.recv() => self.subscribed.store(true, Ordering::Relaxed),
                _ = errors.recv() => self.subscribed.store(false, Ordering::Relaxed),
                message = messages.recv() => match message {
                    Ok(message) => {
                        if let Some(text) = message.value.as_str() {
                            self.apply(&text).await;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        // Purge-all is the only safe answer to lost purges.
                        tracing::warn!(missed, "invalidation messages lost; purging everything");
                        self.cache.purge(&PurgeTarget::All);
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        }
        self.subscribed.store(false, Ordering::Relaxed);
        let _ = subscriber.quit().await;
        Ok(())
    }
}

#[async_trait]
impl BackgroundService for PurgeListener {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if let Err(error) = self.run(&mut shutdown).await {
            tracing::error!(%error, url = %self.redis_url, "purge listener cannot start");
        }
    }
}
