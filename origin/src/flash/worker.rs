//! The claim workers: every origin of the sale's region drains the sale's
//! claim stream (a Redis consumer group, so each claim goes to one worker;
//! a claim a dead worker took is taken over after [`TAKEOVER_AFTER`]) into
//! reservations through the inventory queue (owner `flash:<sale>:<slot>`,
//! so a redelivered claim replays instead of holding twice) and rows in
//! the ledger, then acknowledges them. A crash anywhere between the gate
//! and the database redelivers the claim: units are neither lost nor
//! invented. A Redis that lost an open sale is rebuilt from the ledger.
//!
//! A sale ends at `ends_at` (Redis's clock refuses claims from then on) or
//! when an admin closes it; the workers keep draining its claims past the
//! end, close its gate and, once no won claim waits, close its books
//! (`state = 'closed'`): no claim is left stranded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::gate::{Gate, Opening, QueuedClaim};
use super::store::{self, NewClaim, Sale};
use crate::db::DbRouter;
use crate::inventory::{Inventory, InventoryError, Line, ReserveRequest};
use crate::metrics::Metrics;

/// A claim delivered to a worker that has not acknowledged it for this
/// long is given to another.
pub const TAKEOVER_AFTER: Duration = Duration::from_secs(3);
/// Claims taken per fetch.
const BATCH: usize = 256;
/// How often the list of open sales is refreshed.
const REFRESH: Duration = Duration::from_secs(1);
/// Pause when no sale had claims waiting.
const IDLE: Duration = Duration::from_millis(10);

pub struct Worker {
    pub gate: Arc<Gate>,
    pub db: DbRouter,
    pub inventory: Inventory,
    pub region: String,
    pub consumer: String,
    pub metrics: Metrics,
}

impl Worker {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut sales: Vec<Sale> = Vec::new();
        let mut refreshed: Option<Instant> = None;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            if refreshed.is_none_or(|at| at.elapsed() >= REFRESH) {
                match store::open_sales(&self.db, &self.region).await {
                    Ok(open) => sales = open,
                    Err(error) => tracing::debug!(%error, "flash sales not refreshed"),
                }
                for sale in &sales {
                    self.ensure_gate(sale).await;
                }
                self.report_queue(&sales).await;
                refreshed = Some(Instant::now());
            }
            let mut busy = false;
            let mut closed = Vec::new();
            for sale in &sales {
                match self
                    .gate
                    .fetch(
                        sale.id,
                        &self.consumer,
                        TAKEOVER_AFTER.as_millis() as u64,
                        BATCH,
                    )
                    .await
                {
                    Ok(claims) if !claims.is_empty() => {
                        busy = true;
                        self.process(sale, claims).await;
                    }
                    Ok(_) if sale.ends_at <= chrono::Utc::now() => {
                        if self.close_if_drained(sale).await {
                            closed.push(sale.id);
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::debug!(sale = sale.id, %error, "flash claims not fetched")
                    }
                }
            }
            sales.retain(|sale| !closed.contains(&sale.id));
            if !busy {
                tokio::select! {
                    () = tokio::time::sleep(IDLE) => {}
                    () = shutdown.cancelled() => return,
                }
            }
        }
    }

    /// Sets `meridian_queue_depth{queue="flash_claims"}` to this worker's
    /// share of the won claims waiting in the open sales (each sale's
    /// backlog divided among its consumers), so that summed over the
    /// workers it is the region's backlog and averaged it is what the
    /// autoscaler compares with its target. A sale Redis cannot count
    /// adds nothing.
    async fn report_queue(&self, sales: &[Sale]) {
        let mut share = 0;
        for sale in sales {
            if let Ok((waiting, consumers)) = self.gate.waiting(sale.id).await {
                share += waiting.div_ceil(consumers.max(1));
            }
        }
        self.metrics
            .queue_depth
            .with_label_values(&["flash_claims"])
            .set(i64::try_from(share).unwrap_or(i64::MAX));
    }

    /// An ended sale: its gate closes (Redis's clock already refuses
    /// claims past the end; an admin's close ends it early), and once no
    /// won claim waits to be recorded its books close. Whether it closed.
    async fn close_if_drained(&self, sale: &Sale) -> bool {
        match self.gate.close(sale.id).await {
            Ok(0) => match store::close(&self.db, sale.id).await {
                Ok(()) => {
                    tracing::info!(sale = sale.id, "flash sale closed");
                    true
                }
                Err(error) => {
                    tracing::debug!(sale = sale.id, %error, "flash sale not closed yet");
                    false
                }
            },
            Ok(waiting) => {
                tracing::debug!(
                    sale = sale.id,
                    waiting,
                    "flash sale ended; claims still queued"
                );
                false
            }
            Err(error) => {
                tracing::debug!(sale = sale.id, %error, "flash gate unavailable");
                false
            }
        }
    }

    /// Rebuilds the gate of an open sale from the ledger if Redis lost it
    /// (an ended sale's gate is not rebuilt: nothing can be won any more).
    async fn ensure_gate(&self, sale: &Sale) {
        if sale.ends_at <= chrono::Utc::now() {
            return;
        }
        match self.gate.knows(sale.id).await {
            Ok(true) => {}
            Ok(false) => match store::ledger(&self.db, sale.id).await {
                Ok((max_slot, users)) => {
                    let remaining = sale.quantity - max_slot;
                    let opening = Opening {
                        quantity: sale.quantity,
                        limit: sale.per_user_limit,
                        remaining,
                        ends_at: sale.ends_at,
                    };
                    match self.gate.open(sale.id, opening, &users).await {
                        Ok(()) => tracing::warn!(
                            sale = sale.id,
                            remaining,
                            "flash-sale gate rebuilt from the ledger"
                        ),
                        Err(error) => {
                            tracing::warn!(sale = sale.id, %error, "flash-sale gate not rebuilt")
                        }
                    }
                }
                Err(error) => tracing::debug!(sale = sale.id, %error, "flash ledger unavailable"),
            },
            Err(error) => tracing::debug!(sale = sale.id, %error, "flash gate unavailable"),
        }
    }

    async fn process(&self, sale: &Sale, claims: Vec<QueuedClaim>) {
        let ttl = Duration::from_millis(u64::try_from(sale.hold_ms).unwrap_or(600_000));
        let reserves = claims.iter().map(|claim| {
            let request = ReserveRequest::new(
                format!("flash:{}:{}", sale.id, claim.slot),
                [Line {
                    sku: sale.sku.clone(),
                    quantity: 1,
                }],
                ttl,
            );
            async move {
                match request {
                    Ok(request) => self.inventory.reserve(request).await,
                    Err(error) => Err(error),
                }
            }
        });
        let results = futures::future::join_all(reserves).await;
        let mut recorded = Vec::new();
        let mut done = Vec::new();
        for (claim, result) in claims.into_iter().zip(results) {
            let reservation_id = match result {
                Ok(reservation) => Some(reservation.id),
                // The stock went elsewhere: the slot is recorded as failed.
                Err(InventoryError::Insufficient { .. }) => None,
                Err(error) => {
                    // Left unacknowledged: retried (by any worker) later.
                    tracing::warn!(sale = sale.id, slot = claim.slot, %error, "flash claim not reserved yet");
                    continue;
                }
            };
            let result = if reservation_id.is_some() {
                "reserved"
            } else {
                "failed"
            };
            self.metrics
                .flash_processed
                .with_label_values(&[result])
                .inc();
            done.push(claim.entry.clone());
            recorded.push(NewClaim {
                slot: claim.slot,
                user: claim.user,
                user_seq: claim.user_seq,
                reservation_id,
            });
        }
        if let Err(error) = store::record_claims(&self.db, sale.id, &recorded).await {
            tracing::warn!(sale = sale.id, %error, "flash claims not recorded; they will be redelivered");
            return;
        }
        if let Err(error) = self.gate.ack(sale.id, done).await {
            tracing::warn!(sale = sale.id, %error, "flash claims not acknowledged; redelivery replays them");
        }
    }
}
