//! How a checkout ends for the shopper, typed: each [`Outcome`] maps to
//! its HTTP status, its body (the order, or an RFC 9457 problem naming the
//! order), the failure reason stored on the order and the
//! `meridian_checkouts_total` label — in this one place, for the saga and
//! its recovery alike. What recovery did with an unfinished order is a
//! [`Recovered`]; why it must try again later, a [`RecoveryError`].

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::inventory::InventoryError;
use crate::orders::model::{OrderId, OrderView};
use crate::payments::PspError;
use crate::problem::ApiError;

/// A settled checkout.
#[derive(Debug)]
pub enum Outcome {
    /// Paid: captured, or confirmed with the capture to follow.
    Placed {
        view: Box<OrderView>,
        captured: bool,
    },
    /// The order cannot be reserved as asked (bad lines).
    Invalid {
        detail: String,
    },
    /// Not enough stock when reserving.
    OutOfStock {
        sku: String,
        available: i64,
        wanted: i32,
    },
    /// The hold lapsed while paying and its stock is gone: the payment was
    /// voided.
    SoldOutWhilePaying,
    /// The won flash-sale unit is consumed by another order.
    UnitAlreadyOrdered {
        first_order: String,
    },
    /// The won flash-sale unit's hold ended before this order claimed it.
    HoldLapsed,
    Declined,
    /// No provider could take the payment and none did anything.
    PaymentUnavailable,
    /// Stopped before any payment (a crash, an outage): compensated.
    Interrupted,
}

impl Outcome {
    pub fn status(&self) -> StatusCode {
        match self {
            Outcome::Placed { .. } => StatusCode::CREATED,
            Outcome::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Outcome::OutOfStock { .. }
            | Outcome::SoldOutWhilePaying
            | Outcome::UnitAlreadyOrdered { .. }
            | Outcome::HoldLapsed => StatusCode::CONFLICT,
            Outcome::Declined => StatusCode::PAYMENT_REQUIRED,
            Outcome::PaymentUnavailable | Outcome::Interrupted => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The shopper's answer: the order, or a problem naming it.
    pub fn body(&self, order: &OrderId) -> Value {
        let (slug, detail, extra): (&'static str, String, Value) = match self {
            Outcome::Placed { view, .. } => {
                return serde_json::to_value(view).unwrap_or(Value::Null);
            }
            Outcome::Invalid { detail } => ("validation-failed", detail.clone(), json!({})),
            Outcome::OutOfStock {
                sku,
                available,
                wanted,
            } => (
                "out-of-stock",
                format!("not enough stock of {sku}: {available} available, {wanted} wanted"),
                json!({ "sku": sku, "available": available }),
            ),
            Outcome::SoldOutWhilePaying => (
                "out-of-stock",
                "the items sold out while the payment was being taken; the payment was voided"
                    .into(),
                json!({}),
            ),
            Outcome::UnitAlreadyOrdered { first_order } => (
                "unit-already-ordered",
                format!(
                    "this unit is already being bought by order {first_order}; nothing was charged"
                ),
                json!({ "first_order_id": first_order }),
            ),
            Outcome::HoldLapsed => (
                "hold-lapsed",
                "the hold on this unit has ended; nothing was charged".into(),
                json!({}),
            ),
            Outcome::Declined => (
                "payment-declined",
                "the payment was declined; nothing was charged".into(),
                json!({}),
            ),
            Outcome::PaymentUnavailable => (
                "payment-unavailable",
                "no payment provider could take the payment; nothing was charged — retry with a new Idempotency-Key".into(),
                json!({}),
            ),
            Outcome::Interrupted => (
                "checkout-interrupted",
                "the checkout was interrupted before any payment; nothing was charged — retry with a new Idempotency-Key".into(),
                json!({}),
            ),
        };
        let mut extensions = serde_json::Map::new();
        extensions.insert("order_id".into(), json!(order.as_str()));
        if let Value::Object(extra) = extra {
            extensions.extend(extra);
        }
        let problem = ApiError::detailed(self.status(), slug, detail, extensions).problem();
        serde_json::to_value(problem).unwrap_or(Value::Null)
    }

    /// What the order row records as its failure.
    pub fn failure_reason(&self) -> Option<String> {
        Some(match self {
            Outcome::Placed { .. } => return None,
            Outcome::Invalid { detail } => detail.clone(),
            Outcome::OutOfStock { sku, .. } => format!("out of stock: {sku}"),
            Outcome::SoldOutWhilePaying => "reservation lapsed".into(),
            Outcome::UnitAlreadyOrdered { first_order } => {
                format!("unit already ordered by {first_order}")
            }
            Outcome::HoldLapsed => "hold lapsed".into(),
            Outcome::Declined => "declined".into(),
            Outcome::PaymentUnavailable => "payment providers unavailable".into(),
            Outcome::Interrupted => "interrupted".into(),
        })
    }

    /// The `meridian_checkouts_total{outcome}` label, if counted.
    pub fn metric(&self) -> Option<&'static str> {
        match self {
            Outcome::Placed { captured: true, .. } => Some("captured"),
            Outcome::Placed {
                captured: false, ..
            } => Some("confirmed"),
            Outcome::OutOfStock { .. } | Outcome::SoldOutWhilePaying => Some("out_of_stock"),
            Outcome::Declined => Some("declined"),
            Outcome::PaymentUnavailable => Some("payment_unavailable"),
            Outcome::Invalid { .. }
            | Outcome::UnitAlreadyOrdered { .. }
            | Outcome::HoldLapsed
            | Outcome::Interrupted => None,
        }
    }
}

/// What recovery did with an unfinished order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovered {
    /// A payment existed: the order went on to its end.
    Resumed,
    /// No payment: the stock went back and the order was cancelled.
    Compensated,
    /// Nothing to do: it had settled meanwhile.
    AlreadySettled,
}

impl Recovered {
    /// The `meridian_checkout_recoveries_total{result}` label.
    pub fn label(self) -> &'static str {
        match self {
            Recovered::Resumed => "resumed",
            Recovered::Compensated => "compensated",
            Recovered::AlreadySettled => "settled",
        }
    }
}

/// Why recovery must try an order again later.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("inventory: {0}")]
    Inventory(#[from] InventoryError),
    #[error("payment provider {psp} could not be asked: {source}")]
    Provider {
        psp: String,
        #[source]
        source: PspError,
    },
    #[error("order shard: {0}")]
    Shard(#[from] sqlx::Error),
    /// The saga stopped short again (its reason, as the shopper would see it).
    #[error("not settled yet: {0}")]
    NotSettled(ApiError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_is_a_problem_naming_the_order_with_its_own_status() {
        let order = OrderId::new("us-east-0");
        for (outcome, status, slug) in [
            (Outcome::Declined, 402, "payment-declined"),
            (Outcome::PaymentUnavailable, 503, "payment-unavailable"),
            (Outcome::Interrupted, 503, "checkout-interrupted"),
            (Outcome::HoldLapsed, 409, "hold-lapsed"),
            (Outcome::SoldOutWhilePaying, 409, "out-of-stock"),
            (
                Outcome::UnitAlreadyOrdered {
                    first_order: "us-east-0.x".into(),
                },
                409,
                "unit-already-ordered",
            ),
            (
                Outcome::Invalid {
                    detail: "bad".into(),
                },
                422,
                "validation-failed",
            ),
        ] {
            let body = outcome.body(&order);
            assert_eq!(outcome.status().as_u16(), status, "{outcome:?}");
            assert_eq!(body["status"], status, "{outcome:?}");
            assert!(
                body["type"].as_str().is_some_and(|t| t.ends_with(slug)),
                "{body}"
            );
            assert_eq!(body["order_id"], order.as_str());
            assert!(outcome.failure_reason().is_some());
        }
        let unit = Outcome::UnitAlreadyOrdered {
            first_order: "us-east-0.first".into(),
        };
        assert_eq!(unit.body(&order)["first_order_id"], "us-east-0.first");
    }
}
