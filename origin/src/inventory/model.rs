//! Reservation requests, reservations and inventory errors.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Most units of one SKU one reservation may hold.
pub const MAX_LINE_QUANTITY: i32 = 10_000;
/// Most SKUs in one reservation.
pub const MAX_LINES: usize = 1_000;

/// One SKU and how many units of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Line {
    pub sku: String,
    pub quantity: i32,
}

/// A request to hold stock: all lines or nothing.
#[derive(Debug, Clone)]
pub struct ReserveRequest {
    /// What takes the hold (unique: a retry with the same owner returns the
    /// first reservation instead of taking stock twice).
    pub owner: String,
    /// Lines sorted by SKU, one per SKU.
    lines: Vec<Line>,
    pub ttl: Duration,
    /// The order that consumes the hold, when known at reservation time
    /// (a checkout's own reservation); a hold taken without one (a won
    /// flash-sale unit) is claimed by an order later, once.
    pub order: Option<String>,
}

impl ReserveRequest {
    /// Merges lines of the same SKU; refuses empty requests and
    /// non-positive or oversized quantities.
    pub fn new(
        owner: impl Into<String>,
        lines: impl IntoIterator<Item = Line>,
        ttl: Duration,
    ) -> Result<Self, InventoryError> {
        let owner = owner.into();
        if owner.is_empty() || owner.len() > 400 {
            return Err(InventoryError::Invalid(
                "a reservation owner is 1 to 400 bytes".into(),
            ));
        }
        let mut merged: BTreeMap<String, i64> = BTreeMap::new();
        for line in lines {
            if line.quantity <= 0 {
                return Err(InventoryError::Invalid(format!(
                    "quantity of {} must be positive",
                    line.sku
                )));
            }
            *merged.entry(line.sku).or_default() += i64::from(line.quantity);
        }
        if merged.is_empty() || merged.len() > MAX_LINES {
            return Err(InventoryError::Invalid(format!(
                "a reservation holds 1 to {MAX_LINES} SKUs"
            )));
        }
        let mut out = Vec::with_capacity(merged.len());
        for (sku, quantity) in merged {
            match i32::try_from(quantity) {
                Ok(quantity) if quantity <= MAX_LINE_QUANTITY => out.push(Line { sku, quantity }),
                _ => {
                    return Err(InventoryError::Invalid(format!(
                        "at most {MAX_LINE_QUANTITY} units of {sku} per reservation"
                    )));
                }
            }
        }
        Ok(ReserveRequest {
            owner,
            lines: out,
            ttl,
            order: None,
        })
    }

    /// The hold is consumed by `order` (and only by it).
    #[must_use]
    pub fn for_order(mut self, order: impl Into<String>) -> Self {
        self.order = Some(order.into());
        self
    }

    pub fn lines(&self) -> &[Line] {
        &self.lines
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReservationState {
    Held,
    Committed,
    Released,
    Expired,
}

impl ReservationState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReservationState::Held => "held",
            ReservationState::Committed => "committed",
            ReservationState::Released => "released",
            ReservationState::Expired => "expired",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "held" => ReservationState::Held,
            "committed" => ReservationState::Committed,
            "released" => ReservationState::Released,
            "expired" => ReservationState::Expired,
            _ => return None,
        })
    }
}

/// A hold on stock as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reservation {
    pub id: i64,
    pub owner: String,
    pub state: ReservationState,
    pub expires_at: DateTime<Utc>,
    pub lines: Vec<Line>,
    /// True when this answer is an earlier reservation of the same owner.
    pub replayed: bool,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum InventoryError {
    #[error("{0}")]
    Invalid(String),
    #[error("not enough stock of {sku}: {available} available, {wanted} wanted")]
    Insufficient {
        sku: String,
        available: i64,
        wanted: i32,
    },
    #[error("no reservation {0}")]
    UnknownReservation(i64),
    /// Commit of a hold that lapsed and whose stock is gone meanwhile, or
    /// release of a committed one.
    #[error("reservation {id} is {state}; it cannot be {wanted}")]
    WrongState {
        id: i64,
        state: &'static str,
        wanted: &'static str,
    },
    /// Commit or release on behalf of an order that did not claim the
    /// reservation (`by`: the order that did, if any).
    #[error("reservation {id} is not held for this order{}", by.as_ref().map(|o| format!(" (order {o} holds it)")).unwrap_or_default())]
    NotClaimed { id: i64, by: Option<String> },
    /// A stored state this code does not know: never guessed.
    #[error("reservation {id} has an unknown state `{state}`")]
    Corrupt { id: i64, state: String },
    #[error("inventory database: {0}")]
    Db(Arc<sqlx::Error>),
    #[error("the inventory queue is stopping")]
    Stopped,
}

impl From<sqlx::Error> for InventoryError {
    fn from(error: sqlx::Error) -> Self {
        InventoryError::Db(Arc::new(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(sku: &str, quantity: i32) -> Line {
        Line {
            sku: sku.into(),
            quantity,
        }
    }

    #[test]
    fn requests_merge_lines_and_refuse_bad_quantities() {
        let ttl = Duration::from_secs(60);
        let request =
            ReserveRequest::new("o", [line("B", 1), line("A", 2), line("B", 3)], ttl).unwrap();
        assert_eq!(request.lines(), &[line("A", 2), line("B", 4)]);
        for bad in [
            vec![],
            vec![line("A", 0)],
            vec![line("A", -1)],
            vec![line("A", MAX_LINE_QUANTITY), line("A", 1)],
            vec![line("A", i32::MAX), line("A", i32::MAX)],
        ] {
            assert!(
                ReserveRequest::new("o", bad.clone(), ttl).is_err(),
                "{bad:?}"
            );
        }
        assert!(ReserveRequest::new("", [line("A", 1)], ttl).is_err());
    }
}
