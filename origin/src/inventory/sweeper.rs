//! Releases holds past their expiry so no reservation leaks stock: every
//! `sweep_interval`, up to [`SWEEP_BATCH`] expired holds are locked with
//! `FOR UPDATE SKIP LOCKED` (origins sweeping at once split the work; a
//! hold being committed right now is skipped, not waited for), their units
//! go back to stock, and they become `expired`. Stock rows are locked in
//! SKU order, like the batcher does, so the two never deadlock.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::db::DbRouter;
use crate::metrics::Metrics;

/// Most holds expired per transaction.
pub const SWEEP_BATCH: i64 = 500;

pub async fn run(db: DbRouter, metrics: Metrics, every: Duration, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = shutdown.cancelled() => return,
        }
        // Keep going while full batches come back: a backlog drains now,
        // not one batch per tick.
        loop {
            match sweep_once(&db).await {
                Ok(expired) => {
                    if expired > 0 {
                        metrics
                            .reservations
                            .with_label_values(&["expired"])
                            .inc_by(expired);
                        tracing::debug!(expired, "expired reservations released");
                    }
                    if expired < SWEEP_BATCH as u64 || shutdown.is_cancelled() {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "reservation sweep failed");
                    break;
                }
            }
        }
    }
}

/// Expires one batch of lapsed holds; returns how many.
pub async fn sweep_once(db: &DbRouter) -> Result<u64, sqlx::Error> {
    let write = db.write_background();
    let mut tx = write.begin().await?;
    let ids: Vec<i64> = sqlx::query_scalar!(
        r#"
        select id from reservations
        where state = 'held' and expires_at < now()
        order by expires_at
        limit $1
        for update skip locked
        "#,
        SWEEP_BATCH
    )
    .fetch_all(&mut *tx)
    .await?;
    if ids.is_empty() {
        tx.rollback().await?;
        return Ok(0);
    }
    sqlx::query!(
        r#"
        select sku from inventory
        where sku in (select sku from reservation_lines where reservation_id = any($1))
        order by sku
        for update
        "#,
        &ids
    )
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query!(
        r#"
        update inventory i set reserved = i.reserved - h.quantity, updated_at = now()
        from (
            select sku, sum(quantity)::int as quantity
            from reservation_lines where reservation_id = any($1)
            group by sku
        ) h
        where i.sku = h.sku
        "#,
        &ids
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "update reservations set state = 'expired', updated_at = now() where id = any($1)",
        &ids
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(ids.len() as u64)
}
