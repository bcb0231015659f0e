//! Signed-in shoppers: a JWT (HS256 with a shared secret, or ES256 with a
//! public key) verified at the edge, whose claims are limited to the user
//! id (`sub`) and the home region (`region`), plus `exp`. The edge uses it
//! only to route cart, checkout and orders to the shopper's home region
//! (data residency); authorisation stays with the origin.
//!
//! The token comes from `Authorization: Bearer …` or the session cookie.

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use pingora::http::RequestHeader;
use serde::Deserialize;

use crate::config::IdentityConfig;
use crate::proxy::request_filters::cookie;

/// The claims the edge reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The shopper's home region.
    pub region: String,
}

/// What a request says about who sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shopper {
    Anonymous,
    SignedIn(Claims),
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
    Key(jsonwebtoken::errors::Error),
}

pub struct Identity {
    key: DecodingKey,
    validation: Validation,
    cookie: String,
}

impl Identity {
    pub fn new(config: &IdentityConfig) -> Result<Self, IdentityError> {
        let (key, algorithm) = match (&config.hs256_secret, &config.es256_public_key) {
            (Some(secret), _) => (
                DecodingKey::from_secret(secret.as_bytes()),
                Algorithm::HS256,
            ),
            (None, Some(path)) => {
                let pem = std::fs::read(path).map_err(|source| IdentityError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                (
                    DecodingKey::from_ec_pem(&pem).map_err(IdentityError::Key)?,
                    Algorithm::ES256,
                )
            }
            // Validated at load: one of the two is set.
            (None, None) => (DecodingKey::from_secret(&[]), Algorithm::HS256),
        };
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 5;
        Ok(Self {
            key,
            validation,
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
        match decode::<Claims>(token, &self.key, &self.validation) {
            Ok(data) => Shopper::SignedIn(data.claims),
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
    use jsonwebtoken::{EncodingKey, Header, encode};

    fn identity() -> Identity {
        Identity::new(&IdentityConfig {
            hs256_secret: Some("a-test-secret-that-is-long-enough".into()),
            es256_public_key: None,
            cookie: "meridian_session".into(),
        })
        .unwrap()
    }

    fn token(secret: &str, exp_offset: i64) -> String {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            + exp_offset;
        encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({ "sub": "u42", "region": "eu-west", "exp": exp }),
            &EncodingKey::from_secret(secret.as_bytes()),
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
        let good = token("a-test-secret-that-is-long-enough", 300);
        let expected = Shopper::SignedIn(Claims {
            sub: "u42".into(),
            region: "eu-west".into(),
        });
        assert_eq!(
            id.shopper(&with("authorization", &format!("Bearer {good}"))),
            expected
        );
        assert_eq!(
            id.shopper(&with("cookie", &format!("a=1; meridian_session={good}"))),
            expected
        );
    }

    #[test]
    fn bad_tokens_are_invalid_and_none_is_anonymous() {
        let id = identity();
        let forged = token("another-secret-entirely-here", 300);
        let expired = token("a-test-secret-that-is-long-enough", -3600);
        for bad in [forged.as_str(), expired.as_str(), "not.a.jwt"] {
            assert_eq!(
                id.shopper(&with("authorization", &format!("Bearer {bad}"))),
                Shopper::Invalid
            );
        }
        assert_eq!(id.shopper(&with("x-other", "1")), Shopper::Anonymous);
    }
}
