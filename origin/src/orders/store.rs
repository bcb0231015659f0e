//! Order-shard queries (compile-time checked). Every read is scoped to the
//! user: an order of another user is simply not found.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::types::Json;

use super::model::{Order, OrderId, OrderLine, OrderState};

/// An order row as every query selects it (`ORDER_COLUMNS`); the one
/// mapping to [`Order`].
pub(crate) struct OrderRow {
    pub id: String,
    pub user_id: String,
    pub state: String,
    pub currency: String,
    pub total_minor: i64,
    pub lines: Json<Vec<OrderLine>>,
    pub reservation_id: Option<i64>,
    pub psp: Option<String>,
    pub payment_intent: Option<String>,
    pub unknown_psps: Vec<String>,
    pub failure_reason: Option<String>,
    pub response_status: Option<i16>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl OrderRow {
    pub(crate) fn into_order(self) -> Result<Order, sqlx::Error> {
        let state = OrderState::parse(&self.state).ok_or_else(|| {
            sqlx::Error::Decode(format!("unknown order state `{}`", self.state).into())
        })?;
        Ok(Order {
            id: OrderId::parse(&self.id)
                .map_err(|_| sqlx::Error::Decode(format!("bad order id `{}`", self.id).into()))?,
            user_id: self.user_id,
            state,
            currency: self.currency,
            total_minor: self.total_minor,
            lines: self.lines.0,
            reservation_id: self.reservation_id,
            psp: self.psp,
            payment_intent: self.payment_intent,
            unknown_psps: self.unknown_psps,
            failure_reason: self.failure_reason,
            has_response: self.response_status.is_some(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// `user`'s order `id`, if it is theirs.
pub async fn order_of_user(
    pool: &PgPool,
    id: &OrderId,
    user: &str,
) -> Result<Option<Order>, sqlx::Error> {
    let row = sqlx::query_as!(
        OrderRow,
        r#"
        select id, user_id, state, currency, total_minor,
               lines as "lines: Json<Vec<OrderLine>>", reservation_id, psp, payment_intent,
               unknown_psps, failure_reason, response_status, created_at, updated_at
        from orders where id = $1 and user_id = $2
        "#,
        id.as_str(),
        user
    )
    .fetch_optional(pool)
    .await?;
    row.map(OrderRow::into_order).transpose()
}

/// `user`'s orders, newest first, older than `before` when given.
pub async fn orders_of_user(
    pool: &PgPool,
    user: &str,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<Order>, sqlx::Error> {
    let rows = sqlx::query_as!(
        OrderRow,
        r#"
        select id, user_id, state, currency, total_minor,
               lines as "lines: Json<Vec<OrderLine>>", reservation_id, psp, payment_intent,
               unknown_psps, failure_reason, response_status, created_at, updated_at
        from orders
        where user_id = $1 and ($2::text is null or id < $2)
        order by id desc
        limit $3
        "#,
        user,
        before,
        limit
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(OrderRow::into_order).collect()
}
