//! Cache invalidation that rides the replication stream.
//!
//! Catalog writes append the keys they affect to `catalog_invalidations`
//! in the same transaction. Each origin tails that log through its read
//! handle — its region's replica — so it never invalidates before the local
//! replica holds the new rows. For each entry it drops the keys from L1 and
//! L2 and publishes them on the regional Redis channel, where other origin
//! instances (and, later, the edges) drop them too. Each batch is applied a
//! second time after the lag tolerance, to drop anything a replica that was
//! still within tolerance (but behind) cached meanwhile. The key `modes`
//! also tells the mode watcher to re-read the mode table.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use fred::prelude::{ClientLike, EventInterface, PubsubInterface};
use tokio_util::sync::CancellationToken;

use crate::cache::TieredCache;
use crate::cache::l2::{L2Error, build_subscriber};
use crate::catalog::store;
use crate::config::RedisUrl;
use crate::db::DbRouter;
use crate::metrics::Metrics;
use crate::modes::store::INVALIDATION_KEY as MODES_KEY;
use crate::modes::watcher::Modes;

pub use meridian_contracts::invalidation::{CHANNEL, InvalidationMessage};

/// Entries read from the log per poll.
const BATCH: i64 = 500;

pub struct Tailer {
    pub db: DbRouter,
    pub cache: TieredCache,
    pub metrics: Metrics,
    pub instance: String,
    pub poll: Duration,
    /// Told to re-read the mode table when the log carries its key.
    pub modes: Modes,
}

impl Tailer {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut last = None;
        let mut again: VecDeque<(Instant, Vec<String>)> = VecDeque::new();
        let repeat_after = self.db.tolerance() * 2 + self.poll;
        let mut ticker = tokio::time::interval(self.poll);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let Some(after) = last else {
                match self
                    .db
                    .read_background()
                    .run(|conn| async move { store::last_invalidation_id(&conn).await })
                    .await
                {
                    Ok((id, _)) => last = Some(id),
                    Err(error) => tracing::debug!(%error, "invalidation log not readable yet"),
                }
                continue;
            };
            while again.front().is_some_and(|(due, _)| *due <= Instant::now()) {
                if let Some((_, keys)) = again.pop_front() {
                    self.cache.invalidate(&keys).await;
                }
            }
            let batch = self
                .db
                .read_background()
                .run(|conn| async move { store::invalidations_after(&conn, after, BATCH).await })
                .await;
            let entries = match batch {
                Ok((entries, _)) => entries,
                Err(error) => {
                    tracing::warn!(%error, "could not read the invalidation log");
                    continue;
                }
            };
            let Some((newest, _)) = entries.last() else {
                continue;
            };
            last = Some(*newest);
            let mut keys: Vec<String> = entries.into_iter().flat_map(|(_, k)| k).collect();
            keys.sort();
            keys.dedup();
            if keys.iter().any(|k| k == MODES_KEY) {
                self.modes.reload();
            }
            self.cache.invalidate(&keys).await;
            self.metrics
                .invalidations
                .with_label_values(&["log"])
                .inc_by(keys.len() as u64);
            if let Some(l2) = self.cache.l2() {
                let message = InvalidationMessage {
                    instance: self.instance.clone(),
                    keys: keys.clone(),
                    modes: None,
                };
                if let Ok(text) = serde_json::to_string(&message) {
                    l2.publish(CHANNEL, text).await;
                }
            }
            tracing::debug!(?keys, "invalidations applied");
            again.push_back((Instant::now() + repeat_after, keys));
        }
    }
}

/// Listens on the regional channel and drops the published keys from this
/// instance's L1. Reconnects and resubscribes on its own.
pub async fn run_subscriber(
    redis_url: RedisUrl,
    timeout: Duration,
    cache: TieredCache,
    metrics: Metrics,
    instance: String,
    modes: Modes,
    shutdown: CancellationToken,
) -> Result<(), L2Error> {
    let subscriber = build_subscriber(redis_url.expose(), timeout)?;
    let mut messages = subscriber.message_rx();
    subscriber.connect();
    let _resubscribe = subscriber.manage_subscriptions();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            result = subscriber.subscribe(CHANNEL) => match result {
                Ok(()) => break,
                Err(error) => {
                    tracing::debug!(%error, "subscribe failed; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => break,
            message = messages.recv() => message,
        };
        let message = match message {
            Ok(message) => message,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "invalidation messages dropped; the log tail covers them"
                );
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
        };
        let Some(text) = message.value.as_str() else {
            continue;
        };
        match serde_json::from_str::<InvalidationMessage>(&text) {
            Ok(parsed) if parsed.instance != instance => {
                if parsed.keys.iter().any(|k| k == MODES_KEY) {
                    modes.reload();
                }
                cache.invalidate_local(&parsed.keys).await;
                metrics
                    .invalidations
                    .with_label_values(&["pubsub"])
                    .inc_by(parsed.keys.len() as u64);
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "ignoring a malformed invalidation message"),
        }
    }
    let _ = subscriber.quit().await;
    Ok(())
}
