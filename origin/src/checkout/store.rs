//! The saga's writes to the order shard. Each step is one transaction that
//! moves the order along the state machine from the state it was read in
//! (`where state = $expected`), so a step run twice — by a retry, or by the
//! recovery worker racing a slow request — applies once and the loser
//! learns it lost.

use sqlx::PgPool;
use sqlx::types::Json;

use crate::orders::model::{Order, OrderId, OrderLine, OrderState};
use crate::orders::store::OrderRow;

/// A new order, before anything outside the shard has happened.
pub struct NewOrder<'a> {
    pub id: &'a OrderId,
    pub user_id: &'a str,
    pub idempotency_key: &'a str,
    pub request_hash: &'a str,
    pub currency: &'a str,
    pub total_minor: i64,
    pub lines: &'a [OrderLine],
    /// A hold taken before the order (a won flash-sale unit).
    pub reservation_id: Option<i64>,
}

/// What a repeated Idempotency-Key finds.
#[derive(Debug, Clone)]
pub struct Keyed {
    pub id: String,
    pub request_hash: String,
    pub state: String,
    pub response: Option<(u16, serde_json::Value)>,
}

/// Inserts the order as `pending`; `false` when the user already has an
/// order under this key (a concurrent duplicate won).
pub async fn insert_pending(pool: &PgPool, order: &NewOrder<'_>) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query_scalar!(
        r#"
        insert into orders (id, user_id, idempotency_key, request_hash, state, currency,
                            total_minor, lines, reservation_id)
        values ($1, $2, $3, $4, 'pending', $5, $6, $7, $8)
        on conflict (user_id, idempotency_key) do nothing
        returning id
        "#,
        order.id.as_str(),
        order.user_id,
        order.idempotency_key,
        order.request_hash,
        order.currency,
        order.total_minor,
        Json(order.lines) as _,
        order.reservation_id,
    )
    .fetch_optional(pool)
    .await?;
    Ok(inserted.is_some())
}

/// The user's order under `key`, if any.
pub async fn find_by_key(
    pool: &PgPool,
    user: &str,
    key: &str,
) -> Result<Option<Keyed>, sqlx::Error> {
    let row = sqlx::query!(
        r#"
        select id, request_hash, state, response_status, response_body
        from orders where user_id = $1 and idempotency_key = $2
        "#,
        user,
        key
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| Keyed {
        id: r.id,
        request_hash: r.request_hash,
        state: r.state,
        response: match (r.response_status, r.response_body) {
            (Some(status), Some(body)) => Some((u16::try_from(status).unwrap_or(500), body)),
            _ => None,
        },
    }))
}

/// Fields a step sets along with the state (`None`: unchanged).
#[derive(Debug, Default, Clone)]
pub struct Patch {
    pub reservation_id: Option<i64>,
    pub psp: Option<String>,
    pub payment_intent: Option<String>,
    pub unknown_psps: Option<Vec<String>>,
    pub failure_reason: Option<String>,
    pub response: Option<(u16, serde_json::Value)>,
}

/// Moves order `id` from `from` through each state of `path` in one
/// transaction, applying `patch` on the way. `false` if the order was not
/// in `from` any more (another worker moved it). One round trip and one row
/// write: the shard's `order_advance` announces the path to its triggers,
/// which check every hop and write an outbox event per state entered.
pub async fn advance(
    pool: &PgPool,
    id: &OrderId,
    from: OrderState,
    path: &[OrderState],
    patch: &Patch,
) -> Result<bool, sqlx::Error> {
    let (status, body) = match &patch.response {
        Some((status, body)) => (Some(i16::try_from(*status).unwrap_or(500)), Some(body)),
        None => (None, None),
    };
    let path: Vec<&str> = path.iter().map(|state| state.as_str()).collect();
    let moved = sqlx::query_scalar!(
        r#"select order_advance($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) as "moved!""#,
        id.as_str(),
        from.as_str(),
        &path as &[&str],
        patch.reservation_id,
        patch.psp.as_deref(),
        patch.payment_intent.as_deref(),
        patch.unknown_psps.as_deref(),
        patch.failure_reason.as_deref(),
        status,
        body,
    )
    .fetch_one(pool)
    .await?;
    Ok(moved)
}

/// How the shard answered a step that changes an order's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The order moved.
    Applied,
    /// The shard refused it: the transition trigger found an illegal hop
    /// (`check_violation`), or `order_advance` found the order no longer in
    /// the state the step starts from (another worker moved it first).
    Refused,
}

impl Transition {
    /// What [`advance`]'s answer says; `None` when the shard could not be
    /// asked (nothing was decided: the step is tried again later).
    pub fn of(answer: &Result<bool, sqlx::Error>) -> Option<Self> {
        match answer {
            Ok(true) => Some(Transition::Applied),
            Ok(false) => Some(Transition::Refused),
            Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("23514") => {
                Some(Transition::Refused)
            }
            Err(_) => None,
        }
    }

    /// The `result` label of `meridian_order_transitions_total`.
    pub fn label(self) -> &'static str {
        match self {
            Transition::Applied => "applied",
            Transition::Refused => "refused",
        }
    }
}

/// The readable rows as orders; an unreadable one is logged and left out
/// (it cannot be resumed by code that does not understand it).
fn readable(rows: Vec<OrderRow>) -> Vec<Order> {
    rows.into_iter()
        .filter_map(|row| {
            let id = row.id.clone();
            row.into_order()
                .map_err(
                    |error| tracing::error!(order = %id, %error, "unreadable order row skipped"),
                )
                .ok()
        })
        .collect()
}

/// Claims up to `limit` unfinished orders untouched for `stale_ms`, by
/// touching them (so another worker leaves them alone for as long).
pub async fn claim_stale(
    pool: &PgPool,
    stale_ms: i64,
    limit: i64,
) -> Result<Vec<Order>, sqlx::Error> {
    let rows = sqlx::query_as!(
        OrderRow,
        r#"
        update orders o set updated_at = now()
        from (
            select id from orders
            where state in ('pending', 'reserved', 'authorized', 'confirmed')
              and updated_at < now() - $1 * interval '1 millisecond'
            order by updated_at
            limit $2
            for update skip locked
        ) stale
        where o.id = stale.id
        returning o.id, o.user_id, o.state, o.currency, o.total_minor,
                  o.lines as "lines: Json<Vec<OrderLine>>", o.reservation_id, o.psp,
                  o.payment_intent, o.unknown_psps, o.failure_reason, o.response_status,
                  o.created_at, o.updated_at
        "#,
        stale_ms as f64,
        limit
    )
    .fetch_all(pool)
    .await?;
    Ok(readable(rows))
}

/// Settled orders that still name providers with an unknown outcome.
pub async fn with_unknown_psps(pool: &PgPool, limit: i64) -> Result<Vec<Order>, sqlx::Error> {
    let rows = sqlx::query_as!(
        OrderRow,
        r#"
        select id, user_id, state, currency, total_minor,
               lines as "lines: Json<Vec<OrderLine>>", reservation_id, psp,
               payment_intent, unknown_psps, failure_reason, response_status,
               created_at, updated_at
        from orders
        where cardinality(unknown_psps) > 0
          and state not in ('pending', 'reserved', 'authorized', 'confirmed')
        limit $1
        "#,
        limit
    )
    .fetch_all(pool)
    .await?;
    Ok(readable(rows))
}

/// Forgets the unknown providers of a settled order once they are checked.
pub async fn clear_unknown_psps(pool: &PgPool, id: &OrderId) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update orders set unknown_psps = '{}' where id = $1",
        id.as_str()
    )
    .execute(pool)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_is_applied_refused_or_undecided() {
        assert_eq!(Transition::of(&Ok(true)), Some(Transition::Applied));
        assert_eq!(Transition::of(&Ok(false)), Some(Transition::Refused));
        assert_eq!(Transition::of(&Err(sqlx::Error::PoolTimedOut)), None);
        assert_eq!(
            crate::metrics::TRANSITION_RESULTS,
            [Transition::Applied.label(), Transition::Refused.label()]
        );
    }
}
