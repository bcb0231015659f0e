//! The reservation queue. [`Inventory::reserve`], [`Inventory::commit`]
//! and [`Inventory::release`] enqueue a job and wait for its answer; a
//! worker takes everything queued (up to `max_batch`) and applies it in one
//! transaction on the primary:
//!
//! 1. claim the new reservations' owners (`insert … on conflict do
//!    nothing`, owners in sorted order): an owner already taken is a replay;
//! 2. lock the reservations being committed or released;
//! 3. lock every stock row involved, in SKU order (no deadlocks between
//!    batches of different origins, or with the sweeper);
//! 4. plan in memory ([`super::plan`], a pure function with property
//!    tests) — commits and releases first, so released stock is available
//!    to the same batch's reservations, then reservations in arrival
//!    order, each all-or-nothing against what is left; a commit or release
//!    on behalf of an order needs that order's claim on the hold;
//! 5. write the stock deltas, states and lines in four statements; commit.
//!
//! One row lock and one commit per batch instead of per buyer is what lets
//! a hot SKU go beyond what single conditional `UPDATE`s allow; under light
//! load a batch is one job and nothing waits for company.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::model::{InventoryError, Line, Reservation, ReservationState, ReserveRequest};
use super::plan::{self, Delta, FinishJob, Hold, ReserveJob, ReserveOutcome, Stock};
use crate::db::DbRouter;
use crate::metrics::Metrics;

/// How many jobs may wait in the queue before callers wait to enqueue.
const QUEUE_DEPTH: usize = 16_384;
/// Workers per origin: while one batch commits, the next is being built.
const WORKERS: usize = 2;
/// A batch that hits a deadlock or serialization failure is retried this
/// many times before its jobs fail.
const RETRIES: usize = 3;

enum Job {
    Reserve {
        request: ReserveRequest,
        reply: oneshot::Sender<Result<Reservation, InventoryError>>,
    },
    Finish {
        job: FinishJob,
        reply: oneshot::Sender<Result<ReservationState, InventoryError>>,
    },
}

/// How a hold ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// Payment captured: the units are sold.
    Commit,
    /// Checkout failed or was cancelled: the units go back.
    Release,
}

/// The handle on the reservation queue; cheap to clone.
#[derive(Clone)]
pub struct Inventory {
    queue: mpsc::Sender<Job>,
    db: DbRouter,
}

impl Inventory {
    /// Starts the workers; they stop when `shutdown` is cancelled.
    pub fn start(
        db: DbRouter,
        metrics: Metrics,
        max_batch: usize,
        shutdown: CancellationToken,
        tasks: &mut tokio::task::JoinSet<()>,
    ) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE_DEPTH);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..WORKERS {
            let worker = Worker {
                db: db.clone(),
                metrics: metrics.clone(),
                receiver: receiver.clone(),
                max_batch: max_batch.max(1),
                queue_depth: metrics.queue_depth.with_label_values(&["reservations"]),
            };
            tasks.spawn(worker.run(shutdown.clone()));
        }
        Inventory { queue, db }
    }

    /// The reservation taken by `owner`, if any (read on the primary).
    pub async fn find_by_owner(&self, owner: &str) -> Result<Option<Reservation>, InventoryError> {
        let found = reservations_by_owner(&self.db, &[owner.to_string()]).await?;
        Ok(found.into_iter().next())
    }

    /// Holds every line of `request` for its TTL, or nothing. A request
    /// whose owner already holds a reservation gets that one back
    /// (`replayed`), whatever state it is in.
    pub async fn reserve(&self, request: ReserveRequest) -> Result<Reservation, InventoryError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job::Reserve { request, reply })
            .await
            .map_err(|_| InventoryError::Stopped)?;
        answer.await.map_err(|_| InventoryError::Stopped)?
    }

    /// Sells the held units to `order`, which must have claimed the hold
    /// (idempotent; else `NotClaimed`). A hold that expired is committed
    /// only if its stock can be taken again now; else `WrongState`.
    pub async fn commit(&self, id: i64, order: &str) -> Result<ReservationState, InventoryError> {
        self.finish(id, Finish::Commit, Some(order)).await
    }

    /// Returns the held units to stock (idempotent; a lapsed hold is
    /// already released). With `order`, only a hold that order claimed
    /// (`NotClaimed` otherwise): an order never gives back another's
    /// units. A committed reservation cannot be released.
    pub async fn release(
        &self,
        id: i64,
        order: Option<&str>,
    ) -> Result<ReservationState, InventoryError> {
        self.finish(id, Finish::Release, order).await
    }

    /// Records `order` as the one consumer of hold `id` (a won flash-sale
    /// unit), before any payment: one conditional update on the primary.
    /// Idempotent for the same order; `NotClaimed { by }` when another
    /// order holds it; `WrongState` when the hold is no longer held.
    pub async fn claim(&self, id: i64, order: &str) -> Result<(), InventoryError> {
        let write = self.db.write();
        let mut tx = write.begin().await?;
        let claimed = sqlx::query_scalar!(
            r#"
            update reservations set order_id = $2, updated_at = now()
            where id = $1 and state = 'held' and (order_id is null or order_id = $2)
            returning id
            "#,
            id,
            order
        )
        .fetch_optional(&mut *tx)
        .await?;
        if claimed.is_some() {
            tx.commit().await?;
            return Ok(());
        }
        let found = sqlx::query!("select state, order_id from reservations where id = $1", id)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        match found {
            None => Err(InventoryError::UnknownReservation(id)),
            Some(row) if row.order_id.as_deref().is_some_and(|o| o != order) => {
                Err(InventoryError::NotClaimed {
                    id,
                    by: row.order_id,
                })
            }
            Some(row) => {
                let state = ReservationState::parse(&row.state).ok_or(InventoryError::Corrupt {
                    id,
                    state: row.state.clone(),
                })?;
                Err(InventoryError::WrongState {
                    id,
                    state: state.as_str(),
                    wanted: "claimed",
                })
            }
        }
    }

    async fn finish(
        &self,
        id: i64,
        kind: Finish,
        order: Option<&str>,
    ) -> Result<ReservationState, InventoryError> {
        let (reply, answer) = oneshot::channel();
        let job = FinishJob {
            id,
            kind,
            order: order.map(str::to_string),
        };
        self.queue
            .send(Job::Finish { job, reply })
            .await
            .map_err(|_| InventoryError::Stopped)?;
        answer.await.map_err(|_| InventoryError::Stopped)?
    }
}

struct Worker {
    db: DbRouter,
    metrics: Metrics,
    receiver: Arc<Mutex<mpsc::Receiver<Job>>>,
    max_batch: usize,
    /// `meridian_queue_depth{queue="reservations"}`, looked up once.
    queue_depth: prometheus::IntGauge,
}

impl Worker {
    async fn run(self, shutdown: CancellationToken) {
        loop {
            let batch = {
                let mut receiver = self.receiver.lock().await;
                let first = tokio::select! {
                    job = receiver.recv() => job,
                    () = shutdown.cancelled() => None,
                };
                let Some(first) = first else { return };
                let mut batch = vec![first];
                while batch.len() < self.max_batch {
                    match receiver.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                // What still waits once this batch is taken.
                self.queue_depth
                    .set(i64::try_from(receiver.len()).unwrap_or(i64::MAX));
                batch
            };
            self.metrics
                .reservation_batch_size
                .observe(batch.len() as f64);
            self.apply(batch).await;
        }
    }

    async fn apply(&self, batch: Vec<Job>) {
        let mut reserves = Vec::new();
        let mut finishes = Vec::new();
        for job in batch {
            match job {
                Job::Reserve { request, reply } => reserves.push((request, reply)),
                Job::Finish { job, reply } => finishes.push((job, reply)),
            }
        }
        let requests: Vec<&ReserveRequest> = reserves.iter().map(|(r, _)| r).collect();
        let wanted: Vec<FinishJob> = finishes.iter().map(|(job, _)| job.clone()).collect();
        let mut attempt = 0;
        let outcome = loop {
            match plan_and_apply(&self.db, &requests, &wanted).await {
                Err(error) if attempt < RETRIES && is_retryable(&error) => {
                    attempt += 1;
                    tracing::debug!(%error, attempt, "reservation batch retried");
                }
                other => break other,
            }
        };
        match outcome {
            Ok(outcome) => {
                let replays = self.replays(&requests, &outcome).await;
                self.count(&outcome);
                for ((request, reply), result) in reserves.into_iter().zip(outcome.reserves) {
                    let answer = match result {
                        ReserveOutcome::Held(reservation) => Ok(reservation),
                        ReserveOutcome::Rejected(error) => Err(error),
                        ReserveOutcome::Replay => match &replays {
                            Ok(found) => found.get(&request.owner).cloned().ok_or_else(|| {
                                InventoryError::Invalid(format!(
                                    "reservation of `{}` vanished while it was being replayed",
                                    request.owner
                                ))
                            }),
                            Err(error) => Err(error.clone()),
                        },
                    };
                    let _ = reply.send(answer);
                }
                for ((_, reply), result) in finishes.into_iter().zip(outcome.finishes) {
                    let _ = reply.send(result);
                }
            }
            Err(error) => {
                tracing::warn!(%error, "reservation batch failed");
                let error = InventoryError::from(error);
                for (_, reply) in reserves {
                    let _ = reply.send(Err(error.clone()));
                }
                for (_, reply) in finishes {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }

    /// The stored reservations of owners that were already taken.
    async fn replays(
        &self,
        requests: &[&ReserveRequest],
        outcome: &BatchOutcome,
    ) -> Result<HashMap<String, Reservation>, InventoryError> {
        let owners: Vec<String> = requests
            .iter()
            .zip(&outcome.reserves)
            .filter(|(_, o)| matches!(o, ReserveOutcome::Replay))
            .map(|(r, _)| r.owner.clone())
            .collect();
        if owners.is_empty() {
            return Ok(HashMap::new());
        }
        let found = reservations_by_owner(&self.db, &owners).await?;
        Ok(found.into_iter().map(|r| (r.owner.clone(), r)).collect())
    }

    fn count(&self, outcome: &BatchOutcome) {
        let counter = |event: &str, n: usize| {
            if n > 0 {
                self.metrics
                    .reservations
                    .with_label_values(&[event])
                    .inc_by(n as u64);
            }
        };
        let held = outcome
            .reserves
            .iter()
            .filter(|o| matches!(o, ReserveOutcome::Held(_)))
            .count();
        let rejected = outcome
            .reserves
            .iter()
            .filter(|o| matches!(o, ReserveOutcome::Rejected(_)))
            .count();
        counter("created", held);
        counter("rejected", rejected);
        counter("committed", outcome.newly_committed);
        counter("released", outcome.newly_released);
    }
}

fn is_retryable(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40P01" | "40001")))
}

struct BatchOutcome {
    reserves: Vec<ReserveOutcome>,
    finishes: Vec<Result<ReservationState, InventoryError>>,
    newly_committed: usize,
    newly_released: usize,
}

/// Locks what the batch touches, plans it ([`plan::plan`], pure) and
/// writes the plan, in one transaction.
async fn plan_and_apply(
    db: &DbRouter,
    requests: &[&ReserveRequest],
    finishes: &[FinishJob],
) -> Result<BatchOutcome, sqlx::Error> {
    let write = db.write();
    let mut tx = write.begin().await?;

    // 1. Claim owners, in sorted order; an owner seen twice in the batch
    // is claimed once and the later request replays.
    let mut claimed: HashMap<String, (i64, chrono::DateTime<chrono::Utc>)> = HashMap::new();
    if !requests.is_empty() {
        let mut by_owner: BTreeMap<&str, (i64, Option<String>)> = BTreeMap::new();
        for request in requests {
            let ttl_ms = i64::try_from(request.ttl.as_millis()).unwrap_or(i64::MAX);
            by_owner
                .entry(&request.owner)
                .or_insert((ttl_ms, request.order.clone()));
        }
        let owners: Vec<String> = by_owner.keys().map(|o| o.to_string()).collect();
        let ttls: Vec<i64> = by_owner.values().map(|(ttl, _)| *ttl).collect();
        let orders: Vec<Option<String>> = by_owner.values().map(|(_, o)| o.clone()).collect();
        let rows = sqlx::query!(
            r#"
            insert into reservations (owner, state, expires_at, order_id)
            select o, 'held', now() + t * interval '1 millisecond', ord
            from unnest($1::text[], $2::bigint[], $3::text[]) as u(o, t, ord)
            order by o
            on conflict (owner) do nothing
            returning id, owner, expires_at
            "#,
            &owners,
            &ttls,
            &orders as &[Option<String>]
        )
        .fetch_all(&mut *tx)
        .await?;
        for row in rows {
            claimed.insert(row.owner, (row.id, row.expires_at));
        }
    }

    // 2. Lock the reservations being finished, with their lines.
    let mut holds: BTreeMap<i64, Hold> = BTreeMap::new();
    if !finishes.is_empty() {
        let ids: Vec<i64> = finishes.iter().map(|job| job.id).collect();
        let rows = sqlx::query!(
            r#"
            select r.id, r.state, r.order_id, l.sku, l.quantity
            from reservations r join reservation_lines l on l.reservation_id = r.id
            where r.id = any($1)
            order by r.id
            for update of r
            "#,
            &ids
        )
        .fetch_all(&mut *tx)
        .await?;
        for row in rows {
            holds
                .entry(row.id)
                .or_insert_with(|| Hold {
                    state: row.state,
                    order: row.order_id,
                    lines: Vec::new(),
                })
                .lines
                .push(Line {
                    sku: row.sku,
                    quantity: row.quantity,
                });
        }
    }

    // 3. Lock every stock row involved, in SKU order.
    let mut skus: BTreeSet<&str> = BTreeSet::new();
    for request in requests {
        if claimed.contains_key(&request.owner) {
            skus.extend(request.lines().iter().map(|l| l.sku.as_str()));
        }
    }
    for hold in holds.values() {
        skus.extend(hold.lines.iter().map(|l| l.sku.as_str()));
    }
    let sku_list: Vec<String> = skus.iter().map(|s| s.to_string()).collect();
    let mut stock: HashMap<String, Stock> = HashMap::new();
    if !sku_list.is_empty() {
        let rows = sqlx::query!(
            "select sku, on_hand, reserved from inventory where sku = any($1) order by sku for update",
            &sku_list
        )
        .fetch_all(&mut *tx)
        .await?;
        for row in rows {
            stock.insert(
                row.sku,
                Stock {
                    on_hand: i64::from(row.on_hand),
                    reserved: i64::from(row.reserved),
                },
            );
        }
    }

    // 4. Plan.
    let reserve_jobs: Vec<ReserveJob<'_>> = requests
        .iter()
        .map(|request| ReserveJob {
            owner: &request.owner,
            lines: request.lines(),
            claimed: claimed.get(&request.owner).copied(),
        })
        .collect();
    let plan = plan::plan(stock, holds, finishes, &reserve_jobs);

    // 5. Write.
    let changed: Vec<(&String, &Delta)> = plan
        .deltas
        .iter()
        .filter(|(_, d)| d.on_hand != 0 || d.reserved != 0 || d.sold != 0)
        .collect();
    if !changed.is_empty() {
        let skus: Vec<String> = changed.iter().map(|(s, _)| s.to_string()).collect();
        let on_hand: Vec<i32> = changed.iter().map(|(_, d)| clamp(d.on_hand)).collect();
        let reserved: Vec<i32> = changed.iter().map(|(_, d)| clamp(d.reserved)).collect();
        let sold: Vec<i64> = changed.iter().map(|(_, d)| d.sold).collect();
        sqlx::query!(
            r#"
            update inventory i
            set on_hand = i.on_hand + d.on_hand, reserved = i.reserved + d.reserved,
                sold = i.sold + d.sold, updated_at = now()
            from unnest($1::text[], $2::int[], $3::int[], $4::bigint[]) as d(sku, on_hand, reserved, sold)
            where i.sku = d.sku
            "#,
            &skus,
            &on_hand,
            &reserved,
            &sold
        )
        .execute(&mut *tx)
        .await?;
    }
    if !plan.rejected_ids.is_empty() {
        sqlx::query!(
            "delete from reservations where id = any($1)",
            &plan.rejected_ids
        )
        .execute(&mut *tx)
        .await?;
    }
    if !plan.new_lines.is_empty() {
        let line_ids: Vec<i64> = plan.new_lines.iter().map(|(id, _)| *id).collect();
        let line_skus: Vec<String> = plan.new_lines.iter().map(|(_, l)| l.sku.clone()).collect();
        let line_qty: Vec<i32> = plan.new_lines.iter().map(|(_, l)| l.quantity).collect();
        sqlx::query!(
            r#"
            insert into reservation_lines (reservation_id, sku, quantity)
            select * from unnest($1::bigint[], $2::text[], $3::int[])
            "#,
            &line_ids,
            &line_skus,
            &line_qty
        )
        .execute(&mut *tx)
        .await?;
    }
    if !plan.new_states.is_empty() {
        let ids: Vec<i64> = plan.new_states.iter().map(|(id, _)| *id).collect();
        let states: Vec<String> = plan
            .new_states
            .iter()
            .map(|(_, s)| s.as_str().to_string())
            .collect();
        sqlx::query!(
            r#"
            update reservations r set state = u.state, updated_at = now()
            from unnest($1::bigint[], $2::text[]) as u(id, state)
            where r.id = u.id
            "#,
            &ids,
            &states
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(BatchOutcome {
        reserves: plan.reserves,
        finishes: plan.finishes,
        newly_committed: plan.newly_committed,
        newly_released: plan.newly_released,
    })
}

/// Deltas of one batch fit an `int` column (bounded by batch size times
/// the per-line maximum); saturate rather than wrap if they ever did not,
/// so the database's CHECK constraints refuse the batch.
fn clamp(value: i64) -> i32 {
    i32::try_from(value).unwrap_or(if value < 0 { i32::MIN } else { i32::MAX })
}

/// Reservations by owner, with their lines, read on the primary (a
/// replay must see what was just written).
pub async fn reservations_by_owner(
    db: &DbRouter,
    owners: &[String],
) -> Result<Vec<Reservation>, InventoryError> {
    let mut tx = db.write().begin().await?;
    let rows = sqlx::query!(
        r#"
        select r.id, r.owner, r.state, r.expires_at, l.sku as "sku?", l.quantity as "quantity?"
        from reservations r left join reservation_lines l on l.reservation_id = r.id
        where r.owner = any($1)
        order by r.id, l.sku
        "#,
        owners
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut out: Vec<Reservation> = Vec::new();
    for row in rows {
        if out.last().is_none_or(|r| r.id != row.id) {
            let state =
                ReservationState::parse(&row.state).ok_or_else(|| InventoryError::Corrupt {
                    id: row.id,
                    state: row.state.clone(),
                })?;
            out.push(Reservation {
                id: row.id,
                owner: row.owner,
                state,
                expires_at: row.expires_at,
                lines: Vec::new(),
                replayed: true,
            });
        }
        if let (Some(sku), Some(quantity), Some(last)) = (row.sku, row.quantity, out.last_mut()) {
            last.lines.push(Line { sku, quantity });
        }
    }
    Ok(out)
}
