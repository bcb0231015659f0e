//! Display prices in another currency (seed 002's PricingService): FX rates
//! come from the `fx_rates` table through the tiered cache (TTL), and
//! conversion is exact integer arithmetic rounded half away from zero to the
//! target currency's minor units (JPY 0 digits, IQD 3).

use std::collections::HashMap;

use super::model::{CurrencyCode, Money, PriceView};
use crate::problem::ApiError;

/// Units of each currency per US dollar, times 10^9.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct FxTable {
    pub per_usd_nanos: HashMap<String, i64>,
}

impl FxTable {
    /// Converts `minor` units of `from` into `to`.
    pub fn convert(&self, minor: i64, from: &str, to: CurrencyCode) -> Result<Money, ApiError> {
        if from == to.code() {
            return Money::new(minor, to);
        }
        let from_code = CurrencyCode::parse(from)?;
        let rate = |code: &str| {
            self.per_usd_nanos
                .get(code)
                .copied()
                .ok_or_else(|| ApiError::Unprocessable(format!("no exchange rate for {code}")))
        };
        let (from_rate, to_rate) = (rate(from)?, rate(to.code())?);
        // minor_to = minor_from * to_rate * 10^e_to / (from_rate * 10^e_from)
        let numerator = i128::from(minor) * i128::from(to_rate) * 10_i128.pow(to.exponent());
        let denominator = i128::from(from_rate) * 10_i128.pow(from_code.exponent());
        let rounded = (2 * numerator + denominator) / (2 * denominator);
        let converted = i64::try_from(rounded)
            .map_err(|_| ApiError::Unprocessable("converted price is out of range".into()))?;
        Ok(Money {
            minor: converted,
            currency: to,
        })
    }

    pub fn convert_view(&self, price: &PriceView, to: CurrencyCode) -> Result<PriceView, ApiError> {
        Ok(self
            .convert(price.amount_minor, &price.currency, to)?
            .view())
    }
}

/// The rates the demo catalog is seeded with (units per USD).
pub const SEED_RATES: &[(&str, i64)] = &[
    ("USD", 1_000_000_000),
    ("EUR", 920_000_000),
    ("GBP", 790_000_000),
    ("CHF", 880_000_000),
    ("JPY", 151_500_000_000),
    ("KRW", 1_330_000_000_000),
    ("SGD", 1_350_000_000),
    ("AUD", 1_520_000_000),
    ("CAD", 1_360_000_000),
    ("BRL", 5_000_000_000),
    ("MXN", 17_100_000_000),
    ("INR", 83_200_000_000),
    ("IQD", 1_310_000_000_000),
    ("KWD", 307_000_000),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> FxTable {
        FxTable {
            per_usd_nanos: SEED_RATES
                .iter()
                .map(|(c, r)| (c.to_string(), *r))
                .collect(),
        }
    }

    fn code(c: &str) -> CurrencyCode {
        CurrencyCode::parse(c).unwrap()
    }

    #[test]
    fn converts_with_target_subunits() {
        let fx = table();
        // 19.99 USD -> 18.39 EUR (18.3908 rounded)
        assert_eq!(fx.convert(1999, "USD", code("EUR")).unwrap().minor, 1839);
        // 19.99 USD -> 3028 JPY (3028.485 rounded), no subunits
        assert_eq!(fx.convert(1999, "USD", code("JPY")).unwrap().minor, 3028);
        // 19.99 USD -> 26186.9 IQD -> 26186.900 in fils (3 digits)
        assert_eq!(
            fx.convert(1999, "USD", code("IQD")).unwrap().minor,
            26_186_900
        );
        assert_eq!(fx.convert(1999, "USD", code("USD")).unwrap().minor, 1999);
        // Cross rate through USD: 1000 JPY -> 6.07 EUR
        assert_eq!(fx.convert(1000, "JPY", code("EUR")).unwrap().minor, 607);
    }

    #[test]
    fn missing_rate_is_a_client_error() {
        let fx = FxTable::default();
        assert!(matches!(
            fx.convert(100, "USD", code("EUR")),
            Err(ApiError::Unprocessable(_))
        ));
    }
}
