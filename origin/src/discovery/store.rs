//! The discovery queries; every one runs on a replica (`ReadConn`).

use crate::catalog::model::ProductSummary;
use crate::catalog::store::SummaryRow;
use crate::db::ReadConn;

/// A product's category, if it exists.
pub async fn category_of(conn: &ReadConn, id: i64) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar!("select category from products where id = $1", id)
        .fetch_optional(conn.pool())
        .await
}

/// Products like `id`: the same category, nearest in price.
pub async fn recommendations(
    conn: &ReadConn,
    id: i64,
    category: &str,
    limit: i64,
) -> Result<Vec<ProductSummary>, sqlx::Error> {
    let rows = sqlx::query_as!(
        SummaryRow,
        r#"
        select p.id, p.sku, p.name, p.brand, p.category, p.price_minor, p.currency
        from products p
        where p.category = $2 and p.id <> $1
        order by abs(p.price_minor - (select price_minor from products where id = $1)), p.id
        limit $3
        "#,
        id,
        category,
        limit
    )
    .fetch_all(conn.pool())
    .await?;
    Ok(rows.into_iter().map(ProductSummary::from).collect())
}

/// One suggestion: a product name and a product that has it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Suggestion {
    pub name: String,
    pub product_id: i64,
}

/// Product names starting with `prefix` (case-insensitive), in order.
pub async fn suggestions(
    conn: &ReadConn,
    prefix: &str,
    limit: i64,
) -> Result<Vec<Suggestion>, sqlx::Error> {
    let pattern = format!("{}%", like_escape(&prefix.to_lowercase()));
    let rows = sqlx::query!(
        r#"
        select name, min(id) as "product_id!"
        from products
        where lower(name) like $1
        group by name
        order by lower(name), name
        limit $2
        "#,
        pattern,
        limit
    )
    .fetch_all(conn.pool())
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Suggestion {
            name: r.name,
            product_id: r.product_id,
        })
        .collect())
}

/// `text` as a literal `LIKE` pattern (the default escape is `\`).
fn like_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// One review.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Review {
    pub id: i64,
    pub author: String,
    pub rating: i16,
    pub title: String,
    pub body: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// A product's reviews: how many, their average rating, the newest
/// `limit`.
pub async fn reviews(
    conn: &ReadConn,
    id: i64,
    limit: i64,
) -> Result<(i64, Option<f64>, Vec<Review>), sqlx::Error> {
    let summary = sqlx::query!(
        r#"select count(*) as "count!", avg(rating)::float8 as average from product_reviews where product_id = $1"#,
        id
    )
    .fetch_one(conn.pool())
    .await?;
    let items = sqlx::query_as!(
        Review,
        r#"
        select id, author, rating, title, body, created_at
        from product_reviews where product_id = $1
        order by id desc
        limit $2
        "#,
        id,
        limit
    )
    .fetch_all(conn.pool())
    .await?;
    Ok((summary.count, summary.average, items))
}

#[cfg(test)]
mod tests {
    #[test]
    fn like_patterns_are_literal() {
        assert_eq!(super::like_escape(r"50%_off\"), r"50\%\_off\\");
    }
}
