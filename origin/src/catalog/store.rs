//! Catalog queries, compile-time checked (`sqlx::query!`, offline data in
//! `origin/.sqlx/`). Reads take a [`ReadConn`] (replica or read-only
//! primary); writes take a transaction from [`WriteDb`](crate::db::WriteDb).

use super::model::{
    CategoryView, CurrencyCode, Money, NewProduct, PriceView, ProductSummary, ProductView,
    VariantView,
};
use crate::db::{ReadConn, WriteTx};

/// Advisory lock key that orders invalidation-log inserts by commit.
const INVALIDATION_LOCK: i64 = 0x6d65_7269_6469_616e; // "meridian"

#[derive(Debug, serde::Deserialize)]
struct VariantRow {
    sku: String,
    color: Option<String>,
    size: Option<String>,
    price_minor: Option<i64>,
}

/// A stored currency code that is not ISO 4217 is shown as-is with 2 digits
/// rather than failing the read.
pub fn price_view(minor: i64, currency: &str) -> PriceView {
    match CurrencyCode::parse(currency) {
        Ok(code) => Money {
            minor,
            currency: code,
        }
        .view(),
        Err(_) => PriceView {
            amount_minor: minor,
            currency: currency.to_string(),
            formatted: minor.to_string(),
        },
    }
}

/// One product with its variants, in one query.
pub async fn product(conn: &ReadConn, id: i64) -> Result<Option<ProductView>, sqlx::Error> {
    let row = sqlx::query!(
        r#"
        select p.id, p.sku, p.name, p.brand, p.category, p.description,
               p.price_minor, p.currency, p.version, p.updated_at,
               coalesce((
                   select json_agg(json_build_object(
                              'sku', v.sku, 'color', v.color, 'size', v.size,
                              'price_minor', v.price_minor)
                          order by v.position, v.sku)
                   from product_variants v where v.product_id = p.id
               ), '[]'::json) as "variants!: sqlx::types::Json<Vec<VariantRow>>"
        from products p
        where p.id = $1
        "#,
        id
    )
    .fetch_optional(conn.pool())
    .await?;
    Ok(row.map(|r| {
        let currency = r.currency;
        ProductView {
            id: r.id,
            sku: r.sku,
            name: r.name,
            brand: r.brand,
            category: r.category,
            description: r.description,
            price: price_view(r.price_minor, &currency),
            variants: r
                .variants
                .0
                .into_iter()
                .map(|v| VariantView {
                    price: price_view(v.price_minor.unwrap_or(r.price_minor), &currency),
                    sku: v.sku,
                    color: v.color,
                    size: v.size,
                })
                .collect(),
            version: r.version,
            updated_at: r.updated_at,
        }
    }))
}

/// A page of products ordered by id, optionally in one category.
pub async fn list_products(
    conn: &ReadConn,
    category: Option<&str>,
    after_id: i64,
    limit: i64,
) -> Result<Vec<ProductSummary>, sqlx::Error> {
    let rows = sqlx::query_as!(
        SummaryRow,
        r#"
        select id, sku, name, brand, category, price_minor, currency
        from products
        where ($1::text is null or category = $1) and id > $2
        order by id
        limit $3
        "#,
        category,
        after_id,
        limit
    )
    .fetch_all(conn.pool())
    .await?;
    Ok(rows.into_iter().map(ProductSummary::from).collect())
}

/// A product as listings read it (`id, sku, name, brand, category,
/// price_minor, currency`).
pub struct SummaryRow {
    pub id: i64,
    pub sku: String,
    pub name: String,
    pub brand: String,
    pub category: String,
    pub price_minor: i64,
    pub currency: String,
}

impl From<SummaryRow> for ProductSummary {
    fn from(r: SummaryRow) -> Self {
        ProductSummary {
            id: r.id,
            sku: r.sku,
            name: r.name,
            brand: r.brand,
            category: r.category,
            price: price_view(r.price_minor, &r.currency),
        }
    }
}

pub async fn category_exists(conn: &ReadConn, slug: &str) -> Result<bool, sqlx::Error> {
    let row = sqlx::query_scalar!(
        r#"select exists(select 1 from categories where slug = $1) as "exists!""#,
        slug
    )
    .fetch_one(conn.pool())
    .await?;
    Ok(row)
}

pub async fn categories(conn: &ReadConn) -> Result<Vec<CategoryView>, sqlx::Error> {
    let rows = sqlx::query_as!(
        CategoryView,
        "select slug, name from categories order by position, slug"
    )
    .fetch_all(conn.pool())
    .await?;
    Ok(rows)
}

/// Units of each currency per US dollar, times 10^9.
pub async fn fx_rates(conn: &ReadConn) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows = sqlx::query!("select currency, per_usd_nanos from fx_rates order by currency")
        .fetch_all(conn.pool())
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.currency, r.per_usd_nanos))
        .collect())
}

/// Inserts a product and its variants; returns the new id.
pub async fn insert_product(tx: &mut WriteTx, product: &NewProduct) -> Result<i64, sqlx::Error> {
    let id = sqlx::query_scalar!(
        r#"
        insert into products (sku, name, brand, category, description, price_minor, currency)
        values ($1, $2, $3, $4, $5, $6, $7)
        returning id
        "#,
        product.sku.as_str(),
        product.name,
        product.brand,
        product.category,
        product.description,
        product.price.minor,
        product.price.currency.code(),
    )
    .fetch_one(&mut **tx)
    .await?;
    insert_variants(tx, id, product).await?;
    Ok(id)
}

/// Replaces a product and its variants; returns the category it had before,
/// or `None` if there is no such product.
/// What an update found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Updated {
    /// Written; the category the product had before.
    Written {
        previous_category: String,
    },
    Missing,
    /// The product is at another version than the write was based on.
    Stale {
        current_version: i64,
    },
}

/// Replaces product `id`, if it is at `expected_version` (when given; the
/// row is locked, so the check and the write cannot be raced).
pub async fn update_product(
    tx: &mut WriteTx,
    id: i64,
    product: &NewProduct,
    expected_version: Option<i64>,
) -> Result<Updated, sqlx::Error> {
    let previous = sqlx::query!(
        "select category, version from products where id = $1 for update",
        id
    )
    .fetch_optional(&mut **tx)
    .await?;
    let Some(previous) = previous else {
        return Ok(Updated::Missing);
    };
    if expected_version.is_some_and(|v| v != previous.version) {
        return Ok(Updated::Stale {
            current_version: previous.version,
        });
    }
    let previous = previous.category;
    sqlx::query!(
        r#"
        update products
        set sku = $2, name = $3, brand = $4, category = $5, description = $6,
            price_minor = $7, currency = $8, version = version + 1, updated_at = now()
        where id = $1
        "#,
        id,
        product.sku.as_str(),
        product.name,
        product.brand,
        product.category,
        product.description,
        product.price.minor,
        product.price.currency.code(),
    )
    .execute(&mut **tx)
    .await?;
    sqlx::query!("delete from product_variants where product_id = $1", id)
        .execute(&mut **tx)
        .await?;
    insert_variants(tx, id, product).await?;
    Ok(Updated::Written {
        previous_category: previous,
    })
}

async fn insert_variants(
    tx: &mut WriteTx,
    id: i64,
    product: &NewProduct,
) -> Result<(), sqlx::Error> {
    if product.variants.is_empty() {
        return Ok(());
    }
    let skus: Vec<String> = product
        .variants
        .iter()
        .map(|v| v.sku.as_str().to_string())
        .collect();
    let colors: Vec<Option<String>> = product.variants.iter().map(|v| v.color.clone()).collect();
    let sizes: Vec<Option<String>> = product.variants.iter().map(|v| v.size.clone()).collect();
    let prices: Vec<Option<i64>> = product.variants.iter().map(|v| v.price_minor).collect();
    sqlx::query!(
        r#"
        insert into product_variants (sku, product_id, position, color, size, price_minor)
        select v.sku, $1, v.ord::int, v.color, v.size, v.price_minor
        from unnest($2::text[], $3::text[], $4::text[], $5::bigint[])
             with ordinality as v(sku, color, size, price_minor, ord)
        "#,
        id,
        &skus,
        &colors as &[Option<String>],
        &sizes as &[Option<String>],
        &prices as &[Option<i64>],
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Appends cache keys to the invalidation log, in commit order (see
/// [`INVALIDATION_LOCK`]); call last, right before commit.
pub async fn log_invalidation(tx: &mut WriteTx, keys: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query!("select pg_advisory_xact_lock($1)", INVALIDATION_LOCK)
        .execute(&mut **tx)
        .await?;
    sqlx::query!("insert into catalog_invalidations (keys) values ($1)", keys)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The newest invalidation id (where a tailer starts).
pub async fn last_invalidation_id(conn: &ReadConn) -> Result<i64, sqlx::Error> {
    let id =
        sqlx::query_scalar!(r#"select coalesce(max(id), 0) as "id!" from catalog_invalidations"#)
            .fetch_one(conn.pool())
            .await?;
    Ok(id)
}

/// Invalidations after `after_id`, oldest first.
pub async fn invalidations_after(
    conn: &ReadConn,
    after_id: i64,
    limit: i64,
) -> Result<Vec<(i64, Vec<String>)>, sqlx::Error> {
    let rows = sqlx::query!(
        "select id, keys from catalog_invalidations where id > $1 order by id limit $2",
        after_id,
        limit
    )
    .fetch_all(conn.pool())
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.keys)).collect())
}

/// A SKU that can be bought: a variant, or a product without variants,
/// with its current price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sellable {
    pub sku: String,
    pub product_id: i64,
    pub name: String,
    pub price_minor: i64,
    pub currency: String,
}

/// The sellable SKUs among `skus` (unknown ones are left out). Takes any
/// executor: carts read it from a replica, checkout from the primary.
/// Driven by `unnest` so every look-up is an index probe, whatever plan
/// the (generic) prepared statement gets.
pub async fn sellables<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    skus: &[String],
) -> Result<Vec<Sellable>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"
        select v.sku as "sku!", p.id as "product_id!", p.name as "name!",
               coalesce(v.price_minor, p.price_minor) as "price_minor!",
               p.currency::text as "currency!"
        from unnest($1::text[]) as wanted(sku)
        join product_variants v on v.sku = wanted.sku
        join products p on p.id = v.product_id
        union all
        select p.sku, p.id, p.name, p.price_minor, p.currency::text
        from unnest($1::text[]) as wanted(sku)
        join products p on p.sku = wanted.sku
        where not exists (select 1 from product_variants v where v.product_id = p.id)
        "#,
        skus
    )
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Sellable {
            sku: r.sku,
            product_id: r.product_id,
            name: r.name,
            price_minor: r.price_minor,
            currency: r.currency,
        })
        .collect())
}
