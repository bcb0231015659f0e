//! Catalog domain types. Inputs are parsed into types that can only hold
//! valid values (`Sku`, `Money`, `CurrencyCode`, `ProductId`), so the rest of
//! the code never re-checks them.

use serde::{Deserialize, Serialize};

use crate::problem::ApiError;

/// Largest price accepted, in minor units (10 billion in a 2-decimal currency).
pub const MAX_PRICE_MINOR: i64 = 1_000_000_000_000;
/// Most variants one product may have.
pub const MAX_VARIANTS: usize = 100;

/// A positive product id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ProductId(i64);

impl ProductId {
    /// The shared strict parser ([`meridian_contracts::ids`]): `01`, `+1`
    /// and ` 1` are not product 1.
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        meridian_contracts::ids::ResourceId::parse(raw)
            .map(|id| ProductId(id.get()))
            .map_err(|error| {
                ApiError::BadRequest(format!(
                    "`{}` is not a product id: {error}",
                    raw.chars().take(40).collect::<String>()
                ))
            })
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// An ISO 4217 currency with a known number of minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CurrencyCode(iso_currency::Currency);

impl CurrencyCode {
    pub fn parse(code: &str) -> Result<Self, ApiError> {
        iso_currency::Currency::from_code(code)
            .filter(|c| c.exponent().is_some())
            .map(CurrencyCode)
            .ok_or_else(|| {
                ApiError::Unprocessable(format!(
                    "`{}` is not an ISO 4217 currency with minor units",
                    code.chars().take(10).collect::<String>()
                ))
            })
    }

    pub fn code(self) -> &'static str {
        self.0.code()
    }

    /// Digits after the decimal point (USD 2, JPY 0, IQD 3).
    pub fn exponent(self) -> u32 {
        u32::from(self.0.exponent().unwrap_or(2))
    }
}

/// An amount in integer minor units of a currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Money {
    pub minor: i64,
    pub currency: CurrencyCode,
}

impl Money {
    pub fn new(minor: i64, currency: CurrencyCode) -> Result<Self, ApiError> {
        if !(0..=MAX_PRICE_MINOR).contains(&minor) {
            return Err(ApiError::Unprocessable(format!(
                "price must be between 0 and {MAX_PRICE_MINOR} minor units, got {minor}"
            )));
        }
        Ok(Money { minor, currency })
    }

    /// `1999` USD → `"19.99"`, `1999` JPY → `"1999"`, `1999` IQD → `"1.999"`.
    pub fn formatted(self) -> String {
        let exp = self.currency.exponent();
        if exp == 0 {
            return self.minor.to_string();
        }
        let scale = 10_i64.pow(exp);
        format!(
            "{}.{:0width$}",
            self.minor / scale,
            self.minor % scale,
            width = exp as usize
        )
    }

    pub fn view(self) -> PriceView {
        PriceView {
            amount_minor: self.minor,
            currency: self.currency.code().to_string(),
            formatted: self.formatted(),
        }
    }
}

/// A SKU: 1–64 of `A-Z 0-9 -`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sku(String);

impl Sku {
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && !raw.starts_with('-')
            && raw
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Sku(raw.to_string()))
        } else {
            Err(ApiError::Unprocessable(format!(
                "`{}` is not a SKU (1-64 of A-Z, 0-9 and -)",
                raw.chars().take(70).collect::<String>()
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A category slug (`running-shoes`).
pub fn parse_slug(raw: &str) -> Result<String, ApiError> {
    let ok = !raw.is_empty()
        && raw.len() <= 63
        && !raw.starts_with('-')
        && raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(raw.to_string())
    } else {
        Err(ApiError::BadRequest(format!(
            "`{}` is not a category slug (lowercase letters, digits, -)",
            raw.chars().take(70).collect::<String>()
        )))
    }
}

fn text(field: &str, raw: &str, max: usize, required: bool) -> Result<String, ApiError> {
    let value = raw.trim();
    if required && value.is_empty() {
        return Err(ApiError::Unprocessable(format!(
            "`{field}` must not be empty"
        )));
    }
    if value.chars().count() > max {
        return Err(ApiError::Unprocessable(format!(
            "`{field}` is longer than {max} characters"
        )));
    }
    if value.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ApiError::Unprocessable(format!(
            "`{field}` must not contain control characters"
        )));
    }
    Ok(value.to_string())
}

/// The admin API's product body, as sent. It takes what `GET
/// /v1/products/{id}` returns: the read-only and derived fields (`id`,
/// `version`, `updated_at`, `price.formatted`, `variants[].price`) are
/// ignored when they agree with the write and refused when they
/// contradict it; `version` is also a precondition (412 when stale).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductInput {
    /// Read-only: must be the path's id when given.
    #[serde(default)]
    pub id: Option<i64>,
    /// The version the write is based on: a precondition when given.
    #[serde(default)]
    pub version: Option<i64>,
    /// Read-only; ignored (the write sets it).
    #[serde(default)]
    pub updated_at: Option<chrono::DateTime<chrono::Utc>>,
    pub sku: String,
    pub name: String,
    pub brand: String,
    pub category: String,
    #[serde(default)]
    pub description: String,
    pub price: PriceInput,
    #[serde(default)]
    pub variants: Vec<VariantInput>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceInput {
    pub amount_minor: i64,
    pub currency: String,
    /// Derived: must read as `amount_minor` formatted in `currency`.
    #[serde(default)]
    pub formatted: Option<String>,
}

impl PriceInput {
    /// The money this price names; `formatted`, when given, must agree.
    fn money(&self, field: &str) -> Result<Money, ApiError> {
        let currency = CurrencyCode::parse(&self.currency)?;
        let money = Money::new(self.amount_minor, currency)?;
        if let Some(formatted) = &self.formatted
            && *formatted != money.formatted()
        {
            return Err(ApiError::Unprocessable(format!(
                "{field}.formatted `{}` contradicts {} {} (it reads `{}`); it is derived — leave it out or send it as read",
                formatted.chars().take(40).collect::<String>(),
                self.amount_minor,
                currency.code(),
                money.formatted()
            )));
        }
        Ok(money)
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VariantInput {
    pub sku: String,
    #[serde(default)]
    pub color: Option<String>,
    #[serde(default)]
    pub size: Option<String>,
    /// Overrides the product price for this variant (same currency).
    #[serde(default)]
    pub price_minor: Option<i64>,
    /// The variant's price as `GET` shows it (the product's unless
    /// overridden): agrees with `price_minor` when both are given; alone,
    /// a price other than the product's is the override.
    #[serde(default)]
    pub price: Option<PriceInput>,
}

/// A product body that passed validation.
#[derive(Debug, Clone)]
pub struct NewProduct {
    pub sku: Sku,
    pub name: String,
    pub brand: String,
    pub category: String,
    pub description: String,
    pub price: Money,
    pub variants: Vec<NewVariant>,
}

#[derive(Debug, Clone)]
pub struct NewVariant {
    pub sku: Sku,
    pub color: Option<String>,
    pub size: Option<String>,
    pub price_minor: Option<i64>,
}

impl ProductInput {
    pub fn validate(self) -> Result<NewProduct, ApiError> {
        let price = self.price.money("price")?;
        let currency = price.currency;
        if self.variants.len() > MAX_VARIANTS {
            return Err(ApiError::Unprocessable(format!(
                "a product has at most {MAX_VARIANTS} variants"
            )));
        }
        let mut variants: Vec<NewVariant> = Vec::with_capacity(self.variants.len());
        for (i, v) in self.variants.into_iter().enumerate() {
            let sku = Sku::parse(&v.sku)?;
            if variants.iter().any(|other| other.sku == sku) {
                return Err(ApiError::Unprocessable(format!(
                    "variant SKU `{}` appears twice",
                    sku.as_str()
                )));
            }
            let shown = v
                .price
                .as_ref()
                .map(|p| p.money(&format!("variants[{i}].price")))
                .transpose()?;
            if let Some(shown) = shown {
                if shown.currency != currency {
                    return Err(ApiError::Unprocessable(format!(
                        "variants[{i}].price is in {}, the product in {}: a variant is priced in the product's currency",
                        shown.currency.code(),
                        currency.code()
                    )));
                }
                if v.price_minor.is_some_and(|minor| minor != shown.minor) {
                    return Err(ApiError::Unprocessable(format!(
                        "variants[{i}].price ({}) contradicts variants[{i}].price_minor",
                        shown.minor
                    )));
                }
            }
            // The override: given, or read off a shown price that is not
            // the product's.
            let price_minor = v
                .price_minor
                .or(shown.filter(|s| s.minor != price.minor).map(|s| s.minor));
            if let Some(minor) = price_minor {
                Money::new(minor, currency)?;
            }
            let color = v
                .color
                .map(|c| text(&format!("variants[{i}].color"), &c, 40, true))
                .transpose()?;
            let size = v
                .size
                .map(|s| text(&format!("variants[{i}].size"), &s, 20, true))
                .transpose()?;
            variants.push(NewVariant {
                sku,
                color,
                size,
                price_minor,
            });
        }
        Ok(NewProduct {
            sku: Sku::parse(&self.sku)?,
            name: text("name", &self.name, 200, true)?,
            brand: text("brand", &self.brand, 100, true)?,
            category: parse_slug(&self.category)
                .map_err(|e| ApiError::Unprocessable(e.to_string()))?,
            description: text("description", &self.description, 5000, false)?,
            price,
            variants,
        })
    }
}

/// A price as shown to shoppers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PriceView {
    pub amount_minor: i64,
    pub currency: String,
    pub formatted: String,
}

/// A product as served by `GET /v1/products/{id}` (and cached, serialized).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProductView {
    pub id: i64,
    pub sku: String,
    pub name: String,
    pub brand: String,
    pub category: String,
    pub description: String,
    pub price: PriceView,
    pub variants: Vec<VariantView>,
    pub version: i64,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VariantView {
    pub sku: String,
    pub color: Option<String>,
    pub size: Option<String>,
    pub price: PriceView,
}

/// One product in a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProductSummary {
    pub id: i64,
    pub sku: String,
    pub name: String,
    pub brand: String,
    pub category: String,
    pub price: PriceView,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CategoryView {
    pub slug: String,
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn money(minor: i64, code: &str) -> Money {
        Money::new(minor, CurrencyCode::parse(code).unwrap()).unwrap()
    }

    #[test]
    fn formats_with_currency_subunits() {
        assert_eq!(money(1999, "USD").formatted(), "19.99");
        assert_eq!(money(5, "EUR").formatted(), "0.05");
        assert_eq!(money(1999, "JPY").formatted(), "1999");
        assert_eq!(money(1999, "IQD").formatted(), "1.999");
        assert_eq!(money(0, "KWD").formatted(), "0.000");
    }

    #[test]
    fn rejects_bad_money_and_ids() {
        let usd = CurrencyCode::parse("USD").unwrap();
        assert!(Money::new(-1, usd).is_err());
        assert!(Money::new(MAX_PRICE_MINOR + 1, usd).is_err());
        assert!(CurrencyCode::parse("XXX").is_err() || CurrencyCode::parse("ZZZ").is_err());
        assert!(CurrencyCode::parse("usd").is_err());
        for bad in ["0", "-3", "abc", "1.5", "99999999999999999999", ""] {
            assert!(ProductId::parse(bad).is_err(), "{bad}");
        }
        assert!(Sku::parse("ab").is_err());
        assert!(Sku::parse("AB-12").is_ok());
    }

    fn input(variants: serde_json::Value) -> ProductInput {
        serde_json::from_value(serde_json::json!({
            "id": 7, "version": 3, "updated_at": "2026-12-01T00:00:00Z",
            "sku": "P1", "name": "N", "brand": "B", "category": "shoes",
            "price": { "amount_minor": 1000, "currency": "USD", "formatted": "10.00" },
            "variants": variants,
        }))
        .unwrap()
    }

    #[test]
    fn shown_variant_prices_read_back_as_the_overrides_they_came_from() {
        let product = input(serde_json::json!([
            { "sku": "V1", "price": { "amount_minor": 1000, "currency": "USD", "formatted": "10.00" } },
            { "sku": "V2", "price": { "amount_minor": 1200, "currency": "USD", "formatted": "12.00" } },
            { "sku": "V3", "price_minor": 900, "price": { "amount_minor": 900, "currency": "USD" } },
        ]))
        .validate()
        .unwrap();
        let overrides: Vec<Option<i64>> = product.variants.iter().map(|v| v.price_minor).collect();
        assert_eq!(overrides, [None, Some(1200), Some(900)]);
        for (variants, field) in [
            (
                serde_json::json!([{ "sku": "V1", "price": { "amount_minor": 1000, "currency": "EUR" } }]),
                "currency",
            ),
            (
                serde_json::json!([{ "sku": "V1", "price_minor": 5, "price": { "amount_minor": 6, "currency": "USD" } }]),
                "contradicts",
            ),
            (
                serde_json::json!([{ "sku": "V1", "price": { "amount_minor": 1000, "currency": "USD", "formatted": "1.00" } }]),
                "formatted",
            ),
        ] {
            let refused = input(variants).validate().unwrap_err().to_string();
            assert!(refused.contains(field), "{field}: {refused}");
        }
    }
}
