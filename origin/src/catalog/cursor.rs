//! Opaque pagination cursors: base64url of `v1:<last id>`. A cursor that
//! does not decode is the client's error (400), never a server error.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::problem::ApiError;

pub fn encode(last_id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("v1:{last_id}"))
}

pub fn decode(cursor: &str) -> Result<i64, ApiError> {
    let bad = || ApiError::BadRequest("`cursor` is not a cursor this API issued".into());
    if cursor.len() > 64 {
        return Err(bad());
    }
    let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = std::str::from_utf8(&raw).map_err(|_| bad())?;
    let id = text
        .strip_prefix("v1:")
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| *n >= 0)
        .ok_or_else(bad)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        assert_eq!(decode(&encode(42)).unwrap(), 42);
        for bad in ["", "!!!", "djE6", "djE6LTE", "eDp5", &"a".repeat(100)] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }
}
