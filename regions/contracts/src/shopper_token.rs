//! Shopper tokens: the JWT that identifies a signed-in shopper, with claims
//! limited to the user id (`sub`), the home region (`region`) and the expiry
//! (`exp`) — seed 000's "JWT with limited payload". One format for everyone:
//! `meridian token` mints them for local use, the edge verifies them to
//! route personal requests to the home region, the origin verifies them to
//! authorise cart, checkout and orders.
//!
//! Keys: HS256 with a shared secret (the local stack's `jwt_secret`), or
//! ES256 with a P-256 key pair (private PEM to mint, public PEM to verify).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The cookie a browser carries the token in (besides `Authorization:
/// Bearer`).
pub const SESSION_COOKIE: &str = "meridian_session";

/// Seconds of clock skew tolerated on `exp`.
const LEEWAY_SECS: u64 = 5;

/// Shortest HS256 secret accepted (RFC 7518 §3.2: at least the hash size).
pub const MIN_SECRET_BYTES: usize = 32;

/// Everything a shopper token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShopperClaims {
    /// The user id.
    pub sub: String,
    /// The shopper's home region (where their cart and orders live).
    pub region: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ShopperTokenError {
    #[error("the HS256 secret must be at least {MIN_SECRET_BYTES} bytes (got {0})")]
    ShortSecret(usize),
    #[error("the user id must be 1 to 128 characters without control characters")]
    BadUser,
    #[error("the token lifetime must be between 1 s and 366 days")]
    BadLifetime,
    #[error("key: {0}")]
    Key(jsonwebtoken::errors::Error),
    #[error("cannot sign the token: {0}")]
    Sign(jsonwebtoken::errors::Error),
    #[error("token rejected: {0}")]
    Rejected(jsonwebtoken::errors::Error),
}

/// Signs shopper tokens.
pub struct TokenSigner {
    key: EncodingKey,
    algorithm: Algorithm,
}

impl TokenSigner {
    pub fn hs256(secret: &str) -> Result<Self, ShopperTokenError> {
        check_secret(secret)?;
        Ok(Self {
            key: EncodingKey::from_secret(secret.as_bytes()),
            algorithm: Algorithm::HS256,
        })
    }

    /// From a PKCS#8 PEM P-256 private key.
    pub fn es256(private_pem: &[u8]) -> Result<Self, ShopperTokenError> {
        Ok(Self {
            key: EncodingKey::from_ec_pem(private_pem).map_err(ShopperTokenError::Key)?,
            algorithm: Algorithm::ES256,
        })
    }

    /// A token for `user` of home region `region`, valid for `lifetime`
    /// from `now`. The region is not checked here (the caller knows the
    /// topology).
    pub fn mint(
        &self,
        user: &str,
        region: &str,
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<String, ShopperTokenError> {
        if user.is_empty() || user.chars().count() > 128 || user.chars().any(char::is_control) {
            return Err(ShopperTokenError::BadUser);
        }
        if lifetime < Duration::from_secs(1) || lifetime > Duration::from_secs(366 * 86_400) {
            return Err(ShopperTokenError::BadLifetime);
        }
        let issued = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let claims = ShopperClaims {
            sub: user.to_string(),
            region: region.to_string(),
            exp: (issued + lifetime).as_secs(),
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, &self.key)
            .map_err(ShopperTokenError::Sign)
    }
}

/// Verifies shopper tokens: signature, algorithm, and `exp` (required).
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl TokenVerifier {
    pub fn hs256(secret: &str) -> Result<Self, ShopperTokenError> {
        check_secret(secret)?;
        Ok(Self::new(
            DecodingKey::from_secret(secret.as_bytes()),
            Algorithm::HS256,
        ))
    }

    /// From a PEM P-256 public key.
    pub fn es256(public_pem: &[u8]) -> Result<Self, ShopperTokenError> {
        Ok(Self::new(
            DecodingKey::from_ec_pem(public_pem).map_err(ShopperTokenError::Key)?,
            Algorithm::ES256,
        ))
    }

    fn new(key: DecodingKey, algorithm: Algorithm) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = LEEWAY_SECS;
        Self { key, validation }
    }

    /// The claims of a valid, unexpired token.
    pub fn verify(&self, token: &str) -> Result<ShopperClaims, ShopperTokenError> {
        jsonwebtoken::decode::<ShopperClaims>(token, &self.key, &self.validation)
            .map(|data| data.claims)
            .map_err(ShopperTokenError::Rejected)
    }
}

fn check_secret(secret: &str) -> Result<(), ShopperTokenError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(ShopperTokenError::ShortSecret(secret.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-test-secret-that-is-long-enough-000";

    fn mint(secret: &str, lifetime: u64, issued_ago: u64) -> String {
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

    #[test]
    fn minted_tokens_verify_with_exactly_their_claims() {
        let token = mint(SECRET, 3600, 0);
        let claims = TokenVerifier::hs256(SECRET)
            .unwrap()
            .verify(&token)
            .unwrap();
        assert_eq!(claims.sub, "u42");
        assert_eq!(claims.region, "eu-west");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!((now + 3590..=now + 3600).contains(&claims.exp));
        // Nothing else in the payload.
        let payload = token.split('.').nth(1).unwrap();
        assert!(payload.len() < 100, "{payload}");
    }

    #[test]
    fn expired_forged_and_malformed_tokens_are_rejected() {
        let verifier = TokenVerifier::hs256(SECRET).unwrap();
        let expired = mint(SECRET, 60, 3600);
        let forged = mint("another-secret-that-is-long-enough-111", 3600, 0);
        for bad in [expired.as_str(), forged.as_str(), "not.a.jwt", ""] {
            assert!(verifier.verify(bad).is_err(), "{bad}");
        }
        // `alg: none` and other algorithms are refused.
        let none = format!(
            "{}.{}.",
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0",
            mint(SECRET, 3600, 0).split('.').nth(1).unwrap()
        );
        assert!(verifier.verify(&none).is_err());
    }

    #[test]
    fn bad_inputs_are_refused_before_signing() {
        assert!(matches!(
            TokenSigner::hs256("short"),
            Err(ShopperTokenError::ShortSecret(5))
        ));
        let signer = TokenSigner::hs256(SECRET).unwrap();
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        assert!(matches!(
            signer.mint("", "eu-west", hour, now),
            Err(ShopperTokenError::BadUser)
        ));
        assert!(matches!(
            signer.mint("u\n1", "eu-west", hour, now),
            Err(ShopperTokenError::BadUser)
        ));
        assert!(matches!(
            signer.mint("u1", "eu-west", Duration::ZERO, now),
            Err(ShopperTokenError::BadLifetime)
        ));
    }
}
