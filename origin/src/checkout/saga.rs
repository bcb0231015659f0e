//! The checkout saga. Steps, each persisted or idempotent, each
//! compensated on failure:
//!
//! 1. the order row, `pending` (the Idempotency-Key's claim: written
//!    before anything outside the shard happens);
//! 2. reserve the stock (owner = the order id, so a retry replays);
//! 3. authorize the payment (idempotency key `<order>:authorize` on every
//!    provider) — persisted as `reserved → authorized` with the provider
//!    and intent;
//! 4. commit the reservation (the units are sold) and capture the payment
//!    (`<order>:capture`) — persisted as `authorized → confirmed →
//!    captured`, or `→ confirmed` when the capture has to wait.
//!
//! Failures compensate: out of stock cancels; a decline releases the stock
//! (`payment_failed`); a hold that lapsed and whose stock is gone voids the
//! authorization (`cancelled`). An outcome that cannot be known now (every
//! provider unreachable after an unknown answer) leaves the order
//! unsettled; [`Saga::recover`] — run by the recovery worker for orders
//! untouched for a while, e.g. after a crash — resumes or compensates from
//! whatever was persisted, asking the providers by idempotency key.
//!
//! Crash points (`fail` crate, only with the `failpoints` feature) let the
//! tests kill the process between steps.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::Value;

use super::outcome::{Outcome, Recovered, RecoveryError};
use super::store::{self, Patch, Transition};
use crate::inventory::{Inventory, InventoryError, Line, ReservationState, ReserveRequest};
use crate::metrics::Metrics;
use crate::orders::model::{Order, OrderId, OrderState};
use crate::orders::shards::Shard;
use crate::payments::{Authorization, Charge, IntentStatus, Payments};
use crate::problem::ApiError;

/// Aborts the process here when the failpoint `name` is set to `return`
/// (tests of crash recovery); a no-op in normal builds.
#[cfg_attr(not(feature = "failpoints"), allow(unused_variables))]
fn crash_point(name: &str) {
    fail::fail_point!(name, |_| {
        tracing::error!(failpoint = name, "crash point reached: aborting");
        std::process::abort()
    });
}

/// Where a saga run ended.
#[derive(Debug)]
pub enum Progress {
    /// Settled (for the shopper): the answer is stored with the order and
    /// replayed for the same Idempotency-Key.
    Settled { status: StatusCode, body: Value },
    /// Not settled yet; the recovery worker will finish it. The answer is
    /// not stored.
    Pending(ApiError),
}

/// Everything the saga talks to.
#[derive(Clone)]
pub struct Saga {
    pub inventory: Inventory,
    pub payments: Payments,
    pub reservation_ttl: Duration,
    pub metrics: Metrics,
}

fn authorize_key(order: &OrderId) -> String {
    format!("{order}:authorize")
}

fn capture_key(order: &OrderId) -> String {
    format!("{order}:capture")
}

fn void_key(order: &OrderId) -> String {
    format!("{order}:void")
}

/// One settling move of an order row: from `from` along `path`, writing
/// `patch`'s fields with it.
struct Step<'a> {
    from: OrderState,
    path: &'a [OrderState],
    patch: Patch,
}

impl Step<'static> {
    /// Straight to `cancelled`.
    fn cancel(from: OrderState) -> Self {
        Step {
            from,
            path: &[OrderState::Cancelled],
            patch: Patch::default(),
        }
    }
}

fn unavailable(detail: &str) -> ApiError {
    ApiError::Unavailable(detail.to_string())
}

impl Saga {
    /// Runs a new order (just inserted as `pending`) as far as it goes.
    /// An order with a reservation already (a won flash-sale unit) skips
    /// the reservation step.
    pub async fn place(
        &self,
        shard: &Shard,
        order: Order,
        payment_method: Option<&str>,
    ) -> Progress {
        crash_point("checkout::pending");
        // A won flash-sale unit comes with its hold: no reservation step,
        // but the hold is claimed for this order before any payment, so
        // a second order for the same unit stops here.
        if let Some(reservation_id) = order.reservation_id {
            return match self
                .inventory
                .claim(reservation_id, order.id.as_str())
                .await
            {
                Ok(()) => {
                    self.authorize(shard, order, reservation_id, payment_method)
                        .await
                }
                Err(InventoryError::NotClaimed { by, .. }) => {
                    let outcome = Outcome::UnitAlreadyOrdered {
                        first_order: by.unwrap_or_default(),
                    };
                    self.settle(shard, &order, Step::cancel(OrderState::Pending), outcome)
                        .await
                }
                Err(InventoryError::WrongState { .. }) => {
                    let step = Step::cancel(OrderState::Pending);
                    self.settle(shard, &order, step, Outcome::HoldLapsed).await
                }
                Err(error) => {
                    tracing::warn!(order = %order.id, %error, "flash unit not claimed");
                    Progress::Pending(unavailable("inventory is unavailable; retry shortly"))
                }
            };
        }
        let lines: Vec<Line> = order
            .lines
            .iter()
            .map(|l| Line {
                sku: l.sku.clone(),
                quantity: i32::try_from(l.quantity).unwrap_or(i32::MAX),
            })
            .collect();
        let request = match ReserveRequest::new(order.id.as_str(), lines, self.reservation_ttl) {
            Ok(request) => request.for_order(order.id.as_str()),
            Err(error) => {
                let outcome = Outcome::Invalid {
                    detail: error.to_string(),
                };
                return self
                    .settle(shard, &order, Step::cancel(OrderState::Pending), outcome)
                    .await;
            }
        };
        let reservation = match self.inventory.reserve(request).await {
            Ok(reservation) if reservation.state == ReservationState::Held => reservation,
            Ok(reservation) => {
                // Our own reservation, already finished: another run of
                // this order got further; leave it to that one.
                tracing::warn!(order = %order.id, state = ?reservation.state, "reservation already finished");
                return Progress::Pending(unavailable(
                    "this checkout is being completed; retry shortly",
                ));
            }
            Err(InventoryError::Insufficient {
                sku,
                available,
                wanted,
            }) => {
                let outcome = Outcome::OutOfStock {
                    sku,
                    available,
                    wanted,
                };
                return self
                    .settle(shard, &order, Step::cancel(OrderState::Pending), outcome)
                    .await;
            }
            Err(error) => {
                tracing::warn!(order = %order.id, %error, "reservation failed");
                return Progress::Pending(unavailable("inventory is unavailable; retry shortly"));
            }
        };
        crash_point("checkout::reserved");
        self.authorize(shard, order, reservation.id, payment_method)
            .await
    }

    async fn authorize(
        &self,
        shard: &Shard,
        order: Order,
        reservation_id: i64,
        payment_method: Option<&str>,
    ) -> Progress {
        let key = authorize_key(&order.id);
        let authorization = self
            .payments
            .authorize(Charge {
                key: &key,
                order_id: order.id.as_str(),
                amount_minor: order.total_minor,
                currency: &order.currency,
                payment_method,
            })
            .await;
        crash_point("checkout::authorized");
        self.after_authorization(
            shard,
            order,
            OrderState::Pending,
            reservation_id,
            authorization,
        )
        .await
    }

    /// Persists what the providers said and carries on from there.
    async fn after_authorization(
        &self,
        shard: &Shard,
        mut order: Order,
        from: OrderState,
        reservation_id: i64,
        authorization: Authorization,
    ) -> Progress {
        // From pending the order passes through `reserved`.
        let via: &[OrderState] = if from == OrderState::Pending {
            &[OrderState::Reserved]
        } else {
            &[]
        };
        match authorization {
            Authorization::Authorized {
                psp,
                intent,
                unknown,
            } => {
                let path: Vec<OrderState> = via
                    .iter()
                    .copied()
                    .chain([OrderState::Authorized])
                    .collect();
                let patch = Patch {
                    reservation_id: Some(reservation_id),
                    psp: Some(psp.clone()),
                    payment_intent: Some(intent.id.clone()),
                    unknown_psps: Some(unknown.clone()),
                    ..Patch::default()
                };
                match self.advance(shard, &order, from, &path, &patch).await {
                    Ok(true) => {}
                    Ok(false) => {
                        return Progress::Pending(unavailable(
                            "this checkout is being completed; retry shortly",
                        ));
                    }
                    Err(error) => {
                        tracing::warn!(order = %order.id, %error, "could not record the authorization");
                        return Progress::Pending(unavailable(
                            "the order database is unavailable; retry shortly",
                        ));
                    }
                }
                crash_point("checkout::authorization_saved");
                order.state = OrderState::Authorized;
                order.reservation_id = Some(reservation_id);
                order.psp = Some(psp);
                order.payment_intent = Some(intent.id);
                order.unknown_psps = unknown;
                self.finish(shard, order).await
            }
            Authorization::Declined { psp, unknown, .. } => {
                let _ = self
                    .inventory
                    .release(reservation_id, Some(order.id.as_str()))
                    .await;
                let path: Vec<OrderState> = via
                    .iter()
                    .copied()
                    .chain([OrderState::PaymentFailed])
                    .collect();
                let step = Step {
                    from,
                    path: &path,
                    patch: Patch {
                        reservation_id: Some(reservation_id),
                        psp: Some(psp),
                        unknown_psps: Some(unknown),
                        ..Patch::default()
                    },
                };
                self.settle(shard, &order, step, Outcome::Declined).await
            }
            Authorization::Unavailable { unknown } if unknown.is_empty() => {
                // Nobody did anything: give the stock back and say so.
                let _ = self
                    .inventory
                    .release(reservation_id, Some(order.id.as_str()))
                    .await;
                let step = Step {
                    patch: Patch {
                        reservation_id: Some(reservation_id),
                        ..Patch::default()
                    },
                    ..Step::cancel(from)
                };
                self.settle(shard, &order, step, Outcome::PaymentUnavailable)
                    .await
            }
            Authorization::Unavailable { unknown } => {
                // An authorization may exist somewhere: keep the hold and
                // let the recovery worker find out.
                let patch = Patch {
                    reservation_id: Some(reservation_id),
                    unknown_psps: Some(unknown),
                    ..Patch::default()
                };
                if let Err(error) = self.advance(shard, &order, from, via, &patch).await {
                    tracing::warn!(order = %order.id, %error, "could not record the unknown payment outcome");
                }
                self.metrics
                    .checkouts
                    .with_label_values(&["payment_unavailable"])
                    .inc();
                Progress::Pending(unavailable(
                    "the payment outcome is not known yet; it will be settled — retry with the same Idempotency-Key to see the result",
                ))
            }
        }
    }

    /// From `authorized`: sell the held units, then capture.
    async fn finish(&self, shard: &Shard, order: Order) -> Progress {
        let (Some(reservation_id), Some(psp), Some(intent)) = (
            order.reservation_id,
            order.psp.clone(),
            order.payment_intent.clone(),
        ) else {
            return Progress::Pending(ApiError::internal(std::io::Error::other(format!(
                "order {} is authorized without a reservation or payment",
                order.id
            ))));
        };
        if order.state == OrderState::Authorized {
            match self
                .inventory
                .commit(reservation_id, order.id.as_str())
                .await
            {
                Ok(_) => {}
                Err(InventoryError::WrongState { .. } | InventoryError::NotClaimed { .. }) => {
                    // The hold lapsed and its stock is gone: undo the payment.
                    if let Err(error) = self
                        .payments
                        .transition(&psp, &intent, "void", &void_key(&order.id))
                        .await
                    {
                        tracing::warn!(order = %order.id, %error, "void failed; the recovery worker retries");
                        return Progress::Pending(unavailable(
                            "the order could not be completed; it will be settled",
                        ));
                    }
                    let step = Step::cancel(OrderState::Authorized);
                    return self
                        .settle(shard, &order, step, Outcome::SoldOutWhilePaying)
                        .await;
                }
                Err(error) => {
                    tracing::warn!(order = %order.id, %error, "reservation commit failed");
                    return Progress::Pending(unavailable(
                        "inventory is unavailable; the order will be completed",
                    ));
                }
            }
            crash_point("checkout::committed");
        }
        let captured = self
            .payments
            .transition(&psp, &intent, "capture", &capture_key(&order.id))
            .await;
        crash_point("checkout::captured");
        let captured_ok = match &captured {
            Ok(intent) => matches!(intent.status, IntentStatus::Captured),
            Err(_) => false,
        };
        if let Err(error) = &captured {
            tracing::warn!(order = %order.id, %error, "capture failed; the order stays confirmed and is captured later");
        }
        let path: &[OrderState] = match (order.state, captured_ok) {
            (OrderState::Authorized, true) => &[OrderState::Confirmed, OrderState::Captured],
            (OrderState::Authorized, false) => &[OrderState::Confirmed],
            (OrderState::Confirmed, true) => &[OrderState::Captured],
            _ => {
                return Progress::Pending(unavailable(
                    "the payment could not be captured yet; it will be",
                ));
            }
        };
        let final_state = path.last().copied().unwrap_or(order.state);
        let view = Order {
            state: final_state,
            failure_reason: None,
            updated_at: chrono::Utc::now(),
            ..order.clone()
        }
        .view();
        let step = Step {
            from: order.state,
            path,
            patch: Patch::default(),
        };
        let outcome = Outcome::Placed {
            view: Box::new(view),
            captured: captured_ok,
        };
        // A confirmed order already answered the shopper: `settle` keeps
        // that answer.
        self.settle(shard, &order, step, outcome).await
    }

    /// Settles `order` with `outcome`: moves it by `step`, storing the
    /// outcome's failure reason and the shopper's answer (unless one is
    /// stored already: a confirmed order answered before), and counts it.
    async fn settle(
        &self,
        shard: &Shard,
        order: &Order,
        step: Step<'_>,
        outcome: Outcome,
    ) -> Progress {
        let status = outcome.status();
        let body = outcome.body(&order.id);
        let patch = Patch {
            failure_reason: outcome.failure_reason(),
            response: (!order.has_response).then(|| (status.as_u16(), body.clone())),
            ..step.patch
        };
        match self
            .advance(shard, order, step.from, step.path, &patch)
            .await
        {
            Ok(true) => {
                if let Some(label) = outcome.metric() {
                    self.metrics.checkouts.with_label_values(&[label]).inc();
                }
                Progress::Settled { status, body }
            }
            Ok(false) => Progress::Pending(unavailable(
                "this checkout is being completed; retry shortly",
            )),
            Err(error) => {
                tracing::warn!(order = %order.id, %error, "could not record the outcome");
                Progress::Pending(unavailable(
                    "the order database is unavailable; the order will be settled",
                ))
            }
        }
    }

    /// Moves `order`'s row by one step ([`store::advance`]) and counts it:
    /// a step that changes the state is one transition attempt (`to` its
    /// last state), and one that settles the order ends its processing
    /// time, measured from the order's creation.
    async fn advance(
        &self,
        shard: &Shard,
        order: &Order,
        from: OrderState,
        path: &[OrderState],
        patch: &Patch,
    ) -> Result<bool, sqlx::Error> {
        let answer = store::advance(&shard.pool, &order.id, from, path, patch).await;
        if let (Some(&to), Some(result)) = (path.last(), Transition::of(&answer)) {
            self.metrics
                .order_transitions
                .with_label_values(&[to.as_str(), result.label()])
                .inc();
            if result == Transition::Applied && to.is_settled() && !from.is_settled() {
                let elapsed = (chrono::Utc::now() - order.created_at)
                    .to_std()
                    .unwrap_or_default();
                self.metrics
                    .order_processing
                    .with_label_values(&[to.as_str()])
                    .observe(elapsed.as_secs_f64());
            }
        }
        answer
    }

    /// Finishes an order whose saga stopped (a crash, an unknown payment
    /// outcome, a failed capture): resumes it if a payment exists, else
    /// compensates.
    pub async fn recover(&self, shard: &Shard, order: Order) -> Result<Recovered, RecoveryError> {
        match order.state {
            OrderState::Authorized | OrderState::Confirmed => {
                settled(self.finish(shard, order).await, Recovered::Resumed)
            }
            OrderState::Pending | OrderState::Reserved => {
                self.recover_before_payment(shard, order).await
            }
            _ => Ok(Recovered::AlreadySettled),
        }
    }

    async fn recover_before_payment(
        &self,
        shard: &Shard,
        order: Order,
    ) -> Result<Recovered, RecoveryError> {
        // The hold, if the saga got that far.
        let reservation = match order.reservation_id {
            Some(id) => Some(id),
            None => self
                .inventory
                .find_by_owner(order.id.as_str())
                .await?
                .map(|r| r.id),
        };
        let Some(reservation_id) = reservation else {
            // Never reserved, so never paid: cancel.
            return self.cancel_interrupted(shard, &order, None).await;
        };
        // Was a payment authorized anywhere under this order's key?
        let key = authorize_key(&order.id);
        let mut unreachable = None;
        let providers: Vec<String> = self.payments.provider_names().map(str::to_string).collect();
        for psp in &providers {
            match self.payments.find(psp, &key).await {
                // Voided or refunded: no payment stands there.
                Ok(Some(intent))
                    if matches!(intent.status, IntentStatus::Voided | IntentStatus::Refunded) => {}
                Ok(Some(intent)) => {
                    let authorization = if intent.status == IntentStatus::Declined {
                        Authorization::Declined {
                            psp: psp.clone(),
                            intent,
                            unknown: Vec::new(),
                        }
                    } else {
                        // Any other provider may hold a stray: check later.
                        let unknown = providers.iter().filter(|p| *p != psp).cloned().collect();
                        Authorization::Authorized {
                            psp: psp.clone(),
                            intent,
                            unknown,
                        }
                    };
                    let from = order.state;
                    let progress = self
                        .after_authorization(shard, order, from, reservation_id, authorization)
                        .await;
                    return settled(progress, Recovered::Resumed);
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::debug!(order = %order.id, psp, %error, "look-up failed");
                    unreachable = Some(RecoveryError::Provider {
                        psp: psp.clone(),
                        source: error,
                    });
                }
            }
        }
        if let Some(error) = unreachable {
            return Err(error);
        }
        let _ = self
            .inventory
            .release(reservation_id, Some(order.id.as_str()))
            .await;
        self.cancel_interrupted(shard, &order, Some(reservation_id))
            .await
    }

    async fn cancel_interrupted(
        &self,
        shard: &Shard,
        order: &Order,
        reservation_id: Option<i64>,
    ) -> Result<Recovered, RecoveryError> {
        if let Some(id) = reservation_id {
            match self.inventory.release(id, Some(order.id.as_str())).await {
                // Not this order's hold (a second order for a won unit
                // that never claimed it): nothing of ours to give back.
                Ok(_) | Err(InventoryError::NotClaimed { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
        let step = Step::cancel(order.state);
        let progress = self.settle(shard, order, step, Outcome::Interrupted).await;
        settled(progress, Recovered::Compensated)
    }

    /// Voids strays: authorizations at providers whose outcome was unknown
    /// when another provider took the payment (or the order settled
    /// without one).
    pub async fn void_strays(&self, shard: &Shard, order: Order) -> Result<(), RecoveryError> {
        let key = authorize_key(&order.id);
        for psp in &order.unknown_psps {
            match self.payments.find(psp, &key).await {
                Ok(Some(intent))
                    if Some(&intent.id) != order.payment_intent.as_ref()
                        || order.psp.as_deref() != Some(psp) =>
                {
                    if intent.status == IntentStatus::Authorized {
                        self.payments
                            .transition(psp, &intent.id, "void", &void_key(&order.id))
                            .await
                            .map_err(|source| RecoveryError::Provider {
                                psp: psp.clone(),
                                source,
                            })?;
                        tracing::info!(order = %order.id, psp, intent = %intent.id, "stray authorization voided");
                    }
                }
                Ok(_) => {}
                Err(source) => {
                    return Err(RecoveryError::Provider {
                        psp: psp.clone(),
                        source,
                    });
                }
            }
        }
        Ok(store::clear_unknown_psps(&shard.pool, &order.id).await?)
    }
}

/// A recovery step's result: `done` once the order settled.
fn settled(progress: Progress, done: Recovered) -> Result<Recovered, RecoveryError> {
    match progress {
        Progress::Settled { .. } => Ok(done),
        Progress::Pending(error) => Err(RecoveryError::NotSettled(error)),
    }
}
