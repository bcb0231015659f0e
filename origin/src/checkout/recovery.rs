//! The recovery worker: every `recovery_interval`, each shard's unfinished
//! orders untouched for `recover_after` (a crashed origin, an unknown
//! payment outcome, a capture that failed) are claimed with `FOR UPDATE
//! SKIP LOCKED` and resumed or compensated ([`Saga::recover`]); settled
//! orders that name providers with an unknown outcome have any stray
//! authorization there voided. Every origin of the region runs one; the
//! claim keeps them off each other's orders.

use tokio_util::sync::CancellationToken;

use super::Saga;
use super::store;
use crate::config::CheckoutConfig;
use crate::metrics::Metrics;
use crate::orders::ShardRouter;

/// Orders taken per shard per round.
const BATCH: i64 = 20;

pub async fn run(
    saga: Saga,
    shards: ShardRouter,
    config: CheckoutConfig,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let mut interval = tokio::time::interval(config.recovery_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stale_ms = i64::try_from(config.recover_after.as_millis()).unwrap_or(i64::MAX);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = shutdown.cancelled() => return,
        }
        for shard in shards.shards() {
            let orders = match store::claim_stale(&shard.pool, stale_ms, BATCH).await {
                Ok(orders) => orders,
                Err(error) => {
                    tracing::debug!(shard = %shard.name, %error, "recovery: shard unavailable");
                    continue;
                }
            };
            for order in orders {
                let id = order.id.clone();
                let result = saga.recover(shard, order).await;
                let label = match &result {
                    Ok(recovered) => recovered.label(),
                    Err(_) => "retry",
                };
                metrics.saga_recoveries.with_label_values(&[label]).inc();
                match result {
                    Ok(recovered) => {
                        tracing::info!(order = %id, outcome = recovered.label(), "unfinished checkout recovered")
                    }
                    Err(reason) => {
                        tracing::warn!(order = %id, %reason, "unfinished checkout not settled yet")
                    }
                }
                if shutdown.is_cancelled() {
                    return;
                }
            }
            match store::with_unknown_psps(&shard.pool, BATCH).await {
                Ok(orders) => {
                    for order in orders {
                        let id = order.id.clone();
                        if let Err(reason) = saga.void_strays(shard, order).await {
                            tracing::warn!(order = %id, %reason, "stray authorization check failed");
                        }
                    }
                }
                Err(error) => {
                    tracing::debug!(shard = %shard.name, %error, "recovery: shard unavailable")
                }
            }
        }
    }
}
