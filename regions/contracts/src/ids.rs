//! Numeric resource ids in paths (`/v1/products/{id}`,
//! `/v1/flash-sales/{id}/claim`), parsed strictly in one place for every
//! process that reads them: the origin's routes and the edge's waiting
//! room must agree on which resource a path names, or a spelling the
//! origin accepts and the edge does not know (`+1`, `01`) skips the queue
//! or splits the cache.
//!
//! The one spelling accepted: canonical decimal — ASCII digits, no sign,
//! no leading zero, no whitespace, from 1 to `i64::MAX`. Percent-decoding
//! is the caller's (axum decodes path segments; the edge decodes the
//! segment before parsing), so `%31` names what `1` names everywhere.

use std::fmt;

/// A positive id in its one canonical spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceId(i64);

/// Why a path segment is not an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("an id is not empty")]
    Empty,
    #[error("an id is written with the digits 0-9 only (no sign, space or other character)")]
    NotDigits,
    #[error("an id has no leading zero")]
    LeadingZero,
    #[error("an id is between 1 and 9223372036854775807")]
    OutOfRange,
}

impl ResourceId {
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let bytes = raw.as_bytes();
        match bytes {
            [] => return Err(IdError::Empty),
            _ if !bytes.iter().all(u8::is_ascii_digit) => return Err(IdError::NotDigits),
            [b'0', ..] => {
                return Err(if bytes.len() == 1 {
                    IdError::OutOfRange
                } else {
                    IdError::LeadingZero
                });
            }
            _ => {}
        }
        raw.parse::<i64>()
            .map(ResourceId)
            .map_err(|_| IdError::OutOfRange)
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_decimal_is_an_id() {
        assert_eq!(ResourceId::parse("1").map(ResourceId::get), Ok(1));
        assert_eq!(
            ResourceId::parse("9223372036854775807").map(ResourceId::get),
            Ok(i64::MAX)
        );
        for (raw, error) in [
            ("", IdError::Empty),
            ("+1", IdError::NotDigits),
            ("-1", IdError::NotDigits),
            (" 1", IdError::NotDigits),
            ("1 ", IdError::NotDigits),
            ("%31", IdError::NotDigits),
            ("1e3", IdError::NotDigits),
            ("１", IdError::NotDigits),
            ("01", IdError::LeadingZero),
            ("00", IdError::LeadingZero),
            ("0", IdError::OutOfRange),
            ("9223372036854775808", IdError::OutOfRange),
            ("99999999999999999999999", IdError::OutOfRange),
        ] {
            assert_eq!(ResourceId::parse(raw), Err(error), "{raw:?}");
        }
    }

    #[test]
    fn every_positive_id_round_trips_through_its_spelling() {
        for id in [1i64, 7, 10, 99, 100, 12_345, i64::MAX / 3, i64::MAX] {
            assert_eq!(
                ResourceId::parse(&id.to_string()).map(ResourceId::get),
                Ok(id)
            );
        }
    }
}
