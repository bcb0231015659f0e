//! The deterministic demo catalog behind `meridian seed --products N`:
//! categories, brands, names, prices and variants drawn from a fixed-seed
//! generator, so the same N always gives the same catalog. Rows go in with
//! `COPY` in batches (100k products in seconds), with a progress bar.

use std::fmt::Write as _;
use std::str::FromStr;

use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use super::pricing::SEED_RATES;

/// The fixed seed of the generator.
const SEED: u64 = 0x6d65_7269_6469_616e;
/// Products per `COPY` batch.
const BATCH: u64 = 5_000;

pub const CATEGORIES: &[(&str, &str)] = &[
    ("shoes", "Shoes"),
    ("running", "Running"),
    ("outdoor", "Outdoor"),
    ("jackets", "Jackets"),
    ("shirts", "Shirts"),
    ("trousers", "Trousers"),
    ("bags", "Bags"),
    ("watches", "Watches"),
    ("headphones", "Headphones"),
    ("laptops", "Laptops"),
    ("phones", "Phones"),
    ("cameras", "Cameras"),
    ("kitchen", "Kitchen"),
    ("coffee", "Coffee"),
    ("furniture", "Furniture"),
    ("lighting", "Lighting"),
    ("books", "Books"),
    ("toys", "Toys"),
    ("games", "Games"),
    ("beauty", "Beauty"),
    ("garden", "Garden"),
    ("tools", "Tools"),
    ("cycling", "Cycling"),
    ("swimming", "Swimming"),
];

const BRANDS: &[&str] = &[
    "Northwind",
    "Aurora",
    "Kestrel",
    "Lumen",
    "Halcyon",
    "Brightline",
    "Cobalt",
    "Driftwood",
    "Evergreen",
    "Fathom",
    "Granite",
    "Harbor",
    "Ironbark",
    "Juniper",
    "Keystone",
    "Larkspur",
    "Meridian Basics",
    "Nimbus",
    "Oakridge",
    "Pinnacle",
    "Quartz",
    "Redwood",
    "Summit",
    "Tidewater",
];
const ADJECTIVES: &[&str] = &[
    "Classic",
    "Ultralight",
    "Everyday",
    "Pro",
    "Trail",
    "Urban",
    "Compact",
    "Premium",
    "Vintage",
    "Waterproof",
    "Wireless",
    "Ergonomic",
    "Heritage",
    "Performance",
    "Travel",
    "Studio",
];
const NOUNS: &[&str] = &[
    "Runner",
    "Parka",
    "Tote",
    "Chronograph",
    "Headset",
    "Notebook",
    "Kettle",
    "Grinder",
    "Lamp",
    "Chair",
    "Backpack",
    "Sneaker",
    "Tee",
    "Chino",
    "Camera",
    "Speaker",
    "Bottle",
    "Helmet",
];
const COLORS: &[&str] = &[
    "BLACK", "WHITE", "RED", "BLUE", "GREEN", "GREY", "NAVY", "SAND",
];
const SIZES: &[&str] = &["XS", "S", "M", "L", "XL"];

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("invalid database URL: {0}")]
    Url(#[source] sqlx::Error),
    #[error("the catalog already has {0} products; seeding needs an empty catalog")]
    NotEmpty(i64),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedReport {
    pub products: u64,
    pub variants: u64,
    pub categories: u64,
}

/// Seeds an empty, migrated catalog on the primary at `primary_url`.
pub async fn seed(
    primary_url: &str,
    products: u64,
    progress: bool,
) -> Result<SeedReport, SeedError> {
    let options = PgConnectOptions::from_str(primary_url).map_err(SeedError::Url)?;
    let mut conn = PgConnection::connect_with(&options).await?;
    let existing = sqlx::query_scalar!(r#"select count(*) as "count!" from products"#)
        .fetch_one(&mut conn)
        .await?;
    if existing > 0 {
        return Err(SeedError::NotEmpty(existing));
    }
    let bar = if progress {
        let bar = ProgressBar::new(products);
        bar.set_style(
            ProgressStyle::with_template(
                "seeding {bar:40} {pos}/{len} products ({per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };

    let mut tx = conn.begin().await?;
    for (position, (slug, name)) in CATEGORIES.iter().enumerate() {
        sqlx::query!(
            "insert into categories (slug, name, position) values ($1, $2, $3) on conflict (slug) do nothing",
            slug,
            name,
            position as i32
        )
        .execute(&mut *tx)
        .await?;
    }
    for (currency, rate) in SEED_RATES {
        sqlx::query!(
            "insert into fx_rates (currency, per_usd_nanos) values ($1, $2)
             on conflict (currency) do update set per_usd_nanos = excluded.per_usd_nanos, updated_at = now()",
            currency,
            rate
        )
        .execute(&mut *tx)
        .await?;
    }

    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut variants_total = 0;
    let mut first = 1;
    while first <= products {
        let last = (first + BATCH - 1).min(products);
        let mut product_rows = String::with_capacity(((last - first + 1) * 160) as usize);
        let mut variant_rows = String::with_capacity(((last - first + 1) * 200) as usize);
        for id in first..=last {
            variants_total += generate(&mut rng, id, &mut product_rows, &mut variant_rows);
        }
        copy(
            &mut tx,
            "copy products (id, sku, name, brand, category, description, price_minor, currency) from stdin",
            product_rows,
        )
        .await?;
        copy(
            &mut tx,
            "copy product_variants (sku, product_id, position, color, size, price_minor) from stdin",
            variant_rows,
        )
        .await?;
        bar.inc(last - first + 1);
        first = last + 1;
    }
    // Stock for every sellable SKU (a variant, or a product without
    // variants): 20 to 500 units, fixed per SKU.
    sqlx::query!(
        r#"
        insert into inventory (sku, on_hand)
        select v.sku, 20 + abs(hashtext(v.sku)) % 481 from product_variants v
        union all
        select p.sku, 20 + abs(hashtext(p.sku)) % 481 from products p
        where not exists (select 1 from product_variants v where v.product_id = p.id)
        on conflict (sku) do nothing
        "#
    )
    .execute(&mut *tx)
    .await?;
    // Zero to three reviews per product, fixed per SKU.
    sqlx::query!(
        r#"
        insert into product_reviews (product_id, author, rating, title, body)
        select p.id,
               (array['Ann', 'Bo', 'Chen', 'Dara', 'Eli', 'Femi'])[1 + abs(hashtext(p.sku || n)) % 6],
               1 + abs(hashtext(p.sku || n || 'r')) % 5,
               (array['Does the job', 'Love it', 'Not for me', 'Great value', 'As described'])[1 + abs(hashtext(p.sku || n || 't')) % 5],
               'Review ' || n || ' of the ' || p.name || '.'
        from products p, generate_series(1, abs(hashtext(p.sku)) % 4) as n
        "#
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "select setval(pg_get_serial_sequence('products', 'id'), greatest((select max(id) from products), 1))"
    )
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query!(
        "insert into catalog_invalidations (keys) values (array['products', 'categories'])"
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    bar.finish_and_clear();
    Ok(SeedReport {
        products,
        variants: variants_total,
        categories: CATEGORIES.len() as u64,
    })
}

/// Appends one product (and its variants) as COPY text rows; returns the
/// number of variants.
fn generate(rng: &mut ChaCha8Rng, id: u64, products: &mut String, variants: &mut String) -> u64 {
    let pick = |rng: &mut ChaCha8Rng, list: &[&'static str]| list[rng.random_range(0..list.len())];
    let category = CATEGORIES[rng.random_range(0..CATEGORIES.len())].0;
    let brand = pick(rng, BRANDS);
    let name = format!("{} {} {}", brand, pick(rng, ADJECTIVES), pick(rng, NOUNS));
    let price: i64 = rng.random_range(199..=99_999);
    // Whole-ish prices look like real ones: .99 endings.
    let price = price - price % 100 + 99;
    let _ = writeln!(
        products,
        "{id}\tP{id:07}\t{name}\t{brand}\t{category}\tThe {name}, from our {category} range.\t{price}\tUSD"
    );
    let count = rng.random_range(0..=4u64);
    let color_start = rng.random_range(0..COLORS.len());
    for position in 0..count {
        let color = COLORS[(color_start + position as usize) % COLORS.len()];
        let size = SIZES[position as usize % SIZES.len()];
        let override_price = if rng.random_bool(0.2) {
            (price + 500).to_string()
        } else {
            "\\N".to_string()
        };
        let _ = writeln!(
            variants,
            "P{id:07}-{color}-{size}\t{id}\t{position}\t{color}\t{size}\t{override_price}"
        );
    }
    count
}

async fn copy(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    statement: &str,
    rows: String,
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut copy = tx.copy_in_raw(statement).await?;
    copy.send(rows.into_bytes()).await?;
    copy.finish().await?;
    Ok(())
}
