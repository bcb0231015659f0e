//! Signed-in shoppers: a JWT (HS256 with a shared secret, or ES256 with a
//! public key) verified at the edge, whose claims are limited to the user
//! id (`sub`) and the home region (`region`), plus `exp`. The edge uses it
//! only to route cart, checkout and orders to the shopper's home region
//! (data residency); authorisation stays with the origin.
//!
//! The token comes from `Authorization: Bearer …` or the session cookie;
//! its format and verification are shared with the origin and the CLI
//! ([`meridian_contracts::shopper_token`]).

use meridian_contracts::shopper_token::{ShopperClaims, ShopperTokenError, TokenVerifier};
use pingora::http::RequestHeader;

use crate::config::IdentityConfig;
use crate::proxy::request_filters::cookie;

/// What a request says about who sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shopper {
    Anonymous,
    SignedIn(ShopperClaims),
    /// A token was presented but does not verify (expired, bad signature,
    /// malformed): personal routes answer 401.
    Invalid,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("identity key {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("identity key: {0}")]
    Key(#[from] ShopperTokenError),
    #[error("identity: set exactly one of hs256_secret and es256_public_key")]
    NoKey,
}

pub struct Identity {
    verifier: TokenVerifier,
    cookie: String,
}

impl Identity {
    pub fn new(config: &IdentityConfig) -> Result<Self, IdentityError> {
        let verifier = match (&config.hs256_secret, &config.es256_public_key) {
            (Some(secret), _) => TokenVerifier::hs256(secret.expose())?,
            (None, Some(path)) => {
                let pem = std::fs::read(path).map_err(|source| IdentityError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                TokenVerifier::es256(&pem)?
            }
            // Validated at load; refused here too rather than verifying
            // against an empty key.
            (None, None) => return Err(IdentityError::NoKey),
        };
        Ok(Self {
            verifier,
            cookie: config.cookie.clone(),
        })
    }

    fn token<'a>(&self, request: &'a RequestHeader) -> Option<&'a str> {
        if let Some(bearer) = request
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        {
            return Some(bearer.trim());
        }
        cookie(request, &self.cookie)
    }

    pub fn shopper(&self, request: &RequestHeader) -> Shopper {
        let Some(token) = self.token(request) else {
            return Shopper::Anonymous;
        };
        match self.verifier.verify(token) {
            Ok(claims) => Shopper::SignedIn(claims),
            Err(error) => {
                tracing::debug!(%error, "rejected shopper token");
                Shopper::Invalid
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    use meridian_contracts::shopper_token::TokenSigner;

    fn identity() -> Identity {
        Identity::new(&IdentityConfig {
            hs256_secret: Some("a-test-secret-that-is-long-enough".parse().unwrap()),
            es256_public_key: None,
            cookie: "meridian_session".into(),
        })
        .unwrap()
    }

    /// A token valid for `lifetime` seconds, issued `issued_ago` seconds ago.
    fn token(secret: &str, lifetime: u64, issued_ago: u64) -> String {
        TokenSigner::hs256(secret)
            .unwrap()
            .mint(
                "u42",
                "eu-west",
                Duration::from_secs(lifetime),
                SystemTime::now() - Duration::from_secs(issued_ago),
            )
            .unwrap()
    }

    fn with(name: &str, value: &str) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/v1/cart", None).unwrap();
        r.append_header(name.to_string(), value).unwrap();
        r
    }

    #[test]
    fn verifies_bearer_and_cookie_tokens() {
        let id = identity();
        let good = token("a-test-secret-that-is-long-enough", 300, 0);
        for request in [
            with("authorization", &format!("Bearer {good}")),
            with("cookie", &format!("a=1; meridian_session={good}")),
        ] {
            let Shopper::SignedIn(claims) = id.shopper(&request) else {
                panic!("not signed in");
            };
            assert_eq!(
                (claims.sub.as_str(), claims.region.as_str()),
                ("u42", "eu-west")
            );
        }
    }

    #[test]
    fn bad_tokens_are_invalid_and_none_is_anonymous() {
        let id = identity();
        let forged = token("another-secret-entirely-here-000000", 300, 0);
        let expired = token("a-test-secret-that-is-long-enough", 60, 3600);
        for bad in [forged.as_str(), expired.as_str(), "not.a.jwt"] {
            assert_eq!(
                id.shopper(&with("authorization", &format!("Bearer {bad}"))),
                Shopper::Invalid
            );
        }
        assert_eq!(id.shopper(&with("x-other", "1")), Shopper::Anonymous);
    }
}
