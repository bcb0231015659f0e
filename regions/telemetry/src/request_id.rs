//! `X-Request-Id`: one id per request, the same in every log line and
//! response about it. The edge takes the client's when it is sane (a short
//! token, as UUIDs, ULIDs and hex ids are) and makes one otherwise; origins
//! receive it from the edge and echo it; a request reaching an origin
//! without one gets one there.

use std::io::Write as _;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};

/// The header's name as text (pingora's header maps take `&'static str`).
pub const HEADER: &str = "x-request-id";

/// The header.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static(HEADER);

/// Longest request id taken as it is.
pub const MAX_LEN: usize = 64;

/// Whether `value` can be used as a request id as it is: 1 to
/// [`MAX_LEN`] letters, digits, `-`, `_`, `.` or `:` — nothing a log
/// reader or a header could misread.
pub fn is_sane(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// A new request id: 32 lowercase hex digits (128 random bits), in one
/// small allocation that clones without copying.
pub fn generate() -> HeaderValue {
    let mut digits = [0u8; 32];
    let id = u128::from_be_bytes(RandomIdGenerator::default().new_trace_id().to_bytes());
    // 32 hex digits fill the 32 bytes exactly: the write cannot fail.
    let _ = write!(&mut digits[..], "{id:032x}");
    HeaderValue::from_maybe_shared(Bytes::from_owner(digits))
        .unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// The request's id: the one in `headers` when sane, else a new one;
/// `true` when it is new.
pub fn of(headers: &HeaderMap) -> (HeaderValue, bool) {
    match headers.get(X_REQUEST_ID) {
        Some(value) if is_sane(value) => (value.clone(), false),
        _ => (generate(), true),
    }
}

/// The id as text for log lines (always ASCII: checked or generated).
pub fn as_str(value: &HeaderValue) -> &str {
    value.to_str().unwrap_or("-")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn common_ids_are_taken_as_they_are() {
        for id in [
            "0192f0c4-5e6b-7a8c-9d0e-1f2a3b4c5d6e",
            "01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "req_1.2:3",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(X_REQUEST_ID, HeaderValue::from_static(id));
            assert_eq!(of(&headers), (HeaderValue::from_static(id), false));
        }
    }

    #[test]
    fn generated_ids_are_32_hex_digits_and_differ() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        for id in [a, b] {
            assert_eq!(id.len(), 32);
            assert!(is_sane(&id));
            assert!(as_str(&id).bytes().all(|b| b.is_ascii_hexdigit()));
        }
        let (id, new) = of(&HeaderMap::new());
        assert!(new);
        assert!(is_sane(&id));
    }

    proptest! {
        #[test]
        fn anything_else_is_replaced(raw in proptest::collection::vec(any::<u8>(), 0..100)) {
            if let Ok(value) = HeaderValue::from_bytes(&raw) {
                let mut headers = HeaderMap::new();
                headers.insert(X_REQUEST_ID, value.clone());
                let (id, new) = of(&headers);
                prop_assert!(is_sane(&id));
                prop_assert_eq!(new, !is_sane(&value));
                let sane = !raw.is_empty() && raw.len() <= MAX_LEN
                    && raw.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b));
                prop_assert_eq!(is_sane(&value), sane);
            }
        }
    }
}
