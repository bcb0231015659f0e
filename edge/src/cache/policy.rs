//! Cache policy: which responses may be stored, for how long, and under
//! which variance.
//!
//! - Freshness follows the origin's `Cache-Control` (`s-maxage` over
//!   `max-age`, `no-cache` stored but always revalidated, `no-store` and
//!   `private` never stored), then `Expires`; there is no heuristic
//!   freshness, so a response without either is not stored.
//! - A request carrying credentials (`Authorization`, a session cookie) is
//!   never answered from the cache, and its response is stored only when
//!   the origin marks it explicitly shareable (`public`, `s-maxage`,
//!   `must-revalidate`; RFC 9111 §3.5).
//! - A response with `Set-Cookie` is stored only when explicitly `public`,
//!   and then without the cookie.
//! - `Vary` may name only allow-listed request headers; anything else
//!   (including `*`) makes the response uncacheable, which bounds the number
//!   of variants per URL. Allow-listed values are reduced to a few classes.
//!   Headers that make a request bypass the cache (`bypass`) may appear in
//!   `Vary` too: cached variants are only ever used by requests without them.

use http::StatusCode;
use pingora::cache::cache_control::CacheControl;
use pingora::cache::filters::resp_cacheable;
use pingora::cache::key::HashBinary;
use pingora::cache::{CacheMeta, CacheMetaDefaults, NoCacheReason, RespCacheable, VarianceBuilder};
use pingora::http::{RequestHeader, ResponseHeader};

/// No heuristic freshness: only what the origin says.
fn no_default_freshness(_: StatusCode) -> Option<std::time::Duration> {
    None
}
const DEFAULTS: CacheMetaDefaults = CacheMetaDefaults::new(no_default_freshness, 0, 0);

/// Statuses worth storing (RFC 9110 §15.1's heuristically cacheable set
/// minus partial content, which the cache builds from full responses).
fn storable_status(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// The decision for one upstream response.
pub fn decide(
    response: &ResponseHeader,
    credentialed: bool,
    vary_allow: &[String],
    bypass: &[String],
) -> RespCacheable {
    let uncacheable = |why: &'static str| RespCacheable::Uncacheable(NoCacheReason::Custom(why));
    if !storable_status(response.status) {
        return uncacheable("status");
    }
    let cache_control = CacheControl::from_resp_headers(response);
    if let Some(vary) = vary_names(response).into_iter().find(|name| {
        !vary_allow
            .iter()
            .chain(bypass)
            .any(|a| a.eq_ignore_ascii_case(name))
    }) {
        tracing::debug!(%vary, "Vary names a header outside the allow-list; not stored");
        return uncacheable("vary");
    }
    let sets_cookie = response.headers.contains_key(http::header::SET_COOKIE);
    if sets_cookie && !cache_control.as_ref().is_some_and(CacheControl::public) {
        return uncacheable("set-cookie");
    }
    match resp_cacheable(
        cache_control.as_ref(),
        response.clone(),
        credentialed,
        &DEFAULTS,
    ) {
        RespCacheable::Cacheable(mut meta) => {
            // The stored copy never hands one shopper's cookie to another.
            meta.response_header_mut()
                .remove_header(&http::header::SET_COOKIE);
            RespCacheable::Cacheable(meta)
        }
        other => other,
    }
}

/// Lowercased header names in the response's `Vary`.
fn vary_names(response: &ResponseHeader) -> Vec<String> {
    response
        .headers
        .get_all(http::header::VARY)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("*").split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect()
}

/// The variance of `request` for a stored response's `Vary` (ignoring
/// `bypass` headers), or `None`.
pub fn variance(
    meta: &CacheMeta,
    request: &RequestHeader,
    bypass: &[String],
) -> Option<HashBinary> {
    let mut names = vary_names(meta.response_header());
    names.retain(|name| !bypass.iter().any(|b| b.eq_ignore_ascii_case(name)));
    if names.is_empty() {
        return None;
    }
    let mut builder = VarianceBuilder::new();
    for name in &names {
        let value = request
            .headers
            .get(name.as_str())
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        builder.add_owned_value(name, class_of(name, value).into_bytes());
    }
    builder.finalize()
}

/// Reduces a varying request header to a small set of classes so one URL
/// has a bounded number of variants.
fn class_of(name: &str, value: &[u8]) -> String {
    let value = String::from_utf8_lossy(value).to_ascii_lowercase();
    match name {
        "accept-encoding" => {
            if value.contains("br") {
                "br".into()
            } else if value.contains("gzip") {
                "gzip".into()
            } else {
                String::new()
            }
        }
        "accept-language" => value
            .split([',', ';', '-'])
            .next()
            .unwrap_or_default()
            .trim()
            .chars()
            .take(8)
            .collect(),
        _ => value.chars().take(64).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(headers: &[(&str, &str)]) -> ResponseHeader {
        let mut response = ResponseHeader::build(200, None).unwrap();
        for (name, value) in headers {
            response.append_header(name.to_string(), *value).unwrap();
        }
        response
    }

    fn allow() -> Vec<String> {
        vec!["accept-encoding".into(), "accept-language".into()]
    }

    fn cacheable(r: RespCacheable) -> bool {
        matches!(r, RespCacheable::Cacheable(_))
    }

    #[test]
    fn follows_cache_control() {
        assert!(cacheable(decide(
            &response(&[("cache-control", "public, max-age=60")]),
            false,
            &allow(),
            &[]
        )));
        assert!(cacheable(decide(
            &response(&[("cache-control", "s-maxage=60")]),
            false,
            &allow(),
            &[]
        )));
        assert!(!cacheable(decide(
            &response(&[("cache-control", "private, max-age=60")]),
            false,
            &allow(),
            &[]
        )));
        assert!(!cacheable(decide(
            &response(&[("cache-control", "no-store")]),
            false,
            &allow(),
            &[]
        )));
        assert!(!cacheable(decide(&response(&[]), false, &allow(), &[])));
    }

    #[test]
    fn set_cookie_only_when_public_and_never_stored() {
        let with_cookie = |cc| response(&[("cache-control", cc), ("set-cookie", "s=1")]);
        assert!(!cacheable(decide(
            &with_cookie("max-age=60"),
            false,
            &allow(),
            &[]
        )));
        match decide(&with_cookie("public, max-age=60"), false, &allow(), &[]) {
            RespCacheable::Cacheable(meta) => {
                assert!(meta.headers().get("set-cookie").is_none())
            }
            _ => panic!("public response with a cookie should be stored without it"),
        }
    }

    #[test]
    fn credentialed_requests_need_explicit_sharing() {
        assert!(!cacheable(decide(
            &response(&[("cache-control", "max-age=60")]),
            true,
            &allow(),
            &[]
        )));
        assert!(cacheable(decide(
            &response(&[("cache-control", "public, max-age=60")]),
            true,
            &allow(),
            &[]
        )));
    }

    #[test]
    fn vary_outside_the_allow_list_is_not_stored() {
        let cc = ("cache-control", "public, max-age=60");
        assert!(cacheable(decide(
            &response(&[cc, ("vary", "Accept-Encoding")]),
            false,
            &allow(),
            &[]
        )));
        assert!(!cacheable(decide(
            &response(&[cc, ("vary", "User-Agent")]),
            false,
            &allow(),
            &[]
        )));
        assert!(!cacheable(decide(
            &response(&[cc, ("vary", "*")]),
            false,
            &allow(),
            &[]
        )));
        let bypass = vec!["x-meridian-lsn".to_string()];
        assert!(cacheable(decide(
            &response(&[cc, ("vary", "x-meridian-lsn")]),
            false,
            &allow(),
            &bypass
        )));
    }

    #[test]
    fn varying_values_collapse_into_classes() {
        assert_eq!(class_of("accept-encoding", b"gzip, deflate, br"), "br");
        assert_eq!(class_of("accept-encoding", b"identity"), "");
        assert_eq!(class_of("accept-language", b"fr-CH, fr;q=0.9"), "fr");
    }
}
