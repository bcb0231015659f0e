//! HMAC-SHA256 signatures of the edge's own cookies (bot challenges, the
//! waiting room's tickets and admissions), as lower-case hex, and their
//! constant-time comparison.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The signature of `parts`, in order, under `secret`.
pub fn hmac_hex(secret: &[u8], parts: &[&[u8]]) -> String {
    // HMAC accepts keys of any length.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether a presented signature is the expected one, in constant time.
pub fn matches(expected: &str, presented: &str) -> bool {
    bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}
