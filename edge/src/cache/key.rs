//! Cache-key normalisation: the one place that decides which parts of a
//! request name a cached response.
//!
//! The key is `host` + path + normalised query: parameters sorted, empty
//! ones and tracking parameters (`utm_*`, `gclid`, …) dropped. The same
//! normalised URI is what the origin receives, so the key always describes
//! exactly the request that produced the response (nothing unkeyed can
//! reach the origin through the query). Request headers that could change
//! the response are either named by the response's `Vary` (then part of the
//! variance) or stripped before proxying ([`crate::proxy::request_filters`]).

use pingora::cache::CacheKey;
use pingora::cache::key::HashBinary;

/// Query-parameter names dropped from keys and upstream requests.
#[derive(Debug, Clone)]
pub struct IgnoredParams {
    exact: Vec<String>,
    prefixes: Vec<String>,
}

impl IgnoredParams {
    pub fn new(patterns: &[String]) -> Self {
        let mut exact = Vec::new();
        let mut prefixes = Vec::new();
        for pattern in patterns {
            match pattern.strip_suffix('*') {
                Some(prefix) => prefixes.push(prefix.to_string()),
                None => exact.push(pattern.clone()),
            }
        }
        Self { exact, prefixes }
    }

    fn ignores(&self, name: &str) -> bool {
        self.exact.iter().any(|e| e == name) || self.prefixes.iter().any(|p| name.starts_with(p))
    }
}

/// The query normalised: `None` when nothing is left.
pub fn normalise_query(query: &str, ignored: &IgnoredParams) -> Option<String> {
    let mut params: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| {
            let name = p.split_once('=').map_or(*p, |(name, _)| name);
            !ignored.ignores(name)
        })
        .collect();
    if params.is_empty() {
        return None;
    }
    params.sort_unstable();
    Some(params.join("&"))
}

/// Path plus normalised query, as sent upstream and used in the key.
pub fn normalise_path_and_query(
    path: &str,
    query: Option<&str>,
    ignored: &IgnoredParams,
) -> String {
    match query.and_then(|q| normalise_query(q, ignored)) {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    }
}

/// Size of the XXH3 secret (the algorithm's default secret size).
const SECRET_BYTES: usize = 192;

/// The secret that keys the cache-key hash: random per process, so no one
/// can craft two URLs whose keys collide (the cache lives in memory; keys
/// never need to match across processes).
pub struct KeySecret([u8; SECRET_BYTES]);

impl KeySecret {
    pub fn random() -> Self {
        let mut secret = [0u8; SECRET_BYTES];
        rand::fill(&mut secret[..]);
        Self(secret)
    }
}

/// The cache key of a (normalised) request: host (lowercase, as the
/// origin will see it) and path-and-query. HEAD shares GET's entries.
///
/// pingora would hash the primary key with BLAKE2 on every use (lookup,
/// lock, eviction); a keyed XXH3-128 computed once is as collision-proof
/// against outsiders here and much cheaper.
pub fn cache_key(host: &str, path_and_query: &str, secret: &KeySecret) -> CacheKey {
    // The host holds no `/` (checked by the request filters) and the path
    // starts with one, so `host + path` splits unambiguously.
    let primary = format!("{}{path_and_query}", host.to_ascii_lowercase());
    let hash = xxhash_rust::xxh3::xxh3_128_with_secret(primary.as_bytes(), &secret.0).to_be_bytes();
    let mut key = CacheKey::new(primary, "");
    key.set_primary_bin_override(hash);
    key
}

/// The id shared by every host's copy of one path and query, for purges
/// by URL.
pub fn path_id(path_and_query: &str) -> HashBinary {
    xxhash_rust::xxh3::xxh3_128(path_and_query.as_bytes()).to_be_bytes()
}

/// [`path_id`] of a key built by [`cache_key`].
pub fn path_id_of(key: &CacheKey) -> HashBinary {
    let primary = key.primary_key();
    let start = primary.iter().position(|b| *b == b'/').unwrap_or(0);
    xxhash_rust::xxh3::xxh3_128(&primary[start..]).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignored() -> IgnoredParams {
        IgnoredParams::new(&["utm_*".into(), "gclid".into(), "fbclid".into()])
    }

    #[test]
    fn sorts_and_drops_tracking_parameters() {
        assert_eq!(
            normalise_path_and_query(
                "/v1/products",
                Some("limit=5&utm_source=x&category=shoes&gclid=1&&fbclid=2"),
                &ignored()
            ),
            "/v1/products?category=shoes&limit=5"
        );
    }

    #[test]
    fn only_tracking_parameters_leave_no_query() {
        assert_eq!(
            normalise_path_and_query("/p", Some("utm_campaign=a&utm_medium=b"), &ignored()),
            "/p"
        );
        assert_eq!(normalise_path_and_query("/p", None, &ignored()), "/p");
    }

    #[test]
    fn a_parameter_merely_starting_like_gclid_is_kept() {
        assert_eq!(
            normalise_path_and_query("/p", Some("gclidx=1"), &ignored()),
            "/p?gclidx=1"
        );
    }

    #[test]
    fn equivalent_requests_share_a_key() {
        use pingora::cache::key::CacheHashKey;
        let secret = KeySecret::random();
        let a = cache_key(
            "Shop.Example",
            &normalise_path_and_query("/p", Some("b=2&a=1&utm_x=y"), &ignored()),
            &secret,
        );
        let b = cache_key(
            "shop.example",
            &normalise_path_and_query("/p", Some("a=1&b=2"), &ignored()),
            &secret,
        );
        assert_eq!(a.combined_bin(), b.combined_bin());
        let other = cache_key("shop.example", "/p?a=1&b=3", &secret);
        assert_ne!(a.combined_bin(), other.combined_bin());
    }
}
