//! Helpers for the access-log lines (one per request, [`crate::ACCESS_TARGET`]):
//! bounded values only — no path, no query string, no user, no header
//! value other than the checked request id.

use std::time::Duration;

/// The request method as a bounded label (`other` for extension methods).
pub fn method(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::CONNECT => "CONNECT",
        http::Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// A duration in milliseconds, to the microsecond.
pub fn millis(duration: Duration) -> f64 {
    (duration.as_micros() as f64) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(method(&http::Method::GET), "GET");
        let odd = http::Method::from_bytes(b"PROPFIND").unwrap_or(http::Method::GET);
        assert_eq!(method(&odd), "other");
        assert_eq!(millis(Duration::from_micros(1_234)), 1.234);
    }
}
