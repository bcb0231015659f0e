//! Request-phase filters: refuse malformed or dangerous requests before
//! anything else looks at them, strip headers that could poison the cache,
//! normalise the URI, and classify the route.

use http::{Method, header};
use pingora::http::RequestHeader;

use crate::cache::key::{IgnoredParams, normalise_path_and_query};

/// Route classes: what rate limits, routing and caching key off. Bounded,
/// so they are safe as metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    Browse,
    Search,
    Cart,
    Checkout,
    Orders,
    Admin,
}

impl RouteClass {
    pub fn of(path: &str) -> Self {
        let under = |prefix: &str| {
            path.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        if under("/v1/admin") {
            Self::Admin
        } else if under("/v1/search") {
            Self::Search
        } else if under("/v1/cart") || under("/v1/notify-me") {
            Self::Cart
        } else if under("/v1/checkout") || under("/v1/flash-sales") {
            Self::Checkout
        } else if under("/v1/orders") {
            Self::Orders
        } else {
            Self::Browse
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Browse => "browse",
            Self::Search => "search",
            Self::Cart => "cart",
            Self::Checkout => "checkout",
            Self::Orders => "orders",
            Self::Admin => "admin",
        }
    }

    /// Shared-cache candidates: public catalog and search reads.
    pub fn cacheable(self) -> bool {
        matches!(self, Self::Browse | Self::Search)
    }

    /// Routes that hold a signed-in shopper's data and go to their home
    /// region (data residency).
    pub fn personal(self) -> bool {
        matches!(self, Self::Cart | Self::Checkout | Self::Orders)
    }
}

/// Request headers that can change an origin's response without being part
/// of the cache key (framework URL overrides, forwarded-host tricks). They
/// are removed before proxying; the edge sets its own forwarding headers.
pub const UNKEYED_HEADERS: &[&str] = &[
    "x-forwarded-host",
    "x-forwarded-server",
    "x-forwarded-scheme",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-for",
    "forwarded",
    "x-host",
    "x-original-host",
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-method",
    "x-real-ip",
    "x-client-ip",
    "x-edge-region",
    "x-cache-key",
];

/// Why a request is refused before it reaches the cache or an origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub title: &'static str,
    pub detail: String,
}

fn reject(status: u16, title: &'static str, detail: impl Into<String>) -> Rejection {
    Rejection {
        status,
        title,
        detail: detail.into(),
    }
}

const ALLOWED_METHODS: &[Method] = &[
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

/// What the request filters learnt about a valid request.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub host: String,
    pub path_and_query: String,
    pub route: RouteClass,
}

/// Checks and rewrites `request` in place: framing, method, host, unkeyed
/// headers, URI normalisation. `raw_header` is the request head as received
/// (HTTP/1): the parser already dropped `Content-Length` when
/// `Transfer-Encoding` is present, so the raw bytes are where a smuggling
/// attempt shows.
pub fn sanitise(
    request: &mut RequestHeader,
    raw_header: Option<&[u8]>,
    limits: &RequestLimits,
    ignored: &IgnoredParams,
) -> Result<Accepted, Rejection> {
    check_size(request, limits)?;
    if !ALLOWED_METHODS.contains(&request.method) {
        return Err(reject(
            405,
            "Method not allowed",
            format!("method {} is not served here", request.method),
        ));
    }
    check_framing(request, raw_header)?;
    let host = host_of(request)?;
    // One pass over the (few) request headers; removal only when needed.
    let unkeyed: Vec<http::HeaderName> = request
        .headers
        .keys()
        .filter(|name| UNKEYED_HEADERS.contains(&name.as_str()))
        .cloned()
        .collect();
    for name in &unkeyed {
        request.remove_header(name);
    }
    let path = request.uri.path();
    if !path.starts_with('/') || path.contains("/../") || path.ends_with("/..") {
        return Err(reject(
            400,
            "Bad request target",
            "the path is not normalised",
        ));
    }
    if is_internal(path) {
        return Err(reject(404, "Not found", "this path is not served here"));
    }
    let path_and_query = normalise_path_and_query(path, request.uri.query(), ignored);
    let route = RouteClass::of(path);
    if path_and_query != request.uri.path_and_query().map_or("", |pq| pq.as_str()) {
        let uri = http::Uri::builder()
            .path_and_query(path_and_query.as_str())
            .build()
            .map_err(|_| reject(400, "Bad request target", "the request target is invalid"))?;
        request.set_uri(uri);
    }
    Ok(Accepted {
        host,
        path_and_query,
        route,
    })
}

/// Paths that live on internal listeners only (an origin's admin API,
/// metrics, health and API document): the public edge never forwards
/// them, however they are spelled.
const INTERNAL_PREFIXES: &[&str] = &["/v1/admin", "/internal"];
const INTERNAL_PATHS: &[&str] = &["/metrics", "/healthz", "/readyz", "/openapi.json", "/purge"];

/// Whether `path` names an internal path, compared the way any origin
/// could read it: percent-decoded, ASCII case folded, repeated slashes
/// and `.` segments collapsed, a trailing slash ignored.
pub fn is_internal(path: &str) -> bool {
    // Most paths are already in canonical form: compare them as they are,
    // without the decoding copy (this runs on every request).
    let canonical_already = !path.bytes().any(|b| b == b'%' || b.is_ascii_uppercase())
        && !path.contains("//")
        && !path.contains("/.");
    if canonical_already {
        return names_internal(path.trim_end_matches('/'));
    }
    names_internal(&canonicalise(path))
}

/// `path` percent-decoded, ASCII case folded, empty and `.` segments
/// dropped (so no trailing slash).
fn canonicalise(path: &str) -> String {
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    let mut canonical = String::with_capacity(decoded.len());
    for segment in decoded.split('/') {
        if segment.is_empty() || segment == "." {
            continue;
        }
        canonical.push('/');
        canonical.push_str(&segment.to_ascii_lowercase());
    }
    canonical
}

/// Whether a canonical path (no trailing slash) is internal.
fn names_internal(canonical: &str) -> bool {
    !canonical.is_empty()
        && (INTERNAL_PATHS.contains(&canonical)
            || INTERNAL_PREFIXES.iter().any(|prefix| {
                canonical
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            }))
}

/// Bounds on a request head, checked before anything else reads it.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Request target plus every header name and value, in bytes.
    pub max_header_bytes: usize,
    /// Number of header fields.
    pub max_headers: usize,
}

fn check_size(request: &RequestHeader, limits: &RequestLimits) -> Result<(), Rejection> {
    let target = request
        .uri
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    let fields: usize = request
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if target + fields > limits.max_header_bytes || request.headers.len() > limits.max_headers {
        return Err(reject(
            431,
            "Request header fields too large",
            format!(
                "the request head may hold at most {} bytes in {} fields",
                limits.max_header_bytes, limits.max_headers
            ),
        ));
    }
    Ok(())
}

/// Request-smuggling shapes: `Content-Length` together with
/// `Transfer-Encoding`, several different lengths, a transfer coding other
/// than plain `chunked`.
fn check_framing(request: &RequestHeader, raw_header: Option<&[u8]>) -> Result<(), Rejection> {
    let chunked = request.headers.contains_key(header::TRANSFER_ENCODING);
    if chunked && raw_header.is_some_and(raw_has_content_length) {
        return Err(reject(
            400,
            "Ambiguous request framing",
            "Content-Length and Transfer-Encoding must not both be present",
        ));
    }
    let lengths: Vec<&[u8]> = request
        .headers
        .get_all(header::CONTENT_LENGTH)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    let codings: Vec<&[u8]> = request
        .headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    if !lengths.is_empty() && !codings.is_empty() {
        return Err(reject(
            400,
            "Ambiguous request framing",
            "Content-Length and Transfer-Encoding must not both be present",
        ));
    }
    if lengths.windows(2).any(|pair| pair[0] != pair[1])
        || lengths
            .iter()
            .any(|l| l.is_empty() || !l.iter().all(u8::is_ascii_digit))
    {
        return Err(reject(
            400,
            "Invalid Content-Length",
            "Content-Length is invalid",
        ));
    }
    if codings.len() > 1
        || codings
            .first()
            .is_some_and(|c| !c.eq_ignore_ascii_case(b"chunked"))
    {
        return Err(reject(
            400,
            "Unsupported Transfer-Encoding",
            "only a single `chunked` transfer coding is accepted",
        ));
    }
    Ok(())
}

/// Whether a raw HTTP/1 request head has a `Content-Length` field line.
fn raw_has_content_length(raw: &[u8]) -> bool {
    const NAME: &[u8] = b"content-length";
    raw.split(|b| *b == b'\n').skip(1).any(|line| {
        line.len() > NAME.len()
            && line[..NAME.len()].eq_ignore_ascii_case(NAME)
            && matches!(line[NAME.len()], b':' | b' ' | b'\t')
    })
}

/// The request's host (without port), from `Host` or, for HTTP/2, the
/// `:authority`. Exactly one, syntactically a host name or address.
fn host_of(request: &RequestHeader) -> Result<String, Rejection> {
    let mut hosts = request.headers.get_all(header::HOST).iter();
    let raw = match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return Err(reject(400, "Bad Host", "more than one Host header")),
        (Some(value), None) => value.as_bytes().to_vec(),
        (None, _) => match request.uri.authority() {
            Some(authority) => authority.as_str().as_bytes().to_vec(),
            None => return Err(reject(400, "Bad Host", "the Host header is missing")),
        },
    };
    let valid = !raw.is_empty()
        && raw.len() <= 255
        && raw
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(b));
    if !valid {
        return Err(reject(
            400,
            "Bad Host",
            "the Host header is not a valid host",
        ));
    }
    let host = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    let without_port = match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(']') && name.contains(':') => {
            // A bare IPv6 address without brackets is not a valid Host.
            let _ = port;
            return Err(reject(400, "Bad Host", "IPv6 hosts need brackets"));
        }
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name.to_string(),
        Some(_) => return Err(reject(400, "Bad Host", "the Host port is invalid")),
        None => host,
    };
    Ok(without_port)
}

/// Whether the request carries credentials: `Authorization`, or a cookie
/// whose name is one of `session_cookies`.
pub fn credentialed(request: &RequestHeader, session_cookies: &[String]) -> bool {
    if request.headers.contains_key(header::AUTHORIZATION) {
        return true;
    }
    cookies(request).any(|(name, _)| session_cookies.iter().any(|s| s == name))
}

/// Every `name=value` pair of the request's `Cookie` headers.
pub fn cookies(request: &RequestHeader) -> impl Iterator<Item = (&str, &str)> {
    request
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
}

/// The value of cookie `name`, if the request carries it.
pub fn cookie<'a>(request: &'a RequestHeader, name: &str) -> Option<&'a str> {
    cookies(request)
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, target: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut request = RequestHeader::build(method, target.as_bytes(), None).unwrap();
        for (name, value) in headers {
            request.append_header(name.to_string(), *value).unwrap();
        }
        request
    }

    fn ignored() -> IgnoredParams {
        IgnoredParams::new(&["utm_*".into()])
    }

    const LIMITS: RequestLimits = RequestLimits {
        max_header_bytes: 1024,
        max_headers: 8,
    };

    #[test]
    fn classifies_routes_by_prefix() {
        assert_eq!(RouteClass::of("/v1/products/1"), RouteClass::Browse);
        assert_eq!(RouteClass::of("/v1/cart/items"), RouteClass::Cart);
        assert_eq!(RouteClass::of("/v1/notify-me"), RouteClass::Cart);
        assert_eq!(RouteClass::of("/v1/cartography"), RouteClass::Browse);
        assert_eq!(RouteClass::of("/v1/admin/products"), RouteClass::Admin);
    }

    proptest::proptest! {
        /// The shortcut for paths already canonical answers what the full
        /// canonical comparison answers.
        #[test]
        fn the_shortcut_agrees_with_the_canonical_form(
            segments in proptest::collection::vec(
                proptest::sample::select(vec![
                    "", ".", "v1", "V1", "admin", "Admin", "%61dmin", "metrics", "readyz",
                    "healthz", "openapi.json", "internal", "purge", "products", "1", "%2F", "x.y",
                ]),
                0..5,
            ),
            trailing in proptest::bool::ANY,
        ) {
            let mut path = String::new();
            for segment in &segments {
                path.push('/');
                path.push_str(segment);
            }
            if trailing {
                path.push('/');
            }
            proptest::prop_assert_eq!(is_internal(&path), names_internal(&canonicalise(&path)), "{}", path);
        }
    }

    #[test]
    fn internal_paths_are_internal_however_spelled() {
        for path in [
            "/v1/admin",
            "/v1/admin/products/1",
            "/v1/ADMIN/modes",
            "//v1//admin/modes",
            "/v1/./admin/modes",
            "/v1/%61dmin/products",
            "/v1/admin%2Fproducts",
            "/metrics",
            "/metrics/",
            "/%6Detrics",
            "/readyz",
            "/healthz",
            "/openapi.json",
            "/internal/x",
        ] {
            assert!(is_internal(path), "{path}");
        }
        for path in [
            "/",
            "/v1/products/1",
            "/v1/administrators",
            "/v1/modes",
            "/p/metrics",
        ] {
            assert!(!is_internal(path), "{path}");
        }
        assert_eq!(RouteClass::of("/v1/checkout"), RouteClass::Checkout);
    }

    #[test]
    fn strips_unkeyed_headers_and_normalises_the_uri() {
        let mut r = request(
            "GET",
            "/v1/products?b=2&utm_source=x&a=1",
            &[
                ("host", "Shop.Example:8100"),
                ("x-forwarded-host", "evil"),
                ("x-original-url", "/admin"),
            ],
        );
        let accepted = sanitise(&mut r, None, &LIMITS, &ignored()).unwrap();
        assert_eq!(accepted.host, "shop.example");
        assert_eq!(accepted.path_and_query, "/v1/products?a=1&b=2");
        assert_eq!(r.uri.to_string(), "/v1/products?a=1&b=2");
        assert!(r.headers.get("x-forwarded-host").is_none());
        assert!(r.headers.get("x-original-url").is_none());
    }

    #[test]
    fn refuses_smuggling_shapes_and_bad_hosts() {
        let cases: Vec<(RequestHeader, u16)> = vec![
            (
                request(
                    "POST",
                    "/",
                    &[
                        ("host", "a"),
                        ("content-length", "5"),
                        ("transfer-encoding", "chunked"),
                    ],
                ),
                400,
            ),
            (
                request(
                    "POST",
                    "/",
                    &[
                        ("host", "a"),
                        ("content-length", "5"),
                        ("content-length", "6"),
                    ],
                ),
                400,
            ),
            (
                request(
                    "POST",
                    "/",
                    &[("host", "a"), ("transfer-encoding", "gzip, chunked")],
                ),
                400,
            ),
            (
                request("POST", "/", &[("host", "a"), ("content-length", "-1")]),
                400,
            ),
            (request("GET", "/", &[]), 400),
            (request("GET", "/", &[("host", "a"), ("host", "b")]), 400),
            (request("GET", "/", &[("host", "bad host")]), 400),
            (request("GET", "/", &[("host", "a:port")]), 400),
            (request("TRACE", "/", &[("host", "a")]), 405),
            (request("GET", "/a/../b", &[("host", "a")]), 400),
            (
                request("GET", "/", &[("host", "a"), ("x-big", &"x".repeat(2000))]),
                431,
            ),
        ];
        for (mut r, status) in cases {
            let rejection = sanitise(&mut r, None, &LIMITS, &ignored()).unwrap_err();
            assert_eq!(rejection.status, status, "{r:?}");
        }
    }

    #[test]
    fn content_length_hidden_behind_transfer_encoding_is_caught() {
        let mut r = request(
            "POST",
            "/",
            &[("host", "a"), ("transfer-encoding", "chunked")],
        );
        let raw = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 4\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            sanitise(&mut r, Some(raw), &LIMITS, &ignored())
                .unwrap_err()
                .status,
            400
        );
        let raw = b"POST / HTTP/1.1\r\nHost: a\r\nX-Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(sanitise(&mut r, Some(raw), &LIMITS, &ignored()).is_ok());
    }

    #[test]
    fn detects_credentials() {
        let sessions = vec!["meridian_session".to_string()];
        assert!(credentialed(
            &request("GET", "/", &[("authorization", "Bearer x")]),
            &sessions
        ));
        assert!(credentialed(
            &request("GET", "/", &[("cookie", "a=1; meridian_session=x")]),
            &sessions
        ));
        assert!(!credentialed(
            &request("GET", "/", &[("cookie", "theme=dark")]),
            &sessions
        ));
    }
}
