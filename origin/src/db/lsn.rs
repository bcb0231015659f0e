//! PostgreSQL write-ahead-log positions (`pg_lsn`), used for replica lag
//! and as the read-your-writes token handed to clients.

use std::fmt;
use std::str::FromStr;

/// A WAL position. Ordered; `0/0` is the smallest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a WAL position (expected the form 16/B374D848)")]
pub struct LsnParseError(String);

impl FromStr for Lsn {
    type Err = LsnParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || LsnParseError(s.chars().take(40).collect());
        let (hi, lo) = s.split_once('/').ok_or_else(err)?;
        if hi.is_empty() || lo.is_empty() || hi.len() > 8 || lo.len() > 8 {
            return Err(err());
        }
        let hi = u32::from_str_radix(hi, 16).map_err(|_| err())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| err())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_orders() {
        let a: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(a.to_string(), "16/B374D848");
        let b: Lsn = "17/0".parse().unwrap();
        assert!(a < b);
        assert_eq!("0/0".parse::<Lsn>().unwrap(), Lsn(0));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "/",
            "1/",
            "/1",
            "zz/1",
            "1/2/3",
            "123456789/0",
            "1:2",
            "-1/0",
        ] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad}");
        }
    }
}
