//! Orders: ids that embed their shard, the state machine, and the views.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::model::PriceView;
use crate::catalog::store::price_view;
use crate::problem::ApiError;

/// `<shard>.<32 hex digits of a UUIDv7>`: the shard is found from the id
/// alone, and ids sort by creation time.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OrderId(String);

impl OrderId {
    pub fn new(shard: &str) -> Self {
        OrderId(format!("{shard}.{}", uuid::Uuid::now_v7().simple()))
    }

    /// An order id as a client sent it; anything else is a 404 (no shard
    /// has it), not a hint about which ids exist.
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let not_found = || ApiError::NotFound("no such order".into());
        let (shard, suffix) = raw.split_once('.').ok_or_else(not_found)?;
        let shard_ok = !shard.is_empty()
            && shard.len() <= 63
            && shard
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let suffix_ok = suffix.len() == 32
            && suffix
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if shard_ok && suffix_ok {
            Ok(OrderId(raw.to_string()))
        } else {
            Err(not_found())
        }
    }

    pub fn shard(&self) -> &str {
        self.0.split_once('.').map_or("", |(shard, _)| shard)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for OrderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The order state machine (the shard's `order_state_edges` table holds
/// the legal transitions and refuses any other):
///
/// ```text
/// pending → reserved → authorized → confirmed → captured → fulfilled
///    ↓          ↓  ↘          ↓           ↓          ↓          ↓
/// cancelled  cancelled payment_failed cancelled cancelled refunded refunded
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    Pending,
    Reserved,
    Authorized,
    Confirmed,
    Captured,
    Fulfilled,
    Cancelled,
    PaymentFailed,
    Refunded,
}

impl OrderState {
    pub const ALL: [OrderState; 9] = [
        OrderState::Pending,
        OrderState::Reserved,
        OrderState::Authorized,
        OrderState::Confirmed,
        OrderState::Captured,
        OrderState::Fulfilled,
        OrderState::Cancelled,
        OrderState::PaymentFailed,
        OrderState::Refunded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::Pending => "pending",
            OrderState::Reserved => "reserved",
            OrderState::Authorized => "authorized",
            OrderState::Confirmed => "confirmed",
            OrderState::Captured => "captured",
            OrderState::Fulfilled => "fulfilled",
            OrderState::Cancelled => "cancelled",
            OrderState::PaymentFailed => "payment_failed",
            OrderState::Refunded => "refunded",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// The saga has nothing left to do (a refund may still come later).
    pub fn is_settled(self) -> bool {
        !matches!(
            self,
            OrderState::Pending
                | OrderState::Reserved
                | OrderState::Authorized
                | OrderState::Confirmed
        )
    }
}

/// One line of an order, priced when the order was placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub sku: String,
    pub name: String,
    pub quantity: u32,
    pub unit_price_minor: i64,
}

/// An order as stored: the one model of an order row, for the API and
/// for the checkout saga.
#[derive(Debug, Clone)]
pub struct Order {
    pub id: OrderId,
    pub user_id: String,
    pub state: OrderState,
    pub currency: String,
    pub total_minor: i64,
    pub lines: Vec<OrderLine>,
    pub reservation_id: Option<i64>,
    pub psp: Option<String>,
    pub payment_intent: Option<String>,
    /// Providers whose authorization outcome stayed unknown: any stray
    /// authorization there is voided once the order settles.
    pub unknown_psps: Vec<String>,
    pub failure_reason: Option<String>,
    /// Whether the shopper's answer is stored (the key's replay).
    pub has_response: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrderLineView {
    pub sku: String,
    pub name: String,
    pub quantity: u32,
    pub unit_price: PriceView,
    pub line_total: PriceView,
}

/// An order as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrderView {
    pub id: String,
    pub state: OrderState,
    pub total: PriceView,
    pub lines: Vec<OrderLineView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Order {
    pub fn view(&self) -> OrderView {
        OrderView {
            id: self.id.to_string(),
            state: self.state,
            total: price_view(self.total_minor, &self.currency),
            lines: self
                .lines
                .iter()
                .map(|l| OrderLineView {
                    sku: l.sku.clone(),
                    name: l.name.clone(),
                    quantity: l.quantity,
                    unit_price: price_view(l.unit_price_minor, &self.currency),
                    line_total: price_view(
                        l.unit_price_minor.saturating_mul(i64::from(l.quantity)),
                        &self.currency,
                    ),
                })
                .collect(),
            failure_reason: self.failure_reason.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_embed_their_shard_and_reject_anything_else() {
        let id = OrderId::new("us-east-1");
        assert_eq!(id.shard(), "us-east-1");
        assert_eq!(OrderId::parse(id.as_str()).unwrap(), id);
        let later = OrderId::new("us-east-1");
        assert!(later.as_str() > id.as_str() || later.as_str()[10..22] == id.as_str()[10..22]);
        for bad in [
            "",
            "us-east-1",
            "us-east-1.",
            "US-EAST.0123456789abcdef0123456789abcdef",
            "us-east-1.0123456789abcdef0123456789abcdeg",
            "us-east-1.0123456789abcdef0123456789abcdef0",
            "../x.0123456789abcdef0123456789abcdef",
        ] {
            assert!(OrderId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn states_round_trip() {
        for state in OrderState::ALL {
            assert_eq!(OrderState::parse(state.as_str()), Some(state));
        }
        assert!(OrderState::Captured.is_settled());
        assert!(!OrderState::Confirmed.is_settled());
    }
}
