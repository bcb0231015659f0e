//! Flash-sale rows on the catalog primary: the sales and the ledger of won
//! slots.

use chrono::{DateTime, Utc};

use crate::db::DbRouter;

#[derive(Debug, Clone)]
pub struct Sale {
    pub id: i64,
    pub sku: String,
    pub quantity: i32,
    pub per_user_limit: i32,
    pub price_minor: Option<i64>,
    pub region: String,
    pub state: String,
    pub hold_ms: i64,
    pub ends_at: DateTime<Utc>,
}

/// A won slot as recorded.
pub struct NewClaim {
    pub slot: i32,
    pub user: String,
    pub user_seq: i32,
    pub reservation_id: Option<i64>,
}

pub async fn sale(db: &DbRouter, id: i64) -> Result<Option<Sale>, sqlx::Error> {
    let (sale, _) = db
        .read_primary()
        .run(|conn| async move {
            sqlx::query_as!(
                Sale,
                r#"select id, sku, quantity, per_user_limit, price_minor, region, state, hold_ms, ends_at
                   from flash_sales where id = $1"#,
                id
            )
            .fetch_optional(conn.pool())
            .await
        })
        .await?;
    Ok(sale)
}

/// Sales of `region` not closed yet, ended ones included: claims won
/// before the end are still drained before a sale is closed.
pub async fn open_sales(db: &DbRouter, region: &str) -> Result<Vec<Sale>, sqlx::Error> {
    let region = region.to_string();
    let (sales, _) = db
        .read_primary()
        .background()
        .run(|conn| {
            let region = region.clone();
            async move {
                sqlx::query_as!(
                    Sale,
                    r#"select id, sku, quantity, per_user_limit, price_minor, region, state, hold_ms, ends_at
                       from flash_sales where region = $1 and state = 'open'"#,
                    region
                )
                .fetch_all(conn.pool())
                .await
            }
        })
        .await?;
    Ok(sales)
}

/// Records won slots (a slot already recorded — a redelivered claim — is
/// left as it is).
pub async fn record_claims(
    db: &DbRouter,
    sale: i64,
    claims: &[NewClaim],
) -> Result<(), sqlx::Error> {
    if claims.is_empty() {
        return Ok(());
    }
    let slots: Vec<i32> = claims.iter().map(|c| c.slot).collect();
    let users: Vec<String> = claims.iter().map(|c| c.user.clone()).collect();
    let seqs: Vec<i32> = claims.iter().map(|c| c.user_seq).collect();
    let reservations: Vec<Option<i64>> = claims.iter().map(|c| c.reservation_id).collect();
    let states: Vec<String> = claims
        .iter()
        .map(|c| {
            if c.reservation_id.is_some() {
                "reserved"
            } else {
                "failed"
            }
            .to_string()
        })
        .collect();
    let write = db.write_background();
    let mut tx = write.begin().await?;
    sqlx::query!(
        r#"
        insert into flash_claims (sale_id, slot, user_id, user_seq, reservation_id, state)
        select $1, * from unnest($2::int[], $3::text[], $4::int[], $5::bigint[], $6::text[])
        on conflict do nothing
        "#,
        sale,
        &slots,
        &users,
        &seqs,
        &reservations as &[Option<i64>],
        &states
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// What the ledger says about a sale: the highest slot won and each
/// user's units (to rebuild a Redis that lost the sale).
pub async fn ledger(db: &DbRouter, sale: i64) -> Result<(i32, Vec<(String, i64)>), sqlx::Error> {
    let (found, _) = db
        .read_primary()
        .background()
        .run(|conn| async move {
            let max = sqlx::query_scalar!(
                r#"select coalesce(max(slot), 0) as "max!" from flash_claims where sale_id = $1"#,
                sale
            )
            .fetch_one(conn.pool())
            .await?;
            let users = sqlx::query!(
                r#"select user_id, count(*) as "count!" from flash_claims where sale_id = $1 group by user_id"#,
                sale
            )
            .fetch_all(conn.pool())
            .await?;
            Ok((max, users.into_iter().map(|r| (r.user_id, r.count)).collect()))
        })
        .await?;
    Ok(found)
}

/// A user's claims of a sale: `(slot, state, reservation id)`.
pub async fn claims_of(
    db: &DbRouter,
    sale: i64,
    user: &str,
) -> Result<Vec<(i32, String, Option<i64>)>, sqlx::Error> {
    let user = user.to_string();
    let (rows, _) = db
        .read_primary()
        .run(|conn| {
            let user = user.clone();
            async move {
                sqlx::query!(
                    "select slot, state, reservation_id from flash_claims
                     where sale_id = $1 and user_id = $2 order by slot",
                    sale,
                    user
                )
                .fetch_all(conn.pool())
                .await
            }
        })
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.slot, r.state, r.reservation_id))
        .collect())
}

/// Counts of a sale's claims by state.
pub async fn claim_counts(db: &DbRouter, sale: i64) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let (rows, _) = db
        .read_primary()
        .run(|conn| async move {
            sqlx::query!(
                r#"select state, count(*) as "count!" from flash_claims where sale_id = $1 group by state order by state"#,
                sale
            )
            .fetch_all(conn.pool())
            .await
        })
        .await?;
    Ok(rows.into_iter().map(|r| (r.state, r.count)).collect())
}

/// A won, still held unit of a sale for `user` to buy.
#[derive(Debug, Clone)]
pub struct WonUnit {
    pub slot: i32,
    pub reservation_id: i64,
    pub sku: String,
    pub price_minor: Option<i64>,
}

pub async fn won_unit(
    db: &DbRouter,
    sale: i64,
    user: &str,
) -> Result<Option<WonUnit>, sqlx::Error> {
    let user = user.to_string();
    let (found, _) = db
        .read_primary()
        .run(|conn| {
            let user = user.clone();
            async move {
                sqlx::query_as!(
                    WonUnit,
                    r#"
                    select c.slot, c.reservation_id as "reservation_id!", s.sku, s.price_minor
                    from flash_claims c join flash_sales s on s.id = c.sale_id
                    where c.sale_id = $1 and c.user_id = $2 and c.state = 'reserved'
                      and c.reservation_id is not null
                    order by c.slot
                    limit 1
                    "#,
                    sale,
                    user
                )
                .fetch_optional(conn.pool())
                .await
            }
        })
        .await?;
    Ok(found)
}

/// Marks a won unit bought.
pub async fn mark_purchased(db: &DbRouter, sale: i64, slot: i32) -> Result<(), sqlx::Error> {
    let write = db.write();
    let mut tx = write.begin().await?;
    sqlx::query!(
        "update flash_claims set state = 'purchased' where sale_id = $1 and slot = $2",
        sale,
        slot
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Ends sale `id` now (an admin's close): claims stop at the gate, and the
/// workers close the books once every earlier claim is recorded. Returns
/// the sale, `None` if `region` has none by that id.
pub async fn end_now(db: &DbRouter, id: i64, region: &str) -> Result<Option<Sale>, sqlx::Error> {
    let write = db.write();
    let mut tx = write.begin().await?;
    let sale = sqlx::query_as!(
        Sale,
        r#"update flash_sales set ends_at = least(ends_at, now()) where id = $1 and region = $2
           returning id, sku, quantity, per_user_limit, price_minor, region, state, hold_ms, ends_at"#,
        id,
        region
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(sale)
}

/// Closes the books of an ended sale whose claims are all recorded.
pub async fn close(db: &DbRouter, id: i64) -> Result<(), sqlx::Error> {
    let write = db.write_background();
    let mut tx = write.begin().await?;
    sqlx::query!(
        "update flash_sales set state = 'closed', closed_at = now()
         where id = $1 and state = 'open' and ends_at <= now()",
        id
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// When a sale closed, if it did.
pub async fn closed_at(db: &DbRouter, id: i64) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let (at, _) = db
        .read_primary()
        .run(|conn| async move {
            sqlx::query_scalar!("select closed_at from flash_sales where id = $1", id)
                .fetch_optional(conn.pool())
                .await
        })
        .await?;
    Ok(at.flatten())
}
